//! Where streaming resumes after a restart: the saved position, its stores (a local file, or a
//! compacted Kafka topic), and the sink wrapper that saves it.
//!
//! Invariants:
//! - A saved position names the end of a transaction whose every event the sink has
//!   acknowledged, and of all transactions before it; it never points into a transaction.
//! - A position that cannot be read or parsed stops the tool and is left untouched: it is never
//!   silently reset, which would replay or skip history.
//! - One writer per stream: the file store locks the file, the Kafka store holds a lease
//!   (`lease`), and refuses to save once it lost it.
//! - Version 2 adds the progress of a running snapshot (saved with the position of its last
//!   acknowledged chunk); version 1 positions are read as positions without a snapshot and
//!   written back as version 2. Both stores hold the same JSON.

pub mod file;
pub mod kafka;
pub mod lease;

pub use file::{read_position, PositionFile};

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::event::{Change, Ddl, Op};
use crate::gtid::GtidSet;
use crate::metrics::{ChangeLabels, Counter, Metrics};
use crate::outbox::Message;
use crate::position::{Flavor, Resume, SnapshotProgress};
use crate::schema::Table;
use crate::sink::Sink;

pub(crate) const VERSION: u32 = 2;
/// Older versions this binlog-tail reads (and upgrades on the next save).
const READS: [u32; 2] = [1, 2];

/// The server a position was taken on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerIdentity {
    /// MySQL's `@@server_uuid`; MariaDB has none.
    pub uuid: Option<String>,
    pub server_id: u32,
    pub hostname: String,
}

impl std::fmt::Display for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server_id {} on host {}", self.server_id, self.hostname)?;
        match &self.uuid {
            Some(uuid) => write!(f, " (server_uuid {uuid})"),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub version: u32,
    pub flavor: FlavorName,
    /// Executed GTID set up to and including the last delivered transaction, when the server
    /// has GTIDs: MySQL `uuid:1-100,...`, MariaDB `0-1-100,...`.
    pub gtid_set: Option<String>,
    /// Binlog file and offset just after the last delivered transaction.
    pub file: String,
    pub offset: u64,
    pub server: ServerIdentity,
    /// When this position was written (RFC 3339, UTC).
    pub updated_at: String,
    /// Names the stream this file keeps the position of, in the messages it sends (so a restart
    /// can tell its own messages in Kafka from those of an earlier, abandoned position file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    /// A snapshot's progress; absent when no snapshot was ever started with this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotProgress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlavorName {
    Mysql,
    Mariadb,
}

impl std::fmt::Display for FlavorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlavorName::Mysql => Flavor::MySql.fmt(f),
            FlavorName::Mariadb => Flavor::MariaDb.fmt(f),
        }
    }
}

impl From<Flavor> for FlavorName {
    fn from(f: Flavor) -> Self {
        match f {
            Flavor::MySql => FlavorName::Mysql,
            Flavor::MariaDb => FlavorName::Mariadb,
        }
    }
}

impl Position {
    pub fn new(flavor: Flavor, resume: &Resume, server: ServerIdentity) -> Position {
        Position {
            version: VERSION,
            flavor: flavor.into(),
            gtid_set: resume.gtids.as_ref().map(|g| g.to_string()).filter(|g| !g.is_empty()),
            file: resume.file.to_string(),
            offset: resume.offset,
            server,
            updated_at: now_rfc3339(),
            stream_id: None,
            snapshot: resume.snapshot.as_deref().cloned(),
        }
    }

    /// A saved position's text, checked: its version, and its GTID set parses.
    pub fn parse(text: &str) -> Result<Position> {
        let pos: Position = serde_json::from_str(text).context(
            "the saved position is corrupt; it was left as it is. Fix it by hand, or move it away and choose --start deliberately (events may be replayed or skipped)",
        )?;
        if !READS.contains(&pos.version) {
            bail!("the saved position has version {}, this binlog-tail understands {READS:?}", pos.version);
        }
        pos.gtids().context("the saved position holds a bad GTID set")?;
        Ok(pos)
    }

    pub fn gtids(&self) -> Result<Option<GtidSet>> {
        self.gtid_set.as_deref().map(GtidSet::parse).transpose()
    }
}

/// Where positions are kept (`--position-store`).
pub enum PositionStore {
    File(file::PositionFile),
    Kafka(kafka::KafkaPositions),
}

impl PositionStore {
    /// The saved position, None if there is none yet.
    pub fn load(&self) -> Result<Option<Position>> {
        match self {
            PositionStore::File(f) => f.load(),
            PositionStore::Kafka(k) => k.load(),
        }
    }

    /// Replaces the saved position: the file atomically; in Kafka once acknowledged, which
    /// `flush` waits for.
    pub fn save(&self, pos: &Position) -> Result<()> {
        match self {
            PositionStore::File(f) => f.save(pos),
            PositionStore::Kafka(k) => k.save(pos),
        }
    }

    /// Waits until every save is durable.
    pub fn flush(&self) -> Result<()> {
        match self {
            PositionStore::File(_) => Ok(()),
            PositionStore::Kafka(k) => k.flush(),
        }
    }
}

impl std::fmt::Display for PositionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PositionStore::File(file) => write!(f, "the position file {}", file.path().display()),
            PositionStore::Kafka(k) => k.fmt(f),
        }
    }
}

/// A sink wrapper that saves the position of acknowledged transactions: after every `every`
/// commits or `interval` it asks the inner sink how far it has acknowledged and writes that; when
/// the source is idle it waits for everything to be acknowledged first. Every commit is saved with
/// the newest snapshot progress (a commit carries progress only when it moved it: see
/// `Snapshot::moved`), and a commit that moves a snapshot on is checkpointed at once, so a crash
/// re-reads at most the chunks the sink had not acknowledged.
pub struct Checkpointing<'a> {
    inner: &'a mut dyn Sink,
    store: &'a PositionStore,
    schedule: Schedule,
    server: Option<(Flavor, ServerIdentity)>,
    last_commit: Option<Resume>,
    saved: Option<Position>,
    stream_id: String,
    snapshot: Option<Arc<SnapshotProgress>>,
    metrics: Option<Metrics>,
    /// The counter of the last table and operation seen: rows come in runs of one table, so
    /// counting a row is one comparison and one atomic add, not a label lookup. Holding the
    /// table keeps its address from being reused by another.
    counting: Option<(Arc<Table>, Op, Counter)>,
}

impl<'a> Checkpointing<'a> {
    pub fn new(
        inner: &'a mut dyn Sink,
        store: &'a PositionStore,
        schedule: Schedule,
        saved: Option<Position>,
        stream_id: String,
    ) -> Self {
        let snapshot = saved.as_ref().and_then(|p| p.snapshot.clone()).map(Arc::new);
        Checkpointing {
            inner,
            store,
            schedule,
            server: None,
            last_commit: None,
            saved,
            stream_id,
            snapshot,
            metrics: None,
            counting: None,
        }
    }

    fn position_at(&self, flavor: Flavor, resume: &Resume, identity: &ServerIdentity) -> Position {
        Position { stream_id: Some(self.stream_id.clone()), ..Position::new(flavor, resume, identity.clone()) }
    }

    /// `resume` with the newest snapshot progress; true if it moved the snapshot on.
    fn stamp(&mut self, resume: &Resume) -> (Resume, bool) {
        let progressed = resume.snapshot.is_some() && resume.snapshot != self.snapshot;
        if progressed {
            self.snapshot = resume.snapshot.clone();
        }
        (Resume { snapshot: self.snapshot.clone(), ..resume.clone() }, progressed)
    }

    /// Counts changes, transactions and position file writes for `/metrics`.
    pub fn set_metrics(&mut self, metrics: Metrics) {
        self.metrics = Some(metrics);
    }

    /// The server the following commits come from.
    pub fn set_server(&mut self, flavor: Flavor, identity: ServerIdentity) {
        self.server = Some((flavor, identity));
    }

    /// Makes `resume` the position when nothing was delivered or saved yet, and saves it: a
    /// restart then continues from here instead of re-resolving `--start` (for `latest`, that
    /// would skip what was written while the tool was down).
    pub fn begin_at(&mut self, resume: Resume) -> Result<()> {
        if self.last_commit.is_none() && self.saved.is_none() {
            let (resume, _) = self.stamp(&resume);
            self.last_commit = Some(resume.clone());
            self.save(Some(resume))?;
        }
        Ok(())
    }

    pub fn last_commit(&self) -> Option<&Resume> {
        self.last_commit.as_ref()
    }

    /// Where streaming would resume now: after the last commit handed to the sink, else the
    /// saved position.
    pub fn position(&self) -> Option<Position> {
        match (&self.last_commit, &self.server) {
            (Some(resume), Some((flavor, identity))) => Some(self.position_at(*flavor, resume, identity)),
            _ => self.saved.clone(),
        }
    }

    /// Saves `resume` (which the sink has acknowledged) unless it is already saved.
    fn save(&mut self, resume: Option<Resume>) -> Result<()> {
        // A checkpoint short of the last commit leaves the rest due: an idle moment saves it.
        self.schedule.done(resume == self.last_commit);
        let (Some(resume), Some((flavor, identity))) = (resume, &self.server) else {
            return Ok(());
        };
        let same = |s: &Position| {
            s.file == *resume.file && s.offset == resume.offset && s.snapshot.as_ref() == resume.snapshot.as_deref()
        };
        if self.saved.as_ref().is_some_and(same) {
            return Ok(());
        }
        let pos = self.position_at(*flavor, &resume, identity);
        self.store.save(&pos)?;
        if let Some(m) = &self.metrics {
            m.checkpoint_saved(&pos.file, pos.offset);
        }
        self.saved = Some(pos);
        Ok(())
    }

    /// Waits for the sink to acknowledge everything and saves the position of the last commit.
    /// If that fails (a sink that refuses an event), what was acknowledged before is saved.
    /// Either way the store has made the save durable when this returns.
    pub fn finish(&mut self) -> Result<()> {
        let finished = match self.inner.flush() {
            Ok(()) => self.save(self.last_commit.clone()),
            Err(e) => {
                let saved = match self.inner.acknowledged() {
                    Ok(acked) => self.save(acked),
                    Err(_) => Ok(()),
                };
                saved.and(Err(e))
            }
        };
        let flushed = self.store.flush();
        finished.and(flushed)
    }
}

impl Sink for Checkpointing<'_> {
    fn change(&mut self, change: &Change) -> Result<()> {
        self.inner.change(change)?;
        let Some(m) = &self.metrics else { return Ok(()) };
        match &self.counting {
            Some((table, op, counter)) if Arc::ptr_eq(table, &change.table) && *op == change.op => {
                counter.inc();
            }
            _ => {
                let labels = ChangeLabels {
                    db: change.table.db.clone(),
                    table: change.table.name.clone(),
                    op: change.op.as_str(),
                };
                let counter = m.changes(&labels);
                counter.inc();
                self.counting = Some((change.table.clone(), change.op, counter));
            }
        }
        Ok(())
    }

    fn ddl(&mut self, ddl: &Ddl) -> Result<()> {
        self.inner.ddl(ddl)
    }

    fn message(&mut self, msg: &Message) -> Result<()> {
        self.inner.message(msg)
    }

    fn commit(&mut self, resume: &Resume) -> Result<()> {
        let (resume, progressed) = self.stamp(resume);
        self.inner.commit(&resume)?;
        if let Some(m) = &self.metrics {
            m.transaction();
            if let Some(progress) = &resume.snapshot {
                m.snapshot_progress(progress.done, progress.pending.len());
            }
        }
        self.last_commit = Some(resume);
        if self.schedule.committed() || progressed {
            let acked = self.inner.acknowledged()?;
            self.save(acked)?;
        }
        Ok(())
    }

    fn acknowledged(&mut self) -> Result<Option<Resume>> {
        self.inner.acknowledged()
    }

    fn flush(&mut self) -> Result<()> {
        self.inner.flush()?;
        if self.schedule.overdue() {
            self.save(self.last_commit.clone())?;
        }
        Ok(())
    }
}

/// Decides when a checkpoint is due: every `every` transactions or `interval`, whichever first.
pub struct Schedule {
    pub every: u64,
    pub interval: Duration,
    pending: u64,
    /// The last checkpoint saved less than the last commit (the sink had not acknowledged it).
    behind: bool,
    last: Instant,
}

impl Schedule {
    pub fn new(every: u64, interval: Duration) -> Schedule {
        Schedule { every: every.max(1), interval, pending: 0, behind: false, last: Instant::now() }
    }

    /// Records one committed transaction; true if a checkpoint is due now.
    pub fn committed(&mut self) -> bool {
        self.pending += 1;
        self.pending >= self.every || self.last.elapsed() >= self.interval
    }

    /// True if transactions are waiting, or were left out of the last checkpoint, and the
    /// interval has passed (for idle moments).
    pub fn overdue(&self) -> bool {
        (self.pending > 0 || self.behind) && self.last.elapsed() >= self.interval
    }

    /// A checkpoint was saved; `complete` if it reached the last commit.
    pub fn done(&mut self, complete: bool) {
        self.pending = 0;
        self.behind = !complete;
        self.last = Instant::now();
    }
}

pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    crate::decode::value::format_utc(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_and_flavours_read_as_text() {
        let mariadb = ServerIdentity { uuid: None, server_id: 1, hostname: "db1".into() };
        assert_eq!(mariadb.to_string(), "server_id 1 on host db1");
        let mysql = ServerIdentity { uuid: Some("3e11fa47-71ca-11e1-9e33-c80aa9429562".into()), ..mariadb };
        assert_eq!(mysql.to_string(), "server_id 1 on host db1 (server_uuid 3e11fa47-71ca-11e1-9e33-c80aa9429562)");
        assert_eq!(format!("{} {}", Flavor::MariaDb, FlavorName::Mysql), "MariaDB MySQL");
    }

    #[test]
    fn schedule_by_count_and_time() {
        let mut s = Schedule::new(3, Duration::from_secs(3600));
        assert!(!s.committed());
        assert!(!s.committed());
        assert!(s.committed());
        s.done(true);
        assert!(!s.overdue());
        let mut s = Schedule::new(1000, Duration::ZERO);
        assert!(s.committed());
        assert!(s.overdue());
        s.done(false);
        assert!(s.overdue(), "what the checkpoint left out is still due");
        s.done(true);
        assert!(!s.overdue());
    }
}
