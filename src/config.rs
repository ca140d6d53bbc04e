//! The TOML config file of `stream`, merged under flags and environment variables.
//!
//! Invariants: unknown keys are an error (a typo must not silently fall back to a default), and
//! every value is validated the same way whether it came from a flag, the environment or the file.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::cli::{EmitArgs, LogFormat, ResumeBy, ServerArgs, SinkKind, StreamArgs};
use crate::decode::Options;
use crate::error::Usage;
use crate::filter::{parse_ops, ColumnPattern, Filter, TablePattern};
use crate::outbox::OutboxTable;
use crate::sink::kafka::config::{KafkaSettings, KeyMode};
use crate::source::server::ServerConfig;
use crate::source::Start;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub url: Option<String>,
    pub password_file: Option<PathBuf>,
    pub server_id: Option<u32>,
    pub start: Option<String>,
    pub heartbeat: Option<f64>,
    pub wait_for_server: Option<f64>,
    pub position_file: Option<PathBuf>,
    pub sink: Option<SinkKind>,
    pub checkpoint_every: Option<u64>,
    pub checkpoint_interval: Option<f64>,
    pub resume_by: Option<ResumeBy>,
    pub allow_discard: Option<bool>,
    pub metrics_addr: Option<String>,
    pub log_format: Option<LogFormat>,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub ops: Option<String>,
    #[serde(default)]
    pub drop_columns: Vec<String>,
    pub emit_ddl: Option<bool>,
    #[serde(default)]
    pub outbox: Vec<OutboxTable>,
    pub kafka_brokers: Option<String>,
    pub kafka_topic: Option<String>,
    pub kafka_topic_prefix: Option<String>,
    pub kafka_key: Option<KeyMode>,
    pub kafka_compression: Option<String>,
    pub kafka_ddl_topic: Option<String>,
    /// librdkafka properties.
    #[serde(default)]
    pub kafka: std::collections::BTreeMap<String, toml::Value>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("bad config file {}", path.display()))
    }
}

/// Everything `stream` runs with, after merging.
#[derive(Debug)]
pub struct StreamSettings {
    pub server: ServerConfig,
    pub start: Option<Start>,
    pub position_file: PathBuf,
    pub sink: SinkKind,
    /// `--sink stdout` may write to /dev/null.
    pub allow_discard: bool,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    pub decode: Options,
    /// Set when the sink is Kafka.
    pub kafka: Option<KafkaSettings>,
    /// Where to serve /metrics, /healthz and /readyz.
    pub metrics_addr: Option<SocketAddr>,
}

impl StreamSettings {
    pub fn resolve(args: StreamArgs) -> Result<StreamSettings> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let start = match (args.server.start.clone(), &file.start) {
            (Some(s), _) => Some(s),
            (None, Some(s)) => Some(s.parse::<Start>().map_err(|e| Usage(format!("bad `start` in the config file: {e:#}")))?),
            (None, None) => None,
        };
        let merged = ServerArgs {
            url: args.server.url.or(file.url),
            password_file: args.server.password_file.or(file.password_file),
            server_id: args.server.server_id.or(file.server_id),
            start: None,
            heartbeat: args.server.heartbeat.or(file.heartbeat),
            wait_for_server: args.server.wait_for_server.or(file.wait_for_server),
        };
        let position_file = args
            .position_file
            .or(file.position_file)
            .context("give --position-file PATH (or position_file in --config): it is where streaming resumes after a restart")?;
        // Lists from flags replace the file's lists rather than adding to them.
        let pick = |flag: Vec<String>, file: Vec<String>| if flag.is_empty() { file } else { flag };
        file.outbox.iter().try_for_each(OutboxTable::validate)?;
        let emit = EmitArgs {
            include: pick(args.emit.include, file.include),
            exclude: pick(args.emit.exclude, file.exclude),
            ops: args.emit.ops.or(file.ops),
            drop_column: pick(args.emit.drop_column, file.drop_columns),
            emit_ddl: args.emit.emit_ddl || file.emit_ddl.unwrap_or(false),
            outbox: args.emit.outbox.clone(),
            outbox_topic: args.emit.outbox_topic.clone(),
        };
        let mut decode = decode_options(&emit, None)?;
        if emit.outbox.is_empty() {
            decode.outbox = file.outbox;
        }
        let sink = args.sink.or(file.sink).unwrap_or(SinkKind::Stdout);
        let kafka = match sink {
            SinkKind::Stdout => None,
            SinkKind::Kafka => {
                // Properties from the file first, so `-X` flags override them.
                let mut properties: Vec<(String, String)> = file
                    .kafka
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                    .collect();
                properties.extend(args.kafka.kafka_property);
                Some(KafkaSettings {
                    brokers: args.kafka.kafka_brokers.or(file.kafka_brokers).context(
                        "--sink kafka needs --kafka-brokers HOST:PORT (or kafka_brokers in --config)",
                    )?,
                    topic: args.kafka.kafka_topic.or(file.kafka_topic).unwrap_or_else(|| "{db}.{table}".into()),
                    topic_prefix: args.kafka.kafka_topic_prefix.or(file.kafka_topic_prefix).unwrap_or_default(),
                    ddl_topic: args.kafka.kafka_ddl_topic.or(file.kafka_ddl_topic).unwrap_or_else(|| "binlog_tail.ddl".into()),
                    key: args.kafka.kafka_key.or(file.kafka_key).unwrap_or(KeyMode::Pk),
                    compression: args.kafka.kafka_compression.or(file.kafka_compression).unwrap_or_else(|| "lz4".into()),
                    properties,
                })
            }
        };
        let mut server = server_config(&merged, true)?;
        server.resume_by_gtid = args.resume_by.or(file.resume_by).unwrap_or(ResumeBy::Gtid) == ResumeBy::Gtid;
        Ok(StreamSettings {
            server,
            start,
            position_file,
            sink,
            allow_discard: args.allow_discard || file.allow_discard.unwrap_or(false),
            metrics_addr: args.metrics_addr.or(file.metrics_addr).as_deref().map(socket_addr).transpose()?,
            kafka,
            checkpoint_every: args.checkpoint_every.or(file.checkpoint_every).unwrap_or(1000).max(1),
            checkpoint_interval: seconds(args.checkpoint_interval.or(file.checkpoint_interval).unwrap_or(1.0), "checkpoint interval")?,
            decode,
        })
    }
}

/// The connection settings shared by every subcommand.
pub fn server_config(args: &ServerArgs, follow: bool) -> Result<ServerConfig> {
    let url = args
        .url
        .clone()
        .context("give --url mysql://USER@HOST:PORT to read from a server (or, for dump, --file PATH... to read binlog files)")?;
    let password = match &args.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --password-file {}", path.display()))?;
            Some(text.lines().next().unwrap_or_default().to_string())
        }
        None => std::env::var("MYSQL_PWD").ok(),
    };
    Ok(ServerConfig {
        url,
        password,
        server_id: args.server_id.unwrap_or_else(random_server_id),
        follow,
        heartbeat: seconds(args.heartbeat.unwrap_or(10.0), "heartbeat")?.max(Duration::from_millis(100)),
        wait_for_server: seconds(args.wait_for_server.unwrap_or(0.0), "wait-for-server")?,
        resume_by_gtid: true,
    })
}

/// The decoder's options from the filter flags.
pub fn decode_options(args: &EmitArgs, limit: Option<u64>) -> Result<Options> {
    let filter = Filter {
        include: args.include.iter().map(|p| TablePattern::parse(p)).collect::<Result<_>>()?,
        exclude: args.exclude.iter().map(|p| TablePattern::parse(p)).collect::<Result<_>>()?,
        ops: args.ops.as_deref().map(parse_ops).transpose()?.unwrap_or_default(),
        drop_columns: args.drop_column.iter().map(|p| ColumnPattern::parse(p)).collect::<Result<_>>()?,
    };
    let outbox = args.outbox.iter().map(|t| OutboxTable::with_defaults(t, &args.outbox_topic)).collect::<Result<_>>()?;
    Ok(Options { limit, filter, emit_ddl: args.emit_ddl, outbox })
}

/// `HOST:PORT` for `--metrics-addr` (a bad value is a usage error, exit 2).
fn socket_addr(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Usage(format!("bad --metrics-addr `{addr}`: expected HOST:PORT, e.g. 0.0.0.0:9187")).into())
}

fn seconds(secs: f64, what: &str) -> Result<Duration> {
    if !(0.0..=86_400.0 * 365.0).contains(&secs) {
        bail!("{what} of {secs} seconds is out of range");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A replica id unlikely to collide with real replicas (which use small ids) or with another
/// binlog-tail: servers refuse a second replica with the same id.
fn random_server_id() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    0x4000_0000 | (RandomState::new().hash_one(std::process::id()) as u32 & 0x3fff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<FileConfig>("url = 'mysql://a@b:1'\nposition_fle = 'x'").unwrap_err();
        assert!(err.to_string().contains("position_fle"), "{err}");
        let ok: FileConfig = toml::from_str("url = 'mysql://a@b:1'\nsink = 'stdout'\ncheckpoint_every = 5").unwrap();
        assert_eq!(ok.checkpoint_every, Some(5));
    }
}
