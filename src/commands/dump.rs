//! `binlog-tail dump`: a server's binlog (as a replica) or binlog files as JSON lines on stdout,
//! from `--start` (default: the oldest binlog) to the end, or on with `--follow`.

use anyhow::Result;

use super::run::{run, Until};
use super::{log_stats, new_snapshot, runtime, server_decoder, sinks};
use crate::cli::{DumpArgs, SnapshotMode};
use crate::config::{decode_options, format_settings, server_config, snapshot_settings};
use crate::decode::Decoder;
use crate::error::Usage;
use crate::metrics::Metrics;
use crate::ops;
use crate::shutdown::Shutdown;
use crate::sink::Sink;
use crate::source::connection::connect_opts;
use crate::source::file::read_files;
use crate::source::server::{Checks, ServerSource};
use crate::source::Start;

pub fn dump(args: DumpArgs) -> Result<()> {
    let mut sink = sinks::stdout(format_settings(&args.emit, args.server.url.as_deref())?);
    let mut opts = decode_options(&args.emit, args.limit)?;
    if !args.file.is_empty() {
        if args.snapshot.snapshot == SnapshotMode::Initial || args.snapshot.signal_table.is_some() {
            return Err(Usage(
                "--snapshot and --signal-table read rows from a server (--url): binlog files hold only changes".into(),
            )
            .into());
        }
        let mut decoder = Decoder::new(None, opts);
        read_files(&args.file, args.follow, &mut decoder, &mut sink)?;
        log_stats(&decoder);
        return sink.flush();
    }
    let settings = snapshot_settings(&args.snapshot, false)?;
    opts.signal_table = settings.as_ref().and_then(|s| s.signal_table.clone());
    // A snapshot needs the stream to go on until its last chunk is emitted; `dump` then stops at
    // the server's end unless --follow.
    let initial = settings.as_ref().is_some_and(|s| s.initial);
    let cfg = server_config(&args.server, args.follow || initial)?;
    let default_start = if initial { Start::Latest } else { Start::Earliest };
    let start = args.server.start.clone().unwrap_or(default_start);
    let rt = runtime()?;
    let shutdown = Shutdown::install(&rt)?;
    let mut source = ServerSource::open(rt.handle(), &cfg, &start, Checks::Basic)?;
    let until = if initial && !args.follow { Until::SnapshotDone } else { Until::End };
    let mut snapshot = match settings {
        Some(settings) => new_snapshot(&rt, &cfg, &source, settings, &opts, None)?,
        None => None,
    };
    if let Some(snapshot) = snapshot.as_mut() {
        // Reads and changes count against one --limit.
        snapshot.set_limit(args.limit);
    }
    let mut decoder = server_decoder(&rt, &cfg, &source, opts)?;
    // Only for the catch-up progress: dump serves no metrics.
    let metrics = Metrics::new();
    ops::behind::spawn(rt.handle(), connect_opts(&cfg)?, metrics.clone());
    run(&mut source, &mut decoder, &mut sink, &shutdown, snapshot.as_mut(), until, &metrics)?;
    log_stats(&decoder);
    sink.flush()
}
