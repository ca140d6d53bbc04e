//! Redis sink settings and stream-key routing.
//!
//! Invariants: the URL is parsed (and refused with the form to use) before anything connects;
//! no password (from the URL or `--redis-password-file`) is ever printed, by `Debug` or in a log;
//! a key template's `{db}` and `{table}` are replaced by the names as they are (a Redis key is any
//! bytes).

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use redis::IntoConnectionInfo as _;

use crate::source::connection::redact;

/// `--redis-key`'s default.
pub const DEFAULT_KEY: &str = "binlog_tail:{db}.{table}";
/// `--redis-ddl-key`'s default.
pub const DEFAULT_DDL_KEY: &str = "binlog_tail:ddl";
/// The key of a stream's "delivered up to" marker is this and the stream's name.
pub const MARKER_PREFIX: &str = "binlog_tail:delivered:";

#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[USER[:PASSWORD]@]HOST:PORT[/DB]`, or `rediss://` for TLS.
    pub url: String,
    /// The password of `--redis-password-file`; wins over one in the URL.
    pub password: Option<String>,
    pub tls_ca: Option<PathBuf>,
    /// Key template: `{db}` and `{table}` are replaced.
    pub key: String,
    pub ddl_key: String,
    /// `XADD ... MAXLEN ~ N`: each stream keeps about this many entries.
    pub maxlen: Option<u64>,
    /// Stream even when the server keeps no append-only file (`appendonly no`).
    pub allow_no_aof: bool,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls_ca", &self.tls_ca)
            .field("key", &self.key)
            .field("ddl_key", &self.ddl_key)
            .field("maxlen", &self.maxlen)
            .field("allow_no_aof", &self.allow_no_aof)
            .finish()
    }
}

impl RedisSettings {
    /// What decides which entry is which (never credentials).
    pub fn routing(&self) -> String {
        format!("redis|{}|{}", self.key, self.ddl_key)
    }

    /// The URL without its password, for messages.
    pub fn shown_url(&self) -> String {
        redact(&self.url)
    }

    /// Checks the URL and the keys before anything connects.
    pub fn check(&self) -> Result<()> {
        self.client()?;
        if self.key.is_empty() || self.ddl_key.is_empty() {
            bail!("--redis-key and --redis-ddl-key cannot be empty");
        }
        if self.ddl_key.contains("{db}") || self.ddl_key.contains("{table}") {
            bail!("--redis-ddl-key `{}` is one fixed key: no {{db}} or {{table}}", self.ddl_key);
        }
        if self.maxlen == Some(0) {
            bail!("--redis-maxlen 0 would keep no entry: give 1 or more, or leave it out to keep every entry");
        }
        Ok(())
    }

    /// The client of `--redis-url`, with the password of `--redis-password-file` and the CA of
    /// `--redis-tls-ca`.
    pub fn client(&self) -> Result<redis::Client> {
        let shown = self.shown_url();
        let scheme = self.url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("redis" | "rediss")) {
            bail!("--redis-url `{shown}`: use redis://[USER:PASSWORD@]HOST:PORT[/DB], or rediss://... for TLS");
        }
        let mut info = self.url.as_str().into_connection_info().map_err(|e| {
            anyhow::anyhow!(
                "--redis-url `{shown}` is not a Redis URL ({}): use redis://[USER:PASSWORD@]HOST:PORT[/DB]",
                e.detail().unwrap_or("malformed")
            )
        })?;
        if let Some(password) = &self.password {
            info = info.clone().set_redis_settings(info.redis_settings().clone().set_password(password));
        }
        match &self.tls_ca {
            None => Ok(redis::Client::open(info)?),
            Some(_) if scheme != Some("rediss") => {
                bail!("--redis-tls-ca applies to TLS: use a rediss:// --redis-url")
            }
            Some(ca) => {
                let root = std::fs::read(ca).with_context(|| format!("cannot read --redis-tls-ca {}", ca.display()))?;
                let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(root) };
                Ok(redis::Client::build_with_tls(info, certs)?)
            }
        }
    }

    /// The stream key of a change of `db`.`table`.
    pub fn key(&self, db: &str, table: &str) -> String {
        self.key.replace("{db}", db).replace("{table}", table)
    }
}

#[cfg(test)]
pub fn test_settings(url: &str) -> RedisSettings {
    RedisSettings {
        url: url.into(),
        password: None,
        tls_ca: None,
        key: DEFAULT_KEY.into(),
        ddl_key: DEFAULT_DDL_KEY.into(),
        maxlen: None,
        allow_no_aof: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keys_and_secrets() {
        let s = test_settings("redis://app:s3cret@127.0.0.1:6379/2");
        assert!(s.check().is_ok());
        assert_eq!(s.key("shop", "order lines"), "binlog_tail:shop.order lines");
        assert!(!format!("{s:?}").contains("s3cret"));
        let with_file = RedisSettings { password: Some("other".into()), ..s.clone() };
        assert!(!format!("{with_file:?}").contains("other"));
        for bad in ["127.0.0.1:6379", "http://h:1", "redis://h:notaport", "nats://h:1"] {
            let err = RedisSettings { url: bad.into(), ..s.clone() }.check().unwrap_err().to_string();
            assert!(err.contains("redis://"), "{bad}: {err}");
        }
        assert!(RedisSettings { ddl_key: "x:{db}".into(), ..s.clone() }.check().is_err());
        assert!(RedisSettings { maxlen: Some(0), ..s.clone() }.check().is_err());
        assert!(RedisSettings { tls_ca: Some("ca.pem".into()), ..s.clone() }.check().is_err(), "TLS needs rediss://");
        assert!(RedisSettings { url: "rediss://h:6380".into(), ..s }.check().is_ok());
    }
}
