//! Reading a partition backwards from its end: the newest message of interest, found in windows
//! that grow from `FIRST_WINDOW` (most searches end in the first), up to a bound.
//!
//! Invariant: the answer is the message with the highest offset that `pick` accepts within the
//! bound; compaction's gaps in the offsets are read past (a window ends at its last offset, or
//! at the first message after it).

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
    mut pick: impl FnMut(&BorrowedMessage<'_>) -> Option<T>,
) -> Result<Option<(i64, T)>> {
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .with_context(|| format!("cannot read the end offsets of Kafka {topic}[{partition}]"))?;
    let bottom = low.max(high.saturating_sub(limit));
    let (mut to, mut window) = (high, FIRST_WINDOW);
    while to > bottom {
        let from = bottom.max(to - window);
        let found = in_window(consumer, topic, partition, from, to, &mut pick);
        consumer.unassign()?;
        if let Some(found) = found? {
            return Ok(Some(found));
        }
        to = from;
        window = window.saturating_mul(2);
    }
    Ok(None)
}

/// The newest message `pick` accepts at offsets `from..to`.
fn in_window<T>(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    pick: &mut impl FnMut(&BorrowedMessage<'_>) -> Option<T>,
) -> Result<Option<(i64, T)>> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
    consumer.assign(&assignment)?;
    let mut newest = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let msg = match consumer.poll(Duration::from_millis(200)) {
            None if Instant::now() > deadline => {
                bail!("reading Kafka {topic}[{partition}] (offsets {from} to {to}) timed out: the broker did not serve them")
            }
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(newest),
            Some(Err(e)) => return Err(e).with_context(|| format!("cannot read Kafka {topic}[{partition}]")),
            Some(Ok(msg)) => msg,
        };
        if msg.offset() >= to {
            return Ok(newest);
        }
        if let Some(t) = pick(&msg) {
            newest = Some((msg.offset(), t));
        }
        if msg.offset() >= to - 1 {
            return Ok(newest);
        }
    }
}
