//! The TOML config file of `stream`, merged under flags and environment variables.
//!
//! Invariants: unknown keys are an error (a typo must not silently fall back to a default), and
//! every value is validated the same way whether it came from a flag, the environment or the file.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::cli::{
    EmitArgs, LogFormat, OnOff, PositionStoreKind, ResumeBy, ServerArgs, SinkKind, SnapshotArgs, SnapshotMode,
    StreamArgs, TlsArgs,
};
use crate::decode::Options;
use crate::error::Usage;
use crate::filter::{parse_ops, ColumnPattern, Filter, TablePattern};
use crate::format::{default_server_name, DebeziumTime, Format, FormatSettings};
use crate::outbox::OutboxTable;
use crate::sink::kafka::config::{check_brokers, parse_property, KafkaSettings, KeyMode};
use crate::snapshot::{self, KeyOverride};
use crate::source::connection::{parse_url, redact};
use crate::source::tls::{self, TlsOptions};
use crate::source::{ServerConfig, Start};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub url: Option<String>,
    pub password_file: Option<PathBuf>,
    pub server_id: Option<u32>,
    pub start: Option<String>,
    pub heartbeat: Option<f64>,
    pub wait_for_server: Option<f64>,
    pub tls: Option<bool>,
    pub tls_ca: Option<PathBuf>,
    pub tls_ca_only: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    pub position_file: Option<PathBuf>,
    pub position_store: Option<PositionStoreKind>,
    pub stream_name: Option<String>,
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
    pub format: Option<Format>,
    pub debezium_time: Option<DebeziumTime>,
    pub debezium_name: Option<String>,
    pub debezium_tombstones: Option<bool>,
    pub kafka_brokers: Option<String>,
    pub kafka_topic: Option<String>,
    pub kafka_topic_prefix: Option<String>,
    pub kafka_key: Option<KeyMode>,
    pub kafka_compression: Option<String>,
    pub kafka_ddl_topic: Option<String>,
    pub kafka_dedupe: Option<OnOff>,
    pub kafka_position_topic: Option<String>,
    pub kafka_lease_timeout: Option<f64>,
    /// librdkafka properties.
    #[serde(default)]
    pub kafka: std::collections::BTreeMap<String, toml::Value>,
    pub snapshot: Option<SnapshotMode>,
    pub snapshot_chunk_size: Option<u64>,
    #[serde(default)]
    pub snapshot_keys: Vec<String>,
    pub signal_table: Option<String>,
    pub snapshot_method: Option<snapshot::Method>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --config {}", path.display()))?;
        FileConfig::parse(&text).with_context(|| format!("bad config file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<FileConfig> {
        Ok(toml::from_str(text)?)
    }
}

/// Everything `stream` runs with, after merging.
#[derive(Debug)]
pub struct StreamSettings {
    pub server: ServerConfig,
    pub start: Option<Start>,
    pub position: PositionSettings,
    pub sink: SinkKind,
    /// `--sink stdout` may write to /dev/null.
    pub allow_discard: bool,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    pub decode: Options,
    pub format: FormatSettings,
    /// Set when the sink is Kafka.
    pub kafka: Option<KafkaSettings>,
    /// Set with `--snapshot initial`.
    pub snapshot: Option<snapshot::Settings>,
    /// Where to serve /metrics, /healthz and /readyz.
    pub metrics_addr: Option<SocketAddr>,
}

/// Where the position is kept.
#[derive(Debug)]
pub enum PositionSettings {
    File(PathBuf),
    /// A compacted topic on the Kafka sink's brokers, under the stream's name, which also names
    /// its lease; `lease_timeout` is how long an instance may go unheard before a standby takes over.
    Kafka {
        topic: String,
        name: String,
        lease_timeout: Duration,
    },
}

impl StreamSettings {
    pub fn resolve(args: StreamArgs) -> Result<StreamSettings> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let start = match (args.server.start.clone(), &file.start) {
            (Some(s), _) => Some(s),
            (None, Some(s)) => {
                Some(s.parse::<Start>().map_err(|e| Usage(format!("bad `start` in the config file: {e:#}")))?)
            }
            (None, None) => None,
        };
        let merged = ServerArgs {
            url: args.server.url.or(file.url),
            password_file: args.server.password_file.or(file.password_file),
            server_id: args.server.server_id.or(file.server_id),
            start: None,
            heartbeat: args.server.heartbeat.or(file.heartbeat),
            wait_for_server: args.server.wait_for_server.or(file.wait_for_server),
            tls: TlsArgs {
                tls: args.server.tls.tls || file.tls.unwrap_or(false),
                tls_ca: args.server.tls.tls_ca.or(file.tls_ca),
                tls_ca_only: args.server.tls.tls_ca_only || file.tls_ca_only.unwrap_or(false),
                tls_cert: args.server.tls.tls_cert.or(file.tls_cert),
                tls_key: args.server.tls.tls_key.or(file.tls_key),
                tls_server_name: args.server.tls.tls_server_name.or(file.tls_server_name),
            },
        };
        // Lists from flags replace the file's lists rather than adding to them.
        let pick = |flag: Vec<String>, file: Vec<String>| if flag.is_empty() { file } else { flag };
        file.outbox.iter().try_for_each(OutboxTable::validate).map_err(usage)?;
        let emit = EmitArgs {
            include: pick(args.emit.include, file.include),
            exclude: pick(args.emit.exclude, file.exclude),
            ops: args.emit.ops.or(file.ops),
            drop_column: pick(args.emit.drop_column, file.drop_columns),
            emit_ddl: args.emit.emit_ddl || file.emit_ddl.unwrap_or(false),
            outbox: args.emit.outbox.clone(),
            outbox_topic: args.emit.outbox_topic.clone(),
            format: args.emit.format.or(file.format),
            debezium_time: args.emit.debezium_time.or(file.debezium_time),
            debezium_name: args.emit.debezium_name.or(file.debezium_name),
            debezium_tombstones: args.emit.debezium_tombstones.or(file.debezium_tombstones),
        };
        let format = format_settings(&emit, merged.url.as_deref())?;
        let mut decode = decode_options(&emit, None)?;
        if emit.outbox.is_empty() {
            decode.outbox = file.outbox;
        }
        let sink = args.sink.or(file.sink).unwrap_or(SinkKind::Stdout);
        let position = match args.position_store.or(file.position_store).unwrap_or(PositionStoreKind::File) {
            PositionStoreKind::File => PositionSettings::File(args.position_file.or(file.position_file).context(
                "give --position-file PATH (or position_file in --config): it is where streaming resumes after a restart (or keep the position in Kafka: --position-store kafka)",
            )?),
            PositionStoreKind::Kafka => {
                if sink != SinkKind::Kafka {
                    return Err(Usage("--position-store kafka keeps the position on the Kafka sink's brokers: it needs --sink kafka".into()).into());
                }
                if args.position_file.is_some() || file.position_file.is_some() {
                    return Err(Usage("--position-file applies to --position-store file; with --position-store kafka the position is in --kafka-position-topic".into()).into());
                }
                let name = match args.stream_name.or(file.stream_name) {
                    Some(name) => check_stream_name(&name)?,
                    None => {
                        let url = merged.url.as_deref().context("give --url mysql://USER@HOST:PORT: the server to stream from")?;
                        let name = default_stream_name(url, &emit)?;
                        tracing::info!("stream name {name} (from the server and the filters; set --stream-name to keep the position when they change)");
                        name
                    }
                };
                let topic = args.kafka.kafka_position_topic.clone().or(file.kafka_position_topic.clone()).unwrap_or_else(|| crate::checkpoint::kafka::DEFAULT_TOPIC.into());
                let lease_timeout = seconds(args.kafka.kafka_lease_timeout.or(file.kafka_lease_timeout).unwrap_or(10.0), "--kafka-lease-timeout")?;
                if lease_timeout < Duration::from_secs(1) {
                    return Err(Usage("--kafka-lease-timeout must be at least 1 second".into()).into());
                }
                PositionSettings::Kafka { topic, name, lease_timeout }
            }
        };
        let kafka = match sink {
            SinkKind::Stdout => None,
            SinkKind::Kafka => {
                // Properties from the file first, so `-X` flags override them.
                let mut properties: Vec<(String, String)> = file
                    .kafka
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                    .collect();
                properties.extend(parse_properties(&args.kafka.kafka_property)?);
                let brokers = args
                    .kafka
                    .kafka_brokers
                    .or(file.kafka_brokers)
                    .context("--sink kafka needs --kafka-brokers HOST:PORT (or kafka_brokers in --config)")?;
                check_brokers(&brokers).map_err(Usage)?;
                let defaults = KafkaSettings::new(brokers, properties);
                let kafka = KafkaSettings {
                    topic: args.kafka.kafka_topic.or(file.kafka_topic).unwrap_or(defaults.topic.clone()),
                    topic_prefix: args.kafka.kafka_topic_prefix.or(file.kafka_topic_prefix).unwrap_or_default(),
                    ddl_topic: args
                        .kafka
                        .kafka_ddl_topic
                        .or(file.kafka_ddl_topic)
                        .unwrap_or(defaults.ddl_topic.clone()),
                    key: args.kafka.kafka_key.or(file.kafka_key).unwrap_or(defaults.key),
                    compression: args
                        .kafka
                        .kafka_compression
                        .or(file.kafka_compression)
                        .unwrap_or(defaults.compression.clone()),
                    dedupe: args.kafka.kafka_dedupe.or(file.kafka_dedupe).map_or(defaults.dedupe, |d| d == OnOff::On),
                    ..defaults
                };
                kafka.check().map_err(usage)?;
                Some(kafka)
            }
        };
        let snapshot_args = SnapshotArgs {
            snapshot: args.snapshot.snapshot.or(file.snapshot),
            snapshot_chunk_size: args.snapshot.snapshot_chunk_size.or(file.snapshot_chunk_size),
            snapshot_key: pick(args.snapshot.snapshot_key, file.snapshot_keys),
            signal_table: args.snapshot.signal_table.or(file.signal_table),
            snapshot_method: args.snapshot.snapshot_method.or(file.snapshot_method),
        };
        let snapshot = snapshot_settings(&snapshot_args)?;
        decode.signal_table = snapshot.as_ref().and_then(|s| s.signal_table.clone());
        let mut server = server_config(&merged, true)?;
        // `stream` retries every connection itself, without a limit, logging each attempt and
        // stopping at a signal; a wait inside one attempt would only hide that.
        server.wait_for_server = Duration::ZERO;
        server.resume_by_gtid = args.resume_by.or(file.resume_by).unwrap_or(ResumeBy::Gtid) == ResumeBy::Gtid;
        Ok(StreamSettings {
            server,
            start,
            position,
            sink,
            allow_discard: args.allow_discard || file.allow_discard.unwrap_or(false),
            metrics_addr: args.metrics_addr.or(file.metrics_addr).as_deref().map(socket_addr).transpose()?,
            kafka,
            checkpoint_every: args.checkpoint_every.or(file.checkpoint_every).unwrap_or(1000).max(1),
            checkpoint_interval: seconds(
                args.checkpoint_interval.or(file.checkpoint_interval).unwrap_or(1.0),
                "checkpoint interval",
            )?,
            decode,
            snapshot,
            format,
        })
    }
}

/// `-X key=value` flags; a malformed one is a usage error.
fn parse_properties(flags: &[String]) -> Result<Vec<(String, String)>> {
    flags.iter().map(|p| parse_property(p).map_err(|e| Usage(format!("-X: {e}")).into())).collect()
}

/// The Kafka cluster of a command that only reads from it (`status`): its brokers and `-X`
/// properties, checked like those of `stream`.
pub fn kafka_connection(brokers: Option<String>, properties: &[String]) -> Result<KafkaSettings> {
    let brokers = brokers.context("--position-store kafka needs --kafka-brokers HOST:PORT")?;
    check_brokers(&brokers).map_err(Usage)?;
    let settings = KafkaSettings::new(brokers, parse_properties(properties)?);
    settings.check().map_err(usage)?;
    Ok(settings)
}

/// A `--stream-name`: it becomes a Kafka key and part of a consumer group id.
pub fn check_stream_name(name: &str) -> Result<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if name.is_empty() || name.len() > 200 || !name.chars().all(allowed) {
        return Err(Usage(format!("--stream-name `{name}`: use 1 to 200 letters, digits, `.`, `_` and `-`")).into());
    }
    Ok(name.to_string())
}

/// The stream name when none is given: the server's host and port, and a fingerprint of the
/// filters (which decide what the stream holds), e.g. `db.example.com-3306-5f3a9c1e`.
fn default_stream_name(url: &str, emit: &EmitArgs) -> Result<String> {
    let opts = parse_url(url)?;
    let host: String =
        opts.ip_or_hostname().chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect();
    let filters = format!(
        "include={:?};exclude={:?};ops={:?};drop_column={:?}",
        emit.include,
        emit.exclude,
        emit.ops.as_deref().unwrap_or(""),
        emit.drop_column
    );
    let fingerprint = crate::sink::kafka::dedupe::stream_name(&format!("{host}:{}", opts.tcp_port()), &filters);
    Ok(format!("{host}-{}-{}", opts.tcp_port(), &fingerprint[..8]))
}

/// The snapshot settings, when a snapshot was asked for or may be (with a signal table).
pub fn snapshot_settings(args: &SnapshotArgs) -> Result<Option<snapshot::Settings>> {
    let initial = args.snapshot == Some(SnapshotMode::Initial);
    let signal_table = args.signal_table.as_deref().map(parse_table).transpose()?;
    if !initial && signal_table.is_none() {
        return Ok(None);
    }
    let chunk_size = args.snapshot_chunk_size.unwrap_or(10_000);
    if chunk_size == 0 {
        return Err(Usage("--snapshot-chunk-size must be at least 1".into()).into());
    }
    let keys = args.snapshot_key.iter().map(|k| KeyOverride::parse(k)).collect::<Result<_>>()?;
    if args.snapshot_method == Some(snapshot::Method::Watermark) && signal_table.is_none() {
        return Err(Usage(
            "--snapshot-method watermark writes its watermarks to the signal table: give --signal-table db.table"
                .into(),
        )
        .into());
    }
    Ok(Some(snapshot::Settings { method: args.snapshot_method, initial, chunk_size, keys, signal_table }))
}

/// `db.table`, exactly (no wildcards).
pub fn parse_table(text: &str) -> Result<(String, String)> {
    match text.split_once('.') {
        Some((db, t)) if !db.is_empty() && !t.is_empty() && !text.contains(['*', '?']) => {
            Ok((db.to_string(), t.to_string()))
        }
        _ => Err(Usage(format!("`{text}` is not a table: use db.table")).into()),
    }
}

/// The connection settings shared by every subcommand.
pub fn server_config(args: &ServerArgs, follow: bool) -> Result<ServerConfig> {
    let url = args.url.clone().context(
        "give --url mysql://USER@HOST:PORT to read from a server (or, for dump, --file PATH... to read binlog files)",
    )?;
    if redact(&url) != url {
        tracing::warn!(
            "the --url holds a password, which other users of this machine can read (`ps`, /proc, shell history): put it in --password-file or MYSQL_PWD instead"
        );
    }
    if args.server_id == Some(0) {
        // Clap refuses 0 on the command line; this is the config file's value.
        return Err(Usage(
            "server_id 0 in the config file: a replica id must be 1 or more (or leave it out for a random one)".into(),
        )
        .into());
    }
    let password = match &args.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --password-file {}", path.display()))?;
            Some(text.lines().next().unwrap_or_default().to_string())
        }
        None => std::env::var("MYSQL_PWD").ok(),
    };
    let tls = tls::resolve(&tls_options(&args.tls)?, &parse_url(&url)?)?;
    Ok(ServerConfig {
        url,
        password,
        server_id: args.server_id.unwrap_or_else(random_server_id),
        follow,
        heartbeat: seconds(args.heartbeat.unwrap_or(10.0), "heartbeat")?.max(Duration::from_millis(100)),
        wait_for_server: seconds(args.wait_for_server.unwrap_or(0.0), "wait-for-server")?,
        resume_by_gtid: true,
        tls,
    })
}

fn tls_options(args: &TlsArgs) -> Result<TlsOptions> {
    let identity = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        (Some(_), None) => {
            return Err(Usage("--tls-cert needs --tls-key: the client certificate's private key".into()).into())
        }
        (None, Some(_)) => return Err(Usage("--tls-key needs --tls-cert: the client certificate".into()).into()),
    };
    Ok(TlsOptions {
        require: args.tls,
        ca: args.tls_ca.clone(),
        ca_only: args.tls_ca_only,
        identity,
        server_name: args.tls_server_name.clone(),
    })
}

/// The decoder's options from the filter flags; a bad pattern is a usage error.
pub fn decode_options(args: &EmitArgs, limit: Option<u64>) -> Result<Options> {
    filter_options(args, limit).map_err(usage)
}

fn filter_options(args: &EmitArgs, limit: Option<u64>) -> Result<Options> {
    let filter = Filter {
        include: args.include.iter().map(|p| TablePattern::parse(p)).collect::<Result<_>>()?,
        exclude: args.exclude.iter().map(|p| TablePattern::parse(p)).collect::<Result<_>>()?,
        ops: args.ops.as_deref().map(parse_ops).transpose()?.unwrap_or_default(),
        drop_columns: args.drop_column.iter().map(|p| ColumnPattern::parse(p)).collect::<Result<_>>()?,
    };
    let outbox =
        args.outbox.iter().map(|t| OutboxTable::with_defaults(t, &args.outbox_topic)).collect::<Result<_>>()?;
    Ok(Options { limit, filter, emit_ddl: args.emit_ddl, outbox, signal_table: None })
}

/// The output format from the format flags; the server URL names Debezium's logical server.
pub fn format_settings(args: &EmitArgs, url: Option<&str>) -> Result<FormatSettings> {
    let format = args.format.unwrap_or_default();
    let debezium_only = [
        ("--debezium-time", args.debezium_time.is_some()),
        ("--debezium-name", args.debezium_name.is_some()),
        ("--debezium-tombstones", args.debezium_tombstones.is_some()),
    ];
    if format != Format::Debezium {
        if let Some((flag, _)) = debezium_only.iter().find(|(_, given)| *given) {
            return Err(Usage(format!("{flag} applies only to --format debezium (the format is {format:?})")).into());
        }
    }
    Ok(FormatSettings {
        format,
        debezium_time: args.debezium_time.unwrap_or_default(),
        debezium_name: args.debezium_name.clone().unwrap_or_else(|| default_server_name(url)),
        debezium_tombstones: args.debezium_tombstones.unwrap_or(true),
    })
}

/// A bad value that clap could not catch: exit code 2 like a bad command line.
fn usage(e: anyhow::Error) -> anyhow::Error {
    Usage(format!("{e:#}")).into()
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

    #[test]
    fn snapshot_keys_in_the_config_file() {
        let file: FileConfig = toml::from_str(
            "snapshot = 'initial'\nsnapshot_chunk_size = 500\nsnapshot_keys = ['a.b=c']\nsignal_table = 'a.signals'\nsnapshot_method = 'watermark'",
        )
        .unwrap();
        let args = SnapshotArgs {
            snapshot: file.snapshot,
            snapshot_chunk_size: file.snapshot_chunk_size,
            snapshot_key: file.snapshot_keys,
            snapshot_method: file.snapshot_method,
            signal_table: file.signal_table,
        };
        let s = snapshot_settings(&args).unwrap().unwrap();
        assert!(s.initial && s.chunk_size == 500 && s.method == Some(snapshot::Method::Watermark));
        assert_eq!(s.signal_table, Some(("a".into(), "signals".into())));
        assert_eq!(s.keys[0].columns, ["c"]);
        assert!(parse_table("a.*").is_err() && parse_table("nodot").is_err());
    }

    #[test]
    fn format_settings_from_the_file_and_flags() {
        let file: FileConfig =
            toml::from_str("format = 'debezium'\ndebezium_time = 'sql'\ndebezium_tombstones = false").unwrap();
        assert_eq!(
            (file.format, file.debezium_time, file.debezium_tombstones),
            (Some(Format::Debezium), Some(DebeziumTime::Sql), Some(false))
        );
        assert!(toml::from_str::<FileConfig>("format = 'avro'").is_err());
        let debezium = EmitArgs { format: Some(Format::Debezium), ..EmitArgs::default() };
        let settings = format_settings(&debezium, Some("mysql://repl@db.prod:3306")).unwrap();
        assert_eq!((settings.debezium_name.as_str(), settings.debezium_tombstones), ("db_prod", true));
        let misplaced =
            EmitArgs { format: Some(Format::Maxwell), debezium_time: Some(DebeziumTime::Sql), ..EmitArgs::default() };
        assert!(format_settings(&misplaced, None).unwrap_err().is::<Usage>());
    }

    fn resolve(args: &[&str]) -> Result<StreamSettings> {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([&["binlog-tail", "stream"], args].concat()).expect("parses");
        let crate::cli::Command::Stream(args) = cli.command else { unreachable!() };
        StreamSettings::resolve(args)
    }

    #[test]
    fn the_kafka_store_names_its_stream_after_the_server_and_the_filters() {
        let kafka = [
            "--url",
            "mysql://repl@db.example.com:3306",
            "--sink",
            "kafka",
            "--kafka-brokers",
            "k:9092",
            "--position-store",
            "kafka",
        ];
        let name = |extra: &[&str]| match resolve(&[&kafka[..], extra].concat()).unwrap().position {
            PositionSettings::Kafka { name, topic, lease_timeout } => {
                assert_eq!((topic.as_str(), lease_timeout), ("binlog_tail.positions", Duration::from_secs(10)));
                name
            }
            PositionSettings::File(_) => panic!("a file store"),
        };
        // Pinned: a default that changed between versions would start a new stream.
        assert_eq!(name(&["--include", "shop"]), "db.example.com-3306-46403cf8");
        assert_eq!(
            name(&["--include", "shop"]),
            name(&["--include", "shop", "--kafka-topic", "all"]),
            "routing is not a filter"
        );
        assert_ne!(name(&["--include", "shop"]), name(&["--include", "crm"]));
        assert_eq!(name(&["--stream-name", "shop-cdc", "--include", "crm"]), "shop-cdc");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(&config, "position_store = 'kafka'\nstream_name = 'from-file'\nkafka_position_topic = 'p'\nkafka_lease_timeout = 3.5\n").unwrap();
        let from_file = resolve(&[
            "--url",
            "mysql://r@h:1",
            "--sink",
            "kafka",
            "--kafka-brokers",
            "k:9092",
            "--config",
            config.to_str().unwrap(),
        ])
        .unwrap();
        assert!(matches!(from_file.position, PositionSettings::Kafka { ref name, ref topic, lease_timeout }
            if name == "from-file" && topic == "p" && lease_timeout == Duration::from_millis(3500)));
        for (bad, says) in [
            (&["--position-store", "kafka"][..], "needs --sink kafka"),
            (
                &[
                    "--sink",
                    "kafka",
                    "--kafka-brokers",
                    "k:9092",
                    "--position-store",
                    "kafka",
                    "--kafka-lease-timeout",
                    "0.5",
                ][..],
                "at least 1 second",
            ),
        ] {
            let err = resolve(&[&["--url", "mysql://r@h:1"][..], bad].concat()).unwrap_err();
            assert!(err.is::<Usage>() && err.to_string().contains(says), "{err}");
        }
    }
}
