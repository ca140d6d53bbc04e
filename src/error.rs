//! Errors that decide what happens next, kept as distinct types so they cannot be mixed up:
//! a transient error is retried from the last delivered position; a purged binlog ends the
//! process with its own exit code; everything else is definite and ends it with exit code 1.

use thiserror::Error;

/// The connection dropped, the server restarted, a heartbeat was missed: reconnect and resume.
#[derive(Debug, Error)]
#[error("{0:#}")]
pub struct Transient(pub anyhow::Error);

/// The server no longer has the binlog needed to continue without losing events.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct Purged(pub String);

/// Exit code for a purged binlog (so scripts and orchestrators can tell it apart).
pub const EXIT_PURGED: u8 = 3;

pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Transient>())
}
