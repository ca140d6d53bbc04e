//! Where change events go. A sink acknowledges a transaction only once everything up to its
//! end is durably handed over (stdout: written and flushed; Kafka: acknowledged by the brokers; NATS: a PubAck from JetStream;
//! Redis: its batch applied with the stream's marker),
//! which is what lets the position move.

pub mod kafka;
pub mod nats;
pub mod redis;
pub mod stdout;

use anyhow::Result;

use crate::event::{Change, Ddl};
use crate::outbox::Message;
use crate::position::Resume;
use crate::schema::Table;
use crate::signal::Signal;

pub trait Sink {
    fn change(&mut self, change: &Change) -> Result<()>;
    fn ddl(&mut self, ddl: &Ddl) -> Result<()>;
    /// A routed message (an outbox event).
    fn message(&mut self, msg: &Message) -> Result<()>;
    /// A row of the signal table; only a stream running snapshots acts on it.
    fn signal(&mut self, _signal: &Signal) -> Result<()> {
        Ok(())
    }
    /// True while the rows of `table` are to be left out of the stream: a snapshot read still to
    /// come contains their effect (see `snapshot::Snapshot::holds_back`).
    fn leaves_out(&mut self, _table: &Table) -> bool {
        false
    }
    /// A transaction ended; reading may later resume at `resume`.
    fn commit(&mut self, resume: &Resume) -> Result<()>;
    /// The end of the newest transaction that, with every one before it, is acknowledged —
    /// without waiting for what is still in flight.
    fn acknowledged(&mut self) -> Result<Option<Resume>>;
    /// Waits until everything handed over is acknowledged.
    fn flush(&mut self) -> Result<()>;
}
