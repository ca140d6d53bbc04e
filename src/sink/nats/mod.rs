//! The NATS JetStream sink: every event published with a JetStream acknowledgement, in binlog
//! order, acknowledged per transaction.
//!
//! Invariants:
//! - A transaction counts as acknowledged only when every message of it, and of every earlier
//!   transaction, has its PubAck; only then may the position move past it.
//! - The stream holds this sink's messages in the order they were sent, without gaps: each
//!   message carries `Nats-Expected-Last-Msg-Id`, the id of the message sent before it, so the
//!   server refuses it unless that one is the stream's last. A message lost on the way (a
//!   connection dropped, a server restarted, a leader changed) therefore never has a later one
//!   stored after it: whatever follows is refused, and everything from the first message without
//!   a PubAck is sent again, in order (`recover`). The first message after a (re)start or a
//!   recovery carries no expectation: all before it are settled by then.
//! - Every message carries `Nats-Msg-Id` (`STREAM/ORIGIN/INDEX`, as Kafka's `binlog_tail.seq`):
//!   the server drops a copy sent again inside the stream's duplicate window. For older replays,
//!   what the stream already holds is skipped: the last message of each subject (read before the
//!   first message to it) and the stream's last message prove, by the order above, that every
//!   earlier message of this stream is there. Snapshot reads have no such order: each read, and
//!   while a snapshot runs every message, carries `binlog_tail.read`, the last read sent up to it
//!   (`sink::LastRead`; a chunk's last read is sent with the chunk's commit, and names the
//!   progress that commit carries). A restart during a snapshot takes the newest of this stream's
//!   among the stream's last message and the last messages of the subjects still to read, and
//!   skips the replayed reads up to it (`sink::Reads`).
//! - Transient failures (server down, timeouts, refusals of the order check) are retried without a
//!   time limit, the reason logged; a refusal retrying cannot change (authorization, no stream for
//!   the subject, a message over `max_payload` or the stream's `max_msg_size`) stops the tool with
//!   the fix, the position where the last acknowledged transaction left it.
//! - Memory is bounded: at most `WINDOW` messages (`WINDOW_BYTES`) wait for their PubAck; then
//!   sending waits, and with it the binlog reader.
//! - After a stop request, waiting lasts while NATS acknowledges (`Shutdown::stop_waiting`).

pub mod config;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::response::Response;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{ConnectErrorKind, Event, HeaderMap, ServerError};
use bytes::Bytes;

use super::{client_runtime, event_context, read_id, warn_once, LastRead, Reads, Sink, TxIds};
use crate::event::{Change, Ddl, Op};
use crate::format::Encoder;
use crate::metrics::Metrics;
use crate::outbox::Message;
use crate::position::{Position, Resume};
use crate::shutdown::{Shutdown, Stopped};
use crate::sink::order::OrderKey;
use config::{covers, NatsSettings, CREATED_DUPLICATE_WINDOW};

/// Messages waiting for their PubAck at most.
const WINDOW: usize = 4096;
/// Bytes of messages waiting for their PubAck at most.
const WINDOW_BYTES: usize = 32 << 20;
/// Messages handed to the client in one pass over its runtime at most.
const BATCH: usize = 256;
/// The header naming a snapshot read (`sink::LastRead`).
const READ_HEADER: &str = "binlog_tail.read";
/// How long a PubAck (or an API answer) may take before the message counts as lost.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Where one message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unsent,
    InFlight,
    Stored,
}

struct Entry {
    /// Sequence number of its transaction.
    tx: u64,
    subject: String,
    /// `Nats-Msg-Id`.
    id: String,
    /// Where it stands in the binlog order; None for what is never skipped (snapshot reads).
    key: Option<OrderKey>,
    payload: Bytes,
    headers: Vec<(String, String)>,
    state: State,
}

struct Tx {
    seq: u64,
    outstanding: u64,
    end: Option<Resume>,
}

/// What happened to the connection, from the client's event callback.
#[derive(Default)]
struct Events {
    /// A refusal that ends the run (authorization, permissions).
    definite: Mutex<Option<String>>,
}

/// A failed publish: to be sent again, or the end of the run.
enum Failure {
    Transient(String),
    Definite(String),
}

pub struct NatsSink {
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
    /// A handle on `settings.stream`, for reading its messages.
    stream: stream::Stream<()>,
    settings: NatsSettings,
    encoder: Encoder,
    /// Names this stream (position file and configuration) in every message id.
    name: String,
    /// Nothing of this stream can be in NATS yet: nothing to skip.
    new: bool,
    txs: VecDeque<Tx>,
    acked: Option<Resume>,
    /// When NATS last acknowledged something (or the sink started).
    last_ack: Instant,
    /// Messages not yet known to be stored, and stored ones behind them; oldest first.
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    first: u64,
    /// Sequence number of the first unsent entry.
    next: u64,
    in_flight: usize,
    in_flight_bytes: usize,
    /// PubAck futures, awaited by one task (`acker`) that reports to `results`.
    acks: tokio::sync::mpsc::UnboundedSender<(u64, PublishAckFuture)>,
    results: mpsc::Receiver<(u64, Result<PublishAck, PublishError>)>,
    /// The id of the last message sent since the last (re)start or recovery.
    chain: Option<String>,
    /// Why the order broke: everything from the first unstored message is sent again.
    broken: Option<String>,
    /// The newest order keys proven in the stream, one per series (`OrderKey::compare`).
    evidence: Vec<OrderKey>,
    /// Subjects whose last message was read since the last (re)start or recovery.
    tails: HashSet<String>,
    skipped: u64,
    /// Snapshot reads: the last one handed over, and the replayed ones the stream holds.
    reads: Reads,
    /// The stream's last message's `binlog_tail.read` at start, when it is this stream's.
    last_message_read: Option<(u64, LastRead)>,
    events: Arc<Events>,
    /// The open transaction's message ids.
    tx: TxIds,
    value: Vec<u8>,
    shutdown: Arc<Shutdown>,
    metrics: Option<Metrics>,
    logged: HashMap<String, Instant>,
}

impl NatsSink {
    /// Connects (retrying while the server cannot be reached), and checks (or creates) the
    /// stream. `name` names the position file and configuration this run continues; `new` says
    /// nothing was ever sent under it; `saved` is the position it continues.
    pub fn new(
        settings: NatsSettings,
        encoder: Encoder,
        shutdown: Arc<Shutdown>,
        (name, new): (String, bool),
        saved: Option<&Position>,
        metrics: Option<Metrics>,
    ) -> Result<NatsSink> {
        let rt = client_runtime("nats", "NATS")?;
        let events = Arc::new(Events::default());
        let client = rt.block_on(connect(&settings, &events, &shutdown))?;
        // The context spawns its PubAck task on the runtime it is built in.
        let _runtime = rt.enter();
        let js = jetstream::ContextBuilder::new().timeout(ACK_TIMEOUT).max_ack_inflight(WINDOW + 1).build(client);
        let (results_tx, results) = mpsc::channel();
        let (acks, pending) = tokio::sync::mpsc::unbounded_channel();
        rt.spawn(acker(pending, results_tx));
        let stream = rt.block_on(js.get_stream_no_info(&settings.stream))?;
        let mut sink = NatsSink {
            rt,
            js,
            stream,
            settings,
            encoder,
            name,
            new,
            txs: VecDeque::from([Tx { seq: 0, outstanding: 0, end: None }]),
            acked: None,
            last_ack: Instant::now(),
            entries: VecDeque::new(),
            first: 0,
            next: 0,
            in_flight: 0,
            in_flight_bytes: 0,
            acks,
            results,
            chain: None,
            broken: None,
            evidence: Vec::new(),
            tails: HashSet::new(),
            skipped: 0,
            reads: Reads::default(),
            last_message_read: None,
            events,
            tx: TxIds::default(),
            value: Vec::with_capacity(4096),
            shutdown,
            metrics,
            logged: HashMap::new(),
        };
        sink.preflight()?;
        let held = sink.last_read(saved)?;
        sink.reads = Reads::resume(saved, held);
        Ok(sink)
    }

    /// This stream's newest snapshot read among the stream's last message and the last messages
    /// of the subjects whose tables the saved snapshot has still to read.
    fn last_read(&mut self, saved: Option<&Position>) -> Result<Option<LastRead>> {
        let mut newest = self.last_message_read.take();
        let Some(progress) = saved.and_then(|p| p.snapshot.as_ref()).filter(|_| !self.new) else { return Ok(None) };
        for [db, table] in &progress.pending {
            let subject = self.settings.subject(db, table);
            let msg = match self.rt.block_on(self.stream.get_last_raw_message_by_subject(&subject)) {
                Ok(msg) => msg,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
                Err(e) => bail!("cannot read the last message of NATS subject {subject}: {e}"),
            };
            if let Some(read) = self.read_header(&msg.headers) {
                if newest.as_ref().is_none_or(|(seq, _)| msg.sequence > *seq) {
                    newest = Some((msg.sequence, read));
                }
            }
        }
        Ok(newest.map(|(_, read)| read))
    }

    /// The `binlog_tail.read` of a message of this stream.
    fn read_header(&self, headers: &HeaderMap) -> Option<LastRead> {
        let id = headers.get(async_nats::header::NATS_MESSAGE_ID)?.as_str();
        let ours = id.strip_prefix(self.name.as_str()).is_some_and(|rest| rest.starts_with(['/', ':']));
        headers.get(READ_HEADER).filter(|_| ours).and_then(|v| LastRead::parse(v.as_str()))
    }

    /// The stream exists (or is created) and stores every subject this configuration publishes to.
    fn preflight(&mut self) -> Result<()> {
        let wildcards = self.settings.wildcards();
        let found = self.stream_info()?;
        let s = &self.settings;
        let info = match found {
            Ok(info) => info,
            Err(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND && s.create_stream => {
                let config = stream::Config {
                    name: s.stream.clone(),
                    subjects: wildcards.clone(),
                    storage: StorageType::File,
                    duplicate_window: CREATED_DUPLICATE_WINDOW,
                    ..Default::default()
                };
                let info = self
                    .rt
                    .block_on(self.js.create_stream(config))
                    .map_err(|e| anyhow!("cannot create NATS stream {} for {wildcards:?}: {e}", s.stream))?
                    .cached_info()
                    .clone();
                tracing::info!(
                    "created NATS stream {} (subjects {wildcards:?}, file storage, duplicate window {} s)",
                    s.stream,
                    CREATED_DUPLICATE_WINDOW.as_secs()
                );
                info
            }
            Err(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND => bail!(
                "NATS stream {} does not exist: create it (nats stream add {} --subjects '{}' --storage file --dupe-window 2m --defaults), or pass --nats-create-stream",
                s.stream,
                s.stream,
                wildcards.join(",")
            ),
            Err(e) => bail!("NATS refused to describe stream {}: {e}", s.stream),
        };
        let subjects = &info.config.subjects;
        if let Some(w) = wildcards.iter().find(|w| !subjects.iter().any(|f| covers(f, w))) {
            bail!(
                "NATS stream {} stores {subjects:?}, not the subjects {w}: add them (nats stream edit {} --subjects '{}'), or choose another --nats-stream or --nats-subject",
                s.stream,
                s.stream,
                subjects.iter().chain([w]).cloned().collect::<Vec<_>>().join(",")
            );
        }
        tracing::info!(
            "publishing to NATS stream {} ({} messages, duplicate window {} s)",
            s.stream,
            info.state.messages,
            info.config.duplicate_window.as_secs()
        );
        if !self.new && info.state.messages > 0 {
            self.read_last(info.state.last_sequence)?;
        }
        Ok(())
    }

    /// The stream's description, or JetStream's refusal; an error only when a stop ended the
    /// wait while NATS could not be reached.
    fn stream_info(&mut self) -> Result<Result<stream::Info, jetstream::Error>> {
        let subject = format!("STREAM.INFO.{}", self.settings.stream);
        loop {
            let answer: Result<Response<stream::Info>, _> =
                self.rt.block_on(self.js.request(subject.clone(), &serde_json::json!({})));
            match answer {
                Ok(Response::Ok(info)) => return Ok(Ok(info)),
                Ok(Response::Err { error }) => return Ok(Err(error)),
                Err(e) => {
                    let hint = match e.kind() {
                        jetstream::context::RequestErrorKind::NoResponders => {
                            " (is JetStream enabled? nats-server -js)"
                        }
                        _ => "",
                    };
                    let text =
                        format!("NATS does not answer about stream {}: {e}{hint}; retrying", self.settings.stream);
                    warn_once(&mut self.logged, "stream info", &text);
                    self.pause("waiting for NATS")?;
                }
            }
        }
    }

    /// Sleeps a moment between retries; an error once a stop was requested and NATS stalled.
    fn pause(&mut self, what: &str) -> Result<()> {
        std::thread::sleep(Duration::from_millis(250));
        self.check_definite()?;
        if self.entries.iter().all(|e| e.state == State::Stored) && self.shutdown.requested() {
            return Err(Stopped(what.to_string()).into());
        }
        self.check_stop()
    }

    /// The stream's message at `seq` as evidence of what it holds (it may be gone: no evidence).
    fn read_last(&mut self, seq: u64) -> Result<()> {
        match self.rt.block_on(self.stream.get_raw_message(seq)) {
            Ok(msg) => {
                self.prove(&msg.headers);
                self.last_message_read = self.read_header(&msg.headers).map(|read| (seq, read));
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => bail!("cannot read message {seq} of NATS stream {}: {e}", self.settings.stream),
        }
        Ok(())
    }

    /// Takes a stored message's id as proof that this stream's messages up to it are there.
    fn prove(&mut self, headers: &HeaderMap) {
        let Some(id) = headers.get(async_nats::header::NATS_MESSAGE_ID) else { return };
        let Some((name, key)) = OrderKey::parse_header(id.as_str()) else { return };
        if name != self.name {
            return;
        }
        if self.evidence.iter().any(|e| key.compare(e).is_some_and(|o| o.is_le())) {
            return;
        }
        self.evidence.retain(|e| e.compare(&key).is_none());
        tracing::debug!("NATS stream {} holds this stream up to {key:?}", self.settings.stream);
        self.evidence.push(key);
    }

    /// True when the stream already holds `entries[i]`; reads its subject's last message first.
    /// None when NATS did not answer.
    fn held(&mut self, i: usize) -> Option<bool> {
        let Some(key) = self.entries[i].key.clone() else { return Some(false) };
        if self.new {
            return Some(false);
        }
        let subject = &self.entries[i].subject;
        if !self.tails.contains(subject) {
            let subject = subject.clone();
            match self.rt.block_on(self.stream.get_last_raw_message_by_subject(&subject)) {
                Ok(msg) => self.prove(&msg.headers),
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
                Err(e) => {
                    tracing::debug!("reading the last message of NATS subject {subject}: {e}");
                    return None;
                }
            }
            self.tails.insert(subject);
        }
        Some(self.evidence.iter().any(|e| key.compare(e).is_some_and(|o| o.is_le())))
    }

    /// Queues one message; sends a batch when `BATCH` are queued, waiting while the window is full.
    fn send(
        &mut self,
        subject: String,
        origin: &str,
        read: Option<(String, bool)>,
        payload: Bytes,
        headers: Vec<(String, String)>,
    ) -> Result<()> {
        let (origin, index) = self.tx.next(|| origin.to_string());
        let (id, key) = match &read {
            // Chunks of several tables can share a position: a read is named by its table and key.
            Some((read, _)) => (format!("{}:read/{read}", self.name), None),
            None => (format!("{}/{origin}/{index}", self.name), OrderKey::new(origin, index)),
        };
        // A chunk's last read waits for the commit, which names the progress in its header.
        let ends_chunk = read.as_ref().is_some_and(|(_, last)| *last);
        let record = if read.is_some() { self.reads.record() } else { self.reads.record_while_snapshotting() };
        let mut headers = headers;
        if let Some(record) = record {
            headers.push((READ_HEADER.to_string(), record.to_string()));
        }
        let tx = self.txs.back_mut().expect("an open transaction");
        tx.outstanding += 1;
        self.entries.push_back(Entry { tx: tx.seq, subject, id, key, payload, headers, state: State::Unsent });
        if ends_chunk || self.next + (BATCH as u64) > self.first + self.entries.len() as u64 {
            // Sent in batches: at `BATCH` unsent messages, or at the transaction's end.
            return Ok(());
        }
        self.pump(false)
    }

    /// Sends unsent messages while the window allows; with `all`, until every message is stored.
    fn pump(&mut self, all: bool) -> Result<()> {
        let mut waited = Instant::now();
        loop {
            self.drain(None)?;
            if let Some(why) = self.broken.take() {
                self.recover(&why)?;
                continue;
            }
            while self.next < self.first + self.entries.len() as u64
                && self.in_flight < WINDOW
                && self.in_flight_bytes < WINDOW_BYTES
                && self.broken.is_none()
            {
                self.publish_batch()?;
            }
            let unsent = self.next < self.first + self.entries.len() as u64;
            if self.broken.is_some() {
                continue;
            }
            if !unsent && (!all || self.in_flight == 0) {
                self.advance();
                return Ok(());
            }
            self.drain(Some(Duration::from_millis(100)))?;
            self.check_stop()?;
            if waited.elapsed() > Duration::from_secs(30) {
                tracing::warn!("NATS is not acknowledging: {} messages waiting; reading paused", self.in_flight);
                waited = Instant::now();
            }
        }
    }

    /// Sends (or skips, when the stream holds them) the unsent messages the window allows, in
    /// one pass over the runtime: a batch of at most `BATCH`.
    fn publish_batch(&mut self) -> Result<()> {
        let end = self.first + self.entries.len() as u64;
        let mut batch = Vec::new();
        let mut bytes = self.in_flight_bytes;
        while self.next < end && self.in_flight + batch.len() < WINDOW && bytes < WINDOW_BYTES && batch.len() < BATCH {
            let seq = self.next;
            let i = (seq - self.first) as usize;
            if self.entries[i].state == State::Stored {
                // Acknowledged after one before it failed: stored, not to be sent again.
                self.next += 1;
                continue;
            }
            match self.held(i) {
                None => {
                    self.broken = Some(format!("cannot read the last message of subject {}", self.entries[i].subject));
                    break;
                }
                Some(true) => {
                    self.skipped += 1;
                    self.stored(i);
                    self.next += 1;
                    continue;
                }
                Some(false) => {}
            }
            if self.skipped > 0 {
                tracing::info!(
                    "NATS dedupe: {} replayed messages were already in stream {} and skipped",
                    self.skipped,
                    self.settings.stream
                );
                self.skipped = 0;
            }
            let e = &self.entries[i];
            let mut publish = PublishMessage::build()
                .payload(e.payload.clone())
                .message_id(&e.id)
                .expected_stream(&self.settings.stream);
            if let Some(last) = &self.chain {
                publish = publish.expected_last_message_id(last);
            }
            for (k, v) in &e.headers {
                publish = publish.header(k.as_str(), v.as_str());
            }
            bytes += e.payload.len();
            self.chain = Some(e.id.clone());
            batch.push((seq, e.subject.clone(), publish));
            self.next += 1;
        }
        if batch.is_empty() {
            return Ok(());
        }
        let seqs: Vec<u64> = batch.iter().map(|(seq, _, _)| *seq).collect();
        let (js, acks) = (&self.js, &self.acks);
        // How many went out, and why the next one did not.
        let (sent, failed) = self.rt.block_on(async {
            let mut sent = 0;
            for (seq, subject, publish) in batch {
                match js.send_publish(subject, publish).await {
                    // The acker ends only with the sink.
                    Ok(ack) => drop(acks.send((seq, ack))),
                    Err(err) => return (sent, Some(err)),
                }
                sent += 1;
            }
            (sent, None)
        });
        for &seq in &seqs[..sent] {
            let e = &mut self.entries[(seq - self.first) as usize];
            e.state = State::InFlight;
            self.in_flight += 1;
            self.in_flight_bytes += e.payload.len();
            if let Some(m) = &self.metrics {
                m.nats().sent(1);
            }
        }
        if let Some(err) = failed {
            // It and what follows stay unsent.
            self.next = seqs[sent];
            match self.classify((self.next - self.first) as usize, &err) {
                Failure::Definite(text) => return Err(anyhow!(text)),
                Failure::Transient(why) => self.broken = Some(why),
            }
        }
        Ok(())
    }

    /// Applies PubAcks (waiting up to `wait` for the first one); a definite refusal is the error.
    fn drain(&mut self, wait: Option<Duration>) -> Result<()> {
        let mut first = match wait {
            Some(d) if self.in_flight > 0 => self.results.recv_timeout(d).ok(),
            _ => None,
        };
        loop {
            let Some((seq, result)) = first.take().or_else(|| self.results.try_recv().ok()) else { break };
            let i = (seq - self.first) as usize;
            self.in_flight -= 1;
            self.in_flight_bytes -= self.entries[i].payload.len();
            if let Some(m) = &self.metrics {
                if result.is_ok() {
                    m.nats().acknowledged(1, None);
                } else {
                    m.nats().failed(1);
                }
            }
            match result {
                Ok(_) => {
                    self.last_ack = Instant::now();
                    self.stored(i);
                }
                Err(err) => {
                    self.entries[i].state = State::Unsent;
                    match self.classify(i, &err) {
                        Failure::Definite(text) => return Err(anyhow!(text)),
                        Failure::Transient(why) => {
                            self.broken.get_or_insert(why);
                        }
                    }
                }
            }
        }
        self.check_definite()?;
        self.advance();
        Ok(())
    }

    fn check_definite(&self) -> Result<()> {
        match &*self.events.definite.lock().expect("not poisoned") {
            Some(text) => Err(anyhow!(text.clone())),
            None => Ok(()),
        }
    }

    /// Marks `entries[i]` stored, counting it off its transaction.
    fn stored(&mut self, i: usize) {
        let e = &mut self.entries[i];
        if e.state == State::Stored {
            return;
        }
        e.state = State::Stored;
        let first_tx = self.txs.front().expect("a transaction").seq;
        self.txs[(e.tx - first_tx) as usize].outstanding -= 1;
    }

    /// Drops stored messages at the front and moves `acked` over completed transactions.
    fn advance(&mut self) {
        while self.entries.front().is_some_and(|e| e.state == State::Stored) {
            self.entries.pop_front();
            self.first += 1;
            self.next = self.next.max(self.first);
        }
        while let Some(tx) = self.txs.front() {
            if tx.outstanding > 0 || tx.end.is_none() {
                break;
            }
            // The open transaction (no end yet) always stays, so the queue is never empty.
            let tx = self.txs.pop_front().expect("an ended transaction");
            self.acked = tx.end;
        }
    }

    /// Why a publish failed, and whether sending it again can help.
    fn classify(&self, i: usize, err: &PublishError) -> Failure {
        let e = &self.entries[i];
        let what = format!("NATS refused the message for subject {} (id {})", e.subject, e.id);
        let source = std::error::Error::source(err);
        let js_error = source.and_then(|s| s.downcast_ref::<jetstream::Error>());
        if source.is_some_and(|s| s.is::<async_nats::SubjectError>()) {
            return Failure::Definite(format!(
                "`{}` is not a NATS subject to publish to ({err}): change --nats-subject or the outbox topic",
                e.subject
            ));
        }
        match err.kind() {
            PublishErrorKind::MaxPayloadExceeded => Failure::Definite(format!(
                "{what}: {err} — raise max_payload in the NATS server's configuration, or drop the large column with --drop-column"
            )),
            PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
                Failure::Transient("a message before it is missing from the stream, or another writer wrote to it".into())
            }
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                Failure::Transient(format!("no PubAck within {} s ({err})", ACK_TIMEOUT.as_secs()))
            }
            PublishErrorKind::StreamNotFound => Failure::Transient(format!(
                "no stream answered for subject {} (is stream {} there and JetStream up?)",
                e.subject, self.settings.stream
            )),
            _ => match js_error.map(jetstream::Error::error_code) {
                Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) => Failure::Definite(format!(
                    "{what}: {err} — raise the stream's max_msg_size (nats stream edit {} --max-msg-size ...), or drop the large column with --drop-column",
                    self.settings.stream
                )),
                Some(ErrorCode::STREAM_NOT_MATCH) => Failure::Definite(format!(
                    "{what}: {err} — another stream stores this subject; give each subject to one stream (--nats-subject, --nats-stream)"
                )),
                Some(ErrorCode::INSUFFICIENT_RESOURCES) => Failure::Transient(format!("{err}")),
                Some(_) => Failure::Definite(format!("{what}: {err}")),
                None => Failure::Transient(format!("{err}")),
            },
        }
    }

    /// Waits for every PubAck in flight, then sends again, in order, every message not stored.
    fn recover(&mut self, why: &str) -> Result<()> {
        let text = format!("NATS: {why}; sending again from the first message without a PubAck");
        warn_once(&mut self.logged, "resend", &text);
        // What this run sent may be in the stream now, PubAck or not.
        self.new = false;
        while self.in_flight > 0 {
            self.drain(Some(Duration::from_millis(100)))?;
            self.check_stop()?;
        }
        self.broken = None;
        // The stream answers again; it still stores the subjects.
        let info = match self.stream_info()? {
            Ok(info) => info,
            Err(e) => bail!("NATS stream {} is not available any more: {e}", self.settings.stream),
        };
        if let Some(e) = self.entries.iter().find(|e| !info.config.subjects.iter().any(|f| covers(f, &e.subject))) {
            bail!(
                "NATS stream {} does not store subject {} (its subjects: {:?}): add it (nats stream edit), or change --nats-subject or the outbox topics",
                self.settings.stream,
                e.subject,
                info.config.subjects
            );
        }
        self.chain = None;
        self.tails.clear();
        if !self.new && info.state.messages > 0 {
            self.read_last(info.state.last_sequence)?;
        }
        let mut resent = 0;
        for e in self.entries.iter_mut().filter(|e| e.state != State::Stored) {
            e.state = State::Unsent;
            resent += 1;
        }
        if let Some(m) = &self.metrics {
            m.nats().retried(resent);
        }
        self.next = self.first
            + self.entries.iter().position(|e| e.state != State::Stored).unwrap_or(self.entries.len()) as u64;
        Ok(())
    }

    /// Gives up waiting for PubAcks once a stop was requested and NATS stalled.
    fn check_stop(&self) -> Result<()> {
        let Some(why) = self.shutdown.stop_waiting(self.last_ack) else { return Ok(()) };
        let waiting = self.entries.iter().filter(|e| e.state != State::Stored).count();
        bail!(
            "stopped ({why}) with {waiting} messages not acknowledged by NATS; the position covers only acknowledged transactions, the rest is sent again after a restart"
        )
    }
}

/// Awaits PubAcks as they come, each reported with its message's sequence number.
async fn acker(
    mut pending: tokio::sync::mpsc::UnboundedReceiver<(u64, PublishAckFuture)>,
    results: mpsc::Sender<(u64, Result<PublishAck, PublishError>)>,
) {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut waiting = FuturesUnordered::new();
    loop {
        tokio::select! {
            next = pending.recv() => match next {
                Some((seq, ack)) => waiting.push(async move { (seq, ack.await) }),
                None => return,
            },
            Some(done) = waiting.next(), if !waiting.is_empty() => {
                if results.send(done).is_err() {
                    return;
                }
            }
        }
    }
}

/// Connects, retrying while the server cannot be reached (logging why); refused credentials or
/// TLS stop with the fix.
async fn connect(settings: &NatsSettings, events: &Arc<Events>, shutdown: &Shutdown) -> Result<async_nats::Client> {
    let token = &settings.token;
    let mut logged = HashMap::new();
    loop {
        let events = events.clone();
        let mut options = async_nats::ConnectOptions::new()
            .name("binlog-tail")
            .connection_timeout(ACK_TIMEOUT)
            .request_timeout(Some(ACK_TIMEOUT))
            .ping_interval(Duration::from_secs(10))
            .event_callback(move |event| {
                let events = events.clone();
                async move { on_event(&events, event) }
            });
        if let Some(path) = &settings.creds {
            options = options
                .credentials_file(path)
                .await
                .with_context(|| format!("cannot read --nats-creds {}", path.display()))?;
        }
        if let Some(token) = &token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &settings.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let err = match options.connect(settings.servers()).await {
            Ok(client) => return Ok(client),
            Err(e) => e,
        };
        match err.kind() {
            ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => bail!(
                "NATS at {} refused the credentials ({err}): check --nats-creds, --nats-token-file or the user in --nats-url",
                settings.url
            ),
            ConnectErrorKind::Tls => {
                bail!("TLS to NATS at {} failed ({err}): check --nats-tls-ca and the server's certificate", settings.url)
            }
            ConnectErrorKind::ServerParse => bail!("--nats-url {}: {err}", settings.url),
            _ => {
                let text = format!("cannot reach NATS at {}: {err}; retrying", settings.url);
                warn_once(&mut logged, "connect", &text);
            }
        }
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if shutdown.requested() {
                return Err(Stopped("connecting to NATS".into()).into());
            }
        }
    }
}

/// Logs connection events; a refusal the server will repeat becomes the run's error.
fn on_event(events: &Events, event: Event) {
    match event {
        Event::Disconnected => tracing::warn!("NATS: disconnected; reconnecting, the position waits for PubAcks"),
        Event::Connected => tracing::info!("NATS: connected"),
        Event::ServerError(ServerError::AuthorizationViolation) => {
            *events.definite.lock().expect("not poisoned") = Some(
                "NATS refused the credentials (authorization violation): check --nats-creds, --nats-token-file or the user in --nats-url".into(),
            );
        }
        Event::ServerError(ServerError::Other(text)) if text.to_lowercase().contains("permissions violation") => {
            *events.definite.lock().expect("not poisoned") = Some(format!(
                "NATS refused: {text} — grant this user publish on the stream's subjects and on $JS.API.>"
            ));
        }
        other => tracing::warn!("NATS: {other}"),
    }
}

impl Sink for NatsSink {
    fn change(&mut self, change: &Change) -> Result<()> {
        let reading = change.op == Op::Read;
        if reading && self.reads.skipped(change) {
            return Ok(());
        } else if !reading {
            self.reads.changed(change);
        }
        let t = &change.table;
        let subject = self.settings.subject(&t.db, &t.name);
        let origin = crate::event::origin(change.gtid.as_deref(), &change.file, change.offset);
        for &part in self.encoder.parts(change) {
            let read = reading.then(|| (read_id(change, part), change.commit));
            let mut value = std::mem::take(&mut self.value);
            value.clear();
            self.encoder.write_value(change, part, &mut value);
            let payload = Bytes::copy_from_slice(&value);
            self.value = value;
            let origin = if read.is_some() { "" } else { origin.as_str() };
            self.send(subject.clone(), origin, read, payload, Vec::new()).with_context(|| event_context(change))?;
        }
        Ok(())
    }

    fn ddl(&mut self, ddl: &Ddl) -> Result<()> {
        let mut value = Vec::new();
        ddl.write_json(&mut value);
        let origin = crate::event::origin(ddl.gtid.as_deref(), &ddl.file, ddl.offset);
        self.send(self.settings.ddl_subject.clone(), &origin, None, value.into(), Vec::new())
    }

    fn message(&mut self, msg: &Message) -> Result<()> {
        let mut headers: Vec<(String, String)> =
            msg.headers.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect();
        if let Some(key) = &msg.key {
            headers.push(("key".into(), String::from_utf8_lossy(key).into_owned()));
        }
        self.send(msg.topic.clone(), &msg.origin, None, Bytes::copy_from_slice(&msg.value), headers)
    }

    fn commit(&mut self, resume: &Resume) -> Result<()> {
        self.reads.commit(resume);
        // A chunk's last read, held back for this: its record now names the chunk's progress.
        let unsent_read = self.entries.back_mut().filter(|e| e.state == State::Unsent && e.key.is_none());
        let header = unsent_read.and_then(|e| e.headers.iter_mut().find(|(name, _)| name == READ_HEADER));
        if let Some((header, record)) = header.zip(self.reads.record()) {
            header.1 = record.to_string();
        }
        let open = self.txs.back_mut().expect("an open transaction");
        open.end = Some(resume.clone());
        let seq = open.seq + 1;
        self.txs.push_back(Tx { seq, outstanding: 0, end: None });
        self.tx.end();
        self.pump(false)
    }

    fn acknowledged(&mut self) -> Result<Option<Resume>> {
        // Also after a failure: that is the position to save and to continue from.
        let _ = self.drain(None);
        Ok(self.acked.clone())
    }

    fn flush(&mut self) -> Result<()> {
        self.pump(true)
    }
}

#[cfg(test)]
mod tests {
    //! Faults the integration tests cannot time: a server restart while thousands of messages
    //! are in flight, against a real nats-server.
    use std::process::Command;

    use super::*;
    use crate::sink::fault_test::{assert_in_order, send_through_a_kill, Server};

    fn start_server(port: u16, dir: &std::path::Path) -> Server {
        let mut cmd = Command::new("nats-server");
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd", dir.to_str().unwrap()]);
        Server::start(cmd, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
    }

    #[test]
    fn a_server_restart_with_messages_in_flight_leaves_no_gap_and_no_reordering() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let server = start_server(port, dir.path());
        let url = format!("nats://127.0.0.1:{port}");
        let mut sink = NatsSink::new(
            config::test_settings(&url),
            Encoder::new(Default::default()),
            Shutdown::new(),
            ("test".into(), true),
            None,
            None,
        )
        .unwrap();
        let total = 30_000;
        let _restarted =
            send_through_a_kill(&mut sink, "binlog_tail.t.orders", total, server, || start_server(port, dir.path()));
        // Read back in stream order with a plain request per message, not the sink's code.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let ids: Vec<String> = rt.block_on(async {
            let client = async_nats::connect(&url).await.unwrap();
            let js = jetstream::new(client);
            let mut stream = js.get_stream("BINLOG_TAIL").await.unwrap();
            let last = stream.info().await.unwrap().state.last_sequence;
            let mut ids = Vec::new();
            for seq in 1..=last {
                let msg = stream.get_raw_message(seq).await.unwrap();
                ids.push(msg.headers.get("Nats-Msg-Id").unwrap().to_string());
            }
            ids
        });
        let expected: Vec<String> = (0..total).map(|n| format!("test/0-1-{n}/0")).collect();
        assert_in_order(&ids, &expected, "messages");
    }
}
