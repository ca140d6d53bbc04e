//! The position in Kafka (`--position-store kafka`): a message in a compacted topic, keyed by
//! the stream's name, so a container needs no volume.
//!
//! Invariants:
//! - Every position is written to partition 0 (whatever the topic's partition count, now or
//!   later), with the same JSON as the position file, by an idempotent producer (`acks=all`), so
//!   the positions of a stream land in the order they were saved and the newest message under
//!   the key is the newest position. A save does not wait for Kafka (a crash before the
//!   acknowledgement leaves the previous position, which is as safe); `flush` waits, and every
//!   stop of the stream flushes before it ends.
//! - The topic must exist with `cleanup.policy=compact` and no `delete`: a deleting topic would
//!   drop the position of a stream idle longer than its retention, and the next start would begin
//!   from `--start` instead. This is checked before anything else is read.
//! - Loading reads the partition backwards from its end (`tail`) and takes the key's message
//!   with the highest offset (compaction keeps the newest message of every key). A null value (a
//!   tombstone) means no position.
//! - Only the lease holder saves (`lease`); while Kafka cannot be reached, loading and saving wait
//!   (a stop request ends the wait after `shutdown::GRACE`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use tokio::runtime::Handle;

use super::lease::{Holder, LeaseLost};
use crate::position::Position;
use crate::shutdown::{Shutdown, Stopped};
use crate::sink::kafka::config::{log_librdkafka, KafkaSettings, Redactor};
use crate::sink::kafka::{hint, tail};

/// `--kafka-position-topic` when none is given.
pub const DEFAULT_TOPIC: &str = "binlog_tail.positions";

/// The partition every position is kept in.
pub const PARTITION: i32 = 0;

/// How often waiting for Kafka says so.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// Delivery reports of the positions in flight.
struct Saves {
    in_flight: Mutex<u64>,
    /// The first position Kafka refused.
    refused: Mutex<Option<KafkaError>>,
    /// When Kafka last acknowledged a position (or the producer was created).
    last_ack: Mutex<Instant>,
    redact: Redactor,
}

impl ClientContext for Saves {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_librdkafka(" positions", level, fac, &self.redact.apply(message));
    }

    // The sink's producer logs why the brokers cannot be reached; once is enough.
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("Kafka positions: {} ({error})", self.redact.apply(reason));
    }
}

impl ProducerContext for Saves {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        *self.in_flight.lock().expect("not poisoned") -= 1;
        match result {
            Ok(_) => *self.last_ack.lock().expect("not poisoned") = Instant::now(),
            Err((e, _)) => {
                self.refused.lock().expect("not poisoned").get_or_insert_with(|| e.clone());
            }
        }
    }
}

/// Reads the newest position of one stream; also what `status` uses, beside a running stream.
pub struct PositionReader {
    topic: String,
    key: String,
    consumer: BaseConsumer,
}

/// A position as found in Kafka.
pub struct Saved {
    pub position: Position,
    /// When it was written (the message's timestamp), in milliseconds since the epoch.
    pub written_ms: Option<i64>,
}

impl PositionReader {
    pub fn new(settings: &KafkaSettings, topic: &str, key: &str) -> Result<PositionReader> {
        let mut config = settings.consumer_config()?;
        config.set("group.id", "binlog-tail-position-reader").set("enable.partition.eof", "true");
        let consumer = config.create().context("cannot create the Kafka client that reads the position")?;
        Ok(PositionReader { topic: topic.to_string(), key: key.to_string(), consumer })
    }

    /// The key's newest message: its offset, value (None: a tombstone) and timestamp. An error
    /// while Kafka cannot be reached.
    #[allow(clippy::type_complexity)]
    fn newest(&self) -> Result<Option<(i64, Option<Vec<u8>>, Option<i64>)>> {
        let key = self.key.as_bytes();
        let ours = |msg: &BorrowedMessage<'_>| {
            (msg.key() == Some(key)).then(|| (msg.payload().map(<[u8]>::to_vec), msg.timestamp().to_millis()))
        };
        Ok(tail::newest(&self.consumer, &self.topic, PARTITION, i64::MAX, ours)?
            .map(|(offset, (value, ts))| (offset, value, ts)))
    }

    /// The newest position, None if there is none; an error also while Kafka cannot be reached.
    pub fn read(&self) -> Result<Option<Saved>> {
        let found = self.newest().with_context(|| format!("cannot read {self}"))?;
        self.decode(found)
    }

    fn decode(&self, found: Option<(i64, Option<Vec<u8>>, Option<i64>)>) -> Result<Option<Saved>> {
        match found {
            None => Ok(None),
            Some((offset, None, _)) => {
                tracing::info!("{self} was deleted (a tombstone at offset {offset}): no saved position");
                Ok(None)
            }
            Some((offset, Some(value), written_ms)) => {
                let text =
                    std::str::from_utf8(&value).map_err(|_| anyhow!("{self} at offset {offset} is not UTF-8 text"))?;
                let position = Position::parse(text).with_context(|| format!("{self}, offset {offset}"))?;
                Ok(Some(Saved { position, written_ms }))
            }
        }
    }
}

impl std::fmt::Display for PositionReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the position in Kafka topic {} under key {}", self.topic, self.key)
    }
}

pub struct KafkaPositions {
    producer: BaseProducer<Saves>,
    reader: PositionReader,
    lease: Holder,
    shutdown: Arc<Shutdown>,
    redact: Redactor,
}

impl KafkaPositions {
    /// The store of stream `key` in `topic`; `lease` says when saving is allowed.
    pub fn open(
        settings: &KafkaSettings,
        topic: &str,
        key: &str,
        lease: Holder,
        shutdown: Arc<Shutdown>,
    ) -> Result<KafkaPositions> {
        let redact = settings.redactor();
        let mut config = settings.client_config()?;
        // A few small messages a second: nothing to batch. Every position covers only acknowledged
        // messages, so one lost among later ones leaves no gap.
        config.set("linger.ms", "0").remove("enable.gapless.guarantee");
        let producer = config
            .create_with_context(Saves {
                in_flight: Mutex::new(0),
                refused: Mutex::new(None),
                last_ack: Mutex::new(Instant::now()),
                redact: redact.clone(),
            })
            .map_err(|e| {
                anyhow!("cannot create the Kafka producer of the position store: {}", redact.apply(&e.to_string()))
            })?;
        let reader = PositionReader::new(settings, topic, key)?;
        Ok(KafkaPositions { producer, reader, lease, shutdown, redact })
    }

    /// Whether this instance may send and save now.
    pub fn lease(&self) -> Holder {
        self.lease.clone()
    }

    /// Checks that the topic exists and is compacted only, waiting while Kafka cannot be reached.
    pub fn check_topic(&self, settings: &KafkaSettings, rt: &Handle) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = settings
            .client_config()?
            .create()
            .map_err(|e| anyhow!("cannot create the Kafka admin client: {}", self.redact.apply(&e.to_string())))?;
        let create = format!(
            "kafka-topics.sh --bootstrap-server {} --create --topic {} --partitions 1 --config cleanup.policy=compact",
            settings.brokers, self.reader.topic
        );
        let partitions = self.until_answered("read the metadata of the position topic", || {
            match self.reader.consumer.fetch_metadata(Some(&self.reader.topic), Duration::from_secs(5)) {
                Ok(meta) => Ok(Some(meta.topics().first().map_or(0, |t| t.partitions().len()))),
                Err(e) => {
                    tracing::debug!("reading the metadata of Kafka topic {}: {e}", self.reader.topic);
                    Ok(None)
                }
            }
        })?;
        if partitions == 0 {
            bail!(
                "the Kafka topic {} for positions does not exist (brokers often do not create topics): create it compacted, e.g. {create}",
                self.reader.topic
            );
        }
        let policy = self.until_answered("describe the position topic", || {
            let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
            let resource = ResourceSpecifier::Topic(&self.reader.topic);
            let results = match rt.block_on(admin.describe_configs([&resource], &options)) {
                Ok(results) => results,
                Err(e) => {
                    tracing::debug!("describing Kafka topic {}: {e}", self.reader.topic);
                    return Ok(None);
                }
            };
            match results.into_iter().next() {
                Some(Ok(config)) => Ok(Some(config.get("cleanup.policy").and_then(|e| e.value.clone()).unwrap_or_default())),
                Some(Err(code @ (RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed))) => bail!(
                    "cannot read the configuration of the Kafka topic {} ({code}): grant this client DESCRIBE_CONFIGS on it, so that binlog-tail can check that it is compacted",
                    self.reader.topic
                ),
                Some(Err(code)) => bail!("cannot read the configuration of the Kafka topic {}: {code}", self.reader.topic),
                None => Ok(None),
            }
        })?;
        let policies: Vec<&str> = policy.split(',').map(str::trim).collect();
        if !policies.contains(&"compact") || policies.contains(&"delete") {
            let policy = if policy.is_empty() { "delete (Kafka's default)" } else { &policy };
            bail!(
                "the Kafka topic {} for positions has cleanup.policy {policy}: it must be compact only, or Kafka deletes the position of a stream that stays idle longer than the topic's retention, and its next start would skip or repeat changes. Change it with kafka-configs.sh --bootstrap-server {} --alter --entity-type topics --entity-name {} --add-config cleanup.policy=compact",
                self.reader.topic,
                settings.brokers,
                self.reader.topic
            );
        }
        Ok(())
    }

    /// The newest position under the key, None if there is none.
    pub fn load(&self) -> Result<Option<Position>> {
        let found = self.until_answered("read the position", || match self.reader.newest() {
            Ok(found) => Ok(Some(found)),
            Err(e) => {
                tracing::debug!("{e:#}");
                Ok(None)
            }
        })?;
        Ok(self.reader.decode(found)?.map(|saved| saved.position))
    }

    /// Sends `pos`; Kafka's acknowledgement is waited for by `flush` (or the next save reports
    /// a refusal). The stream does not wait a broker round trip per checkpoint, and since the
    /// positions of one key go to one partition in order (idempotent producer), the newest one
    /// acknowledged is the newest saved.
    pub fn save(&self, pos: &Position) -> Result<()> {
        if !self.lease.held() {
            if self.lease.claimed() {
                // The fence lapsed for a moment (a slow read of the partition): a later save
                // covers this one.
                return Ok(());
            }
            return Err(LeaseLost.into());
        }
        self.producer.poll(Duration::ZERO);
        self.check_refused()?;
        let value = serde_json::to_vec(pos)?;
        let mut record = BaseRecord::to(&self.reader.topic).partition(PARTITION).key(&self.reader.key).payload(&value);
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.wait_a_moment()?;
                }
                Err((e, _)) => bail!("cannot save {self}: {}", self.redact.apply(&e.to_string())),
            }
        }
        *self.producer.context().in_flight.lock().expect("not poisoned") += 1;
        Ok(())
    }

    /// Waits until Kafka acknowledged every position sent.
    pub fn flush(&self) -> Result<()> {
        let mut reported = Instant::now();
        while *self.producer.context().in_flight.lock().expect("not poisoned") > 0 {
            self.wait_a_moment()?;
            if reported.elapsed() >= REPORT_EVERY {
                tracing::warn!("waiting for Kafka to acknowledge {self}");
                reported = Instant::now();
            }
        }
        self.check_refused()
    }

    /// Serves delivery reports for a moment; an error once a stop was requested and Kafka
    /// stopped acknowledging, or when it refused a position.
    fn wait_a_moment(&self) -> Result<()> {
        self.producer.poll(Duration::from_millis(20));
        self.check_refused()?;
        let last_ack = *self.producer.context().last_ack.lock().expect("not poisoned");
        if let Some(why) = self.shutdown.stop_waiting(last_ack) {
            bail!("stopped ({why}) before Kafka acknowledged {self}; the last position it acknowledged stays saved");
        }
        Ok(())
    }

    fn check_refused(&self) -> Result<()> {
        match &*self.producer.context().refused.lock().expect("not poisoned") {
            Some(e) => bail!("Kafka refused {self}: {e}{}", hint(e)),
            None => Ok(()),
        }
    }

    /// Asks `f` until Kafka answers (Some), saying every `REPORT_EVERY` that it waits; a stop
    /// request ends the wait.
    fn until_answered<T>(&self, what: &str, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
        let mut reported = Instant::now();
        loop {
            if let Some(answer) = f()? {
                return Ok(answer);
            }
            if self.shutdown.requested() {
                return Err(Stopped(format!("waiting for Kafka to {what}")).into());
            }
            if reported.elapsed() >= REPORT_EVERY {
                tracing::warn!("waiting for Kafka to {what} ({self})");
                reported = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl std::fmt::Display for KafkaPositions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.reader.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::now_rfc3339;
    use crate::position::{Flavor, Resume, ServerIdentity};
    use rdkafka::mocking::MockCluster;

    fn position(offset: u64) -> Position {
        let resume = Resume::new(Arc::from("binlog.000003"), offset, None);
        let server = ServerIdentity { uuid: None, server_id: 1, hostname: "db".into() };
        Position::new(Flavor::MariaDb, &resume, server, now_rfc3339())
    }

    fn store(brokers: &str, key: &str) -> KafkaPositions {
        let settings = crate::sink::kafka::config::test_settings(brokers);
        KafkaPositions::open(&settings, "positions", key, Holder::for_tests(true), Shutdown::new()).unwrap()
    }

    /// Writes `n` messages of other streams (and one tombstone of theirs) to the partition.
    fn others(brokers: &str, n: usize) {
        let producer: BaseProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
        for i in 0..n {
            let value = format!("{{\"other\": {i}}}");
            producer
                .send(BaseRecord::to("positions").partition(PARTITION).key(&format!("other-{}", i % 7)).payload(&value))
                .unwrap();
        }
        producer.send(BaseRecord::<str, ()>::to("positions").partition(PARTITION).key("other-0")).unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn the_newest_position_of_the_key_is_found_past_other_streams() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("positions", 3, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let a = store(&brokers, "a");
        assert_eq!(a.load().unwrap(), None, "an empty topic");
        a.save(&position(100)).unwrap();
        a.save(&position(200)).unwrap();
        a.flush().unwrap();
        assert_eq!(a.load().unwrap().map(|p| p.offset), Some(200));
        // More messages of other streams than several windows hold.
        others(&brokers, 500);
        let b = store(&brokers, "b");
        assert_eq!(b.load().unwrap(), None, "another key has no position");
        b.save(&position(7)).unwrap();
        b.flush().unwrap();
        assert_eq!(store(&brokers, "a").load().unwrap().map(|p| p.offset), Some(200));
        assert_eq!(b.load().unwrap().map(|p| p.offset), Some(7));
    }

    #[test]
    fn tombstones_and_corrupt_values() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("positions", 1, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let a = store(&brokers, "a");
        a.save(&position(100)).unwrap();
        a.flush().unwrap();
        let producer: BaseProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
        producer.send(BaseRecord::<str, ()>::to("positions").partition(PARTITION).key("a")).unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
        assert_eq!(a.load().unwrap(), None, "a tombstone deletes the position");
        producer
            .send(BaseRecord::to("positions").partition(PARTITION).key("a").payload("{\"version\": 2, \"fla"))
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
        let err = format!("{:#}", a.load().unwrap_err());
        assert!(err.contains("corrupt") && err.contains("under key a, offset 2"), "{err}");
    }

    #[test]
    fn a_refused_position_is_an_error_at_the_flush_and_the_next_save() {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("positions", 1, 1).unwrap();
        let a = store(&cluster.bootstrap_servers(), "a");
        a.save(&position(100)).unwrap();
        a.flush().unwrap();
        cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED]);
        a.save(&position(200)).unwrap();
        let err = a.flush().unwrap_err().to_string();
        assert!(
            err.contains("Kafka refused the position in Kafka topic positions under key a")
                && err.contains("grant this client WRITE"),
            "{err}"
        );
        assert!(a.save(&position(300)).is_err(), "nothing is saved after a refusal");
        assert_eq!(a.load().unwrap().map(|p| p.offset), Some(100));
    }

    #[test]
    fn a_lost_lease_saves_nothing() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("positions", 1, 1).unwrap();
        let settings = crate::sink::kafka::config::test_settings(&cluster.bootstrap_servers());
        let lost = Holder::for_tests(false);
        let s = KafkaPositions::open(&settings, "positions", "a", lost, Shutdown::new()).unwrap();
        assert!(s.save(&position(1)).unwrap_err().is::<LeaseLost>());
        assert_eq!(s.load().unwrap(), None);
    }
}
