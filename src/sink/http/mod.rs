//! The HTTP webhook sink: events `POST`ed as NDJSON batches, one request at a time, each with an
//! `Idempotency-Key` that a restart after a crash repeats with the same body.
//!
//! Invariants:
//! - A batch's lines are exactly what `dump` prints in the chosen format, in binlog order. It
//!   holds at most `--http-batch-rows` events and `--http-batch-bytes` bytes (one larger event
//!   goes alone) and ends at a transaction's end; a transaction that alone exceeds a limit is sent
//!   in parts of the limits. A batch is also cut when the stream goes idle (`flush`), so a quiet
//!   stream is delivered at once.
//! - One batch in flight: the next is sent only after a 2xx for the one before, so a receiver
//!   that keeps each batch once holds the events in binlog order. A transaction is acknowledged
//!   once the batch with its last event got its 2xx (that batch, and every earlier one).
//! - `Idempotency-Key` is `STREAM/FIRST..LAST`: the stream's name (the position file's id and the
//!   configuration, as Kafka's `binlog_tail.seq`) and the ids of the batch's first and last events
//!   (`ORIGIN/INDEX`: the transaction's GTID or `FILE:OFFSET`, the event's index in it; a snapshot
//!   read: `read:` its position, table and key). A batch holding snapshot reads adds its body's
//!   CRC-32: a read done again after a crash may find other values, and is then another batch.
//! - A batch that may have reached the receiver is only ever sent again byte for byte under its
//!   key, and nothing the receiver acknowledged is sent again under another key. Re-cutting the
//!   batches on a replay cannot promise that: an idle moment (`flush`, which must deliver
//!   everything read so far) comes at other events in a replay than in the first run. So the
//!   journal (`journal`, `POSITION.http`) is written durably before each batch is sent: its key,
//!   its body, and how far the receiver had acknowledged (the last event's id, and where its
//!   transaction ends). A restart first sends the journal's batch again, the same bytes under the
//!   same key, then skips the replayed events up to the last acknowledged one, and cuts new
//!   batches from there. An acknowledgement is reported to the checkpoint only once the journal
//!   holds it, so the saved position is never past it and a skip always ends at an event that
//!   comes again (or at the place the journal names, or at a later event of the same GTID domain
//!   or binlog series). Snapshot reads have no binlog order: the journal names the last one
//!   acknowledged (`sink::LastRead`), and a restart skips the replayed reads up to it
//!   (`sink::Reads`), apart from the skip of the other events.
//! - Transient failures (408, 429, 5xx, timeouts, connection failures) are retried without a time
//!   limit (`deliver`); any other refusal stops the tool with the status and the body's first
//!   line, the position where the last acknowledged transaction left it.
//! - Memory: the batch being filled (completed transactions and the open one's events) and the
//!   batch in flight: about twice `--http-batch-bytes`.
//! - After a stop request, waiting lasts while the receiver acknowledges (`Shutdown::stop_waiting`).

pub mod config;
mod deliver;
pub mod journal;

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;

use super::{client_runtime, read_id, LastRead, Reads, Sink, TxIds};
use crate::event::{Change, Ddl, Op};
use crate::format::Encoder;
use crate::metrics::Metrics;
use crate::outbox::Message;
use crate::position::{Position, Resume};
use crate::shutdown::Shutdown;
use crate::sink::order::OrderKey;
use config::HttpSettings;
use deliver::{Batch, Outcome};
use journal::{Acked, InFlight, Journal, Place, State};

/// Ids and sizes of a run of events in the batch being filled.
#[derive(Default)]
struct Span {
    bytes: usize,
    rows: usize,
    first: Option<String>,
    last: Option<String>,
    /// The last event that is not a snapshot read.
    change: Option<String>,
    /// The last snapshot read.
    read: Option<LastRead>,
}

impl Span {
    fn extend(&mut self, other: Span) {
        self.bytes += other.bytes;
        self.rows += other.rows;
        self.first = self.first.take().or(other.first);
        self.last = other.last.or(self.last.take());
        self.change = other.change.or(self.change.take());
        self.read = other.read.or(self.read.take());
    }
}

/// The batch sent and waiting for its answer.
struct Flight {
    seq: u64,
    /// Its last event that is not a snapshot read, and its last read.
    change: Option<String>,
    read: Option<LastRead>,
    complete: bool,
    /// What may be reported once it is answered: the journal written before it holds that.
    report: Option<Resume>,
    place: Option<Place>,
}

/// Replayed events the receiver already acknowledged, skipped until the last of them.
struct Skip {
    last: String,
    order: Option<OrderKey>,
    /// Where the acknowledged transactions end, when the last event's one is complete.
    place: Option<Place>,
    skipped: u64,
}

pub struct HttpSink {
    /// Runs the delivery task (`deliver::run`) while the sink lives.
    _rt: tokio::runtime::Runtime,
    settings: HttpSettings,
    encoder: Encoder,
    stream: String,
    journal: Journal,
    /// The events not yet cut into a batch: those of completed transactions (`done`), then those
    /// of the open one (`open`).
    body: Vec<u8>,
    done: Span,
    open: Span,
    /// Batches cut, and acknowledged, since the start.
    cut: u64,
    acked_batches: u64,
    /// Ended transactions not yet acknowledged, each with how many batches must be acknowledged first.
    txs: VecDeque<(u64, Resume)>,
    /// The newest transaction end acknowledged, with all before it.
    acked: Option<Resume>,
    acked_place: Option<Place>,
    /// The last event acknowledged that is not a snapshot read, and whether its transaction is
    /// acknowledged whole.
    acked_event: Option<(String, bool)>,
    /// The last snapshot read acknowledged.
    acked_read: Option<LastRead>,
    /// Snapshot reads: the replayed ones the receiver acknowledged are skipped.
    reads: Reads,
    /// What `acknowledged` reports: covered by the journal.
    reported: Option<Resume>,
    journaled_place: Option<Place>,
    flight: Option<Flight>,
    /// The receiver's refusal, which every later call repeats.
    refused: Option<String>,
    batches: tokio::sync::mpsc::Sender<Batch>,
    outcomes: mpsc::Receiver<Outcome>,
    skip: Option<Skip>,
    /// The open transaction's event ids.
    tx: TxIds,
    value: Vec<u8>,
    last_ack: Instant,
    shutdown: Arc<Shutdown>,
    metrics: Option<Metrics>,
}

impl HttpSink {
    /// A sink delivering to `settings.url`, journaling beside the position file `position`
    /// (saved there: `saved`). `stream` names the position file and configuration; `new` says
    /// nothing was ever sent under it. A batch the journal holds is sent again first.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: HttpSettings,
        encoder: Encoder,
        shutdown: Arc<Shutdown>,
        stream: String,
        new: bool,
        position: &std::path::Path,
        saved: Option<&Position>,
        metrics: Option<Metrics>,
    ) -> Result<HttpSink> {
        let rt = client_runtime("http", "HTTP")?;
        let client = settings.client()?;
        let (batches, pending) = tokio::sync::mpsc::channel(1);
        let (results, outcomes) = mpsc::channel();
        rt.spawn(deliver::run(settings.clone(), client, pending, results, metrics.clone()));
        tracing::info!("posting batches to {}", settings.shown_url());
        let mut sink = HttpSink {
            _rt: rt,
            settings,
            encoder,
            stream,
            journal: Journal::beside(position),
            body: Vec::new(),
            done: Span::default(),
            open: Span::default(),
            cut: 0,
            acked_batches: 0,
            txs: VecDeque::new(),
            acked: None,
            acked_place: None,
            acked_event: None,
            acked_read: None,
            reads: Reads::default(),
            reported: None,
            journaled_place: None,
            flight: None,
            refused: None,
            batches,
            outcomes,
            skip: None,
            tx: TxIds::default(),
            value: Vec::with_capacity(4096),
            last_ack: Instant::now(),
            shutdown,
            metrics,
        };
        sink.resume(new, saved)?;
        Ok(sink)
    }

    /// Continues from the journal: sends its batch in flight again, then skips what the receiver
    /// acknowledged.
    fn resume(&mut self, new: bool, saved: Option<&Position>) -> Result<()> {
        let Some((state, body)) = self.journal.load()? else { return Ok(()) };
        let Some(saved) = saved.filter(|_| !new && state.stream == self.stream) else {
            let why = match saved {
                Some(_) => "it is of another stream (other filters, format or position file)",
                None => "no position was saved",
            };
            tracing::info!("the HTTP journal {} is not resumed: {why}", self.journal.path().display());
            return Ok(());
        };
        let mut acked = state.acked;
        if let Some(flight) = state.in_flight {
            tracing::info!(
                "sending again the batch in flight at the last stop ({} events, key {})",
                flight.rows,
                flight.key
            );
            if let Some(m) = &self.metrics {
                m.http_sink().sent(flight.rows);
            }
            self.batches
                .blocking_send(Batch { seq: u64::MAX, key: flight.key, rows: flight.rows, body, journal: None })
                .map_err(|_| anyhow!("the HTTP delivery task ended"))?;
            let change = Some(flight.last.clone()).filter(|l| !l.is_empty());
            self.flight = Some(Flight {
                seq: u64::MAX,
                change,
                read: flight.read.clone(),
                complete: flight.complete,
                report: None,
                place: None,
            });
            self.acked_event = acked.as_ref().map(|a| (a.last.clone(), a.complete)).filter(|(l, _)| !l.is_empty());
            let (read, place) = acked.map(|a| (a.read, a.place)).unwrap_or_default();
            self.acked_read = read;
            self.wait_flight()?;
            let place = flight.place.or(place);
            let (last, complete) = self.acked_event.clone().unwrap_or_default();
            acked = Some(Acked { last, complete, place, read: self.acked_read.clone() });
        }
        let Some(acked) = acked else { return Ok(()) };
        self.reads = Reads::resume(Some(saved), acked.read.clone());
        self.acked_event = Some((acked.last.clone(), acked.complete)).filter(|(l, _)| !l.is_empty());
        self.acked_read = acked.read;
        self.acked_place = acked.place.clone();
        self.write_journal()?;
        let at_place = acked.place.as_ref().is_some_and(|p| p.is(&saved.file, saved.offset));
        if acked.last.is_empty() {
            // Only snapshot reads were acknowledged (`reads` skips those).
        } else if order_key(&acked.last).is_none() && !at_place {
            // A journal of an older binlog-tail, whose last event is a read: no order ends a skip.
            tracing::warn!("HTTP: the last acknowledged event is a snapshot read: the replayed events are sent again (a receiver may get some twice, under new keys)");
        } else if !(acked.complete && at_place) {
            self.skip = Some(Skip {
                order: order_key(&acked.last),
                place: acked.place.filter(|_| acked.complete),
                last: acked.last,
                skipped: 0,
            });
        }
        Ok(())
    }

    /// True if the event `id` is a replayed one the receiver already acknowledged.
    fn skipped(&mut self, id: &str) -> bool {
        let Some(skip) = &mut self.skip else { return false };
        if id == skip.last {
            skip.skipped += 1;
            self.end_skip("up to the last acknowledged event");
            return true;
        }
        let later = skip.order.as_ref().zip(order_key(id)).and_then(|(last, this)| this.compare(last));
        if later == Some(Ordering::Greater) {
            self.end_skip("the last acknowledged event did not come again; a later one did");
            return false;
        }
        skip.skipped += 1;
        true
    }

    fn end_skip(&mut self, why: &str) {
        if let Some(skip) = self.skip.take() {
            tracing::info!(
                "HTTP: {} replayed events the receiver already acknowledged were skipped ({why})",
                skip.skipped
            );
        }
    }

    /// Adds one event's line, cutting a batch first where the limits say so.
    fn line(&mut self, id: String, read: bool, render: impl FnOnce(&mut Encoder, &mut Vec<u8>)) -> Result<()> {
        // Reads are skipped by `reads`, before.
        if !read && self.skipped(&id) {
            return Ok(());
        }
        let mut value = std::mem::take(&mut self.value);
        value.clear();
        render(&mut self.encoder, &mut value);
        value.push(b'\n');
        loop {
            let rows = self.done.rows + self.open.rows + 1;
            let bytes = self.done.bytes + self.open.bytes + value.len();
            if rows <= self.settings.batch_rows && bytes <= self.settings.batch_bytes {
                break;
            }
            if self.done.rows > 0 {
                self.cut_done()?;
            } else if self.open.rows > 0 {
                self.cut_open()?;
            } else {
                break;
            }
        }
        self.body.extend_from_slice(&value);
        self.value = value;
        let span = &mut self.open;
        span.bytes += self.value.len();
        span.rows += 1;
        if read {
            span.read = self.reads.last().cloned();
        } else {
            span.change = Some(id.clone());
        }
        if span.first.is_none() {
            span.first = Some(id.clone());
        }
        span.last = Some(id);
        Ok(())
    }

    /// The id of the transaction's next event.
    fn binlog_id(&mut self, gtid: Option<&str>, file: &str, offset: u64) -> String {
        let (origin, index) = self.tx.next(|| crate::event::origin(gtid, file, offset));
        format!("{origin}/{index}")
    }

    /// Sends the completed transactions' events as a batch.
    fn cut_done(&mut self) -> Result<()> {
        let rest = self.body.split_off(self.done.bytes);
        let body = std::mem::replace(&mut self.body, rest);
        let span = std::mem::take(&mut self.done);
        self.send(body, span, true)
    }

    /// Sends the open transaction's events so far as a batch (it alone exceeds a limit).
    fn cut_open(&mut self) -> Result<()> {
        let body = std::mem::take(&mut self.body);
        let span = std::mem::take(&mut self.open);
        self.send(body, span, false)
    }

    /// Waits for the batch in flight, journals this one, and hands it to the delivery task.
    fn send(&mut self, body: Vec<u8>, span: Span, complete: bool) -> Result<()> {
        self.wait_flight()?;
        let seq = self.cut;
        let (first, last) = (span.first.clone().unwrap_or_default(), span.last.clone().unwrap_or_default());
        let mut key = format!("{}/{first}..{last}", self.stream);
        if span.read.is_some() {
            key.push_str(&format!("/{:08x}", crc32fast::hash(&body)));
        }
        let key = header_safe(&key);
        let place = if complete {
            self.txs.iter().rev().find(|(need, _)| *need == seq + 1).map(|(_, r)| Place::of(r))
        } else {
            None
        };
        let flight = InFlight {
            key: key.clone(),
            rows: span.rows,
            last: span.change.clone().unwrap_or_default(),
            read: span.read.clone(),
            complete,
            place,
            bytes: body.len(),
        };
        let head = journal::head(&self.state(Some(flight)));
        if let Some(m) = &self.metrics {
            m.http_sink().sent(span.rows);
        }
        let journal = Some((self.journal.clone(), head));
        self.batches
            .blocking_send(Batch { seq, key, rows: span.rows, body: Bytes::from(body), journal })
            .map_err(|_| anyhow!("the HTTP delivery task ended"))?;
        let (report, place) = (self.acked.clone(), self.acked_place.clone());
        self.flight = Some(Flight { seq, change: span.change, read: span.read, complete, report, place });
        self.cut += 1;
        Ok(())
    }

    /// The journal's state: how far the receiver acknowledged, and `flight`.
    fn state(&self, flight: Option<InFlight>) -> State {
        let acked = (self.acked_event.is_some() || self.acked_read.is_some()).then(|| {
            let (last, complete) = self.acked_event.clone().unwrap_or_default();
            Acked { last, complete, place: self.acked_place.clone(), read: self.acked_read.clone() }
        });
        State { stream: self.stream.clone(), acked, in_flight: flight }
    }

    /// Writes the journal with no batch in flight, and reports what it holds.
    fn write_journal(&mut self) -> Result<()> {
        self.journal.save(&journal::head(&self.state(None)), &[])?;
        self.journaled_place = self.acked_place.clone();
        self.reported = self.acked.clone();
        Ok(())
    }

    /// Applies the answers that came; with `wait`, waits for the batch in flight's.
    fn poll(&mut self, wait: bool) -> Result<()> {
        if let Some(text) = &self.refused {
            bail!(text.clone());
        }
        while let Some(flight) = &self.flight {
            let outcome = if wait {
                match self.outcomes.recv_timeout(Duration::from_millis(100)) {
                    Ok(outcome) => outcome,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.check_stop()?;
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the HTTP delivery task ended"),
                }
            } else {
                match self.outcomes.try_recv() {
                    Ok(outcome) => outcome,
                    Err(_) => return Ok(()),
                }
            };
            match outcome {
                Outcome::Refused(text) => {
                    self.refused = Some(text.clone());
                    bail!(text)
                }
                Outcome::Acked { seq } => {
                    debug_assert_eq!(seq, flight.seq);
                    match (&flight.change, &mut self.acked_event) {
                        (Some(change), event) => *event = Some((change.clone(), flight.complete)),
                        // Only reads, which are transactions of their own: the one before ended.
                        (None, Some(event)) => event.1 = true,
                        (None, None) => {}
                    }
                    if flight.read.is_some() {
                        self.acked_read = flight.read.clone();
                    }
                    if seq != u64::MAX {
                        self.acked_batches = seq + 1;
                        // The journal written before it was sent holds these.
                        self.reported = flight.report.clone();
                        self.journaled_place = flight.place.clone();
                    }
                    self.flight = None;
                    self.last_ack = Instant::now();
                }
            }
        }
        self.settle();
        Ok(())
    }

    fn wait_flight(&mut self) -> Result<()> {
        self.poll(true)
    }

    /// Moves `acked` over the transactions whose batches are all acknowledged.
    fn settle(&mut self) {
        while let Some((need, _)) = self.txs.front() {
            if *need > self.acked_batches {
                break;
            }
            let (_, resume) = self.txs.pop_front().expect("a transaction");
            self.acked_place = Some(Place::of(&resume));
            self.acked = Some(resume);
        }
        if self.skip.is_some() {
            // Skipped transactions end before the journal's last acknowledged event.
            self.reported = self.acked.clone();
        }
    }

    /// Reports (journaling it first) what is acknowledged, when no batch is in flight.
    fn journal_acked(&mut self) -> Result<()> {
        if self.skip.is_none() && self.flight.is_none() && self.acked_place != self.journaled_place {
            self.write_journal()?;
        }
        Ok(())
    }

    /// Gives up waiting for the receiver once a stop was requested and it stalled.
    fn check_stop(&self) -> Result<()> {
        let Some(why) = self.shutdown.stop_waiting(self.last_ack) else { return Ok(()) };
        bail!(
            "stopped ({why}) with a batch not acknowledged by the HTTP receiver; the position covers only acknowledged transactions, the batch is sent again after a restart"
        )
    }
}

/// An error with its causes (reqwest's own text omits them: "connection refused" is one).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A line id's place in the binlog order (none for snapshot reads).
fn order_key(id: &str) -> Option<OrderKey> {
    if id.starts_with("read:") {
        return None;
    }
    let (origin, index) = id.rsplit_once('/')?;
    OrderKey::new(origin, index.parse().ok()?)
}

/// `text` as a header value: bytes outside visible ASCII, and `%`, as `%XX`.
fn header_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Sink for HttpSink {
    fn change(&mut self, change: &Change) -> Result<()> {
        let read = change.op == Op::Read;
        if read && self.reads.skipped(change) {
            return Ok(());
        } else if !read {
            self.reads.changed(change);
        }
        for &part in self.encoder.parts(change) {
            let id = if read {
                format!("read:{}", read_id(change, part))
            } else {
                self.binlog_id(change.gtid.as_deref(), &change.file, change.offset)
            };
            self.line(id, read, |encoder, out| encoder.write_value(change, part, out))?;
        }
        Ok(())
    }

    fn ddl(&mut self, ddl: &Ddl) -> Result<()> {
        let id = self.binlog_id(ddl.gtid.as_deref(), &ddl.file, ddl.offset);
        self.line(id, false, |_, out| ddl.write_json(out))
    }

    fn message(&mut self, msg: &Message) -> Result<()> {
        let (origin, index) = self.tx.next(|| msg.origin.clone());
        let id = format!("{origin}/{index}");
        self.line(id, false, |_, out| msg.write_json(out))
    }

    fn commit(&mut self, resume: &Resume) -> Result<()> {
        self.reads.commit(resume);
        if self.open.read.is_some() {
            // The open transaction's last read is the last one: now with its chunk's progress.
            self.open.read = self.reads.last().cloned();
        }
        if let Some(skip) = &self.skip {
            if skip.place.as_ref().is_some_and(|p| p.is(&resume.file, resume.offset)) {
                self.end_skip("at the place the journal names");
            }
        }
        let open = std::mem::take(&mut self.open);
        self.done.extend(open);
        let need = self.cut + u64::from(self.done.rows > 0);
        self.txs.push_back((need, resume.clone()));
        self.tx.end();
        if self.done.rows >= self.settings.batch_rows || self.done.bytes >= self.settings.batch_bytes {
            self.cut_done()?;
        }
        self.poll(false)
    }

    fn acknowledged(&mut self) -> Result<Option<Resume>> {
        // Also after a failure: that is the position to save and to continue from.
        let _ = self.poll(false);
        self.journal_acked()?;
        Ok(self.reported.clone())
    }

    fn flush(&mut self) -> Result<()> {
        if self.done.rows > 0 {
            self.cut_done()?;
        }
        self.wait_flight()?;
        self.journal_acked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_header_values_and_ids_order_within_a_series() {
        assert_eq!(header_safe("s/0-1-5/0..0-1-9/2"), "s/0-1-5/0..0-1-9/2");
        assert_eq!(header_safe("read:{\"id\": \"é%\"}"), "read:{\"id\":%20\"%C3%A9%25\"}");
        let a = order_key("0-1-5/3").unwrap();
        assert_eq!(order_key("0-2-5/4").unwrap().compare(&a), Some(Ordering::Greater));
        assert_eq!(
            order_key("binlog.000002:4/0").unwrap().compare(&order_key("binlog.000001:9/7").unwrap()),
            Some(Ordering::Greater)
        );
        assert!(order_key("read:b.000001:4/db.t/{}/0").is_none());
    }
}
