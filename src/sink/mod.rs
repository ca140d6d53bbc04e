//! Where change events go. A sink acknowledges a transaction only once everything up to its
//! end is durably handed over (stdout: written and flushed; Kafka: acknowledged by the brokers; NATS: a PubAck from JetStream;
//! Redis: its batch applied with the stream's marker; HTTP: a 2xx answer to the batch that holds it),
//! which is what lets the position move.

#[cfg(test)]
mod fault_test;
pub mod http;
pub mod kafka;
pub mod nats;
pub mod redis;
pub mod stdout;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::event::{Change, Ddl};
use crate::format::Part;
use crate::outbox::Message;
use crate::position::Resume;
use crate::schema::Table;
use crate::signal::Signal;

pub trait Sink {
    fn change(&mut self, change: &Change) -> Result<()>;
    fn ddl(&mut self, ddl: &Ddl) -> Result<()>;
    /// A routed message (an outbox event).
    fn message(&mut self, msg: &Message) -> Result<()>;
    /// A row of the signal table; only a stream running snapshots acts on it.
    fn signal(&mut self, _signal: &Signal) -> Result<()> {
        Ok(())
    }
    /// True while the rows of `table` are to be left out of the stream: a snapshot read still to
    /// come contains their effect (see `snapshot::Snapshot::holds_back`).
    fn leaves_out(&mut self, _table: &Table) -> bool {
        false
    }
    /// A transaction ended; reading may later resume at `resume`.
    fn commit(&mut self, resume: &Resume) -> Result<()>;
    /// The end of the newest transaction that, with every one before it, is acknowledged —
    /// without waiting for what is still in flight.
    fn acknowledged(&mut self) -> Result<Option<Resume>>;
    /// Waits until everything handed over is acknowledged.
    fn flush(&mut self) -> Result<()>;
}

/// How often the same failure is logged again while it persists.
const ERROR_REPEAT: Duration = Duration::from_secs(30);

/// Logs `text` at warn level unless the same `kind` was logged within `ERROR_REPEAT`.
pub(crate) fn warn_once(logged: &mut HashMap<String, Instant>, kind: &str, text: &str) {
    let now = Instant::now();
    if logged.get(kind).is_none_or(|at| now.duration_since(*at) >= ERROR_REPEAT) {
        logged.insert(kind.to_string(), now);
        tracing::warn!("{text}");
    }
}

/// A snapshot read's id: its position, table and key (reads of several tables share a position).
pub(crate) fn read_id(c: &Change, part: Part) -> String {
    let t = &c.table;
    let mut key = Vec::with_capacity(64);
    if t.pk.is_empty() {
        c.write_after(&mut key);
    } else {
        c.write_pk(&mut key);
    }
    let part = if part == Part::Whole { "" } else { "/part" };
    format!("{}:{}/{}.{}/{}/{}{part}", c.file, c.offset, t.db, t.name, String::from_utf8_lossy(&key), c.row)
}

/// How an error names the change event it happened on.
pub(crate) fn event_context(change: &Change) -> String {
    let t = &change.table;
    format!("the event of `{}`.`{}` at {}:{}", t.db, t.name, change.file, change.offset)
}

/// The one-worker runtime of a sink's async client, its thread named `thread`.
pub(crate) fn client_runtime(thread: &str, client: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(thread)
        .enable_all()
        .build()
        .with_context(|| format!("cannot start the {client} client's runtime"))
}
