//! Command-line interface: subcommands and their options, each declared once, here.
//!
//! Everything else about an option is derived from its declaration (see `parse`): its
//! environment variable (`BINLOG_TAIL_` and the long name in upper snake case), its config-file
//! key (the long name with `_` for `-`; the file is read as extra arguments, as ripgrep does),
//! and its default, shown by `--help` and the man page.
//!
//! Invariants: flags win over the environment, which wins over the config file; a bad value
//! from any of the three is refused by the same parser, with exit code 2.

mod parse;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::format::{DebeziumTime, Format};
use crate::sink::kafka::config::{self as kafka_config, HeaderMode, KeyMode};
use crate::sink::nats::config as nats_config;
use crate::sink::redis::config as redis_config;
use crate::source::Start;

#[cfg(test)]
pub(crate) use parse::ENV_LOCK;
pub use parse::{command, env_name, file_args, parse, parse_from, CONFIG_TABLE_KAFKA, ENV_PREFIX};
use parse::{metrics_addr, seconds};

#[derive(Debug, Parser)]
#[command(name = "binlog-tail", version, about = "Turns a MySQL or MariaDB binlog into a stream of JSON change events")]
pub struct Cli {
    /// Log more (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log lines on stderr as text, or as JSON objects for log shippers.
    #[arg(long, value_enum, global = true, default_value = "text")]
    pub log_format: LogFormat,
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
    /// Ask a running stream to snapshot tables again: over its HTTP endpoint (--to), or through
    /// its --signal-table.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The config file of `stream` and `dump`.
#[derive(Debug, Args, Default)]
pub struct ConfigArgs {
    /// TOML file with any of these options: keys are the long flags with `_` for `-`, lists for
    /// repeatable flags, a `[kafka]` table for -X properties; flags and the environment win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The position file to report on (read without taking its lock: a stream may be running).
    #[arg(long, required_unless_present = "position_store")]
    pub position_file: Option<PathBuf>,
    /// `kafka`: report on the position kept in Kafka (with --kafka-brokers and --stream-name).
    #[arg(long, value_enum, conflicts_with = "position_file")]
    pub position_store: Option<PositionStoreKind>,
    /// With --position-store kafka: the stream whose position to report.
    #[arg(long, requires = "position_store")]
    pub stream_name: Option<String>,
    /// With --position-store kafka: bootstrap brokers, HOST:PORT[,HOST:PORT...].
    #[arg(long)]
    pub kafka_brokers: Option<String>,
    /// With --position-store kafka: the topic of positions.
    #[arg(long, default_value = crate::checkpoint::kafka::DEFAULT_TOPIC)]
    pub kafka_position_topic: String,
    /// With --position-store kafka: a librdkafka property (SASL, TLS); repeatable.
    // Parsed later: clap's own error would echo the value, which may be a password.
    #[arg(short = 'X', long = "kafka-property", value_name = "KEY=VALUE", hide_env_values = true)]
    pub kafka_property: Vec<String>,
    /// `redis`: also report how far Redis holds the streams that continue this position (with
    /// --redis-url).
    #[arg(long, value_enum)]
    pub sink: Option<SinkKind>,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
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
    /// Stop after this many events (changes and snapshot reads).
    #[arg(long)]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
}

/// Snapshots of existing rows.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// `initial`: without a saved position, emit every existing row of the included tables
    /// (`op: "read"`), then the changes from exactly that point; `never`: only changes.
    #[arg(long, value_enum, default_value = "never")]
    pub snapshot: SnapshotMode,
    /// Rows per snapshot chunk (each read in its own short transaction).
    #[arg(long, default_value = "10000", value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_chunk_size: u64,
    /// Chunks read at once, each on its own connection: of different tables, or of one table
    /// split by key ranges (default: one per core, 2 to 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_parallelism: Option<u64>,
    /// The chunk key of a table without a primary key: db.table=column[,column...] (unique,
    /// NOT NULL columns); repeatable.
    #[arg(long, value_name = "DB.TABLE=COLUMNS", alias = "snapshot-keys")]
    pub snapshot_key: Vec<String>,
    /// How each chunk finds its place in the stream: `consistent` (MariaDB's consistent-snapshot
    /// binlog position), `gtid-window` (MySQL's gtid_executed read before and after each chunk;
    /// writes nothing) or `watermark` (low/high watermark rows written to --signal-table); when
    /// not given, consistent on MariaDB, gtid-window on MySQL with GTIDs, watermark without.
    #[arg(long, value_enum)]
    pub snapshot_method: Option<crate::snapshot::Method>,
    /// A table (db.table) whose inserted rows start and stop incremental snapshots while
    /// streaming, in Debezium's format; see `binlog-tail snapshot`.
    #[arg(long, value_name = "DB.TABLE")]
    pub signal_table: Option<String>,
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The stream's --metrics-addr endpoint, e.g. http://127.0.0.1:9187: the request goes there
    /// (nothing is written to the server), and the answer says what the stream did.
    #[arg(long, value_name = "URL", required_unless_present = "signal_table", conflicts_with = "signal_table")]
    pub to: Option<String>,
    /// With --to: a file holding the stream's bearer token (its --http-token-file).
    #[arg(long, value_name = "FILE", requires = "to")]
    pub token_file: Option<PathBuf>,
    /// The signal table the stream watches (db.table): the request is a row written there.
    #[arg(long, value_name = "DB.TABLE")]
    pub signal_table: Option<String>,
    /// A table (db.table; * and ? wildcards) to snapshot; repeatable.
    #[arg(long, value_name = "DB.TABLE", required = true)]
    pub table: Vec<String>,
    /// Stop snapshotting these tables instead.
    #[arg(long)]
    pub stop: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SnapshotMode {
    Never,
    Initial,
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub emit: EmitArgs,
    /// Where the position is kept: streaming resumes from it after a restart (--position-store file).
    #[arg(long)]
    pub position_file: Option<PathBuf>,
    /// Keep the position in a local --position-file (locked: one process at a time), or in a
    /// compacted Kafka topic on the --kafka-brokers (no volume needed; one instance streams, others
    /// stand by).
    #[arg(long, value_enum, default_value = "file")]
    pub position_store: PositionStoreKind,
    /// With --position-store kafka: the key of this stream's position and the name of its lease
    /// (letters, digits, `.`, `_`, `-`); when not given, the --url host and port and a
    /// fingerprint of the filters.
    #[arg(long)]
    pub stream_name: Option<String>,
    /// Where change events go.
    #[arg(long, value_enum, default_value = "stdout")]
    pub sink: SinkKind,
    /// Save the position after at most this many transactions.
    #[arg(long, default_value = "1000", value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: u64,
    /// Save the position at least this often, in seconds (0 to 86400), while transactions arrive.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = seconds(0.0, 86_400.0))]
    pub checkpoint_interval: Duration,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpSinkArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    /// How to resume a saved position: `gtid` where the server has GTIDs (survives failover),
    /// else `file` offsets; `file` always uses file and offset.
    #[arg(long, value_enum, default_value = "gtid")]
    pub resume_by: ResumeBy,
    /// Accept a stdout that throws events away (/dev/null) with --sink stdout; the position still moves.
    #[arg(long)]
    pub allow_discard: bool,
    /// Serve Prometheus metrics (/metrics) and probes (/healthz, /readyz) on HOST:PORT; off when
    /// not given.
    #[arg(long, value_name = "HOST:PORT", value_parser = metrics_addr)]
    pub metrics_addr: Option<SocketAddr>,
    /// A file holding the bearer token that `POST /snapshot` on --metrics-addr requires (incremental
    /// snapshot requests, `binlog-tail snapshot --to`); without it, only loopback clients may post.
    #[arg(long, value_name = "FILE")]
    pub http_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PositionStoreKind {
    File,
    Kafka,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResumeBy {
    Gtid,
    File,
}

/// What to emit.
#[derive(Debug, Args)]
pub struct EmitArgs {
    /// Only tables matching this db.table pattern (* and ? wildcards; `shop` = `shop.*`);
    /// repeatable, or comma-separated.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    pub include: Vec<String>,
    /// Never tables matching this pattern; wins over --include; repeatable, or comma-separated.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Only these operations: comma-separated insert, update, delete, read (snapshot rows).
    #[arg(long, value_name = "OPS")]
    pub ops: Option<String>,
    /// Leave this column out of every event (db.table.column, wildcards allowed); repeatable, or
    /// comma-separated.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',', alias = "drop-columns")]
    pub drop_column: Vec<String>,
    /// Emit DDL and TRUNCATE statements as events (`op: "ddl"`).
    #[arg(long)]
    pub emit_ddl: bool,
    /// An outbox table: its inserts become messages routed by aggregate; repeatable. Either
    /// db.table (the common column names) or a JSON object {"table": "db.table", "topic": ...,
    /// "id_column": ..., "aggregate_type_column": ..., "aggregate_id_column": ...,
    /// "type_column": ..., "payload_column": ...}.
    #[arg(long, value_name = "TABLE")]
    pub outbox: Vec<String>,
    /// Topic template for --outbox tables: {aggregate_type}, {db}, {table} are replaced.
    #[arg(long, value_name = "TEMPLATE", default_value = crate::outbox::DEFAULT_TOPIC)]
    pub outbox_topic: String,
    /// Event format: binlog-tail's own, or the envelope of Debezium, Maxwell or Canal, for their
    /// consumers.
    #[arg(long, value_enum, default_value = "native")]
    pub format: Format,
    /// With --format debezium: DATE/DATETIME/TIME/TIMESTAMP as Debezium's numbers (`connect`, the
    /// default), or as SQL text (`sql`), which Flink SQL needs.
    #[arg(long, value_enum)]
    pub debezium_time: Option<DebeziumTime>,
    /// With --format debezium: the logical server name in `source.name`; when not given, the
    /// --url host.
    #[arg(long, value_name = "NAME")]
    pub debezium_name: Option<String>,
    /// With --format debezium on Kafka: a tombstone (null value) after each delete (the default),
    /// or none.
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
    /// Also check the sink a stream would write to (http: that --http-url answers; redis: reachable,
    /// standalone, persistence; see docs/redis.md).
    #[arg(long, value_enum)]
    pub sink: Option<SinkKind>,
    #[command(flatten)]
    pub http: HttpSinkArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    Stdout,
    Kafka,
    Nats,
    Http,
    Redis,
}

/// The HTTP webhook sink (docs/http.md).
#[derive(Debug, Args)]
pub struct HttpSinkArgs {
    /// The receiver: batches of events are POSTed there as NDJSON (http://... or https://...).
    // The environment's value may hold a password (https://user:pass@host): --help must not print it.
    #[arg(long, value_name = "URL", hide_env_values = true)]
    pub http_url: Option<String>,
    /// A header sent with every request, NAME:VALUE; repeatable.
    #[arg(long, value_name = "NAME:VALUE", hide_env_values = true)]
    pub http_header: Vec<String>,
    /// A file holding the bearer token sent to --http-url (`Authorization: Bearer`, first line).
    #[arg(long, value_name = "FILE")]
    pub http_sink_token_file: Option<PathBuf>,
    /// Trust the CA certificates in this PEM file for https:// (besides the system's).
    #[arg(long, value_name = "FILE")]
    pub http_tls_ca: Option<PathBuf>,
    /// Events in one request at most.
    #[arg(long, value_name = "N", default_value = "1000", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub http_batch_rows: u64,
    /// Bytes of NDJSON in one request at most (an event larger than this goes alone).
    #[arg(long, value_name = "BYTES", default_value = "1048576", value_parser = clap::value_parser!(u64).range(1024..=1 << 30))]
    pub http_batch_bytes: u64,
    /// How long one request may take, in seconds, before it counts as failed and is sent again.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds(0.01, 3600.0))]
    pub http_timeout: Duration,
}

/// The NATS JetStream sink.
#[derive(Debug, Args)]
pub struct NatsArgs {
    /// Server(s) to publish to: nats://HOST:PORT[,nats://HOST:PORT...] (tls://... for TLS).
    // The environment's value may hold a password (nats://user:pass@host): --help must not print it.
    #[arg(long, hide_env_values = true)]
    pub nats_url: Option<String>,
    /// Subject template: {db} and {table} are replaced (a `.`, `*`, `>` or space in a name becomes `_`).
    #[arg(long, value_name = "TEMPLATE", default_value = nats_config::DEFAULT_SUBJECT)]
    pub nats_subject: String,
    /// Subject of DDL events (--emit-ddl).
    #[arg(long, value_name = "SUBJECT", default_value = nats_config::DEFAULT_DDL_SUBJECT)]
    pub nats_ddl_subject: String,
    /// The JetStream stream that stores the subjects (checked at start).
    #[arg(long, value_name = "NAME", default_value = nats_config::DEFAULT_STREAM)]
    pub nats_stream: String,
    /// Create --nats-stream when it does not exist: file storage, the subjects of --nats-subject
    /// (each {…} a `*`), --nats-ddl-subject and the outbox topics, a duplicate window of 2 minutes,
    /// the server's default limits.
    #[arg(long)]
    pub nats_create_stream: bool,
    /// A NATS credentials file (.creds: user JWT and NKey seed).
    #[arg(long, value_name = "FILE", conflicts_with = "nats_token_file")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding the NATS authentication token (first line).
    #[arg(long, value_name = "FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// Require TLS, trusting the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
}

/// The Redis Streams sink.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis to write to: redis://[USER@]HOST:PORT[/DB] (rediss://... for TLS).
    // The environment's value may hold a password (redis://user:pass@host): --help must not print it.
    #[arg(long, hide_env_values = true)]
    pub redis_url: Option<String>,
    /// A file holding the Redis password (first line); wins over one in --redis-url.
    #[arg(long, value_name = "FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// Trust the CA certificates in this PEM file for a rediss:// --redis-url.
    #[arg(long, value_name = "FILE")]
    pub redis_tls_ca: Option<PathBuf>,
    /// Stream key template: {db} and {table} are replaced.
    #[arg(long, value_name = "TEMPLATE", default_value = redis_config::DEFAULT_KEY)]
    pub redis_key: String,
    /// Stream key of DDL events (--emit-ddl).
    #[arg(long, value_name = "KEY", default_value = redis_config::DEFAULT_DDL_KEY)]
    pub redis_ddl_key: String,
    /// Keep about this many entries per stream key (XADD MAXLEN ~ N); every entry when not given.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_maxlen: Option<u64>,
    /// Stream even to a Redis without an append-only file (appendonly no), whose restart loses
    /// acknowledged entries.
    #[arg(long)]
    pub redis_allow_no_aof: bool,
}

/// The Kafka sink.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Bootstrap brokers, HOST:PORT[,HOST:PORT...].
    #[arg(long)]
    pub kafka_brokers: Option<String>,
    /// Topic template: {db} and {table} are replaced; without them, one fixed topic.
    #[arg(long, default_value = kafka_config::DEFAULT_TOPIC)]
    pub kafka_topic: String,
    /// Prefix for every topic name.
    #[arg(long, default_value = "")]
    pub kafka_topic_prefix: String,
    /// Message key: the primary key as JSON (per-row order), db.table, or none.
    #[arg(long, value_enum, default_value = "pk")]
    pub kafka_key: KeyMode,
    /// zstd, lz4, snappy, gzip or none.
    #[arg(long, default_value = kafka_config::DEFAULT_COMPRESSION)]
    pub kafka_compression: String,
    /// Topic for DDL events (--emit-ddl).
    #[arg(long, default_value = kafka_config::DEFAULT_DDL_TOPIC)]
    pub kafka_ddl_topic: String,
    /// Skip, after a restart, replayed messages that Kafka already holds (reads each partition's
    /// last messages once).
    #[arg(long, value_enum, default_value = "on")]
    pub kafka_dedupe: OnOff,
    /// Headers on each message: minimal (`id`, `binlog_tail.seq`), all (adds `gtid`, `op`, `db`,
    /// `table`, `pos`) or none (needs --kafka-dedupe off).
    #[arg(long, value_enum, default_value = "minimal")]
    pub kafka_headers: HeaderMode,
    /// With --position-store kafka: the compacted topic of positions.
    #[arg(long, default_value = crate::checkpoint::kafka::DEFAULT_TOPIC)]
    pub kafka_position_topic: String,
    /// With --position-store kafka: seconds (1 to 1800) an instance may go unheard by Kafka
    /// before a standby takes the stream over.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds(1.0, 1800.0))]
    pub kafka_lease_timeout: Duration,
    /// A librdkafka property (SASL, TLS, tuning), e.g. -X security.protocol=SASL_SSL; repeatable.
    // Parsed later: clap's own error would echo the value, which may be a password.
    #[arg(short = 'X', long = "kafka-property", value_name = "KEY=VALUE", hide_env_values = true)]
    pub kafka_property: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Server to replicate from: mysql://USER@HOST:PORT (no password here: use --password-file or MYSQL_PWD).
    // The environment's value may hold a password: --help must not print it.
    #[arg(long, hide_env_values = true)]
    pub url: Option<String>,
    /// File holding the password (first line).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Replica server id, 1 or more; must differ from every other replica of the server; random
    /// when not given.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub server_id: Option<u32>,
    /// Where to start: earliest, latest, FILE:POS, or a GTID set (uuid:1-100 or 0-1-100); when
    /// not given, earliest for dump, latest for stream without a saved position.
    #[arg(long)]
    pub start: Option<Start>,
    /// Seconds (0.1 to 4294967) between server heartbeats; three missed ones mean the connection
    /// is dead.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds(0.1, 4_294_967.0))]
    pub heartbeat: Duration,
    /// dump, check: keep retrying the first connection this many seconds while the server starts
    /// (stream always retries).
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = seconds(0.0, 86_400.0))]
    pub wait_for_server: Duration,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS to the server; any of these turns it on.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Require TLS, verifying the server's certificate (system and built-in CAs) and host name; as ?require_ssl=true in --url.
    #[arg(long)]
    pub tls: bool,
    /// Also trust the CA certificates in this PEM file (a private CA: the server's ssl_ca).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Trust only the --tls-ca file, not the system's or the built-in CAs.
    #[arg(long)]
    pub tls_ca_only: bool,
    /// Client certificate (PEM) for users that REQUIRE X509; needs --tls-key.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM, unencrypted).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Verify the server's certificate for this name instead of the --url host (an IP address, a tunnel).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}
