//! Command-line interface: subcommands and their options. Every streaming option can also come
//! from the environment and from a TOML config file (`--config`): flags win over the
//! environment, which wins over the file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::format::{DebeziumTime, Format};
use crate::sink::kafka::config::KeyMode;
use crate::source::Start;

#[derive(Debug, Parser)]
#[command(name = "binlog-tail", version, about = "Turns a MySQL or MariaDB binlog into a stream of JSON change events")]
pub struct Cli {
    /// Log more (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log lines on stderr as text, or as JSON objects for log shippers [default: text].
    #[arg(long, value_enum, global = true, env = "BINLOG_TAIL_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the small variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode a server's binlog (as a replica) or binlog files into JSON lines on stdout.
    Dump(DumpArgs),
    /// Stream changes continuously, keeping a crash-safe position (production mode).
    Stream(StreamArgs),
    /// Check that a server is set up for change data capture, and say what to fix.
    Check(CheckArgs),
    /// Ask a running stream (through its --signal-table) to snapshot tables again.
    Snapshot(SignalArgs),
    /// Show a saved position, and with --url whether the server can continue from it (exit 3: lost).
    Status(StatusArgs),
    /// Print a shell completion script (e.g. `binlog-tail completions bash > /etc/bash_completion.d/binlog-tail`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `binlog-tail man > binlog-tail.1`.
    Man,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The position file to report on (read without taking its lock: a stream may be running).
    #[arg(long, env = "BINLOG_TAIL_POSITION_FILE", required_unless_present = "position_store")]
    pub position_file: Option<PathBuf>,
    /// `kafka`: report on the position kept in Kafka (with --kafka-brokers and --stream-name).
    #[arg(long, value_enum, env = "BINLOG_TAIL_POSITION_STORE", conflicts_with = "position_file")]
    pub position_store: Option<PositionStoreKind>,
    /// With --position-store kafka: the stream whose position to report.
    #[arg(long, env = "BINLOG_TAIL_STREAM_NAME", requires = "position_store")]
    pub stream_name: Option<String>,
    /// With --position-store kafka: bootstrap brokers, HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "BINLOG_TAIL_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// With --position-store kafka: the topic of positions [default: binlog_tail.positions].
    #[arg(long, env = "BINLOG_TAIL_KAFKA_POSITION_TOPIC")]
    pub kafka_position_topic: Option<String>,
    /// With --position-store kafka: a librdkafka property (SASL, TLS); repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub kafka_property: Vec<String>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub emit: EmitArgs,
    /// Binlog or relay-log files to decode instead of a server, in the order given.
    #[arg(long, num_args = 1.., conflicts_with = "url")]
    pub file: Vec<PathBuf>,
    /// Write JSON lines to stdout (the only sink of `dump`).
    #[arg(long, default_value_t = true)]
    pub stdout: bool,
    /// Keep tailing at the end (of the server's binlog, or of the last file) instead of exiting.
    #[arg(long)]
    pub follow: bool,
    /// Stop after this many change events.
    #[arg(long)]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
}

/// Snapshots of existing rows. In a config file: `snapshot = "initial"`, `snapshot_chunk_size`,
/// `snapshot_keys = ["db.table=col,..."]`.
#[derive(Debug, Args, Default)]
pub struct SnapshotArgs {
    /// `initial`: without a saved position, emit every existing row of the included tables
    /// (`op: "read"`), then the changes from exactly that point; `never`: only changes [default: never].
    #[arg(long, value_enum, env = "BINLOG_TAIL_SNAPSHOT")]
    pub snapshot: Option<SnapshotMode>,
    /// Rows per snapshot chunk (each read in its own short transaction) [default: 10000].
    #[arg(long, env = "BINLOG_TAIL_SNAPSHOT_CHUNK_SIZE")]
    pub snapshot_chunk_size: Option<u64>,
    /// The chunk key of a table without a primary key: db.table=column[,column...] (unique,
    /// NOT NULL columns); repeatable.
    #[arg(long, value_name = "DB.TABLE=COLUMNS")]
    pub snapshot_key: Vec<String>,
    /// How each chunk finds its place in the stream: `consistent` (MariaDB's consistent-snapshot
    /// binlog position) or `watermark` (low/high watermark rows written to --signal-table)
    /// [default: consistent on MariaDB, watermark on MySQL].
    #[arg(long, value_enum, env = "BINLOG_TAIL_SNAPSHOT_METHOD")]
    pub snapshot_method: Option<crate::snapshot::Method>,
    /// A table (db.table) whose inserted rows start and stop incremental snapshots while
    /// streaming, in Debezium's format; see `binlog-tail snapshot`.
    #[arg(long, value_name = "DB.TABLE", env = "BINLOG_TAIL_SIGNAL_TABLE")]
    pub signal_table: Option<String>,
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The signal table the stream watches (db.table).
    #[arg(long, value_name = "DB.TABLE")]
    pub signal_table: String,
    /// A table (db.table; * and ? wildcards) to snapshot; repeatable.
    #[arg(long, value_name = "DB.TABLE", required = true)]
    pub table: Vec<String>,
    /// Stop snapshotting these tables instead.
    #[arg(long)]
    pub stop: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    Never,
    Initial,
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub emit: EmitArgs,
    /// TOML file with any of these options (keys as the long flags, with `_` for `-`).
    #[arg(long, env = "BINLOG_TAIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the position is kept: streaming resumes from it after a restart (--position-store file).
    #[arg(long, env = "BINLOG_TAIL_POSITION_FILE")]
    pub position_file: Option<PathBuf>,
    /// Keep the position in a local --position-file (locked: one process at a time), or in a
    /// compacted Kafka topic on the --kafka-brokers (no volume needed; one instance streams, others
    /// stand by) [default: file].
    #[arg(long, value_enum, env = "BINLOG_TAIL_POSITION_STORE")]
    pub position_store: Option<PositionStoreKind>,
    /// With --position-store kafka: the key of this stream's position and the name of its lease
    /// (letters, digits, `.`, `_`, `-`) [default: the --url host and port and a fingerprint of the filters].
    #[arg(long, env = "BINLOG_TAIL_STREAM_NAME")]
    pub stream_name: Option<String>,
    /// Where change events go [default: stdout].
    #[arg(long, value_enum, env = "BINLOG_TAIL_SINK")]
    pub sink: Option<SinkKind>,
    /// Save the position after at most this many transactions [default: 1000].
    #[arg(long, env = "BINLOG_TAIL_CHECKPOINT_EVERY")]
    pub checkpoint_every: Option<u64>,
    /// Save the position at least this often, in seconds, while transactions arrive [default: 1].
    #[arg(long, env = "BINLOG_TAIL_CHECKPOINT_INTERVAL")]
    pub checkpoint_interval: Option<f64>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    /// How to resume a saved position: `gtid` where the server has GTIDs (survives failover),
    /// else `file` offsets; `file` always uses file and offset [default: gtid].
    #[arg(long, value_enum, env = "BINLOG_TAIL_RESUME_BY")]
    pub resume_by: Option<ResumeBy>,
    /// Accept a stdout that throws events away (/dev/null) with --sink stdout; the position still moves.
    #[arg(long, env = "BINLOG_TAIL_ALLOW_DISCARD")]
    pub allow_discard: bool,
    /// Serve Prometheus metrics (/metrics) and probes (/healthz, /readyz) on HOST:PORT [default: off].
    #[arg(long, value_name = "HOST:PORT", env = "BINLOG_TAIL_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionStoreKind {
    File,
    Kafka,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResumeBy {
    Gtid,
    File,
}

/// What to emit. In a config file: `include = [...]`, `exclude = [...]`, `ops = "insert,update"`,
/// `drop_columns = [...]`, `emit_ddl = true`, `[[outbox]]` tables, `format = "debezium"` and the
/// `debezium_*` settings.
#[derive(Debug, Args, Default)]
pub struct EmitArgs {
    /// Only tables matching this db.table pattern (* and ? wildcards; `shop` = `shop.*`); repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub include: Vec<String>,
    /// Never tables matching this pattern; wins over --include; repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Only these operations: comma-separated insert, update, delete, read (snapshot rows).
    #[arg(long, value_name = "OPS")]
    pub ops: Option<String>,
    /// Leave this column out of every event (db.table.column, wildcards allowed); repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub drop_column: Vec<String>,
    /// Emit DDL and TRUNCATE statements as events (`op: "ddl"`).
    #[arg(long)]
    pub emit_ddl: bool,
    /// An outbox table (db.table): its inserts become messages routed by aggregate; repeatable.
    #[arg(long, value_name = "TABLE")]
    pub outbox: Vec<String>,
    /// Topic template for --outbox tables: {aggregate_type}, {db}, {table} are replaced.
    #[arg(long, value_name = "TEMPLATE", default_value = "outbox.event.{aggregate_type}")]
    pub outbox_topic: String,
    /// Event format: binlog-tail's own, or the envelope of Debezium, Maxwell or Canal, for their
    /// consumers [default: native].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// With --format debezium: DATE/DATETIME/TIME/TIMESTAMP as Debezium's numbers (`connect`), or
    /// as SQL text (`sql`), which Flink SQL needs [default: connect].
    #[arg(long, value_enum)]
    pub debezium_time: Option<DebeziumTime>,
    /// With --format debezium: the logical server name in `source.name` [default: the server's host].
    #[arg(long, value_name = "NAME")]
    pub debezium_name: Option<String>,
    /// With --format debezium on Kafka: a tombstone (null value) after each delete [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub debezium_tombstones: Option<bool>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Also check that the position saved in this file is still on the server.
    #[arg(long)]
    pub position_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Stdout,
    Kafka,
}

/// The Kafka sink. In a config file: `kafka_brokers`, `kafka_topic`, ... and a `[kafka]` table
/// of librdkafka properties.
#[derive(Debug, Args, Default)]
pub struct KafkaArgs {
    /// Bootstrap brokers, HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "BINLOG_TAIL_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Topic template: {db} and {table} are replaced; without them, one fixed topic [default: {db}.{table}].
    #[arg(long, env = "BINLOG_TAIL_KAFKA_TOPIC")]
    pub kafka_topic: Option<String>,
    /// Prefix for every topic name.
    #[arg(long, env = "BINLOG_TAIL_KAFKA_TOPIC_PREFIX")]
    pub kafka_topic_prefix: Option<String>,
    /// Message key: the primary key as JSON (per-row order), db.table, or none [default: pk].
    #[arg(long, value_enum, env = "BINLOG_TAIL_KAFKA_KEY")]
    pub kafka_key: Option<KeyMode>,
    /// zstd, lz4, snappy, gzip or none [default: lz4].
    #[arg(long, env = "BINLOG_TAIL_KAFKA_COMPRESSION")]
    pub kafka_compression: Option<String>,
    /// Topic for DDL events (--emit-ddl) [default: binlog_tail.ddl].
    #[arg(long, env = "BINLOG_TAIL_KAFKA_DDL_TOPIC")]
    pub kafka_ddl_topic: Option<String>,
    /// Skip, after a restart, replayed messages that Kafka already holds (reads each partition's
    /// last messages once) [default: on].
    #[arg(long, value_enum, env = "BINLOG_TAIL_KAFKA_DEDUPE")]
    pub kafka_dedupe: Option<OnOff>,
    /// With --position-store kafka: the compacted topic of positions [default: binlog_tail.positions].
    #[arg(long, env = "BINLOG_TAIL_KAFKA_POSITION_TOPIC")]
    pub kafka_position_topic: Option<String>,
    /// With --position-store kafka: seconds an instance may go unheard by Kafka before a standby
    /// takes the stream over [default: 10].
    #[arg(long, value_name = "SECS", env = "BINLOG_TAIL_KAFKA_LEASE_TIMEOUT")]
    pub kafka_lease_timeout: Option<f64>,
    /// A librdkafka property (SASL, TLS, tuning), e.g. -X security.protocol=SASL_SSL; repeatable.
    // Parsed later: clap's own error would echo the value, which may be a password.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub kafka_property: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Server to replicate from: mysql://USER@HOST:PORT (no password here: use --password-file or MYSQL_PWD).
    // The environment's value may hold a password: --help must not print it.
    #[arg(long, env = "BINLOG_TAIL_URL", hide_env_values = true)]
    pub url: Option<String>,
    /// File holding the password (first line).
    #[arg(long, env = "BINLOG_TAIL_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Replica server id, 1 or more; must differ from every other replica of the server [default: random].
    #[arg(long, env = "BINLOG_TAIL_SERVER_ID", value_parser = clap::value_parser!(u32).range(1..))]
    pub server_id: Option<u32>,
    /// Where to start: earliest, latest, FILE:POS, or a GTID set (uuid:1-100 or 0-1-100)
    /// [default: earliest for dump; latest for stream without a saved position].
    #[arg(long, env = "BINLOG_TAIL_START")]
    pub start: Option<Start>,
    /// Seconds between server heartbeats; three missed ones mean the connection is dead [default: 10].
    #[arg(long, env = "BINLOG_TAIL_HEARTBEAT")]
    pub heartbeat: Option<f64>,
    /// dump, check: keep retrying the first connection this many seconds while the server starts
    /// (stream always retries) [default: 0].
    #[arg(long, env = "BINLOG_TAIL_WAIT_FOR_SERVER")]
    pub wait_for_server: Option<f64>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS to the server; any of these turns it on. In a config file: `tls = true`, `tls_ca`,
/// `tls_ca_only`, `tls_cert`, `tls_key`, `tls_server_name`.
#[derive(Debug, Args, Default)]
pub struct TlsArgs {
    /// Require TLS, verifying the server's certificate (system and built-in CAs) and host name; as ?require_ssl=true in --url.
    #[arg(long, env = "BINLOG_TAIL_TLS")]
    pub tls: bool,
    /// Also trust the CA certificates in this PEM file (a private CA: the server's ssl_ca).
    #[arg(long, value_name = "FILE", env = "BINLOG_TAIL_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Trust only the --tls-ca file, not the system's or the built-in CAs.
    #[arg(long, env = "BINLOG_TAIL_TLS_CA_ONLY")]
    pub tls_ca_only: bool,
    /// Client certificate (PEM) for users that REQUIRE X509; needs --tls-key.
    #[arg(long, value_name = "FILE", env = "BINLOG_TAIL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM, unencrypted).
    #[arg(long, value_name = "FILE", env = "BINLOG_TAIL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Verify the server's certificate for this name instead of the --url host (an IP address, a tunnel).
    #[arg(long, value_name = "NAME", env = "BINLOG_TAIL_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}
