//! Settings from the parsed options: what needs more than one option, the server or a file to
//! check, or a default that depends on another option.
//!
//! Invariants: every value is validated here or by clap before anything is read or written, and
//! a bad one is a usage error (exit code 2), whichever source (flag, environment, config file)
//! it came from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::{
    EmitArgs, HttpSinkArgs, NatsArgs, OnOff, PositionStoreKind, RedisArgs, ResumeBy, ServerArgs, SinkKind,
    SnapshotArgs, SnapshotMode, StreamArgs, TlsArgs,
};
use crate::decode::Options;
use crate::error::Usage;
use crate::filter::{parse_ops, ColumnPattern, Filter, TablePattern};
use crate::format::{default_server_name, Format, FormatSettings};
use crate::outbox::OutboxTable;
use crate::sink::http::config::HttpSettings;
use crate::sink::kafka::config::{check_brokers, parse_property, KafkaSettings};
use crate::sink::nats::config::{self as nats_config, NatsSettings};
use crate::sink::redis::config::RedisSettings;
use crate::snapshot::{self, KeyOverride};
use crate::source::connection::{parse_url, redact};
use crate::source::tls::{self, TlsOptions};
use crate::source::{ServerConfig, Start};

/// Everything `stream` runs with.
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
    /// Set when the sink is NATS.
    pub nats: Option<NatsSettings>,
    /// Set when the sink is HTTP.
    pub http: Option<HttpSettings>,
    /// Set when the sink is Redis.
    pub redis: Option<RedisSettings>,
    /// Set with `--snapshot initial`.
    pub snapshot: Option<snapshot::Settings>,
    /// Where to serve /metrics, /healthz, /readyz and snapshot requests.
    pub metrics_addr: Option<SocketAddr>,
    /// The bearer token snapshot requests must carry (`--http-token-file`).
    pub http_token: Option<String>,
    /// What decides which Kafka or NATS message is which (see `message_identity`); empty with stdout.
    pub message_identity: String,
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
        let format = format_settings(&args.emit, args.server.url.as_deref())?;
        let mut decode = decode_options(&args.emit, None)?;
        let sink = args.sink;
        let position = match args.position_store {
            PositionStoreKind::File => PositionSettings::File(args.position_file.context(
                "give --position-file PATH: it is where streaming resumes after a restart (or keep the position in Kafka: --position-store kafka)",
            )?),
            PositionStoreKind::Kafka => {
                if sink != SinkKind::Kafka {
                    return Err(Usage("--position-store kafka keeps the position on the Kafka sink's brokers: it needs --sink kafka".into()).into());
                }
                if args.position_file.is_some() {
                    return Err(Usage("--position-file applies to --position-store file; with --position-store kafka the position is in --kafka-position-topic".into()).into());
                }
                let name = match args.stream_name {
                    Some(name) => check_stream_name(&name)?,
                    None => {
                        let url = args.server.url.as_deref().context("give --url mysql://USER@HOST:PORT: the server to stream from")?;
                        let name = default_stream_name(url, &args.emit)?;
                        tracing::info!("stream name {name} (from the server and the filters; set --stream-name to keep the position when they change)");
                        name
                    }
                };
                let topic = args.kafka.kafka_position_topic.clone();
                PositionSettings::Kafka { topic, name, lease_timeout: args.kafka.kafka_lease_timeout }
            }
        };
        let nats = match sink {
            SinkKind::Nats => Some(nats_settings(args.nats, &args.emit, &decode)?),
            _ => None,
        };
        let http = match sink {
            SinkKind::Http => Some(http_settings(args.http)?),
            _ => None,
        };
        let redis = match sink {
            SinkKind::Redis => Some(redis_settings(args.redis)?),
            _ => None,
        };
        let kafka = match sink {
            SinkKind::Stdout | SinkKind::Nats | SinkKind::Http | SinkKind::Redis => None,
            SinkKind::Kafka => {
                let k = args.kafka;
                let brokers = k.kafka_brokers.context("--sink kafka needs --kafka-brokers HOST:PORT")?;
                check_brokers(&brokers).map_err(Usage)?;
                let kafka = KafkaSettings {
                    topic: k.kafka_topic,
                    topic_prefix: k.kafka_topic_prefix,
                    ddl_topic: k.kafka_ddl_topic,
                    key: k.kafka_key,
                    compression: k.kafka_compression,
                    dedupe: k.kafka_dedupe == OnOff::On,
                    headers: k.kafka_headers,
                    ..KafkaSettings::new(brokers, parse_properties(&k.kafka_property)?)
                };
                kafka.check().map_err(usage)?;
                Some(kafka)
            }
        };
        // The HTTP endpoint takes snapshot requests too.
        let snapshot = snapshot_settings(&args.snapshot, args.metrics_addr.is_some())?;
        decode.signal_table = snapshot.as_ref().and_then(|s| s.signal_table.clone());
        let routing = kafka
            .as_ref()
            .map(KafkaSettings::routing)
            .or_else(|| nats.as_ref().map(NatsSettings::routing))
            .or_else(|| http.as_ref().map(HttpSettings::routing))
            .or_else(|| redis.as_ref().map(RedisSettings::routing));
        let message_identity = routing.map(|r| message_identity(&args.emit, &decode, &format, &r)).unwrap_or_default();
        let mut server = server_config(&args.server, true)?;
        // `stream` retries every connection itself, without a limit, logging each attempt and
        // stopping at a signal; a wait inside one attempt would only hide that.
        server.wait_for_server = Duration::ZERO;
        server.resume_by_gtid = args.resume_by == ResumeBy::Gtid;
        Ok(StreamSettings {
            server,
            start: args.server.start,
            position,
            sink,
            allow_discard: args.allow_discard,
            metrics_addr: args.metrics_addr,
            http_token: args.http_token_file.as_deref().map(|f| read_token(f, "--http-token-file")).transpose()?,
            kafka,
            nats,
            http,
            redis,
            checkpoint_every: args.checkpoint_every,
            checkpoint_interval: args.checkpoint_interval,
            decode,
            snapshot,
            format,
            message_identity,
        })
    }
}

/// The secret in a file given to `option` (`--password-file`, token files): its first line.
pub fn secret_from_file(path: &std::path::Path, option: &str) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {option} {}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// A bearer token from its file given to `option` (the first line, trimmed); an empty one is a
/// usage error.
pub fn read_token(path: &std::path::Path, option: &str) -> Result<String> {
    let token = secret_from_file(path, option)?;
    match token.trim() {
        "" => Err(Usage(format!("the token file {} is empty", path.display())).into()),
        token => Ok(token.to_string()),
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
    let fingerprint = crate::sink::order::stream_name(&format!("{host}:{}", opts.tcp_port()), &filters(emit));
    Ok(format!("{host}-{}-{}", opts.tcp_port(), &fingerprint[..8]))
}

/// The filters, as text for fingerprints.
fn filters(emit: &EmitArgs) -> String {
    format!(
        "include={:?};exclude={:?};ops={:?};drop_column={:?}",
        emit.include,
        emit.exclude,
        emit.ops.as_deref().unwrap_or(""),
        emit.drop_column
    )
}

/// The NATS sink's settings; a bad name is a usage error.
fn nats_settings(args: NatsArgs, emit: &EmitArgs, decode: &Options) -> Result<NatsSettings> {
    let url = args.nats_url.context("--sink nats needs --nats-url nats://HOST:PORT")?;
    let settings = NatsSettings {
        url,
        subject: args.nats_subject,
        ddl_subject: args.nats_ddl_subject,
        stream: args.nats_stream,
        create_stream: args.nats_create_stream,
        creds: args.nats_creds,
        token: args.nats_token_file.as_deref().map(|f| secret_from_file(f, "--nats-token-file")).transpose()?,
        tls_ca: args.nats_tls_ca,
        outbox_subjects: decode.outbox.iter().map(|o| nats_config::wildcard(&o.topic)).collect(),
        emit_ddl: emit.emit_ddl,
    };
    settings.check().map_err(usage)?;
    Ok(settings)
}

/// The HTTP sink's settings (also for `check --sink http`); a bad value is a usage error.
pub fn http_settings(args: HttpSinkArgs) -> Result<HttpSettings> {
    let url = args.http_url.ok_or_else(|| Usage("--sink http needs --http-url http://HOST:PORT/PATH".into()))?;
    let token = args.http_sink_token_file.as_deref().map(|f| read_token(f, "--http-sink-token-file")).transpose()?;
    let batch = (args.http_batch_rows, args.http_batch_bytes);
    HttpSettings::new(&url, &args.http_header, token, args.http_tls_ca, batch, args.http_timeout).map_err(usage)
}

/// The Redis sink's settings; a bad URL or key is a usage error.
pub fn redis_settings(args: RedisArgs) -> Result<RedisSettings> {
    let settings = RedisSettings {
        url: args.redis_url.context("--sink redis needs --redis-url redis://HOST:PORT")?,
        password: args.redis_password_file.as_deref().map(|f| read_token(f, "--redis-password-file")).transpose()?,
        tls_ca: args.redis_tls_ca,
        key: args.redis_key,
        ddl_key: args.redis_ddl_key,
        maxlen: args.redis_maxlen,
        allow_no_aof: args.redis_allow_no_aof,
    };
    settings.check().map_err(usage)?;
    Ok(settings)
}

/// What decides which Kafka message is which, for the name of the deduplication stream
/// (`order::stream_name`): the filters, DDL events, the outbox and signal tables, the format and
/// the routing. Written out field by field, never as a Debug text of a settings struct, so a
/// setting added in a later version changes no existing stream's name (pinned by a test).
fn message_identity(emit: &EmitArgs, decode: &Options, format: &FormatSettings, routing: &str) -> String {
    let outbox: Vec<String> = decode
        .outbox
        .iter()
        .map(|o| {
            let columns =
                [&o.id_column, &o.aggregate_type_column, &o.aggregate_id_column, &o.type_column, &o.payload_column];
            format!("{}>{}>{}", o.table, o.topic, columns.map(String::as_str).join(","))
        })
        .collect();
    let signal_table = decode.signal_table.as_ref().map(|(db, t)| format!("{db}.{t}")).unwrap_or_default();
    format!(
        "{};emit_ddl={};outbox={};signal_table={signal_table};format={};debezium_time={};debezium_name={};debezium_tombstones={};routing={}",
        filters(emit),
        decode.emit_ddl,
        outbox.join("|"),
        value_name(&format.format),
        value_name(&format.debezium_time),
        format.debezium_name,
        format.debezium_tombstones,
        routing
    )
}

/// An option value's name, as on the command line.
fn value_name(value: &impl clap::ValueEnum) -> String {
    value.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
}

/// The snapshot settings, when a snapshot was asked for or may be (with a signal table).
pub fn snapshot_settings(args: &SnapshotArgs, requests: bool) -> Result<Option<snapshot::Settings>> {
    let initial = args.snapshot == SnapshotMode::Initial;
    let signal_table = args.signal_table.as_deref().map(parse_table).transpose()?;
    if !initial && signal_table.is_none() && !requests {
        return Ok(None);
    }
    let chunk_size = args.snapshot_chunk_size;
    let parallelism = match args.snapshot_parallelism {
        Some(n) => n as usize,
        // A reader per core, and at least two connections: while one converts its rows the other
        // keeps the server reading (on 2 cores shared with the server, 2 beat 1 in every
        // `scripts/bench --snapshot` run, by 5-14%).
        None => std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)),
    };
    let keys = args.snapshot_key.iter().map(|k| KeyOverride::parse(k)).collect::<Result<_>>()?;
    if args.snapshot_method == Some(snapshot::Method::Watermark) && signal_table.is_none() {
        return Err(Usage(
            "--snapshot-method watermark writes its watermarks to the signal table: give --signal-table db.table"
                .into(),
        )
        .into());
    }
    Ok(Some(snapshot::Settings {
        method: args.snapshot_method,
        initial,
        requests,
        chunk_size,
        parallelism,
        keys,
        signal_table,
    }))
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
    let password = match &args.password_file {
        Some(path) => Some(secret_from_file(path, "--password-file")?),
        None => std::env::var("MYSQL_PWD").ok(),
    };
    let tls = tls::resolve(&tls_options(&args.tls)?, &parse_url(&url)?)?;
    Ok(ServerConfig {
        url,
        password,
        server_id: args.server_id.unwrap_or_else(random_server_id),
        follow,
        heartbeat: args.heartbeat,
        wait_for_server: args.wait_for_server,
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
    let outbox = args.outbox.iter().map(|t| OutboxTable::parse(t, &args.outbox_topic)).collect::<Result<_>>()?;
    Ok(Options { limit, filter, emit_ddl: args.emit_ddl, outbox, signal_table: None })
}

/// The output format from the format flags; the server URL names Debezium's logical server.
pub fn format_settings(args: &EmitArgs, url: Option<&str>) -> Result<FormatSettings> {
    let format = args.format;
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

/// A replica id unlikely to collide with real replicas (which use small ids) or with another
/// binlog-tail: servers refuse a second replica with the same id.
fn random_server_id() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    0x4000_0000 | (RandomState::new().hash_one(std::process::id()) as u32 & 0x3fff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str]) -> Result<StreamSettings> {
        let _env = crate::cli::ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let cli = crate::cli::parse_from([&["binlog-tail", "stream"], args].concat()).expect("parses");
        let crate::cli::Command::Stream(args) = cli.command else { unreachable!() };
        StreamSettings::resolve(args)
    }

    #[test]
    fn snapshot_settings_from_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            "snapshot = 'initial'\nsnapshot_chunk_size = 500\nsnapshot_keys = ['a.b=c']\nsignal_table = 'a.signals'\nsnapshot_method = 'watermark'\nsnapshot_parallelism = 3",
        )
        .unwrap();
        let settings =
            resolve(&["--url", "mysql://r@h:1", "--position-file", "p", "--config", config.to_str().unwrap()]);
        let s = settings.unwrap().snapshot.unwrap();
        assert!(s.initial && s.chunk_size == 500 && s.method == Some(snapshot::Method::Watermark));
        assert_eq!(s.parallelism, 3);
        let default = resolve(&["--url", "mysql://r@h:1", "--position-file", "p", "--snapshot", "initial"]);
        assert!((1..=4).contains(&default.unwrap().snapshot.unwrap().parallelism));
        assert_eq!(s.signal_table, Some(("a".into(), "signals".into())));
        assert_eq!(s.keys[0].columns, ["c"]);
        assert!(parse_table("a.*").is_err() && parse_table("nodot").is_err());
    }

    #[test]
    fn format_settings_from_the_flags() {
        let debezium = resolve(&["--url", "mysql://repl@db.prod:3306", "--position-file", "p", "--format", "debezium"]);
        let settings = debezium.unwrap().format;
        assert_eq!((settings.debezium_name.as_str(), settings.debezium_tombstones), ("db_prod", true));
        let misplaced = resolve(&[
            "--url",
            "mysql://r@h:1",
            "--position-file",
            "p",
            "--format",
            "maxwell",
            "--debezium-time",
            "sql",
        ]);
        assert!(misplaced.unwrap_err().is::<Usage>());
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
        std::fs::write(
            &config,
            "position_store = 'kafka'\nstream_name = 'from-file'\nkafka_position_topic = 'p'\nkafka_lease_timeout = 3.5\n",
        )
        .unwrap();
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
        let err = resolve(&["--url", "mysql://r@h:1", "--position-store", "kafka"]).unwrap_err();
        assert!(err.is::<Usage>() && err.to_string().contains("needs --sink kafka"), "{err}");
    }

    #[test]
    fn the_kafka_messages_identity_is_written_out_and_pinned() {
        let kafka =
            ["--url", "mysql://repl@db:3306", "--position-file", "p", "--sink", "kafka", "--kafka-brokers", "k:9092"];
        let identity = |extra: &[&str]| resolve(&[&kafka[..], extra].concat()).unwrap().message_identity;
        // Pinned: a name that changed between versions would send again what a restart replays.
        let plain = identity(&[]);
        assert_eq!(
            plain,
            "include=[];exclude=[];ops=\"\";drop_column=[];emit_ddl=false;outbox=;signal_table=;format=native;\
             debezium_time=connect;debezium_name=db;debezium_tombstones=true;routing={db}.{table}||binlog_tail.ddl|Pk|"
        );
        assert_eq!(crate::sink::order::stream_name("id", &plain), "8f0d67d866056021");
        for other in
            [&["--format", "maxwell"][..], &["--include", "a"], &["--outbox", "a.o"], &["--kafka-key", "table"]]
        {
            assert_ne!(identity(other), plain, "{other:?}");
        }
        // Settings that do not change which message is which leave it alone.
        assert_eq!(identity(&["--checkpoint-every", "5", "--kafka-compression", "zstd"]), plain);
    }
}
