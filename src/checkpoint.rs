//! The position file: where streaming resumes after a restart.
//!
//! Invariants:
//! - It names the end of a transaction whose every event the sink has acknowledged, and of all
//!   transactions before it; it never points into a transaction.
//! - It is replaced atomically (temp file, fsync, rename, fsync of the directory): a crash leaves
//!   the old or the new version, never a truncated one.
//! - A file that cannot be read or parsed stops the tool and is left untouched: it is never
//!   silently reset, which would replay or skip history.
//! - One process at a time: an exclusive lock on `PATH.lock` is held while streaming.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::position::{Flavor, Resume};
use crate::event::{Change, Ddl, Op};
use crate::outbox::Message;
use crate::gtid::GtidSet;
use crate::metrics::{ChangeLabels, Counter, Metrics};
use crate::schema::Table;
use crate::sink::Sink;

const VERSION: u32 = 1;

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
        }
    }

    pub fn gtids(&self) -> Result<Option<GtidSet>> {
        self.gtid_set.as_deref().map(GtidSet::parse).transpose()
    }
}

/// The position file and its lock.
pub struct PositionFile {
    path: PathBuf,
    _lock: File,
}

impl PositionFile {
    /// Takes the lock; fails if another process holds it.
    pub fn open(path: &Path) -> Result<PositionFile> {
        let lock_path = sibling(path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot create the lock file {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => bail!(
                "another binlog-tail is using the position file {} (it holds {}): stop it first, or give this one its own --position-file",
                path.display(),
                lock_path.display()
            ),
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()))
            }
        }
        Ok(PositionFile { path: path.to_path_buf(), _lock: lock })
    }

    /// The saved position, None if there is no file yet.
    pub fn load(&self) -> Result<Option<Position>> {
        read_position(&self.path)
    }

    /// Replaces the file atomically.
    pub fn save(&self, pos: &Position) -> Result<()> {
        let tmp = sibling(&self.path, ".tmp");
        let mut json = serde_json::to_vec_pretty(pos)?;
        json.push(b'\n');
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            File::open(dir)?.sync_all()
        };
        write().with_context(|| format!("cannot write the position file {}", self.path.display()))
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// A sink wrapper that saves the position of acknowledged transactions: after every `every`
/// commits or `interval` it asks the inner sink how far it has acknowledged and writes that; when
/// the source is idle it waits for everything to be acknowledged first.
pub struct Checkpointing<'a> {
    inner: &'a mut dyn Sink,
    file: PositionFile,
    schedule: Schedule,
    server: Option<(Flavor, ServerIdentity)>,
    last_commit: Option<Resume>,
    saved: Option<Position>,
    metrics: Option<Metrics>,
    /// The counter of the last table and operation seen: rows come in runs of one table, so
    /// counting a row is one comparison and one atomic add, not a label lookup. Holding the
    /// table keeps its address from being reused by another.
    counting: Option<(Arc<Table>, Op, Counter)>,
}

impl<'a> Checkpointing<'a> {
    pub fn new(inner: &'a mut dyn Sink, file: PositionFile, schedule: Schedule, saved: Option<Position>) -> Self {
        Checkpointing { inner, file, schedule, server: None, last_commit: None, saved, metrics: None, counting: None }
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
            (Some(resume), Some((flavor, identity))) => Some(Position::new(*flavor, resume, identity.clone())),
            _ => self.saved.clone(),
        }
    }

    /// Saves `resume` (which the sink has acknowledged) unless it is already saved.
    fn save(&mut self, resume: Option<Resume>) -> Result<()> {
        self.schedule.done();
        let (Some(resume), Some((flavor, identity))) = (resume, &self.server) else {
            return Ok(());
        };
        if self.saved.as_ref().is_some_and(|s| s.file == *resume.file && s.offset == resume.offset) {
            return Ok(());
        }
        let pos = Position::new(*flavor, &resume, identity.clone());
        self.file.save(&pos)?;
        if let Some(m) = &self.metrics {
            m.checkpoint_saved(&pos.file, pos.offset);
        }
        self.saved = Some(pos);
        Ok(())
    }

    /// Waits for the sink to acknowledge everything and saves the position of the last commit.
    /// If that fails (a sink that refuses an event), what was acknowledged before is saved.
    pub fn finish(&mut self) -> Result<()> {
        match self.inner.flush() {
            Ok(()) => self.save(self.last_commit.clone()),
            Err(e) => {
                if let Ok(acked) = self.inner.acknowledged() {
                    self.save(acked)?;
                }
                Err(e)
            }
        }
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
                let labels = ChangeLabels { db: change.table.db.clone(), table: change.table.name.clone(), op: change.op.as_str() };
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
        self.inner.commit(resume)?;
        if let Some(m) = &self.metrics {
            m.transaction();
        }
        self.last_commit = Some(resume.clone());
        if self.schedule.committed() {
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
    last: Instant,
}

impl Schedule {
    pub fn new(every: u64, interval: Duration) -> Schedule {
        Schedule { every: every.max(1), interval, pending: 0, last: Instant::now() }
    }

    /// Records one committed transaction; true if a checkpoint is due now.
    pub fn committed(&mut self) -> bool {
        self.pending += 1;
        self.pending >= self.every || self.last.elapsed() >= self.interval
    }

    /// True if transactions are waiting and the interval has passed (for idle moments).
    pub fn overdue(&self) -> bool {
        self.pending > 0 && self.last.elapsed() >= self.interval
    }

    pub fn done(&mut self) {
        self.pending = 0;
        self.last = Instant::now();
    }
}

/// The position saved at `path` without taking the lock (for `status`, beside a running stream;
/// the file is replaced by rename, so a read sees one whole version). None if there is none yet.
pub fn read_position(path: &Path) -> Result<Option<Position>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read the position file {}", path.display())),
    };
    let pos: Position = serde_json::from_str(&text).with_context(|| {
        format!(
            "the position file {} is corrupt; it was left as it is. Fix it by hand, or move it away and choose --start deliberately (events may be replayed or skipped)",
            path.display()
        )
    })?;
    if pos.version != VERSION {
        bail!("the position file {} has version {}, this binlog-tail understands {VERSION}", path.display(), pos.version);
    }
    pos.gtids().with_context(|| format!("the position file {} holds a bad GTID set", path.display()))?;
    Ok(Some(pos))
}

pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::decode::value::format_utc(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn position(offset: u64) -> Position {
        let resume = Resume {
            file: Arc::from("binlog.000003"),
            offset,
            gtids: Some(GtidSet::parse("0-1-42").unwrap()),
        };
        Position::new(Flavor::MariaDb, &resume, ServerIdentity { uuid: None, server_id: 1, hostname: "db".into() })
    }

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pos.json");
        let file = PositionFile::open(&path).unwrap();
        assert_eq!(file.load().unwrap(), None);
        file.save(&position(100)).unwrap();
        file.save(&position(200)).unwrap();
        let loaded = file.load().unwrap().unwrap();
        assert_eq!(loaded.offset, 200);
        assert_eq!(loaded.gtid_set.as_deref(), Some("0-1-42"));
        assert!(!sibling(&path, ".tmp").exists(), "no temp file left behind");
    }

    #[test]
    fn a_second_holder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pos.json");
        let _first = PositionFile::open(&path).unwrap();
        let err = PositionFile::open(&path).err().unwrap().to_string();
        assert!(err.contains("another binlog-tail"), "{err}");
    }

    #[test]
    fn corrupt_files_are_errors_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pos.json");
        fs::write(&path, b"{\"version\": 1, \"fla").unwrap();
        let file = PositionFile::open(&path).unwrap();
        let err = format!("{:#}", file.load().unwrap_err());
        assert!(err.contains("corrupt"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"{\"version\": 1, \"fla");
    }

    #[test]
    fn schedule_by_count_and_time() {
        let mut s = Schedule::new(3, Duration::from_secs(3600));
        assert!(!s.committed());
        assert!(!s.committed());
        assert!(s.committed());
        s.done();
        assert!(!s.overdue());
        let mut s = Schedule::new(1000, Duration::ZERO);
        assert!(s.committed());
        assert!(s.overdue());
    }
}
