//! MariaDB's own binlog events, which mysql_common reports as unknown: GTID (162),
//! GTID_LIST (163), ANNOTATE_ROWS (160), BINLOG_CHECKPOINT (161), and the compressed and
//! encrypted event types that cannot be decoded and must stop the stream rather than be skipped.

use anyhow::{bail, Result};

use super::value::Cursor;
use crate::gtid::Gtid;

pub const ANNOTATE_ROWS: u8 = 160;
pub const BINLOG_CHECKPOINT: u8 = 161;
pub const GTID: u8 = 162;
pub const GTID_LIST: u8 = 163;
pub const START_ENCRYPTION: u8 = 164;
pub const QUERY_COMPRESSED: u8 = 165;
pub const ROWS_COMPRESSED_FIRST: u8 = 166;
pub const ROWS_COMPRESSED_LAST: u8 = 171;

/// GTID event flags.
const FL_STANDALONE: u8 = 1;
const FL_GROUP_COMMIT_ID: u8 = 2;

#[derive(Debug, PartialEq, Eq)]
pub struct GtidEvent {
    pub gtid: Gtid,
    /// A standalone event group (DDL, or a non-transactional statement) has no BEGIN/COMMIT.
    pub standalone: bool,
    pub commit_id: Option<u64>,
}

/// GTID (162): seq_no u64, domain_id u32, flags u8, [commit_id u64], XA data we do not need.
pub fn parse_gtid(body: &[u8], server_id: u32) -> Result<GtidEvent> {
    let mut cur = Cursor::new(body);
    let seq = cur.uint_le(8)?;
    let domain = cur.uint_le(4)? as u32;
    let flags = cur.uint_le(1)? as u8;
    let commit_id = if flags & FL_GROUP_COMMIT_ID != 0 { Some(cur.uint_le(8)?) } else { None };
    Ok(GtidEvent {
        gtid: Gtid::MariaDb { domain, server: server_id, seq },
        standalone: flags & FL_STANDALONE != 0,
        commit_id,
    })
}

/// GTID_LIST (163): count u32 (low 28 bits), then count x (domain u32, server u32, seq u64):
/// the binlog state when the file was started.
pub fn parse_gtid_list(body: &[u8]) -> Result<Vec<Gtid>> {
    let mut cur = Cursor::new(body);
    let count = cur.uint_le(4)? & 0x0fff_ffff;
    if count as usize * 16 > body.len() - 4 {
        bail!("GTID_LIST event claims {count} GTIDs but holds {} bytes", body.len() - 4);
    }
    (0..count)
        .map(|_| {
            Ok(Gtid::MariaDb { domain: cur.uint_le(4)? as u32, server: cur.uint_le(4)? as u32, seq: cur.uint_le(8)? })
        })
        .collect()
}

/// ANNOTATE_ROWS (160): the SQL statement that produced the following rows events.
pub fn parse_annotate_rows(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// BINLOG_CHECKPOINT (161): name length u32, then the oldest binlog file still needed for
/// crash recovery.
pub fn parse_binlog_checkpoint(body: &[u8]) -> Result<String> {
    let mut cur = Cursor::new(body);
    let len = cur.uint_le(4)? as usize;
    Ok(String::from_utf8_lossy(cur.take(len)?).into_owned())
}

/// The error for events that hide rows from us; None for every other type.
pub fn undecodable(type_code: u8) -> Option<&'static str> {
    match type_code {
        START_ENCRYPTION => Some(
            "this binlog is encrypted (MariaDB START_ENCRYPTION event): read it through the server with --url, which decrypts it, instead of --file",
        ),
        QUERY_COMPRESSED | ROWS_COMPRESSED_FIRST..=ROWS_COMPRESSED_LAST => Some(
            "this binlog holds MariaDB compressed events (log_bin_compress=ON), which binlog-tail cannot decode; rows would be lost. Set log_bin_compress=OFF on the server (SET GLOBAL log_bin_compress=OFF, and in my.cnf), then start from a position after the compressed events",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_event() {
        let mut body = 42u64.to_le_bytes().to_vec();
        body.extend(7u32.to_le_bytes());
        body.push(FL_STANDALONE | FL_GROUP_COMMIT_ID);
        body.extend(99u64.to_le_bytes());
        let e = parse_gtid(&body, 3).unwrap();
        assert_eq!(e.gtid.to_string(), "7-3-42");
        assert!(e.standalone);
        assert_eq!(e.commit_id, Some(99));
        assert!(parse_gtid(&body[..10], 3).is_err());
    }

    #[test]
    fn gtid_list_event() {
        let mut body = 2u32.to_le_bytes().to_vec();
        for (d, s, n) in [(0u32, 1u32, 100u64), (1, 2, 5)] {
            body.extend(d.to_le_bytes());
            body.extend(s.to_le_bytes());
            body.extend(n.to_le_bytes());
        }
        let list = parse_gtid_list(&body).unwrap();
        let text: Vec<String> = list.iter().map(|g| g.to_string()).collect();
        assert_eq!(text, ["0-1-100", "1-2-5"]);
        assert!(parse_gtid_list(&body[..20]).is_err());
        let mut lying = body.clone();
        lying[0] = 200;
        assert!(parse_gtid_list(&lying).is_err());
    }

    #[test]
    fn annotate_and_checkpoint() {
        assert_eq!(parse_annotate_rows(b"INSERT INTO t VALUES (1)"), "INSERT INTO t VALUES (1)");
        let mut body = 13u32.to_le_bytes().to_vec();
        body.extend(b"binlog.000007");
        assert_eq!(parse_binlog_checkpoint(&body).unwrap(), "binlog.000007");
        assert!(parse_binlog_checkpoint(&body[..8]).is_err());
    }

    #[test]
    fn compressed_events_are_refused() {
        for t in [165, 166, 169, 171] {
            assert!(undecodable(t).unwrap().contains("log_bin_compress=OFF"));
        }
        assert!(undecodable(164).is_some());
        assert!(undecodable(162).is_none());
    }
}
