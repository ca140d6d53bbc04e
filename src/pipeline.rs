//! The one pipeline every subcommand runs: source -> decode -> sink, and for `stream` the
//! reconnect loop and the checkpoints around it.
//!
//! Invariants: a reconnect resumes from the end of the last transaction handed to the sink, so
//! nothing is skipped; a shutdown signal lets the current transaction finish, flushes the sink
//! and saves the position before exiting 0.

use std::io::{self, BufWriter};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::runtime::Runtime;

use crate::checkpoint::{Checkpointing, Position, PositionFile, Schedule};
use crate::cli::{CheckArgs, DumpArgs, SinkKind, StreamArgs};
use crate::config::{decode_options, server_config, StreamSettings};
use crate::decode::{Decoder, Flow, Options};
use crate::position::Resume;
use crate::error::is_transient;
use crate::metrics::Metrics;
use crate::ops;
use crate::preflight::{self, Status};
use crate::shutdown::Shutdown;
use crate::sink::kafka::KafkaSink;
use crate::sink::stdout::{self, Closed, StdoutSink};
use crate::sink::Sink;
use crate::source::file::read_files;
use crate::source::server::{connect, connect_opts, flavor_of, redact, Checks, InfoSchema, Next, ServerConfig, ServerSource};
use crate::source::Start;

pub fn dump(args: DumpArgs) -> Result<()> {
    let mut sink = StdoutSink::new(BufWriter::with_capacity(256 * 1024, io::stdout().lock()));
    let opts = decode_options(&args.emit, args.limit)?;
    if !args.file.is_empty() {
        let mut decoder = Decoder::new(None, opts);
        read_files(&args.file, args.follow, &mut decoder, &mut sink)?;
        log_stats(&decoder);
        return sink.flush();
    }
    let cfg = server_config(&args.server, args.follow)?;
    let start = args.server.start.clone().unwrap_or(Start::Earliest);
    let rt = runtime()?;
    let shutdown = Shutdown::install(&rt);
    let mut source = ServerSource::open(rt.handle(), &cfg, &start, Checks::Basic)?;
    let mut decoder = server_decoder(&rt, &cfg, &source, opts)?;
    // Only for the catch-up progress: dump serves no metrics.
    let metrics = Metrics::new();
    ops::behind::spawn(rt.handle(), connect_opts(&cfg)?, metrics.clone());
    run(&mut source, &mut decoder, &mut sink, &shutdown, &metrics)?;
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
            anyhow::anyhow!("stdout was closed by its reader; the position file holds the last transaction written before that")
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
    let position_file = PositionFile::open(&settings.position_file)?;
    let saved = position_file.load()?;
    let mut start = match &saved {
        Some(p) => {
            if settings.start.is_some() {
                tracing::info!("resuming from {}; --start applies only without a saved position", settings.position_file.display());
            }
            Start::Resume { file: p.file.clone(), offset: p.offset, gtids: p.gtids()? }
        }
        None => settings.start.clone().unwrap_or(Start::Latest),
    };
    let rt = runtime()?;
    let shutdown = Shutdown::install(&rt);
    let metrics = Metrics::new();
    let mut out: Box<dyn Sink> = match (settings.sink, &settings.kafka) {
        (SinkKind::Kafka, Some(kafka)) => {
            let kafka = KafkaSink::new(kafka.clone(), shutdown.clone())?;
            kafka.set_metrics(metrics.clone());
            Box::new(kafka)
        }
        _ => Box::new(StdoutSink::new(BufWriter::with_capacity(256 * 1024, io::stdout().lock()))),
    };
    if let Some(addr) = settings.metrics_addr {
        ops::http::serve(addr, metrics.clone())?;
    }
    ops::behind::spawn(rt.handle(), connect_opts(&settings.server)?, metrics.clone());
    let schedule = Schedule::new(settings.checkpoint_every, settings.checkpoint_interval);
    let mut sink = Checkpointing::new(out.as_mut(), position_file, schedule, saved.clone());
    sink.set_metrics(metrics.clone());
    let mut failures = 0u32;
    loop {
        let current = sink.position();
        let opened = ServerSource::open(rt.handle(), &settings.server, &start, Checks::Preflight(current.as_ref()));
        let mut source = match opened {
            Ok(source) => source,
            Err(e) if is_transient(&e) && !shutdown.requested() => {
                failures += 1;
                backoff(&rt, &shutdown, failures, &e, (&metrics, "connect"));
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(prev) = &current {
            check_identity(prev, &source)?;
        }
        failures = 0;
        metrics.set_ready(true);
        sink.set_server(source.flavor, source.identity.clone());
        sink.begin_at(source.start.clone())?;
        let mut decoder = server_decoder(&rt, &settings.server, &source, settings.decode.clone())?;
        let result = run(&mut source, &mut decoder, &mut sink, &shutdown, &metrics);
        drop(source);
        match result {
            Ok(()) => return sink.finish(),
            Err(e) if is_transient(&e) && !shutdown.requested() => {
                // Everything handed to the sink stays delivered; resume after its last commit.
                if let Some(resume) = sink.last_commit() {
                    start = resume_from(resume);
                }
                failures += 1;
                backoff(&rt, &shutdown, failures, &e, (&metrics, "stream"));
            }
            Err(e) if is_transient(&e) => return sink.finish(),
            Err(e) => {
                // Save what was delivered before the failure; the failure itself is the error
                // (and usually the reason finishing fails too).
                if let Err(finish) = sink.finish() {
                    tracing::debug!("finishing after the error: {finish:#}");
                }
                return Err(e);
            }
        }
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

fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn server_decoder(rt: &Runtime, cfg: &ServerConfig, source: &ServerSource, opts: Options) -> Result<Decoder> {
    let lookup = InfoSchema::new(rt.handle().clone(), connect_opts(cfg)?);
    let mut decoder = Decoder::new(Some(Box::new(lookup)), opts);
    decoder.set_gtids(source.start_gtids.clone());
    Ok(decoder)
}

/// How often an idle stream wakes up to save a checkpoint that fell due.
const IDLE_WAKEUP: Duration = Duration::from_millis(250);

/// Feeds server events to the decoder until the stream ends, the limit is reached, or a shutdown
/// was requested and no transaction is open.
fn run(source: &mut ServerSource, decoder: &mut Decoder, sink: &mut dyn Sink, shutdown: &Shutdown, metrics: &Metrics) -> Result<()> {
    loop {
        if shutdown.requested() && (!decoder.in_transaction() || shutdown.forced()) {
            return Ok(());
        }
        let next = match source.try_next()? {
            Next::Idle => {
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
                let flow = decoder.feed(ev.raw(), offset, next_offset, sink)?;
                metrics.event_read(&h, decoder.file(), next_offset);
                metrics.set_rows_events_filtered(decoder.stats.filtered_events);
                if flow == Flow::Stop {
                    return Ok(());
                }
            }
            Next::End => return Ok(()),
            Next::Idle | Next::Interrupted => {}
        }
    }
}

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
            "the server changed from {:?} to {:?} (failover?); resuming by GTID set {}",
            prev.server,
            source.identity,
            prev.gtid_set.as_deref().unwrap_or("")
        );
        return Ok(());
    }
    bail!(
        "the position {}:{} was taken on server {:?} but --url reaches {:?}: file offsets do not carry over between servers (enable GTIDs for failover). Point --url at the original server, or move the position file away and choose --start deliberately",
        prev.file,
        prev.offset,
        prev.server,
        source.identity
    )
}

/// Exponential backoff with jitter, cut short by a shutdown request; counted as an error of
/// `kind` and a reconnect, and not ready meanwhile.
fn backoff(rt: &Runtime, shutdown: &Shutdown, failures: u32, err: &anyhow::Error, (metrics, kind): (&Metrics, &'static str)) {
    metrics.set_ready(false);
    metrics.error(kind);
    metrics.reconnect();
    use std::hash::{BuildHasher, RandomState};
    let base = Duration::from_millis(200) * 2u32.saturating_pow(failures.min(8));
    let base = base.min(Duration::from_secs(30));
    let jitter = (RandomState::new().hash_one(failures) % 1000) as f64 / 1000.0;
    let delay = base.mul_f64(0.5 + jitter);
    tracing::warn!("{err:#}; reconnecting in {delay:.1?} (attempt {failures})");
    rt.block_on(async {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.notify.notified() => {}
        }
    });
}
