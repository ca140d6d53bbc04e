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
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::event::{Change, Ddl};
use crate::format::Part;
use crate::outbox::Message;
use crate::position::{Position, Resume, SnapshotProgress};
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
    let part = if part == Part::Whole { "" } else { "/part" };
    format!("{}:{}/{}.{}/{}/{}{part}", c.file, c.offset, t.db, t.name, row_key(c), c.row)
}

/// The row's key as JSON: its primary key, or its whole image where the table has none.
fn row_key(c: &Change) -> String {
    let mut key = Vec::with_capacity(64);
    if c.table.pk.is_empty() {
        c.write_after(&mut key);
    } else {
        c.write_pk(&mut key);
    }
    String::from_utf8_lossy(&key).into_owned()
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

/// The last snapshot read a target holds, as a sink stores it with what it delivers (Redis: the
/// marker; NATS: a header of the read; HTTP: the journal), as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRead {
    /// `FILE:OFFSET` where its chunk sits in the stream.
    pos: String,
    db: String,
    table: String,
    /// Its key (`row_key`).
    key: String,
    /// It ended its chunk.
    last: bool,
    /// With `last`, once known: the hash of the snapshot progress its chunk's commit carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<String>,
}

impl LastRead {
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain fields")
    }

    /// None for what is not a record (an empty field, an older binlog-tail's).
    pub(crate) fn parse(text: &str) -> Option<LastRead> {
        serde_json::from_str(text).ok()
    }
}

/// A short stable hash of a snapshot's progress (`kafka::dedupe::stream_name`'s FNV-1a).
fn progress_hash(progress: &SnapshotProgress) -> String {
    kafka::dedupe::stream_name("snapshot", &serde_json::to_string(progress).expect("plain fields"))
}

/// Snapshot reads a target already holds, skipped when a restart reads them again.
///
/// Reads have no binlog order (chunks of several tables share a position), and a chunk read again
/// after a crash may hold other rows, so a sink names what its target holds by the last read
/// delivered (`LastRead`). A restart continues the snapshot from the saved position's progress
/// P, which the target holds (the position moves only past acknowledged chunks):
/// - when the last read ended the chunk whose commit carried P, or sits before P's position, or
///   in a table P has done, nothing is skipped;
/// - when it ended a chunk whose commit the target does not name, it cannot be told from the
///   last read before P: nothing is skipped (a read may come twice, never be lost);
/// - otherwise it is in a chunk read again: replayed reads are skipped until it comes again
///   (the same table and key), or until it cannot come any more: a read of a table after its
///   own in P's order, or a change of its row in the stream (the row may be gone, or left out of
///   its chunk). Then what follows is sent: a read may come twice, never be lost. Rows inserted
///   or changed between the first read and the second were skipped with their chunk: the
///   stream's changes, which the target holds, carry them.
#[derive(Default)]
pub(crate) struct Reads {
    /// The snapshot's progress as of the last commit that moved it (at start: the saved one's).
    progress: Option<Arc<SnapshotProgress>>,
    /// The last read the target holds or is handed.
    last: Option<LastRead>,
    /// The last read came since the last commit.
    open: bool,
    skip: Option<SkipReads>,
}

/// Replayed reads to skip until `until` comes again.
struct SkipReads {
    until: LastRead,
    /// The tables in P's order, and where `until`'s is.
    order: Vec<[String; 2]>,
    at: usize,
    skipped: u64,
}

impl Reads {
    /// Continues from `saved` (the position the snapshot restarts from) and `held`, the record
    /// of the target's last read.
    pub(crate) fn resume(saved: Option<&Position>, held: Option<LastRead>) -> Reads {
        let progress = saved.and_then(|p| p.snapshot.clone()).map(Arc::new);
        let mut reads = Reads { progress, last: held.clone(), ..Reads::default() };
        let (Some(saved), Some(held), Some(progress)) = (saved, held, reads.progress.as_deref()) else {
            return reads;
        };
        let Some(at) = progress.pending.iter().position(|t| t[0] == held.db && t[1] == held.table) else {
            return reads;
        };
        let order = |pos: &str| kafka::dedupe::OrderKey::new(pos, 0);
        let saved_at = format!("{}:{}", saved.file, saved.offset);
        let after_saved = order(&held.pos).zip(order(&saved_at)).and_then(|(r, s)| r.compare(&s));
        if !after_saved.is_some_and(|o| o.is_ge()) {
            return reads;
        }
        match (held.last, &held.end) {
            (true, Some(end)) if *end == progress_hash(progress) => return reads,
            (true, None) => {
                tracing::warn!("the last snapshot read the target holds ended a chunk it does not name: replayed reads are sent again (a target may get some twice)");
                return reads;
            }
            _ => {}
        }
        reads.skip = Some(SkipReads { until: held, order: progress.pending.clone(), at, skipped: 0 });
        reads
    }

    /// A snapshot read: true if it is a replayed one the target holds (to skip). The others
    /// become the last read.
    pub(crate) fn skipped(&mut self, c: &Change) -> bool {
        let key = row_key(c);
        let t = &c.table;
        if let Some(skip) = &mut self.skip {
            if (skip.until.db.as_str(), skip.until.table.as_str(), skip.until.key.as_str())
                == (&*t.db, &*t.name, key.as_str())
            {
                skip.skipped += 1;
                self.end_skip("up to the last one the target holds");
                return true;
            }
            let table = skip.order.iter().position(|p| p[0] == *t.db && p[1] == *t.name);
            if table.is_none_or(|n| n > skip.at) {
                self.end_skip("the last one the target holds did not come again; a later table's did");
            } else {
                skip.skipped += 1;
                return true;
            }
        }
        let pos = format!("{}:{}", c.file, c.offset);
        self.last =
            Some(LastRead { pos, db: t.db.to_string(), table: t.name.to_string(), key, last: c.commit, end: None });
        self.open = true;
        false
    }

    /// A change from the stream: a skip waiting for a read of its row ends.
    pub(crate) fn changed(&mut self, c: &Change) {
        let Some(skip) = &self.skip else { return };
        if (&*c.table.db, &*c.table.name) != (skip.until.db.as_str(), skip.until.table.as_str()) {
            return;
        }
        // Its key before and after (an update may change it).
        let before = Change { after: None, ..c.clone() };
        if row_key(c) == skip.until.key || row_key(&before) == skip.until.key {
            self.end_skip("the row of the last one the target holds changed in the stream");
        }
    }

    /// A transaction ended: a chunk's commit names the progress it carries in its last read.
    pub(crate) fn commit(&mut self, resume: &Resume) {
        if let Some(progress) = &resume.snapshot {
            self.progress = Some(progress.clone());
            if let Some(last) = self.last.as_mut().filter(|l| self.open && l.last) {
                last.end = Some(progress_hash(progress));
            }
        }
        self.open = false;
    }

    /// The record of the last read, to store with what is delivered.
    pub(crate) fn last(&self) -> Option<&LastRead> {
        self.last.as_ref()
    }

    fn end_skip(&mut self, why: &str) {
        if let Some(skip) = self.skip.take() {
            tracing::info!("{} replayed snapshot reads the target holds were skipped ({why})", skip.skipped);
        }
    }
}
