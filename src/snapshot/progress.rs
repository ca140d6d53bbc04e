//! How far a snapshot has come, for the person watching: a progress bar per table on a terminal,
//! log lines otherwise. Nothing here decides what is read or saved.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::text::{Escaped, Throughput};

/// Progress: on a terminal a bar per table (rows, rows/s, ETA from the server's row estimate);
/// otherwise a log line when a table starts and ends, and every 10 s.
#[derive(Default)]
pub(super) struct Report {
    table: Option<TableReport>,
    /// Tables finished since the last `take_tables_done`: this snapshot's, not the position's total.
    tables_done: u64,
}

struct TableReport {
    db: String,
    name: String,
    started: Instant,
    last_line: Instant,
    rows: u64,
    bar: ProgressBar,
}

impl Report {
    pub(super) fn take_tables_done(&mut self) -> u64 {
        std::mem::take(&mut self.tables_done)
    }

    /// `estimate`: the server's `TABLE_ROWS` for the table, known with its first chunk (not when
    /// a resumed snapshot goes on with it).
    pub(super) fn rows(&mut self, db: &str, table: &str, rows: u64, estimate: Option<u64>, table_done: bool) {
        let now = Instant::now();
        if !self.table.as_ref().is_some_and(|t| t.db == db && t.name == table) {
            let (db, table) = (Escaped(db), Escaped(table));
            match estimate {
                Some(n) => tracing::info!("snapshot of `{db}`.`{table}` started (about {n} rows)"),
                None => tracing::info!("snapshot of `{db}`.`{table}` goes on"),
            }
            self.table = Some(TableReport {
                db: db.0.to_string(),
                name: table.0.to_string(),
                started: now,
                last_line: now,
                rows: 0,
                bar: progress_bar(&format!("{db}.{table}"), estimate.unwrap_or(0)),
            });
        }
        let t = self.table.as_mut().expect("set above");
        t.rows += rows;
        t.bar.inc(rows);
        let read = Throughput { count: t.rows, unit: "rows", elapsed: t.started.elapsed() };
        let (db, table) = (Escaped(db), Escaped(table));
        if table_done {
            self.tables_done += 1;
            t.bar.finish_and_clear();
            tracing::info!("snapshot of `{db}`.`{table}` done: {read}");
            self.table = None;
        } else if now - t.last_line >= Duration::from_secs(10) && t.bar.is_hidden() {
            tracing::info!("snapshot of `{db}`.`{table}` so far: {read}");
            t.last_line = now;
        }
    }
}

fn progress_bar(name: &str, estimate: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(estimate);
    bar.set_style(
        ProgressStyle::with_template("{prefix} {bar:30} {pos}/~{len} rows {per_sec} eta {eta}")
            .expect("static template"),
    );
    bar.set_prefix(name.to_string());
    bar
}
