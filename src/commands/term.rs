//! One term of `stream` on a position store: from the saved position (or `--start`) until a
//! stop, a definite error, a handover or a producer restart, reconnecting to the server inside.
//!
//! Invariants: however a term ends (a stop, an error, a failed reconnect), what the sink
//! acknowledged is saved before it returns; connecting is retried without a limit, except when
//! the server keeps closing streams before their first event, which retrying cannot fix.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use tokio::runtime::Runtime;

use super::run::{run, Until};
use super::{new_snapshot, server_decoder, sinks};
use crate::checkpoint::{Checkpointing, PositionStore, Schedule};
use crate::config::StreamSettings;
use crate::error::is_transient;
use crate::metrics::Metrics;
use crate::position::{Position, Resume};
use crate::shutdown::Shutdown;
use crate::snapshot::requests::Requests;
use crate::snapshot::Snapshot;
use crate::source::connection::redact;
use crate::source::server::{Checks, EndedAtOnce, ServerSource};
use crate::source::ServerConfig;
use crate::source::Start;

/// Consecutive streams closed before their first event after which retrying stops.
const MAX_EMPTY_STREAMS: u32 = 5;

/// Runs one term. `new_id` is the stream id when the saved position has none, and whether a
/// term used it.
pub fn term(
    settings: &StreamSettings,
    store: &PositionStore,
    new_id: &mut (String, bool),
    rt: &Runtime,
    (shutdown, metrics, requests): (&Arc<Shutdown>, &Metrics, &Requests),
) -> Result<()> {
    let saved = store.load()?;
    let start = match &saved {
        Some(p) => {
            if settings.start.is_some() {
                tracing::info!("resuming from {store}; --start applies only without a saved position");
            }
            Start::Resume { file: p.file.clone(), offset: p.offset, gtids: p.gtids()? }
        }
        None => settings.start.clone().unwrap_or(Start::Latest),
    };
    let (stream_id, new_stream) = match saved.as_ref().and_then(|p| p.stream_id.clone()) {
        Some(id) => (id, false),
        None => (new_id.0.clone(), !std::mem::replace(&mut new_id.1, true)),
    };
    let mut out = sinks::output(settings, (store, saved.as_ref()), (&stream_id, new_stream), shutdown, metrics)?;
    let schedule = Schedule::new(settings.checkpoint_every, settings.checkpoint_interval);
    let mut sink = Checkpointing::new(out.as_mut(), store, schedule, saved.clone(), stream_id);
    sink.set_metrics(metrics.clone());
    let result = reconnecting(settings, saved.as_ref(), start, &mut sink, (rt, shutdown, metrics, requests));
    match result {
        Ok(()) => sink.finish(),
        Err(e) => {
            // Save what was delivered before the failure; the failure itself is the error (and
            // usually the reason finishing fails too).
            if let Err(finish) = sink.finish() {
                tracing::debug!("finishing after the error: {finish:#}");
            }
            Err(e)
        }
    }
}

/// Streams from `start`, reconnecting after transient errors, until a stop or a definite error.
fn reconnecting(
    settings: &StreamSettings,
    saved: Option<&Position>,
    mut start: Start,
    sink: &mut Checkpointing,
    (rt, shutdown, metrics, requests): (&Runtime, &Arc<Shutdown>, &Metrics, &Requests),
) -> Result<()> {
    let mut snapshot: Option<Snapshot> = None;
    // Failed attempts since a stream last delivered something; of those, the streams that the
    // server closed before sending any event.
    let mut attempt = 0u32;
    let mut empty_streams = 0u32;
    loop {
        if shutdown.requested() {
            // Stopped while reconnecting: what was delivered is saved, as at any stop.
            return Ok(());
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
                        let saved_progress = saved.map(|p| p.snapshot.clone());
                        snapshot = new_snapshot(
                            rt,
                            &settings.server,
                            &source,
                            snap.clone(),
                            &settings.decode,
                            saved_progress,
                        )?;
                        if let Some(snapshot) = snapshot.as_mut().filter(|_| snap.requests) {
                            snapshot.set_requests(requests.clone());
                        }
                    }
                }
                metrics.set_ready(true);
                sink.set_server(source.flavor, source.identity.clone());
                let progress = snapshot.as_ref().map(Snapshot::progress);
                sink.begin_at(Resume { snapshot: progress, ..source.start.clone() })?;
                let mut decoder = server_decoder(rt, &settings.server, &source, settings.decode.clone())?;
                let result = run(&mut source, &mut decoder, sink, shutdown, snapshot.as_mut(), Until::End, metrics);
                let delivered = source.delivered();
                drop(source);
                match result {
                    Err(e) if is_transient(&e) && !shutdown.requested() => {
                        // Everything handed to the sink stays delivered; resume after its last commit.
                        if let Some(resume) = sink.last_commit() {
                            start = resume_from(resume);
                        }
                        (Some(delivered), e)
                    }
                    Err(e) if is_transient(&e) => return Ok(()),
                    other => return other,
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
