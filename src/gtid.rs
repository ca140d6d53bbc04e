//! GTID sets of both server flavours, parsed from and printed to the servers' own text forms.
//!
//! Invariants: a MySQL set keeps, per (source UUID, tag), sorted, disjoint, non-adjacent
//! half-open intervals, so printing is canonical and `contains` is exact. A MariaDB position keeps
//! one `domain-server-seq` per replication domain: the last transaction applied in that domain,
//! which is what `@slave_connect_state` takes.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, Context, Result};

/// One transaction's identity as printed in the `gtid` field of change events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gtid {
    /// `uuid:N`, or `uuid:tag:N` for MySQL 8.4 tagged GTIDs.
    MySql { sid: [u8; 16], tag: String, gno: u64 },
    /// `domain-server-seq`.
    MariaDb { domain: u32, server: u32, seq: u64 },
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gtid::MySql { sid, tag, gno } => {
                write_uuid(f, sid)?;
                if !tag.is_empty() {
                    write!(f, ":{tag}")?;
                }
                write!(f, ":{gno}")
            }
            Gtid::MariaDb { domain, server, seq } => write!(f, "{domain}-{server}-{seq}"),
        }
    }
}

/// A set of executed transactions, in the flavour of the server that wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GtidSet {
    MySql(MySqlGtidSet),
    MariaDb(MariaDbGtidPos),
}

impl GtidSet {
    /// Parses either flavour: MariaDB's `D-S-N[,D-S-N]` or MySQL's `uuid:1-5[:tag:1-3][,uuid:...]`.
    pub fn parse(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        let looks_mariadb =
            !trimmed.is_empty() && trimmed.split(',').all(|g| g.trim().split('-').count() == 3 && !g.contains(':'));
        if looks_mariadb {
            MariaDbGtidPos::parse(trimmed).map(GtidSet::MariaDb)
        } else {
            MySqlGtidSet::parse(trimmed).map(GtidSet::MySql)
        }
    }

    pub fn add(&mut self, gtid: &Gtid) {
        match (self, gtid) {
            (GtidSet::MySql(set), Gtid::MySql { sid, tag, gno }) => set.add(*sid, tag, *gno),
            (GtidSet::MariaDb(pos), Gtid::MariaDb { domain, server, seq }) => pos.set(*domain, *server, *seq),
            // A flavour change mid-stream cannot happen within one server's binlog.
            _ => {}
        }
    }

    pub fn empty_like(gtid: &Gtid) -> Self {
        match gtid {
            Gtid::MySql { .. } => GtidSet::MySql(MySqlGtidSet::default()),
            Gtid::MariaDb { .. } => GtidSet::MariaDb(MariaDbGtidPos::default()),
        }
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidSet::MySql(s) => s.fmt(f),
            GtidSet::MariaDb(p) => p.fmt(f),
        }
    }
}

/// A source server's UUID and a GTID tag ("" for untagged GTIDs).
pub type SidTag = ([u8; 16], String);

/// MySQL `gtid_executed`-style set: (uuid, tag) -> half-open intervals `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MySqlGtidSet {
    pub ranges: BTreeMap<SidTag, Vec<(u64, u64)>>,
}

impl MySqlGtidSet {
    pub fn parse(text: &str) -> Result<Self> {
        let mut set = MySqlGtidSet::default();
        for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let mut parts = member.split(':');
            let uuid_text = parts.next().unwrap_or_default();
            let sid = parse_uuid(uuid_text).with_context(|| format!("`{member}` does not start with a server UUID"))?;
            let mut tag = String::new();
            let mut saw_interval = false;
            for part in parts {
                let part = part.trim();
                if part.starts_with(|c: char| c.is_ascii_digit()) {
                    let (start, end) = match part.split_once('-') {
                        Some((a, b)) => (parse_gno(a, member)?, parse_gno(b, member)?),
                        None => {
                            let n = parse_gno(part, member)?;
                            (n, n)
                        }
                    };
                    if start == 0 || end < start || end >= MAX_GNO {
                        bail!(
                            "GTID interval `{part}` in `{member}` is empty, starts at 0 or ends beyond {}",
                            MAX_GNO - 1
                        );
                    }
                    set.add_interval(sid, &tag, start, end + 1);
                    saw_interval = true;
                } else {
                    if !valid_tag(part) {
                        bail!("`{part}` in `{member}` is neither an interval nor a GTID tag (letters, digits, _; at most 32)");
                    }
                    tag = part.to_ascii_lowercase();
                }
            }
            if !saw_interval {
                bail!("`{member}` names a server UUID but no transaction numbers (e.g. `{uuid_text}:1-100`)");
            }
        }
        Ok(set)
    }

    pub fn add(&mut self, sid: [u8; 16], tag: &str, gno: u64) {
        self.add_interval(sid, tag, gno, gno + 1);
    }

    /// Adds `[start, end)`, merging it with the intervals it touches: one binary search and
    /// a local merge, so building a set from n intervals stays near-linear.
    pub fn add_interval(&mut self, sid: [u8; 16], tag: &str, start: u64, end: u64) {
        let ranges = self.ranges.entry((sid, tag.to_string())).or_default();
        // First interval that ends at or after `start` (it may touch or overlap the new one).
        let first = ranges.partition_point(|&(_, e)| e < start);
        let mut last = first;
        let (mut s, mut e) = (start, end);
        while let Some(&(rs, re)) = ranges.get(last).filter(|&&(rs, _)| rs <= end) {
            s = s.min(rs);
            e = e.max(re);
            last += 1;
        }
        ranges.splice(first..last, [(s, e)]);
    }

    /// The body of MySQL's PREVIOUS_GTIDS event (untagged, or 8.4's tagged format): the
    /// executed set before a binlog file. Every count is checked against the bytes that are
    /// there before anything is allocated.
    pub fn from_previous_gtids(body: &[u8]) -> Result<MySqlGtidSet> {
        const SID_MIN_LEN: usize = 16 + 8;
        const INTERVAL_LEN: usize = 16;
        let mut r = Bytes(body);
        let header = r.u64()?;
        let tagged = header >> 56 != 0;
        let sids = if tagged { (header >> 8) & ((1 << 48) - 1) } else { header & ((1 << 56) - 1) };
        if sids > (r.0.len() / SID_MIN_LEN) as u64 {
            bail!("PREVIOUS_GTIDS claims {sids} server UUIDs but holds {} bytes", body.len());
        }
        let mut set = MySqlGtidSet::default();
        for _ in 0..sids {
            let sid: [u8; 16] = r.take(16)?.try_into().expect("16 bytes");
            let tag = if tagged {
                let len = r.varlen()?;
                let tag =
                    std::str::from_utf8(r.take(usize::try_from(len)?)?).ok().filter(|t| t.is_empty() || valid_tag(t));
                tag.context("PREVIOUS_GTIDS holds an invalid GTID tag")?.to_ascii_lowercase()
            } else {
                String::new()
            };
            let intervals = r.u64()?;
            if intervals > (r.0.len() / INTERVAL_LEN) as u64 {
                bail!("PREVIOUS_GTIDS claims {intervals} intervals but holds {} bytes", body.len());
            }
            for _ in 0..intervals {
                let (start, end) = (r.u64()?, r.u64()?);
                if start == 0 || start >= end || end > MAX_GNO {
                    bail!("PREVIOUS_GTIDS holds the impossible interval [{start}, {end})");
                }
                set.add_interval(sid, &tag, start, end);
            }
        }
        Ok(set)
    }

    /// True if the transaction `sid:tag:gno` is in the set.
    pub fn contains_gtid(&self, sid: [u8; 16], tag: &str, gno: u64) -> bool {
        let Some(ranges) = self.ranges.get(&(sid, tag.to_string())) else { return false };
        let at = ranges.partition_point(|&(_, end)| end <= gno);
        ranges.get(at).is_some_and(|&(start, _)| start <= gno)
    }

    /// True if every transaction of `self` is in `other`.
    pub fn is_subset(&self, other: &MySqlGtidSet) -> bool {
        self.ranges.iter().all(|(key, ranges)| {
            let theirs = other.ranges.get(key).map(Vec::as_slice).unwrap_or_default();
            ranges.iter().all(|&(s, e)| theirs.iter().any(|&(ts, te)| ts <= s && e <= te))
        })
    }

    /// The transactions of `self` that are not in `other`.
    pub fn difference(&self, other: &MySqlGtidSet) -> MySqlGtidSet {
        let mut out = MySqlGtidSet::default();
        for (key, ranges) in &self.ranges {
            let theirs = other.ranges.get(key).map(Vec::as_slice).unwrap_or_default();
            for &(s, e) in ranges {
                let mut cur = s;
                for &(ts, te) in theirs.iter().filter(|&&(ts, te)| te > s && ts < e) {
                    if ts > cur {
                        out.add_interval(key.0, &key.1, cur, ts);
                    }
                    cur = cur.max(te);
                }
                if cur < e {
                    out.add_interval(key.0, &key.1, cur, e);
                }
            }
        }
        out
    }
}

impl fmt::Display for MySqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last_sid: Option<[u8; 16]> = None;
        for ((sid, tag), ranges) in &self.ranges {
            if last_sid == Some(*sid) {
                // Same UUID: tagged intervals continue the member, as MySQL prints them.
            } else {
                if last_sid.is_some() {
                    f.write_str(",")?;
                }
                write_uuid(f, sid)?;
                last_sid = Some(*sid);
            }
            if !tag.is_empty() {
                write!(f, ":{tag}")?;
            }
            for &(s, e) in ranges {
                if e - s == 1 {
                    write!(f, ":{s}")?;
                } else {
                    write!(f, ":{s}-{}", e - 1)?;
                }
            }
        }
        Ok(())
    }
}

/// MariaDB GTID position: per domain, the last `server-seq` applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MariaDbGtidPos {
    pub domains: BTreeMap<u32, (u32, u64)>,
}

impl MariaDbGtidPos {
    pub fn parse(text: &str) -> Result<Self> {
        let mut pos = MariaDbGtidPos::default();
        for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let (domain, server, seq) = parse_mariadb_gtid(member)?;
            if pos.domains.contains_key(&domain) {
                bail!("domain {domain} appears twice in `{text}`: a MariaDB GTID position has one GTID per domain");
            }
            pos.domains.insert(domain, (server, seq));
        }
        Ok(pos)
    }

    pub fn set(&mut self, domain: u32, server: u32, seq: u64) {
        self.domains.insert(domain, (server, seq));
    }
}

impl fmt::Display for MariaDbGtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (domain, (server, seq))) in self.domains.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{domain}-{server}-{seq}")?;
        }
        Ok(())
    }
}

/// One past the largest transaction number a server assigns (MySQL's GNO is a signed 64-bit
/// integer).
pub const MAX_GNO: u64 = i64::MAX as u64;

/// Little-endian reads from an event body, each checked against the bytes left.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.0.len() {
            bail!("the event ends early: {n} bytes needed, {} left", self.0.len());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// MySQL's serialization-library varlen integer: the count of trailing one bits in the first
    /// byte says how many more bytes follow.
    fn varlen(&mut self) -> Result<u64> {
        let first = *self.0.first().context("the event ends early")?;
        let len = first.trailing_ones() as usize + 1;
        if len > 8 {
            self.take(1)?;
            return self.u64();
        }
        let mut raw = [0u8; 8];
        raw[..len].copy_from_slice(self.take(len)?);
        Ok(u64::from_le_bytes(raw) >> len)
    }
}

/// MariaDB's `gtid_binlog_state`: the last sequence number each server wrote in each domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MariaDbBinlogState {
    last: BTreeMap<(u32, u32), u64>,
}

impl MariaDbBinlogState {
    pub fn parse(text: &str) -> Result<Self> {
        let mut state = MariaDbBinlogState::default();
        for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let (domain, server, seq) = parse_mariadb_gtid(member)?;
            state.last.insert((domain, server), seq);
        }
        Ok(state)
    }

    /// The last sequence number `server` wrote in `domain`, if it wrote any.
    pub fn last(&self, domain: u32, server: u32) -> Option<u64> {
        self.last.get(&(domain, server)).copied()
    }
}

/// `0-1-42` -> (domain, server, seq).
fn parse_mariadb_gtid(member: &str) -> Result<(u32, u32, u64)> {
    let bad = || format!("`{member}` is not a MariaDB GTID (domain-server-seq, e.g. 0-1-42)");
    let nums: Vec<&str> = member.split('-').collect();
    let [d, s, n] = nums.as_slice() else {
        bail!("{}", bad());
    };
    Ok((d.parse().with_context(bad)?, s.parse().with_context(bad)?, n.parse().with_context(bad)?))
}

fn parse_gno(text: &str, member: &str) -> Result<u64> {
    text.trim().parse().with_context(|| format!("`{text}` in `{member}` is not a transaction number"))
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 32
        && tag.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn parse_uuid(text: &str) -> Result<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || text.len() != 36 || !text.is_ascii() {
        bail!("`{text}` is not a UUID");
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).with_context(|| format!("`{text}` is not a UUID"))?;
    }
    Ok(out)
}

fn write_uuid(f: &mut fmt::Formatter<'_>, sid: &[u8; 16]) -> fmt::Result {
    for (i, b) in sid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            f.write_str("-")?;
        }
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const U2: &str = "8a94f357-aab4-11df-86ab-c80aa9429563";

    #[test]
    fn hostile_text_is_an_error_not_a_panic() {
        // Multi-byte characters where hex digits belong; a transaction number at u64::MAX.
        assert!(parse_uuid("3e11fa47-71ca-11e1-9e33-c80aa94295é").is_err());
        assert!(GtidSet::parse(&format!("{U1}:1-18446744073709551615")).is_err());
        assert!(GtidSet::parse(&format!("{U1}:1-9223372036854775806")).is_ok());
    }

    #[test]
    fn previous_gtids_event_bodies() {
        let mut body = 2u64.to_le_bytes().to_vec();
        for (sid, intervals) in [(U1, &[(1u64, 6u64), (7, 8)][..]), (U2, &[(1, 4)][..])] {
            body.extend(parse_uuid(sid).unwrap());
            body.extend((intervals.len() as u64).to_le_bytes());
            for (s, e) in intervals {
                body.extend(s.to_le_bytes());
                body.extend(e.to_le_bytes());
            }
        }
        let set = MySqlGtidSet::from_previous_gtids(&body).unwrap();
        assert_eq!(set.to_string(), format!("{U1}:1-5:7,{U2}:1-3"));
        assert!(MySqlGtidSet::from_previous_gtids(&body[..body.len() - 1]).is_err());
        let mut empty_interval = body.clone();
        empty_interval[8 + 16 + 8..8 + 16 + 16].copy_from_slice(&6u64.to_le_bytes());
        assert!(MySqlGtidSet::from_previous_gtids(&empty_interval).is_err());
    }

    #[test]
    fn tagged_previous_gtids_event_body() {
        // MySQL 8.4: format 1 in the top byte, the UUID count in bits 8-55, a varlen tag length
        // (one byte: the length shifted left once) before each member's intervals.
        let mut body = ((1u64 << 56) | (1 << 8)).to_le_bytes().to_vec();
        body.extend(parse_uuid(U1).unwrap());
        body.extend([2 << 1, b't', b'x']);
        body.extend(1u64.to_le_bytes());
        body.extend(1u64.to_le_bytes());
        body.extend(4u64.to_le_bytes());
        let set = MySqlGtidSet::from_previous_gtids(&body).unwrap();
        assert_eq!(set.to_string(), format!("{U1}:tx:1-3"));
        body[8 + 16 + 1] = b'-';
        assert!(MySqlGtidSet::from_previous_gtids(&body).is_err(), "an invalid tag");
    }

    #[test]
    fn intervals_merge_in_any_order() {
        let sid = parse_uuid(U1).unwrap();
        let mut set = MySqlGtidSet::default();
        for (s, e) in [(10, 12), (1, 3), (5, 6), (3, 5), (12, 20), (30, 31), (6, 10)] {
            set.add_interval(sid, "", s, e);
        }
        assert_eq!(set.to_string(), format!("{U1}:1-19:30"));
    }

    #[test]
    fn mysql_set_round_trips_canonically() {
        let text = format!("{U2}:7:1-3, {U1}:1-5:11-18");
        let set = GtidSet::parse(&text).unwrap();
        assert_eq!(set.to_string(), format!("{U1}:1-5:11-18,{U2}:1-3:7"));
    }

    #[test]
    fn mysql_set_merges_adjacent_and_overlapping() {
        let mut set = MySqlGtidSet::parse(&format!("{U1}:1-5:7")).unwrap();
        let sid = parse_uuid(U1).unwrap();
        set.add(sid, "", 6);
        assert_eq!(set.to_string(), format!("{U1}:1-7"));
        set.add(sid, "", 9);
        set.add_interval(sid, "", 3, 12);
        assert_eq!(set.to_string(), format!("{U1}:1-11"));
    }

    #[test]
    fn mysql_subset_and_difference() {
        let a = MySqlGtidSet::parse(&format!("{U1}:1-10,{U2}:1-3")).unwrap();
        let b = MySqlGtidSet::parse(&format!("{U1}:1-4:7-8")).unwrap();
        assert!(b.is_subset(&a));
        assert!(!a.is_subset(&b));
        assert_eq!(a.difference(&b).to_string(), format!("{U1}:5-6:9-10,{U2}:1-3"));
        assert_eq!(b.difference(&a).to_string(), "");
    }

    #[test]
    fn mysql_tagged_gtids() {
        let set = MySqlGtidSet::parse(&format!("{U1}:1-3:Blue:1-2:7")).unwrap();
        let sid = parse_uuid(U1).unwrap();
        assert_eq!(set.to_string(), format!("{U1}:1-3:blue:1-2:7"));
        let g = Gtid::MySql { sid, tag: "blue".into(), gno: 9 };
        assert_eq!(g.to_string(), format!("{U1}:blue:9"));
    }

    #[test]
    fn mysql_set_rejects_garbage() {
        for bad in [
            "nonsense",
            U1,
            &format!("{U1}:0-3"),
            &format!("{U1}:5-3"),
            &format!("{U1}:x y:1"),
            "3e11fa47-71ca-11e1-9e33:1",
        ] {
            assert!(MySqlGtidSet::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn mariadb_position_round_trips_and_advances() {
        let mut set = GtidSet::parse("1-2-50, 0-1-100").unwrap();
        assert_eq!(set.to_string(), "0-1-100,1-2-50");
        set.add(&Gtid::MariaDb { domain: 0, server: 3, seq: 101 });
        set.add(&Gtid::MariaDb { domain: 5, server: 1, seq: 1 });
        assert_eq!(set.to_string(), "0-3-101,1-2-50,5-1-1");
    }

    #[test]
    fn mariadb_position_rejects_garbage() {
        assert!(MariaDbGtidPos::parse("0-1").is_err());
        assert!(MariaDbGtidPos::parse("0-1-x").is_err());
        assert!(MariaDbGtidPos::parse("0-1-5,0-2-6").is_err());
    }

    #[test]
    fn flavour_detection() {
        assert!(matches!(GtidSet::parse("0-1-5").unwrap(), GtidSet::MariaDb(_)));
        assert!(matches!(GtidSet::parse(&format!("{U1}:1")).unwrap(), GtidSet::MySql(_)));
    }
}
