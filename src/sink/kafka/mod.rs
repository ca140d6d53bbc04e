//! The Kafka sink: at-least-once, ordered delivery, acknowledged per transaction.
//!
//! Invariants:
//! - A transaction counts as acknowledged only when every message of it, and of every earlier
//!   transaction, was acknowledged by the brokers; only then may the position move past it.
//! - Retriable failures (broker down, leader change, timeouts) are retried by librdkafka without a
//!   time limit; any failure it reports is permanent and stops the tool, naming the event.
//! - Memory is bounded: when the producer queue is full, `send` waits (and with it the binlog
//!   reader). In-flight tracking is one counter per transaction, never one entry per row.

pub mod config;
mod latency;
mod route;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::Sink;
use crate::position::Resume;
use crate::event::{Change, Ddl};
use crate::metrics::Metrics;
use crate::outbox::Message;
use crate::shutdown::Shutdown;
use config::KafkaSettings;
use latency::AckLatency;

/// Delivery reports, collected while `poll` runs on the sink's thread.
struct Reports {
    /// Transaction sequence numbers of delivered messages and when, one entry per message.
    delivered: Mutex<Vec<(u64, Instant)>>,
    failure: Mutex<Option<String>>,
    metrics: OnceLock<Metrics>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        if let Some(m) = self.metrics.get() {
            let (Ok(msg) | Err((_, msg))) = result;
            m.kafka_settled(msg.payload_len(), result.is_ok());
        }
        match result {
            Ok(_) => self.delivered.lock().expect("not poisoned").push((seq as u64, Instant::now())),
            Err((err, msg)) => {
                let header = |name: &str| {
                    msg.headers()
                        .and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_else(|| "?".into())
                };
                let mut failure = self.failure.lock().expect("not poisoned");
                failure.get_or_insert_with(|| {
                    format!(
                        "Kafka refused the event of `{}`.`{}` at {} for topic {}: {err}{}",
                        header("db"),
                        header("table"),
                        header("pos"),
                        msg.topic(),
                        hint(err)
                    )
                });
            }
        }
    }
}

/// What to do about a permanent delivery error.
fn hint(err: &KafkaError) -> &'static str {
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
    /// Oldest first; the last entry is the open transaction.
    inflight: VecDeque<Tx>,
    acked: Option<Resume>,
    /// When `acked` was acknowledged.
    acked_at: Option<Instant>,
    value: Vec<u8>,
    shutdown: Arc<Shutdown>,
    latency: AckLatency,
}

impl KafkaSink {
    pub fn new(settings: KafkaSettings, shutdown: Arc<Shutdown>) -> Result<KafkaSink> {
        let reports = Reports { delivered: Mutex::new(Vec::new()), failure: Mutex::new(None), metrics: OnceLock::new() };
        let producer: BaseProducer<Reports> = settings
            .client_config()?
            .create_with_context(reports)
            .context("cannot create the Kafka producer (check --kafka-brokers and the -X properties)")?;
        Ok(KafkaSink {
            producer,
            settings,
            inflight: VecDeque::from([Tx { seq: 0, outstanding: 0, end: None, last_ack: None }]),
            acked: None,
            acked_at: None,
            value: Vec::with_capacity(4096),
            shutdown,
            latency: AckLatency::new(),
        })
    }

    /// Counts messages in flight, acknowledgement latency and delivery errors for `/metrics`.
    pub fn set_metrics(&self, metrics: Metrics) {
        let _ = self.producer.context().metrics.set(metrics);
    }

    /// Hands one message to the producer, waiting while its queue is full.
    fn send(&mut self, topic: &str, key: Option<&[u8]>, headers: OwnedHeaders, value: &[u8]) -> Result<()> {
        let seq = self.inflight.back().expect("an open transaction").seq;
        let mut record = BaseRecord::with_opaque_to(topic, seq as usize).payload(value).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        let mut waited = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(50));
                    self.check_failure()?;
                    if waited.elapsed() > Duration::from_secs(30) {
                        tracing::warn!("Kafka is not acknowledging: {} messages waiting; reading paused", self.producer.in_flight_count());
                        waited = Instant::now();
                    }
                }
                Err((e, _)) => {
                    return Err(anyhow!("cannot produce to Kafka topic {topic}: {e}{}", hint(&e)));
                }
            }
        }
        self.inflight.back_mut().expect("an open transaction").outstanding += 1;
        if let Some(m) = self.producer.context().metrics.get() {
            m.kafka_sent(value.len());
        }
        self.producer.poll(Duration::ZERO);
        self.check_failure()
    }

    fn check_failure(&self) -> Result<()> {
        match self.producer.context().failure.lock().expect("not poisoned").clone() {
            Some(f) => Err(anyhow!(f)),
            None => Ok(()),
        }
    }

    /// Applies delivery reports and advances `acked` over completed transactions.
    fn settle(&mut self) -> Result<()> {
        self.producer.poll(Duration::ZERO);
        self.check_failure()?;
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
        Ok(())
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
        let routed = route::change(&self.settings, change);
        let mut value = std::mem::take(&mut self.value);
        value.clear();
        change.write_json(&mut value);
        let result = self.send(&routed.topic, routed.key.as_deref(), routed.headers, &value);
        self.value = value;
        result.with_context(|| format!("the event of `{}`.`{}` at {}:{}", change.table.db, change.table.name, change.file, change.offset))
    }

    fn ddl(&mut self, ddl: &Ddl) -> Result<()> {
        let routed = route::ddl(&self.settings, ddl);
        let mut value = Vec::new();
        ddl.write_json(&mut value);
        self.send(&routed.topic, routed.key.as_deref(), routed.headers, &value)
    }

    fn message(&mut self, msg: &Message) -> Result<()> {
        let mut headers = OwnedHeaders::new_with_capacity(msg.headers.len());
        for (k, v) in &msg.headers {
            headers = headers.insert(Header { key: k, value: Some(v) });
        }
        let topic = format!("{}{}", self.settings.topic_prefix, msg.topic);
        self.send(&topic, msg.key.as_deref(), headers, &msg.value)
    }

    fn commit(&mut self, resume: &Resume) -> Result<()> {
        let open = self.inflight.back_mut().expect("an open transaction");
        open.end = Some((resume.clone(), Instant::now()));
        let seq = open.seq + 1;
        self.inflight.push_back(Tx { seq, outstanding: 0, end: None, last_ack: None });
        self.settle()
    }

    fn acknowledged(&mut self) -> Result<Option<Resume>> {
        self.settle()?;
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
            if self.shutdown.forced() {
                bail!("stopped before Kafka acknowledged {waiting} messages; the position covers only acknowledged transactions");
            }
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

    fn sink(brokers: String) -> KafkaSink {
        let settings = KafkaSettings {
            compression: "none".into(),
            properties: vec![("retry.backoff.ms".into(), "10".into())],
            ..config::test_settings(&brokers)
        };
        KafkaSink::new(settings, Shutdown::new()).unwrap()
    }

    fn message(n: u32) -> Message {
        Message { topic: "orders".into(), key: Some(n.to_string().into_bytes()), headers: vec![], value: format!("{{\"n\":{n}}}").into_bytes() }
    }

    fn resume(offset: u64) -> Resume {
        Resume { file: Arc::from("binlog.000001"), offset, gtids: None }
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
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS],
        );
        cluster.broker_down(-1).unwrap();
        for n in 0..3 {
            s.message(&message(n)).unwrap();
        }
        s.commit(&resume(100)).unwrap();
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            assert!(s.acknowledged().unwrap().is_none(), "acknowledged while the broker was down");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster.broker_up(-1).unwrap();
        s.flush().unwrap();
        assert_eq!(s.acknowledged().unwrap().map(|r| r.offset), Some(100));
    }

    #[test]
    fn permanent_errors_stop_with_a_fix_and_no_position() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("orders", 1, 1).unwrap();
        let mut s = sink(cluster.bootstrap_servers());
        cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED]);
        s.message(&message(1)).unwrap();
        s.commit(&resume(100)).unwrap();
        let err = s.flush().unwrap_err().to_string();
        assert!(err.contains("topic orders") && err.contains("grant this client WRITE"), "{err}");
        assert!(s.acked.is_none());
    }
}
