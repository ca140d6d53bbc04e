//! Changes counted per table and operation for `/metrics`, in the checkpointing sink (which sees
//! every change delivered).
//!
//! Invariant: counting a row is one comparison and one atomic add, not a label lookup: rows come
//! in runs of one table and operation, so the counter of the last one seen is kept.

use std::sync::Arc;

use crate::event::{Change, Op};
use crate::metrics::{ChangeLabels, Counter, Metrics};
use crate::schema::Table;

pub struct ChangeCounts {
    metrics: Metrics,
    /// The table and operation of the last change, and their counter. Holding the table keeps
    /// its address from being reused by another.
    last: Option<(Arc<Table>, Op, Counter)>,
}

impl ChangeCounts {
    pub fn new(metrics: Metrics) -> ChangeCounts {
        ChangeCounts { metrics, last: None }
    }

    #[inline]
    pub fn count(&mut self, change: &Change) {
        match &self.last {
            Some((table, op, counter)) if Arc::ptr_eq(table, &change.table) && *op == change.op => {
                counter.inc();
            }
            _ => self.count_other(change),
        }
    }

    /// A change of another table or operation than the last: looks its counter up.
    fn count_other(&mut self, change: &Change) {
        let labels =
            ChangeLabels { db: change.table.db.clone(), table: change.table.name.clone(), op: change.op.as_str() };
        let counter = self.metrics.changes(&labels);
        counter.inc();
        self.last = Some((change.table.clone(), change.op, counter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SnapshotMark;
    use crate::position::Flavor;

    fn table(name: &str) -> Arc<Table> {
        Table::for_test("shop", name, vec![], vec![])
    }

    fn change(table: &Arc<Table>, op: Op) -> Change {
        Change {
            op,
            table: table.clone(),
            server_id: 1,
            thread: None,
            flavor: Flavor::MariaDb,
            ts: 0,
            gtid: None,
            file: Arc::from("binlog.000001"),
            offset: 4,
            xid: None,
            row: 0,
            commit: false,
            snapshot: SnapshotMark::Stream,
            before: None,
            after: None,
        }
    }

    #[test]
    fn counts_per_table_and_operation_across_runs() {
        let metrics = Metrics::new();
        let mut counts = ChangeCounts::new(metrics.clone());
        let (orders, items) = (table("orders"), table("items"));
        for (t, op, n) in
            [(&orders, Op::Insert, 3), (&items, Op::Insert, 2), (&orders, Op::Insert, 1), (&orders, Op::Delete, 4)]
        {
            for _ in 0..n {
                counts.count(&change(t, op));
            }
        }
        let count = |table: &str, op: Op| {
            metrics.changes(&ChangeLabels { db: "shop".into(), table: table.into(), op: op.as_str() }).get()
        };
        assert_eq!((count("orders", Op::Insert), count("items", Op::Insert), count("orders", Op::Delete)), (4, 2, 4));
    }
}
