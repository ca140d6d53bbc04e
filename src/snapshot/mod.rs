//! Snapshots: every row of the included tables as `read` events, interleaved with the live
//! stream at the exact binlog position each chunk was read at.
//!
//! One job per file: `plan` (which tables), `schedule` (when each chunk is read and where it goes
//! in the stream), `chunk` (reading one chunk), `values` (its values as the decoder's JSON),
//! `sink` (the decoder's sink while snapshots can run), `progress` (the bar and log lines),
//! `gtid_window` (the GTID window method), `marks` (each read's place in its snapshot).
//!
//! Invariants:
//! - Consistent method (MariaDB): a chunk read at binlog position P (see `chunk`) is emitted when
//!   the stream stands between transactions at P: every change emitted before it is older than
//!   what it read, every change after it is newer. A chunk is only started while the stream is
//!   between transactions at a position X, and only kept if P >= X and P is at or after the
//!   position of the chunk started before it (else it is begun again); the stream then never
//!   passes P before the chunk is emitted — reaching P it waits for the rows, at most one chunk's
//!   read.
//! - Watermark method (DBLog; MySQL): a chunk is read between a low and a high watermark row
//!   written to the signal table (each chunk's pair named for it); it is emitted after the high
//!   watermark's transaction, as soon as the chunks started before it are, without the rows whose
//!   keys the stream saw change between the low watermark and there (those rows' newer values are
//!   in the stream). Correctness depends only on binlog order, not on timing.
//! - GTID window method (MySQL with GTIDs; writes nothing): a chunk is read after `low` and
//!   before `high`, both `@@global.gtid_executed`; from the first streamed transaction not in
//!   `low` on, the keys the stream changes leave the chunk, until it is emitted: once the stream
//!   has executed all of `high` and the chunks started before it are emitted. The argument is
//!   `gtid_window`'s.
//! - Chunks are emitted one at a time, in the order they were started: the tables in turn, each
//!   table's chunks in key order. Up to `parallelism` of them are read at once (of one table split
//!   ahead by key ranges, see `chunk`, or of the next tables), so memory is bounded by
//!   `parallelism` + 1 chunks (a table without a usable key is one chunk).
//! - Progress (tables left, the key up to which the first one's emitted chunks cover) rides on the
//!   commit that follows each chunk (`Snapshot::moved`, the one place it is attached), so the
//!   position file records it only once the sink acknowledged the chunk: after a crash the
//!   snapshot continues after the last acknowledged chunk. Emitting in order keeps that exact
//!   with several chunks in flight: the table being emitted is always the first pending one, and
//!   the chunks read after it are read again.
//! - Nothing is skipped silently: an initial snapshot plans only when the user provably sees and
//!   may read every included table (`plan`), and a `--snapshot-key` must be NOT NULL and unique
//!   (`chunk::describe`); both are checked before anything is recorded.
//! - A `read` event carries the key change events carry (`decode::table::primary_key`: the
//!   server's primary key, which may be a promoted unique NOT NULL index), so a row's read and
//!   changes share a Kafka key and partition.
//! - A table without a primary key is read in one chunk, and its changes are left out from when
//!   it is queued until that read is emitted (watermarks: until its window opens): the read
//!   contains them, so replaying in order gives its rows as a multiset. (With watermarks, a row
//!   changed inside the window is left out of the read with every identical copy, which is exact
//!   only for tables without duplicate rows.)
//! - `--limit` counts read events with the stream's changes (`Snapshot::set_limit`).
//! - A `read` event's `gtid` is the GTID set the stream has executed where its chunk sits (null
//!   without GTIDs): replaying every event before it, then the chunk, gives the tables as of that
//!   set.

pub mod chunk;
pub mod gtid_window;
mod marks;
mod plan;
mod progress;
pub mod requests;
mod schedule;
mod sink;
pub mod values;

use anyhow::Result;

use crate::error::Usage;
use crate::position::Flavor;

pub use plan::check_request;
pub use schedule::Snapshot;
pub use sink::Snapshotting;

/// How a chunk finds its place in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// MariaDB: the exact binlog position of a consistent-snapshot transaction.
    Consistent,
    /// DBLog's low/high watermarks, written to the signal table around each chunk's read.
    Watermark,
    /// MySQL with GTIDs: DBLog's window bounded by `@@global.gtid_executed` read before and
    /// after each chunk; writes nothing (`gtid_window`).
    GtidWindow,
}

impl Method {
    /// The method `chosen`, or the server's default: consistent on MariaDB; on MySQL gtid-window
    /// with `gtid_mode=ON`, else watermark. A method the server cannot run is a usage error.
    pub fn for_server(chosen: Option<Method>, flavor: Flavor, gtid_mode_on: bool) -> Result<Method, Usage> {
        let refuse = |why: &str| Err(Usage(why.into()));
        match (chosen, flavor) {
            (None, Flavor::MariaDb) => Ok(Method::Consistent),
            (None, Flavor::MySql) if gtid_mode_on => Ok(Method::GtidWindow),
            (None, Flavor::MySql) => Ok(Method::Watermark),
            (Some(Method::Consistent), Flavor::MySql) => refuse("--snapshot-method consistent needs MariaDB's binlog_snapshot_position; on MySQL use gtid-window (with gtid_mode=ON) or watermark"),
            (Some(Method::GtidWindow), Flavor::MariaDb) => refuse("--snapshot-method gtid-window needs MySQL's gtid_executed set; on MariaDB use consistent (the default, which writes nothing either)"),
            (Some(Method::GtidWindow), Flavor::MySql) if !gtid_mode_on => refuse("--snapshot-method gtid-window needs gtid_mode=ON on the server and a stream that resumes by GTID (not --start FILE:POS); otherwise use --snapshot-method watermark with --signal-table"),
            (Some(method), _) => Ok(method),
        }
    }
}

/// How a snapshot is taken.
#[derive(Debug, Clone)]
pub struct Settings {
    /// None: by the server (`Method::for_server`).
    pub method: Option<Method>,
    /// Snapshot every included table when there is no saved position (`--snapshot initial`).
    pub initial: bool,
    /// Where incremental snapshots are requested (db, table).
    pub signal_table: Option<(String, String)>,
    /// Incremental snapshots may be requested over HTTP (`--metrics-addr`).
    pub requests: bool,
    /// Rows per chunk.
    pub chunk_size: u64,
    /// Chunks read at once (at least 1).
    pub parallelism: usize,
    /// Chunk keys named by `--snapshot-key db.table=col,...`.
    pub keys: Vec<KeyOverride>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyOverride {
    pub db: String,
    pub table: String,
    pub columns: Vec<String>,
}

impl KeyOverride {
    /// `db.table=col1,col2`.
    pub fn parse(text: &str) -> Result<KeyOverride> {
        let bad = || {
            Usage(format!("--snapshot-key `{text}`: use db.table=column[,column...] naming unique, NOT NULL columns"))
        };
        let (table, columns) = text.split_once('=').ok_or_else(bad)?;
        let (db, table) = table.split_once('.').ok_or_else(bad)?;
        let columns: Vec<String> = columns.split(',').map(|c| c.trim().to_string()).collect();
        if db.is_empty() || table.is_empty() || columns.iter().any(String::is_empty) {
            return Err(bad().into());
        }
        Ok(KeyOverride { db: db.to_string(), table: table.to_string(), columns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_server_gets_a_method_it_can_run() {
        use Flavor::*;
        use Method::*;
        let method = |chosen, flavor, gtids| Method::for_server(chosen, flavor, gtids).map_err(|e| e.0);
        assert_eq!(method(None, MariaDb, false), Ok(Consistent));
        assert_eq!(method(None, MariaDb, true), Ok(Consistent));
        assert_eq!(method(None, MySql, true), Ok(GtidWindow));
        assert_eq!(method(None, MySql, false), Ok(Watermark));
        for (chosen, flavor, gtids) in
            [(Watermark, MySql, true), (Watermark, MariaDb, false), (GtidWindow, MySql, true)]
        {
            assert_eq!(method(Some(chosen), flavor, gtids), Ok(chosen));
        }
        assert!(method(Some(Consistent), MySql, true).unwrap_err().contains("gtid-window"));
        assert!(method(Some(GtidWindow), MySql, false).unwrap_err().contains("gtid_mode=ON"));
        assert!(method(Some(GtidWindow), MariaDb, true).unwrap_err().contains("on MariaDB use consistent"));
    }

    #[test]
    fn snapshot_keys_parse() {
        let k = KeyOverride::parse("shop.log=day,seq").unwrap();
        assert_eq!(
            (k.db.as_str(), k.table.as_str(), k.columns),
            ("shop", "log", vec!["day".to_string(), "seq".to_string()])
        );
        for bad in ["shop.log", "log=id", "shop.log=", "shop.log=a,,b"] {
            assert!(KeyOverride::parse(bad).is_err(), "{bad}");
        }
    }
}
