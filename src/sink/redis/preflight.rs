//! What a Redis server must be for the sink's guarantee, as checks: `stream` stops at a failure
//! and logs the warnings; `check --sink redis` prints them all.
//!
//! Invariant: the same findings, in the same words, whichever command asks.

use std::collections::HashMap;

use redis::{Connection, RedisError};

use super::config::RedisSettings;
use crate::preflight::{Check, Status};

/// Redis's own default of `proto-max-bulk-len`, when CONFIG cannot be read.
const DEFAULT_MAX_BULK: usize = 512 << 20;

/// What the preflight found.
pub struct Server {
    pub version: String,
    /// The largest value Redis takes (`proto-max-bulk-len`).
    pub max_bulk: usize,
    pub checks: Vec<Check>,
}

/// Reads what decides the guarantee (`INFO`, `CONFIG GET`); an error only when Redis does not
/// answer `INFO` (a refusal of CONFIG is a warning).
pub fn inspect(conn: &mut Connection, allow_no_aof: bool) -> Result<Server, RedisError> {
    let info: String = redis::cmd("INFO").arg("server").arg("cluster").query(conn)?;
    let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim);
    let version = field("redis_version").unwrap_or("?").to_string();
    let mut checks = vec![mode(&version, field("cluster_enabled") == Some("1"))];
    let names = ["appendonly", "appendfsync", "proto-max-bulk-len"];
    let mut config = HashMap::new();
    for name in names {
        match redis::cmd("CONFIG").arg("GET").arg(name).query::<HashMap<String, String>>(conn) {
            Ok(found) => config.extend(found),
            Err(e) if e.is_io_error() => return Err(e),
            Err(e) => {
                checks.push(check(
                    "redis persistence",
                    Status::Warn,
                    format!("cannot read {name} (CONFIG GET: {e})"),
                    "check appendonly and appendfsync yourself (docs/redis.md), or grant +config|get",
                ));
                break;
            }
        }
    }
    if config.contains_key("appendonly") {
        checks.push(persistence(
            config.get("appendonly").map(String::as_str),
            config.get("appendfsync").map(String::as_str),
            allow_no_aof,
        ));
    }
    let max_bulk = config.get("proto-max-bulk-len").and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_MAX_BULK);
    Ok(Server { version, max_bulk, checks })
}

/// The checks of `check --sink redis`: one try to connect, then what `inspect` finds.
pub fn run(settings: &RedisSettings) -> Vec<Check> {
    let url = settings.shown_url();
    let connected = settings
        .client()
        .map_err(|e| format!("{e:#}"))
        .and_then(|c| c.get_connection_with_timeout(std::time::Duration::from_secs(10)).map_err(|e| e.to_string()));
    let found = connected.and_then(|mut conn| inspect(&mut conn, settings.allow_no_aof).map_err(|e| e.to_string()));
    match found {
        Ok(server) => {
            let connected = check("redis connection", Status::Pass, format!("connected to {url}"), "");
            [connected].into_iter().chain(server.checks).collect()
        }
        Err(e) => vec![check(
            "redis connection",
            Status::Fail,
            format!("cannot use Redis at {url}: {e}"),
            "check --redis-url and --redis-password-file, and that Redis runs",
        )],
    }
}

fn check(name: &'static str, status: Status, detail: String, fix: &str) -> Check {
    let fix = (status != Status::Pass).then(|| fix.to_string());
    Check { name, status, detail, fix, lost: false }
}

/// A standalone server: a script's keys must share one slot in a cluster, and the streams of
/// different tables do not.
fn mode(version: &str, cluster: bool) -> Check {
    match cluster {
        false => check("redis mode", Status::Pass, format!("Redis {version}, standalone"), ""),
        true => check(
            "redis mode",
            Status::Fail,
            format!("Redis {version} runs in cluster mode: each batch and its marker are one atomic script, whose keys must share one slot"),
            "stream to a standalone Redis (or a Sentinel-managed primary)",
        ),
    }
}

/// Whether what Redis acknowledges survives a crash of Redis or of its host.
fn persistence(appendonly: Option<&str>, fsync: Option<&str>, allow_no_aof: bool) -> Check {
    let always = "CONFIG SET appendfsync always; CONFIG REWRITE";
    match (appendonly, fsync) {
        (Some("no"), _) => check(
            "redis persistence",
            if allow_no_aof { Status::Warn } else { Status::Fail },
            "appendonly no: a restart of Redis loses acknowledged entries, which the saved position counts as delivered".into(),
            "CONFIG SET appendonly yes; CONFIG SET appendfsync always; CONFIG REWRITE (or accept the loss with --redis-allow-no-aof)",
        ),
        (_, Some("always")) => check(
            "redis persistence",
            Status::Pass,
            "appendonly yes, appendfsync always: nothing acknowledged is lost in a crash".into(),
            "",
        ),
        (_, Some("everysec")) => check(
            "redis persistence",
            Status::Warn,
            "appendfsync everysec: a crash of the Redis host (not of Redis alone) can lose up to about 1 s of acknowledged entries".into(),
            always,
        ),
        (_, other) => check(
            "redis persistence",
            Status::Warn,
            format!("appendfsync {}: a crash of the Redis host can lose about 30 s of acknowledged entries", other.unwrap_or("?")),
            always,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistence_settings_pass_warn_or_fail() {
        let status = |a, f, allow| persistence(Some(a), Some(f), allow).status;
        assert_eq!(status("yes", "always", false), Status::Pass);
        assert_eq!(status("yes", "everysec", false), Status::Warn);
        assert_eq!(status("yes", "no", false), Status::Warn);
        assert_eq!(status("no", "always", false), Status::Fail);
        assert_eq!(status("no", "always", true), Status::Warn);
        assert!(persistence(Some("no"), None, false).fix.unwrap().contains("--redis-allow-no-aof"));
        assert_eq!(mode("7", true).status, Status::Fail);
    }
}
