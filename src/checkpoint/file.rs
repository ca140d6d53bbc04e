//! The position file (`--position-store file`, the default).
//!
//! Invariants:
//! - It is replaced atomically (temp file, fsync, rename, fsync of the directory): a crash leaves
//!   the old or the new version, never a truncated one.
//! - One process at a time: an exclusive lock on `PATH.lock` is held while streaming.
//! - A symlinked `PATH` is resolved once, at open: the lock and every checkpoint act on the
//!   target, so two links to one file share one lock, and the link stays a link.
//! - A checkpoint that fails leaves the previous file and no temp file behind.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::position::Position;

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

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved position, None if there is no file yet.
    pub fn load(&self) -> Result<Option<Position>> {
        read_position(&self.path)
    }

    /// Replaces the file atomically.
    pub fn save(&self, pos: &Position) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(pos)?;
        json.push(b'\n');
        replace(&self.path, &[&json]).with_context(|| format!("cannot write the position file {}", self.path.display()))
    }
}

/// Replaces `path` with `parts` atomically and durably: temp file, fsync, rename, fsync of the
/// directory. A failure leaves the previous file and no temp file.
pub fn replace(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let tmp = sibling(path, ".tmp");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        for part in parts {
            f.write_all(part)?;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        // Gone already if the rename was done; otherwise the previous file stays.
        let _ = fs::remove_file(&tmp);
    })
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
    let dir = fs::canonicalize(parent(&target)).with_context(|| {
        format!("the directory of the position file {} does not exist: create it first", target.display())
    })?;
    Ok(dir.join(name))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::now_rfc3339;
    use crate::gtid::GtidSet;
    use crate::position::{Flavor, Resume, ServerIdentity, SnapshotProgress, VERSION};
    use std::sync::Arc;

    fn position(offset: u64) -> Position {
        let resume = Resume::new(Arc::from("binlog.000003"), offset, Some(GtidSet::parse("0-1-42").unwrap()));
        let server = ServerIdentity { uuid: None, server_id: 1, hostname: "db".into() };
        Position::new(Flavor::MariaDb, &resume, server, now_rfc3339())
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
}
