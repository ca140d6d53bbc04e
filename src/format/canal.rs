//! Canal's flat message (`FlatMessage`), one per row: `data` and `old` are arrays of rows whose
//! values are all strings (or null), with the column types as JDBC codes (`sqlType`) and as SQL
//! text (`mysqlType`). Fields in Canal's own (alphabetical) order.
//!
//! Invariants: `old` is present exactly for updates, as long as `data` (one row), holding only
//! the columns that changed; `type` is upper case. The per-table type maps are rendered once
//! per table, not per row.

use std::sync::Arc;

use super::text::{write_as_string, write_set_joined, write_sql_datetime};
use super::{now_ns, push_int};
use crate::event::{write_row, Change, Op};
use crate::schema::{Column, Kind, Table};
use crate::text::write_json_str;

/// Canal's `type`.
fn type_name(op: Op) -> &'static [u8] {
    match op {
        Op::Insert => b"INSERT",
        Op::Update => b"UPDATE",
        Op::Delete => b"DELETE",
        // Canal has no snapshot type: a read row is an insert.
        Op::Read => b"INSERT",
    }
}

/// The message id counter and the type maps of the last table seen.
#[derive(Default)]
pub struct State {
    id: u64,
    table: Option<Arc<Table>>,
    /// `"mysqlType":{...}` of `table`.
    mysql_type: Vec<u8>,
    /// `"pkNames":[...],"sql":"","sqlType":{...}` of `table`.
    pk_and_sql_type: Vec<u8>,
}

impl State {
    pub fn write_value(&mut self, c: &Change, out: &mut Vec<u8>) {
        let t = &c.table;
        if !self.table.as_ref().is_some_and(|cached| Arc::ptr_eq(cached, t)) {
            self.render_types(t);
        }
        self.id += 1;
        let data = if c.op == Op::Delete { c.before.as_ref() } else { c.after.as_ref() };
        out.extend_from_slice(b"{\"data\":[");
        write_row(t, data, None, out, write_field);
        out.extend_from_slice(b"],\"database\":");
        out.extend_from_slice(&t.db_json);
        out.extend_from_slice(b",\"es\":");
        push_int(out, c.ts * 1000);
        out.extend_from_slice(b",\"id\":");
        push_int(out, self.id);
        out.extend_from_slice(b",\"isDdl\":false,");
        out.extend_from_slice(&self.mysql_type);
        out.extend_from_slice(b",\"old\":");
        if c.op == Op::Update {
            out.push(b'[');
            write_row(t, c.before.as_ref(), c.after.as_ref(), out, write_field);
            out.push(b']');
        } else {
            out.extend_from_slice(b"null");
        }
        out.push(b',');
        out.extend_from_slice(&self.pk_and_sql_type);
        out.extend_from_slice(b",\"table\":");
        out.extend_from_slice(&t.name_json);
        out.extend_from_slice(b",\"ts\":");
        push_int(out, now_ns() / 1_000_000);
        out.extend_from_slice(b",\"type\":\"");
        out.extend_from_slice(type_name(c.op));
        out.extend_from_slice(b"\"}");
    }

    fn render_types(&mut self, t: &Arc<Table>) {
        let kept = || t.columns.iter().filter(|c| !c.dropped);
        let m = &mut self.mysql_type;
        m.clear();
        m.extend_from_slice(b"\"mysqlType\":{");
        for (n, column) in kept().enumerate() {
            if n > 0 {
                m.push(b',');
            }
            m.extend_from_slice(&column.key_json);
            write_json_str(&column.sql_type, m);
        }
        m.push(b'}');
        let p = &mut self.pk_and_sql_type;
        p.clear();
        p.extend_from_slice(b"\"pkNames\":");
        if t.pk.is_empty() {
            p.extend_from_slice(b"null");
        } else {
            p.push(b'[');
            for (n, &col) in t.pk.iter().enumerate() {
                if n > 0 {
                    p.push(b',');
                }
                write_json_str(&t.columns[col].name, p);
            }
            p.push(b']');
        }
        p.extend_from_slice(b",\"sql\":\"\",\"sqlType\":{");
        for (n, column) in kept().enumerate() {
            if n > 0 {
                p.push(b',');
            }
            p.extend_from_slice(&column.key_json);
            push_int(p, jdbc_type(column));
        }
        p.push(b'}');
        self.table = Some(t.clone());
    }
}

/// Every value as a string: numbers as their digits, DATETIME and TIMESTAMP as
/// `YYYY-MM-DD hh:mm:ss[.f]` (TIMESTAMP in UTC), SET joined by commas, JSON documents as text.
fn write_field(kind: &Kind, v: &[u8], out: &mut Vec<u8>) {
    match kind {
        Kind::OldDateTime | Kind::DateTime2 { .. } | Kind::OldTimestamp | Kind::Timestamp2 { .. } => {
            write_sql_datetime(v, out)
        }
        Kind::Set { .. } => write_set_joined(v, out),
        _ => write_as_string(v, out),
    }
}

/// The column's `java.sql.Types` code, as Canal reports it.
fn jdbc_type(column: &Column) -> i32 {
    const BIT: i32 = -7;
    const TINYINT: i32 = -6;
    const SMALLINT: i32 = 5;
    const INTEGER: i32 = 4;
    const BIGINT: i32 = -5;
    const REAL: i32 = 7;
    const DOUBLE: i32 = 8;
    const DECIMAL: i32 = 3;
    const CHAR: i32 = 1;
    const VARCHAR: i32 = 12;
    const DATE: i32 = 91;
    const TIME: i32 = 92;
    const TIMESTAMP: i32 = 93;
    const BINARY: i32 = -2;
    const VARBINARY: i32 = -3;
    const BLOB: i32 = 2004;
    const CLOB: i32 = 2005;
    const OTHER: i32 = 1111;
    let fixed = column.sql_type.starts_with("char") || column.sql_type.starts_with("binary");
    match &column.kind {
        // Unsigned integers take the next wider type, as Canal reports them.
        Kind::Int { bytes: 1, unsigned } => {
            if *unsigned {
                SMALLINT
            } else {
                TINYINT
            }
        }
        Kind::Int { bytes: 2, unsigned } => {
            if *unsigned {
                INTEGER
            } else {
                SMALLINT
            }
        }
        Kind::Int { bytes: 3 | 4, unsigned } => {
            if *unsigned {
                BIGINT
            } else {
                INTEGER
            }
        }
        Kind::Int { unsigned, .. } => {
            if *unsigned {
                DECIMAL
            } else {
                BIGINT
            }
        }
        Kind::Float => REAL,
        Kind::Double => DOUBLE,
        Kind::Decimal { .. } => DECIMAL,
        Kind::Year | Kind::Json { .. } => VARCHAR,
        Kind::Date => DATE,
        Kind::OldTime | Kind::Time2 { .. } => TIME,
        Kind::OldDateTime | Kind::DateTime2 { .. } | Kind::OldTimestamp | Kind::Timestamp2 { .. } => TIMESTAMP,
        Kind::Str { text, .. } if *text == crate::text::TextEncoding::Binary => {
            if fixed {
                BINARY
            } else {
                VARBINARY
            }
        }
        Kind::Str { .. } => {
            if fixed {
                CHAR
            } else {
                VARCHAR
            }
        }
        Kind::FixedBinary { .. } | Kind::Geometry { .. } => BINARY,
        Kind::Blob { text, .. } if *text == crate::text::TextEncoding::Binary => BLOB,
        Kind::Blob { .. } => CLOB,
        Kind::Bit { .. } => BIT,
        Kind::Enum { .. } | Kind::Set { .. } => CHAR,
        Kind::Vector { .. } => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::super::converted;
    use super::*;

    #[test]
    fn every_value_is_a_string() {
        let field = |kind, v| converted(write_field, kind, v);
        assert_eq!(field(Kind::Int { bytes: 8, unsigned: true }, "18446744073709551615"), r#""18446744073709551615""#);
        assert_eq!(field(Kind::Double, "-1.5"), r#""-1.5""#);
        assert_eq!(field(Kind::Decimal { precision: 5, scale: 2 }, r#""1.50""#), r#""1.50""#);
        assert_eq!(field(Kind::DateTime2 { fsp: 0 }, r#""2024-01-01T10:00:00""#), r#""2024-01-01 10:00:00""#);
        assert_eq!(field(Kind::Set { bytes: 1, names: None }, r#"["a","b"]"#), r#""a,b""#);
        assert_eq!(field(Kind::Json { len_bytes: 4 }, r#"{"a":"é"}"#), r#""{\"a\":\"é\"}""#);
        assert_eq!(field(Kind::Int { bytes: 4, unsigned: false }, "null"), "null");
    }
}
