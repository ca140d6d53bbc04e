//! What each subcommand runs: `dump`, `stream` (a supervisor of terms on a position store, each
//! term a reconnect loop around the event loop in `run`), `check` and `snapshot` (the signal);
//! `status` is in `ops`.
//!
//! Invariants: a reconnect resumes from the end of the last transaction handed to the sink, so
//! nothing is skipped; a shutdown signal lets the current transaction finish, flushes the sink
//! and saves the position before exiting 0. A snapshot is offered every point between
//! transactions the stream reaches (and idle moments), which is where its chunks are emitted.

mod check;
mod dump;
mod run;
mod signal;
mod sinks;
mod stream;
mod term;

pub use check::check;
pub use dump::dump;
pub use signal::signal;
pub use stream::stream;

use anyhow::{Context, Result};
use tokio::runtime::Runtime;

use crate::decode::{Decoder, Options};
use crate::event::Op;
use crate::position::{Flavor, SnapshotProgress};
use crate::snapshot::{self, Snapshot};
use crate::source::connection::connect_opts;
use crate::source::info_schema::InfoSchema;
use crate::source::server::ServerSource;
use crate::source::ServerConfig;

fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
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

fn server_decoder(rt: &Runtime, cfg: &ServerConfig, source: &ServerSource, opts: Options) -> Result<Decoder> {
    let lookup = InfoSchema::new(rt.handle().clone(), connect_opts(cfg)?);
    let mut decoder = Decoder::new(Some(Box::new(lookup)), opts);
    decoder.set_gtids(source.start_gtids.clone());
    Ok(decoder)
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
    use crate::error::Usage;
    if !opts.filter.includes_op(Op::Read) {
        tracing::info!("--ops leaves out read events: no snapshot is taken");
        return Ok(None);
    }
    let mut settings = settings;
    // The window needs GTIDs on the server and the stream's executed set: a stream started at a
    // file position (`--start FILE:POS`) has none, and its windows would never close.
    let gtid_mode_on = source.flavor == Flavor::MySql
        && settings.method.is_none_or(|m| m == snapshot::Method::GtidWindow)
        && source.start_gtids.is_some()
        && rt.block_on(snapshot::gtid_window::gtid_mode_on(&connect_opts(cfg)?))?;
    // Settings this server cannot work with: exit 2, like a bad command line.
    let method = snapshot::Method::for_server(settings.method, source.flavor, gtid_mode_on)?;
    settings.method = Some(method);
    if method == snapshot::Method::Watermark && settings.signal_table.is_none() {
        if !settings.initial {
            // Only HTTP requests could start one: a stream without snapshots, not an error.
            tracing::info!(
                "snapshot requests over HTTP need --signal-table on MySQL without GTIDs (the watermark method writes there)"
            );
            return Ok(None);
        }
        return Err(Usage(format!(
            "this MySQL stream has no GTIDs to bound snapshot windows with (gtid_mode is not ON, or it starts at a file position), so snapshots use watermarks written to a signal table: give --signal-table db.table (CREATE TABLE db.table {}; the user needs INSERT and DELETE on it), or turn GTIDs on to snapshot without writing (--snapshot-method gtid-window)",
            crate::signal::SIGNAL_TABLE_DDL
        ))
        .into());
    }
    // Incremental snapshots may be asked for (a signal table, or HTTP requests).
    let signals = settings.signal_table.is_some() || settings.requests;
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
