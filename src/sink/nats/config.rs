//! NATS sink settings and subject routing.
//!
//! Invariants: a `{db}` or `{table}` value becomes exactly one subject token (characters a token
//! cannot hold are replaced), so `*` in the template's wildcard matches it; the wildcard of a
//! template covers every subject the template can produce.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};

/// `--nats-subject`'s default.
pub const DEFAULT_SUBJECT: &str = "binlog_tail.{db}.{table}";
/// `--nats-ddl-subject`'s default.
pub const DEFAULT_DDL_SUBJECT: &str = "binlog_tail.ddl";
/// `--nats-stream`'s default.
pub const DEFAULT_STREAM: &str = "BINLOG_TAIL";
/// The duplicate window of a stream created with `--nats-create-stream` (JetStream's default).
pub const CREATED_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: String,
    /// Subject template: `{db}` and `{table}` are replaced.
    pub subject: String,
    pub ddl_subject: String,
    pub stream: String,
    pub create_stream: bool,
    pub creds: Option<PathBuf>,
    /// The token of `--nats-token-file`.
    pub token: Option<String>,
    pub tls_ca: Option<PathBuf>,
    /// Subject wildcards of the outbox topic templates (`--outbox`), which the stream must cover too.
    pub outbox_subjects: Vec<String>,
    /// DDL events are emitted (`--emit-ddl`): the stream must cover `ddl_subject`.
    pub emit_ddl: bool,
}

impl NatsSettings {
    /// What decides which message is which (never credentials).
    pub fn routing(&self) -> String {
        format!("nats|{}|{}|{}", self.subject, self.ddl_subject, self.stream)
    }

    /// The servers of `--nats-url`.
    pub fn servers(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).collect()
    }

    /// Checks the names before anything connects.
    pub fn check(&self) -> Result<()> {
        for server in self.servers() {
            if let Err(e) = server.parse::<async_nats::ServerAddr>() {
                bail!("--nats-url: `{server}` is not a NATS server address ({e}): use nats://HOST:PORT");
            }
        }
        check_template(&self.subject, "--nats-subject")?;
        check_template(&self.ddl_subject, "--nats-ddl-subject")?;
        if self.ddl_subject.contains('{') {
            bail!("--nats-ddl-subject `{}` is one fixed subject: no {{…}}", self.ddl_subject);
        }
        let bad = |c: char| c.is_whitespace() || ".*>/\\".contains(c);
        if self.stream.is_empty() || self.stream.chars().any(bad) {
            bail!("--nats-stream `{}`: a stream name has no spaces, `.`, `*`, `>`, `/` or `\\`", self.stream);
        }
        Ok(())
    }

    /// The subject of a change of `db`.`table`.
    pub fn subject(&self, db: &str, table: &str) -> String {
        self.subject.replace("{db}", &token(db)).replace("{table}", &token(table))
    }

    /// Every subject wildcard this configuration publishes to.
    pub fn wildcards(&self) -> Vec<String> {
        let mut all = vec![wildcard(&self.subject)];
        if self.emit_ddl {
            all.push(self.ddl_subject.clone());
        }
        all.extend(self.outbox_subjects.iter().cloned());
        all.sort();
        all.dedup();
        all
    }
}

/// A name as one subject token.
fn token(name: &str) -> String {
    let bad = |c: char| c.is_whitespace() || c == '.' || c == '*' || c == '>';
    if name.is_empty() {
        return "_".into();
    }
    name.chars().map(|c| if bad(c) { '_' } else { c }).collect()
}

/// The template's subjects as a wildcard: each token holding a `{…}` becomes `*`.
pub fn wildcard(template: &str) -> String {
    template.split('.').map(|t| if t.contains('{') { "*" } else { t }).collect::<Vec<_>>().join(".")
}

fn check_template(template: &str, flag: &str) -> Result<()> {
    let tokens: Vec<&str> = template.split('.').collect();
    if template.is_empty() || template.chars().any(char::is_whitespace) || tokens.iter().any(|t| t.is_empty()) {
        bail!("{flag} `{template}` is not a NATS subject: tokens separated by single dots, no spaces");
    }
    if tokens.iter().any(|t| t.contains('*') || t.contains('>')) {
        bail!("{flag} `{template}`: no wildcards (`*`, `>`) in a subject to publish to");
    }
    Ok(())
}

/// True when every subject matching `pattern` also matches `filter` (NATS wildcards: `*` one
/// token, `>` one or more at the end).
pub fn covers(filter: &str, pattern: &str) -> bool {
    let f: Vec<&str> = filter.split('.').collect();
    let p: Vec<&str> = pattern.split('.').collect();
    for (i, ft) in f.iter().enumerate() {
        match *ft {
            ">" => return p.len() > i,
            _ if i >= p.len() => return false,
            "*" => {
                if p[i] == ">" {
                    return false;
                }
            }
            literal => {
                if p[i] != literal {
                    return false;
                }
            }
        }
    }
    f.len() == p.len()
}

#[cfg(test)]
pub fn test_settings(url: &str) -> NatsSettings {
    NatsSettings {
        url: url.into(),
        subject: DEFAULT_SUBJECT.into(),
        ddl_subject: DEFAULT_DDL_SUBJECT.into(),
        stream: DEFAULT_STREAM.into(),
        create_stream: true,
        creds: None,
        token: None,
        tls_ca: None,
        outbox_subjects: vec![],
        emit_ddl: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_tokens_and_wildcards() {
        let s = test_settings("nats://h:1");
        assert_eq!(s.subject("shop", "order lines.v2"), "binlog_tail.shop.order_lines_v2");
        assert_eq!(s.subject("", "t*"), "binlog_tail._.t_");
        assert_eq!(wildcard("cdc.{db}_x.{table}.all"), "cdc.*.*.all");
        assert_eq!(s.wildcards(), ["binlog_tail.*.*"]);
        let ddl = NatsSettings { emit_ddl: true, outbox_subjects: vec!["outbox.event.*".into()], ..s.clone() };
        assert_eq!(ddl.wildcards(), ["binlog_tail.*.*", "binlog_tail.ddl", "outbox.event.*"]);
        for bad in ["a..b", "a.*", "a b", "", "a.>"] {
            assert!(NatsSettings { subject: bad.into(), ..s.clone() }.check().is_err(), "{bad}");
        }
        assert!(NatsSettings { stream: "a.b".into(), ..s.clone() }.check().is_err());
        let two = NatsSettings { url: "nats://a:1, nats://b:2".into(), ..s.clone() };
        assert_eq!(two.servers(), ["nats://a:1", "nats://b:2"]);
        assert!(two.check().is_ok());
        assert!(NatsSettings { url: "nats://a:notaport".into(), ..s.clone() }.check().is_err());
        assert!(s.check().is_ok());
    }

    #[test]
    fn stream_subjects_cover_patterns() {
        assert!(covers("binlog_tail.>", "binlog_tail.*.*"));
        assert!(covers("binlog_tail.*.*", "binlog_tail.*.*"));
        assert!(covers(">", "a"));
        assert!(covers("a.*", "a.b"));
        assert!(!covers("binlog_tail.*", "binlog_tail.*.*"));
        assert!(!covers("binlog_tail.shop.*", "binlog_tail.*.*"));
        assert!(!covers("a.*", "a.>"));
        assert!(!covers("a.>", "a"));
        assert!(!covers("a.b", "a.b.c"));
    }
}
