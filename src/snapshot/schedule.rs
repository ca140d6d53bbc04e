//! When each chunk is read and where it goes in the stream: the snapshot's state, driven by the
//! stream at every point between transactions (see the module invariants in `snapshot`).
//!
//! Chunks in flight form one queue, started and emitted in the same order: the tables in the
//! order of `SnapshotProgress::pending`, each table's chunks by key. Up to `parallelism` of them
//! are read at once, each on its own connection and reader thread, and at least two are in
//! flight (a chunk whose rows arrived gives its connection back), so the next chunk is read while
//! the stream emits one. The stream emits the front one when it is due, so the table being
//! emitted is always the first pending one and its progress (`after`) says exactly where the
//! queue starts again after a restart.
//!
//! With the consistent method a reader keeps its snapshot transaction (`View`) open after a
//! chunk, and the next chunk it reads is read in it while it is fresh and its position is not
//! behind the newest chunk's or the stream's: positions stay in emission order, as with a new
//! transaction per chunk. Views are ended once nothing is in flight.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;
use tokio::sync::oneshot::error::TryRecvError;

use super::chunk::{self, server_error, BinlogPos, Chunk, Spares, TableSpec, Upto, SESSION_SETUP};
use super::gtid_window::{self, ChunkWindow};
use super::marks::Marks;
use super::progress::Report;
use super::requests::Requests;
use super::{plan, Method, Settings};
use crate::error::Transient;
use crate::event::{Change, Op, SnapshotMark};
use crate::filter::{Filter, TablePattern};
use crate::gtid::GtidSet;
use crate::position::{Flavor, KeyValue, Resume, SnapshotProgress};
use crate::schema::{RowImage, Table};
use crate::shutdown::Shutdown;
use crate::signal::{Signal, WINDOW_CLOSE, WINDOW_OPEN};
use crate::sink::Sink;
use crate::source::connection::connect;

type ChunkResult = (Reader, Result<Option<Chunk>>);

/// How long a reader's snapshot view serves further chunks: every chunk read in it is due at its
/// one position, so the stream's events after that wait until the view is closed; and the server
/// keeps old row versions while it is open.
const VIEW_REUSE: Duration = Duration::from_millis(250);

/// How long the stream waits for a chunk before it ends the views of the connections that are
/// done meanwhile (`Snapshot::wait`).
const IDLE_VIEWS: Duration = Duration::from_millis(50);

/// How many rows ahead of the one emitted a chunk's rows are prefetched (`RowImage::prefetch`).
const AHEAD: usize = 5;

/// A snapshot connection, and (consistent method) the snapshot transaction it keeps open after a
/// chunk, with the tables described in it: the next chunk may be read in the same view, which
/// saves a new transaction's position query and the table's description. A table read in a
/// transaction cannot be altered until it ends (a metadata lock), so its description holds.
struct Reader {
    conn: Conn,
    view: Option<View>,
}

struct View {
    at: BinlogPos,
    began: Instant,
    specs: HashMap<[String; 2], TableSpec>,
}

/// A chunk in flight: its table, where it belongs in the stream, where it ends, and its rows
/// once read.
struct Reading {
    table: [String; 2],
    due: Due,
    read_at: u64,
    end: End,
    rows: oneshot::Receiver<ChunkResult>,
    /// The result, when it arrived before the chunk was due (its connection is idle again).
    got: Option<Result<Option<Chunk>>>,
}

/// Where a chunk ends: the next chunk of its table starts after that.
enum End {
    /// Its reader is finding the key it reads up to (`chunk::bound`); None: the table's end.
    Finding(oneshot::Receiver<Option<Vec<KeyValue>>>),
    /// At this key.
    At(Vec<KeyValue>),
    /// At the table's end: the next chunk starts the next table.
    Last,
    /// Known from its rows only (a reader that does not split ahead, or failed before it said).
    Rows,
}

/// A reader's answer: its connection is idle again, its result kept in `got` until emitted.
fn arrived(got: &mut Option<Result<Option<Chunk>>>, (reader, result): ChunkResult, idle: &mut Vec<Reader>) {
    idle.push(reader);
    *got = Some(result);
}

impl Reading {
    /// Takes the rows and the end if they arrived.
    fn poll(&mut self, idle: &mut Vec<Reader>) {
        if self.got.is_none() {
            if let Ok(answer) = self.rows.try_recv() {
                arrived(&mut self.got, answer, idle);
            }
        }
        if let End::Finding(rx) = &mut self.end {
            match rx.try_recv() {
                Ok(Some(key)) => self.end = End::At(key),
                Ok(None) => self.end = End::Last,
                Err(TryRecvError::Closed) => self.end = End::Rows,
                Err(TryRecvError::Empty) => {}
            }
        }
    }
}

enum Due {
    /// Consistent method: the binlog position the chunk's view matches.
    At(BinlogPos),
    /// Watermark method: the chunk belongs after its high watermark; rows whose keys changed
    /// after the low watermark (`changed` holds those changes' images) are left out — until the
    /// chunk is emitted, which may be after its high watermark when an earlier chunk is due last.
    Window { low: String, high: String, open: bool, closed: bool, changed: Vec<(Arc<Table>, RowImage)> },
    /// GTID window method: see `gtid_window::ChunkWindow`.
    Gtids(ChunkWindow),
}

/// What a signal did: for the log and a requester.
pub struct Applied {
    pub text: String,
    /// Tables queued or stopped.
    pub tables: usize,
}

pub struct Snapshot {
    rt: Handle,
    opts: Opts,
    settings: Settings,
    filter: Filter,
    /// Tables never snapshotted: outbox tables (their rows are never change events) and the
    /// signal table.
    skip: Vec<(String, String)>,
    progress: Arc<SnapshotProgress>,
    /// The progress the last commit carried (see `moved`).
    announced: Option<Arc<SnapshotProgress>>,
    /// The readers' own threads (one per chunk read at once, but no more than the cores besides
    /// the stream's) and their idle connections.
    readers: Runtime,
    idle: Vec<Reader>,
    /// Emitted rows' images, for the readers to write the next rows into.
    spares: Spares,
    /// Chunks in flight, in the order they are emitted.
    queue: VecDeque<Reading>,
    report: Report,
    /// Names this process's watermarks: a start time, and a count.
    instance: u128,
    window: u64,
    /// The server the rows are read from, named in the events of some formats.
    server: (Flavor, u32),
    /// Events (reads and the stream's changes) left before `--limit`; None: no limit.
    left: Option<u64>,
    /// Tables whose changes were left out while waiting for their read (see `holds_back`).
    held: HashSet<[String; 2]>,
    /// Requests that arrive over HTTP, applied like signals.
    requests: Option<Requests>,
    /// Where each read stands in its snapshot (Debezium's marks).
    marks: Marks,
}

impl Snapshot {
    /// A snapshot with `progress`, or (None) a new one: every included table when the settings
    /// say `initial`, else none until a signal asks for some.
    pub fn new(
        rt: Handle,
        opts: Opts,
        settings: Settings,
        filter: Filter,
        mut skip: Vec<(String, String)>,
        progress: Option<SnapshotProgress>,
        server: (Flavor, u32),
    ) -> Result<Snapshot> {
        skip.extend(settings.signal_table.clone());
        // A reader thread per connection, up to one per core: the rows' conversion to JSON is
        // most of the client's work (on 2 cores, 2 connections sharing one reader thread were
        // bound by it, with both cores partly idle).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let readers = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.parallelism.min(cores).max(1))
            .thread_name("snapshot-reader")
            .enable_all()
            .build()
            .context("cannot start the snapshot's reader threads")?;
        let mut snapshot = Snapshot {
            rt,
            opts,
            settings,
            filter,
            skip,
            progress: Arc::new(SnapshotProgress { pending: Vec::new(), after: None, done: 0 }),
            announced: None,
            readers,
            idle: Vec::new(),
            spares: Spares::default(),
            queue: VecDeque::new(),
            report: Report::default(),
            instance: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
            window: 0,
            server,
            left: None,
            held: HashSet::new(),
            requests: None,
            marks: Marks::new(0, false),
        };
        let initial = progress.is_none() && snapshot.settings.initial;
        let pending = if !initial && snapshot.settings.keys.is_empty() {
            None
        } else {
            snapshot.rt.block_on(async {
                let mut conn = connect(&snapshot.opts, Duration::ZERO).await?;
                // Refused now rather than when its table comes up: nothing is recorded yet.
                for k in &snapshot.settings.keys {
                    if chunk::describe(&mut conn, &k.db, &k.table, &snapshot.filter, Some(&k.columns)).await?.is_none()
                    {
                        tracing::warn!("--snapshot-key names `{}`.`{}`, which does not exist", k.db, k.table);
                    }
                }
                match initial {
                    true => plan::included(&mut conn, &snapshot.filter, &snapshot.skip).await.map(Some),
                    false => Ok::<_, anyhow::Error>(None),
                }
            })?
        };
        match (progress, pending) {
            (Some(progress), _) => {
                let initial = if snapshot.settings.initial { progress.pending.len() } else { 0 };
                snapshot.marks = Marks::new(initial, progress.done == 0 && progress.after.is_none());
                snapshot.progress = Arc::new(progress);
            }
            (None, Some(pending)) => {
                tracing::info!("snapshot of {} table(s) planned", pending.len());
                snapshot.marks = Marks::new(pending.len(), true);
                snapshot.progress = Arc::new(SnapshotProgress { pending, after: None, done: 0 });
            }
            (None, None) => {}
        }
        Ok(snapshot)
    }

    /// Takes incremental snapshot requests from `requests` (HTTP) from now on.
    pub fn set_requests(&mut self, requests: Requests) {
        self.requests = Some(requests);
    }

    /// Applies the requests waiting, at this point between transactions: each one's progress is
    /// handed to the checkpoint with a commit here before the requester is answered.
    fn take_requests(&mut self, here: &Resume, sink: &mut dyn Sink) -> Result<()> {
        let Some(requests) = self.requests.clone() else { return Ok(()) };
        while let Some((signal, reply)) = requests.take() {
            let answer = match self.signal(&signal) {
                Ok(Applied { text, tables: 0 }) if matches!(signal, Signal::Execute(_)) => Err(text),
                Ok(applied) => Ok(applied.text),
                Err(e) => Err(format!("{e:#}")),
            };
            sink.commit(&self.moved(here))?;
            // A requester that gave up waiting is no error of the stream's.
            let _ = reply.send(answer);
        }
        Ok(())
    }

    /// Acts on a signal: queues tables for an incremental snapshot, or drops them from it.
    pub fn signal(&mut self, signal: &Signal) -> Result<Applied> {
        let names = match signal {
            Signal::Execute(names) | Signal::Stop(names) => names,
            Signal::Window { open, id } => {
                for reading in &mut self.queue {
                    if let Due::Window { low, high, open: o, closed, .. } = &mut reading.due {
                        match open {
                            true if low == id => *o = true,
                            false if high == id => *closed = true,
                            _ => {}
                        }
                    }
                }
                return Ok(Applied { text: String::new(), tables: 0 });
            }
        };
        let patterns = match names.iter().map(|n| TablePattern::parse(n)).collect::<Result<Vec<_>>>() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("ignoring a signal: {e:#}");
                return Ok(Applied { text: format!("{e:#}"), tables: 0 });
            }
        };
        let mut next = (*self.progress).clone();
        let mut notes = Vec::new();
        let applied = match signal {
            Signal::Execute(_) => {
                let (tables, unmatched, unreadable) = self.rt.block_on(async {
                    let mut conn = connect(&self.opts, Duration::ZERO).await?;
                    let (tables, unmatched) = plan::requested(&mut conn, &patterns, &self.filter, &self.skip).await?;
                    let unreadable = plan::unreadable(&mut conn, &tables).await?;
                    Ok::<_, anyhow::Error>((tables, unmatched, unreadable))
                })?;
                for (i, why) in unmatched {
                    tracing::warn!("incremental snapshot of `{}`: nothing to read: {why}", names[i]);
                    notes.push(format!("`{}`: nothing to read: {why}", names[i]));
                }
                for (_, why) in &unreadable {
                    tracing::warn!("incremental snapshot: not read: {why}");
                    notes.push(format!("not read: {why}"));
                }
                let new: Vec<_> = tables
                    .into_iter()
                    .filter(|t| !next.pending.contains(t) && !unreadable.iter().any(|(u, _)| u == t))
                    .collect();
                tracing::info!("incremental snapshot requested: {} table(s) queued ({})", new.len(), names.join(", "));
                let queued: Vec<String> = new.iter().map(|[d, t]| format!("{d}.{t}")).collect();
                let text = format!("{} table(s) queued ({})", new.len(), queued.join(", "));
                let tables = new.len();
                next.pending.extend(new);
                Applied { text, tables }
            }
            Signal::Window { .. } => unreachable!("handled above"),
            Signal::Stop(_) => {
                let stopped = |t: &[String; 2]| patterns.is_empty() || patterns.iter().any(|p| p.matches(&t[0], &t[1]));
                if next.pending.first().is_some_and(stopped) {
                    next.after = None;
                }
                if self.queue.iter().any(|r| stopped(&r.table)) {
                    // Its chunks in flight are dropped, and those after them read again.
                    self.queue.clear();
                }
                let before = next.pending.len();
                for t in next.pending.iter().filter(|t| stopped(t) && self.held.contains(*t)) {
                    tracing::warn!(
                        "snapshot of `{}`.`{}` stopped before its read: its changes since it was queued were left out (the read would have contained them); request its snapshot again to have them",
                        t[0],
                        t[1]
                    );
                }
                self.marks.stopped(next.pending.iter().map(|t| !stopped(t)));
                next.pending.retain(|t| !stopped(t));
                let tables = before - next.pending.len();
                tracing::info!("snapshot stopped for {tables} table(s)");
                Applied { text: format!("snapshot stopped for {tables} table(s)"), tables }
            }
        };
        self.progress = Arc::new(next);
        notes.insert(0, applied.text);
        Ok(Applied { text: notes.join("; "), ..applied })
    }

    pub fn progress(&self) -> Arc<SnapshotProgress> {
        self.progress.clone()
    }

    /// `resume` carrying the snapshot's progress if it moved since the last commit that carried
    /// it (a chunk emitted, or a signal in this transaction); the checkpoint keeps the newest
    /// progress for every commit after it. The one place progress is attached to commits.
    pub(super) fn moved(&mut self, resume: &Resume) -> Resume {
        let moved = !self.announced.as_ref().is_some_and(|a| Arc::ptr_eq(a, &self.progress));
        if moved {
            self.announced = Some(self.progress.clone());
        }
        Resume { snapshot: moved.then(|| self.progress.clone()), ..resume.clone() }
    }

    /// True when every table is read, or `--limit` events were emitted.
    pub fn complete(&self) -> bool {
        self.progress.complete() || self.left == Some(0)
    }

    /// Makes `--limit` count read events too: `limit` events in all, reads and the changes the
    /// stream emits through `Snapshotting`; none after that. For `dump`, which saves no position:
    /// the progress counts a chunk cut short by the limit as read.
    pub fn set_limit(&mut self, limit: Option<u64>) {
        self.left = limit;
    }

    /// Counts one event against `--limit`; false if none may be emitted any more.
    pub(super) fn count(&mut self) -> bool {
        match &mut self.left {
            Some(0) => false,
            Some(left) => {
                *left -= 1;
                true
            }
            None => true,
        }
    }

    /// True while the rows of `table` are left out of the stream because a read still to come
    /// contains them: a table without a primary key (whose changes a consumer cannot apply to
    /// rows it has not read yet, and cannot tell from the read's copies) from when it is queued
    /// until its read is emitted (consistent method: every change before the read's position is
    /// in it) or its read's watermark window opens (watermarks: changes inside the window are
    /// emitted and their rows left out of the read). So replaying in order gives the table's rows.
    pub(super) fn holds_back(&mut self, table: &Table) -> bool {
        if !table.pk.is_empty() {
            return false;
        }
        let Some(i) = self.progress.pending.iter().position(|[d, t]| *d == table.db && *t == table.name) else {
            return false;
        };
        let window_open = self.queue.iter().any(|r| {
            r.table == self.progress.pending[i] && matches!(r.due, Due::Window { open: true, .. } | Due::Gtids(_))
        });
        if (i == 0 && self.progress.after.is_some()) || window_open {
            return false;
        }
        self.held.insert(self.progress.pending[i].clone());
        true
    }

    /// The stream stands between transactions at `file:offset`, having executed `gtids`: emits
    /// every chunk that belongs here (waiting for its rows if need be) and starts the next read.
    /// Once `shutdown` is requested no chunk is started, so the stream can stop here.
    pub fn reached(
        &mut self,
        file: &Arc<str>,
        offset: u64,
        gtids: &Option<GtidSet>,
        sink: &mut dyn Sink,
        shutdown: &Shutdown,
    ) -> Result<()> {
        self.step(file, offset, gtids, sink, shutdown).map_err(classify)
    }

    fn step(
        &mut self,
        file: &Arc<str>,
        offset: u64,
        gtids: &Option<GtidSet>,
        sink: &mut dyn Sink,
        shutdown: &Shutdown,
    ) -> Result<()> {
        let here = BinlogPos { file: file.clone(), offset };
        self.take_requests(&Resume::new(file.clone(), offset, gtids.clone()), sink)?;
        loop {
            if self.complete() || shutdown.requested() {
                self.close_views();
                return Ok(());
            }
            self.fill(&here, gtids, shutdown)?;
            let Some(front) = self.queue.front_mut() else {
                self.close_views();
                return Ok(());
            };
            front.poll(&mut self.idle);
            let due = match &mut front.due {
                Due::At(p) => here.at_or_after(&p.file, p.offset),
                // A read that failed writes no high watermark: handle its error now.
                Due::Window { closed, .. } => *closed || matches!(front.got, Some(Err(_))),
                // Its place follows from `high`, read after the rows: wait for them, as at P.
                Due::Gtids(window) => front.got.is_none() || matches!(front.got, Some(Err(_))) || window.closed(gtids),
            };
            if !due {
                return Ok(());
            }
            if front.got.is_none() {
                self.wait()?;
                continue;
            }
            let Reading { table: [db, table], due, read_at, got, .. } = self.queue.pop_front().expect("checked above");
            debug_assert_eq!(self.progress.pending.first(), Some(&[db.clone(), table.clone()]), "emitted in order");
            let result = got.expect("checked above");
            let mut next = (*self.progress).clone();
            let chunk = match result {
                Ok(Some(chunk)) => Some(chunk),
                Ok(None) => {
                    tracing::warn!(
                        "snapshot: `{db}`.`{table}` no longer exists (dropped during the snapshot?); skipping it"
                    );
                    None
                }
                Err(e) => match server_error(&e) {
                    Some(1146) => {
                        tracing::warn!("snapshot: `{db}`.`{table}` was dropped during its snapshot; skipping it");
                        None
                    }
                    // The table changed after the chunk's view was taken, or a lock conflict: this
                    // chunk and every one after it are read again.
                    Some(1412 | 1213 | 1205) => {
                        tracing::info!("snapshot: reading `{db}`.`{table}` again: {e:#}");
                        self.queue.clear();
                        continue;
                    }
                    _ => {
                        self.queue.clear();
                        self.idle.clear();
                        return Err(e.context(format!("snapshot of `{db}`.`{table}`")));
                    }
                },
            };
            // Where the chunk stands in its table, for the reads' marks.
            let (table_first, table_last) = (self.progress.after.is_none(), chunk.as_ref().is_none_or(|c| c.last));
            match chunk.as_ref().filter(|c| !c.last) {
                Some(c) => next.after = c.last_key.clone(),
                None => {
                    if chunk.is_none() {
                        // The table's later chunks in flight read a table that is gone (or a new
                        // one by its name): what follows is started again.
                        self.queue.clear();
                    }
                    next.pending.remove(0);
                    next.after = None;
                    next.done += 1;
                }
            }
            self.progress = Arc::new(next);
            // Read the next chunks while this one is emitted: they start here, so their views
            // are newer.
            self.fill(&here, gtids, shutdown)?;
            let chunk = match chunk {
                Some(mut chunk) => {
                    match &due {
                        Due::Window { changed, .. } => leave_out_changed(&mut chunk, changed),
                        Due::Gtids(window) => leave_out_changed(&mut chunk, &window.changed),
                        Due::At(_) => {}
                    }
                    Some(chunk)
                }
                None => None,
            };
            let (rows, estimate) = chunk.as_ref().map_or((0, None), |c| (c.rows.len(), c.estimate));
            let at = match due {
                Due::At(p) => p,
                Due::Window { .. } | Due::Gtids(_) => here.clone(),
            };
            if let Some(chunk) = chunk {
                // The GTID set the stream has executed where the chunk sits: the chunk and every
                // event before it reflect exactly those transactions.
                let gtid = gtids.as_ref().map(ToString::to_string).filter(|g| !g.is_empty()).map(Arc::from);
                self.emit(chunk, &at, gtid, read_at, (table_first, table_last), sink)?;
            }
            if table_last {
                self.marks.table_done();
            }
            let resume = self.moved(&Resume::new(file.clone(), offset, gtids.clone()));
            sink.commit(&resume)?;
            self.report.rows(
                &db,
                &table,
                rows as u64,
                estimate,
                self.progress.pending.first() != Some(&[db.clone(), table.clone()]),
            );
            if self.progress.complete() {
                tracing::info!("snapshot complete: {} table(s)", self.report.take_tables_done());
            }
        }
    }

    /// Whether another chunk may start: fewer than `parallelism` are being read, and fewer than
    /// `parallelism` (at least two) are in flight, so even one reader reads the next chunk while
    /// the stream emits the one it read.
    fn room(&self) -> bool {
        let reading = self.queue.iter().filter(|r| r.got.is_none()).count();
        reading < self.settings.parallelism && self.queue.len() < self.settings.parallelism.max(2)
    }

    /// Starts chunks, in order, while there is room and it is known where the next one starts.
    fn fill(&mut self, here: &BinlogPos, gtids: &Option<GtidSet>, shutdown: &Shutdown) -> Result<()> {
        while self.room() && !self.complete() && !shutdown.requested() {
            let Some((table, after)) = self.next_start() else { return Ok(()) };
            self.start(table, after, here, gtids)?;
        }
        Ok(())
    }

    /// The table and key the next chunk starts after: where the newest chunk in flight ends, or
    /// with none in flight, where the progress stands. None while that is not known yet, or
    /// when every table's last chunk is in flight.
    fn next_start(&mut self) -> Option<([String; 2], Option<Vec<KeyValue>>)> {
        let Some(last) = self.queue.back_mut() else {
            return self.progress.pending.first().map(|t| (t.clone(), self.progress.after.clone()));
        };
        last.poll(&mut self.idle);
        match (&last.end, &last.got) {
            (End::At(key), _) => return Some((last.table.clone(), Some(key.clone()))),
            // An error is handled when its chunk is the front one (which may read it all again).
            (End::Finding(_), _) | (End::Rows, None | Some(Err(_))) => return None,
            (End::Rows, Some(Ok(Some(c)))) if !c.last => return Some((last.table.clone(), c.last_key.clone())),
            (End::Last, _) | (End::Rows, Some(Ok(_))) => {}
        }
        let i = self.progress.pending.iter().position(|t| *t == last.table)?;
        self.progress.pending.get(i + 1).map(|t| (t.clone(), None))
    }

    /// Waits for the front chunk's rows or, if another chunk may start, for where the newest
    /// one ends (so the next one starts while the front one is still read); at most
    /// `IDLE_VIEWS`, after which the views of the connections done meanwhile are ended.
    fn wait(&mut self) -> Result<()> {
        enum Woke {
            Rows(std::result::Result<ChunkResult, oneshot::error::RecvError>),
            End(std::result::Result<Option<Vec<KeyValue>>, oneshot::error::RecvError>),
            Waited,
        }
        let room = self.room();
        let mut readings = self.queue.iter_mut();
        let Reading { rows, got, end, .. } = readings.next().expect("called with a chunk in flight");
        let end = match readings.last() {
            Some(newest) => &mut newest.end,
            None => end,
        };
        let woke = self.readers.block_on(async {
            let woke = async {
                match end {
                    End::Finding(rx) if room => tokio::select! {
                        r = rows => Woke::Rows(r),
                        e = rx => Woke::End(e),
                    },
                    _ => Woke::Rows(rows.await),
                }
            };
            tokio::time::timeout(IDLE_VIEWS, woke).await.unwrap_or(Woke::Waited)
        });
        match woke {
            Woke::Rows(r) => arrived(got, r.map_err(|_| anyhow!("the snapshot read was cancelled"))?, &mut self.idle),
            Woke::End(Ok(Some(key))) => *end = End::At(key),
            Woke::End(Ok(None)) => *end = End::Last,
            Woke::End(Err(_)) => *end = End::Rows,
            // A connection done with its chunk keeps its view, and the view its tables' metadata
            // locks: a DDL on one of them waits for it, and the chunk waited for may wait behind
            // that DDL. Nothing can start on the connection now (the stream would have started
            // it): end its view.
            Woke::Waited => {
                for reading in &mut self.queue {
                    reading.poll(&mut self.idle);
                }
                self.close_views();
            }
        }
        Ok(())
    }

    /// A snapshot connection, set up: an idle one (its view still open), or a new one.
    fn connection(&mut self) -> Result<Reader> {
        if let Some(reader) = self.idle.pop() {
            return Ok(reader);
        }
        self.readers.block_on(async {
            let mut conn = connect(&self.opts, Duration::ZERO).await?;
            for sql in SESSION_SETUP {
                conn.query_drop(sql).await?;
            }
            Ok(Reader { conn, view: None })
        })
    }

    /// Ends the views idle connections keep open (nothing is read in them any more): the server
    /// need not keep old row versions for them. A connection that cannot end its view is dropped,
    /// which ends it too.
    fn close_views(&mut self) {
        let readers = &self.readers;
        self.idle.retain_mut(|reader| {
            reader.view.take().is_none() || readers.block_on(reader.conn.query_drop("COMMIT")).is_ok()
        });
    }

    /// Starts reading the chunk of `db`.`table` after `after` in the background: with the
    /// consistent method, in a snapshot transaction whose position is at or after `here` and
    /// the newest chunk's in flight; with watermarks, between a low and a high watermark row;
    /// with the GTID window, after `low` includes `gtids`, what the stream has executed.
    fn start(
        &mut self,
        [db, table]: [String; 2],
        after: Option<Vec<KeyValue>>,
        here: &BinlogPos,
        gtids: &Option<GtidSet>,
    ) -> Result<()> {
        let key = self.settings.keys.iter().find(|k| k.db == db && k.table == table).map(|k| k.columns.clone());
        let (limit, filter) = (self.settings.chunk_size, self.filter.clone());
        // Finding where a chunk ends costs an index read: worth it only when the next chunk can
        // be read at the same time.
        let (end_tx, end_rx) = oneshot::channel();
        let (end_tx, end) = match self.settings.parallelism > 1 {
            true => (Some(end_tx), End::Finding(end_rx)),
            false => (None, End::Rows),
        };
        let name = [db.clone(), table.clone()];
        let spares = self.spares.clone();
        let Reader { mut conn, view } = self.connection()?;
        let read_at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let (tx, rx) = oneshot::channel();
        if self.settings.method == Some(Method::Watermark) {
            let (db_s, t_s) = self.settings.signal_table.clone().expect("checked when the snapshot was set up");
            self.window += 1;
            let id = |kind: &str| format!("binlog-tail-{}-{}-{kind}", self.instance, self.window);
            let (low, high) = (id("low"), id("high"));
            let due =
                Due::Window { low: low.clone(), high: high.clone(), open: false, closed: false, changed: Vec::new() };
            self.readers.spawn(async move {
                let result = async {
                    let signals = format!("{}.{}", chunk::quote(&db_s), chunk::quote(&t_s));
                    let mark = format!("INSERT INTO {signals} (id, type, data) VALUES (?, ?, NULL)");
                    conn.exec_drop(&mark, (&low, WINDOW_OPEN)).await?;
                    let chunk = match chunk::describe(&mut conn, &db, &table, &filter, key.as_deref()).await? {
                        Some(mut spec) => {
                            let upto = split(&mut conn, &mut spec, after.as_deref(), limit, end_tx).await?;
                            Some(chunk::read(&mut conn, &mut spec, after.as_deref(), upto, limit, &spares).await?)
                        }
                        None => None,
                    };
                    conn.exec_drop(&mark, (&high, WINDOW_CLOSE)).await?;
                    conn.exec_drop(format!("DELETE FROM {signals} WHERE id IN (?, ?)"), (&low, &high)).await?;
                    Ok(chunk)
                }
                .await;
                let _ = tx.send((Reader { conn, view: None }, result));
            });
            self.queue.push_back(Reading { table: name, due, read_at, end, rows: rx, got: None });
            return Ok(());
        }
        if self.settings.method == Some(Method::GtidWindow) {
            let (window, high) = self.readers.block_on(ChunkWindow::begin(&mut conn, gtids))?;
            self.readers.spawn(async move {
                let result = async {
                    let chunk = match chunk::describe(&mut conn, &db, &table, &filter, key.as_deref()).await? {
                        Some(mut spec) => {
                            let upto = split(&mut conn, &mut spec, after.as_deref(), limit, end_tx).await?;
                            Some(chunk::read(&mut conn, &mut spec, after.as_deref(), upto, limit, &spares).await?)
                        }
                        None => None,
                    };
                    let _ = high.send(gtid_window::executed(&mut conn).await?);
                    Ok(chunk)
                }
                .await;
                let _ = tx.send((Reader { conn, view: None }, result));
            });
            self.queue.push_back(Reading { table: name, due: Due::Gtids(window), read_at, end, rows: rx, got: None });
            return Ok(());
        }
        // Chunks are emitted in the order they start: so are their positions.
        let floor = match self.queue.back() {
            Some(Reading { due: Due::At(p), .. }) if p.at_or_after(&here.file, here.offset) => p.clone(),
            _ => here.clone(),
        };
        // The connection's open view serves this chunk too if its position is still to come.
        let kept = view.filter(|v| v.at.at_or_after(&floor.file, floor.offset) && v.began.elapsed() < VIEW_REUSE);
        let mut view = match kept {
            Some(view) => view,
            None => {
                let at = self.readers.block_on(async {
                    // A transaction can reach the binlog (and the stream) an instant before it
                    // becomes visible to new snapshots: a view older than what the stream has read
                    // is retried. Starting one ends the connection's previous view.
                    for attempt in 0.. {
                        let at = chunk::begin(&mut conn).await?;
                        if at.at_or_after(&floor.file, floor.offset) {
                            return Ok::<_, anyhow::Error>(at);
                        }
                        conn.query_drop("ROLLBACK").await?;
                        if attempt == 1000 {
                            bail!("the server's snapshot position {}:{} stays behind the binlog position {}:{} the stream has read", at.file, at.offset, floor.file, floor.offset);
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    unreachable!("the loop returns or fails")
                })?;
                View { at, began: Instant::now(), specs: HashMap::new() }
            }
        };
        let at = view.at.clone();
        let described = name.clone();
        let mariadb = self.server.0 == Flavor::MariaDb;
        self.readers.spawn(async move {
            let result = async {
                let spec = match view.specs.entry(described) {
                    Entry::Occupied(spec) => spec.into_mut(),
                    Entry::Vacant(e) => {
                        // The table's definition is then the one every chunk of the view reads.
                        chunk::lock(&mut conn, &db, &table).await?;
                        match chunk::describe(&mut conn, &db, &table, &filter, key.as_deref()).await? {
                            Some(mut spec) => {
                                if mariadb {
                                    spec.read_by_handler(&mut conn).await?;
                                }
                                e.insert(spec)
                            }
                            None => return Ok(None),
                        }
                    }
                };
                if spec.key.is_empty() && after.is_some() {
                    bail!("`{db}`.`{table}` has lost its key since the snapshot began reading it in chunks");
                }
                let upto = split(&mut conn, spec, after.as_deref(), limit, end_tx).await?;
                chunk::read(&mut conn, spec, after.as_deref(), upto, limit, &spares).await.map(Some)
            }
            .await;
            // After an error the transaction is in doubt: the next chunk starts a new one.
            let view = result.is_ok().then_some(view);
            let _ = tx.send((Reader { conn, view }, result));
        });
        self.queue.push_back(Reading { table: name, due: Due::At(at), read_at, end, rows: rx, got: None });
        Ok(())
    }

    /// The chunk's rows as one transaction of `read` events at the chunk's position, with the
    /// `gtid` set executed there (fewer once `--limit` is reached); `(first, last)`: the chunk is
    /// its table's first, last.
    fn emit(
        &mut self,
        chunk: Chunk,
        at: &BinlogPos,
        gtid: Option<Arc<str>>,
        read_at: u64,
        (first, last): (bool, bool),
        sink: &mut dyn Sink,
    ) -> Result<()> {
        let (flavor, server_id) = self.server;
        let count = chunk.rows.len() as u64;
        let mut used = Vec::with_capacity(chunk.rows.len());
        // One event, its row's fields set in turn: no reference counts touched per row.
        let mut change = Change {
            op: Op::Read,
            table: chunk.table,
            server_id,
            thread: None,
            flavor,
            ts: read_at,
            gtid,
            file: at.file.clone(),
            offset: at.offset,
            xid: None,
            row: 0,
            commit: false,
            snapshot: SnapshotMark::Stream,
            before: None,
            after: None,
        };
        let mut rows = chunk.rows.into_iter();
        let mut n = 0;
        while let Some(image) = rows.next() {
            if !self.count() {
                break;
            }
            if let Some(ahead) = rows.as_slice().get(AHEAD - 1) {
                ahead.prefetch();
            }
            change.row = n as u64;
            change.commit = n as u64 + 1 == count;
            change.snapshot = self.marks.of(n, count as usize, first, last);
            change.after = Some(image);
            sink.change(&change)?;
            used.extend(change.after.take());
            n += 1;
        }
        self.spares.give(&mut used, self.settings.chunk_size as usize);
        Ok(())
    }

    /// A change the stream emitted: inside a chunk's window (watermarks, GTIDs) and until the
    /// chunk is emitted, on its table, its keys are left out of the chunk.
    pub(super) fn observe(&mut self, change: &Change) {
        for reading in &mut self.queue {
            let on_table = reading.table[0] == change.table.db && reading.table[1] == change.table.name;
            match &mut reading.due {
                Due::Window { open: true, changed, .. } if on_table => changed
                    .extend(change.before.iter().chain(&change.after).map(|img| (change.table.clone(), img.clone()))),
                Due::Gtids(window) => window.observe(change, on_table),
                _ => {}
            }
        }
    }
}

/// With `end` (chunks are read side by side): where the chunk after `after` ends, found and told
/// before it is read, so the next chunk (of this table, or the next one) can start meanwhile.
async fn split(
    conn: &mut Conn,
    spec: &mut TableSpec,
    after: Option<&[KeyValue]>,
    limit: u64,
    end: Option<oneshot::Sender<Option<Vec<KeyValue>>>>,
) -> Result<Upto> {
    let Some(end) = end else { return Ok(Upto::Limit) };
    if spec.key.is_empty() {
        // Read in one go: the table's only chunk.
        let _ = end.send(None);
        return Ok(Upto::End);
    }
    let bound = chunk::bound(conn, spec, after, limit).await?;
    let _ = end.send(bound.clone());
    Ok(bound.map_or(Upto::End, Upto::Key))
}

/// Drops the chunk's rows whose key (every column, for a table without one) is that of a row
/// changed inside the chunk's window: the stream carries those rows' newer values.
fn leave_out_changed(chunk: &mut Chunk, changed: &[(Arc<Table>, RowImage)]) {
    let key: Vec<usize> =
        if chunk.key.is_empty() { (0..chunk.table.columns.len()).collect() } else { chunk.key.clone() };
    let names: Vec<&str> = key.iter().map(|&k| chunk.table.columns[k].name.as_str()).collect();
    let mut keys = HashSet::new();
    for (table, image) in changed {
        let mut k = Vec::new();
        for name in &names {
            match table.columns.iter().position(|c| c.name == *name).and_then(|c| image.value(c)) {
                Some(v) => {
                    k.extend_from_slice(v);
                    k.push(0);
                }
                None => break,
            }
        }
        keys.insert(k);
    }
    chunk.rows.retain(|row| {
        let mut k = Vec::new();
        for &c in &key {
            k.extend_from_slice(row.value(c).unwrap_or(b"null"));
            k.push(0);
        }
        !keys.contains(&k)
    });
}

/// Wraps connection errors of the snapshot as transient, so the stream reconnects and goes on.
fn classify(e: anyhow::Error) -> anyhow::Error {
    let lost = |c: &(dyn std::error::Error + 'static)| {
        matches!(
            c.downcast_ref::<mysql_async::Error>(),
            Some(mysql_async::Error::Io(_) | mysql_async::Error::Driver(_))
        )
    };
    if e.chain().any(lost) && !crate::error::is_transient(&e) {
        Transient(e.context("the snapshot's connection failed")).into()
    } else {
        e
    }
}
