//! Where each read stands in its snapshot, as Debezium 2.x/3.x marks it in `source.snapshot`
//! (`RelationalSnapshotChangeEventSource`): the initial snapshot's last read `last`, else its
//! first read `first`, else a table's last read `last_in_data_collection`, else a table's first
//! read `first_in_data_collection`, else `true`; reads of incremental snapshots `incremental`.
//!
//! Invariants:
//! - The first `initial` pending tables are the initial snapshot's; tables queued later (signals,
//!   HTTP) are incremental. Resumed from a position file, which does not say which is which, the
//!   pending tables are the initial snapshot's when `--snapshot initial` is given.
//! - `first` goes on the first read emitted (an empty first table does not take it away); after
//!   a restart, only if nothing of the snapshot was acknowledged.
//! - `last` needs to know a chunk is its table's last: chunks are read one row beyond their
//!   size (`chunk::read`). When the last tables are empty, or the window methods leave a table's
//!   final rows out (the stream carries them), no read says `last`.

use crate::event::SnapshotMark;

#[derive(Debug)]
pub(super) struct Marks {
    /// The first pending tables that belong to the initial snapshot.
    initial: usize,
    /// The initial snapshot's first read is still to come.
    first: bool,
}

impl Marks {
    pub fn new(initial: usize, first: bool) -> Marks {
        Marks { initial, first: first && initial > 0 }
    }

    /// The mark of row `n` of the `count` rows of a chunk of the first pending table;
    /// `table_first`: no row of the table was emitted before; `table_last`: its final chunk.
    pub fn of(&mut self, n: usize, count: usize, table_first: bool, table_last: bool) -> SnapshotMark {
        if self.initial == 0 {
            return SnapshotMark::Incremental;
        }
        let (first_row, last_row) = (table_first && n == 0, table_last && n + 1 == count);
        let first = std::mem::take(&mut self.first);
        if last_row && self.initial == 1 {
            SnapshotMark::Last
        } else if first {
            SnapshotMark::First
        } else if last_row {
            SnapshotMark::LastInTable
        } else if first_row {
            SnapshotMark::FirstInTable
        } else {
            SnapshotMark::Read
        }
    }

    /// The first pending table was read completely.
    pub fn table_done(&mut self) {
        self.initial = self.initial.saturating_sub(1);
    }

    /// Tables were stopped: `kept` says, for each pending table before, whether it stays.
    pub fn stopped(&mut self, kept: impl Iterator<Item = bool>) {
        self.initial = kept.take(self.initial).filter(|k| *k).count();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SnapshotMark::*;

    /// The marks of chunks given as (table's first, table's last, rows), tables done as they end.
    fn run(marks: &mut Marks, chunks: &[(bool, bool, usize)]) -> Vec<SnapshotMark> {
        let mut out = Vec::new();
        for &(table_first, table_last, count) in chunks {
            out.extend((0..count).map(|n| marks.of(n, count, table_first, table_last)));
            if table_last {
                marks.table_done();
            }
        }
        out
    }

    #[test]
    fn debeziums_marks_over_three_tables() {
        // Two chunks of 2 rows, one table of one row, one chunk of 2 rows; then an incremental one.
        let chunks = [(true, false, 2), (false, true, 2), (true, true, 1), (true, true, 2), (true, true, 2)];
        assert_eq!(
            run(&mut Marks::new(3, true), &chunks),
            [First, Read, Read, LastInTable, LastInTable, FirstInTable, Last, Incremental, Incremental]
        );
    }

    #[test]
    fn empty_tables_resumes_and_stops() {
        // The first table is empty: the next read is the first.
        assert_eq!(run(&mut Marks::new(2, true), &[(true, true, 0), (true, true, 2)]), [First, Last]);
        // Resumed after some of the snapshot was acknowledged: no `first`.
        assert_eq!(run(&mut Marks::new(1, false), &[(false, true, 2)]), [Read, Last]);
        // One table and row: `last` wins, as in Debezium.
        assert_eq!(run(&mut Marks::new(1, true), &[(true, true, 1)]), [Last]);
        // The last initial table stopped: the one before it ends the snapshot.
        let mut marks = Marks::new(3, true);
        marks.stopped([true, true, false, true].into_iter());
        assert_eq!(run(&mut marks, &[(true, true, 1), (true, true, 1), (true, true, 1)]), [First, Last, Incremental]);
        assert_eq!(run(&mut Marks::new(0, true), &[(true, true, 2)]), [Incremental, Incremental]);
    }
}
