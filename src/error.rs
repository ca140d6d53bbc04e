//! Errors that decide what happens next, kept as distinct types so they cannot be mixed up:
//! a transient error is retried from the last delivered position; a purged binlog ends the
//! process with exit code 3 (so does a history that no longer contains the saved position); a
//! bad configuration value ends it with exit code 2; a failed Kafka producer is replaced by a new
//! one, resuming from what Kafka acknowledged; everything else is definite: exit code 1.

use thiserror::Error;

/// The connection dropped, the server restarted, a heartbeat was missed: reconnect and resume.
#[derive(Debug, Error)]
#[error("{0:#}")]
pub struct Transient(pub anyhow::Error);

/// The server no longer has the binlog needed to continue without losing events.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct Purged(pub String);

/// A bad value in the configuration (a flag, an environment variable or the config file) that
/// clap could not catch: exits 2 like a bad command line, before anything was read or written.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The Kafka producer hit a fatal error that only a new producer recovers from (librdkafka's
/// idempotence and gapless guarantees broke): the stream starts again from the acknowledged
/// position with a new producer, whose partition tails are read again.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct Restart(pub String);

/// Exit code for a purged binlog (so scripts and orchestrators can tell it apart).
pub const EXIT_PURGED: u8 = 3;
/// Exit code for a bad command line or configuration value (clap's own).
pub const EXIT_USAGE: u8 = 2;

pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Transient>())
}
