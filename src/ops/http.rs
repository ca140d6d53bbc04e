//! The HTTP endpoint of `--metrics-addr`: `/metrics` (Prometheus text format), `/healthz`
//! (liveness: 200 while the process runs), `/readyz` (200 while connected and streaming, 503
//! while connecting, reconnecting, waiting for the server or standing by for the stream lease),
//! and `POST /snapshot` (an incremental snapshot request, see `snapshot::requests`).
//!
//! Invariants: it runs on its own thread and only reads the shared `Metrics` (and queues
//! requests), so a slow client can never hold up the pipeline; a snapshot request comes only
//! from loopback unless `--http-token-file` is given, and then carries its token; any other path
//! is a 404.

use std::io::Read;
use std::net::SocketAddr;

use anyhow::{anyhow, Result};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::metrics::Metrics;
use crate::snapshot::requests::{self, Requests};

/// Binds `addr` and serves the endpoints on a background thread for the rest of the process;
/// snapshot requests go to `requests`, and must carry `token` when one is set.
pub fn serve(addr: SocketAddr, metrics: Metrics, requests: Requests, token: Option<String>) -> Result<()> {
    let server = Server::http(addr)
        .map_err(|e| anyhow!("cannot listen on --metrics-addr {addr}: {e} (is another process using the port?)"))?;
    tracing::info!("serving /metrics, /healthz and /readyz on http://{addr}");
    std::thread::Builder::new().name("metrics-http".into()).spawn(move || {
        for mut request in server.incoming_requests() {
            let path = request.url().split('?').next().unwrap_or("").to_string();
            let response = match path.as_str() {
                "/snapshot" => snapshot_request(&mut request, &requests, token.as_deref()),
                "/metrics" => text(200, metrics.render(), "text/plain; version=0.0.4; charset=utf-8"),
                "/healthz" => text(200, "ok\n".into(), "text/plain"),
                "/readyz" if metrics.ready() => text(200, "ready\n".into(), "text/plain"),
                "/readyz" if !metrics.lease_held() => {
                    text(503, "standing by: another instance holds the stream lease\n".into(), "text/plain")
                }
                "/readyz" => text(503, "not connected to the server\n".into(), "text/plain"),
                _ => text(404, "try /metrics, /healthz, /readyz or POST /snapshot\n".into(), "text/plain"),
            };
            if let Err(e) = request.respond(response) {
                tracing::debug!("metrics endpoint: {e}");
            }
        }
    })?;
    Ok(())
}

/// `POST /snapshot`: queues the request and answers with what the stream did with it.
fn snapshot_request(
    request: &mut Request,
    requests: &Requests,
    token: Option<&str>,
) -> Response<std::io::Cursor<Vec<u8>>> {
    let plain = |status, body: String| text(status, body + "\n", "text/plain");
    if *request.method() != Method::Post {
        return plain(
            405,
            "POST a request: {\"type\": \"execute-snapshot\", \"data-collections\": [\"db.table\"]}".into(),
        );
    }
    match token {
        Some(token) => {
            let given = request.headers().iter().find(|h| h.field.equiv("Authorization")).map(|h| h.value.as_str());
            if given != Some(format!("Bearer {token}").as_str()) {
                return plain(401, "a snapshot request needs the bearer token of --http-token-file".into());
            }
        }
        None if !request.remote_addr().is_some_and(|a| a.ip().is_loopback()) => {
            return plain(
                403,
                "snapshot requests come from loopback only, unless the stream has --http-token-file".into(),
            );
        }
        None => {}
    }
    let mut body = String::new();
    if request.as_reader().take(64 * 1024).read_to_string(&mut body).is_err() {
        return plain(400, "the body is not UTF-8 text".into());
    }
    let signal = match requests::parse(&body) {
        Ok(signal) => signal,
        Err(e) => return plain(400, e),
    };
    match requests.submit(signal, requests::WAIT) {
        Some(Ok(done)) => plain(200, done),
        Some(Err(refused)) => plain(422, refused),
        None => plain(
            503,
            format!("the stream did not take the request within {} s: it is not streaming (see /readyz), or takes no snapshots on this server (MySQL needs --signal-table)", requests::WAIT.as_secs()),
        ),
    }
}

fn text(status: u16, body: String, content_type: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let header = Header::from_bytes("Content-Type", content_type).expect("a valid static header");
    Response::from_string(body).with_status_code(status).with_header(header)
}
