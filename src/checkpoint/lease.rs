//! One writer per stream with the Kafka position store: a lease held as membership of a Kafka
//! consumer group.
//!
//! Every instance of a stream joins the group `binlog-tail.NAME`, subscribed to the position
//! topic with the cooperative-sticky assignor. The member assigned partition 0 (where every
//! position is kept) streams; the others stand by. A standby is assigned the partition when the
//! holder leaves the group (a clean stop: at once) or its session expires (a crash, a network
//! cut, a paused process: after `--kafka-lease-timeout`).
//!
//! Invariants:
//! - A holder gives the partition back only once its stream has stopped and saved its last
//!   position, so a graceful handover replays nothing.
//! - Once the assignment is lost (the coordinator expired the session), nothing more is saved,
//!   and the stream stops after the current transaction.
//! - Not guaranteed: a holder that is paused or cut off from the coordinator, but not from the
//!   partition leaders, may send until it learns that its session expired (about one heartbeat
//!   after it resumes). What it sends then can duplicate the new holder's messages; it cannot
//!   leave a gap, since every saved position, whoever saved it, covers only acknowledged
//!   messages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, TopicPartitionList};
use thiserror::Error;

use super::kafka::PARTITION;
use crate::shutdown::Shutdown;
use crate::sink::kafka::config::{log_librdkafka, KafkaSettings, Redactor};

/// How long a holder asked to give the lease back waits for its stream to stop and save. The
/// stream's own wait for Kafka after a stop request ends sooner (`shutdown::GRACE`).
const HANDOVER_WAIT: Duration = Duration::from_secs(30);

/// How long a new instance waits for the lease before saying that it stands by.
const STANDBY_NOTICE: Duration = Duration::from_secs(3);

/// A position save refused because the lease is gone.
#[derive(Debug, Error)]
#[error("this instance lost the stream lease (its Kafka group session expired): the position is left to the instance that holds it now")]
pub struct LeaseLost;

struct State {
    topic: String,
    group: String,
    shutdown: Arc<Shutdown>,
    inner: Mutex<Inner>,
    changed: Condvar,
}

#[derive(Default)]
struct Inner {
    /// Partition 0 is assigned to this member.
    held: bool,
    /// A stream runs on the lease.
    streaming: bool,
    /// The partition is being revoked: it goes once the stream has stopped.
    revoking: bool,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("not poisoned")
    }

    fn assigned(&self) {
        self.lock().held = true;
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
                tracing::warn!("lost the stream lease (Kafka group {}): this instance was not heard from in time; stopping without saving more positions", self.group);
                self.shutdown.handover();
            }
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
                self.state.revoked(consumer.assignment_lost());
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if self.ours(tpl) {
                self.state.assigned();
            }
        }
    }
}

/// Whether this instance may save positions now.
#[derive(Clone)]
pub struct Holder(Arc<State>);

impl Holder {
    pub fn held(&self) -> bool {
        self.0.lock().held
    }

    /// A lease held (or lost) from the start, for tests of the store alone.
    #[cfg(test)]
    pub fn for_tests(held: bool) -> Holder {
        let state = State {
            topic: String::new(),
            group: String::new(),
            shutdown: Shutdown::new(),
            inner: Mutex::new(Inner { held, ..Inner::default() }),
            changed: Condvar::new(),
        };
        Holder(Arc::new(state))
    }
}

/// The stream's lease; leaving the group when dropped lets a standby take over at once.
pub struct Lease {
    state: Arc<State>,
    /// Terms this process has streamed on the lease.
    terms: std::sync::atomic::AtomicU32,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Lease {
    /// Joins the stream's group. `timeout` is how long this instance may go unheard before a
    /// standby takes over.
    pub fn join(
        settings: &KafkaSettings,
        topic: &str,
        name: &str,
        timeout: Duration,
        shutdown: Arc<Shutdown>,
    ) -> Result<Lease> {
        let group = format!("binlog-tail.{name}");
        let state = Arc::new(State {
            topic: topic.to_string(),
            group: group.clone(),
            shutdown,
            inner: Mutex::new(Inner::default()),
            changed: Condvar::new(),
        });
        let session = timeout.as_millis().max(1000);
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
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        // Rebalances run inside poll: the consumer is polled here, away from the stream.
        let thread = std::thread::Builder::new().name("kafka-lease".into()).spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                let _ = consumer.poll(Duration::from_millis(100));
            }
        })?;
        tracing::info!("stream lease: Kafka group {group}; this instance streams while it is assigned partition {PARTITION} of {topic}");
        Ok(Lease { state, terms: Default::default(), stop, thread: Some(thread) })
    }

    pub fn holder(&self) -> Holder {
        Holder(self.state.clone())
    }

    /// Waits until this instance holds the lease, standing by meanwhile; None once a stop was
    /// requested. The stream runs while the returned term lives.
    pub fn wait(&self) -> Option<Term<'_>> {
        let state = &self.state;
        let started = Instant::now();
        let mut noticed = false;
        let mut inner = state.lock();
        loop {
            if state.shutdown.requested() {
                return None;
            }
            if inner.held && !inner.revoking {
                inner.streaming = true;
                let again = self.terms.fetch_add(1, Ordering::SeqCst) > 0;
                if noticed || again {
                    tracing::info!("took over the stream lease (Kafka group {})", state.group);
                } else {
                    tracing::info!("holding the stream lease (Kafka group {})", state.group);
                }
                return Some(Term(self));
            }
            if !noticed && started.elapsed() >= STANDBY_NOTICE {
                tracing::info!(
                    "standing by: another instance holds the stream lease (Kafka group {}), or Kafka cannot be reached; this one streams once it is assigned the lease",
                    state.group
                );
                noticed = true;
            }
            inner = state.changed.wait_timeout(inner, Duration::from_millis(100)).expect("not poisoned").0;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // The consumer leaves the group as the thread drops it.
            let _ = thread.join();
        }
    }
}

/// A stream running on the lease; when it ends, a pending revocation may complete.
pub struct Term<'a>(&'a Lease);

impl Drop for Term<'_> {
    fn drop(&mut self) {
        let state = &self.0.state;
        let mut inner = state.lock();
        inner.streaming = false;
        if inner.revoking {
            inner.held = false;
        }
        drop(inner);
        state.changed.notify_all();
    }
}
