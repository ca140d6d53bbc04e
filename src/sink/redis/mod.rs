//! The Redis Streams sink: every event an entry (`XADD`) of the stream key its table (or outbox
//! topic) maps to, its field `value` the JSON line `dump` prints; entries written in batches,
//! each batch atomically with this stream's "delivered up to" marker.
//!
//! Why a marker, not deterministic entry ids: Redis refuses an id at or below a stream's last, so
//! ids made of binlog positions would drop replays too, but only per key, and they would tie
//! every stream's ids to one server's binlog (a failover, `--resume-by file`, several GTID
//! domains). The marker (a hash at `binlog_tail:delivered:<stream name>`) names the last batch
//! applied and, per binlog series (GTID domain or source, or binlog file series), the order key
//! (`sink::order::OrderKey`) of the last entry delivered, written by the same atomic
//! script as the batch's entries (`writer`). On start, each replayed entry at or before the
//! marker is skipped, whatever position store is used and however old the saved position is.
//!
//! Why one Lua script per batch rather than `MULTI`/`EXEC`: inside `MULTI`/`EXEC` a command that
//! fails when it runs (`WRONGTYPE`: a key holding another type) does not undo the others, so the
//! marker would move past entries never written. The script checks the marker and every key's
//! type before its first write, and Redis refuses a script's first write, not a later one, when
//! memory is full: a batch lands whole or not at all. Like `MULTI`, it needs its keys in one
//! slot, so Redis Cluster is refused (`preflight`). The client is `redis`'s blocking one on one
//! writer thread: batches are applied one at a time in order, no async runtime is needed, and
//! building the next batch overlaps with Redis applying the current one.
//!
//! Invariants:
//! - A transaction counts as acknowledged only when the batch holding its end, and every batch
//!   before it, is applied; only then may the position move past it.
//! - A batch is applied whole or not at all, in the order cut, after the batch it names as its
//!   predecessor (`writer`): Redis never holds an entry of this stream after a gap, so the marker
//!   proves every entry before it is there. A batch is cut at a transaction's end once it holds
//!   `BATCH_ROWS` entries or `BATCH_BYTES`, or whenever the writer is idle; inside a transaction
//!   only past `MAX_BATCH_BYTES` (a huge transaction), which keeps memory bounded and stays exact
//!   (the marker names entries, not transactions).
//! - Snapshot reads carry no order key (reads of several tables share a position): the marker's
//!   `read` names the last one applied, and a restart skips the replayed reads up to it
//!   (`sink::Reads`).
//! - Memory is bounded: at most `QUEUE` batches wait for the writer, one is applied, one built.
//! - A value larger than Redis takes (`proto-max-bulk-len`) stops the run with the fix before
//!   anything of its batch is sent.
//! - After a stop request, waiting lasts while Redis applies batches (`Shutdown::stop_waiting`).

mod batch;
pub mod config;
pub mod marker;
pub mod preflight;
mod writer;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use super::{event_context, LastRead, Reads, Sink, TxIds};
use crate::event::{Change, Ddl, Op};
use crate::format::Encoder;
use crate::metrics::Metrics;
use crate::outbox::Message;
use crate::position::{Position, Resume};
use crate::shutdown::{Shutdown, Stopped};
use crate::sink::order::OrderKey;
use batch::Batch;
use config::RedisSettings;
use writer::{Outcome, Writer};

/// Entries of a batch cut at a transaction's end.
const BATCH_ROWS: usize = 2000;
/// Bytes of a batch cut at a transaction's end.
const BATCH_BYTES: usize = 2 << 20;
/// Bytes past which a batch is cut inside a transaction.
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Batches waiting for the writer at most.
const QUEUE: usize = 2;

/// A batch handed to the writer.
struct Sent {
    n: u64,
    end: Option<Resume>,
    entries: usize,
    at: Instant,
}

pub struct RedisSink {
    settings: RedisSettings,
    encoder: Encoder,
    /// Per binlog series, the newest entry delivered or in a cut batch, with its `ORIGIN/INDEX`:
    /// at start, what the marker says Redis holds. Replayed entries at or before it are skipped.
    through: Vec<(OrderKey, String)>,
    /// Snapshot reads: the last one handed over, and the replayed ones Redis holds.
    reads: Reads,
    /// Entries not yet in a batch handed to the writer.
    batch: Batch,
    next_batch: u64,
    sent: VecDeque<Sent>,
    queue: Option<SyncSender<Batch>>,
    outcomes: Receiver<Outcome>,
    writer: Option<std::thread::JoinHandle<()>>,
    quit: Arc<std::sync::atomic::AtomicBool>,
    /// Why the writer stopped, once it has.
    failed: Option<Outcome>,
    acked: Option<Resume>,
    /// When Redis last applied a batch (or the sink started).
    last_ack: Instant,
    /// The open transaction's entry ids and order key.
    tx: TxIds,
    tx_key: Option<OrderKey>,
    /// The index of the open transaction's last entry put in `batch`.
    tx_last: Option<u64>,
    skipped: u64,
    max_bulk: usize,
    value: Vec<u8>,
    shutdown: Arc<Shutdown>,
    metrics: Option<Metrics>,
}

impl RedisSink {
    /// Connects (retrying while Redis cannot be reached), checks the server, and reads what the
    /// marker of `stream` (the name of the position file and configuration) says Redis holds;
    /// `position` is the id of the position (file or Kafka) it continues, `saved` that position.
    pub fn new(
        settings: RedisSettings,
        encoder: Encoder,
        shutdown: Arc<Shutdown>,
        (stream, position, saved): (String, &str, Option<&Position>),
        metrics: Option<Metrics>,
    ) -> Result<RedisSink> {
        let (writer, found) = Writer::start(&settings, (&stream, position), shutdown.clone(), metrics.clone())?;
        let through = found
            .through
            .lines()
            .filter_map(|line| {
                let (_, key) = OrderKey::parse_header(&format!("{stream}/{line}"))?;
                Some((key, line.to_string()))
            })
            .collect();
        let (queue, batches) = mpsc::sync_channel(QUEUE);
        let (outcomes_tx, outcomes) = mpsc::channel();
        let quit = writer.quit.clone();
        let thread = std::thread::Builder::new()
            .name("redis".into())
            .spawn(move || writer.run(batches, outcomes_tx))
            .context("cannot start the Redis writer thread")?;
        Ok(RedisSink {
            settings,
            encoder,
            through,
            reads: Reads::resume(saved, LastRead::parse(&found.read)),
            batch: Batch::default(),
            next_batch: 0,
            sent: VecDeque::new(),
            queue: Some(queue),
            outcomes,
            writer: Some(thread),
            quit,
            failed: None,
            acked: None,
            last_ack: Instant::now(),
            tx: TxIds::default(),
            tx_key: None,
            tx_last: None,
            skipped: 0,
            max_bulk: found.max_bulk,
            value: Vec::with_capacity(4096),
            shutdown,
            metrics,
        })
    }

    /// Adds one entry to `key`, or skips it when Redis already holds it. `origin` names the
    /// transaction (empty for snapshot reads: never skipped).
    fn push(&mut self, key: &str, origin: &str, fields: &[(&[u8], &[u8])]) -> Result<()> {
        let (origin, index) = self.tx.next(|| origin.to_string());
        if index == 0 {
            self.tx_key = OrderKey::new(origin, 0);
        }
        let origin_empty = origin.is_empty();
        if let Some(k) = self.tx_key.as_mut().filter(|_| !origin_empty) {
            k.set_index(index);
            if self.through.iter().any(|(t, _)| k.compare(t).is_some_and(|o| o.is_le())) {
                self.skipped += 1;
                return Ok(());
            }
            self.tx_last = Some(index);
        }
        if self.skipped > 0 {
            tracing::info!("Redis dedupe: {} replayed entries were already in Redis and skipped", self.skipped);
            self.skipped = 0;
        }
        if let Some((name, value)) = fields.iter().find(|(_, v)| v.len() > self.max_bulk) {
            bail!(
                "the entry's field {} for Redis key {key} has {} bytes, more than Redis takes (proto-max-bulk-len {}): raise proto-max-bulk-len (CONFIG SET proto-max-bulk-len ...), or drop the large column with --drop-column",
                String::from_utf8_lossy(name),
                value.len(),
                self.max_bulk
            );
        }
        self.batch.push(key, fields);
        if self.batch.bytes() >= MAX_BATCH_BYTES {
            self.cut()?;
        }
        Ok(())
    }

    /// The open transaction's last entry in `batch` becomes its series' `through`.
    fn settle(&mut self) {
        let (Some(index), Some(key), Some(origin)) = (self.tx_last.take(), &self.tx_key, self.tx.origin()) else {
            return;
        };
        self.through.retain(|(t, _)| t.compare(key).is_none());
        let mut key = key.clone();
        key.set_index(index);
        self.through.push((key, format!("{origin}/{index}")));
    }

    /// Hands `batch` to the writer (waiting while its queue is full).
    fn cut(&mut self) -> Result<()> {
        self.settle();
        if self.batch.entries == 0 {
            // Nothing to write: its end is acknowledged with the batch before it.
            if let Some(end) = self.batch.end.take() {
                match self.sent.back_mut() {
                    Some(last) => last.end = Some(end),
                    None => self.acked = Some(end),
                }
            }
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.batch);
        batch.n = self.next_batch;
        self.next_batch += 1;
        batch.through = self.through.iter().map(|(_, text)| text.as_str()).collect::<Vec<_>>().join("\n");
        batch.read = self.reads.record().unwrap_or_default().to_string();
        self.sent.push_back(Sent { n: batch.n, end: batch.end.clone(), entries: batch.entries, at: Instant::now() });
        if let Some(m) = &self.metrics {
            m.redis().sent(batch.entries);
        }
        let queue = self.queue.clone().expect("the writer's queue");
        loop {
            match queue.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    batch = back;
                    self.wait(Some(Duration::from_millis(100)))?;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.wait(Some(Duration::from_secs(1)))?;
                    return Err(self.failure());
                }
            }
        }
    }

    /// Takes the writer's outcomes (waiting up to `wait` for the first); its failure is the error.
    fn wait(&mut self, wait: Option<Duration>) -> Result<()> {
        let mut first = match wait {
            Some(d) if !self.sent.is_empty() => self.outcomes.recv_timeout(d).ok(),
            _ => None,
        };
        while let Some(outcome) = first.take().or_else(|| self.outcomes.try_recv().ok()) {
            match outcome {
                Outcome::Applied(n) => {
                    let done = self.sent.pop_front().expect("a batch sent");
                    debug_assert_eq!(done.n, n);
                    self.last_ack = Instant::now();
                    if let Some(end) = done.end {
                        self.acked = Some(end);
                    }
                    if let Some(m) = &self.metrics {
                        m.redis().acknowledged(done.entries, Some(done.at.elapsed()));
                    }
                }
                failed => self.failed = Some(failed),
            }
        }
        if self.failed.is_some() {
            return Err(self.failure());
        }
        self.check_stop()
    }

    /// Why the writer stopped.
    fn failure(&self) -> anyhow::Error {
        match &self.failed {
            Some(Outcome::Failed(text)) => anyhow!(text.clone()),
            Some(Outcome::Stopped(why)) => Stopped(format!("waiting for Redis ({why})")).into(),
            _ => anyhow!("the Redis writer stopped"),
        }
    }

    /// Gives up waiting for Redis once a stop was requested and Redis stalled.
    fn check_stop(&self) -> Result<()> {
        let Some(why) = self.shutdown.stop_waiting(self.last_ack) else { return Ok(()) };
        let waiting: usize = self.sent.iter().map(|s| s.entries).sum();
        bail!(
            "stopped ({why}) with {waiting} entries not applied by Redis; the position covers only applied transactions, the rest is sent again after a restart"
        )
    }
}

impl Drop for RedisSink {
    fn drop(&mut self) {
        // The writer ends after its current try: no batch of this sink lands after it is gone.
        self.quit.store(true, Ordering::SeqCst);
        self.queue = None;
        if let Some(thread) = self.writer.take() {
            let _ = thread.join();
        }
    }
}

impl Sink for RedisSink {
    fn change(&mut self, change: &Change) -> Result<()> {
        let t = &change.table;
        let key = self.settings.key(&t.db, &t.name);
        let origin = match change.op {
            Op::Read if self.reads.skipped(change) => return Ok(()),
            Op::Read => String::new(),
            _ => {
                self.reads.changed(change);
                crate::event::origin(change.gtid.as_deref(), &change.file, change.offset)
            }
        };
        for &part in self.encoder.parts(change) {
            let mut value = std::mem::take(&mut self.value);
            value.clear();
            self.encoder.write_value(change, part, &mut value);
            let pushed = self.push(&key, &origin, &[(b"value", &value)]);
            self.value = value;
            pushed.with_context(|| event_context(change))?;
        }
        Ok(())
    }

    fn ddl(&mut self, ddl: &Ddl) -> Result<()> {
        let mut value = Vec::new();
        ddl.write_json(&mut value);
        let origin = crate::event::origin(ddl.gtid.as_deref(), &ddl.file, ddl.offset);
        let key = self.settings.ddl_key.clone();
        self.push(&key, &origin, &[(b"value", &value)])
    }

    fn message(&mut self, msg: &Message) -> Result<()> {
        let mut fields: Vec<(&[u8], &[u8])> = vec![(b"value", &msg.value)];
        if let Some(key) = &msg.key {
            fields.push((b"key", key));
        }
        fields.extend(msg.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())));
        self.push(&msg.topic, &msg.origin, &fields)
    }

    fn commit(&mut self, resume: &Resume) -> Result<()> {
        self.reads.commit(resume);
        self.settle();
        self.batch.end = Some(resume.clone());
        self.tx.end();
        self.tx_key = None;
        self.wait(None)?;
        if self.sent.is_empty() || self.batch.entries >= BATCH_ROWS || self.batch.bytes() >= BATCH_BYTES {
            self.cut()?;
        }
        Ok(())
    }

    fn acknowledged(&mut self) -> Result<Option<Resume>> {
        // Also after a failure: that is the position to save and to continue from.
        let _ = self.wait(None);
        if self.sent.is_empty() && self.batch.entries == 0 {
            if let Some(end) = self.batch.end.take() {
                self.acked = Some(end);
            }
        }
        Ok(self.acked.clone())
    }

    fn flush(&mut self) -> Result<()> {
        if self.batch.entries > 0 || self.batch.end.is_some() {
            self.cut()?;
        }
        while !self.sent.is_empty() {
            self.wait(Some(Duration::from_millis(100)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Faults the integration tests cannot time: a redis-server SIGKILLed while batches are in
    //! flight, so the writer cannot know whether the last one was applied.
    use std::process::Command;

    use super::*;
    use crate::sink::fault_test::{assert_in_order, send_through_a_kill, Server};

    /// A redis-server with `appendfsync always`.
    fn start_server(port: u16, dir: &std::path::Path) -> Server {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--appendonly", "yes"]);
        cmd.args(["--appendfsync", "always", "--save", "", "--dir", dir.to_str().unwrap()]);
        Server::start(cmd, || {
            Command::new("redis-cli").args(["-p", &port.to_string(), "ping"]).output().unwrap().stdout == b"PONG\n"
        })
    }

    #[test]
    fn a_server_killed_with_batches_in_flight_leaves_no_gap_and_no_duplicate() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let server = start_server(port, dir.path());
        let url = format!("redis://127.0.0.1:{port}");
        let metrics = Metrics::new();
        let settings = config::test_settings(&url);
        let encoder = Encoder::new(Default::default());
        let names = ("t".to_string(), "p", None);
        let mut sink = RedisSink::new(settings, encoder, Shutdown::new(), names, Some(metrics.clone())).unwrap();
        let total = 60_000;
        let _restarted = send_through_a_kill(&mut sink, "orders", total, server, || start_server(port, dir.path()));
        let retries = metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("binlog_tail_redis_retries_total ")?.parse::<u64>().ok());
        assert!(retries.is_some_and(|n| n > 0), "the server died while batches were in flight: {retries:?}");
        // Read back with redis-cli, not the sink's client.
        let out =
            Command::new("redis-cli").args(["-p", &port.to_string(), "--raw", "XRANGE", "orders", "-", "+"]).output();
        let text = String::from_utf8(out.unwrap().stdout).unwrap();
        let got: Vec<u32> =
            text.lines().filter_map(|l| l.strip_prefix("{\"n\":")?.strip_suffix('}')?.parse().ok()).collect();
        let expected: Vec<u32> = (0..total).collect();
        assert_in_order(&got, &expected, "entries");
    }
}
