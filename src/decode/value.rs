//! Column values from the binlog's row format, written straight into JSON text.
//!
//! Invariants: every read is bounds-checked against the row bytes (malformed input is an error,
//! never a panic or a read past the event); every value is exact — unsigned integers stay
//! unsigned, DECIMAL keeps every digit as a string, zero dates stay zero, text is decoded by its
//! column's charset. The mapping is the event contract documented in docs/events.md.

use mysql_common::binlog::jsonb;
use mysql_common::io::ParseBuf;

use crate::schema::Kind;
use crate::text::{write_json_str, TextEncoding, ValueError};

/// A read cursor over one rows event's row data.
pub struct Cursor<'a> {
    pub data: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ValueError> {
        let have = self.data.len() - self.pos;
        if n > have {
            return Err(ValueError::Short { need: n, have });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn uint_le(&mut self, n: usize) -> Result<u64, ValueError> {
        Ok(self.take(n)?.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn uint_be(&mut self, n: usize) -> Result<u64, ValueError> {
        Ok(be(self.take(n)?))
    }

    /// MySQL's length-encoded integer.
    pub fn lenenc(&mut self) -> Result<u64, ValueError> {
        match self.take(1)?[0] {
            n @ 0..=250 => Ok(u64::from(n)),
            0xfc => self.uint_le(2),
            0xfd => self.uint_le(3),
            0xfe => self.uint_le(8),
            b => Err(ValueError::Invalid(format!("bad length-encoded integer prefix {b:#x}"))),
        }
    }
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// How to decode one column, prepared once per table map.
/// Appends the JSON text of the value at the cursor.
pub fn write_value(kind: &Kind, cur: &mut Cursor<'_>, out: &mut Vec<u8>) -> Result<(), ValueError> {
    match kind {
        Kind::Int { bytes, unsigned } => {
            let n = *bytes as usize;
            let raw = cur.uint_le(n)?;
            let mut buf = itoa::Buffer::new();
            if *unsigned {
                out.extend_from_slice(buf.format(raw).as_bytes());
            } else {
                let shift = 64 - 8 * n as u32;
                let signed = ((raw << shift) as i64) >> shift;
                out.extend_from_slice(buf.format(signed).as_bytes());
            }
        }
        Kind::Float => write_f32(f32::from_le_bytes(cur.take(4)?.try_into().expect("4 bytes")), out),
        Kind::Double => write_f64(f64::from_le_bytes(cur.take(8)?.try_into().expect("8 bytes")), out),
        Kind::Decimal { precision, scale } => {
            out.push(b'"');
            write_decimal(cur, *precision, *scale, out)?;
            out.push(b'"');
        }
        Kind::Year => {
            let y = cur.uint_le(1)?;
            let year = if y == 0 { 0 } else { 1900 + y };
            out.extend_from_slice(itoa::Buffer::new().format(year).as_bytes());
        }
        Kind::Date => {
            let v = cur.uint_le(3)?;
            write_date_value(out, v >> 9, (v >> 5) & 15, v & 31);
        }
        Kind::OldTime => {
            let raw = cur.uint_le(3)?;
            let v = ((raw << 40) as i64) >> 40;
            let a = v.unsigned_abs();
            write_time_value(out, v < 0, a / 10000, (a / 100) % 100, a % 100, 0, 0);
        }
        Kind::OldDateTime => {
            let v = cur.uint_le(8)?;
            let (d, t) = (v / 1_000_000, v % 1_000_000);
            write_datetime(
                out,
                (d / 10000, (d / 100) % 100, d % 100),
                (t / 10000, (t / 100) % 100, t % 100),
                0,
                0,
                false,
            );
        }
        Kind::OldTimestamp => {
            let secs = cur.uint_le(4)?;
            write_timestamp(out, secs, 0, 0);
        }
        Kind::Time2 { fsp } => {
            let packed = read_time2(cur, *fsp)?;
            let neg = packed < 0;
            let a = packed.unsigned_abs();
            let hms = a >> 24;
            let frac = a % (1 << 24);
            write_time_value(out, neg, (hms >> 12) % (1 << 10), (hms >> 6) % 64, hms % 64, frac, *fsp);
        }
        Kind::DateTime2 { fsp } => {
            let int_part = cur.uint_be(5)? as i64 - 0x80_0000_0000;
            let frac = read_frac(cur, *fsp)?;
            if int_part < 0 {
                return Err(ValueError::Invalid("negative DATETIME".into()));
            }
            let int_part = int_part as u64;
            let ymd = int_part >> 17;
            let ym = ymd >> 5;
            let hms = int_part % (1 << 17);
            write_datetime(
                out,
                (ym / 13, ym % 13, ymd % 32),
                (hms >> 12, (hms >> 6) % 64, hms % 64),
                frac,
                *fsp,
                false,
            );
        }
        Kind::Timestamp2 { fsp } => {
            let secs = cur.uint_be(4)?;
            let frac = read_frac(cur, *fsp)?;
            write_timestamp(out, secs, frac, *fsp);
        }
        Kind::Str { len_bytes, text } | Kind::Blob { len_bytes, text } => {
            let len = cur.uint_le(*len_bytes as usize)? as usize;
            text.write_json(cur.take(len)?, out)?;
        }
        Kind::FixedBinary { len_bytes, width } => {
            let len = cur.uint_le(*len_bytes as usize)? as usize;
            let raw = cur.take(len)?;
            if raw.len() < *width as usize {
                let mut padded = raw.to_vec();
                padded.resize(*width as usize, 0);
                TextEncoding::Binary.write_json(&padded, out)?;
            } else {
                TextEncoding::Binary.write_json(raw, out)?;
            }
        }
        Kind::Json { len_bytes } => {
            let len = cur.uint_le(*len_bytes as usize)? as usize;
            write_jsonb(cur.take(len)?, out)?;
        }
        Kind::Geometry { len_bytes } => {
            let len = cur.uint_le(*len_bytes as usize)? as usize;
            let raw = cur.take(len)?;
            // MySQL stores a 4-byte SRID before the WKB.
            TextEncoding::Binary.write_json(raw.get(4..).unwrap_or_default(), out)?;
        }
        Kind::Vector { len_bytes } => {
            let len = cur.uint_le(*len_bytes as usize)? as usize;
            let raw = cur.take(len)?;
            out.push(b'[');
            for (i, c) in raw.chunks_exact(4).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let v = f32::from_le_bytes(c.try_into().expect("4 bytes"));
                write_float(v.is_finite(), || ryu::Buffer::new().format_finite(v).to_owned(), out);
            }
            out.push(b']');
        }
        Kind::Bit { bytes, .. } => {
            let v = cur.uint_be(*bytes as usize)?;
            out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        }
        Kind::Enum { bytes, names } => {
            let idx = cur.uint_le(*bytes as usize)?;
            match names {
                None => out.extend_from_slice(itoa::Buffer::new().format(idx).as_bytes()),
                Some(_) if idx == 0 => out.extend_from_slice(b"\"\""),
                Some(names) => {
                    let name = names.get(idx as usize - 1).ok_or_else(|| {
                        ValueError::Invalid(format!("ENUM index {idx} but only {} values", names.len()))
                    })?;
                    write_json_str(name, out);
                }
            }
        }
        Kind::Set { bytes, names } => {
            let bits = cur.uint_le(*bytes as usize)?;
            match names {
                None => out.extend_from_slice(itoa::Buffer::new().format(bits).as_bytes()),
                Some(names) if names.len() > 64 => {
                    return Err(ValueError::Invalid(format!("SET with {} values (at most 64 exist)", names.len())));
                }
                Some(names) => {
                    if names.len() < 64 && bits >> names.len() != 0 {
                        return Err(ValueError::Invalid(format!(
                            "SET bitmask {bits:#x} has bits beyond its {} values",
                            names.len()
                        )));
                    }
                    out.push(b'[');
                    let mut first = true;
                    for (i, name) in names.iter().enumerate() {
                        if bits & (1 << i) != 0 {
                            if !first {
                                out.push(b',');
                            }
                            first = false;
                            write_json_str(name, out);
                        }
                    }
                    out.push(b']');
                }
            }
        }
    }
    Ok(())
}

/// FLOAT as the shortest text that reads back as the same f32; NaN and infinities as null.
pub fn write_f32(v: f32, out: &mut Vec<u8>) {
    write_float(v.is_finite(), || ryu::Buffer::new().format_finite(v).to_owned(), out);
}

pub fn write_f64(v: f64, out: &mut Vec<u8>) {
    write_float(v.is_finite(), || ryu::Buffer::new().format_finite(v).to_owned(), out);
}

fn write_float(finite: bool, text: impl FnOnce() -> String, out: &mut Vec<u8>) {
    if finite {
        out.extend_from_slice(text().as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A binary JSON document (MySQL's JSON type) as JSON text.
pub fn write_jsonb(raw: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    if raw.is_empty() {
        // MySQL writes an empty value for a JSON null produced by some statements.
        out.extend_from_slice(b"null");
        return Ok(());
    }
    check_jsonb(raw)?;
    let value: jsonb::Value<'_> =
        ParseBuf(raw).parse(()).map_err(|e| ValueError::Invalid(format!("bad binary JSON: {e}")))?;
    let dom = value.parse().map_err(|e| ValueError::Invalid(format!("bad binary JSON: {e}")))?;
    let dom: serde_json::Value = dom.into();
    serde_json::to_writer(&mut *out, &dom).map_err(|e| ValueError::Invalid(e.to_string()))
}

/// Deeper than any document MySQL stores (its limit is 100 levels).
const MAX_JSON_DEPTH: usize = 150;

/// Walks a binary JSON document's containers the way mysql_common's recursive parser will, and
/// refuses what would make it overflow the stack (nesting beyond `MAX_JSON_DEPTH`) or do more
/// work than the bytes justify: entries, keys and strings that several entries share would be
/// expanded once per entry, exponentially in the depth. A document MySQL wrote stores each once,
/// so their total never exceeds its length.
pub fn check_jsonb(raw: &[u8]) -> Result<(), ValueError> {
    let Some((&type_code, data)) = raw.split_first() else { return Ok(()) };
    let mut budget = raw.len();
    walk_jsonb(type_code, data, 0, &mut budget)
}

fn walk_jsonb(type_code: u8, data: &[u8], depth: usize, budget: &mut usize) -> Result<(), ValueError> {
    const STRING: u8 = 0x0c;
    const OPAQUE: u8 = 0x0f;
    fn spend(budget: &mut usize, n: usize) -> Result<(), ValueError> {
        *budget = budget.checked_sub(n).ok_or_else(|| {
            ValueError::Invalid("bad binary JSON: entries, keys or strings are shared or overlap".into())
        })?;
        Ok(())
    }
    let (large, object) = match type_code {
        0 => (false, true),
        1 => (true, true),
        2 => (false, false),
        3 => (true, false),
        STRING => return spend(budget, jsonb_varlen(data).map_or(0, |(len, _)| len)),
        OPAQUE => return spend(budget, check_opaque(data)?),
        _ => return Ok(()),
    };
    if depth >= MAX_JSON_DEPTH {
        return Err(ValueError::Invalid(format!("binary JSON nested deeper than {MAX_JSON_DEPTH} levels")));
    }
    // Offsets and counts are 2 bytes in small containers, 4 in large ones. Whatever is
    // inconsistent is left for mysql_common to report: only what it would recurse into matters.
    let width = if large { 4 } else { 2 };
    let offset =
        |b: &[u8], at: usize| b.get(at..at + width).map(|b| b.iter().rev().fold(0usize, |a, &x| (a << 8) | x as usize));
    let (Some(count), Some(bytes)) = (offset(data, 0), offset(data, width)) else { return Ok(()) };
    let Some(container) = data.get(..bytes) else { return Ok(()) };
    let key_entries = if object { count * (width + 2) } else { 0 };
    if 2 * width + key_entries + count * (width + 1) > bytes {
        return Ok(());
    }
    for pos in 0..count {
        spend(budget, 1)?;
        if object {
            let key = 2 * width + (width + 2) * pos;
            spend(
                budget,
                container.get(key + width..key + width + 2).map_or(0, |l| u16::from_le_bytes([l[0], l[1]]) as usize),
            )?;
        }
        let entry = 2 * width + key_entries + (width + 1) * pos;
        let child_type = container[entry];
        let inlined = matches!(child_type, 4..=6) || (large && matches!(child_type, 7 | 8));
        if inlined {
            continue;
        }
        // As mysql_common requires: a child starts after its own entry, within the container.
        match offset(container, entry + 1) {
            Some(at) if at <= container.len() && at > entry + width => {
                walk_jsonb(child_type, &container[at..], depth + 1, budget)?
            }
            _ => {}
        }
    }
    Ok(())
}

/// The length prefix of a binary JSON string or opaque value, 7 bits per byte, low bits first:
/// (length, bytes of the prefix), or None when it does not end within 5 bytes.
fn jsonb_varlen(data: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for (i, &b) in data.iter().take(5).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((len, i + 1));
        }
    }
    None
}

/// Checks a binary JSON opaque value (a MySQL column type, then that type's binary form) the way
/// MySQL writes it, and returns its length. mysql_common decodes DECIMAL and the temporal types
/// itself and trusts their bytes: a hostile precision made it allocate exabytes, a hostile digit
/// or packed value overflows its arithmetic. Other types it only copies.
fn check_opaque(data: &[u8]) -> Result<usize, ValueError> {
    const TIMESTAMP: u8 = 7;
    const DATE: u8 = 10;
    const TIME: u8 = 11;
    const DATETIME: u8 = 12;
    const NEWDECIMAL: u8 = 246;
    let bad = |what: String| ValueError::Invalid(format!("bad binary JSON: {what}"));
    let Some((&field_type, rest)) = data.split_first() else { return Err(bad("opaque value without a type".into())) };
    let (len, prefix) = jsonb_varlen(rest).ok_or_else(|| bad("opaque value without a length".into()))?;
    let value = rest
        .get(prefix..prefix + len)
        .ok_or_else(|| bad(format!("opaque value of {len} bytes in the {} bytes left", rest.len() - prefix)))?;
    match field_type {
        NEWDECIMAL => {
            let [precision, scale, packed @ ..] = value else {
                return Err(bad(format!("opaque DECIMAL of {len} bytes")));
            };
            // MySQL's limits (MariaDB stores JSON as text): scale 30 on top of the column's.
            let size = decimal_size(*precision, *scale)
                .ok()
                .filter(|_| *scale <= 30)
                .ok_or_else(|| bad(format!("opaque DECIMAL({precision},{scale}) is impossible")))?;
            if packed.len() != size {
                return Err(bad(format!("opaque DECIMAL({precision},{scale}) of {} bytes, not {size}", packed.len())));
            }
            write_decimal(&mut Cursor::new(packed), *precision, *scale, &mut Vec::new())
                .map_err(|e| bad(format!("opaque {e}")))?;
        }
        TIMESTAMP | DATE | TIME | DATETIME => {
            // A packed i64; mysql_common negates negative ones, which overflows at i64::MIN.
            let packed = <[u8; 8]>::try_from(value)
                .map_err(|_| bad(format!("opaque temporal value (type {field_type}) of {len} bytes, not 8")))?;
            if i64::from_le_bytes(packed) == i64::MIN {
                return Err(bad(format!("impossible packed temporal value (type {field_type})")));
            }
        }
        _ => {}
    }
    Ok(len)
}

const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// The bytes of a packed DECIMAL(precision, scale): 9 digits per 4 bytes, the rest by
/// `DIG2BYTES`; an error for a pair no server allows.
fn decimal_size(precision: u8, scale: u8) -> Result<usize, ValueError> {
    if scale > precision || precision == 0 || precision > 65 {
        return Err(ValueError::Invalid(format!("DECIMAL({precision},{scale}) is impossible")));
    }
    let intg = (precision - scale) as usize;
    let scale = scale as usize;
    Ok(intg / 9 * 4 + DIG2BYTES[intg % 9] + scale / 9 * 4 + DIG2BYTES[scale % 9])
}

/// MySQL's packed DECIMAL: 9 digits per 4 bytes, sign in the top bit, negatives inverted. A group
/// holding more digits than its place (no server writes one) is an error, as in MySQL.
fn write_decimal(cur: &mut Cursor<'_>, precision: u8, scale: u8, out: &mut Vec<u8>) -> Result<(), ValueError> {
    let raw = cur.take(decimal_size(precision, scale)?)?;
    let intg = (precision - scale) as usize;
    let (intg0, intg0x) = (intg / 9, intg % 9);
    let (frac0, frac0x) = (scale as usize / 9, scale as usize % 9);
    let negative = raw[0] & 0x80 == 0;
    let mask: u8 = if negative { 0xff } else { 0 };
    let mut bytes = [0u8; 40];
    for (dst, src) in bytes.iter_mut().zip(raw) {
        *dst = src ^ mask;
    }
    bytes[0] ^= 0x80;
    let mut pos = 0;
    // The next group of `digits` digits.
    let mut group = |digits: usize| {
        let n = DIG2BYTES[digits];
        let v = be(&bytes[pos..pos + n]);
        pos += n;
        if v >= 10u64.pow(digits as u32) {
            return Err(ValueError::Invalid(format!(
                "DECIMAL({precision},{scale}) has a group of more than {digits} digits"
            )));
        }
        Ok(v)
    };
    let start = out.len();
    if negative {
        out.push(b'-');
    }
    let digits_start = out.len();
    if intg0x > 0 {
        push_padded(out, group(intg0x)?, intg0x);
    }
    for _ in 0..intg0 {
        push_padded(out, group(9)?, 9);
    }
    let leading_zeros = out[digits_start..].iter().take_while(|&&b| b == b'0').count();
    out.drain(digits_start..digits_start + leading_zeros);
    if out.len() == digits_start {
        out.push(b'0');
    }
    if scale > 0 {
        out.push(b'.');
        for _ in 0..frac0 {
            push_padded(out, group(9)?, 9);
        }
        if frac0x > 0 {
            push_padded(out, group(frac0x)?, frac0x);
        }
    }
    let all_zero = out[digits_start..].iter().all(|&b| b == b'0' || b == b'.');
    if negative && all_zero {
        out.remove(start); // "-0.00" is written as "0.00"
    }
    Ok(())
}

/// TIME2 as MySQL's packed form: integer part << 24 | microseconds, signed.
fn read_time2(cur: &mut Cursor<'_>, fsp: u8) -> Result<i64, ValueError> {
    // Fractional bytes and the factor to microseconds, by precision.
    let (frac_bytes, to_micros) = match fsp {
        0 => return Ok((cur.uint_be(3)? as i64 - 0x80_0000) << 24),
        1 | 2 => (1, 10_000),
        3 | 4 => (2, 100),
        5 | 6 => return Ok(cur.uint_be(6)? as i64 - 0x8000_0000_0000),
        _ => return Err(ValueError::Invalid(format!("TIME({fsp}) is impossible"))),
    };
    let mut int_part = cur.uint_be(3)? as i64 - 0x80_0000;
    let mut frac = cur.uint_be(frac_bytes)? as i64;
    if int_part < 0 && frac != 0 {
        // Negative times store the fraction as a complement of the next whole second.
        int_part += 1;
        frac -= 1 << (8 * frac_bytes);
    }
    Ok((int_part << 24) + frac * to_micros)
}

/// Fractional seconds of DATETIME2/TIMESTAMP2, in microseconds.
fn read_frac(cur: &mut Cursor<'_>, fsp: u8) -> Result<u64, ValueError> {
    match fsp {
        0 => Ok(0),
        1 | 2 => Ok(cur.uint_be(1)? * 10000),
        3 | 4 => Ok(cur.uint_be(2)? * 100),
        5 | 6 => cur.uint_be(3),
        _ => Err(ValueError::Invalid(format!("fractional seconds precision {fsp} is impossible"))),
    }
}

/// `v` in decimal, zero-padded to `width` digits.
/// `v` in decimal with at least `width` digits (zeros in front).
fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    // Dates and times are fields of 2 and 4 digits: written whole, without a formatting buffer.
    let two = |v: u64| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    match width {
        2 if v < 100 => return out.extend_from_slice(&two(v)),
        4 if v < 10_000 => {
            let ([a, b], [c, d]) = (two(v / 100), two(v % 100));
            return out.extend_from_slice(&[a, b, c, d]);
        }
        // Fractions of a second, decimal digit groups.
        1..=9 if v < 10u64.pow(width as u32) => {
            let mut digits = [b'0'; 9];
            let mut v = v;
            for d in digits[9 - width..].iter_mut().rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
            return out.extend_from_slice(&digits[9 - width..]);
        }
        _ => {}
    }
    let mut buf = itoa::Buffer::new();
    let s = buf.format(v);
    for _ in s.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(s.as_bytes());
}

/// Fills `digits` with the last `digits.len()` decimal digits of `v`, two at a time.
fn put_digits(digits: &mut [u8], mut v: u64) {
    let mut end = digits.len();
    while end >= 2 {
        let pair = (v % 100) as usize * 2;
        digits[end - 2..end].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        v /= 100;
        end -= 2;
    }
    if end == 1 {
        digits[0] = b'0' + (v % 10) as u8;
    }
}

/// "00", "01", ... "99".
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut n = 0;
    while n < 100 {
        pairs[2 * n] = b'0' + (n / 10) as u8;
        pairs[2 * n + 1] = b'0' + (n % 10) as u8;
        n += 1;
    }
    pairs
};

fn write_date(out: &mut Vec<u8>, y: u64, m: u64, d: u64) {
    push_padded(out, y, 4);
    out.push(b'-');
    push_padded(out, m, 2);
    out.push(b'-');
    push_padded(out, d, 2);
}

fn write_hms(out: &mut Vec<u8>, h: u64, m: u64, s: u64) {
    push_padded(out, h, 2);
    out.push(b':');
    push_padded(out, m, 2);
    out.push(b':');
    push_padded(out, s, 2);
}

fn write_frac(out: &mut Vec<u8>, micros: u64, fsp: u8) {
    if fsp > 0 {
        out.push(b'.');
        push_padded(out, micros / 10u64.pow(6 - u32::from(fsp.min(6))), fsp as usize);
    }
}

/// `"YYYY-MM-DD"`.
pub fn write_date_value(out: &mut Vec<u8>, y: u64, m: u64, d: u64) {
    out.push(b'"');
    write_date(out, y, m, d);
    out.push(b'"');
}

/// `"[-]HHH:MM:SS[.fff]"` with `fsp` fractional digits (TIME).
pub fn write_time_value(out: &mut Vec<u8>, neg: bool, h: u64, m: u64, s: u64, micros: u64, fsp: u8) {
    out.push(b'"');
    if neg {
        out.push(b'-');
    }
    write_hms(out, h, m, s);
    write_frac(out, micros, fsp);
    out.push(b'"');
}

/// `"YYYY-MM-DDTHH:MM:SS[.fff]"` with `fsp` fractional digits, and `Z` for UTC (TIMESTAMP).
pub fn write_datetime(out: &mut Vec<u8>, ymd: (u64, u64, u64), hms: (u64, u64, u64), micros: u64, fsp: u8, utc: bool) {
    // Every field within its width (always, but for a corrupt value): filled in on the stack.
    if ymd.0 < 10_000 && ymd.1.max(ymd.2).max(hms.0).max(hms.1).max(hms.2) < 100 && micros < 1_000_000 && fsp <= 6 {
        let mut text = *b"\"0000-00-00T00:00:00.000000";
        for (at, width, v) in
            [(1, 4, ymd.0), (6, 2, ymd.1), (9, 2, ymd.2), (12, 2, hms.0), (15, 2, hms.1), (18, 2, hms.2)]
        {
            put_digits(&mut text[at..at + width], v);
        }
        // The first `fsp` of the six digits of `micros`: its value truncated to `fsp` digits.
        let frac = usize::from(fsp);
        put_digits(&mut text[21..27], micros);
        out.extend_from_slice(&text[..if frac > 0 { 21 + frac } else { 20 }]);
        out.extend_from_slice(if utc { b"Z\"" } else { b"\"" });
        return;
    }
    out.push(b'"');
    write_date(out, ymd.0, ymd.1, ymd.2);
    out.push(b'T');
    write_hms(out, hms.0, hms.1, hms.2);
    write_frac(out, micros, fsp);
    out.extend_from_slice(if utc { b"Z\"" } else { b"\"" });
}

/// TIMESTAMP as UTC; MySQL's zero timestamp stays zero.
fn write_timestamp(out: &mut Vec<u8>, secs: u64, micros: u64, fsp: u8) {
    if secs == 0 && micros == 0 {
        write_datetime(out, (0, 0, 0), (0, 0, 0), 0, fsp, true);
    } else {
        let (y, m, d) = civil_from_days((secs / 86400) as i64);
        let rem = secs % 86400;
        write_datetime(out, (y as u64, m, d), (rem / 3600, (rem / 60) % 60, rem % 60), micros, fsp, true);
    }
}

fn write_utc_seconds(out: &mut Vec<u8>, secs: u64) {
    let (y, m, d) = civil_from_days((secs / 86400) as i64);
    let rem = secs % 86400;
    write_date(out, y as u64, m, d);
    out.push(b'T');
    write_hms(out, rem / 3600, (rem / 60) % 60, rem % 60);
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_utc(secs: u64) -> String {
    let mut out = Vec::with_capacity(20);
    write_utc_seconds(&mut out, secs);
    out.push(b'Z');
    String::from_utf8(out).expect("ASCII")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u64, u64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(kind: &Kind, bytes: &[u8]) -> String {
        let mut out = Vec::new();
        let mut cur = Cursor::new(bytes);
        write_value(kind, &mut cur, &mut out).unwrap();
        assert!(cur.is_empty(), "value did not consume all its bytes");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn integers_respect_signedness() {
        let k = |bytes, unsigned| Kind::Int { bytes, unsigned };
        assert_eq!(render(&k(1, false), &[0xff]), "-1");
        assert_eq!(render(&k(1, true), &[0xff]), "255");
        assert_eq!(render(&k(3, false), &[0x00, 0x00, 0x80]), "-8388608");
        assert_eq!(render(&k(8, true), &[0xff; 8]), "18446744073709551615");
        assert_eq!(render(&k(8, false), &[0, 0, 0, 0, 0, 0, 0, 0x80]), "-9223372036854775808");
    }

    #[test]
    fn decimals_are_exact_strings() {
        // DECIMAL(10,4) 1234.5678 and -1234.5678, per MySQL's documented packing.
        let pos = [0x80, 0x04, 0xd2, 0x16, 0x2e];
        assert_eq!(render(&Kind::Decimal { precision: 10, scale: 4 }, &pos), "\"1234.5678\"");
        let neg: Vec<u8> = pos.iter().map(|b| !b).collect();
        assert_eq!(render(&Kind::Decimal { precision: 10, scale: 4 }, &neg), "\"-1234.5678\"");
        assert_eq!(render(&Kind::Decimal { precision: 4, scale: 2 }, &[0x80, 0x00]), "\"0.00\"");
        let mut cur = Cursor::new(&[0u8; 4]);
        assert!(write_value(&Kind::Decimal { precision: 2, scale: 5 }, &mut cur, &mut Vec::new()).is_err());
    }

    #[test]
    fn temporal_values() {
        assert_eq!(render(&Kind::Year, &[0]), "0");
        assert_eq!(render(&Kind::Year, &[124]), "2024");
        assert_eq!(render(&Kind::Date, &[0, 0, 0]), "\"0000-00-00\"");
        // 2024-02-29: (2024 << 9) | (2 << 5) | 29
        let v: u32 = (2024 << 9) | (2 << 5) | 29;
        assert_eq!(render(&Kind::Date, &v.to_le_bytes()[..3]), "\"2024-02-29\"");
        assert_eq!(render(&Kind::Timestamp2 { fsp: 0 }, &[0, 0, 0, 0]), "\"0000-00-00T00:00:00Z\"");
        assert_eq!(
            render(&Kind::Timestamp2 { fsp: 3 }, &[0x65, 0x92, 0x00, 0x80, 0x13, 0x88]),
            "\"2024-01-01T00:00:00.500Z\""
        );
        // TIME(2) '-838:59:59.99' as MariaDB wrote it, and '12:00:00.5'.
        assert_eq!(render(&Kind::Time2 { fsp: 2 }, &[0x4b, 0x91, 0x04, 0x9d]), "\"-838:59:59.99\"");
        assert_eq!(render(&Kind::Time2 { fsp: 2 }, &[0x80, 0xc0, 0x00, 0x32]), "\"12:00:00.50\"");
        assert_eq!(format_utc(1_709_164_800), "2024-02-29T00:00:00Z");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn datetimes_render_whole_fields_and_fractions() {
        let dt = |ymd, hms, micros, fsp, utc| {
            let mut out = Vec::new();
            write_datetime(&mut out, ymd, hms, micros, fsp, utc);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(dt((2026, 12, 7), (3, 9, 57), 771_097, 6, false), "\"2026-12-07T03:09:57.771097\"");
        assert_eq!(dt((999, 1, 2), (23, 0, 5), 120_000, 2, true), "\"0999-01-02T23:00:05.12Z\"");
        assert_eq!(dt((2024, 2, 29), (0, 0, 0), 0, 0, false), "\"2024-02-29T00:00:00\"");
        // A field beyond its width (a corrupt value) is printed whole.
        assert_eq!(dt((12345, 1, 1), (0, 0, 0), 5, 6, false), "\"12345-01-01T00:00:00.000005\"");
    }

    /// `[]` as binary JSON: a small array of no elements and 4 bytes.
    const EMPTY_ARRAY: [u8; 5] = [2, 0, 0, 4, 0];

    /// A small binary JSON array holding `children` entries that all point at offset `at`.
    fn jsonb_array(children: u16, child_type: u8, at: u16, tail: &[u8]) -> Vec<u8> {
        let header = 4 + 3 * children;
        let size = header + tail.len() as u16;
        let mut b = [children.to_le_bytes(), size.to_le_bytes()].concat();
        for _ in 0..children {
            b.push(child_type);
            b.extend(at.to_le_bytes());
        }
        b.extend(tail);
        b
    }

    #[test]
    fn deeply_nested_binary_json_is_an_error_not_a_stack_overflow() {
        // 9,000 arrays, each the only element of the one before: mysql_common's parser would
        // recurse once per level.
        let mut doc = EMPTY_ARRAY.to_vec();
        for _ in 0..9_000 {
            let child = std::mem::take(&mut doc);
            let mut level = vec![2];
            level.extend(jsonb_array(1, child[0], 7, &child[1..]));
            doc = level;
        }
        let mut out = Vec::new();
        let err = write_jsonb(&doc, &mut out).unwrap_err().to_string();
        assert!(err.contains("nested deeper than 150 levels"), "{err}");
        // MySQL's own limit, 100 levels, still decodes.
        let nested = (0..100).fold(EMPTY_ARRAY.to_vec(), |child, _| {
            let mut level = vec![2];
            level.extend(jsonb_array(1, child[0], 7, &child[1..]));
            level
        });
        out.clear();
        write_jsonb(&nested, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("{}[]{}", "[".repeat(100), "]".repeat(100)));
    }

    #[test]
    fn shared_binary_json_entries_are_an_error_not_exponential_work() {
        // Each level holds two entries pointing at the same child: 2^40 leaves from ~400 bytes.
        let mut doc = vec![0x0c, 1, b'x']; // the string "x"
        for _ in 0..40 {
            let child = std::mem::take(&mut doc);
            let mut level = vec![2];
            level.extend(jsonb_array(2, child[0], 10, &child[1..]));
            doc = level;
        }
        let err = write_jsonb(&doc, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("shared or overlap"), "{err}");
    }

    /// Binary JSON holding one opaque value: a MySQL column type and that type's bytes.
    fn jsonb_opaque(field_type: u8, value: &[u8]) -> Vec<u8> {
        let mut doc = vec![0x0f, field_type];
        let mut len = value.len();
        while len >= 0x80 {
            doc.push(len as u8 | 0x80);
            len >>= 7;
        }
        doc.push(len as u8);
        doc.extend(value);
        doc
    }

    const NEWDECIMAL: u8 = 246;

    #[test]
    fn hostile_opaque_decimals_are_an_error_not_an_abort() {
        // Precision 5 with scale 200 made mysql_common size a buffer of exabytes ("memory
        // allocation of 8198552921648689710 bytes failed"), found in a 242-byte binlog.
        let cases: [(&[u8], &str); 7] = [
            (&[5, 200, 0x80, 0, 0], "DECIMAL(5,200) is impossible"),
            (&[0, 0, 0x80], "DECIMAL(0,0) is impossible"),
            (&[66, 0, 0x80], "DECIMAL(66,0) is impossible"),
            (&[65, 31], "DECIMAL(65,31) is impossible"),
            // DECIMAL(10,4) is 5 bytes.
            (&[10, 4, 0x80, 0x04, 0xd2, 0x16], "DECIMAL(10,4) of 4 bytes, not 5"),
            (&[10, 4, 0x80, 0x04, 0xd2, 0x16, 0x2e, 0], "DECIMAL(10,4) of 6 bytes, not 5"),
            // One fractional digit in a byte that holds 127: mysql_common's `x * 10^8` overflowed.
            (&[1, 1, 0xff], "more than 1 digits"),
        ];
        for (value, expected) in cases {
            let err = write_jsonb(&jsonb_opaque(NEWDECIMAL, value), &mut Vec::new()).unwrap_err().to_string();
            assert!(err.contains(expected), "{value:?}: {err}");
            // Inside an array, as a column's document would hold it.
            let opaque = jsonb_opaque(NEWDECIMAL, value);
            let mut doc = vec![2];
            doc.extend(jsonb_array(1, opaque[0], 7, &opaque[1..]));
            let err = write_jsonb(&doc, &mut Vec::new()).unwrap_err().to_string();
            assert!(err.contains(expected), "{value:?} in an array: {err}");
        }
        // The opaque value's length runs past the document.
        let err = write_jsonb(&[0x0f, NEWDECIMAL, 9, 10, 4, 0x80], &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("opaque value of 9 bytes"), "{err}");
    }

    #[test]
    fn opaque_values_as_mysql_writes_them_decode() {
        let mut out = Vec::new();
        write_jsonb(&jsonb_opaque(NEWDECIMAL, &[10, 4, 0x80, 0x04, 0xd2, 0x16, 0x2e]), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\"1234.5678\"");
        // 2024-02-29 12:34:56.5 packed as MySQL does: ((ymd << 17 | hms) << 24) | microseconds.
        let ymd: i64 = ((2024 * 13 + 2) << 5) | 29;
        let hms: i64 = (12 << 12) | (34 << 6) | 56;
        let datetime = (((ymd << 17) | hms) << 24) | 500_000;
        let date = (ymd << 17) << 24;
        let time = (hms << 24) | 500_000;
        for (field_type, packed, expected) in [
            (12, datetime, "2024-02-29 12:34:56.500000"), // DATETIME
            (7, datetime, "2024-02-29 12:34:56.500000"),  // TIMESTAMP
            (10, date, "2024-02-29"),                     // DATE
            (11, time, "12:34:56.500000"),                // TIME
            (11, -time, "-12:34:56.500000"),
        ] {
            let mut out = Vec::new();
            write_jsonb(&jsonb_opaque(field_type, &packed.to_le_bytes()), &mut out).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"{expected}\""), "type {field_type}");
        }
        // Other types are kept as their bytes (mysql_common's `base64:type<N>:` form).
        let mut out = Vec::new();
        write_jsonb(&jsonb_opaque(252, b"\x01\x02"), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\"base64:type252:AQI=\"");
    }

    #[test]
    fn hostile_opaque_temporals_are_an_error_not_a_panic() {
        for field_type in [7, 10, 11, 12] {
            // mysql_common negates a negative packed value: i64::MIN overflowed.
            let err = write_jsonb(&jsonb_opaque(field_type, &i64::MIN.to_le_bytes()), &mut Vec::new()).unwrap_err();
            assert!(err.to_string().contains("impossible packed"), "type {field_type}: {err}");
            for len in [0, 7, 9] {
                let err = write_jsonb(&jsonb_opaque(field_type, &vec![0; len]), &mut Vec::new()).unwrap_err();
                assert!(err.to_string().contains(&format!("of {len} bytes, not 8")), "type {field_type}: {err}");
            }
        }
    }

    #[test]
    fn a_set_beyond_64_values_is_an_error_not_a_shift_overflow() {
        let names = Some((0..65).map(|i| format!("v{i}")).collect());
        let mut cur = Cursor::new(&[0xff; 8]);
        let err = write_value(&Kind::Set { bytes: 8, names }, &mut cur, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("SET with 65 values"), "{err}");
    }

    #[test]
    fn short_data_is_an_error_not_a_panic() {
        for kind in [
            Kind::Int { bytes: 8, unsigned: false },
            Kind::Decimal { precision: 65, scale: 30 },
            Kind::DateTime2 { fsp: 6 },
            Kind::Blob { len_bytes: 4, text: TextEncoding::Utf8 },
            Kind::Json { len_bytes: 4 },
        ] {
            let mut cur = Cursor::new(&[0x10, 0, 0]);
            assert!(write_value(&kind, &mut cur, &mut Vec::new()).is_err(), "{kind:?}");
        }
    }
}
