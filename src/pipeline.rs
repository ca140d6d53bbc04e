//! The one pipeline every subcommand runs: source -> decode -> sink.

use std::io::{self, BufWriter};

use anyhow::{Context, Result};

use crate::cli::{DumpArgs, ServerArgs, SinkKind, StreamArgs};
use crate::decode::{Decoder, Flow};
use crate::sink::stdout::StdoutSink;
use crate::sink::Sink;
use crate::source::server::{connect_opts, InfoSchema, Next, ServerConfig, ServerSource};
use crate::source::file::read_files;

pub fn dump(args: DumpArgs) -> Result<()> {
    let mut sink = StdoutSink::new(BufWriter::with_capacity(256 * 1024, io::stdout().lock()));
    if !args.file.is_empty() {
        let mut decoder = Decoder::new(None, args.limit);
        read_files(&args.file, args.follow, &mut decoder, &mut sink)?;
        return sink.flush();
    }
    let cfg = server_config(&args.server, args.follow)?;
    run_server(&cfg, args.limit, &mut sink)
}

pub fn stream(args: StreamArgs) -> Result<()> {
    let cfg = server_config(&args.server, true)?;
    match args.sink {
        SinkKind::Stdout => {
            let mut sink = StdoutSink::new(BufWriter::with_capacity(256 * 1024, io::stdout().lock()));
            run_server(&cfg, None, &mut sink)
        }
    }
}

fn server_config(args: &ServerArgs, follow: bool) -> Result<ServerConfig> {
    let url = args
        .url
        .clone()
        .context("give --url mysql://USER@HOST:PORT to read from a server (or, for dump, --file PATH... to read binlog files)")?;
    let password = match &args.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --password-file {}", path.display()))?;
            Some(text.lines().next().unwrap_or_default().to_string())
        }
        None => std::env::var("MYSQL_PWD").ok(),
    };
    Ok(ServerConfig {
        url,
        password,
        server_id: args.server_id.unwrap_or_else(random_server_id),
        start: args.start.clone(),
        follow,
        heartbeat: args.heartbeat.max(std::time::Duration::from_millis(100)),
        wait_for_server: args.wait_for_server,
    })
}

/// A replica id unlikely to collide with real replicas (which use small ids) or with another
/// binlog-tail: servers refuse a second replica with the same id.
fn random_server_id() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    0x4000_0000 | (RandomState::new().hash_one(std::process::id()) as u32 & 0x3fff_ffff)
}

fn run_server(cfg: &ServerConfig, limit: Option<u64>, sink: &mut dyn Sink) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut source = ServerSource::open(rt.handle(), cfg)?;
    let lookup = InfoSchema::new(rt.handle().clone(), connect_opts(cfg)?);
    let mut decoder = Decoder::new(Some(Box::new(lookup)), limit);
    decoder.set_gtids(source.start_gtids.clone());
    loop {
        let next = match source.next()? {
            Next::Idle => {
                sink.flush()?;
                source.next_blocking()?
            }
            other => other,
        };
        match next {
            Next::Event(ev) => {
                let h = ev.header;
                let next_offset = u64::from(h.log_pos);
                let offset = next_offset.saturating_sub(u64::from(h.event_size));
                if decoder.feed(ev.raw(), offset, next_offset, sink)? == Flow::Stop {
                    break;
                }
            }
            Next::End => break,
            Next::Idle => unreachable!("next_blocking never returns Idle"),
        }
    }
    sink.flush()?;
    drop(source);
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}
