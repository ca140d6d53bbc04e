//! One writer per stream with the Kafka position store: a lease chosen by a Kafka consumer
//! group and fenced by records in the position partition.
//!
//! Every instance of a stream joins the group `binlog-tail.NAME`, subscribed to the position
//! topic with the cooperative-sticky assignor; the member assigned partition 0 (where every
//! position is kept) is the one that claims the stream. The group only chooses: a coordinator
//! may hand the partition to a second member before the first was told (tansu 0.6 does, under
//! no fault: its JoinGroup has no barrier, so a member can be assigned partition 0 while the
//! holder keeps it), so sending is fenced by the partition itself, a totally ordered log:
//!
//! - A claim is a record `{"claim": ID}` under the key `NAME/lease` (a name cannot hold `/`)
//!   in partition 0. Every instance follows the partition from its start (`follow`).
//! - A holder sends (and saves positions) only until `T/2` after the start of its last complete
//!   read of the partition up to its end that found no newer claim of another instance (`T` is
//!   `--kafka-lease-timeout`). A newer claim fences it at once; a read that fails or is late
//!   lets the fence lapse, and the sink waits for the next read (`Fenced`).
//! - A new claim is used only `T` after its claimant read it back; or at once if the newest
//!   claim before it was released by its holder after that holder had used it and stopped (a
//!   clean handover, see `Record::Release`).
//! - Who claims: the member assigned partition 0, when the newest claim was released, or when
//!   the group assigns the partition anew and the newest claim was not renewed for `T` (its
//!   holder renews every `T/3`): a live holder keeps the stream even if the coordinator hands
//!   the partition to a second member. Only liveness depends on the group; safety does not.
//!
//! Why two instances cannot send at once: once claim C is in the log, every read of another
//! instance that starts later finds it and fences that instance; a read that started earlier
//! lets it send for at most `T/2` after that start, so `T/2` after C landed every other holder
//! has stopped handing messages to the producer, and C's claimant waits `T`. With the shortcut, by
//! induction: the released claim was the only one in use, its holder stopped before writing
//! the release, and no claim came between. This relies on:
//! - Kafka: an acknowledged record is seen by every read that starts after the acknowledgement
//!   (`acks=all`, reads up to the high watermark) — what any Kafka-protocol broker provides.
//! - Clocks: only durations on each machine's monotonic clock; their rates may differ by far
//!   less than the spare `T/2` (no wall clock, no synchronisation).
//! - Every instance of the stream runs a version that claims (an older one only follows the
//!   group). Compaction may remove claims: an instance that cannot find the newest claim and its
//!   release assumes the worst and waits `T`.
//! - The spare `T/2` also covers messages handed to the producer before the fence: they are sent
//!   within `linger.ms` and a round trip. A request still unanswered after that (a broker stalled
//!   for seconds) can land after the new holder started: Kafka itself cannot fence a
//!   non-transactional producer. Such a late message duplicates one; it cannot leave a gap, as
//!   every saved position covers only acknowledged messages.
//!
//! Invariants:
//! - A holder gives the partition back only once its stream has stopped and saved its last
//!   position, then releases its claim: a graceful handover replays nothing and waits for nothing.
//! - A fenced or lost holder saves nothing more, sends nothing more, and stands by until its
//!   group assigns the partition again or the claim that fenced it is released.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::kafka::PARTITION;
use crate::event::{Change, Ddl};
use crate::metrics::Metrics;
use crate::outbox::Message;
use crate::position::Resume;
use crate::shutdown::{Shutdown, Stopped};
use crate::sink::kafka::config::{log_librdkafka, KafkaSettings, Redactor};
use crate::sink::kafka::tail;
use crate::sink::Sink;

/// How long a holder asked to give the lease back waits for its stream to stop and save. The
/// stream's own wait for Kafka after a stop request ends sooner (`shutdown::GRACE`).
const HANDOVER_WAIT: Duration = Duration::from_secs(30);

/// How long a new instance waits for the lease before saying that it stands by.
const STANDBY_NOTICE: Duration = Duration::from_secs(3);

/// How far back from the partition's end a starting instance looks for the newest claim.
const LOOKBACK: i64 = 100_000;

/// How long a claim may take to be read back before it is tried again.
const CLAIM_WAIT: Duration = Duration::from_secs(30);

/// A position save or a message refused because the lease is gone.
#[derive(Debug, Error)]
#[error("this instance lost the stream lease (another instance claimed it, or its Kafka group session expired): the stream is left to the instance that holds it now")]
pub struct LeaseLost;

/// A record under the key `NAME/lease` in the position partition.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
enum Record {
    Claim(String),
    /// The claim's holder still streams on it (written every `T / 3`).
    Renew(String),
    /// The claim's holder stopped; `used`: it had streamed on it (so every earlier claim was
    /// stopped too) and everything it sent was acknowledged, which lets the next claim be used
    /// at once.
    Release {
        claim: String,
        used: bool,
    },
}

/// The newest claim in the partition, as far as this instance knows.
#[derive(Clone, PartialEq, Debug)]
enum Last {
    Unknown,
    Claimed(String),
    Released { claim: String, used: bool },
}

/// This instance's current claim.
struct Mine {
    id: String,
    /// Read back (with whether the claim before it was released after use), and when.
    seen: Option<(bool, Instant)>,
    /// May be streamed on (after the wait, or at once).
    usable: bool,
}

struct State {
    topic: String,
    key: String,
    group: String,
    /// `--kafka-lease-timeout`.
    timeout: Duration,
    shutdown: Arc<Shutdown>,
    metrics: Metrics,
    /// Writes the lease records.
    producer: Option<BaseProducer>,
    /// Counts the times sending was stopped, so a sink may keep a copy of `until` meanwhile.
    fences: AtomicU64,
    inner: Mutex<Inner>,
    changed: Condvar,
}

struct Inner {
    /// Partition 0 is assigned to this member.
    held: bool,
    /// Assignments of partition 0 so far, and the one last claimed on.
    assigned: u64,
    claimed: u64,
    /// A stream runs on the lease.
    streaming: bool,
    /// The partition is being revoked: it goes once the stream has stopped.
    revoking: bool,
    /// The partition has been followed from its start (the newest earlier claim is known).
    following: bool,
    last: Last,
    mine: Option<Mine>,
    /// Sending is allowed before this instant.
    until: Option<Instant>,
    /// When the newest claim was last written or renewed, as read here.
    heard: Instant,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("not poisoned")
    }

    fn assigned(&self) {
        let mut inner = self.lock();
        inner.held = true;
        inner.assigned += 1;
        drop(inner);
        self.changed.notify_all();
    }

    fn revoked(&self, lost: bool) {
        let mut inner = self.lock();
        if !inner.held {
            return;
        }
        if lost {
            inner.held = false;
            if inner.streaming {
                tracing::warn!("lost the stream lease (Kafka group {}): this instance was not heard from in time; stopping without sending or saving more", self.group);
            }
            self.fence(&mut inner);
            return;
        }
        if inner.streaming {
            tracing::info!("another instance of the stream is taking over the lease (Kafka group {})", self.group);
            inner.revoking = true;
            self.shutdown.handover();
            let deadline = Instant::now() + HANDOVER_WAIT;
            while inner.streaming && Instant::now() < deadline {
                inner = self.changed.wait_timeout(inner, Duration::from_millis(200)).expect("not poisoned").0;
            }
        }
        inner.held = false;
        inner.revoking = false;
        self.changed.notify_all();
    }

    /// Writes a lease record and waits up to `wait` for Kafka to take it (none: not at all).
    fn write(&self, record: &Record, wait: Duration) -> Result<()> {
        let Some(producer) = &self.producer else { return Ok(()) };
        let value = serde_json::to_vec(record)?;
        producer
            .send(BaseRecord::to(&self.topic).partition(PARTITION).key(&self.key).payload(&value))
            .map_err(|(e, _)| e)?;
        if wait.is_zero() {
            producer.poll(Duration::ZERO);
        } else {
            producer.flush(wait)?;
        }
        Ok(())
    }

    /// Stops sending at once: the claim is no longer ours to use.
    fn fence(&self, inner: &mut Inner) {
        inner.until = None;
        self.fences.fetch_add(1, Ordering::SeqCst);
        if inner.mine.take().is_some_and(|m| m.usable) {
            self.metrics.set_lease_held(false);
            self.shutdown.handover();
        }
        self.changed.notify_all();
    }

    /// A lease record read at `offset` of the partition.
    fn record(&self, offset: i64, record: Record) {
        let mut inner = self.lock();
        match record {
            Record::Claim(id) => {
                let after_use = matches!(inner.last, Last::Released { used: true, .. });
                if let Some(mine) = inner.mine.as_mut().filter(|m| m.id == id) {
                    mine.seen = Some((after_use, Instant::now()));
                } else if inner.mine.as_ref().is_some_and(|m| m.seen.is_some()) {
                    tracing::warn!("another instance claimed the stream lease (offset {offset} of {}[{PARTITION}]): this one stops sending", self.topic);
                    self.fence(&mut inner);
                }
                inner.last = Last::Claimed(id);
                inner.heard = Instant::now();
            }
            Record::Renew(id) => {
                // Unknown: the claim was older than this instance's look back, or compacted away.
                if matches!(&inner.last, Last::Claimed(c) if *c == id) || inner.last == Last::Unknown {
                    inner.last = Last::Claimed(id);
                    inner.heard = Instant::now();
                }
            }
            Record::Release { claim, used } => {
                if inner.last == Last::Claimed(claim.clone()) {
                    inner.last = Last::Released { claim, used };
                }
            }
        }
        drop(inner);
        self.changed.notify_all();
    }

    /// A read that started at `start` reached the partition's end.
    fn checked(&self, start: Instant) {
        let mut inner = self.lock();
        if inner.mine.as_ref().is_some_and(|m| m.usable) {
            inner.until = Some(start + self.timeout / 2);
        }
        drop(inner);
        self.changed.notify_all();
    }
}

struct Context {
    state: Arc<State>,
    /// Takes `-X` values out of librdkafka's text.
    redact: Redactor,
}

impl Context {
    fn ours(&self, tpl: &TopicPartitionList) -> bool {
        tpl.find_partition(&self.state.topic, PARTITION).is_some()
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_librdkafka(" lease", level, fac, &self.redact.apply(message));
    }

    // Broker errors are logged by the producer, which meets the same brokers.
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("Kafka lease: {} ({error})", self.redact.apply(reason));
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if self.ours(tpl) {
                tracing::debug!("Kafka lease: partition {PARTITION} revoked");
                self.state.revoked(consumer.assignment_lost());
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if self.ours(tpl) {
                tracing::debug!("Kafka lease: partition {PARTITION} assigned");
                self.state.assigned();
            }
        }
    }
}

/// Whether this instance may send and save now.
#[derive(Clone)]
pub struct Holder(Arc<State>);

impl Holder {
    pub fn held(&self) -> bool {
        self.0.lock().until.is_some_and(|until| Instant::now() < until)
    }

    /// Whether the claim is still this instance's (its fence may have lapsed for a while).
    pub fn claimed(&self) -> bool {
        self.0.lock().mine.as_ref().is_some_and(|m| m.usable)
    }

    /// Waits until sending is allowed; an error once the claim is lost or a stop was asked.
    fn wait_fence(&self) -> Result<()> {
        let state = &self.0;
        let mut inner = state.lock();
        loop {
            if inner.until.is_some_and(|until| Instant::now() < until) {
                return Ok(());
            }
            if !inner.mine.as_ref().is_some_and(|m| m.usable) {
                return Err(LeaseLost.into());
            }
            if state.shutdown.requested() {
                return Err(Stopped("waiting to read the stream lease from Kafka".into()).into());
            }
            inner = state.changed.wait_timeout(inner, Duration::from_millis(50)).expect("not poisoned").0;
        }
    }

    /// A lease held (or lost) from the start, for tests of the store alone.
    #[cfg(test)]
    pub fn for_tests(held: bool) -> Holder {
        let state = State {
            topic: String::new(),
            key: String::new(),
            group: String::new(),
            timeout: Duration::from_secs(3600),
            shutdown: Shutdown::new(),
            metrics: Metrics::new(),
            producer: None,
            fences: AtomicU64::new(0),
            inner: Mutex::new(Inner::new()),
            changed: Condvar::new(),
        };
        let state = Holder(Arc::new(state));
        if held {
            let mut inner = state.0.lock();
            inner.mine = Some(Mine { id: String::new(), seen: Some((true, Instant::now())), usable: true });
            inner.until = Some(Instant::now() + Duration::from_secs(3600));
        }
        state
    }
}

impl Inner {
    fn new() -> Inner {
        Inner {
            held: false,
            assigned: 0,
            claimed: 0,
            streaming: false,
            revoking: false,
            following: false,
            last: Last::Unknown,
            mine: None,
            until: None,
            heard: Instant::now(),
        }
    }
}

/// A sink that hands nothing over while the lease is not (or no longer) this instance's.
pub struct Fenced {
    sink: Box<dyn Sink>,
    lease: Holder,
    /// A copy of the lease's `until`, valid while its `fences` count is the same: a message
    /// costs an atomic load and a clock read, not a lock.
    until: Option<(u64, Instant)>,
}

impl Fenced {
    pub fn new(sink: Box<dyn Sink>, lease: Holder) -> Fenced {
        Fenced { sink, lease, until: None }
    }

    fn check(&mut self) -> Result<()> {
        let state = &self.lease.0;
        let fences = state.fences.load(Ordering::SeqCst);
        if self.until.is_some_and(|(n, until)| n == fences && Instant::now() < until) {
            return Ok(());
        }
        self.lease.wait_fence()?;
        self.until = state.lock().until.map(|until| (fences, until));
        Ok(())
    }
}

impl Sink for Fenced {
    fn change(&mut self, change: &Change) -> Result<()> {
        self.check()?;
        self.sink.change(change)
    }
    fn ddl(&mut self, ddl: &Ddl) -> Result<()> {
        self.check()?;
        self.sink.ddl(ddl)
    }
    fn message(&mut self, msg: &Message) -> Result<()> {
        self.check()?;
        self.sink.message(msg)
    }
    fn signal(&mut self, signal: &crate::signal::Signal) -> Result<()> {
        self.sink.signal(signal)
    }
    fn commit(&mut self, resume: &Resume) -> Result<()> {
        self.sink.commit(resume)
    }
    fn acknowledged(&mut self) -> Result<Option<Resume>> {
        self.sink.acknowledged()
    }
    fn flush(&mut self) -> Result<()> {
        self.sink.flush()
    }
}

/// The stream's lease; leaving the group when dropped lets a standby take over at once.
pub struct Lease {
    state: Arc<State>,
    /// Terms this process has streamed on the lease.
    terms: std::sync::atomic::AtomicU32,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Lease {
    /// Joins the stream's group and follows the position partition. `timeout` is how long this
    /// instance may go unheard before a standby takes over.
    pub fn join(
        settings: &KafkaSettings,
        topic: &str,
        name: &str,
        timeout: Duration,
        shutdown: Arc<Shutdown>,
        metrics: Metrics,
    ) -> Result<Lease> {
        let group = format!("binlog-tail.{name}");
        let timeout = timeout.max(Duration::from_secs(1));
        let mut config = settings.client_config()?;
        config.set("linger.ms", "0").remove("enable.gapless.guarantee");
        let producer: BaseProducer =
            config.create().context("cannot create the Kafka producer that claims the stream lease")?;
        let state = Arc::new(State {
            topic: topic.to_string(),
            key: format!("{name}/lease"),
            group: group.clone(),
            timeout,
            shutdown,
            metrics,
            producer: Some(producer),
            fences: AtomicU64::new(0),
            inner: Mutex::new(Inner::new()),
            changed: Condvar::new(),
        });
        let session = timeout.as_millis();
        let mut config = settings.consumer_config()?;
        config
            .set("group.id", &group)
            // Keeps the holder's partition when a standby joins: only a departure moves it.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 5).to_string())
            .set("max.poll.interval.ms", (session * 2).max(300_000).to_string())
            // The group reads no positions; the store does.
            .set("auto.offset.reset", "latest");
        let consumer: BaseConsumer<Context> = config
            .create_with_context(Context { state: state.clone(), redact: settings.redactor() })
            .context("cannot create the Kafka client that holds the stream lease")?;
        consumer.subscribe(&[topic]).with_context(|| format!("cannot join the Kafka group {group}"))?;
        let mut reader = settings.consumer_config()?;
        reader.set("group.id", "binlog-tail-lease-reader").set("enable.partition.eof", "true");
        let reader: BaseConsumer =
            reader.create().context("cannot create the Kafka client that reads the stream lease")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        // Rebalances run inside poll: the consumer is polled here, away from the stream.
        let group_thread = std::thread::Builder::new().name("kafka-lease".into()).spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                let _ = consumer.poll(Duration::from_millis(100));
            }
        })?;
        let (following, stopping) = (state.clone(), stop.clone());
        let follow_thread = std::thread::Builder::new()
            .name("kafka-lease-fence".into())
            .spawn(move || follow(&following, &reader, &stopping))?;
        tracing::info!("stream lease: Kafka group {group}; this instance streams while it is assigned partition {PARTITION} of {topic} and its claim there is the newest");
        Ok(Lease { state, terms: Default::default(), stop, threads: vec![group_thread, follow_thread] })
    }

    pub fn holder(&self) -> Holder {
        Holder(self.state.clone())
    }

    fn write(&self, record: &Record) -> Result<()> {
        self.state.write(record, Duration::from_secs(10))
    }

    /// Waits until this instance holds the lease, standing by meanwhile; None once a stop was
    /// requested. The stream runs while the returned term lives.
    pub fn wait(&self) -> Option<Term<'_>> {
        let state = &self.state;
        let started = Instant::now();
        let mut noticed = false;
        loop {
            let mut inner = state.lock();
            if state.shutdown.requested() {
                return None;
            }
            // A claim renewed lately is in use, whatever the group says (a coordinator may assign
            // the partition to two members); one not renewed for T was left by a dead holder.
            let silent = inner.heard.elapsed() > state.timeout;
            let free = !matches!(&inner.last, Last::Claimed(_)) || (inner.assigned > inner.claimed && silent);
            if inner.held && !inner.revoking && inner.following && free {
                inner.claimed = inner.assigned;
                drop(inner);
                match self.claim() {
                    Ok(true) => {
                        let again = self.terms.fetch_add(1, Ordering::SeqCst) > 0;
                        if noticed || again {
                            tracing::info!("took over the stream lease (Kafka group {})", state.group);
                        } else {
                            tracing::info!("holding the stream lease (Kafka group {})", state.group);
                        }
                        return Some(Term { lease: self, settled: false });
                    }
                    Ok(false) => {}
                    Err(e) => {
                        state.lock().mine = None;
                        tracing::warn!("cannot claim the stream lease: {e:#}");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                continue;
            }
            if !noticed && started.elapsed() >= STANDBY_NOTICE {
                tracing::info!(
                    "standing by: another instance holds the stream lease (Kafka group {}), or Kafka cannot be reached; this one streams once it is assigned the lease",
                    state.group
                );
                noticed = true;
            }
            drop(state.changed.wait_timeout(inner, Duration::from_millis(100)).expect("not poisoned"));
        }
    }

    /// Claims the lease and waits until the claim may be used: true then, with `streaming` set;
    /// false if it was revoked, fenced or stopped meanwhile.
    fn claim(&self) -> Result<bool> {
        let state = &self.state;
        let id = super::new_id();
        state.lock().mine = Some(Mine { id: id.clone(), seen: None, usable: false });
        self.write(&Record::Claim(id.clone()))?;
        let asked = Instant::now();
        let mut inner = state.lock();
        let mut told = false;
        loop {
            let ours = inner.mine.as_ref().filter(|m| m.id == id);
            let Some(mine) = ours else { return Ok(false) };
            match mine.seen {
                Some((true, _)) => break,
                Some((false, seen)) if seen.elapsed() >= state.timeout => break,
                Some((false, _)) if !told => {
                    tracing::info!(
                        "claimed the stream lease: waiting {} s, until any other holder surely stopped sending",
                        state.timeout.as_secs_f32()
                    );
                    told = true;
                }
                None if asked.elapsed() > CLAIM_WAIT => {
                    inner.mine = None;
                    return Ok(false);
                }
                _ => {}
            }
            if !inner.held || inner.revoking || state.shutdown.requested() {
                inner.mine = None;
                drop(inner);
                let _ = self.write(&Record::Release { claim: id, used: false });
                return Ok(false);
            }
            inner = state.changed.wait_timeout(inner, Duration::from_millis(50)).expect("not poisoned").0;
        }
        inner.mine.as_mut().expect("checked above").usable = true;
        // Sending starts with the next complete read.
        while inner.until.is_none() && inner.mine.is_some() && !state.shutdown.requested() {
            inner = state.changed.wait_timeout(inner, Duration::from_millis(50)).expect("not poisoned").0;
        }
        if inner.until.is_none() {
            let unused = inner.mine.take().is_some();
            drop(inner);
            if unused {
                let _ = self.write(&Record::Release { claim: id, used: false });
            }
            return Ok(false);
        }
        inner.streaming = true;
        Ok(true)
    }
}

/// Follows the position partition, reading its lease records, until `stop`: first the newest
/// claim before this instance started, then every record after, reading to the end a few times
/// per lease timeout.
fn follow(state: &State, reader: &BaseConsumer, stop: &AtomicBool) {
    let every = (state.timeout / 8).max(Duration::from_millis(100));
    let lease = |m: &rdkafka::message::BorrowedMessage<'_>| {
        (m.key() == Some(state.key.as_bytes()))
            .then(|| serde_json::from_slice::<Record>(m.payload().unwrap_or_default()).ok())
            .flatten()
    };
    let mut next = loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match start_from(state, reader, &lease) {
            Ok(next) => break next,
            Err(e) => tracing::debug!("Kafka lease: reading the newest claim: {e:#}"),
        }
        std::thread::sleep(every);
    };
    let mut renewed = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let start = Instant::now();
        match read_to_end(state, reader, next, &lease) {
            Ok(to) => {
                next = to;
                state.checked(start);
            }
            Err(e) => tracing::debug!("Kafka lease: reading the partition: {e:#}"),
        }
        let used = state.lock().mine.as_ref().filter(|m| m.usable).map(|m| m.id.clone());
        if let Some(id) = used.filter(|_| renewed.elapsed() >= state.timeout / 3) {
            renewed = Instant::now();
            if let Err(e) = state.write(&Record::Renew(id), Duration::ZERO) {
                tracing::debug!("Kafka lease: renewing the claim: {e:#}");
            }
        }
        std::thread::sleep(every.saturating_sub(start.elapsed()));
    }
}

/// Finds the newest claim (and its release) before the partition's end; returns that end.
fn start_from(
    state: &State,
    reader: &BaseConsumer,
    lease: &impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> Option<Record>,
) -> Result<i64> {
    let (_, high) = reader.fetch_watermarks(&state.topic, PARTITION, Duration::from_secs(5))?;
    let claim = tail::newest(reader, &state.topic, PARTITION, LOOKBACK, |m| match lease(m) {
        Some(Record::Claim(id)) => Some(id),
        _ => None,
    })?;
    let mut last = Last::Unknown;
    if let Some((_, id)) = claim {
        last = Last::Claimed(id.clone());
        let release = tail::newest(reader, &state.topic, PARTITION, LOOKBACK, |m| match lease(m) {
            Some(Record::Release { claim, used }) if claim == id => Some(used),
            _ => None,
        })?;
        if let Some((_, used)) = release {
            last = Last::Released { claim: id, used };
        }
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&state.topic, PARTITION, Offset::Offset(high))?;
    reader.assign(&tpl)?;
    let mut inner = state.lock();
    inner.last = last;
    inner.following = true;
    drop(inner);
    state.changed.notify_all();
    Ok(high)
}

/// Reads from `next` to the partition's end as it was when the read started; returns the new
/// `next`.
fn read_to_end(
    state: &State,
    reader: &BaseConsumer,
    mut next: i64,
    lease: &impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> Option<Record>,
) -> Result<i64> {
    let (_, high) = reader.fetch_watermarks(&state.topic, PARTITION, Duration::from_secs(5))?;
    let deadline = Instant::now() + state.timeout;
    while next < high {
        anyhow::ensure!(Instant::now() < deadline, "no answer in time");
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if let Some(record) = lease(&m) {
                    state.record(m.offset(), record);
                }
                next = m.offset() + 1;
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
    Ok(next)
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            // The consumer leaves the group as the thread drops it.
            let _ = thread.join();
        }
    }
}

/// A stream running on the lease; when it ends, the claim is released and a pending revocation
/// may complete.
pub struct Term<'a> {
    lease: &'a Lease,
    /// The stream stopped with everything it sent acknowledged (`end`).
    settled: bool,
}

impl Term<'_> {
    /// Ends the term; `settled`: everything sent was acknowledged, so the next claim need not
    /// wait for what is still in flight.
    pub fn end(mut self, settled: bool) {
        self.settled = settled;
    }
}

impl Drop for Term<'_> {
    fn drop(&mut self) {
        let (lease, used) = (self.lease, self.settled);
        let state = &lease.state;
        state.metrics.set_lease_held(false);
        let mut inner = state.lock();
        inner.until = None;
        state.fences.fetch_add(1, Ordering::SeqCst);
        let mine = inner.mine.take();
        if let Some(mine) = &mine {
            // Stopped: this instance may claim again, and (once the release is read, if the
            // stream settled) the next claim need not wait.
            inner.last = Last::Released { claim: mine.id.clone(), used };
        }
        drop(inner);
        if let Some(mine) = mine {
            if let Err(e) = lease.write(&Record::Release { claim: mine.id, used }) {
                tracing::debug!("Kafka lease: releasing the claim: {e:#}");
            }
        }
        let mut inner = state.lock();
        inner.streaming = false;
        if inner.revoking {
            inner.held = false;
        }
        drop(inner);
        state.changed.notify_all();
    }
}
