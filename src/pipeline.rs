//! The one pipeline every subcommand runs: source -> decode -> sink, and for `stream` the
//! reconnect loop and the checkpoints around it.
//!
//! Invariants: a reconnect resumes from the end of the last transaction handed to the sink, so
//! nothing is skipped; a shutdown signal lets the current transaction finish, flushes the sink
//! and saves the position before exiting 0. A snapshot is offered every point between
//! transactions the stream reaches (and idle moments), which is where its chunks are emitted.

use std::io::{self, BufWriter};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::runtime::Runtime;

use crate::checkpoint::kafka::KafkaPositions;
use crate::checkpoint::lease::Lease;
use crate::checkpoint::{Checkpointing, PositionFile, PositionStore, Schedule};
use crate::cli::{CheckArgs, DumpArgs, SignalArgs, SinkKind, StreamArgs};
use crate::config::{
    decode_options, format_settings, parse_table, server_config, snapshot_settings, PositionSettings, StreamSettings,
};
use crate::decode::{Decoder, Flow, Options};
use crate::error::is_transient;
use crate::error::{Restart, Usage};
use crate::event::Op;
use crate::format::Encoder;
use crate::metrics::Metrics;
use crate::ops;
use crate::position::Resume;
use crate::position::{Flavor, Position, SnapshotProgress};
use crate::preflight::{self, Status};
use crate::shutdown::Shutdown;
use crate::sink::kafka::{dedupe, KafkaSink};
use crate::sink::stdout::{self, Closed, StdoutSink};
use crate::sink::Sink;
use crate::snapshot::{self, Snapshot, Snapshotting};
use crate::source::connection::{connect, connect_opts, flavor_of, redact};
use crate::source::file::read_files;
use crate::source::info_schema::InfoSchema;
use crate::source::server::{Checks, EndedAtOnce, Next, ServerSource};
use crate::source::{ServerConfig, Start};

pub fn dump(args: DumpArgs) -> Result<()> {
    let encoder = Encoder::new(format_settings(&args.emit, args.server.url.as_deref())?);
    let mut sink = StdoutSink::new(BufWriter::with_capacity(256 * 1024, io::stdout().lock()), encoder);
    let opts = decode_options(&args.emit, args.limit)?;
    if !args.file.is_empty() {
        let mut decoder = Decoder::new(None, opts);
        read_files(&args.file, args.follow, &mut decoder, &mut sink)?;
        log_stats(&decoder);
        return sink.flush();
    }
    let settings = snapshot_settings(&args.snapshot)?;
    let mut opts = opts;
    opts.signal_table = settings.as_ref().and_then(|s| s.signal_table.clone());
    // A snapshot needs the stream to go on until its last chunk is emitted; `dump` then stops at
    // the server's end unless --follow.
    let initial = settings.as_ref().is_some_and(|s| s.initial);
    let cfg = server_config(&args.server, args.follow || initial)?;
    let default_start = if initial { Start::Latest } else { Start::Earliest };
    let start = args.server.start.clone().unwrap_or(default_start);
    let rt = runtime()?;
    let shutdown = Shutdown::install(&rt);
    let mut source = ServerSource::open(rt.handle(), &cfg, &start, Checks::Basic)?;
    let until = if initial && !args.follow { Until::SnapshotDone } else { Until::End };
    let mut snapshot = match settings {
        Some(settings) => new_snapshot(&rt, &cfg, &source, settings, &opts, None)?,
        None => None,
    };
    let mut decoder = server_decoder(&rt, &cfg, &source, opts)?;
    // Only for the catch-up progress: dump serves no metrics.
    let metrics = Metrics::new();
    ops::behind::spawn(rt.handle(), connect_opts(&cfg)?, metrics.clone());
    run(&mut source, &mut decoder, &mut sink, &shutdown, snapshot.as_mut(), until, &metrics)?;
    log_stats(&decoder);
    sink.flush()
}

fn log_stats(decoder: &Decoder) {
    let s = decoder.stats;
    tracing::info!(
        "{} events read, {} change events decoded, {} rows events ({} bytes) skipped undecoded by filters",
        s.events,
        s.changes,
        s.filtered_events,
        s.filtered_bytes
    );
}

pub fn stream(args: StreamArgs) -> Result<()> {
    stream_to_sink(args).map_err(|e| {
        if e.chain().any(|c| c.is::<Closed>()) {
            // Unlike `dump | head`, a stream's reader going away is a failure: say so.
            anyhow::anyhow!(
                "stdout was closed by its reader; the position file holds the last transaction written before that"
            )
        } else {
            e
        }
    })
}

fn stream_to_sink(args: StreamArgs) -> Result<()> {
    let settings = StreamSettings::resolve(args)?;
    if settings.sink == SinkKind::Stdout {
        stdout::check_delivers(settings.allow_discard)?;
    }
    let rt = runtime()?;
    let shutdown = Shutdown::install(&rt);
    let metrics = Metrics::new();
    if let Some(addr) = settings.metrics_addr {
        // Before the store, whose checks wait while Kafka cannot be reached: probes answer meanwhile.
        ops::http::serve(addr, metrics.clone())?;
    }
    let (store, lease) = open_store(&settings, &rt, &shutdown)?;
    ops::behind::spawn(rt.handle(), connect_opts(&settings.server)?, metrics.clone());
    let mut restarts = Restarts::default();
    // For positions saved without one (version 1), one stream id for the whole process, so a
    // restarted term still recognises what the one before it sent.
    let mut new_id = (new_stream_id(), false);
    loop {
        let term = match &lease {
            Some(lease) => {
                metrics.set_lease_held(false);
                match lease.wait() {
                    Some(term) => Some(term),
                    None => return Ok(()), // stopped while standing by
                }
            }
            None => None,
        };
        metrics.set_lease_held(true);
        let result = stream_term(&settings, &store, &mut new_id, &rt, &shutdown, &metrics);
        drop(term);
        metrics.set_ready(false);
        if shutdown.handing_over() {
            // The lease went to another instance: stand by again.
            if let Err(e) = &result {
                tracing::info!("the stream stopped for the handover: {e:#}");
            }
            shutdown.handed_over();
            continue;
        }
        match result {
            // After a stop request, what could not be delivered stays an error, as at any stop.
            Err(e) if e.chain().any(|c| c.is::<Restart>()) && !shutdown.requested() => restarts.record(&store, e)?,
            other => return other,
        }
    }
}

/// Producer restarts in a row that did not move the position on.
#[derive(Default)]
struct Restarts {
    count: u32,
    at: Option<Position>,
}

impl Restarts {
    /// Records a restart after `err`; an error once restarting stops helping.
    fn record(&mut self, store: &PositionStore, err: anyhow::Error) -> Result<()> {
        let now = store.load()?;
        let same = |a: &Position, b: &Position| (&a.file, a.offset, &a.snapshot) == (&b.file, b.offset, &b.snapshot);
        let moved = match (&self.at, &now) {
            (Some(a), Some(b)) => !same(a, b),
            (None, None) => false,
            _ => true,
        };
        self.count = if moved { 1 } else { self.count + 1 };
        self.at = now;
        if self.count > MAX_RESTARTS {
            return Err(err.context(format!(
                "the Kafka producer failed {MAX_RESTARTS} times in a row without delivering anything"
            )));
        }
        tracing::warn!(
            "{err:#}; starting again from the acknowledged position with a new Kafka producer (restart {})",
            self.count
        );
        Ok(())
    }
}

/// Producer restarts in a row, without progress, after which the error stands.
const MAX_RESTARTS: u32 = 5;

/// The position store, and with the Kafka store the lease only whose holder streams.
fn open_store(
    settings: &StreamSettings,
    rt: &Runtime,
    shutdown: &Arc<Shutdown>,
) -> Result<(PositionStore, Option<Lease>)> {
    match &settings.position {
        PositionSettings::File(path) => Ok((PositionStore::File(PositionFile::open(path)?), None)),
        PositionSettings::Kafka { topic, name, lease_timeout } => {
            let kafka = settings.kafka.as_ref().expect("the Kafka store comes with the Kafka sink");
            let lease = Lease::join(kafka, topic, name, *lease_timeout, shutdown.clone())?;
            let positions = KafkaPositions::open(kafka, topic, name, lease.holder(), shutdown.clone())?;
            positions.check_topic(kafka, rt.handle())?;
            Ok((PositionStore::Kafka(positions), Some(lease)))
        }
    }
}

/// One run of the stream on a position store: from the saved position (or `--start`) until a
/// stop, a definite error, a handover or a producer restart; reconnects to the server inside.
/// `new_id` is the stream id when the saved position has none, and whether a term used it.
fn stream_term(
    settings: &StreamSettings,
    store: &PositionStore,
    new_id: &mut (String, bool),
    rt: &Runtime,
    shutdown: &Arc<Shutdown>,
    metrics: &Metrics,
) -> Result<()> {
    let saved = store.load()?;
    let mut start = match &saved {
        Some(p) => {
            if settings.start.is_some() {
                tracing::info!("resuming from {store}; --start applies only without a saved position");
            }
            Start::Resume { file: p.file.clone(), offset: p.offset, gtids: p.gtids()? }
        }
        None => settings.start.clone().unwrap_or(Start::Latest),
    };
    let encoder = Encoder::new(settings.format.clone());
    let (stream_id, new_stream) = match saved.as_ref().and_then(|p| p.stream_id.clone()) {
        Some(id) => (id, false),
        None => (new_id.0.clone(), !std::mem::replace(&mut new_id.1, true)),
    };
    let mut out: Box<dyn Sink> = match (settings.sink, &settings.kafka) {
        (SinkKind::Kafka, Some(kafka)) => {
            // The format is part of it: another format makes other messages.
            let configuration = format!("{:?}|{:?}|{}", settings.decode, settings.format, kafka.routing());
            let mut kafka = KafkaSink::new(
                kafka.clone(),
                encoder,
                shutdown.clone(),
                dedupe::stream_name(&stream_id, &configuration),
            )?;
            if new_stream {
                kafka.new_stream();
            }
            kafka.set_metrics(metrics.clone());
            Box::new(kafka)
        }
        _ => Box::new(StdoutSink::new(BufWriter::with_capacity(256 * 1024, io::stdout().lock()), encoder)),
    };
    let schedule = Schedule::new(settings.checkpoint_every, settings.checkpoint_interval);
    let mut sink = Checkpointing::new(out.as_mut(), store, schedule, saved.clone(), stream_id);
    sink.set_metrics(metrics.clone());
    let mut snapshot: Option<Snapshot> = None;
    // Failed attempts since a stream last delivered something; of those, the streams that the
    // server closed before sending any event.
    let mut attempt = 0u32;
    let mut empty_streams = 0u32;
    loop {
        if shutdown.requested() {
            // Stopped while reconnecting: what was delivered is saved, as at any stop.
            return sink.finish();
        }
        let current = sink.position();
        let opened = ServerSource::open(rt.handle(), &settings.server, &start, Checks::Preflight(current.as_ref()));
        let (delivered, err) = match opened {
            Ok(mut source) => {
                if let Some(prev) = &current {
                    check_identity(prev, &source)?;
                }
                if snapshot.is_none() {
                    if let Some(snap) = &settings.snapshot {
                        let saved_progress = saved.as_ref().map(|p| p.snapshot.clone());
                        snapshot = new_snapshot(
                            rt,
                            &settings.server,
                            &source,
                            snap.clone(),
                            &settings.decode,
                            saved_progress,
                        )?;
                    }
                }
                metrics.set_ready(true);
                sink.set_server(source.flavor, source.identity.clone());
                let progress = snapshot.as_ref().map(Snapshot::progress);
                sink.begin_at(Resume { snapshot: progress, ..source.start.clone() })?;
                let mut decoder = server_decoder(rt, &settings.server, &source, settings.decode.clone())?;
                let result =
                    run(&mut source, &mut decoder, &mut sink, shutdown, snapshot.as_mut(), Until::End, metrics);
                let delivered = source.delivered();
                drop(source);
                match result {
                    Ok(()) => return sink.finish(),
                    Err(e) if is_transient(&e) && !shutdown.requested() => {
                        // Everything handed to the sink stays delivered; resume after its last commit.
                        if let Some(resume) = sink.last_commit() {
                            start = resume_from(resume);
                        }
                        (Some(delivered), e)
                    }
                    Err(e) if is_transient(&e) => return sink.finish(),
                    Err(e) => {
                        // Save what was delivered before the failure; the failure itself is the
                        // error (and usually the reason finishing fails too).
                        if let Err(finish) = sink.finish() {
                            tracing::debug!("finishing after the error: {finish:#}");
                        }
                        return Err(e);
                    }
                }
            }
            // A stream that ended before its first event was opened, and delivered nothing.
            Err(e) if is_transient(&e) => {
                let ended_at_once = e.downcast_ref::<EndedAtOnce>().is_some();
                (ended_at_once.then_some(false), e)
            }
            Err(e) => return Err(e),
        };
        match delivered {
            Some(true) => (attempt, empty_streams) = (0, 0),
            Some(false) => empty_streams += 1,
            None => {}
        }
        if empty_streams == MAX_EMPTY_STREAMS {
            sink.finish()?;
            bail!(
                "the server closed {MAX_EMPTY_STREAMS} replication streams in a row before sending any event (the last: {err:#}), so retrying cannot help. See the server's error log; check that nothing kills replication connections (a kill script, a proxy without replication support) and that no other replica uses --server-id {}",
                settings.server.server_id
            );
        }
        attempt += 1;
        let kind = if delivered.is_some() { "stream" } else { "connect" };
        backoff(rt, shutdown, &settings.server, attempt, &err, (metrics, kind));
    }
}

pub fn check(args: CheckArgs) -> Result<()> {
    let cfg = server_config(&args.server, false)?;
    let saved = match &args.position_file {
        Some(path) => PositionFile::open(path)?.load()?,
        None => None,
    };
    let rt = runtime()?;
    let opts = connect_opts(&cfg)?;
    let checks = rt.block_on(async {
        let mut conn = connect(&opts, cfg.wait_for_server).await?;
        let (flavor, version) = flavor_of(&mut conn).await?;
        println!("server {} ({version})", redact(&cfg.url));
        preflight::run(&mut conn, flavor, saved.as_ref(), true).await
    })?;
    for c in &checks {
        println!("{c}");
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    println!("{} passed, {failed} failed, {warned} warnings", checks.len() - failed - warned);
    if failed > 0 {
        bail!("{failed} check(s) failed: streaming from this server could lose or corrupt events");
    }
    Ok(())
}

/// A new position file's stream id: random enough that two position files never share one.
fn new_stream_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{:016x}", RandomState::new().hash_one((now.as_nanos(), std::process::id())))
}

/// `binlog-tail snapshot`: writes the signal row that asks a running stream for a snapshot.
pub fn signal(args: SignalArgs) -> Result<()> {
    let (db, table) = parse_table(&args.signal_table)?;
    for t in &args.table {
        crate::filter::TablePattern::parse(t).map_err(|e| Usage(format!("--table: {e:#}")))?;
    }
    let cfg = server_config(&args.server, false)?;
    let opts = connect_opts(&cfg)?;
    let kind = if args.stop { "stop-snapshot" } else { "execute-snapshot" };
    let data = serde_json::json!({"data-collections": args.table, "type": "incremental"}).to_string();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let id = format!("binlog-tail-{nanos}-{}", std::process::id());
    let rt = runtime()?;
    rt.block_on(async {
        use mysql_async::prelude::Queryable;
        let mut conn = connect(&opts, cfg.wait_for_server).await?;
        let sql = format!(
            "INSERT INTO `{}`.`{}` (id, type, data) VALUES (?, ?, ?)",
            db.replace('`', "``"),
            table.replace('`', "``")
        );
        conn.exec_drop(sql, (&id, kind, &data)).await.map_err(|e| match &e {
            mysql_async::Error::Server(s) if s.code == 1146 => anyhow::anyhow!(
                "the signal table `{db}`.`{table}` does not exist: create it with CREATE TABLE `{db}`.`{table}` {}",
                crate::signal::SIGNAL_TABLE_DDL
            ),
            mysql_async::Error::Server(s) if s.code == 1142 => anyhow::anyhow!(
                "user `{}` may not write the signal table: GRANT INSERT ON `{db}`.`{table}` TO ... ({})",
                opts.user().unwrap_or(""),
                s.message
            ),
            _ => anyhow::anyhow!("cannot write the signal row: {e}"),
        })
    })?;
    println!("{kind} signal {id} written to {db}.{table} for {}", args.table.join(", "));
    Ok(())
}

fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The snapshot to run alongside the stream, if any: a new one when there is no saved position
/// (`saved` None), the saved one while it is unfinished. With a signal table there always is
/// one (incremental snapshots may be requested); without, none once the initial snapshot
/// completed or when the position file predates it (`Some(None)`: the stream already has every
/// row since then).
fn new_snapshot(
    rt: &Runtime,
    cfg: &ServerConfig,
    source: &ServerSource,
    settings: snapshot::Settings,
    opts: &Options,
    saved: Option<Option<SnapshotProgress>>,
) -> Result<Option<Snapshot>> {
    if !opts.filter.includes_op(Op::Read) {
        tracing::info!("--ops leaves out read events: no snapshot is taken");
        return Ok(None);
    }
    let mut settings = settings;
    let method = *settings.method.get_or_insert(match source.flavor {
        Flavor::MariaDb => snapshot::Method::Consistent,
        Flavor::MySql => snapshot::Method::Watermark,
    });
    // Settings this server cannot work with: exit 2, like a bad command line.
    if method == snapshot::Method::Consistent && source.flavor == Flavor::MySql {
        return Err(Usage("--snapshot-method consistent needs MariaDB's binlog_snapshot_position; on MySQL use --snapshot-method watermark".into()).into());
    }
    if method == snapshot::Method::Watermark && settings.signal_table.is_none() {
        return Err(Usage(format!(
            "snapshots on MySQL use watermarks written to a signal table: give --signal-table db.table (CREATE TABLE db.table {}; the user needs INSERT and DELETE on it)",
            crate::signal::SIGNAL_TABLE_DDL
        ))
        .into());
    }
    let signals = settings.signal_table.is_some();
    let progress = match saved {
        None => None,
        Some(Some(progress)) if !progress.complete() => {
            tracing::info!("resuming the snapshot: {} table(s) left, {} done", progress.pending.len(), progress.done);
            Some(progress)
        }
        Some(Some(progress)) if signals => Some(progress),
        Some(Some(_)) => return Ok(None),
        Some(None) if signals => Some(SnapshotProgress { pending: Vec::new(), after: None, done: 0 }),
        Some(None) => {
            tracing::info!("the position file holds a position without a snapshot: resuming from it, no snapshot is taken (move the file away to take one)");
            return Ok(None);
        }
    };
    let skip = opts
        .outbox
        .iter()
        .filter_map(|o| o.table.split_once('.'))
        .map(|(d, t)| (d.to_string(), t.to_string()))
        .collect();
    let server = (source.flavor, source.identity.server_id);
    Ok(Some(Snapshot::new(
        rt.handle().clone(),
        connect_opts(cfg)?,
        settings,
        opts.filter.clone(),
        skip,
        progress,
        server,
    )?))
}

fn server_decoder(rt: &Runtime, cfg: &ServerConfig, source: &ServerSource, opts: Options) -> Result<Decoder> {
    let lookup = InfoSchema::new(rt.handle().clone(), connect_opts(cfg)?);
    let mut decoder = Decoder::new(Some(Box::new(lookup)), opts);
    decoder.set_gtids(source.start_gtids.clone());
    Ok(decoder)
}

/// How often an idle stream wakes up to save a checkpoint that fell due.
const IDLE_WAKEUP: Duration = Duration::from_millis(250);

/// When `run` returns by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// At the end of the stream (never, when following).
    End,
    /// When the snapshot (if any) has been emitted and the stream has nothing more to send now.
    SnapshotDone,
}

/// Feeds server events to the decoder until the stream ends, the limit is reached, or a shutdown
/// was requested and no transaction is open. A snapshot gets every point between transactions.
fn run(
    source: &mut ServerSource,
    decoder: &mut Decoder,
    sink: &mut dyn Sink,
    shutdown: &Shutdown,
    mut snapshot: Option<&mut Snapshot>,
    until: Until,
    metrics: &Metrics,
) -> Result<()> {
    // The last point between transactions, where an idle stream stands.
    let (mut at_file, mut at_offset) = (source.start.file.clone(), source.start.offset);
    loop {
        if shutdown.requested() && (!decoder.in_transaction() || shutdown.forced()) || decoder.limit_reached() {
            return Ok(());
        }
        let next = match source.try_next()? {
            Next::Idle => {
                if let Some(snap) = snapshot.as_deref_mut() {
                    snap.reached(&at_file, at_offset, &decoder.gtids, sink, shutdown)?;
                }
                if until == Until::SnapshotDone && snapshot.as_deref().is_none_or(Snapshot::complete) {
                    return Ok(());
                }
                // Flushing when idle also saves a due checkpoint; waking up now and then lets a
                // checkpoint that fell due while waiting be saved too.
                sink.flush()?;
                source.next_blocking(&shutdown.notify, IDLE_WAKEUP)?
            }
            other => other,
        };
        match next {
            Next::Event(ev) => {
                let h = ev.header;
                let next_offset = u64::from(h.log_pos);
                let offset = next_offset.saturating_sub(u64::from(h.event_size));
                let flow = match snapshot.as_deref_mut() {
                    Some(snap) => decoder.feed(
                        ev.raw(),
                        offset,
                        next_offset,
                        &mut Snapshotting { sink: &mut *sink, snapshot: snap },
                    )?,
                    None => decoder.feed(ev.raw(), offset, next_offset, sink)?,
                };
                metrics.event_read(&h, decoder.file(), next_offset);
                metrics.set_rows_events_filtered(decoder.stats.filtered_events);
                if flow == Flow::Stop {
                    return Ok(());
                }
                // Artificial events (log_pos 0) and rotations do not mark a place in the file.
                if let Some(snap) = snapshot.as_deref_mut().filter(|_| h.log_pos != 0 && h.type_code != ROTATE) {
                    if !decoder.in_transaction() {
                        (at_file, at_offset) = (decoder.file().clone(), next_offset);
                        snap.reached(&at_file, at_offset, &decoder.gtids, sink, shutdown)?;
                    }
                }
            }
            Next::End => return Ok(()),
            Next::Idle | Next::Interrupted => {}
        }
    }
}

const ROTATE: u8 = 4;

fn resume_from(resume: &Resume) -> Start {
    Start::Resume { file: resume.file.to_string(), offset: resume.offset, gtids: resume.gtids.clone() }
}

/// A position is only meaningful on the server it was taken on, unless it is a GTID set.
fn check_identity(prev: &Position, source: &ServerSource) -> Result<()> {
    if prev.server == source.identity {
        return Ok(());
    }
    if source.resumed_by_gtid {
        tracing::warn!(
            "the server changed from {} to {} (failover?); resuming by GTID set {}",
            prev.server,
            source.identity,
            prev.gtid_set.as_deref().unwrap_or("")
        );
        return Ok(());
    }
    bail!(
        "the position {}:{} was taken on {} but --url reaches {}: file offsets do not carry over between servers (enable GTIDs for failover). Point --url at the original server, or move the position file away and choose --start deliberately",
        prev.file,
        prev.offset,
        prev.server,
        source.identity
    )
}

/// Consecutive streams closed before their first event after which retrying stops.
const MAX_EMPTY_STREAMS: u32 = 5;

/// Exponential backoff with jitter, cut short by a shutdown request. Connecting is retried
/// without a limit (a CDC process must outlive a DNS or network blip), so every attempt is
/// logged with its number and the address; counted as an error of `kind` and a reconnect, and
/// not ready meanwhile.
fn backoff(
    rt: &Runtime,
    shutdown: &Shutdown,
    server: &ServerConfig,
    attempt: u32,
    err: &anyhow::Error,
    (metrics, kind): (&Metrics, &'static str),
) {
    metrics.set_ready(false);
    metrics.error(kind);
    metrics.reconnect();
    use std::hash::{BuildHasher, RandomState};
    let base = Duration::from_millis(200) * 2u32.saturating_pow(attempt.min(8));
    let base = base.min(Duration::from_secs(30));
    let jitter = (RandomState::new().hash_one(attempt) % 1000) as f64 / 1000.0;
    let delay = base.mul_f64(0.5 + jitter);
    tracing::warn!("{err:#}; reconnecting to {} in {delay:.1?} (attempt {attempt})", redact(&server.url));
    if shutdown.requested() {
        return;
    }
    rt.block_on(async {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.notify.notified() => {}
        }
    });
}
