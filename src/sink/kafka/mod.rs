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
//! - After a restart, messages a partition already holds are not sent again (`dedupe`).
//! - After a stop request, waiting lasts while the brokers acknowledge: it ends once the shutdown
//!   grace passed without an acknowledgement. What was not acknowledged then is not in the
//!   position, and is sent again after a restart.
//! - Why the brokers do not acknowledge (librdkafka's connection and broker errors) is logged at
//!   the default level, each distinct message at most once per `ERROR_REPEAT`; no text from
//!   librdkafka is printed before the values of `-X` properties are taken out of it.

pub mod config;
pub mod dedupe;
mod latency;
mod route;
pub mod tail;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::Sink;
use crate::error::Restart;
use crate::event::{Change, Ddl, Op};
use crate::format::Encoder;
use crate::metrics::Metrics;
use crate::outbox::Message;
use crate::position::Resume;
use crate::shutdown::Shutdown;
use crate::text::Escaped;
use config::KafkaSettings;
use dedupe::{OrderKey, Partitioner, Tails};
use latency::AckLatency;

/// How often the same librdkafka error is logged again while it persists.
const ERROR_REPEAT: Duration = Duration::from_secs(30);

/// How long a producer that hit a fatal error gets to report the messages it still had (its
/// queue is purged at once, requests in flight are answered within moments): their deliveries
/// move the position on, and a broker's refusal among them says a restart cannot help.
const FATAL_DRAIN: Duration = Duration::from_secs(5);

/// A failed delivery, as reported to the user.
struct Failure {
    text: String,
    /// It failed with the producer, not for what it is (`collateral`).
    collateral: bool,
}

/// Delivery reports and client errors, collected while `poll` runs on the sink's thread.
struct Reports {
    /// Transaction sequence numbers of delivered messages and when, one entry per message.
    delivered: Mutex<Vec<(u64, Instant)>>,
    /// The first failed delivery, unless a refused one follows collateral ones: that says why.
    failure: Mutex<Option<Failure>>,
    /// When the brokers last acknowledged a message (or the producer was created).
    last_ack: Mutex<Instant>,
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
        let refused = matches!(result, Err((err, _)) if !collateral(err));
        if let Some(m) = self.metrics.get() {
            let (Ok(msg) | Err((_, msg))) = result;
            // What a failed producer took down with it is sent again: not refused for good.
            m.kafka_settled(msg.payload_len(), !refused);
        }
        match result {
            Ok(_) => {
                let now = Instant::now();
                self.delivered.lock().expect("not poisoned").push((seq as u64, now));
                *self.last_ack.lock().expect("not poisoned") = now;
            }
            Err((err, msg)) => {
                let header = |name: &str| {
                    msg.headers()
                        .and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_else(|| "?".into())
                };
                let mut failure = self.failure.lock().expect("not poisoned");
                if failure.as_ref().is_none_or(|f| f.collateral && refused) {
                    let text = format!(
                        "Kafka refused the event of `{}`.`{}` at {} for topic {}: {err}{}",
                        Escaped(&header("db")),
                        Escaped(&header("table")),
                        Escaped(&header("pos")),
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
    shutdown: Arc<Shutdown>,
    latency: AckLatency,
    /// Names this stream in every message's order header (`dedupe`).
    stream: String,
    /// The open transaction's origin and how many messages it has sent.
    tx_origin: Option<String>,
    tx_index: u64,
    /// Set with `--kafka-dedupe`: partitions are chosen here, and their tails read.
    dedupe: Option<(Partitioner, Tails)>,
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
            delivered: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
            last_ack: Mutex::new(Instant::now()),
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
            stream,
            tx_origin: None,
            tx_index: 0,
            dedupe,
            producer,
            settings,
            encoder,
            inflight: VecDeque::from([Tx { seq: 0, outstanding: 0, end: None, last_ack: None }]),
            acked: None,
            acked_at: None,
            value: Vec::with_capacity(4096),
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

    /// Counts messages in flight, acknowledgement latency and delivery errors for `/metrics`.
    pub fn set_metrics(&self, metrics: Metrics) {
        let _ = self.producer.context().metrics.set(metrics);
    }

    /// Hands one message to the producer, waiting while its queue is full; with `dedupe`, skips
    /// it when its partition already holds it. `origin` is the transaction's GTID or position. A
    /// message without a value is a tombstone.
    fn send(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        headers: OwnedHeaders,
        value: Option<&[u8]>,
        origin: &str,
    ) -> Result<()> {
        let origin = self.tx_origin.get_or_insert_with(|| origin.to_string()).clone();
        let index = self.tx_index;
        self.tx_index += 1;
        let order = format!("{origin}/{index}");
        let header = format!("{}/{order}", self.stream);
        let headers = headers.insert(Header { key: dedupe::HEADER, value: Some(header.as_str()) });
        let seq = self.inflight.back().expect("an open transaction").seq;
        let mut record = BaseRecord::with_opaque_to(topic, seq as usize).headers(headers);
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some((partitioner, _)) = &self.dedupe {
            let partitioner = *partitioner;
            let partitions = self.while_unreachable(|tails| tails.partitions(topic))?;
            let partition = partitioner.partition(key, order.as_bytes(), partitions);
            record = record.partition(partition);
            let held = match OrderKey::new(&origin, index) {
                Some(k) => self.while_unreachable(|tails| tails.holds(topic, partition, &k))?,
                None => false,
            };
            if held {
                return Ok(());
            }
        }
        let mut waited = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(50));
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
        self.producer.poll(Duration::ZERO);
        self.check_failure()
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
        let last_ack = *self.producer.context().last_ack.lock().expect("not poisoned");
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
        self.producer.poll(Duration::ZERO);
        self.advance();
        self.check_failure()
    }

    /// Applies the delivery reports polled so far and advances `acked` over completed
    /// transactions.
    fn advance(&mut self) {
        let delivered = std::mem::take(&mut *self.producer.context().delivered.lock().expect("not poisoned"));
        let first = self.inflight.front().map(|t| t.seq).unwrap_or(0);
        for (seq, at) in delivered {
            if let Some(tx) = self.inflight.get_mut((seq - first) as usize) {
                tx.outstanding -= 1;
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
        // Snapshot reads are never skipped: chunks of several tables can share a position, so
        // their order cannot be told from it (an empty origin has no order key).
        let origin = match change.op {
            Op::Read => String::new(),
            _ => crate::event::origin(change.gtid.as_deref(), &change.file, change.offset),
        };
        for &part in self.encoder.parts(change) {
            let op = part.view(change).0.as_str();
            let routed = route::change(&self.settings, &self.encoder, change, part, op);
            let mut value = std::mem::take(&mut self.value);
            value.clear();
            self.encoder.write_value(change, part, &mut value);
            let sent = self.send(&routed.topic, routed.key.as_deref(), routed.headers, Some(&value), &origin);
            self.value = value;
            sent.with_context(context)?;
            if routed.key.is_some() && self.encoder.tombstone_after(change, part) {
                let tombstone = route::change(&self.settings, &self.encoder, change, part, "tombstone");
                self.send(&tombstone.topic, tombstone.key.as_deref(), tombstone.headers, None, &origin)
                    .with_context(context)?;
            }
        }
        Ok(())
    }

    fn ddl(&mut self, ddl: &Ddl) -> Result<()> {
        let routed = route::ddl(&self.settings, ddl);
        let mut value = Vec::new();
        ddl.write_json(&mut value);
        let origin = crate::event::origin(ddl.gtid.as_deref(), &ddl.file, ddl.offset);
        self.send(&routed.topic, routed.key.as_deref(), routed.headers, Some(&value), &origin)
    }

    fn message(&mut self, msg: &Message) -> Result<()> {
        let mut headers = OwnedHeaders::new_with_capacity(msg.headers.len());
        for (k, v) in &msg.headers {
            headers = headers.insert(Header { key: k, value: Some(v) });
        }
        let topic = format!("{}{}", self.settings.topic_prefix, msg.topic);
        self.send(&topic, msg.key.as_deref(), headers, Some(&msg.value), &msg.origin)
    }

    fn commit(&mut self, resume: &Resume) -> Result<()> {
        let open = self.inflight.back_mut().expect("an open transaction");
        open.end = Some((resume.clone(), Instant::now()));
        self.tx_origin = None;
        self.tx_index = 0;
        let seq = open.seq + 1;
        self.inflight.push_back(Tx { seq, outstanding: 0, end: None, last_ack: None });
        self.settle()
    }

    fn acknowledged(&mut self) -> Result<Option<Resume>> {
        // Also after a failure: that is the position to save and to continue from.
        self.producer.poll(Duration::ZERO);
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
            s.producer.context().delivered.lock().unwrap().push((seq, Instant::now()));
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
        let refused = "Kafka refused the event of `?`.`?` at ? for topic orders";
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
