//! One JSON object per line on stdout, through a buffer flushed at transaction ends (when the
//! buffer is large) and at exit. A closed pipe (`| head`) is reported as `Closed`, which the
//! binary turns into a quiet exit 0.

use std::io::{self, Write};

use anyhow::Result;
use thiserror::Error;

use super::Sink;
use crate::position::Resume;
use crate::event::{Change, Ddl};
use crate::format::Encoder;
use crate::outbox::Message;

#[derive(Debug, Error)]
#[error("stdout was closed")]
pub struct Closed;

pub struct StdoutSink<W: Write> {
    out: W,
    encoder: Encoder,
    line: Vec<u8>,
    buffered: usize,
    last_commit: Option<Resume>,
}

const FLUSH_AT: usize = 256 * 1024;

impl<W: Write> StdoutSink<W> {
    pub fn new(out: W, encoder: Encoder) -> Self {
        StdoutSink { out, encoder, line: Vec::with_capacity(4096), buffered: 0, last_commit: None }
    }

    fn io(&mut self, r: io::Result<()>) -> Result<()> {
        match r {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(Closed.into()),
            other => Ok(other?),
        }
    }
}

impl<W: Write> StdoutSink<W> {
    fn line(&mut self, render: impl FnOnce(&mut Encoder, &mut Vec<u8>)) -> Result<()> {
        self.line.clear();
        render(&mut self.encoder, &mut self.line);
        self.line.push(b'\n');
        self.buffered += self.line.len();
        let r = self.out.write_all(&self.line);
        self.io(r)
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
        if self.buffered >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Written and flushed is acknowledged.
    fn acknowledged(&mut self) -> Result<Option<Resume>> {
        self.flush()?;
        Ok(self.last_commit.clone())
    }

    fn flush(&mut self) -> Result<()> {
        self.buffered = 0;
        let r = self.out.flush();
        self.io(r)
    }
}
