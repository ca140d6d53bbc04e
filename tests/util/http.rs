//! HTTP probes of the metrics and health endpoints.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// GET `path` on 127.0.0.1:`port`: (status code, body), or None while nothing listens.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

/// The samples of a Prometheus text exposition: `name{labels}` -> value.
pub fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line: {l}"));
            (name.to_string(), value.parse().unwrap_or_else(|_| panic!("bad value: {l}")))
        })
        .collect()
}

pub fn metric(port: u16, name: &str) -> f64 {
    let (code, body) = get(port, "/metrics").expect("the metrics endpoint answers");
    assert_eq!(code, 200, "{body}");
    samples(&body).get(name).copied().unwrap_or_else(|| panic!("no {name} in\n{body}"))
}
