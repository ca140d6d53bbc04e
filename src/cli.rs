//! Command-line interface: subcommands and their options. Every streaming option can also come
//! from the environment and from a TOML config file (`--config`): flags win over the
//! environment, which wins over the file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::sink::kafka::config::{parse_property, KeyMode};
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
    #[arg(long, env = "BINLOG_TAIL_POSITION_FILE")]
    pub position_file: PathBuf,
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
    /// Where the position is kept: streaming resumes from it after a restart.
    #[arg(long, env = "BINLOG_TAIL_POSITION_FILE")]
    pub position_file: Option<PathBuf>,
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
pub enum ResumeBy {
    Gtid,
    File,
}

/// What to emit. In a config file: `include = [...]`, `exclude = [...]`, `ops = "insert,update"`,
/// `drop_columns = [...]`, `emit_ddl = true`, and `[[outbox]]` tables.
#[derive(Debug, Args, Default)]
pub struct EmitArgs {
    /// Only tables matching this db.table pattern (* and ? wildcards; `shop` = `shop.*`); repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub include: Vec<String>,
    /// Never tables matching this pattern; wins over --include; repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Only these operations: comma-separated insert, update, delete.
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
    /// A librdkafka property (SASL, TLS, tuning), e.g. -X security.protocol=SASL_SSL; repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    pub kafka_property: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Server to replicate from: mysql://USER@HOST:PORT (no password here: use --password-file or MYSQL_PWD).
    #[arg(long, env = "BINLOG_TAIL_URL")]
    pub url: Option<String>,
    /// File holding the password (first line).
    #[arg(long, env = "BINLOG_TAIL_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Replica server id; must differ from every other replica of the server [default: random].
    #[arg(long, env = "BINLOG_TAIL_SERVER_ID")]
    pub server_id: Option<u32>,
    /// Where to start: earliest, latest, FILE:POS, or a GTID set (uuid:1-100 or 0-1-100)
    /// [default: earliest for dump; latest for stream without a saved position].
    #[arg(long, env = "BINLOG_TAIL_START")]
    pub start: Option<Start>,
    /// Seconds between server heartbeats; three missed ones mean the connection is dead [default: 10].
    #[arg(long, env = "BINLOG_TAIL_HEARTBEAT")]
    pub heartbeat: Option<f64>,
    /// Keep retrying the first connection this many seconds while the server starts [default: 0].
    #[arg(long, env = "BINLOG_TAIL_WAIT_FOR_SERVER")]
    pub wait_for_server: Option<f64>,
}
