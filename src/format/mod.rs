//! Output formats: the native change event (`event::Change::write_json`), and the envelopes other
//! CDC tools write — Debezium, Maxwell, Canal — so their consumers read binlog-tail unchanged.
//!
//! Invariants: every format reads the same decoded `Change` (each value already finished JSON
//! text, with its column's exact `Kind`) and converts that text directly, without a second
//! decoding path or a `serde_json::Value` per row; filters and dropped columns apply alike,
//! because every format writes only the columns `Change` carries. DDL events and outbox
//! messages keep their own shapes in every format.

pub mod canal;
pub mod debezium;
pub mod maxwell;
mod text;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::{Change, Op};
use crate::schema::RowImage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// binlog-tail's own event (the default).
    #[default]
    Native,
    /// Debezium's MySQL/MariaDB connector envelope (JSON converter without schemas).
    Debezium,
    /// Maxwell's daemon row format.
    Maxwell,
    /// Canal's flat message, one per row.
    Canal,
}

/// How Debezium events carry DATE, DATETIME, TIME and TIMESTAMP values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DebeziumTime {
    /// Debezium's defaults: days, epoch milli/microseconds, TIME in microseconds, TIMESTAMP as
    /// an ISO-8601 UTC string (what Debezium's own consumers expect).
    #[default]
    Connect,
    /// SQL text, `YYYY-MM-DD` and `YYYY-MM-DD HH:MM:SS[.f]` (TIMESTAMP in UTC, no suffix): what
    /// Flink SQL's debezium-json reads.
    Sql,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatSettings {
    pub format: Format,
    pub debezium_time: DebeziumTime,
    /// Debezium's logical server name (`source.name`).
    pub debezium_name: String,
    /// Debezium: a tombstone (same key, null value) after each delete, on Kafka.
    pub debezium_tombstones: bool,
}

impl Default for FormatSettings {
    fn default() -> Self {
        FormatSettings {
            format: Format::Native,
            debezium_time: DebeziumTime::Connect,
            debezium_name: "binlog-tail".into(),
            debezium_tombstones: true,
        }
    }
}

/// Debezium's logical server name by default: the host of the server URL with every character
/// but ASCII letters, digits and `_` made `_` (`mysql://repl@db-1.prod:3306` -> `db_1_prod`,
/// `127.0.0.1` -> `127_0_0_1`); `binlog-tail` for files. Debezium's `topic.prefix` would also
/// allow `.` and `-`, but the default stays what it has always been: consumers that match on
/// `source.name` must not see it change with an upgrade (`--debezium-name` sets any name).
pub fn default_server_name(url: Option<&str>) -> String {
    let host = url.and_then(|u| {
        let rest = u.split_once("://").map_or(u, |(_, r)| r);
        let authority = rest.split(['/', '?']).next()?;
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
        (!host.is_empty()).then_some(host)
    });
    match host {
        Some(h) => h.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect(),
        None => "binlog-tail".into(),
    }
}

/// One message of an encoded change. Most changes are one message; Debezium turns an update
/// that changes the primary key into a delete and a create, as its connector does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Whole,
    /// The before image alone, as a delete.
    Delete,
    /// The after image alone, as an insert.
    Create,
}

impl Part {
    /// The operation and images this part carries.
    pub fn view(self, c: &Change) -> (Op, Option<&RowImage>, Option<&RowImage>) {
        match self {
            Part::Whole => (c.op, c.before.as_ref(), c.after.as_ref()),
            Part::Delete => (Op::Delete, c.before.as_ref(), None),
            Part::Create => (Op::Insert, None, c.after.as_ref()),
        }
    }
}

/// Writes changes in one format. Holds what a format keeps between rows (Debezium's rendered
/// source head, Canal's message id and per-table type maps).
pub struct Encoder {
    settings: FormatSettings,
    debezium: debezium::State,
    canal: canal::State,
}

impl Encoder {
    pub fn new(settings: FormatSettings) -> Encoder {
        Encoder { debezium: debezium::State::new(&settings), settings, canal: canal::State::default() }
    }

    /// The messages `c` becomes.
    pub fn parts(&self, c: &Change) -> &'static [Part] {
        if self.settings.format == Format::Debezium && c.op == Op::Update && pk_changed(c) {
            &[Part::Delete, Part::Create]
        } else {
            &[Part::Whole]
        }
    }

    /// Appends one message's value (one line of JSON, without the newline).
    pub fn write_value(&mut self, c: &Change, part: Part, out: &mut Vec<u8>) {
        match self.settings.format {
            Format::Native => c.write_json(out),
            Format::Debezium => self.debezium.write_value(c, part, out),
            Format::Maxwell => maxwell::write_value(c, out),
            Format::Canal => self.canal.write_value(c, out),
        }
    }

    /// Appends the Kafka key that the format's own tool would give this message, or returns
    /// false when the table has no primary key.
    pub fn write_pk_key(&self, c: &Change, part: Part, out: &mut Vec<u8>) -> bool {
        if c.table.pk.is_empty() {
            return false;
        }
        match self.settings.format {
            Format::Native | Format::Canal => c.write_pk(out),
            Format::Debezium => debezium::write_key(&self.settings, c, part, out),
            Format::Maxwell => maxwell::write_key(c, out),
        }
        true
    }

    /// Whether a tombstone follows this message on Kafka (Debezium's log compaction marker).
    pub fn tombstone_after(&self, c: &Change, part: Part) -> bool {
        self.settings.format == Format::Debezium
            && self.settings.debezium_tombstones
            && !c.table.pk.is_empty()
            && part.view(c).0 == Op::Delete
    }
}

/// True when an update moves the row to another primary key.
fn pk_changed(c: &Change) -> bool {
    let (Some(before), Some(after)) = (&c.before, &c.after) else { return false };
    c.table.pk.iter().any(|&col| matches!((before.value(col), after.value(col)), (Some(b), Some(a)) if a != b))
}

/// The primary-key value of a part: from its after image, else its before image.
fn pk_value(c: &Change, part: Part, col: usize) -> &[u8] {
    let (_, before, after) = part.view(c);
    after.and_then(|i| i.value(col)).or_else(|| before.and_then(|i| i.value(col))).unwrap_or(b"null")
}

/// Now, in nanoseconds since the epoch (the processing time some formats carry).
fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn push_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A value converted by a format's `write_field`, as text (for unit tests).
#[cfg(test)]
fn converted(
    write_field: impl Fn(&crate::schema::Kind, &[u8], &mut Vec<u8>),
    kind: crate::schema::Kind,
    native: &str,
) -> String {
    let mut out = Vec::new();
    write_field(&kind, native.as_bytes(), &mut out);
    String::from_utf8(out).expect("JSON text")
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use crate::event::SnapshotMark;
    use crate::position::Flavor;
    use crate::schema::{Kind, Table};

    fn table(pk: Vec<usize>) -> Arc<Table> {
        let columns = vec![("id", Kind::Int { bytes: 4, unsigned: false }), ("day", Kind::Date), ("v", Kind::Double)];
        Table::for_test("shop", "t", columns, pk)
    }

    fn image(values: [&str; 3]) -> RowImage {
        RowImage::from_json(&values)
    }

    fn update(table: Arc<Table>, before: [&str; 3], after: [&str; 3]) -> Change {
        Change {
            op: Op::Update,
            table,
            server_id: 1,
            thread: None,
            flavor: Flavor::MariaDb,
            ts: 1_700_000_000,
            gtid: None,
            file: Arc::from("binlog.000001"),
            offset: 4,
            xid: None,
            row: 0,
            commit: true,
            snapshot: SnapshotMark::Stream,
            before: Some(image(before)),
            after: Some(image(after)),
        }
    }

    fn key(encoder: &Encoder, c: &Change, part: Part) -> Option<String> {
        let mut out = Vec::new();
        encoder.write_pk_key(c, part, &mut out).then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn keys_tombstones_and_primary_key_changes_per_format() {
        let settings = |format| FormatSettings { format, ..FormatSettings::default() };
        let debezium = Encoder::new(settings(Format::Debezium));
        let moved = update(table(vec![0, 1]), ["1", "\"2024-02-29\"", "1.5"], ["2", "\"2024-02-29\"", "1.5"]);
        assert_eq!(debezium.parts(&moved), [Part::Delete, Part::Create]);
        assert_eq!(key(&debezium, &moved, Part::Delete).as_deref(), Some(r#"{"id":1,"day":19782}"#));
        assert_eq!(key(&debezium, &moved, Part::Create).as_deref(), Some(r#"{"id":2,"day":19782}"#));
        assert!(debezium.tombstone_after(&moved, Part::Delete) && !debezium.tombstone_after(&moved, Part::Create));
        let quiet = Encoder::new(FormatSettings { debezium_tombstones: false, ..settings(Format::Debezium) });
        assert!(!quiet.tombstone_after(&moved, Part::Delete));

        let changed = update(table(vec![0]), ["1", "null", "1.5"], ["1", "null", "2.5"]);
        assert_eq!(debezium.parts(&changed), [Part::Whole], "the key stays: one update");
        assert!(!debezium.tombstone_after(&changed, Part::Whole));
        let maxwell = Encoder::new(settings(Format::Maxwell));
        assert_eq!(maxwell.parts(&moved), [Part::Whole], "only Debezium splits a key change");
        assert_eq!(
            key(&maxwell, &moved, Part::Whole).as_deref(),
            Some(r#"{"database":"shop","table":"t","pk.id":2,"pk.day":"2024-02-29"}"#)
        );
        assert_eq!(key(&Encoder::new(settings(Format::Canal)), &changed, Part::Whole).as_deref(), Some(r#"{"id":1}"#));
        let keyless = update(table(vec![]), ["1", "null", "1.5"], ["2", "null", "1.5"]);
        assert_eq!(key(&debezium, &keyless, Part::Whole), None);
        assert_eq!(debezium.parts(&keyless), [Part::Whole]);
        assert!(!debezium.tombstone_after(&keyless, Part::Whole), "no key, no tombstone");
    }

    #[test]
    fn server_names_from_urls() {
        assert_eq!(default_server_name(Some("mysql://repl@db-1.prod:3306")), "db_1_prod");
        assert_eq!(default_server_name(Some("mysql://127.0.0.1:3306/x?require_ssl=true")), "127_0_0_1");
        assert_eq!(default_server_name(Some("mysql://u:p@host")), "host");
        assert_eq!(default_server_name(None), "binlog-tail");
    }
}
