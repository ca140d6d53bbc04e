//! Prometheus metrics and the probes' state, shared by the pipeline and the HTTP endpoint.
//!
//! Invariants: `stream` and `dump --url` always count (the catch-up progress and the readiness
//! read the handle too); only `--metrics-addr` serves what they count, and `dump --file` counts
//! nothing. Counters only go up. `binlog_tail_lag_seconds` is computed when scraped: 0 once the
//! server has said that nothing is left to send (a heartbeat, which servers send only at the end
//! of their binlog) or the read position is the server's binlog end, and otherwise now minus the
//! timestamp of the last event read. A connection that has gone silent — nothing, not even a
//! heartbeat, for one and a half heartbeat periods, or one found dead and not yet replaced —
//! shows at least the time since anything arrived, so a frozen or dead server shows a growing
//! lag, never a frozen 0 (a standby instance, which reads nothing, shows none).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql_common::binlog::consts::EventType;
use prometheus_client::encoding::EncodeLabelSet;

use crate::frame::Header;
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    pub db: String,
    pub table: String,
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

/// The families of a sink that counts its own deliveries, under `binlog_tail_<prefix>_`:
/// `in_flight_<unit>`, `acknowledged_<unit>_total`, a retry counter and, where the sink measures
/// it, an acknowledgement latency histogram. The names are documented (docs/nats.md, http.md,
/// redis.md), so each sink keeps its own words for the retry counter and the latency.
struct SinkFamilies {
    prefix: &'static str,
    unit: &'static str,
    in_flight: &'static str,
    acknowledged: &'static str,
    /// (name, help)
    retries: (&'static str, &'static str),
    /// (name, help), in seconds
    latency: Option<(&'static str, &'static str)>,
}

const NATS: SinkFamilies = SinkFamilies {
    prefix: "nats",
    unit: "messages",
    in_flight: "Messages published to NATS and waiting for their PubAck",
    acknowledged: "Messages NATS JetStream acknowledged",
    retries: (
        "resent_messages",
        "Messages sent again after a failure (no PubAck in time, the server down, a broken order)",
    ),
    latency: None,
};

const HTTP_SINK: SinkFamilies = SinkFamilies {
    prefix: "http_sink",
    unit: "rows",
    in_flight: "Events POSTed and waiting for the receiver's 2xx",
    acknowledged: "Events the HTTP receiver acknowledged (2xx)",
    retries: ("retries", "Requests sent again after a 408, 429 or 5xx, a timeout or a connection failure"),
    latency: Some(("request_latency", "From sending a batch to the 2xx of the attempt that delivered it")),
};

const REDIS: SinkFamilies = SinkFamilies {
    prefix: "redis",
    unit: "entries",
    in_flight: "Entries handed to the Redis writer and not yet applied",
    acknowledged: "Entries Redis applied",
    retries: (
        "retries",
        "Tries of a batch that failed for a reason retrying can change (Redis down, a timeout, LOADING)",
    ),
    latency: Some(("ack_latency", "From cutting a batch to Redis applying it and every batch before it")),
};

/// One sink's delivery counts (see `SinkFamilies`); in flight goes up when handed over and down
/// when settled, acknowledged only up.
pub struct SinkMetrics {
    in_flight: Gauge,
    acknowledged: Counter,
    retries: Counter,
    latency: Option<Histogram>,
}

impl SinkMetrics {
    fn new(families: &SinkFamilies) -> SinkMetrics {
        SinkMetrics {
            in_flight: Gauge::default(),
            acknowledged: Counter::default(),
            retries: Counter::default(),
            // 0.5 ms to about 65 s.
            latency: families.latency.map(|_| Histogram::new(exponential_buckets(0.0005, 2.0, 18))),
        }
    }

    fn register(&self, registry: &mut Registry, families: &SinkFamilies) {
        let sub = registry.sub_registry_with_prefix(families.prefix);
        let unit = families.unit;
        sub.register(format!("in_flight_{unit}"), families.in_flight, self.in_flight.clone());
        sub.register(format!("acknowledged_{unit}"), families.acknowledged, self.acknowledged.clone());
        sub.register(families.retries.0, families.retries.1, self.retries.clone());
        if let (Some((name, help)), Some(latency)) = (families.latency, &self.latency) {
            sub.register_with_unit(name, help, Unit::Seconds, latency.clone());
        }
    }

    /// `n` messages, events or entries were handed over.
    pub fn sent(&self, n: usize) {
        self.in_flight.inc_by(n as i64);
    }

    /// `n` were acknowledged, `latency` after what the sink measures from (ignored by a sink
    /// without a latency histogram).
    pub fn acknowledged(&self, n: usize, latency: Option<Duration>) {
        self.in_flight.dec_by(n as i64);
        self.acknowledged.inc_by(n as u64);
        if let (Some(histogram), Some(latency)) = (&self.latency, latency) {
            histogram.observe(latency.as_secs_f64());
        }
    }

    /// `n` failed: no longer in flight, to be sent again or to stop the run.
    pub fn failed(&self, n: usize) {
        self.in_flight.dec_by(n as i64);
    }

    /// `n` sent again (NATS: messages; HTTP: requests; Redis: tries of a batch).
    pub fn retried(&self, n: u64) {
        self.retries.inc_by(n);
    }
}

/// A cheap, cloneable handle on every metric.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    events_read: Counter,
    bytes_read: Counter,
    changes: Family<ChangeLabels, Counter>,
    rows_events_filtered: Counter,
    transactions: Counter,
    lag: Gauge<f64, AtomicU64>,
    behind: Gauge,
    checkpoint_age: Gauge<f64, AtomicU64>,
    checkpoints: Counter,
    checkpoint_file: Gauge,
    checkpoint_offset: Gauge,
    reconnects: Counter,
    errors: Family<ErrorLabels, Counter>,
    kafka_in_flight_messages: Gauge,
    kafka_in_flight_bytes: Gauge,
    kafka_ack_latency: Histogram,
    kafka_delivery_errors: Counter,
    nats: SinkMetrics,
    http_sink: SinkMetrics,
    redis: SinkMetrics,
    snapshot_tables_done: Gauge,
    snapshot_tables_pending: Gauge,
    lease_held: Gauge,
    ready: AtomicBool,
    /// Timestamp (seconds since the epoch) of the last non-heartbeat event read.
    last_event_ts: AtomicU64,
    /// Nothing is left to read: a heartbeat came after the last event, or the read position is
    /// the server's binlog end.
    caught_up: AtomicBool,
    /// When anything (an event or a heartbeat) last arrived, or the lease was taken if later,
    /// in milliseconds since `started`.
    last_heard_ms: AtomicU64,
    started: Instant,
    /// The server's heartbeat period in milliseconds, 0 while unknown.
    heartbeat_ms: AtomicU64,
    read: Mutex<ReadPosition>,
    last_checkpoint: Mutex<Option<Instant>>,
}

/// Where reading has got to in the server's binlog.
#[derive(Clone, Default)]
pub struct ReadPosition {
    pub file: Arc<str>,
    pub offset: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("binlog_tail");
        let inner = Inner {
            events_read: Counter::default(),
            bytes_read: Counter::default(),
            changes: Family::default(),
            rows_events_filtered: Counter::default(),
            transactions: Counter::default(),
            lag: Gauge::default(),
            behind: Gauge::default(),
            checkpoint_age: Gauge::default(),
            checkpoints: Counter::default(),
            checkpoint_file: Gauge::default(),
            checkpoint_offset: Gauge::default(),
            reconnects: Counter::default(),
            errors: Family::default(),
            kafka_in_flight_messages: Gauge::default(),
            kafka_in_flight_bytes: Gauge::default(),
            // 0.5 ms to about 65 s.
            kafka_ack_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
            kafka_delivery_errors: Counter::default(),
            nats: SinkMetrics::new(&NATS),
            http_sink: SinkMetrics::new(&HTTP_SINK),
            redis: SinkMetrics::new(&REDIS),
            snapshot_tables_done: Gauge::default(),
            snapshot_tables_pending: Gauge::default(),
            lease_held: Gauge::default(),
            ready: AtomicBool::new(false),
            last_event_ts: AtomicU64::new(0),
            caught_up: AtomicBool::new(false),
            last_heard_ms: AtomicU64::new(0),
            started: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            read: Mutex::default(),
            last_checkpoint: Mutex::new(None),
            registry: Registry::default(),
        };
        registry.register(
            "events_read",
            "Binlog events read from the server (heartbeats included)",
            inner.events_read.clone(),
        );
        registry.register("bytes_read", "Binlog bytes read from the server", inner.bytes_read.clone());
        registry.register("changes_emitted", "Change events emitted, by table and operation", inner.changes.clone());
        registry.register(
            "rows_events_filtered",
            "Rows events skipped undecoded by --include/--exclude/--ops",
            inner.rows_events_filtered.clone(),
        );
        registry.register("transactions", "Transactions read to their end", inner.transactions.clone());
        registry.register_with_unit(
            "lag",
            "Now minus the timestamp of the last event read; 0 when caught up with the server",
            Unit::Seconds,
            inner.lag.clone(),
        );
        registry.register_with_unit(
            "behind",
            "How far the read position is behind the end of the server's binlog",
            Unit::Bytes,
            inner.behind.clone(),
        );
        registry.register_with_unit(
            "checkpoint_age",
            "Seconds since the position file was last written",
            Unit::Seconds,
            inner.checkpoint_age.clone(),
        );
        registry.register("checkpoints", "Position file writes", inner.checkpoints.clone());
        registry.register(
            "checkpoint_file_number",
            "Number of the binlog file in the saved position (binlog.000042: 42)",
            inner.checkpoint_file.clone(),
        );
        registry.register_with_unit(
            "checkpoint_offset",
            "Offset in that binlog file of the saved position",
            Unit::Bytes,
            inner.checkpoint_offset.clone(),
        );
        registry.register("reconnects", "Reconnections to the server after a failure", inner.reconnects.clone());
        registry.register("stream_lease", "1 while this instance holds the stream (the position file's lock, or the Kafka store's lease); 0 while it stands by", inner.lease_held.clone());
        registry.register(
            "errors",
            "Errors by kind (connect: opening the stream; stream: while streaming)",
            inner.errors.clone(),
        );
        let snapshot = registry.sub_registry_with_prefix("snapshot");
        snapshot.register(
            "tables_done",
            "Tables whose snapshot is complete (rows read: changes_emitted{op=\"read\"})",
            inner.snapshot_tables_done.clone(),
        );
        snapshot.register(
            "tables_pending",
            "Tables the running snapshot has still to read, the current one included",
            inner.snapshot_tables_pending.clone(),
        );
        let kafka = registry.sub_registry_with_prefix("kafka");
        kafka.register(
            "in_flight_messages",
            "Messages handed to the Kafka producer and not yet acknowledged",
            inner.kafka_in_flight_messages.clone(),
        );
        kafka.register_with_unit(
            "in_flight",
            "Bytes of message values not yet acknowledged",
            Unit::Bytes,
            inner.kafka_in_flight_bytes.clone(),
        );
        kafka.register_with_unit(
            "ack_latency",
            "From reading a transaction's end to Kafka's acknowledgement of it and everything before it",
            Unit::Seconds,
            inner.kafka_ack_latency.clone(),
        );
        kafka.register(
            "delivery_errors",
            "Messages Kafka refused for good (each stops binlog-tail)",
            inner.kafka_delivery_errors.clone(),
        );
        inner.nats.register(&mut registry, &NATS);
        inner.http_sink.register(&mut registry, &HTTP_SINK);
        inner.redis.register(&mut registry, &REDIS);
        // Both kinds exist from the start, so `increase()` sees the first error.
        for kind in ["connect", "stream"] {
            let _ = inner.errors.get_or_create(&ErrorLabels { kind });
        }
        Metrics(Arc::new(Inner { registry, ..inner }))
    }

    /// One event read from the server and decoded; `file` is the binlog it came from and `next`
    /// the offset after it.
    pub fn event_read(&self, h: &Header, file: &Arc<str>, next: u64) {
        let m = &self.0;
        m.events_read.inc();
        m.bytes_read.inc_by(u64::from(h.event_size));
        m.last_heard_ms.store(m.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        // Rotates and heartbeats (MySQL and MariaDB) say where reading is, not what changed.
        if h.type_code == EventType::HEARTBEAT_EVENT as u8 {
            m.caught_up.store(true, Ordering::Relaxed);
            return;
        }
        if h.timestamp > 0 {
            m.last_event_ts.store(u64::from(h.timestamp), Ordering::Relaxed);
            m.caught_up.store(false, Ordering::Relaxed);
        }
        // A rotate's offset belongs to the file before it, and artificial events have none.
        if h.type_code == EventType::ROTATE_EVENT as u8 || next == 0 {
            return;
        }
        let mut read = m.read.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&read.file, file) {
            read.file = file.clone();
        }
        read.offset = next;
    }

    /// The heartbeat period asked of the server: a connection silent for longer shows a lag.
    pub fn set_heartbeat(&self, period: Duration) {
        self.0.heartbeat_ms.store(period.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn read_position(&self) -> ReadPosition {
        self.0.read.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The bytes between the read position and the server's binlog end, as last polled.
    pub fn set_behind(&self, bytes: u64) {
        self.0.behind.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        if bytes == 0 {
            self.0.caught_up.store(true, Ordering::Relaxed);
        }
    }

    /// The decoder's running count of rows events skipped by filters.
    pub fn set_rows_events_filtered(&self, total: u64) {
        let c = &self.0.rows_events_filtered;
        c.inc_by(total.saturating_sub(c.get()));
    }

    /// The counter of change events of one table and operation.
    pub fn changes(&self, labels: &ChangeLabels) -> Counter {
        self.0.changes.get_or_create(labels).clone()
    }

    pub fn transaction(&self) {
        self.0.transactions.inc();
    }

    /// A snapshot's progress, as delivered with a transaction end.
    pub fn snapshot_progress(&self, done: u64, pending: usize) {
        self.0.snapshot_tables_done.set(i64::try_from(done).unwrap_or(i64::MAX));
        self.0.snapshot_tables_pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    pub fn checkpoint_saved(&self, file: &str, offset: u64) {
        let m = &self.0;
        m.checkpoints.inc();
        let number = file.rsplit_once('.').and_then(|(_, n)| n.parse::<i64>().ok()).unwrap_or(0);
        m.checkpoint_file.set(number);
        m.checkpoint_offset.set(i64::try_from(offset).unwrap_or(i64::MAX));
        *m.last_checkpoint.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// A message of `bytes` was handed to the Kafka producer.
    pub fn kafka_sent(&self, bytes: usize) {
        self.0.kafka_in_flight_messages.inc();
        self.0.kafka_in_flight_bytes.inc_by(bytes as i64);
    }

    /// Kafka acknowledged a message of `bytes` (`ok`), or refused it.
    pub fn kafka_settled(&self, bytes: usize, ok: bool) {
        self.0.kafka_in_flight_messages.dec();
        self.0.kafka_in_flight_bytes.dec_by(bytes as i64);
        if !ok {
            self.0.kafka_delivery_errors.inc();
        }
    }

    /// The NATS sink's families: one message each.
    pub fn nats(&self) -> &SinkMetrics {
        &self.0.nats
    }

    /// The HTTP sink's families: events (rows) of a batch, latency per delivering request.
    pub fn http_sink(&self) -> &SinkMetrics {
        &self.0.http_sink
    }

    /// The Redis sink's families: entries of a batch, latency from cutting it to it being applied.
    pub fn redis(&self) -> &SinkMetrics {
        &self.0.redis
    }

    pub fn kafka_ack_latency(&self, latency: Duration) {
        self.0.kafka_ack_latency.observe(latency.as_secs_f64());
    }

    pub fn set_lease_held(&self, held: bool) {
        let m = &self.0;
        if held && !self.lease_held() {
            // Silence counts from taking the stream over, not from before, while standing by.
            m.last_heard_ms.store(m.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        m.lease_held.set(i64::from(held));
    }

    pub fn lease_held(&self) -> bool {
        self.0.lease_held.get() == 1
    }

    pub fn reconnect(&self) {
        self.0.reconnects.inc();
    }

    pub fn error(&self, kind: &'static str) {
        self.0.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    /// Connected and streaming (true), or reconnecting / waiting for the server (false).
    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::Relaxed);
    }

    pub fn ready(&self) -> bool {
        self.0.ready.load(Ordering::Relaxed)
    }

    /// How long nothing has arrived, when that means the connection is silent or dead: longer
    /// than one and a half heartbeat periods, or not connected (the pump gives a connection up
    /// after three silent periods). Zero otherwise, and while standing by for the lease.
    fn silence(&self) -> Duration {
        let m = &self.0;
        let since = m.started.elapsed().saturating_sub(Duration::from_millis(m.last_heard_ms.load(Ordering::Relaxed)));
        let heartbeat = Duration::from_millis(m.heartbeat_ms.load(Ordering::Relaxed));
        let overdue = !heartbeat.is_zero() && since > heartbeat.mul_f64(1.5);
        if self.lease_held() && (overdue || !self.ready()) {
            since
        } else {
            Duration::ZERO
        }
    }

    /// The Prometheus text exposition, with the time-dependent gauges computed now.
    pub fn render(&self) -> String {
        let m = &self.0;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let last = m.last_event_ts.load(Ordering::Relaxed);
        let lag = if m.caught_up.load(Ordering::Relaxed) || last == 0 { 0.0 } else { (now - last as f64).max(0.0) };
        m.lag.set(lag.max(self.silence().as_secs_f64()));
        if let Some(at) = *m.last_checkpoint.lock().unwrap_or_else(|e| e.into_inner()) {
            m.checkpoint_age.set(at.elapsed().as_secs_f64());
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_zero_after_a_heartbeat_and_grows_without_one() {
        let m = Metrics::new();
        let file: Arc<str> = Arc::from("binlog.000001");
        let old = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 100;
        let header = |type_code, timestamp, event_size| Header {
            timestamp,
            type_code,
            server_id: 1,
            event_size,
            log_pos: 150,
            flags: 0,
        };
        m.event_read(&header(EventType::QUERY_EVENT as u8, old as u32, 50), &file, 150);
        let text = m.render();
        let lag = value(&text, "binlog_tail_lag_seconds ");
        assert!(lag >= 100.0, "{text}");
        m.event_read(&header(EventType::HEARTBEAT_EVENT as u8, 0, 40), &file, 150);
        assert_eq!(value(&m.render(), "binlog_tail_lag_seconds "), 0.0);
        assert_eq!(value(&m.render(), "binlog_tail_events_read_total "), 2.0);
        assert_eq!(value(&m.render(), "binlog_tail_bytes_read_total "), 90.0);
    }

    #[test]
    fn a_silent_connection_shows_the_time_since_anything_arrived() {
        let m = Metrics::new();
        let file: Arc<str> = Arc::from("binlog.000001");
        let heartbeat = Header {
            timestamp: 0,
            type_code: EventType::HEARTBEAT_EVENT as u8,
            server_id: 1,
            event_size: 40,
            log_pos: 150,
            flags: 0,
        };
        let lag = |m: &Metrics| value(&m.render(), "binlog_tail_lag_seconds ");
        m.set_lease_held(true);
        m.set_ready(true);
        m.set_heartbeat(Duration::from_millis(40));
        m.event_read(&heartbeat, &file, 150);
        assert_eq!(lag(&m), 0.0, "a heartbeat just arrived");
        std::thread::sleep(Duration::from_millis(100));
        assert!(lag(&m) >= 0.1, "overdue heartbeats");
        m.event_read(&heartbeat, &file, 150);
        assert_eq!(lag(&m), 0.0);

        m.set_heartbeat(Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(lag(&m), 0.0, "within the heartbeat period while connected");
        m.set_ready(false);
        assert!(lag(&m) >= 0.1, "not connected: the time since anything arrived");
        m.set_lease_held(false);
        assert_eq!(lag(&m), 0.0, "a standby reads nothing and lags nothing");
        std::thread::sleep(Duration::from_millis(100));
        m.set_lease_held(true);
        assert!(lag(&m) < 0.1, "the silence counts from taking the stream over");
    }

    fn value(text: &str, prefix: &str) -> f64 {
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {text}"));
        line[prefix.len()..].trim().parse().unwrap()
    }
}
