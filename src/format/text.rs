//! Reading the native JSON text of a value back into the parts other formats need: the text of a
//! string literal, dates and times as numbers, SET arrays as joined text.
//!
//! Invariants: the input is always text the decoder wrote (its shapes are docs/events.md's value
//! table), but nothing here panics on other input: a shape that does not parse yields `None`,
//! and the callers then write `null`.

use crate::text::write_json_str;

/// The content of a JSON string literal (still escaped), or None for any other JSON value.
pub fn inner(v: &[u8]) -> Option<&[u8]> {
    match v {
        [b'"', rest @ .., b'"'] => Some(rest),
        _ => None,
    }
}

/// Appends the value as a JSON string: strings as they are, anything else (numbers, arrays,
/// objects) as its JSON text inside a string; `null` stays null.
pub fn write_as_string(v: &[u8], out: &mut Vec<u8>) {
    if v == b"null" || inner(v).is_some() {
        out.extend_from_slice(v);
    } else if v.iter().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')) {
        // A number: nothing in it needs escaping.
        out.push(b'"');
        out.extend_from_slice(v);
        out.push(b'"');
    } else {
        write_json_str(&String::from_utf8_lossy(v), out);
    }
}

/// A JSON array of strings (a SET) as one string of its members joined by commas, the way
/// MySQL writes a SET value; anything else as [`write_as_string`] does.
pub fn write_set_joined(v: &[u8], out: &mut Vec<u8>) {
    let Some(items) = v.strip_prefix(b"[").and_then(|v| v.strip_suffix(b"]")) else {
        return write_as_string(v, out);
    };
    out.push(b'"');
    let mut in_string = false;
    let mut escaped = false;
    let mut members = 0;
    for &b in items {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                continue;
            }
            out.push(b);
        } else if b == b'"' {
            in_string = true;
            if members > 0 {
                out.push(b',');
            }
            members += 1;
        }
    }
    out.push(b'"');
}

fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')))
}

/// `YYYY-MM-DD` as days since 1970-01-01, or None for zero and partly zero dates.
pub fn days(date: &[u8]) -> Option<i64> {
    if date.len() != 10 || date[4] != b'-' || date[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&date[..4])?, digits(&date[5..7])?, digits(&date[8..10])?);
    if y == 0 || m == 0 || d == 0 || m > 12 || d > 31 {
        return None;
    }
    Some(days_from_civil(y as i64, m, d))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u64, d: u64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400) as u64;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i64 - 719_468
}

/// `[-]H+:MM:SS[.f+]` as signed microseconds.
pub fn time_micros(t: &[u8]) -> Option<i64> {
    let (neg, t) = match t.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (hms, frac) = match t.iter().position(|&b| b == b'.') {
        Some(dot) => (&t[..dot], &t[dot + 1..]),
        None => (t, &b""[..]),
    };
    let mut parts = hms.split(|&b| b == b':');
    let (h, m, s) = (digits(parts.next()?)?, digits(parts.next()?)?, digits(parts.next()?)?);
    let micros = fraction_micros(frac)?;
    let total = ((h * 60 + m) * 60 + s) as i64 * 1_000_000 + micros as i64;
    Some(if neg { -total } else { total })
}

/// Fractional-second digits (up to 6) as microseconds.
fn fraction_micros(frac: &[u8]) -> Option<u64> {
    if frac.is_empty() {
        return Some(0);
    }
    if frac.len() > 6 {
        return None;
    }
    Some(digits(frac)? * 10u64.pow(6 - frac.len() as u32))
}

/// `YYYY-MM-DDTHH:MM:SS[.f+][Z]` as microseconds since the epoch, or None for zero dates.
pub fn datetime_micros(dt: &[u8]) -> Option<i64> {
    let dt = dt.strip_suffix(b"Z").unwrap_or(dt);
    if dt.len() < 19 || dt[10] != b'T' {
        return None;
    }
    if dt[13] != b':' || dt[16] != b':' || (dt.len() > 19 && dt[19] != b'.') {
        return None;
    }
    let (h, m, s) = (digits(&dt[11..13])?, digits(&dt[14..16])?, digits(&dt[17..19])?);
    let micros = fraction_micros(dt.get(20..).unwrap_or_default())?;
    Some(days(&dt[..10])? * 86_400_000_000 + (((h * 60 + m) * 60 + s) * 1_000_000 + micros) as i64)
}

/// Appends a native DATETIME or TIMESTAMP string as SQL text: `"YYYY-MM-DD HH:MM:SS[.f]"`
/// (the `T` becomes a space, a `Z` suffix is dropped).
pub fn write_sql_datetime(v: &[u8], out: &mut Vec<u8>) {
    match inner(v) {
        Some(dt) if dt.len() >= 19 && dt[10] == b'T' => {
            let dt = dt.strip_suffix(b"Z").unwrap_or(dt);
            out.push(b'"');
            out.extend_from_slice(&dt[..10]);
            out.push(b' ');
            out.extend_from_slice(&dt[11..]);
            out.push(b'"');
        }
        _ => out.extend_from_slice(b"null"),
    }
}

/// True for the zero date and zero datetimes the server writes for invalid values.
pub fn is_zero_date(v: &[u8]) -> bool {
    inner(v).is_some_and(|d| d.get(..10).is_some_and(|date| days(date).is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(v: &str) -> String {
        let mut out = Vec::new();
        write_set_joined(v.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn sets_join_with_commas_and_keep_escapes() {
        assert_eq!(joined(r#"["red","green"]"#), r#""red,green""#);
        assert_eq!(joined("[]"), r#""""#);
        assert_eq!(joined(r#"["a\"b","c\\"]"#), r#""a\"b,c\\""#);
        assert_eq!(joined("5"), r#""5""#);
    }

    #[test]
    fn dates_and_times_as_numbers() {
        assert_eq!(days(b"1970-01-01"), Some(0));
        assert_eq!(days(b"2024-02-29"), Some(19_782));
        assert_eq!(days(b"1000-01-01"), Some(-354_285));
        assert_eq!(days(b"9999-12-31"), Some(2_932_896));
        assert_eq!(days(b"0000-00-00"), None);
        assert_eq!(days(b"2024-00-10"), None);
        assert_eq!(time_micros(b"-838:59:59"), Some(-3_020_399_000_000));
        assert_eq!(time_micros(b"-00:00:00.500"), Some(-500_000));
        assert_eq!(time_micros(b"12:34:56.789"), Some(45_296_789_000));
        assert_eq!(datetime_micros(b"1970-01-01T00:00:01.000000Z"), Some(1_000_000));
        assert_eq!(datetime_micros(b"2038-01-19T03:14:07.999999Z"), Some(2_147_483_647_999_999));
        assert_eq!(datetime_micros(b"0000-00-00T00:00:00"), None);
        assert_eq!(datetime_micros(b"garbage"), None);
        assert_eq!(datetime_micros(b"1970-01-01T00:00:00."), Some(0));
        assert_eq!(datetime_micros(b"1970-01-01T00:00:00x5"), None);
        assert!(is_zero_date(b"\"0000-00-00T00:00:00.000000Z\"") && !is_zero_date(b"\"1970-01-01\""));
    }

    #[test]
    fn sql_datetimes() {
        let sql = |v: &str| {
            let mut out = Vec::new();
            write_sql_datetime(v.as_bytes(), &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(sql(r#""2024-01-02T03:04:05.500Z""#), r#""2024-01-02 03:04:05.500""#);
        assert_eq!(sql(r#""2024-01-02T03:04:05""#), r#""2024-01-02 03:04:05""#);
        assert_eq!(sql("null"), "null");
    }
}
