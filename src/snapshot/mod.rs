//! Snapshots: every row of the included tables as `read` events, interleaved with the live
//! stream at the exact binlog position each chunk was read at.
//!
//! Invariants:
//! - Consistent method (MariaDB): a chunk read at binlog position P (see `chunk`) is emitted when
//!   the stream stands between transactions at P: every change emitted before it is older than
//!   what it read, every change after it is newer. A chunk is only started while the stream is
//!   between transactions at a position X, and only kept if P >= X (else it is read again); the
//!   stream then never passes P before the chunk is emitted — reaching P it waits for the rows,
//!   at most one chunk's read.
//! - Watermark method (DBLog; MySQL): a chunk is read between a low and a high watermark row
//!   written to the signal table; it is emitted right after the high watermark's transaction,
//!   without the rows whose keys the stream saw change between the two watermarks (those rows'
//!   newer values are in the stream). Correctness depends only on binlog order, not on timing.
//! - One table at a time, in key order: at most one chunk being emitted and the next one being
//!   read, so memory is bounded by two chunks (a table without a usable key is one chunk).
//! - Progress (tables left, the last emitted key) rides on the commit that follows each chunk,
//!   so the position file records it only once the sink acknowledged the chunk: after a crash
//!   the snapshot continues after the last acknowledged chunk.

pub mod chunk;
pub mod values;

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::{Transient, Usage};
use crate::event::{Change, Op};
use crate::filter::{Filter, TablePattern};
use crate::gtid::GtidSet;
use crate::position::{Flavor, Resume, SnapshotProgress};
use crate::schema::{RowImage, Table};
use crate::shutdown::Shutdown;
use crate::signal::{Signal, WINDOW_CLOSE, WINDOW_OPEN};
use crate::sink::Sink;
use crate::source::server::connect;
use crate::text::{Escaped, Throughput};
use chunk::{BinlogPos, Chunk, SESSION_SETUP};

/// How a chunk finds its place in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// MariaDB: the exact binlog position of a consistent-snapshot transaction.
    Consistent,
    /// DBLog's low/high watermarks, written to the signal table around each chunk's read.
    Watermark,
}

/// How a snapshot is taken.
#[derive(Debug, Clone)]
pub struct Settings {
    /// None: by the server (consistent on MariaDB, watermark on MySQL).
    pub method: Option<Method>,
    /// Snapshot every included table when there is no saved position (`--snapshot initial`).
    pub initial: bool,
    /// Where incremental snapshots are requested (db, table).
    pub signal_table: Option<(String, String)>,
    /// Rows per chunk.
    pub chunk_size: u64,
    /// Chunk keys named by `--snapshot-key db.table=col,...`.
    pub keys: Vec<KeyOverride>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyOverride {
    pub db: String,
    pub table: String,
    pub columns: Vec<String>,
}

impl KeyOverride {
    /// `db.table=col1,col2`.
    pub fn parse(text: &str) -> Result<KeyOverride> {
        let bad = || {
            Usage(format!("--snapshot-key `{text}`: use db.table=column[,column...] naming unique, NOT NULL columns"))
        };
        let (table, columns) = text.split_once('=').ok_or_else(bad)?;
        let (db, table) = table.split_once('.').ok_or_else(bad)?;
        let columns: Vec<String> = columns.split(',').map(|c| c.trim().to_string()).collect();
        if db.is_empty() || table.is_empty() || columns.iter().any(String::is_empty) {
            return Err(bad().into());
        }
        Ok(KeyOverride { db: db.to_string(), table: table.to_string(), columns })
    }
}

/// Every base table outside the system schemas that the filters include and `wanted` accepts.
fn tables(rt: &Handle, opts: &Opts, filter: &Filter, wanted: &dyn Fn(&str, &str) -> bool) -> Result<Vec<[String; 2]>> {
    let tables: Vec<(String, String)> = rt.block_on(async {
        let mut conn = connect(opts, Duration::ZERO).await?;
        let rows = conn
            .query(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
                 AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
                 ORDER BY TABLE_SCHEMA, TABLE_NAME",
            )
            .await?;
        Ok::<_, anyhow::Error>(rows)
    })?;
    Ok(tables
        .into_iter()
        .filter(|(db, t)| filter.includes_table(db, t) && wanted(db, t))
        .map(|(db, t)| [db, t])
        .collect())
}

type ChunkResult = (Conn, Result<Option<Chunk>>);

/// A chunk being read: where it belongs in the stream, and its rows once read.
struct Reading {
    due: Due,
    read_at: u64,
    rows: oneshot::Receiver<ChunkResult>,
    /// The result, when it arrived before the chunk was due.
    got: Option<ChunkResult>,
}

enum Due {
    /// Consistent method: the binlog position the chunk's view matches.
    At(BinlogPos),
    /// Watermark method: the chunk belongs after its high watermark; rows whose keys changed
    /// between the watermarks (`changed` holds those changes' images) are left out.
    Window { low: String, high: String, open: bool, closed: bool, changed: Vec<(Arc<Table>, RowImage)> },
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
    conn: Option<Conn>,
    reading: Option<Reading>,
    report: Report,
    /// Names this process's watermarks: a start time, and a count.
    instance: u128,
    window: u64,
    /// The server the rows are read from, named in the events of some formats.
    server: (Flavor, u32),
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
        let mut snapshot = Snapshot {
            rt,
            opts,
            settings,
            filter,
            skip,
            progress: Arc::new(SnapshotProgress { pending: Vec::new(), after: None, done: 0 }),
            conn: None,
            reading: None,
            report: Report::default(),
            instance: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
            window: 0,
            server,
        };
        match progress {
            Some(progress) => snapshot.progress = Arc::new(progress),
            None if snapshot.settings.initial => {
                let pending = snapshot.tables(&|_, _| true)?;
                tracing::info!("snapshot of {} table(s) planned", pending.len());
                snapshot.progress = Arc::new(SnapshotProgress { pending, after: None, done: 0 });
            }
            None => {}
        }
        Ok(snapshot)
    }

    fn tables(&self, wanted: &dyn Fn(&str, &str) -> bool) -> Result<Vec<[String; 2]>> {
        tables(&self.rt, &self.opts, &self.filter, &|db, t| {
            wanted(db, t) && !self.skip.iter().any(|(d, n)| d == db && n == t)
        })
    }

    /// Acts on a signal: queues tables for an incremental snapshot, or drops them from it.
    pub fn signal(&mut self, signal: &Signal) -> Result<()> {
        let names = match signal {
            Signal::Execute(names) | Signal::Stop(names) => names,
            Signal::Window { open, id } => {
                if let Some(Reading { due: Due::Window { low, high, open: o, closed, .. }, .. }) = &mut self.reading {
                    match open {
                        true if low == id => *o = true,
                        false if high == id => *closed = true,
                        _ => {}
                    }
                }
                return Ok(());
            }
        };
        let patterns = match names.iter().map(|n| TablePattern::parse(n)).collect::<Result<Vec<_>>>() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("ignoring a signal: {}", Escaped(&format!("{e:#}")));
                return Ok(());
            }
        };
        let matches = |t: &[String; 2]| patterns.iter().any(|p| p.matches(&t[0], &t[1]));
        let mut next = (*self.progress).clone();
        match signal {
            Signal::Execute(_) => {
                let tables = self.tables(&|db, t| matches(&[db.to_string(), t.to_string()]))?;
                let new: Vec<_> = tables.into_iter().filter(|t| !next.pending.contains(t)).collect();
                tracing::info!(
                    "incremental snapshot requested: {} table(s) queued ({})",
                    new.len(),
                    Escaped(&names.join(", "))
                );
                next.pending.extend(new);
            }
            Signal::Window { .. } => unreachable!("handled above"),
            Signal::Stop(_) => {
                let stopped = |t: &[String; 2]| patterns.is_empty() || matches(t);
                if next.pending.first().is_some_and(stopped) {
                    // Its chunk in flight is dropped with it.
                    next.after = None;
                    self.reading = None;
                    self.conn = None;
                }
                let before = next.pending.len();
                next.pending.retain(|t| !stopped(t));
                tracing::info!("snapshot stopped for {} table(s)", before - next.pending.len());
            }
        }
        self.progress = Arc::new(next);
        Ok(())
    }

    pub fn progress(&self) -> Arc<SnapshotProgress> {
        self.progress.clone()
    }

    pub fn complete(&self) -> bool {
        self.progress.complete()
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
        loop {
            if self.progress.complete() || shutdown.requested() {
                return Ok(());
            }
            let Some(reading) = &mut self.reading else {
                self.start(&here)?;
                continue;
            };
            if reading.got.is_none() {
                reading.got = reading.rows.try_recv().ok();
            }
            let due = match &reading.due {
                Due::At(p) => here.at_or_after(&p.file, p.offset),
                // A read that failed writes no high watermark: handle its error now.
                Due::Window { closed, .. } => *closed || matches!(reading.got, Some((_, Err(_)))),
            };
            if !due {
                return Ok(());
            }
            let Reading { due, read_at, rows, got } = self.reading.take().expect("checked above");
            let (conn, result) = match got {
                Some(got) => got,
                None => self.rt.block_on(rows).map_err(|_| anyhow!("the snapshot read was cancelled"))?,
            };
            self.conn = Some(conn);
            let [db, table] = self.progress.pending[0].clone();
            let mut next = (*self.progress).clone();
            let chunk = match result {
                Ok(Some(mut chunk)) => {
                    if let Due::Window { changed, .. } = &due {
                        leave_out_changed(&mut chunk, changed);
                    }
                    Some(chunk)
                }
                Ok(None) => {
                    tracing::warn!(
                        "snapshot: `{db}`.`{table}` no longer exists (dropped during the snapshot?); skipping it",
                        db = Escaped(&db),
                        table = Escaped(&table)
                    );
                    None
                }
                Err(e) => match server_error(&e) {
                    Some(1146) => {
                        tracing::warn!(
                            "snapshot: `{db}`.`{table}` was dropped during its snapshot; skipping it",
                            db = Escaped(&db),
                            table = Escaped(&table)
                        );
                        None
                    }
                    // The table changed after the chunk's view was taken, or a lock conflict.
                    Some(1412 | 1213 | 1205) => {
                        tracing::info!(
                            "snapshot: reading `{db}`.`{table}` again: {e:#}",
                            db = Escaped(&db),
                            table = Escaped(&table)
                        );
                        continue;
                    }
                    _ => {
                        self.conn = None;
                        return Err(e.context(format!(
                            "snapshot of `{db}`.`{table}`",
                            db = Escaped(&db),
                            table = Escaped(&table)
                        )));
                    }
                },
            };
            let rows = chunk.as_ref().map_or(0, |c| c.rows.len());
            match chunk.as_ref().filter(|c| !c.last) {
                Some(c) => next.after = c.last_key.clone(),
                None => {
                    next.pending.remove(0);
                    next.after = None;
                    next.done += 1;
                }
            }
            self.progress = Arc::new(next);
            // Read the next chunk while this one is emitted: it starts here, so its view is newer.
            if !self.progress.complete() && !shutdown.requested() {
                self.start(&here)?;
            }
            let at = match due {
                Due::At(p) => p,
                Due::Window { .. } => here.clone(),
            };
            if let Some(chunk) = chunk {
                emit(chunk, &at, read_at, self.server, sink)?;
            }
            let resume =
                Resume { snapshot: Some(self.progress.clone()), ..Resume::new(file.clone(), offset, gtids.clone()) };
            sink.commit(&resume)?;
            self.report.rows(
                &db,
                &table,
                rows as u64,
                self.progress.pending.first() != Some(&[db.clone(), table.clone()]),
            );
            if self.progress.complete() {
                tracing::info!("snapshot complete: {} table(s)", self.progress.done);
            }
        }
    }

    /// The snapshot's connection, set up.
    fn connection(&mut self) -> Result<Conn> {
        if let Some(conn) = self.conn.take() {
            return Ok(conn);
        }
        self.rt.block_on(async {
            let mut conn = connect(&self.opts, Duration::ZERO).await?;
            for sql in SESSION_SETUP {
                conn.query_drop(sql).await?;
            }
            if self.report.estimates.is_none() {
                self.report.estimates = Some(table_estimates(&mut conn).await?);
            }
            Ok(conn)
        })
    }

    /// Starts reading the next chunk in the background: with the consistent method, in a
    /// snapshot transaction whose position is at or after `here`; with watermarks, between a
    /// low and a high watermark row.
    fn start(&mut self, here: &BinlogPos) -> Result<()> {
        let [db, table] = self.progress.pending[0].clone();
        let key = self.settings.keys.iter().find(|k| k.db == db && k.table == table).map(|k| k.columns.clone());
        let after = self.progress.after.clone();
        let (limit, filter) = (self.settings.chunk_size, self.filter.clone());
        let mut conn = self.connection()?;
        let read_at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let (tx, rx) = oneshot::channel();
        if self.settings.method == Some(Method::Watermark) {
            let (db_s, t_s) = self.settings.signal_table.clone().expect("checked when the snapshot was set up");
            self.window += 1;
            let id = |kind: &str| format!("binlog-tail-{}-{}-{kind}", self.instance, self.window);
            let (low, high) = (id("low"), id("high"));
            let due =
                Due::Window { low: low.clone(), high: high.clone(), open: false, closed: false, changed: Vec::new() };
            self.rt.spawn(async move {
                let result = async {
                    let signals = format!("{}.{}", chunk::quote(&db_s), chunk::quote(&t_s));
                    let mark = format!("INSERT INTO {signals} (id, type, data) VALUES (?, ?, NULL)");
                    conn.exec_drop(&mark, (&low, WINDOW_OPEN)).await?;
                    let chunk = match chunk::describe(&mut conn, &db, &table, &filter, key.as_deref()).await? {
                        Some(spec) => Some(chunk::read(&mut conn, &spec, after.as_deref(), limit).await?),
                        None => None,
                    };
                    conn.exec_drop(&mark, (&high, WINDOW_CLOSE)).await?;
                    conn.exec_drop(format!("DELETE FROM {signals} WHERE id IN (?, ?)"), (&low, &high)).await?;
                    Ok(chunk)
                }
                .await;
                let _ = tx.send((conn, result));
            });
            self.reading = Some(Reading { due, read_at, rows: rx, got: None });
            return Ok(());
        }
        let at = self.rt.block_on(async {
            // A transaction can reach the binlog (and the stream) an instant before it becomes
            // visible to new snapshots: a view older than what the stream has read is retried.
            for attempt in 0.. {
                let at = chunk::begin(&mut conn).await?;
                if at.at_or_after(&here.file, here.offset) {
                    return Ok::<_, anyhow::Error>(at);
                }
                conn.query_drop("ROLLBACK").await?;
                if attempt == 1000 {
                    bail!("the server's snapshot position {}:{} stays behind the binlog position {}:{} the stream has read", at.file, at.offset, here.file, here.offset);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            unreachable!("the loop returns or fails")
        })?;
        self.rt.spawn(async move {
            let result = async {
                let Some(spec) = chunk::describe(&mut conn, &db, &table, &filter, key.as_deref()).await? else {
                    conn.query_drop("ROLLBACK").await?;
                    return Ok(None);
                };
                if spec.key.is_empty() && after.is_some() {
                    bail!(
                        "`{db}`.`{table}` has lost its key since the snapshot began reading it in chunks",
                        db = Escaped(&db),
                        table = Escaped(&table)
                    );
                }
                chunk::read(&mut conn, &spec, after.as_deref(), limit).await.map(Some)
            }
            .await;
            let _ = tx.send((conn, result));
        });
        self.reading = Some(Reading { due: Due::At(at), read_at, rows: rx, got: None });
        Ok(())
    }

    /// A change the stream emitted: inside a chunk's watermark window, on its table, its keys
    /// are left out of the chunk.
    fn observe(&mut self, change: &Change) {
        if let Some(Reading { due: Due::Window { open: true, closed: false, changed, .. }, .. }) = &mut self.reading {
            if self.progress.pending.first().is_some_and(|[d, t]| *d == change.table.db && *t == change.table.name) {
                changed
                    .extend(change.before.iter().chain(&change.after).map(|img| (change.table.clone(), img.clone())));
            }
        }
    }
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

/// The sink the decoder writes to while snapshots can run: signals go to the snapshot, and every
/// commit carries the snapshot's progress, so a signal is saved with the transaction that
/// carried it.
pub struct Snapshotting<'a> {
    pub sink: &'a mut dyn Sink,
    pub snapshot: &'a mut Snapshot,
}

impl Sink for Snapshotting<'_> {
    fn change(&mut self, change: &Change) -> Result<()> {
        self.snapshot.observe(change);
        self.sink.change(change)
    }

    fn ddl(&mut self, ddl: &crate::event::Ddl) -> Result<()> {
        self.sink.ddl(ddl)
    }

    fn message(&mut self, msg: &crate::outbox::Message) -> Result<()> {
        self.sink.message(msg)
    }

    fn signal(&mut self, signal: &Signal) -> Result<()> {
        self.snapshot.signal(signal)
    }

    fn commit(&mut self, resume: &Resume) -> Result<()> {
        self.sink.commit(&Resume { snapshot: Some(self.snapshot.progress()), ..resume.clone() })
    }

    fn acknowledged(&mut self) -> Result<Option<Resume>> {
        self.sink.acknowledged()
    }

    fn flush(&mut self) -> Result<()> {
        self.sink.flush()
    }
}

/// The chunk's rows as one transaction of `read` events at the chunk's position.
fn emit(
    chunk: Chunk,
    at: &BinlogPos,
    read_at: u64,
    (flavor, server_id): (Flavor, u32),
    sink: &mut dyn Sink,
) -> Result<()> {
    let count = chunk.rows.len() as u64;
    for (n, image) in chunk.rows.into_iter().enumerate() {
        let change = Change {
            op: Op::Read,
            table: chunk.table.clone(),
            server_id,
            thread: None,
            flavor,
            ts: read_at,
            gtid: None,
            file: at.file.clone(),
            offset: at.offset,
            xid: None,
            row: n as u64,
            commit: n as u64 + 1 == count,
            before: None,
            after: Some(image),
        };
        sink.change(&change)?;
    }
    Ok(())
}

/// The server's error code, if `e` is a server error.
fn server_error(e: &anyhow::Error) -> Option<u16> {
    e.chain().find_map(|c| match c.downcast_ref::<mysql_async::Error>() {
        Some(mysql_async::Error::Server(s)) => Some(s.code),
        _ => None,
    })
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

/// Progress: on a terminal a bar per table (rows, rows/s, ETA from the server's row estimate);
/// otherwise a log line when a table starts and ends, and every 10 s.
#[derive(Default)]
struct Report {
    /// `information_schema.TABLES.TABLE_ROWS` (an estimate) per table, fetched once.
    estimates: Option<HashMap<(String, String), u64>>,
    table: Option<TableReport>,
}

struct TableReport {
    db: String,
    name: String,
    started: Instant,
    last_line: Instant,
    rows: u64,
    bar: ProgressBar,
}

impl Report {
    fn rows(&mut self, db: &str, table: &str, rows: u64, table_done: bool) {
        let now = Instant::now();
        if !self.table.as_ref().is_some_and(|t| t.db == db && t.name == table) {
            let estimate = self.estimates.as_ref().and_then(|e| e.get(&(db.to_string(), table.to_string()))).copied();
            tracing::info!(
                "snapshot of `{db}`.`{table}` started (about {} rows)",
                estimate.unwrap_or(0),
                db = Escaped(db),
                table = Escaped(table)
            );
            self.table = Some(TableReport {
                db: db.to_string(),
                name: table.to_string(),
                started: now,
                last_line: now,
                rows: 0,
                bar: progress_bar(&format!("{}.{}", Escaped(db), Escaped(table)), estimate.unwrap_or(0)),
            });
        }
        let t = self.table.as_mut().expect("set above");
        t.rows += rows;
        t.bar.inc(rows);
        let read = Throughput { count: t.rows, unit: "rows", elapsed: t.started.elapsed() };
        let (db, table) = (Escaped(db), Escaped(table));
        if table_done {
            t.bar.finish_and_clear();
            tracing::info!("snapshot of `{db}`.`{table}` done: {read}");
            self.table = None;
        } else if now - t.last_line >= Duration::from_secs(10) && t.bar.is_hidden() {
            tracing::info!("snapshot of `{db}`.`{table}` so far: {read}");
            t.last_line = now;
        }
    }
}

fn progress_bar(name: &str, estimate: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(estimate);
    bar.set_style(
        ProgressStyle::with_template("{prefix} {bar:30} {pos}/~{len} rows {per_sec} eta {eta}")
            .expect("static template"),
    );
    bar.set_prefix(name.to_string());
    bar
}

async fn table_estimates(conn: &mut Conn) -> Result<HashMap<(String, String), u64>> {
    let rows: Vec<(String, String, Option<u64>)> =
        conn.query("SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE'").await?;
    Ok(rows.into_iter().map(|(db, t, n)| ((db, t), n.unwrap_or(0))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_keys_parse() {
        let k = KeyOverride::parse("shop.log=day,seq").unwrap();
        assert_eq!(
            (k.db.as_str(), k.table.as_str(), k.columns),
            ("shop", "log", vec!["day".to_string(), "seq".to_string()])
        );
        for bad in ["shop.log", "log=id", "shop.log=", "shop.log=a,,b"] {
            assert!(KeyOverride::parse(bad).is_err(), "{bad}");
        }
    }
}
