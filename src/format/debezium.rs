//! Debezium's change event, as its MySQL and MariaDB connectors write it through Kafka Connect's
//! JSON converter without schemas: `before`, `after`, `source`, `transaction`, `op`, `ts_ms`.
//!
//! Invariants: values follow Debezium's defaults wherever they are unambiguous without a schema
//! (docs/formats.md); DECIMAL stays an exact string (`decimal.handling.mode=string`) and
//! BIGINT UNSIGNED an exact number. With `--debezium-time sql`, temporal values are SQL text
//! instead. Zero dates, which Debezium cannot represent, are `null`.

use std::sync::Arc;

use base64::Engine as _;

use super::text::{
    datetime_micros, days, inner, is_zero_date, time_micros, write_as_string, write_set_joined, write_sql_datetime,
};
use super::{now_ns, pk_value, push_int, DebeziumTime, FormatSettings, Part};
use crate::event::{write_row, Change, Op, SnapshotMark};
use crate::position::Flavor;
use crate::schema::Kind;
use crate::text::{write_json_opt_str, write_json_str};

/// Debezium's `op` codes.
fn op_code(op: Op) -> &'static [u8] {
    match op {
        Op::Insert => b"c",
        Op::Update => b"u",
        Op::Delete => b"d",
        Op::Read => b"r",
    }
}

/// Debezium's `source.snapshot` (its `SnapshotRecord`, lower case).
fn snapshot_mark(mark: SnapshotMark) -> &'static [u8] {
    match mark {
        SnapshotMark::Stream => b"false",
        SnapshotMark::First => b"first",
        SnapshotMark::FirstInTable => b"first_in_data_collection",
        SnapshotMark::Read => b"true",
        SnapshotMark::LastInTable => b"last_in_data_collection",
        SnapshotMark::Last => b"last",
        SnapshotMark::Incremental => b"incremental",
    }
}

/// What stays the same from row to row, rendered once: the head of `source` (per server flavour)
/// and the file name (until the binlog rotates).
pub struct State {
    time: DebeziumTime,
    /// `"source":{"version":...,"connector":...,"name":...,"ts_ms":`, for MySQL and MariaDB.
    heads: [Vec<u8>; 2],
    file: Option<(Arc<str>, Vec<u8>)>,
}

impl State {
    pub fn new(settings: &FormatSettings) -> State {
        let head = |connector: &str| {
            let mut h = format!(
                ",\"source\":{{\"version\":\"binlog-tail-{}\",\"connector\":\"{connector}\",\"name\":",
                env!("CARGO_PKG_VERSION")
            )
            .into_bytes();
            write_json_str(&settings.debezium_name, &mut h);
            h.extend_from_slice(b",\"ts_ms\":");
            h
        };
        State { time: settings.debezium_time, heads: [head("mysql"), head("mariadb")], file: None }
    }

    pub fn write_value(&mut self, c: &Change, part: Part, out: &mut Vec<u8>) {
        let (op, before, after) = part.view(c);
        let t = &*c.table;
        let time = self.time;
        out.extend_from_slice(b"{\"before\":");
        write_row(t, before, None, out, |k, v, o| write_field(time, k, v, o));
        out.extend_from_slice(b",\"after\":");
        write_row(t, after, None, out, |k, v, o| write_field(time, k, v, o));
        out.extend_from_slice(&self.heads[usize::from(c.flavor == Flavor::MariaDb)]);
        push_int(out, c.ts * 1000);
        out.extend_from_slice(b",\"ts_us\":");
        push_int(out, c.ts * 1_000_000);
        out.extend_from_slice(b",\"ts_ns\":");
        push_int(out, c.ts * 1_000_000_000);
        out.extend_from_slice(b",\"snapshot\":\"");
        out.extend_from_slice(snapshot_mark(if op == Op::Read { c.snapshot } else { SnapshotMark::Stream }));
        out.extend_from_slice(b"\",\"db\":");
        out.extend_from_slice(&t.db_json);
        out.extend_from_slice(b",\"table\":");
        out.extend_from_slice(&t.name_json);
        out.extend_from_slice(b",\"server_id\":");
        push_int(out, c.server_id);
        out.extend_from_slice(b",\"gtid\":");
        write_json_opt_str(c.gtid.as_deref(), out);
        if !self.file.as_ref().is_some_and(|(f, _)| Arc::ptr_eq(f, &c.file)) {
            let mut rendered = b",\"file\":".to_vec();
            write_json_str(&c.file, &mut rendered);
            rendered.extend_from_slice(b",\"pos\":");
            self.file = Some((c.file.clone(), rendered));
        }
        out.extend_from_slice(&self.file.as_ref().expect("just rendered").1);
        push_int(out, c.offset);
        out.extend_from_slice(b",\"row\":");
        push_int(out, c.row);
        out.extend_from_slice(b",\"thread\":");
        match c.thread {
            Some(t) => push_int(out, t),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"query\":null},\"transaction\":null,\"op\":\"");
        out.extend_from_slice(op_code(op));
        let now = now_ns();
        out.extend_from_slice(b"\",\"ts_ms\":");
        push_int(out, now / 1_000_000);
        out.extend_from_slice(b",\"ts_us\":");
        push_int(out, now / 1_000);
        out.extend_from_slice(b",\"ts_ns\":");
        push_int(out, now);
        out.push(b'}');
    }
}

/// Debezium's message key: the primary-key columns as an object, in the value's encodings.
pub fn write_key(settings: &FormatSettings, c: &Change, part: Part, out: &mut Vec<u8>) {
    out.push(b'{');
    for (n, &col) in c.table.pk.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let column = &c.table.columns[col];
        out.extend_from_slice(&column.key_json);
        write_field(settings.debezium_time, &column.kind, pk_value(c, part, col), out);
    }
    out.push(b'}');
}

/// One value, converted from its native JSON text.
fn write_field(time: DebeziumTime, kind: &Kind, v: &[u8], out: &mut Vec<u8>) {
    if v == b"null" {
        out.extend_from_slice(v);
        return;
    }
    match kind {
        Kind::Date if is_zero_date(v) => out.extend_from_slice(b"null"),
        Kind::Date => match time {
            DebeziumTime::Connect => write_number(inner(v).and_then(days), out),
            DebeziumTime::Sql => out.extend_from_slice(v),
        },
        Kind::OldTime | Kind::Time2 { .. } => match time {
            DebeziumTime::Connect => write_number(inner(v).and_then(time_micros), out),
            DebeziumTime::Sql => out.extend_from_slice(v),
        },
        Kind::OldDateTime | Kind::DateTime2 { .. } | Kind::OldTimestamp | Kind::Timestamp2 { .. }
            if is_zero_date(v) =>
        {
            out.extend_from_slice(b"null")
        }
        Kind::OldDateTime | Kind::DateTime2 { .. } => match time {
            DebeziumTime::Connect => {
                let micros = inner(v).and_then(datetime_micros);
                // DATETIME(0-3) is io.debezium.time.Timestamp (ms), DATETIME(4-6) MicroTimestamp.
                let millis_precision = matches!(kind, Kind::OldDateTime | Kind::DateTime2 { fsp: 0..=3 });
                write_number(if millis_precision { micros.map(|m| m.div_euclid(1000)) } else { micros }, out)
            }
            DebeziumTime::Sql => write_sql_datetime(v, out),
        },
        Kind::OldTimestamp | Kind::Timestamp2 { .. } => match time {
            // io.debezium.time.ZonedTimestamp: ISO-8601 in UTC, as the native value already is.
            DebeziumTime::Connect => out.extend_from_slice(v),
            DebeziumTime::Sql => write_sql_datetime(v, out),
        },
        // io.debezium.data.Json: the document as a string.
        Kind::Json { .. } => write_as_string(v, out),
        Kind::Set { names: Some(_), .. } => write_set_joined(v, out),
        Kind::Bit { bits: 1, .. } => out.extend_from_slice(if v == b"0" { b"false" } else { b"true" }),
        // io.debezium.data.Bits: the bits as bytes, least significant byte first, base64.
        Kind::Bit { bytes, .. } => match std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) => {
                out.push(b'"');
                let le = n.to_le_bytes();
                let start = out.len();
                let len = base64::encoded_len(usize::from(*bytes), true).expect("at most 8 bytes");
                out.resize(start + len, 0);
                base64::engine::general_purpose::STANDARD
                    .encode_slice(&le[..usize::from(*bytes)], &mut out[start..])
                    .expect("buffer sized by encoded_len");
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        },
        Kind::Geometry { .. } => {
            out.extend_from_slice(b"{\"wkb\":");
            out.extend_from_slice(v);
            out.extend_from_slice(b",\"srid\":null}");
        }
        _ => out.extend_from_slice(v),
    }
}

fn write_number(n: Option<i64>, out: &mut Vec<u8>) {
    match n {
        Some(n) => push_int(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::converted;
    use super::*;

    fn field(time: DebeziumTime, kind: Kind, v: &str) -> String {
        converted(|k, v, out| write_field(time, k, v, out), kind, v)
    }

    #[test]
    fn values_in_debeziums_encodings() {
        use DebeziumTime::*;
        assert_eq!(field(Connect, Kind::Date, r#""2024-02-29""#), "19782");
        assert_eq!(field(Sql, Kind::Date, r#""2024-02-29""#), r#""2024-02-29""#);
        assert_eq!(field(Connect, Kind::Date, r#""0000-00-00""#), "null");
        assert_eq!(field(Connect, Kind::DateTime2 { fsp: 0 }, r#""1970-01-01T00:00:01""#), "1000");
        assert_eq!(field(Connect, Kind::DateTime2 { fsp: 6 }, r#""1969-12-31T23:59:59.999999""#), "-1");
        assert_eq!(field(Connect, Kind::DateTime2 { fsp: 3 }, r#""1969-12-31T23:59:59.999""#), "-1");
        assert_eq!(
            field(Sql, Kind::Timestamp2 { fsp: 2 }, r#""2024-01-01T00:00:00.50Z""#),
            r#""2024-01-01 00:00:00.50""#
        );
        assert_eq!(field(Connect, Kind::Time2 { fsp: 0 }, r#""-01:00:00""#), "-3600000000");
        assert_eq!(field(Connect, Kind::Bit { bytes: 1, bits: 1 }, "1"), "true");
        assert_eq!(field(Connect, Kind::Bit { bytes: 2, bits: 9 }, "258"), r#""AgE=""#);
        assert_eq!(field(Connect, Kind::Set { bytes: 1, names: Some(vec![]) }, r#"["a","b"]"#), r#""a,b""#);
        assert_eq!(field(Connect, Kind::Json { len_bytes: 4 }, r#"{"a":1}"#), r#""{\"a\":1}""#);
        assert_eq!(field(Connect, Kind::Date, "null"), "null");
    }
}
