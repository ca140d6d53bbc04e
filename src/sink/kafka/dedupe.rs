//! No duplicates after a restart, without Kafka transactions: before the first message to a
//! topic, read the tails of its partitions (together), and skip every replayed message a
//! partition already holds.
//!
//! Every message carries a `binlog_tail.seq` header: `STREAM/ORIGIN/INDEX`. STREAM names one
//! position file with one configuration; ORIGIN is the transaction's GTID (or, without GTIDs, the
//! `FILE:OFFSET` of its first message); INDEX counts the messages of the transaction in the order
//! they were sent. A replayed message is "already there" when the partition's last message of the
//! same STREAM has an order key at or after it.
//!
//! Invariants that make this exact:
//! - One process sends in binlog order, one partition's messages in order, and librdkafka's
//!   `enable.gapless.guarantee` lets no message land after one that failed: so a partition's last
//!   message proves every earlier message to that partition is there.
//! - The partition of a message is computed here with the producer's partitioner (librdkafka's
//!   `consistent_random`: CRC32 of the key; Java's `murmur2_random`), so the tail read is the one
//!   the message goes to. Unkeyed messages go by the CRC32 of their order key, deterministically.
//! - Keys are compared only where the order is known: the same MariaDB domain or MySQL source
//!   UUID, or, without GTIDs, the same binlog file series. Anything else is not skipped
//!   (a duplicate, never a loss). A new position file or a changed configuration is a new STREAM:
//!   nothing of an older stream is ever taken as proof.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::ClientConfig;

use super::{reads, tail};
use crate::sink::order::OrderKey;
use crate::sink::LastRead;
use crate::text::Escaped;

/// The header every message carries.
pub const HEADER: &str = "binlog_tail.seq";

/// How far back a tail is searched for this stream's last message past other producers' ones
/// (read in growing windows: most searches end within the last 64 messages).
pub(super) const LOOKBACK: i64 = 16_384;

/// The partitioners whose choice can be computed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioner {
    /// librdkafka's default (`consistent_random`, `consistent`): CRC32 of the key.
    Crc32,
    /// The Java client's default (`murmur2_random`, `murmur2`).
    Murmur2,
}

impl Partitioner {
    /// From the `partitioner` property, if set.
    pub fn from_property(value: Option<&str>) -> Result<Partitioner> {
        match value {
            None | Some("consistent_random" | "consistent") => Ok(Partitioner::Crc32),
            Some("murmur2_random" | "murmur2") => Ok(Partitioner::Murmur2),
            Some(other) => bail!(
                "-X partitioner={other}: --kafka-dedupe needs to know which partition a message goes to; use consistent_random (the default), murmur2_random, or --kafka-dedupe off"
            ),
        }
    }

    /// The partition of a message with `key` (or, unkeyed, with this order `fallback`).
    pub fn partition(self, key: Option<&[u8]>, fallback: &[u8], partitions: i32) -> i32 {
        let n = partitions.max(1) as u32;
        let bytes = key.filter(|k| !k.is_empty()).unwrap_or(fallback);
        let hash = match self {
            Partitioner::Crc32 => crc32fast::hash(bytes),
            Partitioner::Murmur2 => murmur2(bytes) & 0x7fff_ffff,
        };
        (hash % n) as i32
    }
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`, seed 0x9747b28c).
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    match rest.len() {
        3 => {
            h ^= u32::from(rest[2]) << 16;
            h ^= u32::from(rest[1]) << 8;
            h ^= u32::from(rest[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(rest[1]) << 8;
            h ^= u32::from(rest[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(rest[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// What is known of one topic: its partition count and, per partition once read, the order key
/// of this stream's last message there.
struct Topic {
    partitions: i32,
    tails: HashMap<i32, Option<OrderKey>>,
    skipped: u64,
    /// Partitions that may still hold a replayed message: not read yet, or not passed yet.
    open: i32,
}

/// Partition tails, read after a (re)start before the first message to a topic, all of the
/// topic's partitions at once (one fetch serves them all). Lookups answer None while Kafka cannot
/// be reached; the caller waits and asks again, as it does when sending.
pub struct Tails {
    stream: String,
    /// The stream is new: none of its messages can be in Kafka, so no tail is read.
    new: bool,
    consumer: BaseConsumer,
    topics: HashMap<String, Topic>,
    /// The topic asked for last, its partition count, and whether none of its partitions can
    /// hold a replayed message any more: rows come in runs of one table, so most messages are
    /// answered by comparing a name, without hashing it.
    last: (String, i32, bool),
}

impl Tails {
    /// `config`: the consumer settings (`KafkaSettings::consumer_config`).
    pub fn new(stream: String, mut config: ClientConfig) -> Result<Tails> {
        // The windows read are already there: a fetch that finds nothing new (a partition's end)
        // must not hold the next window back by the default half second.
        config
            .set("group.id", "binlog-tail-tail-reader")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "10");
        let consumer = config.create().context("cannot create the Kafka client that reads partition tails")?;
        Ok(Tails { stream, new: false, consumer, topics: HashMap::new(), last: (String::new(), 0, false) })
    }

    /// Says that the stream is new (an id never used before), which spares reading tails past
    /// other streams' messages: up to `LOOKBACK` messages per partition.
    pub fn new_stream(&mut self) {
        self.new = true;
    }

    /// The partition count of `topic`.
    pub fn partitions(&mut self, topic: &str) -> Result<Option<i32>> {
        if self.last.0 == topic {
            return Ok(Some(self.last.1));
        }
        if let Some(t) = self.topics.get(topic) {
            let (partitions, done) = (t.partitions, t.open == 0);
            self.remember(topic, partitions, done);
            return Ok(Some(partitions));
        }
        let meta = match self.consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(meta) => meta,
            Err(e) => {
                tracing::debug!("reading the metadata of Kafka topic {}: {e}", Escaped(topic));
                return Ok(None);
            }
        };
        let partitions = meta.topics().first().map(|t| t.partitions().len() as i32).unwrap_or(0);
        if partitions == 0 {
            bail!("Kafka topic {} does not exist (or has no partitions): create the topic (the broker does not create topics automatically), or route with --kafka-topic", Escaped(topic));
        }
        self.topics
            .insert(topic.to_string(), Topic { partitions, tails: HashMap::new(), skipped: 0, open: partitions });
        self.remember(topic, partitions, false);
        Ok(Some(partitions))
    }

    fn remember(&mut self, topic: &str, partitions: i32, done: bool) {
        self.last.0.clear();
        self.last.0.push_str(topic);
        (self.last.1, self.last.2) = (partitions, done);
    }

    /// The record of the last snapshot read on each partition's last message of this stream
    /// (`reads::last_reads`); None while Kafka cannot be reached.
    pub fn last_reads(&mut self, topic: &str, partitions: i32) -> Result<Option<Vec<Option<LastRead>>>> {
        if self.new {
            return Ok(Some(vec![None; partitions as usize]));
        }
        match reads::last_reads(&self.consumer, &self.stream, topic, partitions) {
            Ok(found) => Ok(Some(found)),
            Err(e) => {
                tracing::debug!("{e:#}");
                Ok(None)
            }
        }
    }

    /// True when the partition already holds the message at `key`: it is skipped.
    pub fn holds(&mut self, topic: &str, partition: i32, key: &OrderKey) -> Result<Option<bool>> {
        if self.new || (self.last.2 && self.last.0 == topic) {
            return Ok(Some(false));
        }
        let t = self.topics.get(topic).expect("partitions() was asked first");
        if !t.tails.contains_key(&partition) {
            // Every partition of the topic not read yet, together: about the time of one.
            let unread: Vec<i32> = (0..t.partitions).filter(|p| !t.tails.contains_key(p)).collect();
            let tails = match read_tails(&self.consumer, &self.stream, topic, &unread) {
                Ok(tails) => tails,
                Err(e) => {
                    tracing::debug!("{e:#}");
                    return Ok(None);
                }
            };
            let t = self.topics.get_mut(topic).expect("present");
            for (p, tail) in unread.into_iter().zip(tails) {
                match &tail {
                    Some(k) => tracing::debug!("Kafka {topic}[{p}] ends at {k:?} of this stream"),
                    None => t.open -= 1,
                }
                t.tails.insert(p, tail);
            }
        }
        let t = self.topics.get_mut(topic).expect("present");
        let held =
            t.tails[&partition].as_ref().is_some_and(|tail| key.compare(tail).is_some_and(|o| o != Ordering::Greater));
        if held {
            t.skipped += 1;
        } else if t.tails.get(&partition).is_some_and(Option::is_some) {
            // The first message past the tail: from here on the partition gets everything.
            t.tails.insert(partition, None);
            t.open -= 1;
            if t.skipped > 0 {
                tracing::info!(
                    "Kafka dedupe: {} replayed messages of topic {topic} were already there and skipped",
                    t.skipped
                );
            }
        }
        if self.last.0 == topic {
            self.last.2 = t.open == 0;
        }
        Ok(Some(held))
    }
}

/// The order key of this stream's last message in each of `partitions`, looking back past
/// messages of other producers (or other streams) at most `LOOKBACK` messages.
fn read_tails(consumer: &BaseConsumer, stream: &str, topic: &str, partitions: &[i32]) -> Result<Vec<Option<OrderKey>>> {
    let ours = |msg: &BorrowedMessage<'_>| {
        let value = msg.headers()?.iter().find(|x| x.key == HEADER)?.value?;
        let (s, key) = OrderKey::parse_header(std::str::from_utf8(value).ok()?)?;
        (s == stream).then_some(key)
    };
    let tails = tail::newest_each(consumer, topic, partitions, LOOKBACK, ours)?;
    Ok(tails.into_iter().map(|t| t.map(|(_, key)| key)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_match_the_clients_partitioners() {
        // Kafka's Java client: murmur2 of "21" is -973932308 (org.apache.kafka.common.utils.UtilsTest).
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            Partitioner::Crc32.partition(Some(b"{\"id\":1}"), b"x", 3),
            (crc32fast::hash(b"{\"id\":1}") % 3) as i32
        );
        assert_eq!(
            Partitioner::Crc32.partition(None, b"0-1-5/0", 3),
            Partitioner::Crc32.partition(None, b"0-1-5/0", 3)
        );
        assert!(Partitioner::from_property(Some("random")).is_err());
    }
}
