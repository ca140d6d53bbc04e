//! Command-line interface: subcommands and their options (flags, with environment fallbacks).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::source::Start;

#[derive(Debug, Parser)]
#[command(name = "binlog-tail", version, about = "Turns a MySQL or MariaDB binlog into a stream of JSON change events")]
pub struct Cli {
    /// Log more (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode a server's binlog (as a replica) or binlog files into JSON lines on stdout.
    Dump(DumpArgs),
    /// Stream changes continuously from a server (production mode).
    Stream(StreamArgs),
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub server: ServerArgs,
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
    /// Where change events go.
    #[arg(long, value_enum, default_value_t = SinkKind::Stdout)]
    pub sink: SinkKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    Stdout,
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
    /// Where to start: earliest, latest, FILE:POS, or a GTID set (uuid:1-100 or 0-1-100).
    #[arg(long, default_value = "earliest")]
    pub start: Start,
    /// Seconds between server heartbeats; three missed ones mean the connection is dead.
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    pub heartbeat: Duration,
    /// Keep retrying the first connection this many seconds while the server starts.
    #[arg(long, default_value = "0", value_parser = parse_secs)]
    pub wait_for_server: Duration,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(format!("`{s}` seconds is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}
