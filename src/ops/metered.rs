//! A sink wrapper that counts what passes through it for `/metrics`: change events by table and
//! operation (only tables that passed the filters reach a sink, so the label set stays bounded)
//! and transactions.

use anyhow::Result;

use crate::event::{Change, Ddl};
use crate::metrics::{ChangeLabels, Metrics};
use crate::outbox::Message;
use crate::position::Resume;
use crate::sink::Sink;

pub struct Metered<'a> {
    pub inner: &'a mut dyn Sink,
    pub metrics: Metrics,
}

impl Sink for Metered<'_> {
    fn change(&mut self, change: &Change) -> Result<()> {
        self.inner.change(change)?;
        let labels = ChangeLabels { db: change.table.db.clone(), table: change.table.name.clone(), op: change.op.as_str() };
        self.metrics.change(&labels);
        Ok(())
    }

    fn ddl(&mut self, ddl: &Ddl) -> Result<()> {
        self.inner.ddl(ddl)
    }

    fn message(&mut self, msg: &Message) -> Result<()> {
        self.inner.message(msg)
    }

    fn commit(&mut self, resume: &Resume) -> Result<()> {
        self.inner.commit(resume)?;
        self.metrics.transaction();
        Ok(())
    }

    fn acknowledged(&mut self) -> Result<Option<Resume>> {
        self.inner.acknowledged()
    }

    fn flush(&mut self) -> Result<()> {
        self.inner.flush()
    }
}
