//! Where change events go. A sink acknowledges a transaction only once everything up to its
//! end is durably handed over (stdout: written and flushed; Kafka: acknowledged by the brokers; NATS: a PubAck from JetStream;
//! Redis: its batch applied with the stream's marker; HTTP: a 2xx answer to the batch that holds it),
//! which is what lets the position move.
//!
//! Also what the sinks share to name and deduplicate events: snapshot read ids (`read_id`), the
//! ids of a transaction's events (`TxIds`), and the skip of snapshot reads a target already holds
//! after a restart (`Reads`, with the record of the last one held, `LastRead`).

#[cfg(test)]
mod fault_test;
pub mod http;
pub mod kafka;
pub mod nats;
pub mod order;
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
use crate::position::{KeyValue, Position, Resume, SnapshotProgress};
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

/// The ids of the open transaction's events (`ORIGIN/INDEX`): its origin, the GTID or
/// `FILE:OFFSET` of its first event, and each event's index in it, in the order sent.
#[derive(Default)]
pub(crate) struct TxIds {
    origin: Option<String>,
    next: u64,
}

impl TxIds {
    /// The next event's origin and index; `origin` makes the origin on the transaction's first.
    pub(crate) fn next(&mut self, origin: impl FnOnce() -> String) -> (&str, u64) {
        let index = self.next;
        self.next += 1;
        (self.origin.get_or_insert_with(origin), index)
    }

    /// The open transaction's origin, once it has an event.
    pub(crate) fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The transaction ended: the next event starts another.
    pub(crate) fn end(&mut self) {
        *self = TxIds::default();
    }
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
/// marker; NATS and Kafka: a header of the read; HTTP: the journal), as JSON.
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
    /// Where its chunk starts: the progress's `after` as the commit before it left it (empty: at
    /// its table's start). What tells it from the reads before a saved position (`after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<Vec<KeyValue>>,
}

impl LastRead {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain fields")
    }

    /// None for what is not a record (an empty field, an older binlog-tail's).
    pub fn parse(text: &str) -> Option<LastRead> {
        serde_json::from_str(text).ok()
    }

    /// Whether it comes after everything `saved` has read (its chunk starts where `saved` ends,
    /// or later): None when that cannot be told (no `from`, keys that only the server orders).
    /// `at`: its table's place in `saved`'s order.
    fn after(&self, saved: &SnapshotProgress, at: usize) -> Option<bool> {
        if at > 0 {
            return Some(true);
        }
        match (self.from.as_deref()?, saved.after.as_deref()) {
            (_, None) => Some(true),
            ([], Some(_)) => Some(false),
            (from, Some(after)) => Some(compare_keys(from, after)?.is_ge()),
        }
    }
}

/// The order of two chunk keys where it does not depend on the server's collation: integers.
fn compare_keys(a: &[KeyValue], b: &[KeyValue]) -> Option<std::cmp::Ordering> {
    if a.len() != b.len() {
        return None;
    }
    let int = |v: &KeyValue| match v {
        KeyValue::Int(n) => Some(i128::from(*n)),
        KeyValue::Uint(n) => Some(i128::from(*n)),
        _ => None,
    };
    for (x, y) in a.iter().zip(b) {
        match int(x)?.cmp(&int(y)?) {
            std::cmp::Ordering::Equal => continue,
            other => return Some(other),
        }
    }
    Some(std::cmp::Ordering::Equal)
}

/// A short stable hash of a snapshot's progress (`order::stream_name`'s FNV-1a).
fn progress_hash(progress: &SnapshotProgress) -> String {
    order::stream_name("snapshot", &serde_json::to_string(progress).expect("plain fields"))
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
    /// The last read the target holds or is handed, and its JSON.
    last: Option<LastRead>,
    json: Option<String>,
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
        Reads::resuming(saved, held, false)
    }

    /// `resume` for one part of a target that holds a prefix of what was sent to it (a Kafka
    /// partition), `held` the record of its last message: that may come before `saved`, so only
    /// a read known to come after it (`LastRead::after`) starts a skip, which ends as in `resume`.
    pub(crate) fn resume_part(saved: Option<&Position>, held: Option<LastRead>) -> Reads {
        Reads::resuming(saved, held, true)
    }

    fn resuming(saved: Option<&Position>, held: Option<LastRead>, part: bool) -> Reads {
        let progress = saved.and_then(|p| p.snapshot.clone()).map(Arc::new);
        let json = held.as_ref().map(LastRead::to_json);
        let mut reads = Reads { progress, last: held.clone(), json, ..Reads::default() };
        let (Some(saved), Some(held), Some(progress)) = (saved, held, reads.progress.as_deref()) else {
            return reads;
        };
        let Some(at) = progress.pending.iter().position(|t| t[0] == held.db && t[1] == held.table) else {
            return reads;
        };
        let key_at = |pos: &str| order::OrderKey::new(pos, 0);
        let saved_at = format!("{}:{}", saved.file, saved.offset);
        let after_saved = key_at(&held.pos).zip(key_at(&saved_at)).and_then(|(r, s)| r.compare(&s));
        if !after_saved.is_some_and(|o| o.is_ge()) {
            return reads;
        }
        match (held.last, &held.end) {
            // Known to come after the saved position: it comes again (its end may be unnamed).
            _ if part && held.after(progress, at) == Some(true) => {}
            _ if part => return reads,
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
        let from =
            self.progress.as_deref().filter(|p| p.pending.first().is_some_and(|f| f[0] == *t.db && f[1] == *t.name));
        let from = from.map(|p| p.after.clone().unwrap_or_default());
        let last =
            LastRead { pos, db: t.db.to_string(), table: t.name.to_string(), key, last: c.commit, end: None, from };
        self.json = Some(last.to_json());
        self.last = Some(last);
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
                self.json = Some(last.to_json());
            }
        }
        self.open = false;
    }

    /// The record of the last read, to store with what is delivered.
    pub(crate) fn last(&self) -> Option<&LastRead> {
        self.last.as_ref()
    }

    /// `last` as JSON.
    pub(crate) fn record(&self) -> Option<&str> {
        self.json.as_deref()
    }

    /// A skip is still on.
    pub(crate) fn skipping(&self) -> bool {
        self.skip.is_some()
    }

    /// `record` while a snapshot runs (its progress has tables left).
    pub(crate) fn record_while_snapshotting(&self) -> Option<&str> {
        self.record().filter(|_| self.progress.as_ref().is_some_and(|p| !p.complete()))
    }

    fn end_skip(&mut self, why: &str) {
        if let Some(skip) = self.skip.take() {
            tracing::info!("{} replayed snapshot reads the target holds were skipped ({why})", skip.skipped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Op, SnapshotMark};
    use crate::position::{Flavor, KeyValue, ServerIdentity};
    use crate::schema::{Kind, RowImage, Table};

    fn table(name: &str) -> Arc<Table> {
        Table::for_test("db", name, vec![("id", Kind::Int { bytes: 4, unsigned: false })], vec![0])
    }

    /// A read of row `id` of `name` at offset `at`; `last`: it ends its chunk.
    fn read(name: &str, id: i64, at: u64, last: bool) -> Change {
        Change {
            op: Op::Read,
            table: table(name),
            server_id: 1,
            thread: None,
            flavor: Flavor::MariaDb,
            ts: 0,
            gtid: None,
            file: Arc::from("b.000001"),
            offset: at,
            xid: None,
            row: 0,
            commit: last,
            snapshot: SnapshotMark::Read,
            before: None,
            after: Some(RowImage::from_json(&[&id.to_string()])),
        }
    }

    fn progress(pending: &[&str], after: Option<i64>) -> SnapshotProgress {
        let pending = pending.iter().map(|t| ["db".to_string(), t.to_string()]).collect();
        SnapshotProgress { pending, after: after.map(|k| vec![KeyValue::Int(k)]), done: 0 }
    }

    fn saved(at: u64, snapshot: SnapshotProgress) -> Position {
        let server = ServerIdentity { uuid: None, server_id: 1, hostname: "h".into() };
        let resume = Resume { snapshot: Some(Arc::new(snapshot)), ..Resume::new(Arc::from("b.000001"), at, None) };
        Position::new(Flavor::MariaDb, &resume, server, String::new())
    }

    /// What a first run delivered: `rows` reads of `t` from 1 in chunks of 2 at offset 100,
    /// each chunk committed with its progress; the target holds the last one's record.
    fn delivered(rows: i64) -> LastRead {
        let mut reads = Reads::default();
        for id in 1..=rows {
            assert!(!reads.skipped(&read("t", id, 100, id % 2 == 0)));
            if id % 2 == 0 {
                let commit = Resume {
                    snapshot: Some(Arc::new(progress(&["t", "u"], Some(id)))),
                    ..Resume::new(Arc::from("b.000001"), 100, None)
                };
                reads.commit(&commit);
            }
        }
        reads.last().cloned().unwrap()
    }

    /// Which of the reads of `ids` a restart from `saved` with `held` skips.
    fn skipped(saved: &Position, held: LastRead, ids: &[(&str, i64)]) -> Vec<i64> {
        let mut reads = Reads::resume(Some(saved), Some(held));
        ids.iter().filter(|(t, id)| reads.skipped(&read(t, *id, 100, false))).map(|(_, id)| *id).collect()
    }

    #[test]
    fn replayed_reads_are_skipped_up_to_the_last_one_held() {
        // Chunks up to row 2 saved, rows up to 5 delivered: rows 3 to 5 come again, then 6.
        let held = delivered(5);
        let at_2 = saved(100, progress(&["t", "u"], Some(2)));
        assert_eq!(skipped(&at_2, held.clone(), &[("t", 3), ("t", 4), ("t", 5), ("t", 6)]), [3, 4, 5]);
        // The last chunk held whole (rows 5 and 6): skipped up to 6, unless the position saved it.
        let held = delivered(6);
        assert_eq!(skipped(&at_2, held.clone(), &[("t", 3), ("t", 4), ("t", 5), ("t", 6), ("t", 7)]), [3, 4, 5, 6]);
        let at_6 = saved(100, progress(&["t", "u"], Some(6)));
        assert_eq!(skipped(&at_6, held.clone(), &[("t", 7)]), Vec::<i64>::new());
        // A record from before the saved position (an earlier snapshot) is no proof.
        let later = saved(200, progress(&["t", "u"], Some(2)));
        assert_eq!(skipped(&later, held.clone(), &[("t", 3)]), Vec::<i64>::new());
        // Nor is one of a table the saved progress has done.
        let done_t = saved(100, progress(&["u"], None));
        assert_eq!(skipped(&done_t, held, &[("u", 1)]), Vec::<i64>::new());
    }

    #[test]
    fn a_skip_ends_where_the_last_read_held_cannot_come_again() {
        let held = delivered(5);
        let at_2 = saved(100, progress(&["t", "u"], Some(2)));
        // Row 5 gone: the next table's first read ends the skip, and is sent.
        assert_eq!(skipped(&at_2, held.clone(), &[("t", 3), ("t", 4), ("u", 1), ("t", 6)]), [3, 4]);
        // Row 5 changed in the stream: what follows is sent (twice, maybe; never lost).
        let mut reads = Reads::resume(Some(&at_2), Some(held));
        assert!(reads.skipped(&read("t", 3, 100, false)));
        let mut update = read("t", 5, 150, false);
        (update.op, update.before) = (Op::Update, update.after.clone());
        reads.changed(&update);
        assert!(!reads.skipped(&read("t", 4, 100, false)));
        // A chunk's last read whose commit the target does not name: nothing skipped.
        let mut reads = Reads::default();
        assert!(!reads.skipped(&read("t", 4, 100, true)));
        let unnamed = reads.last().cloned().unwrap();
        assert_eq!(skipped(&at_2, unnamed, &[("t", 3), ("t", 4)]), Vec::<i64>::new());
    }

    #[test]
    fn a_part_skips_only_up_to_a_read_known_to_come_after_the_saved_position() {
        // A partition whose last read (row 5) is in a chunk after the saved one (up to row 2).
        let at_2 = saved(100, progress(&["t", "u"], Some(2)));
        let mut reads = Reads::resume_part(Some(&at_2), Some(delivered(5)));
        let ids = [3, 4, 5, 6];
        let skipped: Vec<_> = ids.into_iter().filter(|id| reads.skipped(&read("t", *id, 100, false))).collect();
        assert_eq!(skipped, [3, 4, 5]);
        // Its last read (row 3) in the saved chunk or before (up to row 4): it never comes again.
        let at_4 = saved(100, progress(&["t", "u"], Some(4)));
        assert!(!Reads::resume_part(Some(&at_4), Some(delivered(3))).skipping());
        // The end of a chunk after the saved one, its commit unnamed: skipped up to it.
        let mut reads = Reads::default();
        reads.commit(&Resume {
            snapshot: Some(Arc::new(progress(&["t", "u"], Some(2)))),
            ..Resume::new(Arc::from("b.000001"), 100, None)
        });
        assert!(!reads.skipped(&read("t", 4, 100, true)));
        assert!(Reads::resume_part(Some(&at_2), reads.last().cloned()).skipping());
        // A record without `from` (an older binlog-tail's): nothing skipped.
        let old = LastRead { from: None, ..delivered(5) };
        assert!(!Reads::resume_part(Some(&at_2), Some(old)).skipping());
    }

    #[test]
    fn records_read_back_and_others_are_none() {
        let held = delivered(6);
        assert_eq!(LastRead::parse(&held.to_json()), Some(held));
        assert_eq!(LastRead::parse(""), None);
    }
}
