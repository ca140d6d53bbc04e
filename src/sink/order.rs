//! Where a message stands in the binlog order of its stream, and the name of that stream: what
//! every sink's deduplication compares (Kafka's partition tails, the Redis marker, NATS message
//! ids, the HTTP journal, snapshot reads).
//!
//! Invariant: two keys are ordered only where the binlog orders them (one MariaDB domain, one
//! MySQL source UUID and tag, or one binlog file series); anything else is `None`, never a guess.

use std::cmp::Ordering;

/// Where a message stands in the binlog order of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderKey {
    series: Series,
    index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Series {
    /// A GTID: MariaDB `domain` (`0`), or MySQL `uuid[:tag]`, and its sequence number.
    Gtid { domain: String, seq: u64 },
    /// `FILE:OFFSET` of a transaction's first message, on one server's binlog files.
    File { base: String, number: u64, offset: u64 },
}

impl OrderKey {
    /// From a transaction's origin (its GTID, or `FILE:OFFSET`) and the message's index in it.
    pub fn new(origin: &str, index: u64) -> Option<OrderKey> {
        Some(OrderKey { series: Series::parse(origin)?, index })
    }

    /// The same transaction's message at `index`.
    pub fn set_index(&mut self, index: u64) {
        self.index = index;
    }

    /// `STREAM/ORIGIN/INDEX` -> (stream, key).
    pub fn parse_header(value: &str) -> Option<(&str, OrderKey)> {
        let (stream, rest) = value.split_once('/')?;
        let (origin, index) = rest.rsplit_once('/')?;
        Some((stream, OrderKey::new(origin, index.parse().ok()?)?))
    }

    /// None when the two cannot be ordered (other GTID domains, other binlog series).
    pub fn compare(&self, other: &OrderKey) -> Option<Ordering> {
        let series = match (&self.series, &other.series) {
            (Series::Gtid { domain: a, seq: x }, Series::Gtid { domain: b, seq: y }) if a == b => x.cmp(y),
            (Series::File { base: a, number: n, offset: o }, Series::File { base: b, number: m, offset: p })
                if a == b =>
            {
                (n, o).cmp(&(m, p))
            }
            _ => return None,
        };
        Some(series.then(self.index.cmp(&other.index)))
    }
}

impl Series {
    fn parse(origin: &str) -> Option<Series> {
        // MariaDB `domain-server-seq`.
        let parts: Vec<&str> = origin.split('-').collect();
        if let [domain, server, seq] = parts.as_slice() {
            if domain.parse::<u32>().is_ok() && server.parse::<u32>().is_ok() {
                return Some(Series::Gtid { domain: domain.to_string(), seq: seq.parse().ok()? });
            }
        }
        let (head, tail) = origin.rsplit_once(':')?;
        let tail: u64 = tail.parse().ok()?;
        // MySQL `uuid:N` or `uuid:tag:N` (a UUID has four dashes; binlog file names have none).
        if head.len() >= 36 && head.as_bytes().get(8) == Some(&b'-') {
            return Some(Series::Gtid { domain: head.to_string(), seq: tail });
        }
        let (base, number) = head.rsplit_once('.')?;
        Some(Series::File { base: base.to_string(), number: number.parse().ok()?, offset: tail })
    }
}

/// 16 hex digits naming one stream: the position file's own id and the configuration (filters,
/// routing, format) that decides which message is which.
pub fn stream_name(position_id: &str, configuration: &str) -> String {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in position_id.bytes().chain([0]).chain(configuration.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(origin: &str, index: u64) -> OrderKey {
        OrderKey::new(origin, index).unwrap_or_else(|| panic!("{origin}"))
    }

    #[test]
    fn order_keys_compare_within_one_series_only() {
        assert_eq!(key("0-1-5", 3).compare(&key("0-2-5", 4)), Some(Ordering::Less));
        assert_eq!(key("0-1-6", 0).compare(&key("0-1-5", 9)), Some(Ordering::Greater));
        assert_eq!(key("0-1-5", 2).compare(&key("0-1-5", 2)), Some(Ordering::Equal));
        assert_eq!(key("1-1-5", 0).compare(&key("0-1-5", 0)), None, "other MariaDB domain");
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        assert_eq!(key(&format!("{uuid}:7"), 0).compare(&key(&format!("{uuid}:10"), 0)), Some(Ordering::Less));
        assert_eq!(key(&format!("{uuid}:blue:7"), 0).compare(&key(&format!("{uuid}:7"), 0)), None, "another tag");
        assert_eq!(key("binlog.000002:4", 0).compare(&key("binlog.000001:900", 5)), Some(Ordering::Greater));
        assert_eq!(
            key("binlog.000002:400", 0).compare(&key("binlog.000002:4000", 0)),
            Some(Ordering::Less),
            "offsets as numbers"
        );
        assert_eq!(key("other.000002:4", 0).compare(&key("binlog.000001:900", 5)), None);
        assert_eq!(key("0-1-5", 0).compare(&key("binlog.000001:900", 0)), None);
        let header = format!("abc/{uuid}:7/12");
        let (stream, k) = OrderKey::parse_header(&header).unwrap();
        assert_eq!((stream, k), ("abc", key(&format!("{uuid}:7"), 12)));
        assert!(OrderKey::parse_header("garbage").is_none());
    }

    #[test]
    fn stream_names_change_with_the_configuration() {
        let a = stream_name("p1", "include=shop.*");
        assert_eq!(a, stream_name("p1", "include=shop.*"));
        assert_ne!(a, stream_name("p1", "include=crm.*"));
        assert_ne!(a, stream_name("p2", "include=shop.*"));
        assert_eq!(a.len(), 16);
    }
}
