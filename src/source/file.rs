//! Binlog and relay-log files read from disk, in the order given.
//!
//! Invariants: a file must start with the binlog magic; every event is framed and checksummed
//! before decoding; a file that ends inside an event is an error naming the offset — unless
//! `follow` is set and it is the last file, in which case the rest is awaited (a live binlog).

use std::fs::File;
use std::io::{BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mysql_common::binlog::consts::EventType;

use crate::decode::{Decoder, Flow};
use crate::frame::{Checksums, EventReader, FrameError, Partial};
use crate::sink::Sink;

const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Decodes `paths` in order into `sink`. Returns when every file is read, or the decoder says
/// stop; with `follow`, keeps waiting for the last file to grow.
pub fn read_files(paths: &[PathBuf], follow: bool, decoder: &mut Decoder, sink: &mut dyn Sink) -> Result<()> {
    let total: u64 = paths.iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
    let progress = progress_bar(total);
    for (i, path) in paths.iter().enumerate() {
        let last = i + 1 == paths.len();
        let flow = read_file(path, follow && last, decoder, sink, &progress)
            .with_context(|| format!("reading {}", path.display()))?;
        if flow == Flow::Stop {
            break;
        }
    }
    progress.finish_and_clear();
    Ok(())
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("static template"),
    );
    bar
}

fn read_file(
    path: &Path,
    follow: bool,
    decoder: &mut Decoder,
    sink: &mut dyn Sink,
    progress: &ProgressBar,
) -> Result<Flow> {
    let file = File::open(path).context("cannot open the file")?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    read_binlog(&name, BufReader::with_capacity(256 * 1024, file), follow, decoder, sink, progress)
}

/// Decodes one binlog file's bytes (magic, format description, events) from `input`, as
/// `dump --file` does; `name` is the file name positions report.
pub fn read_binlog(
    name: &str,
    mut input: impl Read,
    follow: bool,
    decoder: &mut Decoder,
    sink: &mut dyn Sink,
    progress: &ProgressBar,
) -> Result<Flow> {
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut input, &mut magic)?;
    if got < 4 || magic != MAGIC {
        bail!("not a binlog file: it does not start with the binlog magic bytes fe 62 69 6e");
    }
    decoder.set_file(name);
    let mut events = EventReader::new(input, 4, Checksums::default());
    let mut first = true;
    loop {
        if decoder.limit_reached() {
            return Ok(Flow::Stop);
        }
        let before = events.offset;
        match events.next_event() {
            Ok(Ok((offset, event))) => {
                if first && event.header.type_code != EventType::FORMAT_DESCRIPTION_EVENT as u8 {
                    bail!(
                        "not a binlog file: its first event is not a format description (type {})",
                        event.header.type_code
                    );
                }
                first = false;
                let next = offset + u64::from(event.header.event_size);
                if decoder.feed(event, offset, next, sink)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
                progress.inc(next - before);
            }
            Ok(Err(Partial::End)) if !follow => return Ok(Flow::Continue),
            Ok(Err(Partial::Truncated { have, need })) if !follow => {
                return Err(FrameError::Truncated { offset: events.offset, have, need }.into());
            }
            Ok(Err(_)) => {
                sink.flush()?;
                std::thread::sleep(FOLLOW_POLL);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn read_up_to(file: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
