//! Connecting to a MySQL or MariaDB server, shared by everything that talks to one (streaming,
//! snapshots, `check`, `status`, the lag poll).
//!
//! Invariants: a password never reaches a message (`redact`); refused or unreachable connections
//! are retried until `--wait-for-server` has passed, and a server that cannot be reached at all is
//! a `Transient` error, so a streaming caller retries; every driver error is turned into a
//! message that says what to do, typed by what should happen next (`classify`).

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use super::{tls, ServerConfig};
use crate::error::{Purged, Transient};
use crate::position::Flavor;

pub fn connect_opts(cfg: &ServerConfig) -> Result<Opts> {
    let mut builder = OptsBuilder::from_opts(parse_url(&cfg.url)?).prefer_socket(false);
    if let Some(pw) = &cfg.password {
        builder = builder.pass(Some(pw.clone()));
    }
    if let Some(tls) = &cfg.tls {
        builder = builder.ssl_opts(tls.clone());
    }
    Ok(builder.into())
}

/// The `--url` as the driver reads it (`mysql://` may be left out).
pub fn parse_url(url: &str) -> Result<Opts> {
    let url = if url.contains("://") { url.to_string() } else { format!("mysql://{url}") };
    Opts::from_url(&url).map_err(|e| {
        let hint = match &e {
            mysql_async::UrlError::UnknownParameter { param }
                if param.starts_with("ssl") || param.starts_with("tls") =>
            {
                ": TLS files are given with --tls-ca, --tls-cert and --tls-key"
            }
            _ => " (expected mysql://USER@HOST:PORT)",
        };
        anyhow!("bad --url `{}`: {e}{hint}", redact(&url))
    })
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Connects, retrying refused or unreachable connections until `wait` has passed. A server that
/// cannot be reached at all is a `Transient` error, so a streaming caller can retry.
pub async fn connect(opts: &Opts, wait: Duration) -> Result<Conn> {
    let deadline = Instant::now() + wait;
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(10), Conn::new(opts.clone())).await;
        let err = match attempt {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => e,
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => {
                return Err(Transient(anyhow!(
                    "connecting to {}:{} timed out after 10 s: check the host, port and firewall",
                    opts.ip_or_hostname(),
                    opts.tcp_port()
                ))
                .into())
            }
        };
        let retriable = matches!(err, mysql_async::Error::Io(_)) && tls::explain(&err, opts).is_none();
        if retriable && Instant::now() + delay < deadline {
            tracing::info!("server not reachable yet ({err}); retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
            continue;
        }
        return Err(classify(err, opts));
    }
}

/// Turns a driver error into a message that says what to do, typed by what should happen next.
pub fn classify(err: mysql_async::Error, opts: &Opts) -> anyhow::Error {
    let host = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    let user = opts.user().unwrap_or("");
    if let Some(tls_failure) = tls::explain(&err, opts) {
        return tls_failure;
    }
    match &err {
        mysql_async::Error::Server(e) if e.code == 1045 => {
            // The server answers a plain connection it requires TLS for, and a missing client
            // certificate, with the same error as a wrong password.
            let tls_hint = match opts.ssl_opts() {
                None => "; or the server requires TLS (require_secure_transport): connect with --tls, or --tls-ca FILE for a private CA",
                Some(ssl) if ssl.client_identity().is_none() => "; or the user requires a client certificate (REQUIRE X509): give it with --tls-cert and --tls-key",
                Some(_) => "; or the server does not accept this client certificate for the user",
            };
            anyhow!(
                "access denied for user `{user}` at {host}: check the password (--password-file or MYSQL_PWD) and that the user may connect from this host{tls_hint}"
            )
        }
        // MySQL's ER_SECURE_TRANSPORT_REQUIRED (MariaDB answers with 1045 instead).
        mysql_async::Error::Server(e) if e.code == 3159 => anyhow!(
            "the server at {host} requires TLS ({}): connect with --tls, or --tls-ca FILE for a private CA",
            e.message
        ),
        mysql_async::Error::Server(e) if e.code == 1236 && diverged(&e.message) => Purged(format!(
            "the server's binlog does not hold the requested position in its history: {} — the position comes from another history (a diverged server, or a binlog reset since). Point --url at the server (or a replica of it) whose history the position belongs to; to start over, move the position file away and choose --start deliberately",
            e.message
        ))
        .into(),
        mysql_async::Error::Server(e) if e.code == 1236 => Purged(format!(
            "the server cannot send the binlog from the requested position: {} — the binlog there was probably purged (see SHOW BINARY LOGS and gtid_purged); the changes in between are lost. To go on anyway, move the position file away and start from `earliest` or a newer position",
            e.message
        ))
        .into(),
        mysql_async::Error::Server(e) if e.code == 4052 || e.message.contains("same server_uuid/server_id") => anyhow!(
            "another replica is connected with the same server id: give each binlog-tail its own --server-id ({})",
            e.message
        ),
        mysql_async::Error::Server(e) if e.code == 1227 || e.code == 1044 => anyhow!(
            "user `{user}` lacks a privilege: {}. Grant it: GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO ...",
            e.message
        ),
        mysql_async::Error::Io(io) => Transient(anyhow!(
            "cannot connect to {host}: {io}. Is the server running and listening there? (--wait-for-server SECS waits for a server that is starting)"
        ))
        .into(),
        // The server shutting down or killing our connection, lost connections: try again.
        mysql_async::Error::Server(e) if matches!(e.code, 1053 | 1927 | 2006 | 2013 | 1040 | 1203) => {
            Transient(anyhow!("the server ended the connection: {}", e.message)).into()
        }
        mysql_async::Error::Driver(_) => Transient(anyhow!("connection to {host} failed: {err}")).into(),
        _ => anyhow!("{err}"),
    }
}

/// MariaDB's refusals of a GTID that its binlog never held (as opposed to one it purged).
fn diverged(message: &str) -> bool {
    ["diverged", "is not in the master's binlog", "is missing the GTID", "conflicts with the binary log"]
        .iter()
        .any(|m| message.contains(m))
}

/// The server's flavour and its version string.
pub async fn flavor_of(conn: &mut Conn) -> Result<(Flavor, String)> {
    let version: String = conn.query_first("SELECT @@version").await?.context("the server returned no version")?;
    Ok((Flavor::from_version(&version), version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("mysql://u:secret@h:3306/db"), "mysql://u:***@h:3306/db");
        assert_eq!(redact("mysql://u@h:3306"), "mysql://u@h:3306");
    }
}
