//! One JSON object per line on stdout, rendered straight into one buffer that is written out
//! whenever it holds `FLUSH_AT` bytes, and at every acknowledgement and exit. A closed pipe
//! (`| head`) is reported as `Closed`, which `dump` turns into a quiet exit 0 and `stream` into an
//! error (its reader is gone).
//!
//! Invariants: a transaction is acknowledged only once its lines were written and flushed without
//! error; every write or flush error is an error of the run, never ignored. `stream` refuses a
//! stdout that discards what it is given (`/dev/null`, which is also what a closed stdout becomes
//! when the process starts), since the position would move past events nobody received.

use std::io::{self, Write};

use std::os::fd::AsFd;

use anyhow::{bail, Result};
use thiserror::Error;

use super::Sink;
use crate::event::{Change, Ddl};
use crate::format::Encoder;
use crate::outbox::Message;
use crate::position::Resume;

#[derive(Debug, Error)]
#[error("stdout was closed")]
pub struct Closed;

pub struct StdoutSink<W: Write> {
    out: W,
    encoder: Encoder,
    /// Lines not written to `out` yet (each rendered here in place: one copy per line).
    buf: Vec<u8>,
    last_commit: Option<Resume>,
}

const FLUSH_AT: usize = 256 * 1024;

impl<W: Write> StdoutSink<W> {
    pub fn new(out: W, encoder: Encoder) -> Self {
        StdoutSink { out, encoder, buf: Vec::with_capacity(FLUSH_AT + 4096), last_commit: None }
    }

    fn io(&mut self, r: io::Result<()>) -> Result<()> {
        match r {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(Closed.into()),
            Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
            Ok(()) => Ok(()),
        }
    }
}

impl<W: Write> StdoutSink<W> {
    fn line(&mut self, render: impl FnOnce(&mut Encoder, &mut Vec<u8>)) -> Result<()> {
        render(&mut self.encoder, &mut self.buf);
        self.buf.push(b'\n');
        if self.buf.len() >= FLUSH_AT {
            self.write_out()?;
        }
        Ok(())
    }

    /// Writes the buffered lines; what a failed write left stays buffered, so a retried flush
    /// fails again rather than acknowledging lines never written.
    fn write_out(&mut self) -> Result<()> {
        let mut written = 0;
        let mut r = Ok(());
        while written < self.buf.len() {
            match self.out.write(&self.buf[written..]) {
                Ok(0) => r = Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => r = Err(e),
            }
            if r.is_err() {
                break;
            }
        }
        self.buf.drain(..written);
        self.io(r)
    }
}

/// Lines still buffered are written when the sink goes, as a `BufWriter` would: a run that ends
/// on an error still prints what came before it.
impl<W: Write> Drop for StdoutSink<W> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.out.write_all(&self.buf).and_then(|()| self.out.flush());
        }
    }
}

impl<W: Write> Sink for StdoutSink<W> {
    fn change(&mut self, change: &Change) -> Result<()> {
        // Tombstones are for Kafka's log compaction: never written to stdout.
        for &part in self.encoder.parts(change) {
            self.line(|encoder, out| encoder.write_value(change, part, out))?;
        }
        Ok(())
    }

    fn ddl(&mut self, ddl: &Ddl) -> Result<()> {
        self.line(|_, out| ddl.write_json(out))
    }

    fn message(&mut self, msg: &Message) -> Result<()> {
        self.line(|_, out| msg.write_json(out))
    }

    fn commit(&mut self, resume: &Resume) -> Result<()> {
        self.last_commit = Some(resume.clone());
        Ok(())
    }

    /// Written and flushed is acknowledged.
    fn acknowledged(&mut self) -> Result<Option<Resume>> {
        self.flush()?;
        Ok(self.last_commit.clone())
    }

    fn flush(&mut self) -> Result<()> {
        self.write_out()?;
        let r = self.out.flush();
        self.io(r)
    }
}

/// Refuses a stdout that cannot carry events to anyone: not open for writing, or `/dev/null`
/// (the C runtime hands a process whose stdout was closed (`>&-`) a `/dev/null` in its place, so
/// both look the same here). `allow_discard` accepts `/dev/null` for those who mean it.
pub fn check_delivers(allow_discard: bool) -> Result<()> {
    let stdout = io::stdout();
    let fd = stdout.as_fd();
    let flags = rustix::fs::fcntl_getfl(fd).map_err(|e| {
        anyhow::anyhow!("stdout is not open ({e}): give binlog-tail a stdout to write to, or use --sink kafka")
    })?;
    if !matches!(flags & rustix::fs::OFlags::RWMODE, rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::RDWR) {
        bail!("stdout is not open for writing: redirect it to a file or a pipe, or use --sink kafka");
    }
    let stat = rustix::fs::fstat(fd).map_err(|e| anyhow::anyhow!("cannot inspect stdout: {e}"))?;
    let is_dev_null = rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::CharacterDevice
        && rustix::fs::major(stat.st_rdev) == 1
        && rustix::fs::minor(stat.st_rdev) == 3;
    if is_dev_null && !allow_discard {
        bail!("stdout is /dev/null (or was closed): every event would be thrown away while the position moves past it. Redirect stdout to a file or a pipe, use --sink kafka, or pass --allow-discard if discarding is what you want");
    }
    Ok(())
}
