//! Logging on stderr: human-readable text, or JSON lines (`--log-format json`) with timestamp,
//! level, message and fields for log shippers.
//!
//! Invariants: in JSON mode every line binlog-tail writes on stderr is one JSON object, the final
//! error included; nothing logged carries a password (URLs are redacted where they are logged,
//! Kafka property values are never logged).

use crate::cli::LogFormat;

pub fn init(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "binlog_tail=info",
        1 => "binlog_tail=debug",
        _ => "binlog_tail=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The final error, as the last line on stderr.
pub fn report_error(format: LogFormat, err: &anyhow::Error) {
    match format {
        LogFormat::Text => eprintln!("error: {err:#}"),
        LogFormat::Json => tracing::error!("{err:#}"),
    }
}
