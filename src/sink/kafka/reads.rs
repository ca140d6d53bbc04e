//! Snapshot reads a restart skips in Kafka (`sink::Reads`). While a snapshot runs, every message
//! carries `binlog_tail.read`: the record of the last read sent up to it (`sink::LastRead`).
//!
//! A partition holds a prefix of what was sent to it, and the partitions of a topic get unequally
//! far before a crash: so each partition of a table still to read skips the replayed reads sent
//! to it up to the record on its own last message of this stream, when that read is known to
//! come after the saved position (`Reads::resume_part`). A partition whose last read may come
//! before it skips nothing, and a read without a key (its partition not fixed by it) is never
//! skipped: a read may come twice, never be lost.

use std::collections::HashMap;

use anyhow::Result;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{BorrowedMessage, Headers, Message as _};

use super::{dedupe, tail};
use crate::event::Change;
use crate::position::Position;
use crate::sink::{LastRead, Reads};

/// The header naming the last snapshot read sent up to a message.
pub const HEADER: &str = "binlog_tail.read";

/// The partitions that still skip replayed reads, by topic and partition.
#[derive(Default)]
pub struct PartSkips(HashMap<(String, i32), Reads>);

impl PartSkips {
    /// From `saved` (the position the snapshot restarts from) and the record on the last message
    /// of this stream in each partition of the topics still to read.
    pub fn new(saved: Option<&Position>, found: Vec<(String, i32, Option<LastRead>)>) -> PartSkips {
        let parts = found.into_iter().map(|(topic, p, held)| ((topic, p), Reads::resume_part(saved, held)));
        PartSkips(parts.filter(|(_, reads)| reads.skipping()).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A replayed read, going to `to` (None: unkeyed): true when that partition holds it. Every
    /// partition's skip sees every read (the one it waits for may have gone elsewhere).
    pub fn skipped(&mut self, c: &Change, to: Option<(&str, i32)>) -> bool {
        let mut skip = false;
        for ((topic, p), reads) in &mut self.0 {
            let held = reads.skipped(c);
            skip |= held && to == Some((topic.as_str(), *p));
        }
        self.0.retain(|_, reads| reads.skipping());
        skip
    }

    /// A change from the stream: skips waiting for a read of its row end.
    pub fn changed(&mut self, c: &Change) {
        if self.0.is_empty() {
            return;
        }
        self.0.values_mut().for_each(|reads| reads.changed(c));
        self.0.retain(|_, reads| reads.skipping());
    }
}

/// The record on the last message of `stream` in each of `topic`'s `partitions` (None: none, or
/// one without a record).
pub fn last_reads(
    consumer: &BaseConsumer,
    stream: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<Option<LastRead>>> {
    let ours = |msg: &BorrowedMessage<'_>| {
        let headers = msg.headers()?;
        let seq = headers.iter().find(|h| h.key == dedupe::HEADER)?.value?;
        if seq.strip_prefix(stream.as_bytes())?.first() != Some(&b'/') {
            return None;
        }
        let record = headers.iter().find(|h| h.key == HEADER).and_then(|h| h.value);
        Some(record.and_then(|v| LastRead::parse(std::str::from_utf8(v).ok()?)))
    };
    let all: Vec<i32> = (0..partitions).collect();
    let found = tail::newest_each(consumer, topic, &all, dedupe::LOOKBACK, ours)?;
    Ok(found.into_iter().map(|f| f.and_then(|(_, record)| record)).collect())
}
