//! Maxwell's row format: `database`, `table`, `type`, `ts`, `xid`, `commit`, `position`, `gtid`,
//! `server_id`, `data`, and `old` for updates (only the columns that changed, with their old
//! values).
//!
//! Invariants: values are Maxwell's — DECIMAL a JSON number with every digit, DATETIME and
//! TIMESTAMP as `"YYYY-MM-DD hh:mm:ss[.ffffff]"` (TIMESTAMP in UTC), zero dates kept, SET an
//! array; `xid` on every row of a transaction, as Maxwell writes it (it buffers the transaction,
//! spilling to disk; the decoder holds up to 10,000 rows or 8 MiB, and rows of a larger
//! transaction beyond that go out before its end is known, without `xid`), `commit` only on its
//! last row.

use super::text::{inner, write_sql_datetime};
use super::{pk_value, push_int, Part};
use crate::event::{write_position, write_row, Change, Op};
use crate::schema::{Kind, Table};
use crate::text::{write_json_opt_str, write_json_str};

/// Maxwell's `type`.
fn type_name(op: Op) -> &'static [u8] {
    match op {
        Op::Insert => b"insert",
        Op::Update => b"update",
        Op::Delete => b"delete",
        Op::Read => b"bootstrap-insert",
    }
}

pub fn write_value(c: &Change, out: &mut Vec<u8>) {
    let t = &*c.table;
    write_db_table(t, out);
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(type_name(c.op));
    out.extend_from_slice(b"\",\"ts\":");
    push_int(out, c.ts);
    if let Some(xid) = c.xid {
        out.extend_from_slice(b",\"xid\":");
        push_int(out, xid);
    }
    if c.commit {
        out.extend_from_slice(b",\"commit\":true");
    }
    out.extend_from_slice(b",\"position\":");
    write_position(&c.file, c.offset, out);
    out.extend_from_slice(b",\"gtid\":");
    write_json_opt_str(c.gtid.as_deref(), out);
    out.extend_from_slice(b",\"server_id\":");
    push_int(out, c.server_id);
    out.extend_from_slice(b",\"data\":");
    let data = if c.op == Op::Delete { c.before.as_ref() } else { c.after.as_ref() };
    write_row(t, data, None, out, write_field);
    if c.op == Op::Update {
        out.extend_from_slice(b",\"old\":");
        write_row(t, c.before.as_ref(), c.after.as_ref(), out, write_field);
    }
    out.push(b'}');
}

/// Maxwell's Kafka key: `{"database":...,"table":...,"pk.<column>":...}`.
pub fn write_key(c: &Change, out: &mut Vec<u8>) {
    let t = &*c.table;
    write_db_table(t, out);
    for &col in &t.pk {
        let column = &t.columns[col];
        out.push(b',');
        write_json_str(&format!("pk.{}", column.name), out);
        out.push(b':');
        write_field(&column.kind, pk_value(c, Part::Whole, col), out);
    }
    out.push(b'}');
}

/// `{"database":...,"table":...` (the object left open).
fn write_db_table(t: &Table, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"database\":");
    out.extend_from_slice(&t.db_json);
    out.extend_from_slice(b",\"table\":");
    out.extend_from_slice(&t.name_json);
}

fn write_field(kind: &Kind, v: &[u8], out: &mut Vec<u8>) {
    match kind {
        Kind::Decimal { .. } => out.extend_from_slice(inner(v).unwrap_or(v)),
        Kind::OldDateTime | Kind::DateTime2 { .. } | Kind::OldTimestamp | Kind::Timestamp2 { .. } => {
            write_sql_datetime(v, out)
        }
        _ => out.extend_from_slice(v),
    }
}

#[cfg(test)]
mod tests {
    use super::super::converted;
    use super::*;

    #[test]
    fn maxwell_values() {
        let field = |kind, v| converted(write_field, kind, v);
        assert_eq!(field(Kind::Decimal { precision: 5, scale: 2 }, r#""-999.99""#), "-999.99");
        assert_eq!(field(Kind::DateTime2 { fsp: 0 }, r#""0000-00-00T00:00:00""#), r#""0000-00-00 00:00:00""#);
        assert_eq!(
            field(Kind::Timestamp2 { fsp: 6 }, r#""1970-01-01T00:00:01.000000Z""#),
            r#""1970-01-01 00:00:01.000000""#
        );
        assert_eq!(field(Kind::Decimal { precision: 5, scale: 2 }, "null"), "null");
    }
}
