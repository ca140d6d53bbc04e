//! The decoder's sink while snapshots can run.

use anyhow::Result;

use super::Snapshot;
use crate::event::Change;
use crate::position::Resume;
use crate::schema::Table;
use crate::signal::Signal;
use crate::sink::Sink;

/// The sink the decoder writes to while snapshots can run: signals go to the snapshot; a commit
/// carries the snapshot's progress when a signal moved it, so a signal is saved with the
/// transaction that carried it; the rows of a table waiting for its read are left out
/// (`Snapshot::holds_back`); changes count against `--limit` with the reads.
pub struct Snapshotting<'a> {
    pub sink: &'a mut dyn Sink,
    pub snapshot: &'a mut Snapshot,
}

impl Sink for Snapshotting<'_> {
    fn change(&mut self, change: &Change) -> Result<()> {
        if !self.snapshot.count() {
            return Ok(());
        }
        self.snapshot.observe(change);
        self.sink.change(change)
    }

    fn leaves_out(&mut self, table: &Table) -> bool {
        self.snapshot.holds_back(table)
    }

    fn ddl(&mut self, ddl: &crate::event::Ddl) -> Result<()> {
        self.sink.ddl(ddl)
    }

    fn message(&mut self, msg: &crate::outbox::Message) -> Result<()> {
        self.sink.message(msg)
    }

    fn signal(&mut self, signal: &Signal) -> Result<()> {
        self.snapshot.signal(signal).map(drop)
    }

    fn commit(&mut self, resume: &Resume) -> Result<()> {
        self.sink.commit(&self.snapshot.moved(resume))
    }

    fn acknowledged(&mut self) -> Result<Option<Resume>> {
        self.sink.acknowledged()
    }

    fn flush(&mut self) -> Result<()> {
        self.sink.flush()
    }
}
