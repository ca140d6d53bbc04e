//! Where change events go. A sink acknowledges a transaction only once everything up to its
//! end is durably handed over (for stdout: written and flushed), which is what lets the position
//! move.

pub mod stdout;

use anyhow::Result;

use crate::decode::Resume;
use crate::event::{Change, Ddl};
use crate::outbox::Message;

pub trait Sink {
    fn change(&mut self, change: &Change) -> Result<()>;
    fn ddl(&mut self, ddl: &Ddl) -> Result<()>;
    /// A routed message (an outbox event).
    fn message(&mut self, msg: &Message) -> Result<()>;
    /// A transaction ended; reading may later resume at `resume`.
    fn commit(&mut self, resume: &Resume) -> Result<()>;
    /// Pushes out anything buffered.
    fn flush(&mut self) -> Result<()>;
}
