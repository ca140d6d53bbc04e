//! Where a stream is: the server flavour and the position reading resumes from. These sit below
//! the decoder (which produces positions) and the sinks (which acknowledge them), so neither
//! needs the other to talk about positions. A snapshot's progress travels with the position it
//! was emitted at, so it is saved under the same acknowledgement rule.

use std::fmt;
use std::sync::Arc;

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
