//! HTTP sink settings: the receiver's URL, the headers every request carries, a batch's limits,
//! and the one client (reqwest) they make.
//!
//! Invariants: every value is checked before anything is sent. A URL that is not http(s), a
//! header that is not `NAME:VALUE` with a valid name and value, a header binlog-tail sets itself
//! (`Content-Type`, `Idempotency-Key`, and `Authorization` with a token file), or a CA file without
//! a certificate is refused (a usage error where the settings are resolved).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Url;

/// Headers binlog-tail sets on every request itself.
const OWN_HEADERS: [&str; 5] = ["content-type", "content-length", "idempotency-key", "host", "transfer-encoding"];

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub url: Url,
    /// `--http-header`s, and the bearer token of `--http-sink-token-file` as `Authorization`.
    pub headers: HeaderMap,
    /// PEM certificates of `--http-tls-ca`.
    pub tls_ca: Option<PathBuf>,
    pub batch_rows: usize,
    pub batch_bytes: usize,
    pub timeout: Duration,
}

impl HttpSettings {
    /// Settings from the options' values; an error names the option and the fix.
    pub fn new(
        url: &str,
        headers: &[String],
        token: Option<String>,
        tls_ca: Option<PathBuf>,
        (batch_rows, batch_bytes): (u64, u64),
        timeout: Duration,
    ) -> Result<HttpSettings> {
        let parsed =
            Url::parse(url).map_err(|e| anyhow::anyhow!("--http-url `{url}`: {e}; use http://HOST:PORT/PATH"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
            bail!("--http-url `{url}`: use http://HOST:PORT/PATH or https://...");
        }
        let mut map = HeaderMap::new();
        for text in headers {
            let (name, value) = parse_header(text)?;
            if OWN_HEADERS.contains(&name.as_str()) || (token.is_some() && name == AUTHORIZATION) {
                bail!("--http-header `{name}`: binlog-tail sets this header itself");
            }
            map.append(name, value);
        }
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| anyhow::anyhow!("--http-sink-token-file: the token holds characters a header cannot"))?;
            value.set_sensitive(true);
            map.insert(AUTHORIZATION, value);
        }
        let settings = HttpSettings {
            url: parsed,
            headers: map,
            tls_ca,
            batch_rows: usize::try_from(batch_rows).unwrap_or(usize::MAX),
            batch_bytes: usize::try_from(batch_bytes).unwrap_or(usize::MAX),
            timeout,
        };
        settings.client()?;
        Ok(settings)
    }

    /// What decides which batch is which, for the stream's name (never the URL or credentials:
    /// a receiver moved to another address still deduplicates what it holds).
    pub fn routing(&self) -> String {
        "http".into()
    }

    /// The URL as logs may show it (no password).
    pub fn shown_url(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        url.to_string()
    }

    /// The client every request goes through: the timeout for a whole request, no redirects
    /// (a POST redirected would become a GET), the system's CAs and `--http-tls-ca`.
    pub fn client(&self) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("binlog-tail/", env!("CARGO_PKG_VERSION")))
            .default_headers(self.headers.clone());
        if let Some(path) = &self.tls_ca {
            let pem = std::fs::read(path).with_context(|| format!("cannot read --http-tls-ca {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--http-tls-ca {}: not PEM certificates", path.display()))?;
            if certs.is_empty() {
                bail!("--http-tls-ca {}: no certificate in it (a PEM file with BEGIN CERTIFICATE)", path.display());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().context("cannot set up the HTTP client")
    }
}

/// `NAME:VALUE` (spaces around the value dropped).
fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue)> {
    let Some((name, value)) = text.split_once(':') else {
        bail!("--http-header `{text}`: use NAME:VALUE, e.g. X-Source:binlog-tail");
    };
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| anyhow::anyhow!("--http-header `{text}`: `{}` is not a header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| anyhow::anyhow!("--http-header `{text}`: the value holds characters a header cannot"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, headers: &[&str], token: Option<&str>) -> Result<HttpSettings> {
        let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        HttpSettings::new(url, &headers, token.map(String::from), None, (10, 4096), Duration::from_secs(1))
    }

    #[test]
    fn urls_and_headers_are_checked() {
        let s =
            settings("http://127.0.0.1:8080/events", &["X-Source: binlog-tail", "x-a:1", "x-a:2"], Some("t")).unwrap();
        assert_eq!(s.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(s.headers["x-source"], "binlog-tail");
        assert!(s.headers[AUTHORIZATION].is_sensitive());
        assert_eq!(
            settings("https://u:secret@h/x", &[], None).unwrap().shown_url(),
            "https://u:***@h/x",
            "no password in logs"
        );
        for bad in ["ftp://h/x", "h:80/x", "http://", "not a url"] {
            assert!(settings(bad, &[], None).is_err(), "{bad}");
        }
        for bad in ["NoColon", "bad name:1", ":v", "Content-Type:text/plain", "Idempotency-Key:1", "x:a\u{1}b"] {
            let err = settings("http://h/", &[bad], None).unwrap_err().to_string();
            assert!(err.contains("--http-header"), "{bad}: {err}");
        }
        assert!(settings("http://h/", &["Authorization:Basic x"], None).is_ok());
        assert!(settings("http://h/", &["Authorization:Basic x"], Some("t")).is_err());
    }
}
