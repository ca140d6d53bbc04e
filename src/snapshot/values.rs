//! Values read by a snapshot's SELECT (binary protocol, `character_set_results=binary`,
//! `time_zone='+00:00'`) written as the JSON the binlog decoder prints for the same value.
//!
//! Invariants: every value goes through the decoder's own writers (dates, times, floats, text by
//! the column's charset, base64), so a `read` event's `after` is byte for byte the `after` of an
//! `insert` of the same row; a value whose wire type does not fit its column is an error, never a
//! guess.

use anyhow::{bail, Context, Result};
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::{Column, Value};

use crate::decode::value::{write_date_value, write_datetime, write_f32, write_f64, write_time_value, Cursor};
use crate::position::KeyValue;
use crate::schema::Kind;
use crate::text::{write_json_str, TextEncoding};

/// A value as the binary protocol sends it, borrowed from the row's packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wire<'a> {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    Bytes(&'a [u8]),
    Date(u16, u8, u8, u8, u8, u8, u32),
    Time(bool, u32, u8, u8, u8, u32),
}

impl<'a> From<&'a Value> for Wire<'a> {
    fn from(value: &'a Value) -> Wire<'a> {
        match value {
            Value::NULL => Wire::Null,
            Value::Int(v) => Wire::Int(*v),
            Value::UInt(v) => Wire::UInt(*v),
            Value::Float(v) => Wire::Float(*v),
            Value::Double(v) => Wire::Double(*v),
            Value::Bytes(b) => Wire::Bytes(b),
            Value::Date(y, mo, d, h, mi, s, us) => Wire::Date(*y, *mo, *d, *h, *mi, *s, *us),
            Value::Time(neg, days, h, m, s, us) => Wire::Time(*neg, *days, *h, *m, *s, *us),
        }
    }
}

/// Reads the values of one binary-protocol row packet (`0x00`, the NULL bitmap, then each
/// non-NULL value as its column's type sends it), handing each to `each` in column order.
pub fn read_binary_row(
    packet: &[u8],
    columns: &[Column],
    mut each: impl FnMut(usize, Wire<'_>) -> Result<()>,
) -> Result<()> {
    // One bit per column, after two reserved bits.
    let nulls_len = (columns.len() + 2).div_ceil(8);
    let Some((nulls, values)) = packet.get(1..).and_then(|p| p.split_at_checked(nulls_len)) else {
        bail!("a row packet of {} bytes is shorter than its NULL bitmap", packet.len());
    };
    let mut cur = Cursor::new(values);
    for (i, column) in columns.iter().enumerate() {
        if nulls[(i + 2) / 8] & (1 << ((i + 2) % 8)) != 0 {
            each(i, Wire::Null)?;
            continue;
        }
        let unsigned = column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
        // As mysql_common reads them (so saved keys and `IntSpan` see the same): `UInt` only for
        // an unsigned value beyond i64.
        let int = |cur: &mut Cursor<'_>, n: usize| -> Result<Wire<'static>> {
            let raw = cur.uint_le(n)?;
            let shift = 64 - 8 * n as u32;
            Ok(match unsigned {
                true => i64::try_from(raw).map_or(Wire::UInt(raw), Wire::Int),
                false => Wire::Int(((raw << shift) as i64) >> shift),
            })
        };
        use ColumnType::*;
        let value = match column.column_type() {
            MYSQL_TYPE_TINY => int(&mut cur, 1)?,
            MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR => int(&mut cur, 2)?,
            MYSQL_TYPE_LONG | MYSQL_TYPE_INT24 => int(&mut cur, 4)?,
            MYSQL_TYPE_LONGLONG => int(&mut cur, 8)?,
            MYSQL_TYPE_FLOAT => Wire::Float(f32::from_le_bytes(cur.take(4)?.try_into().expect("4 bytes"))),
            MYSQL_TYPE_DOUBLE => Wire::Double(f64::from_le_bytes(cur.take(8)?.try_into().expect("8 bytes"))),
            // A length (0, 4, 7 or 11), then year (2 bytes), month, day, hour, minute, second,
            // microseconds (4 bytes): the fields the length leaves out are zero.
            MYSQL_TYPE_DATE | MYSQL_TYPE_DATETIME | MYSQL_TYPE_TIMESTAMP => {
                let b = temporal(&mut cur, &[0, 4, 7, 11])?;
                let at = |i: usize| b.get(i).copied().unwrap_or(0);
                let micros = b.get(7..11).map_or(0, |us| u32::from_le_bytes(us.try_into().expect("4 bytes")));
                Wire::Date(u16::from_le_bytes([at(0), at(1)]), at(2), at(3), at(4), at(5), at(6), micros)
            }
            // A length (0, 8 or 12), then sign, days (4 bytes), hours, minutes, seconds,
            // microseconds (4 bytes).
            MYSQL_TYPE_TIME => {
                let b = temporal(&mut cur, &[0, 8, 12])?;
                let at = |i: usize| b.get(i).copied().unwrap_or(0);
                let micros = b.get(8..12).map_or(0, |us| u32::from_le_bytes(us.try_into().expect("4 bytes")));
                Wire::Time(at(0) == 1, u32::from_le_bytes([at(1), at(2), at(3), at(4)]), at(5), at(6), at(7), micros)
            }
            _ => {
                let len = cur.lenenc()? as usize;
                Wire::Bytes(cur.take(len)?)
            }
        };
        each(i, value)?;
    }
    Ok(())
}

/// A temporal value's bytes, after its length byte, which must be one of `lengths`.
fn temporal<'a>(cur: &mut Cursor<'a>, lengths: &[usize]) -> Result<&'a [u8]> {
    let len = usize::from(cur.take(1)?[0]);
    if !lengths.contains(&len) {
        bail!("a date or time value of {len} bytes (expected one of {lengths:?})");
    }
    Ok(cur.take(len)?)
}

/// Appends the JSON text of `value`, a value of a column of kind `kind`.
pub fn write_value(kind: &Kind, value: &Wire<'_>, out: &mut Vec<u8>) -> Result<()> {
    match (kind, *value) {
        (_, Wire::Null) => out.extend_from_slice(b"null"),
        (Kind::Int { .. } | Kind::Year, Wire::Int(v)) => {
            out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes())
        }
        (Kind::Int { .. } | Kind::Year, Wire::UInt(v)) => {
            out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes())
        }
        (Kind::Float, Wire::Float(v)) => write_f32(v, out),
        (Kind::Double, Wire::Double(v)) => write_f64(v, out),
        (Kind::Decimal { .. }, Wire::Bytes(digits)) => {
            // The server prints DECIMAL with exactly its declared scale, like the binlog decoder.
            out.push(b'"');
            out.extend_from_slice(ascii(digits, "DECIMAL")?);
            out.push(b'"');
        }
        (Kind::Date, Wire::Date(y, m, d, ..)) => write_date_value(out, u64::from(y), u64::from(m), u64::from(d)),
        (Kind::DateTime2 { fsp } | Kind::Timestamp2 { fsp }, Wire::Date(y, mo, d, h, mi, s, us)) => write_datetime(
            out,
            (u64::from(y), u64::from(mo), u64::from(d)),
            (u64::from(h), u64::from(mi), u64::from(s)),
            u64::from(us),
            *fsp,
            matches!(kind, Kind::Timestamp2 { .. }),
        ),
        (Kind::Time2 { fsp }, Wire::Time(neg, days, h, m, s, us)) => write_time_value(
            out,
            neg,
            u64::from(days) * 24 + u64::from(h),
            u64::from(m),
            u64::from(s),
            u64::from(us),
            *fsp,
        ),
        (Kind::Str { text, .. } | Kind::Blob { text, .. }, Wire::Bytes(b)) => text.write_json(b, out)?,
        // The server returns BINARY(n) with its trailing zero bytes, as the decoder restores them.
        (Kind::FixedBinary { .. }, Wire::Bytes(b)) => TextEncoding::Binary.write_json(b, out)?,
        (Kind::Json { .. }, Wire::Bytes(b)) => {
            let doc: serde_json::Value =
                serde_json::from_slice(b).context("the server returned a JSON column that is not JSON")?;
            serde_json::to_writer(&mut *out, &doc)?;
        }
        // The server sends geometry as stored: a 4-byte SRID, then the WKB.
        (Kind::Geometry { .. }, Wire::Bytes(b)) => {
            TextEncoding::Binary.write_json(b.get(4..).unwrap_or_default(), out)?
        }
        (Kind::Vector { .. }, Wire::Bytes(b)) => {
            out.push(b'[');
            for (i, c) in b.chunks_exact(4).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_f32(f32::from_le_bytes(c.try_into().expect("4 bytes")), out);
            }
            out.push(b']');
        }
        (Kind::Bit { .. }, Wire::Bytes(b)) => {
            if b.len() > 8 {
                bail!("a BIT value of {} bytes", b.len());
            }
            let v = b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
            out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        }
        // ENUM and SET names as the decoder reads them from the binlog's metadata.
        (Kind::Enum { .. }, Wire::Bytes(b)) => write_json_str(&String::from_utf8_lossy(b), out),
        (Kind::Set { .. }, Wire::Bytes(b)) => {
            out.push(b'[');
            for (i, name) in b.split(|&c| c == b',').filter(|n| !n.is_empty()).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_str(&String::from_utf8_lossy(name), out);
            }
            out.push(b']');
        }
        (kind, value) => bail!("the server sent {value:?} for a column of kind {kind:?}"),
    }
    Ok(())
}

fn ascii<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8]> {
    if !bytes.iter().all(|b| b.is_ascii_graphic()) {
        bail!("the server sent a {what} value that is not plain digits: {bytes:?}");
    }
    Ok(bytes)
}

/// A key value as the server returned it, to be saved and bound back as the next chunk's bound.
pub fn key_value(value: Wire<'_>) -> KeyValue {
    match value {
        Wire::Null => KeyValue::Null,
        Wire::Int(v) => KeyValue::Int(v),
        Wire::UInt(v) => KeyValue::Uint(v),
        Wire::Float(v) => KeyValue::Float(v),
        Wire::Double(v) => KeyValue::Double(v),
        Wire::Bytes(b) => KeyValue::Bytes(b.to_vec()),
        Wire::Date(y, mo, d, h, mi, s, us) => KeyValue::Date(y, mo, d, h, mi, s, us),
        Wire::Time(neg, days, h, m, s, us) => KeyValue::Time(neg, days, h, m, s, us),
    }
}

pub fn sql_value(key: &KeyValue) -> Value {
    match key {
        KeyValue::Null => Value::NULL,
        KeyValue::Int(v) => Value::Int(*v),
        KeyValue::Uint(v) => Value::UInt(*v),
        KeyValue::Float(v) => Value::Float(*v),
        KeyValue::Double(v) => Value::Double(*v),
        KeyValue::Bytes(b) => Value::Bytes(b.clone()),
        KeyValue::Date(y, mo, d, h, mi, s, us) => Value::Date(*y, *mo, *d, *h, *mi, *s, *us),
        KeyValue::Time(neg, days, h, m, s, us) => Value::Time(*neg, *days, *h, *m, *s, *us),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(kind: Kind, value: Value) -> String {
        let mut out = Vec::new();
        write_value(&kind, &Wire::from(&value), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_render_like_the_binlog_decoder() {
        assert_eq!(
            render(Kind::Timestamp2 { fsp: 3 }, Value::Date(2024, 1, 1, 0, 0, 0, 500_000)),
            "\"2024-01-01T00:00:00.500Z\""
        );
        assert_eq!(render(Kind::Timestamp2 { fsp: 0 }, Value::Date(0, 0, 0, 0, 0, 0, 0)), "\"0000-00-00T00:00:00Z\"");
        assert_eq!(render(Kind::Time2 { fsp: 2 }, Value::Time(true, 34, 22, 59, 59, 990_000)), "\"-838:59:59.99\"");
        assert_eq!(render(Kind::Bit { bytes: 1, bits: 5 }, Value::Bytes(vec![0x1f])), "31");
        assert_eq!(
            render(Kind::Set { bytes: 1, names: None }, Value::Bytes(b"red,blue".to_vec())),
            "[\"red\",\"blue\"]"
        );
        assert_eq!(render(Kind::Set { bytes: 1, names: None }, Value::Bytes(Vec::new())), "[]");
        assert_eq!(render(Kind::Decimal { precision: 5, scale: 2 }, Value::Bytes(b"-999.99".to_vec())), "\"-999.99\"");
        let mut out = Vec::new();
        assert!(write_value(&Kind::Date, &Wire::Int(3), &mut out).is_err(), "a value that does not fit is an error");
    }

    #[test]
    fn binary_rows_read_like_mysql_common() {
        use mysql_common::proto::{Binary, MyDeserialize};
        use mysql_common::row::RowDeserializer;
        use mysql_common::value::ServerSide;
        let unsigned = |t| Column::new(t).with_flags(ColumnFlags::UNSIGNED_FLAG);
        let columns: Vec<Column> = vec![
            Column::new(ColumnType::MYSQL_TYPE_TINY),
            unsigned(ColumnType::MYSQL_TYPE_SHORT),
            Column::new(ColumnType::MYSQL_TYPE_INT24),
            unsigned(ColumnType::MYSQL_TYPE_LONGLONG),
            Column::new(ColumnType::MYSQL_TYPE_LONGLONG),
            Column::new(ColumnType::MYSQL_TYPE_FLOAT),
            Column::new(ColumnType::MYSQL_TYPE_DOUBLE),
            Column::new(ColumnType::MYSQL_TYPE_DATETIME),
            Column::new(ColumnType::MYSQL_TYPE_TIME),
            Column::new(ColumnType::MYSQL_TYPE_NEWDECIMAL),
            Column::new(ColumnType::MYSQL_TYPE_BLOB),
        ];
        let theirs = |packet: &[u8]| {
            let row = RowDeserializer::<ServerSide, Binary>::deserialize(
                columns.clone().into(),
                &mut mysql_common::io::ParseBuf(packet),
            );
            row.ok().map(|row| mysql_common::row::Row::from(row).unwrap())
        };
        let ours = |packet: &[u8]| {
            let mut values = Vec::new();
            let read = read_binary_row(packet, &columns, |_, v| {
                values.push(format!("{v:?}"));
                Ok(())
            });
            read.ok().map(|_| values)
        };
        // A row as the server sends it: header, NULL bitmap (the NEWDECIMAL is NULL), values.
        let mut row = vec![0x00, 0x00, 0x08];
        row.extend([0xff, 0x34, 0x12, 0xfe, 0xff, 0xff, 0xff]);
        row.extend(u64::MAX.to_le_bytes());
        row.extend((-2i64).to_le_bytes());
        row.extend(1.5f32.to_le_bytes());
        row.extend((-0.25f64).to_le_bytes());
        row.extend([11, 0xe8, 0x07, 2, 29, 23, 59, 58, 0x40, 0xe2, 0x01, 0x00]);
        row.extend([8, 1, 3, 0, 0, 0, 4, 5, 6]);
        row.extend([3, b'a', b'"', 0xff]);
        let expected = theirs(&row).expect("a well-formed row");
        let expected: Vec<String> = expected.iter().map(|v| format!("{:?}", Wire::from(v))).collect();
        assert_eq!(ours(&row), Some(expected));
        // Cut or corrupted anywhere, a row is read as mysql_common reads it, or is an error: never
        // a panic, never a value mysql_common would not read.
        for cut in 0..row.len() {
            assert_eq!(ours(&row[..cut]).is_some(), theirs(&row[..cut]).is_some(), "cut at {cut}");
        }
        for at in 0..row.len() {
            for byte in [0x00, 0x01, 0x07, 0x0b, 0x0c, 0x80, 0xfb, 0xfc, 0xfe, 0xff] {
                let mut bad = row.clone();
                bad[at] = byte;
                if let (Some(ours), Some(theirs)) = (ours(&bad), theirs(&bad)) {
                    let theirs: Vec<String> = theirs.iter().map(|v| format!("{:?}", Wire::from(v))).collect();
                    assert_eq!(ours, theirs, "byte {at} set to {byte:#x}");
                }
            }
        }
    }

    #[test]
    fn keys_round_trip() {
        for v in [
            Value::Int(-3),
            Value::UInt(u64::MAX),
            Value::Bytes(b"a\xff".to_vec()),
            Value::Date(2024, 2, 29, 1, 2, 3, 4),
            Value::Time(true, 1, 2, 3, 4, 5),
        ] {
            assert_eq!(sql_value(&key_value(Wire::from(&v))), v);
        }
    }
}
