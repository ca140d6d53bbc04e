//! The Kafka sink: at-least-once, ordered delivery, acknowledged per transaction.
//!
//! Invariants:
//! - A transaction counts as acknowledged only when every message of it, and of every earlier
//!   transaction, was acknowledged by the brokers; only then may the position move past it.
//! - Retriable failures (broker down, leader change, timeouts) are retried by librdkafka without a
//!   time limit. A message Kafka refuses (no topic, no permission, too large) stops the tool,
//!   naming the event and the fix: a new producer would have it refused again.
//! - A fatal producer error (librdkafka's idempotence or gapless guarantee broke: a sequence gap,
//!   a lost producer id) is a `Restart`: the messages it took down with it are no refusals, what
//!   Kafka acknowledged before it stays acknowledged, and a new producer, reading the partition
//!   tails again, sends the rest. Noticing it waits at most `FATAL_DRAIN`.
//! - Memory is bounded: when the producer queue is full, `send` waits (and with it the binlog
//!   reader). In-flight tracking is one counter per transaction, never one entry per row.
//! - Per message, nothing is allocated here (buffers are reused; the order header's transaction
//!   part is written once per transaction): what a message costs beyond that is librdkafka's, and
//!   it grows with the headers (`--kafka-headers`).
//! - After a restart, messages a partition already holds are not sent again (`dedupe`), nor
//!   are the snapshot reads it holds (`reads`).
//! - After a stop request, waiting lasts while the brokers acknowledge: it ends once the shutdown
//!   grace passed without an acknowledgement. What was not acknowledged then is not in the
//!   position, and is sent again after a restart.
//! - Why the brokers do not acknowledge (librdkafka's connection and broker errors) is logged at
//!   the default level, each distinct message at most once per `ERROR_REPEAT`; no text from
//!   librdkafka is printed before the values of `-X` properties are taken out of it.

pub mod config;
pub mod dedupe;
mod latency;
mod reads;
mod route;
pub mod tail;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::{Reads, Sink};
use crate::error::Restart;
use crate::event::{push_origin, Change, Ddl, Op};
use crate::format::Encoder;
use crate::metrics::Metrics;
use crate::outbox::Message;
use crate::position::{Position, Resume};
use crate::shutdown::Shutdown;
use crate::sink::order::OrderKey;
use crate::text::Escaped;
use config::{HeaderMode, KafkaSettings};
use dedupe::{Partitioner, Tails};
use latency::AckLatency;
use reads::PartSkips;
use route::{table_topic, Router};

/// How often the same librdkafka error is logged again while it persists.
const ERROR_REPEAT: Duration = Duration::from_secs(30);

/// How long a producer that hit a fatal error gets to report the messages it still had (its
/// queue is purged at once, requests in flight are answered within moments): their deliveries
/// move the position on, and a broker's refusal among them says a restart cannot help.
const FATAL_DRAIN: Duration = Duration::from_secs(5);

/// How many messages are sent between two servings of delivery reports.
const SERVE_EVERY: u32 = 512;

/// A failed delivery, as reported to the user.
struct Failure {
    text: String,
    /// It failed with the producer, not for what it is (`collateral`).
    collateral: bool,
}

/// Delivered messages, as runs of one transaction: acknowledgements come per partition, in
/// batches, so a run holds many messages and tracking them allocates nothing per message.
struct Acks {
    /// (transaction sequence number, messages, when the last of them was acknowledged).
    runs: Vec<(u64, u64, Instant)>,
    /// When the brokers last acknowledged a message (or the producer was created).
    last: Instant,
}

/// Delivery reports and client errors, collected while `poll` runs on the sink's thread.
struct Reports {
    acks: Mutex<Acks>,
    /// Delivery reports served so far (tells `serve` when none was ready).
    served: AtomicU64,
    /// The first failed delivery, unless a refused one follows collateral ones: that says why.
    failure: Mutex<Option<Failure>>,
    /// The latest client error (broker down, connection refused, authentication failed).
    last_error: Mutex<Option<String>>,
    /// When each distinct client error was last logged.
    logged: Mutex<HashMap<String, Instant>>,
    /// Takes `-X` values out of librdkafka's text.
    redact: config::Redactor,
    metrics: OnceLock<Metrics>,
}

impl ClientContext for Reports {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        config::log_librdkafka("", level, fac, &self.redact.apply(message));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let reason = self.redact.apply(reason);
        // The same error differs only in its "(after 12ms in state CONNECT)" tail.
        let kind = reason.split(" (after ").next().unwrap_or(&reason).to_string();
        let now = Instant::now();
        let mut logged = self.logged.lock().expect("not poisoned");
        if logged.get(&kind).is_none_or(|at| now.duration_since(*at) >= ERROR_REPEAT) {
            logged.insert(kind, now);
            let code = error.rdkafka_error_code().map(|c| format!(" ({c})")).unwrap_or_default();
            tracing::warn!("Kafka: {reason}{code}; retrying, the position waits for acknowledgements");
        }
        *self.last_error.lock().expect("not poisoned") = Some(reason);
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        self.served.fetch_add(1, Ordering::Relaxed);
        let refused = matches!(result, Err((err, _)) if !collateral(err));
        if let Some(m) = self.metrics.get() {
            let (Ok(msg) | Err((_, msg))) = result;
            // What a failed producer took down with it is sent again: not refused for good.
            m.kafka_settled(msg.payload_len(), !refused);
        }
        match result {
            Ok(_) => {
                let now = Instant::now();
                let mut acks = self.acks.lock().expect("not poisoned");
                match acks.runs.last_mut() {
                    Some((s, n, at)) if *s == seq as u64 => (*n, *at) = (*n + 1, now),
                    _ => acks.runs.push((seq as u64, 1, now)),
                }
                acks.last = now;
            }
            Err((err, msg)) => {
                let header = |name: &str| {
                    msg.headers()
                        .and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                };
                // As much as the message's headers tell (`--kafka-headers`).
                let what = match (header("db"), header("table"), header("pos"), header("id")) {
                    (Some(db), Some(table), Some(pos), _) => format!("the event of `{db}`.`{table}` at {pos}"),
                    (.., Some(id)) => format!("the event {id}"),
                    _ => "a message".to_string(),
                };
                let mut failure = self.failure.lock().expect("not poisoned");
                if failure.as_ref().is_none_or(|f| f.collateral && refused) {
                    let text = format!(
                        "Kafka refused {} for topic {}: {err}{}",
                        Escaped(&what),
                        Escaped(msg.topic()),
                        hint(err)
                    );
                    *failure = Some(Failure { text, collateral: !refused });
                }
            }
        }
    }
}

/// True when a message failed because its producer did, not for what it is: purged after a
/// fatal error, or its idempotent sequence broke. A new producer sends it.
fn collateral(err: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        err.rdkafka_error_code(),
        Some(
            PurgeQueue
                | PurgeInflight
                | Fatal
                | OutOfOrderSequenceNumber
                | UnknownProducerId
                | InvalidProducerEpoch
                | InvalidProducerIdMapping
        )
    )
}

/// What to do about a permanent delivery error.
pub fn hint(err: &KafkaError) -> &'static str {
    match err.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            " — create the topic (the broker does not create topics automatically), or route with --kafka-topic"
        }
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
            " — raise the topic's max.message.bytes (and -X message.max.bytes), or drop the large column with --drop-column"
        }
        Some(RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed) => {
            " — grant this client WRITE on the topic (and IDEMPOTENT_WRITE on the cluster)"
        }
        _ => "",
    }
}

/// One transaction's messages in flight.
struct Tx {
    seq: u64,
    outstanding: u64,
    /// Set when the transaction ended, with when that was read.
    end: Option<(Resume, Instant)>,
    /// When the latest of its messages was acknowledged.
    last_ack: Option<Instant>,
}

pub struct KafkaSink {
    producer: BaseProducer<Reports>,
    settings: KafkaSettings,
    encoder: Encoder,
    /// Oldest first; the last entry is the open transaction.
    inflight: VecDeque<Tx>,
    acked: Option<Resume>,
    /// When `acked` was acknowledged.
    acked_at: Option<Instant>,
    value: Vec<u8>,
    router: Router,
    /// The delivery runs being applied, swapped with `Reports`' buffer (both keep their room).
    delivered: Vec<(u64, u64, Instant)>,
    shutdown: Arc<Shutdown>,
    latency: AckLatency,
    /// The order header of the message being sent (`dedupe`), `STREAM/ORIGIN/INDEX`: STREAM
    /// names this stream; up to `seq_index` it is the same for the whole open transaction.
    seq: String,
    /// Where ORIGIN starts, and where INDEX does.
    seq_origin: usize,
    seq_index: usize,
    /// How many messages the open transaction has sent.
    tx_index: u64,
    /// With `dedupe`: the open transaction's order key (its index is set per message).
    tx_key: Option<OrderKey>,
    /// Messages sent since delivery reports were last served.
    unserved: u32,
    /// Set with `--kafka-dedupe`: partitions are chosen here, and their tails read.
    dedupe: Option<(Partitioner, Tails)>,
    /// With `dedupe`: the last snapshot read sent (its record goes on messages while a snapshot
    /// runs), and the partitions that still skip replayed reads they hold (`reads`).
    reads: Option<Reads>,
    read_skips: PartSkips,
}

impl KafkaSink {
    /// `stream` names the position file and configuration this run continues (see `dedupe`).
    pub fn new(
        settings: KafkaSettings,
        encoder: Encoder,
        shutdown: Arc<Shutdown>,
        stream: String,
    ) -> Result<KafkaSink> {
        let redact = settings.redactor();
        let reports = Reports {
            acks: Mutex::new(Acks { runs: Vec::new(), last: Instant::now() }),
            served: AtomicU64::new(0),
            failure: Mutex::new(None),
            last_error: Mutex::new(None),
            logged: Mutex::new(HashMap::new()),
            redact: redact.clone(),
            metrics: OnceLock::new(),
        };
        let config = settings.client_config()?;
        let producer: BaseProducer<Reports> = config.create_with_context(reports).map_err(|e| {
            anyhow!(
                "cannot create the Kafka producer (check --kafka-brokers and the -X properties): {}",
                redact.apply(&e.to_string())
            )
        })?;
        let dedupe = match settings.dedupe {
            true => Some((
                Partitioner::from_property(settings.partitioner())?,
                Tails::new(stream.clone(), settings.consumer_config()?)?,
            )),
            false => None,
        };
        Ok(KafkaSink {
            reads: settings.dedupe.then(Reads::default),
            read_skips: PartSkips::default(),
            seq_origin: stream.len() + 1,
            seq_index: stream.len() + 1,
            seq: stream + "/",
            tx_index: 0,
            tx_key: None,
            unserved: 0,
            dedupe,
            producer,
            settings,
            encoder,
            inflight: VecDeque::from([Tx { seq: 0, outstanding: 0, end: None, last_ack: None }]),
            acked: None,
            acked_at: None,
            value: Vec::with_capacity(4096),
            router: Router::default(),
            delivered: Vec::new(),
            shutdown,
            latency: AckLatency::new(),
        })
    }

    /// No message of this stream can be in Kafka yet (its id is new): nothing to skip.
    pub fn new_stream(&mut self) {
        if let Some((_, tails)) = &mut self.dedupe {
            tails.new_stream();
        }
    }

    /// Continues from `saved`: with `dedupe`, while its snapshot has tables to read, the
    /// partitions of their topics skip the replayed reads they hold (`reads`).
    pub fn resume(&mut self, saved: Option<&Position>) -> Result<()> {
        if self.reads.is_none() {
            return Ok(());
        }
        let pending = saved.and_then(|p| p.snapshot.as_ref()).map(|s| s.pending.clone()).unwrap_or_default();
        let mut topics: Vec<String> = pending.iter().map(|[db, t]| table_topic(&self.settings, db, t)).collect();
        topics.sort();
        topics.dedup();
        let mut found = Vec::new();
        for topic in topics {
            let partitions = self.while_unreachable(|tails| tails.partitions(&topic))?;
            let held = self.while_unreachable(|tails| tails.last_reads(&topic, partitions))?;
            found.extend(held.into_iter().enumerate().map(|(p, read)| (topic.clone(), p as i32, read)));
        }
        self.reads = Some(Reads::resume(saved, None));
        self.read_skips = PartSkips::new(saved, found);
        Ok(())
    }

    /// The partition a snapshot read goes to, when its key fixes it (`dedupe` is on).
    fn read_partition(&mut self, change: &Change) -> Result<Option<(String, i32)>> {
        let Some(&part) = self.encoder.parts(change).first() else { return Ok(None) };
        self.router.route(&self.settings, &self.encoder, change, part);
        let Some(key) = self.router.key().filter(|k| !k.is_empty()).map(<[u8]>::to_vec) else { return Ok(None) };
        let topic = self.router.topic.clone();
        let partitions = self.while_unreachable(|tails| tails.partitions(&topic))?;
        let (partitioner, _) = self.dedupe.as_ref().expect("dedupe is on");
        let p = partitioner.partition(Some(&key), &[], partitions);
        Ok(Some((topic, p)))
    }

    /// Counts messages in flight, acknowledgement latency and delivery errors for `/metrics`.
    pub fn set_metrics(&self, metrics: Metrics) {
        let _ = self.producer.context().metrics.set(metrics);
    }

    /// Hands one message to the producer, waiting while its queue is full; with `dedupe`, skips
    /// it when its partition already holds it. `origin` writes the transaction's GTID or position
    /// (asked for at its first message). A message without a value is a tombstone. `read`: it is
    /// a snapshot read's.
    fn send(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        value: Option<&[u8]>,
        (origin, read): (impl FnOnce(&mut String), bool),
    ) -> Result<()> {
        if self.tx_index == 0 {
            self.seq.truncate(self.seq_origin);
            origin(&mut self.seq);
            self.seq.push('/');
            self.seq_index = self.seq.len();
            if self.dedupe.is_some() {
                self.tx_key = OrderKey::new(&self.seq[self.seq_origin..self.seq_index - 1], 0);
            }
        }
        let index = self.tx_index;
        self.tx_index += 1;
        self.seq.truncate(self.seq_index);
        self.seq.push_str(itoa::Buffer::new().format(index));
        let mut partition = None;
        if let Some((partitioner, _)) = &self.dedupe {
            let partitioner = *partitioner;
            let partitions = self.while_unreachable(|tails| tails.partitions(topic))?;
            let p = partitioner.partition(key, &self.seq.as_bytes()[self.seq_origin..], partitions);
            // Taken out while asking, put back after: no copy per message.
            let mut order = self.tx_key.take();
            let held = match &mut order {
                Some(k) => {
                    k.set_index(index);
                    self.while_unreachable(|tails| tails.holds(topic, p, k))
                }
                None => Ok(false),
            };
            self.tx_key = order;
            if held? {
                return Ok(());
            }
            partition = Some(p);
        }
        let record = match &self.reads {
            Some(reads) if read => reads.record(),
            Some(reads) => reads.record_while_snapshotting(),
            None => None,
        };
        let headers = match self.settings.headers {
            HeaderMode::None => headers,
            _ => {
                let h = headers
                    .unwrap_or_else(|| OwnedHeaders::new_with_capacity(1))
                    .insert(Header { key: dedupe::HEADER, value: Some(self.seq.as_str()) });
                Some(match record {
                    Some(record) => h.insert(Header { key: reads::HEADER, value: Some(record) }),
                    None => h,
                })
            }
        };
        let seq = self.inflight.back().expect("an open transaction").seq;
        let mut record = BaseRecord::with_opaque_to(topic, seq as usize);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        let mut waited = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    // Not longer: a poll lasts its whole timeout, however soon room is made.
                    self.producer.poll(Duration::from_millis(1));
                    self.check_failure()?;
                    self.check_stop(self.producer.in_flight_count() as u64)?;
                    if waited.elapsed() > Duration::from_secs(30) {
                        tracing::warn!(
                            "Kafka is not acknowledging: {} messages waiting; reading paused",
                            self.producer.in_flight_count()
                        );
                        waited = Instant::now();
                    }
                }
                Err((e, _)) => {
                    // After a fatal error every send fails: that error is the one to report.
                    self.check_failure()?;
                    return Err(anyhow!("cannot produce to Kafka topic {}: {e}{}", Escaped(topic), hint(&e)));
                }
            }
        }
        self.inflight.back_mut().expect("an open transaction").outstanding += 1;
        if let Some(m) = self.producer.context().metrics.get() {
            m.kafka_sent(value.map_or(0, <[u8]>::len));
        }
        // Each poll costs clock reads and a lock: reports are served every so many messages (and
        // at each commit), which bounds nothing more than the producer queue already does.
        self.unserved += 1;
        if self.unserved < SERVE_EVERY {
            return Ok(());
        }
        self.serve();
        self.check_failure()
    }

    /// Serves every delivery report and client error that is ready (one `poll` serves one).
    fn serve(&mut self) {
        self.unserved = 0;
        loop {
            let served = self.producer.context().served.load(Ordering::Relaxed);
            self.producer.poll(Duration::ZERO);
            if self.producer.context().served.load(Ordering::Relaxed) == served {
                return;
            }
        }
    }

    /// Asks `lookup` of the partition tails until Kafka answers, meanwhile polling the producer
    /// (which logs why Kafka cannot be reached) and giving up as `flush` does after a stop.
    fn while_unreachable<T>(&mut self, mut lookup: impl FnMut(&mut Tails) -> Result<Option<T>>) -> Result<T> {
        loop {
            let (_, tails) = self.dedupe.as_mut().expect("dedupe is on");
            if let Some(answer) = lookup(tails)? {
                return Ok(answer);
            }
            self.producer.poll(Duration::from_millis(500));
            self.check_failure()?;
            let waiting = self.inflight.iter().map(|t| t.outstanding).sum();
            self.check_stop(waiting)?;
        }
    }

    /// Gives up waiting for acknowledgements once a stop was requested and Kafka stalled.
    fn check_stop(&self, waiting: u64) -> Result<()> {
        let last_ack = self.producer.context().acks.lock().expect("not poisoned").last;
        let Some(why) = self.shutdown.stop_waiting(last_ack) else {
            return Ok(());
        };
        let last = match &*self.producer.context().last_error.lock().expect("not poisoned") {
            Some(e) => format!(" (Kafka's last error: {e})"),
            None => String::new(),
        };
        bail!(
            "stopped ({why}) with {waiting} messages not acknowledged by Kafka{last}; the position covers only acknowledged transactions, the rest is sent again after a restart"
        )
    }

    /// The failure that ends sending, if any: a message Kafka refused, or a fatal producer error
    /// (a `Restart` unless a new producer would fail the same way).
    fn check_failure(&self) -> Result<()> {
        let reports = self.producer.context();
        let Some((code, reason)) = self.producer.client().fatal_error() else {
            return match &*reports.failure.lock().expect("not poisoned") {
                Some(f) => Err(anyhow!(f.text.clone())),
                None => Ok(()),
            };
        };
        let until = Instant::now() + FATAL_DRAIN;
        while self.producer.in_flight_count() > 0 && Instant::now() < until {
            self.producer.poll(Duration::from_millis(20));
        }
        let fatal = format!("librdkafka fatal error {code}: {}", reports.redact.apply(&reason));
        let hint = hint(&KafkaError::Global(code));
        match &*reports.failure.lock().expect("not poisoned") {
            // The gapless guarantee makes a refused message fatal too: it would be refused again.
            Some(f) if !f.collateral => Err(anyhow!(f.text.clone())),
            // Such as no IDEMPOTENT_WRITE permission, which the producer needs to start at all.
            _ if !hint.is_empty() => Err(anyhow!("{fatal}{hint}")),
            _ => Err(Restart(fatal).into()),
        }
    }

    /// Applies delivery reports and advances `acked` over completed transactions; then reports
    /// the failure, if any.
    fn settle(&mut self) -> Result<()> {
        self.serve();
        self.advance();
        self.check_failure()
    }

    /// Applies the delivery reports polled so far and advances `acked` over completed
    /// transactions.
    fn advance(&mut self) {
        std::mem::swap(&mut self.producer.context().acks.lock().expect("not poisoned").runs, &mut self.delivered);
        let first = self.inflight.front().map(|t| t.seq).unwrap_or(0);
        for (seq, n, at) in self.delivered.drain(..) {
            if let Some(tx) = self.inflight.get_mut((seq - first) as usize) {
                tx.outstanding -= n;
                tx.last_ack = tx.last_ack.max(Some(at));
            }
        }
        while let Some(tx) = self.inflight.front() {
            if tx.outstanding > 0 || tx.end.is_none() {
                break;
            }
            // The open transaction (no end yet) always stays, so the queue is never empty.
            let tx = self.inflight.pop_front().expect("an ended transaction");
            let (resume, read) = tx.end.expect("an ended transaction");
            // Acknowledged in order: once it and everything before it was.
            self.acked_at = self.acked_at.max(tx.last_ack).max(Some(read));
            if tx.last_ack.is_some() {
                // Only transactions with messages: filtered ones would show Kafka as instant.
                let acked = self.acked_at.expect("set");
                self.latency.acknowledged(read, acked);
                if let Some(m) = self.producer.context().metrics.get() {
                    m.kafka_ack_latency(acked.duration_since(read));
                }
            }
            self.acked = Some(resume);
        }
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        if let Some(s) = self.latency.run_summary() {
            tracing::info!("Kafka acknowledgement latency, whole run: {s}");
        }
    }
}

impl Sink for KafkaSink {
    fn change(&mut self, change: &Change) -> Result<()> {
        let context = || {
            let t = &change.table;
            format!(
                "the event of `{}`.`{}` at {}:{}",
                Escaped(&t.db),
                Escaped(&t.name),
                Escaped(&change.file),
                change.offset
            )
        };
        let read = change.op == Op::Read;
        if self.reads.is_some() {
            if !read {
                self.read_skips.changed(change);
            } else if !self.read_skips.is_empty() {
                let to = self.read_partition(change).with_context(context)?;
                if self.read_skips.skipped(change, to.as_ref().map(|(t, p)| (t.as_str(), *p))) {
                    return Ok(());
                }
            }
            if read {
                self.reads.as_mut().expect("checked").skipped(change);
            }
        }
        // Snapshot reads are not skipped by their order key: chunks of several tables can share a
        // position, so their order cannot be told from it (an empty origin has no order key).
        let origin = |out: &mut String| {
            if change.op != Op::Read {
                push_origin(out, change.gtid.as_deref(), &change.file, change.offset);
            }
        };
        // Taken out while sending, put back after: their buffers are reused.
        let mut router = std::mem::take(&mut self.router);
        let mut value = std::mem::take(&mut self.value);
        let mut sent = Ok(());
        for &part in self.encoder.parts(change) {
            let op = part.view(change).0.as_str();
            let headers = router.change(&self.settings, &self.encoder, change, part, op);
            value.clear();
            self.encoder.write_value(change, part, &mut value);
            sent = self.send(&router.topic, router.key(), headers, Some(&value), (origin, read));
            if sent.is_ok() && router.key().is_some() && self.encoder.tombstone_after(change, part) {
                let headers = router.change(&self.settings, &self.encoder, change, part, "tombstone");
                sent = self.send(&router.topic, router.key(), headers, None, (origin, read));
            }
            if sent.is_err() {
                break;
            }
        }
        self.router = router;
        self.value = value;
        sent.with_context(context)
    }

    fn ddl(&mut self, ddl: &Ddl) -> Result<()> {
        let mut router = std::mem::take(&mut self.router);
        let headers = router.ddl(&self.settings, ddl);
        let mut value = Vec::new();
        ddl.write_json(&mut value);
        let origin = |out: &mut String| push_origin(out, ddl.gtid.as_deref(), &ddl.file, ddl.offset);
        let sent = self.send(&router.topic, router.key(), headers, Some(&value), (origin, false));
        self.router = router;
        sent
    }

    fn message(&mut self, msg: &Message) -> Result<()> {
        let mut router = std::mem::take(&mut self.router);
        let headers = router.message(&self.settings, msg);
        let origin = |out: &mut String| out.push_str(&msg.origin);
        let sent = self.send(&router.topic, router.key(), headers, Some(&msg.value), (origin, false));
        self.router = router;
        sent
    }

    fn commit(&mut self, resume: &Resume) -> Result<()> {
        if let Some(reads) = &mut self.reads {
            reads.commit(resume);
        }
        let open = self.inflight.back_mut().expect("an open transaction");
        open.end = Some((resume.clone(), Instant::now()));
        self.tx_index = 0;
        self.tx_key = None;
        let seq = open.seq + 1;
        self.inflight.push_back(Tx { seq, outstanding: 0, end: None, last_ack: None });
        self.settle()
    }

    fn acknowledged(&mut self) -> Result<Option<Resume>> {
        // Also after a failure: that is the position to save and to continue from.
        self.serve();
        self.advance();
        Ok(self.acked.clone())
    }

    fn flush(&mut self) -> Result<()> {
        let mut reported = Instant::now();
        loop {
            self.settle()?;
            let waiting: u64 = self.inflight.iter().map(|t| t.outstanding).sum();
            if waiting == 0 {
                return Ok(());
            }
            self.producer.poll(Duration::from_millis(20));
            self.check_stop(waiting)?;
            if reported.elapsed() > Duration::from_secs(10) {
                tracing::warn!("waiting for Kafka to acknowledge {waiting} messages");
                reported = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Faults a real broker cannot be made to show on demand, from librdkafka's mock cluster.
    use std::sync::Arc;

    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;
    use crate::event::SnapshotMark;

    /// A `-X` value that stands for a secret: errors must not show it.
    const SECRET: &str = "hunter2-client";

    fn sink(brokers: String) -> KafkaSink {
        let settings = KafkaSettings {
            compression: "none".into(),
            properties: vec![("retry.backoff.ms".into(), "10".into()), ("client.id".into(), SECRET.into())],
            ..config::test_settings(&brokers)
        };
        KafkaSink::new(settings, Encoder::new(Default::default()), Shutdown::new(), "test".into()).unwrap()
    }

    fn message(n: u32) -> Message {
        Message {
            origin: format!("0-1-{n}"),
            topic: "orders".into(),
            key: Some(n.to_string().into_bytes()),
            headers: vec![],
            value: format!("{{\"n\":{n}}}").into_bytes(),
        }
    }

    fn resume(offset: u64) -> Resume {
        Resume::new(Arc::from("binlog.000001"), offset, None)
    }

    #[test]
    fn acknowledgement_follows_transaction_order() {
        let mut s = sink("127.0.0.1:1".into());
        s.inflight = VecDeque::from([
            Tx { seq: 0, outstanding: 2, end: Some((resume(100), Instant::now())), last_ack: None },
            Tx { seq: 1, outstanding: 1, end: Some((resume(200), Instant::now())), last_ack: None },
            Tx { seq: 2, outstanding: 0, end: None, last_ack: None },
        ]);
        let deliver = |s: &mut KafkaSink, seq: u64| {
            s.producer.context().acks.lock().unwrap().runs.push((seq, 1, Instant::now()));
            s.acknowledged().unwrap().map(|r| r.offset)
        };
        assert_eq!(deliver(&mut s, 1), None, "a later transaction alone moves nothing");
        assert_eq!(deliver(&mut s, 0), None, "half of the first transaction moves nothing");
        assert_eq!(deliver(&mut s, 0), Some(200));
    }

    #[test]
    fn retriable_errors_and_a_down_broker_hold_the_position_then_deliver() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("orders", 1, 1).unwrap();
        let mut s = sink(cluster.bootstrap_servers());
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            ],
        );
        // A first transaction while the broker is up (its partition tail is read then).
        s.message(&message(9)).unwrap();
        s.commit(&resume(50)).unwrap();
        s.flush().unwrap();
        cluster.broker_down(-1).unwrap();
        for n in 0..3 {
            s.message(&message(n)).unwrap();
        }
        s.commit(&resume(100)).unwrap();
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            assert_eq!(s.acknowledged().unwrap().map(|r| r.offset), Some(50), "acknowledged while the broker was down");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster.broker_up(-1).unwrap();
        s.flush().unwrap();
        assert_eq!(s.acknowledged().unwrap().map(|r| r.offset), Some(100));
    }

    /// How many messages the mock's partition 0 of `orders` holds.
    fn stored(cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>) -> i64 {
        let consumer: rdkafka::consumer::BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", cluster.bootstrap_servers()).create().unwrap();
        use rdkafka::consumer::Consumer;
        let (low, high) = consumer.fetch_watermarks("orders", 0, Duration::from_secs(10)).unwrap();
        high - low
    }

    fn send_transactions(s: &mut KafkaSink, from: u32, to: u32) {
        for n in from..to {
            s.message(&message(n)).unwrap();
            s.message(&message(n)).unwrap();
            s.commit(&resume(u64::from(n))).unwrap();
        }
        s.flush().unwrap();
    }

    #[test]
    fn a_restart_skips_what_the_partition_holds_past_foreign_messages() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("orders", 1, 1).unwrap();
        // An empty partition: everything is sent.
        send_transactions(&mut sink(cluster.bootstrap_servers()), 1, 4);
        assert_eq!(stored(&cluster), 6);
        // Another producer writes to the same partition.
        let foreign: BaseProducer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", cluster.bootstrap_servers()).create().unwrap();
        for _ in 0..3 {
            foreign.send(BaseRecord::<(), _>::to("orders").payload("not ours").partition(0)).unwrap();
        }
        foreign.flush(Duration::from_secs(10)).unwrap();
        assert_eq!(stored(&cluster), 9);
        // A restart replays transactions 2 and 3 before the new 4 and 5: only those are sent.
        send_transactions(&mut sink(cluster.bootstrap_servers()), 2, 6);
        assert_eq!(stored(&cluster), 13);
        // Another stream (another position file or configuration) proves nothing: all is sent.
        let mut other = KafkaSink::new(
            config::test_settings(&cluster.bootstrap_servers()),
            Encoder::new(Default::default()),
            Shutdown::new(),
            "other".into(),
        )
        .unwrap();
        send_transactions(&mut other, 4, 6);
        assert_eq!(stored(&cluster), 17);
    }

    fn is_restart(err: &anyhow::Error) -> bool {
        err.chain().any(|c| c.is::<Restart>())
    }

    #[test]
    fn permanent_errors_stop_with_a_fix_and_no_position() {
        use RDKafkaRespErr::*;
        // Under the gapless guarantee each of these is a fatal error too; restarting cannot help.
        let refused = "Kafka refused a message for topic orders";
        for (api, code, says, fix) in [
            (
                RDKafkaApiKey::Produce,
                RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
                refused,
                "grant this client WRITE on the topic",
            ),
            (
                RDKafkaApiKey::Produce,
                RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
                refused,
                "raise the topic's max.message.bytes",
            ),
            // The producer cannot even start: no message is refused, all are purged.
            (
                RDKafkaApiKey::InitProducerId,
                RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED,
                "librdkafka fatal error ClusterAuthorizationFailed",
                "grant this client WRITE",
            ),
        ] {
            let cluster = MockCluster::new(1).unwrap();
            cluster.create_topic("orders", 1, 1).unwrap();
            cluster.request_errors(api, &[code]);
            let mut s = sink(cluster.bootstrap_servers());
            s.message(&message(1)).unwrap();
            s.commit(&resume(100)).unwrap();
            let err = s.flush().unwrap_err();
            assert!(!is_restart(&err), "{code:?}: {err:#}");
            let text = err.to_string();
            assert!(text.starts_with(says) && text.contains(fix), "{code:?}: {text}");
            assert!(s.producer.client().fatal_error().is_some(), "{code:?} was not fatal: the test proves nothing");
            assert!(s.acked.is_none());
        }
    }

    /// Sends transactions 1 to 3, and of transaction 4 one message, which Kafka acknowledges;
    /// then `fail` breaks the producer and sending goes on until the sink says to restart.
    /// Half of transaction 4 is in Kafka, but not acknowledged as a transaction: a new sink
    /// resends from transaction 4 and the partition must end up with every message once.
    fn restart_after(fail: impl FnOnce(&KafkaSink, &MockCluster<'_, rdkafka::producer::DefaultProducerContext>)) {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("orders", 1, 1).unwrap();
        let mut s = sink(cluster.bootstrap_servers());
        send_transactions(&mut s, 1, 4);
        s.message(&message(4)).unwrap();
        s.producer.flush(Duration::from_secs(10)).unwrap();
        fail(&s, &cluster);
        let mut go_on = || -> Result<()> {
            s.message(&message(4))?;
            s.commit(&resume(4))?;
            for n in 5..8 {
                s.message(&message(n))?;
                s.message(&message(n))?;
                s.commit(&resume(u64::from(n)))?;
            }
            s.flush()
        };
        let err = go_on().unwrap_err();
        assert!(is_restart(&err), "{err:#}");
        let text = format!("{err:#}");
        assert!(
            text.contains("librdkafka fatal error OutOfOrderSequenceNumber") && !text.contains("refused"),
            "{text}"
        );
        assert!(!text.contains(SECRET), "{text}");
        let started = Instant::now();
        let err = s.flush().unwrap_err();
        assert!(is_restart(&err) && started.elapsed() < FATAL_DRAIN, "{err:#} after {:?}", started.elapsed());
        assert_eq!(s.acknowledged().unwrap().map(|r| r.offset), Some(3), "acknowledged: transactions 1 to 3");
        assert_eq!(stored(&cluster), 7, "transactions 1 to 3 and half of 4");
        drop(s);
        send_transactions(&mut sink(cluster.bootstrap_servers()), 4, 8);
        assert_eq!(stored(&cluster), 14, "every message of transactions 1 to 7 once");
    }

    /// One message as read back: key, headers, value.
    type Stored = (Option<String>, Vec<(String, Option<String>)>, Option<String>);

    /// Every message of `topic`'s partition 0, in order.
    fn read_back(cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>, topic: &str) -> Vec<Stored> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "pin")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
        let mut out = Vec::new();
        loop {
            match consumer.poll(Duration::from_secs(10)).expect("a message or the end") {
                Err(KafkaError::PartitionEOF(_)) => return out,
                Err(e) => panic!("{e}"),
                Ok(m) => {
                    let headers = m.headers().map(|h| h.iter().map(|x| (x.key.to_string(), text(x.value))).collect());
                    out.push((text(m.key()), headers.unwrap_or_default(), text(m.payload())));
                }
            }
        }
    }

    /// The exact bytes of a few messages in each `--kafka-headers` mode: a speed change must not
    /// change what lands in Kafka. `all` is what every message carried before the modes.
    #[test]
    fn headers_and_values_are_pinned_per_mode() {
        use crate::position::Flavor;
        use crate::schema::{Kind, RowImage, Table};

        let columns = vec![("id", Kind::Int { bytes: 4, unsigned: false }), ("status", Kind::Date)];
        let table = Table::for_test("shop", "orders", columns, vec![0]);
        let image = |values: [&str; 2]| RowImage::from_json(&values);
        let change = |op, row, gtid: Option<&str>, before, after| Change {
            op,
            table: table.clone(),
            server_id: 1,
            thread: None,
            flavor: Flavor::MariaDb,
            ts: 1_700_000_000,
            gtid: gtid.map(Arc::from),
            file: Arc::from("binlog.000001"),
            offset: 300 + row * 100,
            xid: None,
            row,
            commit: false,
            snapshot: if op == Op::Read { SnapshotMark::Read } else { SnapshotMark::Stream },
            before,
            after,
        };
        let changes = [
            change(Op::Insert, 0, Some("0-1-7"), None, Some(image(["1", "\"new\""]))),
            change(Op::Update, 1, Some("0-1-7"), Some(image(["1", "\"new\""])), Some(image(["1", "\"paid\""]))),
            change(Op::Delete, 0, None, Some(image(["2", "\"old\""])), None),
            change(Op::Read, 0, None, None, Some(image(["3", "\"x\""]))),
        ];
        let ddl = Ddl {
            db: "shop".into(),
            sql: "ALTER TABLE orders ADD note TEXT".into(),
            ts: 1_700_000_001,
            gtid: Some(Arc::from("0-1-9")),
            file: Arc::from("binlog.000001"),
            offset: 900,
        };
        let outbox = Message {
            origin: "0-1-10".into(),
            topic: "shop.orders".into(),
            key: Some(b"o-1".to_vec()),
            headers: vec![("type".into(), "OrderCreated".into())],
            value: b"{\"n\":1}".to_vec(),
        };

        let send = |mode: HeaderMode| {
            let cluster = MockCluster::new(1).unwrap();
            cluster.create_topic("shop.orders", 1, 1).unwrap();
            cluster.create_topic("ddl", 1, 1).unwrap();
            let settings = KafkaSettings {
                headers: mode,
                dedupe: mode != HeaderMode::None,
                compression: "none".into(),
                ..config::test_settings(&cluster.bootstrap_servers())
            };
            let mut s =
                KafkaSink::new(settings, Encoder::new(Default::default()), Shutdown::new(), "test".into()).unwrap();
            s.new_stream();
            s.change(&changes[0]).unwrap();
            s.change(&changes[1]).unwrap();
            s.commit(&resume(400)).unwrap();
            s.change(&changes[2]).unwrap();
            s.commit(&resume(500)).unwrap();
            s.change(&changes[3]).unwrap();
            s.commit(&resume(600)).unwrap();
            s.ddl(&ddl).unwrap();
            s.commit(&resume(900)).unwrap();
            s.message(&outbox).unwrap();
            s.commit(&resume(1000)).unwrap();
            s.flush().unwrap();
            drop(s);
            (read_back(&cluster, "shop.orders"), read_back(&cluster, "ddl"))
        };
        let h = |pairs: &[(&str, Option<&str>)]| -> Vec<(String, Option<String>)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect()
        };
        let values = [
            r#"{"op":"insert","db":"shop","table":"orders","ts":1700000000,"gtid":"0-1-7","pos":"binlog.000001:300","xid":null,"row":0,"commit":false,"pk":{"id":1},"before":null,"after":{"id":1,"status":"new"}}"#,
            r#"{"op":"update","db":"shop","table":"orders","ts":1700000000,"gtid":"0-1-7","pos":"binlog.000001:400","xid":null,"row":1,"commit":false,"pk":{"id":1},"before":{"id":1,"status":"new"},"after":{"id":1,"status":"paid"}}"#,
            r#"{"op":"delete","db":"shop","table":"orders","ts":1700000000,"gtid":null,"pos":"binlog.000001:300","xid":null,"row":0,"commit":false,"pk":{"id":2},"before":{"id":2,"status":"old"},"after":null}"#,
            r#"{"op":"read","db":"shop","table":"orders","ts":1700000000,"gtid":null,"pos":"binlog.000001:300","xid":null,"row":0,"commit":false,"pk":{"id":3},"before":null,"after":{"id":3,"status":"x"}}"#,
        ];
        let ddl_value = r#"{"op":"ddl","db":"shop","ts":1700000001,"gtid":"0-1-9","pos":"binlog.000001:900","sql":"ALTER TABLE orders ADD note TEXT"}"#;
        let keys = [r#"{"id":1}"#, r#"{"id":1}"#, r#"{"id":2}"#, r#"{"id":3}"#, "o-1"];
        let seqs = ["test/0-1-7/0", "test/0-1-7/1", "test/binlog.000001:300/0", "test//0", "test/0-1-10/0"];
        let ids = ["0-1-7/0", "0-1-7/1", "binlog.000001:300/0", r#"binlog.000001:300/shop.orders/{"id":3}/0"#];
        // A snapshot read names itself (`reads`); no message outside a snapshot has the header.
        let read = r#"{"pos":"binlog.000001:300","db":"shop","table":"orders","key":"{\"id\":3}","last":false}"#;
        let all = [
            h(&[
                ("gtid", Some("0-1-7")),
                ("op", Some("insert")),
                ("db", Some("shop")),
                ("table", Some("orders")),
                ("pos", Some("binlog.000001:300")),
                ("id", Some(ids[0])),
                ("binlog_tail.seq", Some(seqs[0])),
            ]),
            h(&[
                ("gtid", Some("0-1-7")),
                ("op", Some("update")),
                ("db", Some("shop")),
                ("table", Some("orders")),
                ("pos", Some("binlog.000001:400")),
                ("id", Some(ids[1])),
                ("binlog_tail.seq", Some(seqs[1])),
            ]),
            h(&[
                ("gtid", None),
                ("op", Some("delete")),
                ("db", Some("shop")),
                ("table", Some("orders")),
                ("pos", Some("binlog.000001:300")),
                ("id", Some(ids[2])),
                ("binlog_tail.seq", Some(seqs[2])),
            ]),
            h(&[
                ("gtid", None),
                ("op", Some("read")),
                ("db", Some("shop")),
                ("table", Some("orders")),
                ("pos", Some("binlog.000001:300")),
                ("id", Some(ids[3])),
                ("binlog_tail.seq", Some(seqs[3])),
                ("binlog_tail.read", Some(read)),
            ]),
            h(&[("type", Some("OrderCreated")), ("binlog_tail.seq", Some(seqs[4]))]),
        ];
        let ddl_all = h(&[
            ("gtid", Some("0-1-9")),
            ("op", Some("ddl")),
            ("db", Some("shop")),
            ("pos", Some("binlog.000001:900")),
            ("binlog_tail.seq", Some("test/0-1-9/0")),
        ]);
        let minimal: Vec<_> = (0..4)
            .map(|i| {
                let record = ("binlog_tail.read", Some(read));
                h(&[("id", Some(ids[i])), ("binlog_tail.seq", Some(seqs[i])), record][..if i == 3 { 3 } else { 2 }])
            })
            .chain([all[4].clone()])
            .collect();
        let none: Vec<_> = (0..4).map(|_| vec![]).chain([h(&[("type", Some("OrderCreated"))])]).collect();
        for (mode, headers, ddl_headers) in [
            (HeaderMode::All, all.to_vec(), ddl_all),
            (HeaderMode::Minimal, minimal, h(&[("binlog_tail.seq", Some("test/0-1-9/0"))])),
            (HeaderMode::None, none, vec![]),
        ] {
            let (orders, ddls) = send(mode);
            let expected: Vec<Stored> = (0..5)
                .map(|i| {
                    let value = values.get(i).copied().unwrap_or(r#"{"n":1}"#);
                    (Some(keys[i].to_string()), headers[i].clone(), Some(value.to_string()))
                })
                .collect();
            assert_eq!(orders, expected, "{mode:?}");
            assert_eq!(ddls, [(Some("shop".to_string()), ddl_headers, Some(ddl_value.to_string()))], "{mode:?}");
        }
    }

    /// librdkafka's own test hook: the fatal error an idempotent producer raises on a sequence gap.
    fn raise_fatal_error(s: &KafkaSink) {
        let reason = std::ffi::CString::new(format!("injected by the test (client {SECRET})")).unwrap();
        let err = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                s.producer.client().native_ptr(),
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            )
        };
        assert_eq!(err, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR);
    }

    #[test]
    fn a_fatal_error_restarts_from_the_acknowledged_position() {
        restart_after(|s, _| raise_fatal_error(s));
    }

    #[test]
    fn what_was_in_flight_at_a_fatal_error_still_counts_once_acknowledged() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("orders", 1, 1).unwrap();
        let mut s = sink(cluster.bootstrap_servers());
        send_transactions(&mut s, 1, 2);
        cluster.broker_round_trip_time(1, Duration::from_millis(500)).unwrap();
        for n in 2..4 {
            s.message(&message(n)).unwrap();
            s.commit(&resume(u64::from(n))).unwrap();
        }
        // Past linger.ms: the requests are on their way, their answers not yet back.
        s.producer.poll(Duration::from_millis(100));
        raise_fatal_error(&s);
        assert!(is_restart(&s.flush().unwrap_err()));
        assert_eq!(s.acknowledged().unwrap().map(|r| r.offset), Some(3));
    }

    #[test]
    fn a_broken_sequence_restarts_from_the_acknowledged_position() {
        // The broker answers the next Produce request as if a message were missing before it.
        restart_after(|_, cluster| {
            cluster.request_errors(
                RDKafkaApiKey::Produce,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
            );
        });
    }
}
