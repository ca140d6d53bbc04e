//! Where a stream is: the server flavour and the position reading resumes from. These sit below
//! the decoder (which produces positions) and the sinks (which acknowledge them), so neither
//! needs the other to talk about positions.

use std::fmt;
use std::sync::Arc;

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
/// GTID set including this transaction (when the server has GTIDs).
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    pub file: Arc<str>,
    pub offset: u64,
    pub gtids: Option<GtidSet>,
}
