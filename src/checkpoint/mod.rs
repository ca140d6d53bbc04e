//! Where streaming resumes after a restart: the stores of the saved position (a local file, or a
//! compacted Kafka topic), and the sink wrapper that saves it (and counts the changes it passes
//! on, `counting`). The position itself and its JSON are `crate::position::Position`.
//!
//! Invariants:
//! - A saved position names the end of a transaction whose every event the sink has
//!   acknowledged, and of all transactions before it; it never points into a transaction. A
//!   running snapshot's progress is saved with the position of its last acknowledged chunk.
//! - A position that cannot be read or parsed stops the tool and is left untouched: it is never
//!   silently reset, which would replay or skip history.
//! - One writer per stream: the file store locks the file, the Kafka store holds a lease
//!   (`lease`), and refuses to save once it lost it.
//! - Both stores hold the same JSON.

mod counting;
pub mod file;
pub mod kafka;
pub mod lease;

pub use file::{read_position, PositionFile};

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::event::{Change, Ddl};
use crate::metrics::Metrics;
use crate::outbox::Message;
use crate::position::{Flavor, Position, Resume, ServerIdentity, SnapshotProgress};
use crate::sink::Sink;
use counting::ChangeCounts;

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
    /// Changes per table and operation, counted when there are metrics.
    counts: Option<ChangeCounts>,
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
            counts: None,
        }
    }

    fn position_at(&self, flavor: Flavor, resume: &Resume, identity: &ServerIdentity) -> Position {
        let pos = Position::new(flavor, resume, identity.clone(), now_rfc3339());
        Position { stream_id: Some(self.stream_id.clone()), ..pos }
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
        self.counts = Some(ChangeCounts::new(metrics.clone()));
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
        let pos = self.position_at(*flavor, &resume, identity);
        if self.saved.as_ref().is_some_and(|saved| saved.same_place(&pos)) {
            return Ok(());
        }
        if self.saved.is_some() {
            // Moved on from a saved position (not the first save of a new stream, at its start).
            self.schedule.moved();
        }
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
        if let Some(counts) = &mut self.counts {
            counts.count(change);
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
    /// No checkpoint has moved the position since the start: every commit tries to save, so a
    /// process that keeps dying young (a crash loop) still makes progress.
    fresh: bool,
}

impl Schedule {
    pub fn new(every: u64, interval: Duration) -> Schedule {
        Schedule { every: every.max(1), interval, pending: 0, behind: false, last: Instant::now(), fresh: true }
    }

    /// Records one committed transaction; true if a checkpoint is due now.
    pub fn committed(&mut self) -> bool {
        self.pending += 1;
        self.fresh || self.pending >= self.every || self.last.elapsed() >= self.interval
    }

    /// True if transactions are waiting, or were left out of the last checkpoint, and the
    /// interval has passed (for idle moments).
    pub fn overdue(&self) -> bool {
        (self.pending > 0 || self.behind) && (self.fresh || self.last.elapsed() >= self.interval)
    }

    /// A checkpoint was saved; `complete` if it reached the last commit.
    pub fn done(&mut self, complete: bool) {
        self.pending = 0;
        self.behind = !complete;
        self.last = Instant::now();
    }

    /// A checkpoint moved the position: from now on, by the schedule.
    pub fn moved(&mut self) {
        self.fresh = false;
    }
}

pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    crate::decode::value::format_utc(secs)
}

/// A new id, random enough that two never meet: a position file's stream id, a lease claim.
pub fn new_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{:016x}", RandomState::new().hash_one((now.as_nanos(), std::process::id())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_by_count_and_time() {
        let mut s = Schedule::new(3, Duration::from_secs(3600));
        s.moved();
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

    #[test]
    fn after_a_start_every_commit_is_due_until_the_position_moves() {
        let mut s = Schedule::new(1000, Duration::from_secs(3600));
        assert!(s.committed(), "the first commit after a start");
        s.done(false);
        assert!(s.committed() && s.overdue(), "not acknowledged yet: still due");
        s.moved();
        s.done(true);
        assert!(!s.committed() && !s.overdue(), "then by the schedule");
    }
}
