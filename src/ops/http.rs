//! The HTTP endpoint of `--metrics-addr`: `/metrics` (Prometheus text format), `/healthz`
//! (liveness: 200 while the process runs) and `/readyz` (200 while connected and streaming, 503
//! while connecting, reconnecting, waiting for the server or standing by for the stream lease).
//!
//! Invariants: it runs on its own thread and only reads the shared `Metrics`, so a slow scraper
//! can never hold up the pipeline; any other path is a 404.

use std::net::SocketAddr;

use anyhow::{anyhow, Result};
use tiny_http::{Header, Response, Server};

use crate::metrics::Metrics;

/// Binds `addr` and serves the endpoints on a background thread for the rest of the process.
pub fn serve(addr: SocketAddr, metrics: Metrics) -> Result<()> {
    let server = Server::http(addr)
        .map_err(|e| anyhow!("cannot listen on --metrics-addr {addr}: {e} (is another process using the port?)"))?;
    tracing::info!("serving /metrics, /healthz and /readyz on http://{addr}");
    std::thread::Builder::new().name("metrics-http".into()).spawn(move || {
        for request in server.incoming_requests() {
            let path = request.url().split('?').next().unwrap_or("").to_string();
            let response = match path.as_str() {
                "/metrics" => text(200, metrics.render(), "text/plain; version=0.0.4; charset=utf-8"),
                "/healthz" => text(200, "ok\n".into(), "text/plain"),
                "/readyz" if metrics.ready() => text(200, "ready\n".into(), "text/plain"),
                "/readyz" if !metrics.lease_held() => {
                    text(503, "standing by: another instance holds the stream lease\n".into(), "text/plain")
                }
                "/readyz" => text(503, "not connected to the server\n".into(), "text/plain"),
                _ => text(404, "try /metrics, /healthz or /readyz\n".into(), "text/plain"),
            };
            if let Err(e) = request.respond(response) {
                tracing::debug!("metrics endpoint: {e}");
            }
        }
    })?;
    Ok(())
}

fn text(status: u16, body: String, content_type: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let header = Header::from_bytes("Content-Type", content_type).expect("a valid static header");
    Response::from_string(body).with_status_code(status).with_header(header)
}
