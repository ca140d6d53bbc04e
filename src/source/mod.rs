//! Where binlog events come from: binlog files on disk, or a server we replicate from.
//! Both hand the decoder framed events whose checksums were verified.
//!
//! A server is reached through `connection`, streamed from by `server`, and asked for the
//! columns the binlog leaves out by `info_schema`; `tls` resolves its TLS settings.

pub mod connection;
pub mod file;
pub mod info_schema;
pub mod server;
pub mod tls;

use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::gtid::GtidSet;

/// How to reach a server, and how to stream from it.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub url: String,
    pub password: Option<String>,
    pub server_id: u32,
    /// Keep tailing at the server's end instead of stopping there.
    pub follow: bool,
    pub heartbeat: Duration,
    /// How long to keep retrying the first connection while the server is starting.
    pub wait_for_server: Duration,
    /// Resume saved positions by GTID set where the server has GTIDs (else by file and offset).
    pub resume_by_gtid: bool,
    /// TLS settings resolved from the options and the URL (`tls::resolve`); `None` leaves the
    /// URL's own.
    pub tls: Option<mysql_async::SslOpts>,
}

/// Where a server stream starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// The oldest binlog the server still has.
    Earliest,
    /// The server's current end: only changes made from now on.
    Latest,
    /// After every transaction in this set.
    Gtid(GtidSet),
    /// At this file and offset (an event boundary).
    FilePos(String, u64),
    /// Where a previous run stopped: by GTID where the server has GTIDs, else file and offset.
    Resume { file: String, offset: u64, gtids: Option<GtidSet> },
}

impl FromStr for Start {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Start> {
        let s = s.trim();
        match s {
            "earliest" => return Ok(Start::Earliest),
            "latest" => return Ok(Start::Latest),
            _ => {}
        }
        let mysql_gtid = s.get(..36).is_some_and(|u| crate::gtid::parse_uuid(u).is_ok());
        if !mysql_gtid {
            if let Some((file, pos)) = s.rsplit_once(':') {
                let pos: u64 = pos.parse().with_context(|| format!("`{pos}` in `{s}` is not a byte offset"))?;
                if file.is_empty() || pos < 4 {
                    bail!("`{s}`: give FILE:POS with a binlog file name and an offset of 4 or more");
                }
                return Ok(Start::FilePos(file.to_string(), pos));
            }
        }
        GtidSet::parse(s).map(Start::Gtid).with_context(|| {
            format!("`{s}` is not a start position: use earliest, latest, FILE:POS (e.g. binlog.000003:4), or a GTID set (MySQL uuid:1-100, MariaDB 0-1-100)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions() {
        assert_eq!("earliest".parse::<Start>().unwrap(), Start::Earliest);
        assert_eq!("binlog.000003:1234".parse::<Start>().unwrap(), Start::FilePos("binlog.000003".into(), 1234));
        assert_eq!("mysql-bin.000001:4".parse::<Start>().unwrap(), Start::FilePos("mysql-bin.000001".into(), 4));
        assert!(matches!("0-1-5".parse::<Start>().unwrap(), Start::Gtid(GtidSet::MariaDb(_))));
        assert!(matches!(
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5".parse::<Start>().unwrap(),
            Start::Gtid(GtidSet::MySql(_))
        ));
        assert!("binlog.000003:2".parse::<Start>().is_err());
        assert!("whenever".parse::<Start>().is_err());
    }
}
