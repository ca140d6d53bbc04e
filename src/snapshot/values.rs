//! Values read by a snapshot's SELECT (binary protocol, `character_set_results=binary`,
//! `time_zone='+00:00'`) written as the JSON the binlog decoder prints for the same value.
//!
//! Invariants: every value goes through the decoder's own writers (dates, times, floats, text by
//! the column's charset, base64), so a `read` event's `after` is byte for byte the `after` of an
//! `insert` of the same row; a value whose wire type does not fit its column is an error, never a
//! guess.

use anyhow::{bail, Context, Result};
use mysql_async::Value;

use crate::decode::value::{write_date_value, write_datetime, write_f32, write_f64, write_time_value};
use crate::position::KeyValue;
use crate::schema::Kind;
use crate::text::{write_json_str, TextEncoding};

/// Appends the JSON text of `value`, a value of a column of kind `kind`.
pub fn write_value(kind: &Kind, value: &Value, out: &mut Vec<u8>) -> Result<()> {
    if *value == Value::NULL {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    match (kind, value) {
        (Kind::Int { .. } | Kind::Year, Value::Int(v)) => {
            out.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes())
        }
        (Kind::Int { .. } | Kind::Year, Value::UInt(v)) => {
            out.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes())
        }
        (Kind::Float, Value::Float(v)) => write_f32(*v, out),
        (Kind::Double, Value::Double(v)) => write_f64(*v, out),
        (Kind::Decimal { .. }, Value::Bytes(digits)) => {
            // The server prints DECIMAL with exactly its declared scale, like the binlog decoder.
            out.push(b'"');
            out.extend_from_slice(ascii(digits, "DECIMAL")?);
            out.push(b'"');
        }
        (Kind::Date, Value::Date(y, m, d, ..)) => write_date_value(out, u64::from(*y), u64::from(*m), u64::from(*d)),
        (Kind::DateTime2 { fsp } | Kind::Timestamp2 { fsp }, Value::Date(y, mo, d, h, mi, s, us)) => write_datetime(
            out,
            (u64::from(*y), u64::from(*mo), u64::from(*d)),
            (u64::from(*h), u64::from(*mi), u64::from(*s)),
            u64::from(*us),
            *fsp,
            matches!(kind, Kind::Timestamp2 { .. }),
        ),
        (Kind::Time2 { fsp }, Value::Time(neg, days, h, m, s, us)) => write_time_value(
            out,
            *neg,
            u64::from(*days) * 24 + u64::from(*h),
            u64::from(*m),
            u64::from(*s),
            u64::from(*us),
            *fsp,
        ),
        (Kind::Str { text, .. } | Kind::Blob { text, .. }, Value::Bytes(b)) => text.write_json(b, out)?,
        // The server returns BINARY(n) with its trailing zero bytes, as the decoder restores them.
        (Kind::FixedBinary { .. }, Value::Bytes(b)) => TextEncoding::Binary.write_json(b, out)?,
        (Kind::Json { .. }, Value::Bytes(b)) => {
            let doc: serde_json::Value =
                serde_json::from_slice(b).context("the server returned a JSON column that is not JSON")?;
            serde_json::to_writer(&mut *out, &doc)?;
        }
        // The server sends geometry as stored: a 4-byte SRID, then the WKB.
        (Kind::Geometry { .. }, Value::Bytes(b)) => {
            TextEncoding::Binary.write_json(b.get(4..).unwrap_or_default(), out)?
        }
        (Kind::Vector { .. }, Value::Bytes(b)) => {
            out.push(b'[');
            for (i, c) in b.chunks_exact(4).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_f32(f32::from_le_bytes(c.try_into().expect("4 bytes")), out);
            }
            out.push(b']');
        }
        (Kind::Bit { .. }, Value::Bytes(b)) => {
            if b.len() > 8 {
                bail!("a BIT value of {} bytes", b.len());
            }
            let v = b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
            out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        }
        // ENUM and SET names as the decoder reads them from the binlog's metadata.
        (Kind::Enum { .. }, Value::Bytes(b)) => write_json_str(&String::from_utf8_lossy(b), out),
        (Kind::Set { .. }, Value::Bytes(b)) => {
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
pub fn key_value(value: &Value) -> KeyValue {
    match value {
        Value::NULL => KeyValue::Null,
        Value::Int(v) => KeyValue::Int(*v),
        Value::UInt(v) => KeyValue::Uint(*v),
        Value::Float(v) => KeyValue::Float(*v),
        Value::Double(v) => KeyValue::Double(*v),
        Value::Bytes(b) => KeyValue::Bytes(b.clone()),
        Value::Date(y, mo, d, h, mi, s, us) => KeyValue::Date(*y, *mo, *d, *h, *mi, *s, *us),
        Value::Time(neg, days, h, m, s, us) => KeyValue::Time(*neg, *days, *h, *m, *s, *us),
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
        write_value(&kind, &value, &mut out).unwrap();
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
        assert!(write_value(&Kind::Date, &Value::Int(3), &mut out).is_err(), "a value that does not fit is an error");
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
            assert_eq!(sql_value(&key_value(&v)), v);
        }
    }
}
