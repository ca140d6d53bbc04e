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
//! - A symlinked `PATH` is resolved once, at open: the lock and every checkpoint act on the
//!   target, so two links to one file share one lock, and the link stays a link.
//! - A checkpoint that fails leaves the previous file and no temp file behind.
//! - Version 2 adds the progress of a running snapshot (saved with the position of its last
//!   acknowledged chunk); version 1 files are read as positions without a snapshot and written
//!   back as version 2.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::position::{Flavor, Resume, SnapshotProgress};
use crate::event::{Change, Ddl, Op};
use crate::outbox::Message;
use crate::gtid::GtidSet;
use crate::metrics::{ChangeLabels, Counter, Metrics};
use crate::schema::Table;
use crate::sink::Sink;

const VERSION: u32 = 2;
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

    /// A position file's text, checked: its version, and its GTID set parses.
    pub fn parse(text: &str) -> Result<Position> {
        let pos: Position = serde_json::from_str(text).context(
            "the position file is corrupt; it was left as it is. Fix it by hand, or move it away and choose --start deliberately (events may be replayed or skipped)",
        )?;
        if !READS.contains(&pos.version) {
            bail!("the position file has version {}, this binlog-tail understands {READS:?}", pos.version);
        }
        pos.gtids().context("the position file holds a bad GTID set")?;
        Ok(pos)
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
        let path = &resolve(path)?;
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
        write()
            .inspect_err(|_| {
                // Gone already if the rename was done; otherwise the previous file stays.
                let _ = fs::remove_file(&tmp);
            })
            .with_context(|| format!("cannot write the position file {}", self.path.display()))
    }
}

/// Where the position really lives: a symlink is followed, and a file not created yet is placed
/// in its directory's canonical path.
fn resolve(path: &Path) -> Result<PathBuf> {
    match fs::canonicalize(path) {
        Ok(resolved) => return Ok(resolved),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot resolve the position file {}", path.display()))
        }
        Err(_) => {}
    }
    let parent = |p: &Path| p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    // A link to a file that does not exist yet: the file goes where the link points.
    let target = match fs::read_link(path) {
        Ok(target) => parent(path).join(target),
        Err(_) => path.to_path_buf(),
    };
    let name = target.file_name().with_context(|| format!("the position file {} names no file", path.display()))?;
    let dir = fs::canonicalize(parent(&target))
        .with_context(|| format!("the directory of the position file {} does not exist: create it first", target.display()))?;
    Ok(dir.join(name))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// A sink wrapper that saves the position of acknowledged transactions: after every `every`
/// commits or `interval` it asks the inner sink how far it has acknowledged and writes that; when
/// the source is idle it waits for everything to be acknowledged first. Every commit carries the
/// newest snapshot progress (the decoder's commits have none of their own), and a commit that
/// moves a snapshot on is checkpointed at once, so a crash re-reads at most the chunks the sink
/// had not acknowledged.
pub struct Checkpointing<'a> {
    inner: &'a mut dyn Sink,
    file: PositionFile,
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
    pub fn new(inner: &'a mut dyn Sink, file: PositionFile, schedule: Schedule, saved: Option<Position>, stream_id: String) -> Self {
        let snapshot = saved.as_ref().and_then(|p| p.snapshot.clone()).map(Arc::new);
        Checkpointing { inner, file, schedule, server: None, last_commit: None, saved, stream_id, snapshot, metrics: None, counting: None }
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
        self.schedule.done();
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
    let pos = Position::parse(&text).with_context(|| path.display().to_string())?;
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
        let resume = Resume::new(Arc::from("binlog.000003"), offset, Some(GtidSet::parse("0-1-42").unwrap()));
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
    fn a_failed_write_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pos.json");
        let file = PositionFile::open(&path).unwrap();
        file.save(&position(100)).unwrap();
        // A directory in the file's place makes the rename fail after the temp file is written.
        fs::rename(&path, dir.path().join("saved.json")).unwrap();
        fs::create_dir(&path).unwrap();
        fs::write(path.join("occupied"), b"").unwrap();
        let err = format!("{:#}", file.save(&position(200)).unwrap_err());
        assert!(err.contains("cannot write the position file"), "{err}");
        assert!(!sibling(&path, ".tmp").exists(), "the temp file is removed");
    }

    #[test]
    fn symlinks_are_resolved_once() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        // A link to a file not created yet: the file is created at the target.
        let file = PositionFile::open(&link).unwrap();
        file.save(&position(100)).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays a link");
        let saved: Position = serde_json::from_str(&fs::read_to_string(&real).unwrap()).unwrap();
        assert_eq!(saved.offset, 100);
        // The target and the link share one lock.
        let err = PositionFile::open(&real).err().unwrap().to_string();
        assert!(err.contains("another binlog-tail"), "{err}");
        drop(file);
        let again = PositionFile::open(&real).unwrap();
        assert!(PositionFile::open(&link).is_err());
        again.save(&position(200)).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&link).unwrap(), fs::read_to_string(&real).unwrap());
    }

    #[test]
    fn identities_and_flavours_read_as_text() {
        let mariadb = ServerIdentity { uuid: None, server_id: 1, hostname: "db1".into() };
        assert_eq!(mariadb.to_string(), "server_id 1 on host db1");
        let mysql = ServerIdentity { uuid: Some("3e11fa47-71ca-11e1-9e33-c80aa9429562".into()), ..mariadb };
        assert_eq!(mysql.to_string(), "server_id 1 on host db1 (server_uuid 3e11fa47-71ca-11e1-9e33-c80aa9429562)");
        assert_eq!(format!("{} {}", Flavor::MariaDb, FlavorName::Mysql), "MariaDB MySQL");
    }

    #[test]
    fn version_1_files_are_read_and_upgraded_with_snapshot_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pos.json");
        fs::write(
            &path,
            r#"{"version":1,"flavor":"mariadb","gtid_set":"0-1-7","file":"binlog.000001","offset":900,
               "server":{"uuid":null,"server_id":1,"hostname":"db"},"updated_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let file = PositionFile::open(&path).unwrap();
        let mut pos = file.load().unwrap().unwrap();
        assert_eq!((pos.version, pos.offset, pos.snapshot.clone()), (1, 900, None));
        pos.version = VERSION;
        pos.snapshot = Some(SnapshotProgress {
            pending: vec![["shop".into(), "orders".into()]],
            after: Some(vec![crate::position::KeyValue::Int(5), crate::position::KeyValue::Bytes(b"a\xff".to_vec())]),
            done: 2,
        });
        file.save(&pos).unwrap();
        assert_eq!(file.load().unwrap().unwrap(), pos);
        assert!(fs::read_to_string(&path).unwrap().contains("\"version\": 2"));
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
