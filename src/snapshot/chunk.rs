//! Reading one chunk of a table: its schema from `information_schema`, the binlog position the
//! read is consistent with, and the rows after the last key, in key order.
//!
//! Invariants:
//! - A chunk is read inside `START TRANSACTION WITH CONSISTENT SNAPSHOT` (one the chunk before
//!   it on the connection may have been read in too), and the position is the transaction's
//!   `binlog_snapshot_file`/`binlog_snapshot_position` (MariaDB): the rows are exactly the table
//!   as of that binlog position.
//! - Chunks follow the key in the server's own order: `WHERE key > last ORDER BY key LIMIT n`,
//!   with `last` the key the server returned for the previous chunk's last row, bound back as the
//!   same bytes under the column's own collation. Case- or accent-insensitive keys therefore
//!   cannot make a chunk skip or repeat a row.
//! - On MariaDB, an InnoDB table keyed by its primary key, of integer columns, with only stored,
//!   visible columns is read by `HANDLER ... READ` from `last` instead (`by_handler`): a
//!   consistent read of the same view, with the table's metadata lock taken for the transaction
//!   before it is described (`lock`), since a `HANDLER`'s own lock ends when it is closed.
//! - Chunks read side by side split the table ahead: `bound` finds the key n rows on (an
//!   index-only read of any view), and the chunk reads `WHERE key > last AND key <= bound` — every
//!   row in that range, however many there are by then — so the next chunk can start at the bound
//!   before this one is read. Ranges meet exactly at the bounds: no row is skipped or read twice.
//! - Row images are recycled (`Spares`): those emitted come back to the readers, which write the
//!   next rows into their buffers, so a snapshot allocates no memory per row once running.
//! - Values are fetched with the binary protocol and `SET NAMES binary` (raw bytes in each
//!   column's charset, decoded like the binlog's), TIMESTAMPs in UTC, and written as JSON
//!   straight from each row packet (`QueryResult::next_raw`, vendor/mysql_async/PATCHES.md).

use std::cmp::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{BinaryProtocol, Conn, Params, QueryResult, Row, Value};

use super::values::{key_value, read_binary_row, sql_value, write_value, Wire};
use crate::decode::table::primary_key;
use crate::error::Usage;
use crate::filter::Filter;
use crate::position::KeyValue;
use crate::schema::{Column, Kind, RowImage, Table};
use crate::text::{write_json_str, TextEncoding};

/// Settings every snapshot connection runs with. `SET NAMES binary` makes results raw bytes in
/// each column's charset, and makes bound key values binary strings that `CAST(... CHARACTER SET
/// cs)` relabels without converting. Outside a snapshot transaction each statement commits on
/// its own (a server whose default is `autocommit=0` would hold a watermark row back).
pub const SESSION_SETUP: [&str; 4] = [
    "SET NAMES binary",
    "SET time_zone = '+00:00'",
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "SET autocommit = 1",
];

/// A table as a snapshot reads it: the event schema, and how its chunks are chosen.
#[derive(Debug)]
pub struct TableSpec {
    pub table: Arc<Table>,
    /// Chunk key columns (indexes into `table.columns`); empty: the table is read in one go.
    pub key: Vec<usize>,
    /// Per column, its place in `key` (None if not a key column).
    key_slot: Vec<Option<usize>>,
    /// SQL parameter expression per key column: the bound bytes read under the column's
    /// collation (or exact type), so the comparison is the one `ORDER BY` uses.
    key_params: Vec<String>,
    select: String,
    /// A one-column integer key's values, once looked at (`bound`): None before.
    span: Option<Option<IntSpan>>,
    /// The key is the primary key, of integer columns, and every column is a plain stored one:
    /// MariaDB's `HANDLER` can read the chunks of an InnoDB table (`read_by_handler`).
    handler_fits: bool,
    /// Chunks are read with `HANDLER ... READ` on the primary key.
    by_handler: bool,
}

impl TableSpec {
    /// Reads the chunks with MariaDB's `HANDLER` statement where the table allows it: it walks
    /// the primary key from the chunk's start with no condition to test per row, and so costs
    /// the server about a sixth less per row than a range `SELECT` (`by_handler`). Only InnoDB's
    /// `HANDLER` reads are consistent reads of the transaction's view (and some engines cannot
    /// walk a key in order).
    pub async fn read_by_handler(&mut self, conn: &mut Conn) -> Result<()> {
        if self.handler_fits {
            let engine: Option<Option<String>> = conn
                .exec_first(
                    "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (&self.table.db, &self.table.name),
                )
                .await?;
            self.by_handler = engine.flatten().is_some_and(|e| e.eq_ignore_ascii_case("InnoDB"));
        }
        Ok(())
    }
}

/// The first and last values of a one-column integer key whose values are dense (the span of
/// keys at most twice the table's estimated rows): a chunk can then end `limit` values on, found
/// by arithmetic instead of an index read, and holds at most `limit` rows (the key is unique).
#[derive(Debug, Clone, Copy, PartialEq)]
struct IntSpan {
    first: i128,
    last: i128,
    unsigned: bool,
}

impl IntSpan {
    /// From MIN(key), MAX(key) and the estimated rows; None unless dense.
    fn new(min: &Value, max: &Value, rows: u64) -> Option<IntSpan> {
        let (first, last, unsigned) = match (min, max) {
            (Value::Int(a), Value::Int(b)) => (i128::from(*a), i128::from(*b), false),
            (Value::UInt(a), Value::UInt(b)) => (i128::from(*a), i128::from(*b), true),
            _ => return None,
        };
        (last - first < 2 * i128::from(rows.max(1))).then_some(IntSpan { first, last, unsigned })
    }

    /// Where the chunk after `after` ends: `limit` key values on, or (None) the table's end; an
    /// outer None if `after` is no key of this span's type.
    fn bound(&self, after: Option<&[KeyValue]>, limit: u64) -> Option<Option<Vec<KeyValue>>> {
        let start = match after {
            None => self.first - 1,
            Some([KeyValue::Int(v)]) if !self.unsigned => i128::from(*v),
            Some([KeyValue::Uint(v)]) if self.unsigned => i128::from(*v),
            Some(_) => return None,
        };
        let end = start + i128::from(limit);
        if end >= self.last {
            return Some(None);
        }
        // Between `first - 1` and `last`: within the key's own type.
        let key = match self.unsigned {
            true => KeyValue::Uint(u64::try_from(end).ok()?),
            false => KeyValue::Int(i64::try_from(end).ok()?),
        };
        Some(Some(vec![key]))
    }
}

/// Row images already emitted, whose buffers the next chunks' rows are written into. Up to
/// one chunk's worth is kept.
#[derive(Clone, Default)]
pub struct Spares(Arc<Mutex<Vec<RowImage>>>);

impl Spares {
    fn take(&self) -> Vec<RowImage> {
        self.0.lock().map(|mut pool| std::mem::take(&mut *pool)).unwrap_or_default()
    }

    /// Keeps `images` for reuse, up to `limit` in all.
    pub fn give(&self, images: &mut Vec<RowImage>, limit: usize) {
        if let Ok(mut pool) = self.0.lock() {
            let room = limit.saturating_sub(pool.len());
            images.truncate(room);
            pool.append(images);
        }
    }
}

/// Where a snapshot transaction's view sits in the binlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogPos {
    pub file: Arc<str>,
    pub offset: u64,
}

impl BinlogPos {
    /// True if `self` is at or after `other` in the binlog (file names by their sequence number).
    pub fn at_or_after(&self, file: &str, offset: u64) -> bool {
        let seq = |f: &str| f.rsplit_once('.').and_then(|(_, n)| n.parse::<u64>().ok());
        match (seq(&self.file), seq(file)) {
            (Some(a), Some(b)) if a != b => a > b,
            _ if *self.file != *file => *self.file > *file,
            _ => self.offset >= offset,
        }
    }
}

/// One chunk: its rows converted as they arrive, on the reader's thread (several readers convert
/// side by side), so a chunk in memory is its rows' JSON, not the server's values.
pub struct Chunk {
    /// The rows as the decoder's JSON.
    pub rows: Vec<RowImage>,
    pub table: Arc<Table>,
    /// Chunk key columns (indexes into `table.columns`).
    pub key: Vec<usize>,
    /// The key the chunk covers up to, as the server returned it: its bound, or its last row's.
    pub last_key: Option<Vec<KeyValue>>,
    /// No row after this chunk (a chunk with a limit reads one row beyond it; a split one knows
    /// from its bound): the table is done after it.
    pub last: bool,
    /// With a table's first chunk: the server's estimate of its rows, for the progress report.
    pub estimate: Option<u64>,
}

/// Starts a consistent-snapshot transaction and returns the binlog position its view matches.
pub async fn begin(conn: &mut Conn) -> Result<BinlogPos> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT").await?;
    let status: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
    let get = |name: &str| status.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let (Some(file), Some(offset)) = (get("Binlog_snapshot_file"), get("Binlog_snapshot_position")) else {
        bail!("the server reports no binlog_snapshot_file/position (is log_bin on?)");
    };
    let offset = offset.parse().with_context(|| format!("binlog_snapshot_position `{offset}` is not a number"))?;
    Ok(BinlogPos { file: Arc::from(file.as_str()), offset })
}

/// Where a chunk after `after` ends so that it can be read while the next one is: `limit` values
/// on for a dense integer key (`IntSpan`), else the key `limit` rows on (an index read); None if
/// no more than `limit` rows are left: the chunk after `after` is the table's tail.
pub async fn bound(
    conn: &mut Conn,
    spec: &mut TableSpec,
    after: Option<&[KeyValue]>,
    limit: u64,
) -> Result<Option<Vec<KeyValue>>> {
    if spec.span.is_none() {
        spec.span = Some(int_span(conn, spec).await?);
    }
    if let Some(bound) = spec.span.flatten().and_then(|span| span.bound(after, limit)) {
        return Ok(bound);
    }
    let columns = spec.key.iter().map(|&k| quote(&spec.table.columns[k].name)).collect::<Vec<_>>().join(", ");
    let mut params = Vec::new();
    let mut sql = format!("SELECT {columns} FROM {}.{}", quote(&spec.table.db), quote(&spec.table.name));
    if let Some(after) = after {
        check_key(spec, after)?;
        sql.push_str(&format!(" WHERE {}", tuple_clause(spec, after, Cmp::After, &mut params)));
    }
    // The row after it too: without one, the tail is this chunk (not an empty one after it).
    sql.push_str(&format!(" ORDER BY {columns} LIMIT 2 OFFSET {}", limit.saturating_sub(1)));
    let rows: Vec<Row> = conn.exec(sql, Params::Positional(params)).await?;
    Ok(match rows.len() {
        2 => rows.into_iter().next().map(|row| row.unwrap().iter().map(|v| key_value(v.into())).collect()),
        _ => None,
    })
}

/// The span of a one-column integer key, if dense, as the connection sees the table now (in a
/// snapshot transaction: as every chunk read in it does).
async fn int_span(conn: &mut Conn, spec: &TableSpec) -> Result<Option<IntSpan>> {
    let [k] = spec.key[..] else { return Ok(None) };
    if !matches!(spec.table.columns[k].kind, Kind::Int { .. }) {
        return Ok(None);
    }
    let (db, name) = (&spec.table.db, &spec.table.name);
    let column = quote(&spec.table.columns[k].name);
    let row: Option<(Value, Value, Option<u64>)> = conn
        .exec_first(
            format!(
                "SELECT MIN({column}), MAX({column}), (SELECT TABLE_ROWS FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?) FROM {}.{}",
                quote(db),
                quote(name)
            ),
            (db, name),
        )
        .await?;
    Ok(row.and_then(|(min, max, rows)| IntSpan::new(&min, &max, rows.unwrap_or(0))))
}

/// Where a chunk's rows end.
pub enum Upto {
    /// After the next `limit` rows.
    Limit,
    /// At this key: every row up to it, however many there are by then.
    Key(Vec<KeyValue>),
    /// At the table's end (fewer than `limit` rows were left when it was split).
    End,
}

/// Reads the rows after `after` (by key) up to `upto` (inside the snapshot transaction, if one
/// is open: it stays open).
pub async fn read(
    conn: &mut Conn,
    spec: &mut TableSpec,
    after: Option<&[KeyValue]>,
    upto: Upto,
    limit: u64,
    spares: &Spares,
) -> Result<Chunk> {
    let keyed = !spec.key.is_empty();
    if let Some(after) = after.filter(|_| keyed) {
        check_key(spec, after)?;
    }
    let mut collect = Collect {
        spec,
        rows: Vec::with_capacity(limit.min(1 << 16) as usize),
        spare: spares.take(),
        key: vec![KeyValue::Null; spec.key.len()],
        size: 64,
        object: !spec.table.columns.iter().any(|c| c.dropped),
    };
    // Whether the view's next chunks of the table are read by `HANDLER` too.
    let (more, by_handler_next) = match spec.by_handler {
        true => match by_handler(conn, &mut collect, after, &upto, limit).await {
            // Gaps in a dense key make each `HANDLER` chunk read rows past its end, to be
            // dropped; a range `SELECT` reads none.
            Ok((more, dropped)) => (more, dropped <= limit / 16),
            // Refused before any row (a proxy, or a server, that does not take `HANDLER`).
            Err(e) if collect.rows.is_empty() && server_error(&e).is_some() => {
                tracing::debug!("snapshot: `{}`.`{}` read by SELECT: {e:#}", spec.table.db, spec.table.name);
                (by_select(conn, &mut collect, after, &upto, limit).await?, false)
            }
            Err(e) => return Err(e),
        },
        false => (by_select(conn, &mut collect, after, &upto, limit).await?, false),
    };
    let Collect { rows, mut spare, key, .. } = collect;
    spares.give(&mut spare, limit as usize);
    spec.by_handler = by_handler_next;
    let last = !keyed
        || match upto {
            Upto::Limit => !more,
            Upto::Key(_) => false,
            Upto::End => true,
        };
    // A chunk up to a key covers the rows up to it, even if its last ones were deleted since.
    let last_key = match upto {
        Upto::Key(upto) if keyed => Some(upto),
        _ => (keyed && !rows.is_empty()).then_some(key),
    };
    // Asked of this one table (a query over every table of the server opens them all).
    let estimate = match after {
        None => conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&spec.table.db, &spec.table.name),
            )
            .await?
            .flatten(),
        Some(_) => None,
    };
    Ok(Chunk { rows, table: spec.table.clone(), key: spec.key.clone(), last_key, last, estimate })
}

/// The chunk's rows by a range `SELECT`; true if the table has rows after a chunk of `limit`.
async fn by_select(
    conn: &mut Conn,
    collect: &mut Collect<'_>,
    after: Option<&[KeyValue]>,
    upto: &Upto,
    limit: u64,
) -> Result<bool> {
    let spec = collect.spec;
    let keyed = !spec.key.is_empty();
    let mut sql = spec.select.clone();
    let mut params = Vec::new();
    let mut terms = Vec::new();
    if let Some(after) = after.filter(|_| keyed) {
        terms.push(tuple_clause(spec, after, Cmp::After, &mut params));
    }
    if let Upto::Key(upto) = upto {
        if keyed {
            terms.push(tuple_clause(spec, upto, Cmp::UpTo, &mut params));
        }
    }
    if !terms.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&terms.join(" AND "));
    }
    let keep = (keyed && matches!(upto, Upto::Limit)).then_some(limit);
    if keyed {
        sql.push_str(" ORDER BY ");
        sql.push_str(&spec.key.iter().map(|&k| quote(&spec.table.columns[k].name)).collect::<Vec<_>>().join(", "));
        // With a limit, one row more than the chunk: whether the table goes on (a read's `last`).
        if keep.is_some() {
            sql.push_str(&format!(" LIMIT {}", limit.saturating_add(1)));
        }
    }
    let mut result = conn.exec_iter(sql, Params::Positional(params)).await?;
    Ok(collect.take(&mut result, keep, None).await?.beyond)
}

/// The name a chunk's `HANDLER` is opened under (one at a time per connection).
const HANDLER: &str = "binlog_tail_chunk";

/// The chunk's rows by MariaDB's `HANDLER ... READ` on the primary key, from the chunk's start
/// in statements of `limit` rows: the server walks the index with no condition to test per row.
/// A `HANDLER` read has no end condition, so rows past `upto` (a dense key's gaps) are read and
/// dropped. Returns whether the table has rows after a chunk of `limit`, and the rows dropped.
///
/// Read in the snapshot transaction, it is a consistent read of the transaction's view, like a
/// `SELECT`. It returns every column the table has now, and its own metadata lock lasts only
/// until it is closed: the transaction holds the table's lock from before the table was
/// described (`lock`), so the columns are the described ones while the view is open.
async fn by_handler(
    conn: &mut Conn,
    collect: &mut Collect<'_>,
    after: Option<&[KeyValue]>,
    upto: &Upto,
    limit: u64,
) -> Result<(bool, u64)> {
    let spec = collect.spec;
    let open = format!("HANDLER {}.{} OPEN AS {HANDLER}", quote(&spec.table.db), quote(&spec.table.name));
    match conn.query_drop(&open).await {
        // Left open by a chunk whose read failed, and whose close failed too.
        Err(mysql_async::Error::Server(e)) if e.code == 1066 => {
            conn.query_drop(format!("HANDLER {HANDLER} CLOSE")).await?;
            conn.query_drop(open).await?;
        }
        opened => opened?,
    }
    let read = async {
        let end = match upto {
            Upto::Key(key) => Some(
                key.iter().map(int_key).collect::<Option<Vec<_>>>().context("a chunk bound that is not integers")?,
            ),
            _ => None,
        };
        let keep = matches!(upto, Upto::Limit).then_some(limit);
        let batch = keep.map_or(limit, |n| n.saturating_add(1));
        let mut from = match after {
            Some(after) => (
                format!("HANDLER {HANDLER} READ `PRIMARY` > ({}) LIMIT {batch}", vec!["?"; after.len()].join(", ")),
                Params::Positional(after.iter().map(sql_value).collect()),
            ),
            None => (format!("HANDLER {HANDLER} READ `PRIMARY` FIRST LIMIT {batch}"), Params::Empty),
        };
        let mut dropped = 0;
        loop {
            let mut result = conn.exec_iter(from.0, from.1).await?;
            let got = collect.take(&mut result, keep, end.as_deref()).await?;
            drop(result);
            dropped += got.dropped;
            let at_end = end.as_deref().is_some_and(|end| cmp_int_key(&collect.key, end).is_some_and(Ordering::is_ge));
            if got.beyond || got.read < batch || keep.is_some() || at_end {
                return Ok::<_, anyhow::Error>((got.beyond, dropped));
            }
            from = (format!("HANDLER {HANDLER} READ `PRIMARY` NEXT LIMIT {batch}"), Params::Empty);
        }
    }
    .await;
    let closed = conn.query_drop(format!("HANDLER {HANDLER} CLOSE")).await;
    let read = read?;
    closed?;
    Ok(read)
}

/// The server's error code, if `e` is an error the server sent.
pub fn server_error(e: &anyhow::Error) -> Option<u16> {
    e.chain().find_map(|c| match c.downcast_ref::<mysql_async::Error>() {
        Some(mysql_async::Error::Server(s)) => Some(s.code),
        _ => None,
    })
}

/// An integer key value, for comparing a row's key with a chunk's bound.
fn int_key(key: &KeyValue) -> Option<i128> {
    match key {
        KeyValue::Int(v) => Some(i128::from(*v)),
        KeyValue::Uint(v) => Some(i128::from(*v)),
        _ => None,
    }
}

/// How an integer key compares with `bound` in key order (column by column); None if a value
/// is no integer.
fn cmp_int_key(key: &[KeyValue], bound: &[i128]) -> Option<Ordering> {
    for (value, bound) in key.iter().zip(bound) {
        match int_key(value)?.cmp(bound) {
            Ordering::Equal => continue,
            unequal => return Some(unequal),
        }
    }
    Some(Ordering::Equal)
}

/// A chunk's rows as they are read: row images written into buffers reused from `Spares`, and
/// the key of the last row read.
struct Collect<'a> {
    spec: &'a TableSpec,
    rows: Vec<RowImage>,
    spare: Vec<RowImage>,
    /// The key of the last row read, as the server sent it (to be bound back).
    key: Vec<KeyValue>,
    /// The JSON size of the last row: a new row's buffer gets an eighth more (a table's rows
    /// are alike but not equal, and a row one byte longer would double the buffer, kept at that
    /// size while it is reused: about a third more memory per row held).
    size: usize,
    /// No column dropped: each row is the whole native object.
    object: bool,
}

/// What one statement's rows came to.
struct Batch {
    read: u64,
    /// A row after the chunk's last was read (and not kept).
    beyond: bool,
    /// Rows read past `upto` and not kept.
    dropped: u64,
}

impl Collect<'_> {
    /// Reads a statement's rows into the chunk: at most `keep` rows of it in all, and only rows
    /// whose (integer) key is at most `upto`.
    async fn take(
        &mut self,
        result: &mut QueryResult<'_, '_, BinaryProtocol>,
        keep: Option<u64>,
        upto: Option<&[i128]>,
    ) -> Result<Batch> {
        let mut batch = Batch { read: 0, beyond: false, dropped: 0 };
        loop {
            if batch.beyond || keep.is_some_and(|n| self.rows.len() as u64 == n) {
                // Past the chunk: only whether there are rows.
                while result.next_raw(|_, _| ()).await?.is_some() {
                    batch.read += 1;
                    batch.dropped += u64::from(upto.is_some());
                    batch.beyond = true;
                }
                return Ok(batch);
            }
            let mut image = self.spare.pop().unwrap_or_else(|| RowImage {
                json: Vec::with_capacity(self.size + self.size / 8),
                spans: Vec::with_capacity(self.spec.table.columns.len()),
                object: self.object,
            });
            let (spec, object, key) = (self.spec, self.object, &mut self.key);
            let read =
                result.next_raw(|packet, columns| write_image(spec, packet, columns, object, &mut image, key)).await?;
            let Some(read) = read else {
                self.spare.push(image);
                return Ok(batch);
            };
            read?;
            batch.read += 1;
            if upto.is_some_and(|end| cmp_int_key(&self.key, end) == Some(Ordering::Greater)) {
                batch.dropped += 1;
                batch.beyond = true;
                self.spare.push(image);
                continue;
            }
            self.size = image.json.len();
            self.rows.push(image);
        }
    }
}

/// A saved or computed key must have a value per key column.
fn check_key(spec: &TableSpec, key: &[KeyValue]) -> Result<()> {
    if key.len() != spec.key.len() {
        bail!(
            "the saved snapshot key has {} values but `{}`.`{}` has {} key columns: the table's key changed",
            key.len(),
            spec.table.db,
            spec.table.name,
            spec.key.len()
        );
    }
    Ok(())
}

/// How a chunk's key compares to a bound.
#[derive(Clone, Copy)]
enum Cmp {
    /// `key > bound`.
    After,
    /// `key <= bound`.
    UpTo,
}

/// `(k1, k2) > (v1, v2)` as `k1 >= v1 AND (k1 > v1 OR (k1 = v1 AND k2 > v2))`, and `<=` alike:
/// the same rows, in a form the range optimizer turns into an index range. One column is just
/// `k1 > v1` (the server evaluates every condition on every row it reads).
fn tuple_clause(spec: &TableSpec, bound: &[KeyValue], cmp: Cmp, params: &mut Vec<Value>) -> String {
    let col = |i: usize| quote(&spec.table.columns[spec.key[i]].name);
    let mut bind = |i: usize| {
        params.push(sql_value(&bound[i]));
        spec.key_params[i].clone()
    };
    let n = spec.key.len();
    // The leading column's range, the strict comparison, and the last column's (`<=` includes the bound).
    let (lead, strict, last) = match cmp {
        Cmp::After => (">=", ">", ">"),
        Cmp::UpTo => ("<=", "<", "<="),
    };
    if n == 1 {
        return format!("{} {last} {}", col(0), bind(0));
    }
    // Parameters bind in the order their placeholders appear.
    let lead = format!("{} {lead} {}", col(0), bind(0));
    let mut alternatives = Vec::new();
    for i in 0..n {
        let mut terms: Vec<String> = (0..i).map(|j| format!("{} = {}", col(j), bind(j))).collect();
        terms.push(format!("{} {} {}", col(i), if i + 1 == n { last } else { strict }, bind(i)));
        alternatives.push(format!("({})", terms.join(" AND ")));
    }
    format!("{lead} AND ({})", alternatives.join(" OR "))
}

/// Writes the row packet into `image` (its buffers reused), with `object` (no column dropped)
/// as the whole native object, so emitting it is one copy; and its key values into `key`.
fn write_image(
    spec: &TableSpec,
    packet: &[u8],
    columns: &[mysql_async::Column],
    object: bool,
    image: &mut RowImage,
    key: &mut [KeyValue],
) -> Result<()> {
    let table = &spec.table;
    if columns.len() != table.columns.len() {
        bail!(
            "the server returned {} columns for the {} of `{}`.`{}`",
            columns.len(),
            table.columns.len(),
            table.db,
            table.name
        );
    }
    image.object = object;
    let RowImage { json, spans, .. } = image;
    json.clear();
    spans.clear();
    read_binary_row(packet, columns, |i, value| {
        let column = &table.columns[i];
        if object {
            json.push(if i == 0 { b'{' } else { b',' });
            json.extend_from_slice(&column.key_json);
        }
        let start = json.len() as u32;
        write_value(&column.kind, &value, json)
            .with_context(|| format!("column `{}` of `{}`.`{}`", column.name, table.db, table.name))?;
        spans.push(Some((start, json.len() as u32)));
        if let Some(k) = spec.key_slot[i] {
            // Every row's key is kept (the packet is gone after the row): a text key's buffer is
            // reused rather than allocated per row.
            match (&mut key[k], value) {
                (KeyValue::Bytes(saved), Wire::Bytes(b)) => {
                    saved.clear();
                    saved.extend_from_slice(b);
                }
                (saved, value) => *saved = key_value(value),
            }
        }
        Ok(())
    })
    .with_context(|| format!("a row of `{}`.`{}`", table.db, table.name))?;
    if object {
        json.push(b'}');
    }
    Ok(())
}

pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// One row of `information_schema.COLUMNS`.
type ColumnRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    String,
    String,
    String,
);

/// Takes the table's metadata lock for the rest of the snapshot transaction (as its first read
/// would): from here until the view ends, the table cannot be altered or dropped. A table that
/// does not exist is no error (`describe` says so).
pub async fn lock(conn: &mut Conn, db: &str, name: &str) -> Result<()> {
    match conn.query_drop(format!("SELECT 1 FROM {}.{} LIMIT 0", quote(db), quote(name))).await {
        Err(mysql_async::Error::Server(e)) if e.code == 1146 => Ok(()),
        other => Ok(other?),
    }
}

/// The table as it is now; None if it does not exist (any more). `key_override` names the
/// chunk key columns (`--snapshot-key`), which must be unique and NOT NULL (a usage error if
/// not: a chunk key with duplicates or NULLs would skip rows at chunk boundaries).
pub async fn describe(
    conn: &mut Conn,
    db: &str,
    name: &str,
    filter: &Filter,
    key_override: Option<&[String]>,
) -> Result<Option<TableSpec>> {
    let columns: Vec<ColumnRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, NUMERIC_PRECISION, NUMERIC_SCALE, \
             DATETIME_PRECISION, CHARACTER_OCTET_LENGTH, IS_NULLABLE, COLUMN_KEY, EXTRA FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, name),
        )
        .await?;
    if columns.is_empty() {
        return Ok(None);
    }
    let indexes: Vec<(String, String)> = conn
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            (db, name),
        )
        .await?;
    let position = |col: &str| columns.iter().position(|c| c.0 == col);
    let mut unique: Vec<Vec<usize>> = Vec::new();
    for (n, (index, column)) in indexes.iter().enumerate() {
        if n == 0 || indexes[n - 1].0 != *index {
            unique.push(Vec::new());
        }
        unique.last_mut().expect("pushed above").extend(position(column));
    }
    let is_pk: Vec<bool> = columns.iter().map(|c| c.10 == "PRI").collect();
    let pk = primary_key(&is_pk, &unique);
    let key = match key_override {
        Some(names) => chunk_key(db, name, names, &columns, &unique)?,
        None if !pk.is_empty() => pk.clone(),
        // No primary key (e.g. a unique index on a column prefix): any unique NOT NULL index
        // still chunks the table; without one it is read in one go.
        None => unique
            .iter()
            .find(|i| !i.is_empty() && i.iter().all(|&c| columns[c].9 == "NO"))
            .cloned()
            .unwrap_or_default(),
    };
    let mut table_columns = Vec::with_capacity(columns.len());
    let mut key_params = Vec::new();
    for c in &columns {
        let kind = kind_of(c).with_context(|| format!("column `{}` of `{db}`.`{name}`", c.0))?;
        let mut key_json = Vec::with_capacity(c.0.len() + 3);
        write_json_str(&c.0, &mut key_json);
        key_json.push(b':');
        // The same type text the binlog path gives (only CHAR and BINARY need the column type).
        let ty = if matches!(c.1.as_str(), "char" | "binary") {
            mysql_common::constants::ColumnType::MYSQL_TYPE_STRING
        } else {
            mysql_common::constants::ColumnType::MYSQL_TYPE_VARCHAR
        };
        let sql_type = crate::decode::table::sql_type(ty, &kind);
        table_columns.push(Column {
            name: c.0.clone(),
            key_json,
            dropped: filter.drops_column(db, name, &c.0),
            kind,
            sql_type,
        });
    }
    for &k in &key {
        let c = &columns[k];
        key_params.push(match (&c.3, &c.4, c.1.as_str()) {
            (Some(charset), Some(collation), _) => {
                format!("CAST(? AS CHAR CHARACTER SET {charset}) COLLATE {collation}")
            }
            (_, _, "decimal") => format!("CAST(? AS DECIMAL({}, {}))", c.5.unwrap_or(65), c.6.unwrap_or(0)),
            _ => "?".to_string(),
        });
    }
    let mut db_json = Vec::new();
    write_json_str(db, &mut db_json);
    let mut name_json = Vec::new();
    write_json_str(name, &mut name_json);
    let select = format!(
        "SELECT {} FROM {}.{}",
        columns.iter().map(|c| quote(&c.0)).collect::<Vec<_>>().join(", "),
        quote(db),
        quote(name)
    );
    let pk = pk.into_iter().filter(|&i| !table_columns[i].dropped).collect();
    let table = Table {
        db: db.to_string(),
        name: name.to_string(),
        db_json,
        name_json,
        columns: table_columns,
        pk,
        gaps: Vec::new(),
        looked_up: true,
        outbox: None,
    };
    let key_slot = (0..table.columns.len()).map(|c| key.iter().position(|&k| k == c)).collect();
    // `HANDLER ... READ` returns every column as stored: none generated or invisible.
    let plain = columns.iter().all(|c| {
        let extra = c.11.to_ascii_uppercase();
        !extra.contains("GENERATED") && !extra.contains("INVISIBLE")
    });
    // The index `HANDLER` names: the primary key itself (a table without one may report a
    // unique index's column as `PRI`).
    let primary: Vec<&str> = indexes.iter().filter(|(i, _)| i == "PRIMARY").map(|(_, c)| c.as_str()).collect();
    let handler_fits = plain
        && !key.is_empty()
        && primary.iter().copied().eq(key.iter().map(|&k| columns[k].0.as_str()))
        && key.iter().all(|&k| matches!(table.columns[k].kind, Kind::Int { .. }));
    Ok(Some(TableSpec {
        table: Arc::new(table),
        key,
        key_slot,
        key_params,
        select,
        span: None,
        handler_fits,
        by_handler: false,
    }))
}

/// The `--snapshot-key` columns of `db`.`name`, checked: they exist, are NOT NULL, and include
/// every column of some unique index (so no two rows share a key).
fn chunk_key(
    db: &str,
    name: &str,
    names: &[String],
    columns: &[ColumnRow],
    unique: &[Vec<usize>],
) -> Result<Vec<usize>> {
    let flag = |why: String| Usage(format!("--snapshot-key {db}.{name}={}: {why}", names.join(",")));
    let mut key = Vec::with_capacity(names.len());
    for n in names {
        let c = columns
            .iter()
            .position(|c| c.0 == *n)
            .ok_or_else(|| Usage(format!("--snapshot-key names `{n}`, which `{db}`.`{name}` does not have")))?;
        if columns[c].9 != "NO" {
            return Err(flag(format!(
                "`{n}` is nullable, and rows whose key is NULL cannot be read in chunks: name NOT NULL columns"
            ))
            .into());
        }
        key.push(c);
    }
    if !unique.iter().any(|index| !index.is_empty() && index.iter().all(|c| key.contains(c))) {
        return Err(flag(
            "these columns are not unique (no PRIMARY KEY or UNIQUE index has all its columns among them), so \
             rows sharing a key value would be skipped at chunk boundaries: name the columns of a unique index"
                .into(),
        )
        .into());
    }
    Ok(key)
}

/// The decoder's kind for a column as information_schema describes it (the byte-layout fields a
/// snapshot does not read are filled with the column's usual ones).
fn kind_of(c: &ColumnRow) -> Result<Kind> {
    let (data_type, column_type, charset) = (c.1.to_ascii_lowercase(), c.2.to_ascii_lowercase(), c.3.as_deref());
    let unsigned = column_type.contains("unsigned");
    let fsp = c.7.unwrap_or(0).min(6) as u8;
    let text = match charset {
        Some(cs) => {
            TextEncoding::from_charset(cs).with_context(|| format!("charset {cs} is not one binlog-tail knows"))?
        }
        None => TextEncoding::Binary,
    };
    Ok(match data_type.as_str() {
        "tinyint" => Kind::Int { bytes: 1, unsigned },
        "smallint" => Kind::Int { bytes: 2, unsigned },
        "mediumint" => Kind::Int { bytes: 3, unsigned },
        "int" | "integer" => Kind::Int { bytes: 4, unsigned },
        "bigint" => Kind::Int { bytes: 8, unsigned },
        "float" => Kind::Float,
        "double" | "real" => Kind::Double,
        "decimal" | "numeric" => Kind::Decimal { precision: c.5.unwrap_or(10) as u8, scale: c.6.unwrap_or(0) as u8 },
        "year" => Kind::Year,
        "date" => Kind::Date,
        "time" => Kind::Time2 { fsp },
        "datetime" => Kind::DateTime2 { fsp },
        "timestamp" => Kind::Timestamp2 { fsp },
        "char" | "varchar" | "varbinary" => Kind::Str { len_bytes: 2, text },
        "binary" => Kind::FixedBinary { len_bytes: 1, width: c.8.unwrap_or(0) as u16 },
        "tinytext" | "text" | "mediumtext" | "longtext" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            Kind::Blob { len_bytes: 4, text }
        }
        "json" => Kind::Json { len_bytes: 4 },
        "bit" => Kind::Bit { bytes: c.5.unwrap_or(1).div_ceil(8) as u8, bits: c.5.unwrap_or(1) as u8 },
        "enum" => Kind::Enum { bytes: 2, names: None },
        "set" => Kind::Set { bytes: 8, names: None },
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
        | "geometrycollection" | "geomcollection" => Kind::Geometry { len_bytes: 4 },
        "vector" => Kind::Vector { len_bytes: 4 },
        other => bail!("type `{other}` is not one a snapshot can read"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `HANDLER` chunk keeps the rows up to its bound, compared column by column as the key
    /// orders them (a later column decides only where the earlier ones are equal).
    #[test]
    fn integer_keys_compare_with_a_bound_column_by_column() {
        use KeyValue::{Int, Uint};
        let cmp = |key: &[KeyValue], bound: &[i128]| cmp_int_key(key, bound);
        assert_eq!(cmp(&[Int(-1), Int(7)], &[-1, 7]), Some(Ordering::Equal));
        assert_eq!(cmp(&[Int(-1), Int(8)], &[-1, 7]), Some(Ordering::Greater));
        assert_eq!(cmp(&[Int(-1), Int(900)], &[2, 7]), Some(Ordering::Less));
        assert_eq!(cmp(&[Int(2), Int(1)], &[-1, 7]), Some(Ordering::Greater));
        assert_eq!(cmp(&[Uint(u64::MAX)], &[i128::from(i64::MAX)]), Some(Ordering::Greater));
        assert_eq!(cmp(&[KeyValue::Null], &[1]), None);
    }

    #[test]
    fn dense_integer_keys_split_by_arithmetic_and_sparse_ones_do_not() {
        // 1..=1000 in 900 rows (some deleted): dense; the first chunk ends at 100, the next ones
        // 100 values on, and the one whose end reaches the last key is the tail.
        let span = IntSpan::new(&Value::Int(1), &Value::Int(1000), 900).unwrap();
        assert_eq!(span.bound(None, 100), Some(Some(vec![KeyValue::Int(100)])));
        assert_eq!(span.bound(Some(&[KeyValue::Int(100)]), 100), Some(Some(vec![KeyValue::Int(200)])));
        assert_eq!(span.bound(Some(&[KeyValue::Int(899)]), 100), Some(Some(vec![KeyValue::Int(999)])));
        assert_eq!(span.bound(Some(&[KeyValue::Int(900)]), 100), Some(None));
        // A key of another type (a saved one from before an ALTER): not for this span.
        assert_eq!(span.bound(Some(&[KeyValue::Uint(100)]), 100), None);
        // Keys spread over more than twice the rows: an index read finds the bounds.
        assert_eq!(IntSpan::new(&Value::Int(1), &Value::Int(1000), 400), None);
        assert_eq!(IntSpan::new(&Value::NULL, &Value::NULL, 0), None);
        // Unsigned keys up to u64::MAX, negative signed ones: within their types.
        let top = IntSpan::new(&Value::UInt(u64::MAX - 250), &Value::UInt(u64::MAX), 251).unwrap();
        assert_eq!(top.bound(None, 100), Some(Some(vec![KeyValue::Uint(u64::MAX - 151)])));
        assert_eq!(top.bound(Some(&[KeyValue::Uint(u64::MAX - 60)]), 100), Some(None));
        let low = IntSpan::new(&Value::Int(i64::MIN), &Value::Int(i64::MIN + 999), 1000).unwrap();
        assert_eq!(low.bound(None, 10), Some(Some(vec![KeyValue::Int(i64::MIN + 9)])));
    }

    #[test]
    fn binlog_positions_order_by_file_sequence_then_offset() {
        let p = BinlogPos { file: Arc::from("binlog.000010"), offset: 300 };
        assert!(p.at_or_after("binlog.000009", 90_000));
        assert!(p.at_or_after("binlog.000010", 300));
        assert!(!p.at_or_after("binlog.000010", 301));
        assert!(!p.at_or_after("binlog.000011", 4));
    }
}
