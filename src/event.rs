//! The JSON change event: the contract every sink emits, one object per changed row.
//!
//! Invariants: field order and names are fixed (documented in docs/events.md, field by field);
//! `before`/`after` hold only the columns the binlog carried; `pk` is taken from the after image
//! (the before image for deletes, or where the after image lacks a key column) and is null for
//! tables without a primary key.

use std::sync::Arc;

use crate::position::Flavor;
use crate::schema::{Kind, RowImage, Table};
use crate::text::{write_json_opt_str, write_json_str};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
    /// A row read by a snapshot (not a change in the binlog).
    Read,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Read => "read",
        }
    }
}

/// Where an event stands in a snapshot, as Debezium's `source.snapshot` says it: a change from
/// the stream, or a read and its place in the initial snapshot (`snapshot::marks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMark {
    /// A change from the stream.
    Stream,
    /// The initial snapshot's first read.
    First,
    /// A table's first read (not the initial snapshot's first).
    FirstInTable,
    /// Any other read of the initial snapshot.
    Read,
    /// A table's last read (not the initial snapshot's last).
    LastInTable,
    /// The initial snapshot's last read.
    Last,
    /// A read of an incremental snapshot.
    Incremental,
}

#[derive(Debug, Clone)]
pub struct Change {
    pub op: Op,
    pub table: Arc<Table>,
    /// The server that wrote the change, and its kind (for formats that name them).
    pub server_id: u32,
    /// The server session (connection id) that ran the transaction, where the binlog says.
    pub thread: Option<u32>,
    pub flavor: Flavor,
    /// Commit time of the transaction, seconds since the epoch.
    pub ts: u64,
    pub gtid: Option<Arc<str>>,
    pub file: Arc<str>,
    /// Offset of the rows event (of the enclosing compressed payload, for MySQL).
    pub offset: u64,
    /// The transaction's XID, known only at its end: set on every row the decoder held back
    /// until then (all rows of a transaction that fits its bound, and always the commit row).
    pub xid: Option<u64>,
    /// Index of this row within its transaction, from 0.
    pub row: u64,
    /// True on the last row of its transaction.
    pub commit: bool,
    /// `Stream` for changes; for reads, their place in the snapshot.
    pub snapshot: SnapshotMark,
    pub before: Option<RowImage>,
    pub after: Option<RowImage>,
}

impl Change {
    /// Appends the event as one line of JSON (without the newline).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let t = &*self.table;
        out.extend_from_slice(b"{\"op\":\"");
        out.extend_from_slice(self.op.as_str().as_bytes());
        out.extend_from_slice(b"\",\"db\":");
        out.extend_from_slice(&t.db_json);
        out.extend_from_slice(b",\"table\":");
        out.extend_from_slice(&t.name_json);
        write_origin(out, self.ts, self.gtid.as_deref(), &self.file, self.offset);
        out.extend_from_slice(b",\"xid\":");
        // The native event names the XID on the commit row only (Maxwell's format on every row).
        match self.xid.filter(|_| self.commit) {
            Some(x) => out.extend_from_slice(itoa::Buffer::new().format(x).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"row\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.row).as_bytes());
        out.extend_from_slice(if self.commit { b",\"commit\":true" } else { b",\"commit\":false" });
        out.extend_from_slice(b",\"pk\":");
        self.write_pk(out);
        out.extend_from_slice(b",\"before\":");
        write_image(t, self.before.as_ref(), out);
        out.extend_from_slice(b",\"after\":");
        write_image(t, self.after.as_ref(), out);
        out.push(b'}');
    }

    /// The after image as a JSON object (`null` for deletes).
    pub fn write_after(&self, out: &mut Vec<u8>) {
        write_image(&self.table, self.after.as_ref(), out);
    }

    /// The primary key as a JSON object, or `null` when the table has none.
    pub fn write_pk(&self, out: &mut Vec<u8>) {
        let t = &*self.table;
        if t.pk.is_empty() {
            out.extend_from_slice(b"null");
            return;
        }
        out.push(b'{');
        for (n, &col) in t.pk.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&t.columns[col].key_json);
            let value = self
                .after
                .as_ref()
                .and_then(|img| img.value(col))
                .or_else(|| self.before.as_ref().and_then(|img| img.value(col)));
            out.extend_from_slice(value.unwrap_or(b"null"));
        }
        out.push(b'}');
    }
}

/// A DDL or TRUNCATE statement (`--emit-ddl`).
#[derive(Debug, Clone)]
pub struct Ddl {
    /// The statement's default database (the one it ran in).
    pub db: String,
    pub sql: String,
    pub ts: u64,
    pub gtid: Option<Arc<str>>,
    pub file: Arc<str>,
    pub offset: u64,
}

impl Ddl {
    /// `{"op":"ddl","db":...,"ts":...,"gtid":...,"pos":...,"sql":...}`
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"op\":\"ddl\",\"db\":");
        write_json_str(&self.db, out);
        write_origin(out, self.ts, self.gtid.as_deref(), &self.file, self.offset);
        out.extend_from_slice(b",\"sql\":");
        write_json_str(&self.sql, out);
        out.push(b'}');
    }
}

/// Where an event came from, as one string: its transaction's GTID, else the event's
/// `FILE:OFFSET` (Kafka's `id` header and deduplication order, outbox messages).
pub fn origin(gtid: Option<&str>, file: &str, offset: u64) -> String {
    let mut out = String::new();
    push_origin(&mut out, gtid, file, offset);
    out
}

/// Appends `origin` to `out` (no allocation in a buffer that is reused).
pub fn push_origin(out: &mut String, gtid: Option<&str>, file: &str, offset: u64) {
    match gtid {
        Some(g) => out.push_str(g),
        None => {
            out.push_str(file);
            out.push(':');
            out.push_str(itoa::Buffer::new().format(offset));
        }
    }
}

/// `,"ts":...,"gtid":...,"pos":"FILE:OFFSET"`: where an event came from. The rows of one rows
/// event (and the reads of one chunk) share it: the last one written on this thread is kept as
/// text and copied while it is the same.
fn write_origin(out: &mut Vec<u8>, ts: u64, gtid: Option<&str>, file: &str, offset: u64) {
    LAST_ORIGIN.with_borrow_mut(|last| {
        let same = !last.json.is_empty()
            && (last.ts, last.offset, last.file.as_str(), last.gtid.as_deref()) == (ts, offset, file, gtid);
        if !same {
            last.ts = ts;
            last.offset = offset;
            last.file.clear();
            last.file.push_str(file);
            last.gtid = gtid.map(str::to_string);
            let json = &mut last.json;
            json.clear();
            json.extend_from_slice(b",\"ts\":");
            json.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
            json.extend_from_slice(b",\"gtid\":");
            write_json_opt_str(gtid, json);
            json.extend_from_slice(b",\"pos\":");
            write_position(file, offset, json);
        }
        out.extend_from_slice(&last.json);
    });
}

/// The origin `write_origin` wrote last, and its text.
#[derive(Default)]
struct LastOrigin {
    ts: u64,
    offset: u64,
    file: String,
    gtid: Option<String>,
    json: Vec<u8>,
}

thread_local! {
    static LAST_ORIGIN: std::cell::RefCell<LastOrigin> = std::cell::RefCell::default();
}

/// `"FILE:OFFSET"` as a JSON string.
pub fn write_position(file: &str, offset: u64, out: &mut Vec<u8>) {
    write_json_str(file, out);
    out.pop(); // reopen the string to append `:offset`
    out.push(b':');
    out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
    out.push(b'"');
}

fn write_image(table: &Table, image: Option<&RowImage>, out: &mut Vec<u8>) {
    match image {
        Some(image) if image.object => out.extend_from_slice(&image.json),
        _ => write_row(table, image, None, out, |_, value, out| out.extend_from_slice(value)),
    }
}

/// Appends `{"col":value,...}` for the image's present, kept columns, each value written from
/// its native JSON text by `convert` (other formats convert it); `null` without an image. With
/// `only_changed`, just the columns whose value differs from that image (an update's `old`).
pub fn write_row(
    table: &Table,
    image: Option<&RowImage>,
    only_changed: Option<&RowImage>,
    out: &mut Vec<u8>,
    mut convert: impl FnMut(&Kind, &[u8], &mut Vec<u8>),
) {
    let Some(image) = image else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'{');
    let mut first = true;
    for (col, column) in table.columns.iter().enumerate().filter(|(_, c)| !c.dropped) {
        let Some(value) = image.value(col) else { continue };
        if only_changed.is_some_and(|other| other.value(col).is_none_or(|v| v == value)) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(&column.key_json);
        convert(&column.kind, value, out);
    }
    out.push(b'}');
}
