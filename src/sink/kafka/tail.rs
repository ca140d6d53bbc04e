//! Reading partitions backwards from their ends: the newest message of interest in each, found
//! in windows that grow from `FIRST_WINDOW` (most searches end in the first), up to a bound.
//! Several partitions of one topic are read together: one assignment, one fetch per round, so a
//! topic's tails cost about as long as one partition's.
//!
//! Invariant: the answer for a partition is its message with the highest offset that `pick`
//! accepts within the bound; compaction's gaps in the offsets are read past (a window ends at
//! its last offset, or at the first message after it).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};

/// The first window read back from the end; each further one is twice as large.
const FIRST_WINDOW: i64 = 64;

/// The newest message of `topic[partition]` at most `limit` messages back from its end that
/// `pick` accepts: its offset and what `pick` made of it. An error when Kafka does not answer.
/// `consumer` must have `enable.partition.eof=true`.
pub fn newest<T>(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    limit: i64,
    pick: impl FnMut(&BorrowedMessage<'_>) -> Option<T>,
) -> Result<Option<(i64, T)>> {
    Ok(newest_each(consumer, topic, &[partition], limit, pick)?.pop().flatten())
}

/// One partition's search: the window being read is `from..to`.
struct Search<T> {
    partition: i32,
    bottom: i64,
    from: i64,
    to: i64,
    window: i64,
    /// The search is over: found, or nothing left to read.
    done: bool,
    /// The current window was read to its end.
    read: bool,
    found: Option<(i64, T)>,
}

/// `newest` for each of `partitions` (answers in their order), read together.
pub fn newest_each<T>(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    limit: i64,
    mut pick: impl FnMut(&BorrowedMessage<'_>) -> Option<T>,
) -> Result<Vec<Option<(i64, T)>>> {
    let mut searches = Vec::with_capacity(partitions.len());
    for &partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .with_context(|| format!("cannot read the end offsets of Kafka {topic}[{partition}]"))?;
        let bottom = low.max(high.saturating_sub(limit));
        let from = bottom.max(high - FIRST_WINDOW);
        let done = high <= bottom;
        searches.push(Search {
            partition,
            bottom,
            from,
            to: high,
            window: FIRST_WINDOW,
            done,
            read: false,
            found: None,
        });
    }
    loop {
        let mut assignment = TopicPartitionList::new();
        for s in searches.iter_mut().filter(|s| !s.done) {
            s.read = false;
            assignment.add_partition_offset(topic, s.partition, Offset::Offset(s.from))?;
        }
        if assignment.count() == 0 {
            return Ok(searches.into_iter().map(|s| s.found).collect());
        }
        consumer.assign(&assignment)?;
        let windows = in_windows(consumer, topic, &mut searches, &mut pick);
        consumer.unassign()?;
        windows?;
        for s in searches.iter_mut().filter(|s| !s.done) {
            s.done = s.found.is_some() || s.from <= s.bottom;
            s.window = s.window.saturating_mul(2);
            s.to = s.from;
            s.from = s.bottom.max(s.to - s.window);
        }
    }
}

/// Reads the assigned windows (`from..to` of each search not `done`) to their ends.
fn in_windows<T>(
    consumer: &BaseConsumer,
    topic: &str,
    searches: &mut [Search<T>],
    pick: &mut impl FnMut(&BorrowedMessage<'_>) -> Option<T>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let reading = |s: &Search<T>| !s.done && !s.read;
    while let Some(waiting) = searches.iter().find(|s| reading(s)) {
        let msg = match consumer.poll(Duration::from_millis(200)) {
            None if Instant::now() > deadline => bail!(
                "reading Kafka {topic}[{}] (offsets {} to {}) timed out: the broker did not serve them",
                waiting.partition,
                waiting.from,
                waiting.to
            ),
            None => continue,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                searches.iter_mut().filter(|s| s.partition == p).for_each(|s| s.read = true);
                continue;
            }
            Some(Err(e)) => return Err(e).with_context(|| format!("cannot read Kafka {topic}")),
            Some(Ok(msg)) => msg,
        };
        let Some(s) = searches.iter_mut().find(|s| s.partition == msg.partition() && reading(s)) else {
            continue;
        };
        if msg.offset() >= s.to {
            s.read = true;
            continue;
        }
        if let Some(t) = pick(&msg) {
            s.found = Some((msg.offset(), t));
        }
        s.read = msg.offset() >= s.to - 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    use super::*;

    /// Partitions read together each get their own newest match: one found in the first window,
    /// one only further back (past others' messages), one with no match within the bound, and an
    /// empty one.
    #[test]
    fn each_partition_gets_its_own_newest_match() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 4, 1).unwrap();
        let config = || {
            let mut c = rdkafka::ClientConfig::new();
            c.set("bootstrap.servers", cluster.bootstrap_servers());
            c
        };
        let producer: BaseProducer = config().create().unwrap();
        // Partition p: `ours-p-i` then `other` messages after it.
        for (partition, ours, others) in [(0, 5, 3), (1, 300, 200), (2, 0, 50)] {
            for i in 0..ours + others {
                let value = if i < ours { format!("ours-{partition}-{i}") } else { "other".into() };
                producer.send(BaseRecord::<(), _>::to("t").partition(partition).payload(&value)).unwrap();
            }
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let consumer: BaseConsumer =
            config().set("group.id", "tail-test").set("enable.partition.eof", "true").create().unwrap();
        let ours = |m: &BorrowedMessage<'_>| {
            let v = std::str::from_utf8(m.payload()?).ok()?;
            v.starts_with("ours").then(|| v.to_string())
        };
        let found = newest_each(&consumer, "t", &[0, 1, 2, 3], 1_000, ours).unwrap();
        assert_eq!(found, [Some((4, "ours-0-4".to_string())), Some((299, "ours-1-299".to_string())), None, None]);
        // The bound: partition 1's match is 201 messages back from its end.
        assert_eq!(newest(&consumer, "t", 1, 200, ours).unwrap(), None);
        assert_eq!(newest(&consumer, "t", 1, 201, ours).unwrap(), Some((299, "ours-1-299".to_string())));
    }
}
