//! Where a stream is: the server flavour, the point reading resumes from (`Resume`, produced by
//! the decoder and acknowledged by the sinks), and the saved `Position` with its versioned JSON,
//! which every position store holds. These sit below the decoder, the sinks and the stores, so
//! none of them needs another to talk about positions. A snapshot's progress travels with the
//! position it was emitted at, so it is saved under the same acknowledgement rule.
//!
//! Invariants: a saved position that does not parse, or has a version this binlog-tail does not
//! read, is an error, never a fresh start. Version 2 adds the progress of a running snapshot;
//! version 1 positions are read as positions without a snapshot and written back as version 2.

use std::fmt;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::gtid::GtidSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MySql,
    MariaDb,
}

impl Flavor {
    /// From a server version string (`@@version`, or a format description event's).
    pub fn from_version(version: &str) -> Flavor {
        if version.contains("MariaDB") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::MySql => "MySQL",
            Flavor::MariaDb => "MariaDB",
        })
    }
}

/// Where reading resumes after a transaction: the file and offset of the next event, and the
/// GTID set including this transaction (when the server has GTIDs), and how far a snapshot
/// running alongside the stream had come by then.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    pub file: Arc<str>,
    pub offset: u64,
    pub gtids: Option<GtidSet>,
    pub snapshot: Option<Arc<SnapshotProgress>>,
}

impl Resume {
    pub fn new(file: Arc<str>, offset: u64, gtids: Option<GtidSet>) -> Resume {
        Resume { file, offset, gtids, snapshot: None }
    }
}

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
    /// The position of `resume` on `server`, written at `updated_at` (RFC 3339, UTC).
    pub fn new(flavor: Flavor, resume: &Resume, server: ServerIdentity, updated_at: String) -> Position {
        Position {
            version: VERSION,
            flavor: flavor.into(),
            gtid_set: resume.gtids.as_ref().map(|g| g.to_string()).filter(|g| !g.is_empty()),
            file: resume.file.to_string(),
            offset: resume.offset,
            server,
            updated_at,
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

    /// Whether `other` is the same place in the stream: the same file, offset and snapshot
    /// progress, whenever and by whichever stream it was written. (The GTID set follows from the
    /// file and offset.)
    pub fn same_place(&self, other: &Position) -> bool {
        (&self.file, self.offset, &self.snapshot) == (&other.file, other.offset, &other.snapshot)
    }
}

/// How far a snapshot has come: saved in the position file with the position its last emitted
/// chunk belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotProgress {
    /// Tables still to read, in order, as `[db, table]`; the first is the one being read.
    pub pending: Vec<[String; 2]>,
    /// The chunk key of the last row emitted from the first pending table, exactly as the server
    /// returned it; None when none was emitted yet.
    pub after: Option<Vec<KeyValue>>,
    /// Tables read completely.
    pub done: u64,
}

impl SnapshotProgress {
    pub fn complete(&self) -> bool {
        self.pending.is_empty()
    }
}

/// One value of a chunk key, as the server returned it (bound back unchanged as the next bound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyValue {
    Null,
    Int(i64),
    Uint(u64),
    Float(f32),
    Double(f64),
    /// Strings and decimals as bytes, base64 in the file.
    Bytes(#[serde(with = "base64_bytes")] Vec<u8>),
    /// year, month, day, hour, minute, second, microsecond.
    Date(u16, u8, u8, u8, u8, u8, u32),
    /// negative, days, hours, minutes, seconds, microseconds.
    Time(bool, u32, u8, u8, u8, u32),
}

mod base64_bytes {
    use super::*;

    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
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
    fn same_place_ignores_when_and_by_whom() {
        let server = ServerIdentity { uuid: None, server_id: 1, hostname: "db1".into() };
        let at = |offset, snapshot: Option<SnapshotProgress>| {
            let resume =
                Resume { snapshot: snapshot.map(Arc::new), ..Resume::new(Arc::from("b.000001"), offset, None) };
            Position::new(Flavor::MariaDb, &resume, server.clone(), "2026-01-01T00:00:00Z".into())
        };
        let later =
            Position { updated_at: "2026-01-02T00:00:00Z".into(), stream_id: Some("s".into()), ..at(100, None) };
        assert!(at(100, None).same_place(&later));
        assert!(!at(100, None).same_place(&at(200, None)));
        let progress = SnapshotProgress { pending: vec![["db".into(), "t".into()]], after: None, done: 0 };
        assert!(!at(100, None).same_place(&at(100, Some(progress.clone()))));
        assert!(at(100, Some(progress.clone())).same_place(&at(100, Some(progress))));
    }
}
