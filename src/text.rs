//! Text columns decoded by their column charset, JSON string escaping, names made safe for log
//! lines and error messages, and figures rounded for them.
//!
//! Invariants: bytes are never reinterpreted silently — a charset we know is decoded exactly
//! (latin1 is MySQL's cp1252), binary columns become base64, and bytes that are invalid in their
//! declared charset are an error rather than replacement characters. A name that comes from
//! binlog bytes or from the server (database, table, column, binlog file) reaches a log line or
//! an error message only through `Escaped`, so it can never start a line of its own.

use base64::Engine as _;
use mysql_common::collations::{Collation, CollationId};

use thiserror::Error;

/// Bytes of a value that cannot be decoded as their column type says.
#[derive(Debug, Error)]
pub enum ValueError {
    #[error("row data ends inside a value ({need} bytes needed, {have} left)")]
    Short { need: usize, have: usize },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// The `binary` charset: BINARY, VARBINARY, BLOB. Emitted as base64.
    Binary,
    Utf8,
    /// MySQL's `latin1` is Windows-1252.
    Latin1,
    /// UCS-2, UTF-16 (big-endian in MySQL), UTF-16LE, UTF-32.
    Utf16Be,
    Utf16Le,
    Utf32,
    Other(&'static encoding_rs::Encoding),
}

impl TextEncoding {
    /// The encoding of a MySQL/MariaDB collation id, or None if the id is unknown.
    pub fn from_collation(id: u16) -> Option<TextEncoding> {
        if id == 63 {
            return Some(TextEncoding::Binary);
        }
        match CollationId::from(id) {
            CollationId::UNKNOWN_COLLATION_ID => Self::from_charset(mariadb_charset(id)?),
            known => Self::from_charset(Collation::from(known).charset()),
        }
    }

    /// The encoding of a charset name as information_schema prints it.
    pub fn from_charset(name: &str) -> Option<TextEncoding> {
        use encoding_rs::*;
        Some(match name {
            "binary" => TextEncoding::Binary,
            "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => TextEncoding::Utf8,
            "latin1" => TextEncoding::Latin1,
            "ucs2" | "utf16" => TextEncoding::Utf16Be,
            "utf16le" => TextEncoding::Utf16Le,
            "utf32" => TextEncoding::Utf32,
            "cp1250" | "latin2" => TextEncoding::Other(WINDOWS_1250),
            "cp1251" => TextEncoding::Other(WINDOWS_1251),
            "cp1256" => TextEncoding::Other(WINDOWS_1256),
            "cp1257" | "latin7" => TextEncoding::Other(WINDOWS_1257),
            "greek" => TextEncoding::Other(ISO_8859_7),
            "hebrew" => TextEncoding::Other(ISO_8859_8),
            "latin5" => TextEncoding::Other(WINDOWS_1254),
            "koi8r" => TextEncoding::Other(KOI8_R),
            "koi8u" => TextEncoding::Other(KOI8_U),
            "cp866" => TextEncoding::Other(IBM866),
            "macroman" => TextEncoding::Other(MACINTOSH),
            "tis620" => TextEncoding::Other(WINDOWS_874),
            "sjis" | "cp932" => TextEncoding::Other(SHIFT_JIS),
            "ujis" | "eucjpms" => TextEncoding::Other(EUC_JP),
            "euckr" => TextEncoding::Other(EUC_KR),
            "gbk" | "gb2312" => TextEncoding::Other(GBK),
            "gb18030" => TextEncoding::Other(GB18030),
            "big5" => TextEncoding::Other(BIG5),
            _ => return None,
        })
    }

    /// Appends the bytes as a JSON string (base64 for binary).
    pub fn write_json(self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
        match self {
            TextEncoding::Binary => {
                out.push(b'"');
                let start = out.len();
                let len = base64::encoded_len(bytes.len(), true).expect("value sizes are bounded");
                out.resize(start + len, 0);
                base64::engine::general_purpose::STANDARD
                    .encode_slice(bytes, &mut out[start..])
                    .expect("buffer sized by encoded_len");
                out.push(b'"');
            }
            // Plain ASCII needing no escape, most text: valid as it is, one copy.
            TextEncoding::Utf8 if plain_run(bytes, 0, true) == bytes.len() => {
                out.push(b'"');
                out.extend_from_slice(bytes);
                out.push(b'"');
            }
            // ASCII with escapes (JSON documents in text columns): nothing to validate.
            TextEncoding::Utf8 if bytes.is_ascii() => write_json_escaped(bytes, out),
            TextEncoding::Utf8 => {
                let s = std::str::from_utf8(bytes).map_err(|e| {
                    ValueError::Invalid(format!("text is not valid UTF-8 ({e}) although its column charset says so"))
                })?;
                write_json_str(s, out);
            }
            TextEncoding::Latin1 => {
                write_json_str(&encoding_rs::WINDOWS_1252.decode_without_bom_handling(bytes).0, out)
            }
            TextEncoding::Utf16Be | TextEncoding::Utf16Le => {
                let enc = if self == TextEncoding::Utf16Be { encoding_rs::UTF_16BE } else { encoding_rs::UTF_16LE };
                let (s, had_errors) = enc.decode_without_bom_handling(bytes);
                if had_errors {
                    return Err(ValueError::Invalid("text is not valid UTF-16".into()));
                }
                write_json_str(&s, out);
            }
            TextEncoding::Utf32 => {
                let s: Option<String> = bytes
                    .chunks(4)
                    .map(|c| c.try_into().ok().map(u32::from_be_bytes).and_then(char::from_u32))
                    .collect();
                write_json_str(&s.ok_or_else(|| ValueError::Invalid("text is not valid UTF-32".into()))?, out);
            }
            TextEncoding::Other(enc) => {
                let (s, had_errors) = enc.decode_without_bom_handling(bytes);
                if had_errors {
                    return Err(ValueError::Invalid(format!("text is not valid {}", enc.name())));
                }
                write_json_str(&s, out);
            }
        }
        Ok(())
    }
}

/// MariaDB's collation ids that MySQL does not have (MariaDB 10.10+ UCA 14.0 collations and
/// MariaDB-only ids): the charset is in the id's range.
fn mariadb_charset(id: u16) -> Option<&'static str> {
    match id {
        2048..=2303 => Some("utf8mb3"),
        2304..=2559 => Some("utf8mb4"),
        2560..=2815 => Some("ucs2"),
        2816..=3071 => Some("utf16"),
        3072..=3327 => Some("utf32"),
        _ => None,
    }
}

/// Appends `s` as a JSON string literal, or `null`.
pub fn write_json_opt_str(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        Some(s) => write_json_str(s, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_json_str(s: &str, out: &mut Vec<u8>) {
    write_json_escaped(s.as_bytes(), out)
}

/// Appends `bytes`, valid UTF-8, as a JSON string literal.
fn write_json_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    // Most strings need no escape: found 8 bytes at a time, then one copy.
    let first = plain_run(bytes, 0, false);
    if first == bytes.len() {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    if bytes.len() <= SHORT {
        return escape_short(bytes, out);
    }
    // Escapes are two bytes, or six (`\u00XX`), pushed directly; the runs between them copied
    // whole.
    out.reserve(bytes.len() + 8);
    let mut start = 0;
    let mut i = first;
    while i < bytes.len() {
        out.extend_from_slice(&bytes[start..i]);
        let (text, len) = &ESCAPES[usize::from(bytes[i])];
        out.extend_from_slice(&text[..usize::from(*len)]);
        start = i + 1;
        i = plain_run(bytes, start, false);
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Strings up to this long are escaped on the stack (as short JSON documents in text columns,
/// with a quote every few bytes), then copied once.
const SHORT: usize = 64;

/// `bytes` (at most `SHORT`) escaped, and the closing quote: each byte's text from `ESCAPES`
/// (8 bytes stored, its length kept: no branch per byte), then one copy.
fn escape_short(bytes: &[u8], out: &mut Vec<u8>) {
    let mut buf = [0u8; SHORT * 6 + 8];
    let mut n = 0;
    for &b in bytes {
        let (text, len) = &ESCAPES[usize::from(b)];
        buf[n..n + 8].copy_from_slice(text);
        n += usize::from(*len);
    }
    buf[n] = b'"';
    out.extend_from_slice(&buf[..=n]);
}

/// Each byte as a JSON string writes it, padded to 8 bytes, and its length: the byte itself, or
/// its escape (`\"`, `\\`, `\n`, `\r`, `\t` or `\u00XX`) for `"`, `\\` and the control characters.
const ESCAPES: [([u8; 8], u8); 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const fn short(c: u8) -> ([u8; 8], u8) {
        ([b'\\', c, 0, 0, 0, 0, 0, 0], 2)
    }
    let mut table = [([0u8; 8], 1u8); 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            c @ (b'"' | b'\\') => short(c),
            b'\n' => short(b'n'),
            b'\r' => short(b'r'),
            b'\t' => short(b't'),
            c @ 0..0x20 => ([b'\\', b'u', b'0', b'0', HEX[(c >> 4) as usize], HEX[(c & 15) as usize], 0, 0], 6),
            c => ([c, 0, 0, 0, 0, 0, 0, 0], 1),
        };
        b += 1;
    }
    table
};

/// The index of the first byte at or after `from` that JSON escapes (or, with `non_ascii`, that
/// is not ASCII), or `bytes.len()`.
fn plain_run(bytes: &[u8], from: usize, non_ascii: bool) -> usize {
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let bits = escape_bits(u64::from_le_bytes(chunk.try_into().expect("8 bytes")), non_ascii);
        if bits != 0 {
            return i + first_flagged(bits);
        }
        i += 8;
    }
    (i + first_flagged(escape_bits(tail_word(&bytes[i..]), non_ascii))).min(bytes.len())
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` (little-endian) that JSON escapes: `"`, `\\` and those
/// below 0x20; with `non_ascii`, also of those from 0x80. A borrow can set bits above the lowest
/// one, never below it: the lowest is exact, so is whether there is one.
fn escape_bits(word: u64, non_ascii: bool) -> u64 {
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    let high = if non_ascii { word } else { 0 };
    (control | quote | backslash | high) & HIGH
}

/// The byte index of the lowest flag of `escape_bits`, 8 for none.
fn first_flagged(bits: u64) -> usize {
    (bits.trailing_zeros() / 8) as usize
}

/// The last bytes of a string (fewer than 8) as a word, filled up with spaces (which need no
/// escape).
fn tail_word(tail: &[u8]) -> u64 {
    let mut word = [b' '; 8];
    for (w, &b) in word.iter_mut().zip(tail) {
        *w = b;
    }
    u64::from_le_bytes(word)
}

/// Shows a name from binlog bytes or the server with control characters escaped as Rust writes
/// them (`\n`, `\t`, `\u{1b}`), backslashes doubled so an escape cannot be faked, and the
/// invisible characters that reorder or break lines (bidi controls, U+2028/U+2029) as `\u{..}`.
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let reorders = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if !(c == '\\' || c.is_control() || reorders || c == '\u{2028}' || c == '\u{2029}') {
                continue;
            }
            f.write_str(&s[start..i])?;
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' | '\r' | '\t' => write!(f, "{}", c.escape_default())?,
                _ => write!(f, "{}", c.escape_unicode())?,
            }
            start = i + c.len_utf8();
        }
        f.write_str(&s[start..])
    }
}

/// `count` things done in `elapsed`, for log lines: `20000 rows in 1.3 s (15.4k rows/s)`.
/// Durations are rounded to what a reader can use, and a rate over less than a millisecond
/// (which says more about the clock than about the work) is left out: `8 rows in 44 µs`.
pub struct Throughput<'a> {
    pub count: u64,
    pub unit: &'a str,
    pub elapsed: std::time::Duration,
}

impl std::fmt::Display for Throughput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (count, unit, secs) = (self.count, self.unit, self.elapsed.as_secs_f64());
        match self.elapsed.as_micros() {
            0..1_000 => write!(f, "{count} {unit} in {} µs", self.elapsed.as_micros())?,
            1_000..1_000_000 => write!(f, "{count} {unit} in {} ms", self.elapsed.as_millis())?,
            1_000_000..100_000_000 => write!(f, "{count} {unit} in {secs:.1} s")?,
            _ => write!(f, "{count} {unit} in {secs:.0} s")?,
        }
        if self.elapsed.as_micros() < 1_000 {
            return Ok(());
        }
        let rate = count as f64 / secs;
        let (scaled, prefix) = match rate {
            r if r < 10_000.0 => return write!(f, " ({r:.0} {unit}/s)"),
            r if r < 1e6 => (r / 1e3, "k"),
            r if r < 1e9 => (r / 1e6, "M"),
            r => (r / 1e9, "G"),
        };
        write!(f, " ({scaled:.1}{prefix} {unit}/s)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn json(enc: TextEncoding, bytes: &[u8]) -> String {
        let mut out = Vec::new();
        enc.write_json(bytes, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_like_serde_json() {
        let short = ["plain", "quote \" backslash \\", "ctl \u{1} \n \t \r \u{1f}", "emoji 😀 ü", "{\"k\": 1}"];
        // Short strings are escaped on the stack, longer ones in runs: both the same bytes.
        let long = short.map(|s| s.repeat(20));
        for s in short.into_iter().chain(long.iter().map(String::as_str)) {
            let mut out = Vec::new();
            write_json_str(s, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn every_byte_at_every_offset_escapes_like_serde_json() {
        // Each byte class the word-at-a-time scan tells apart, at each offset of short and long
        // strings (so in a word, in its tail, and after a borrow from a flagged byte below it).
        let specials = ["\u{0}", "\u{1f}", " ", "\"", "\\", "#", "[", "]", "\u{7f}", "\u{80}", "é", "😀", "\n"];
        for len in [1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 100] {
            for at in 0..len {
                for (a, b) in specials.iter().flat_map(|a| specials.iter().map(move |b| (a, b))) {
                    let s = format!("{}{a}{b}{}", "x".repeat(at), "y".repeat(len - at));
                    let mut out = Vec::new();
                    write_json_str(&s, &mut out);
                    assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap(), "{s:?}");
                    assert_eq!(json(TextEncoding::Utf8, s.as_bytes()), serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
        // Invalid UTF-8 after a plain ASCII run is still refused.
        assert!(TextEncoding::Utf8.write_json(b"plain ascii text then \xc3(", &mut Vec::new()).is_err());
    }

    #[test]
    fn escaped_names_stay_on_one_line() {
        let shown = |s| Escaped(s).to_string();
        assert_eq!(shown("orders"), "orders");
        assert_eq!(shown("a\nb"), "a\\nb");
        assert_eq!(shown("x\r\ty\u{1b}[31m\0"), "x\\r\\ty\\u{1b}[31m\\u{0}");
        assert_eq!(shown("back\\n"), "back\\\\n", "a literal backslash-n stays distinct from a newline");
        assert_eq!(shown("ü 😀 `q`"), "ü 😀 `q`");
        assert_eq!(shown("a\u{2028}b\u{202e}c\u{85}"), "a\\u{2028}b\\u{202e}c\\u{85}");
        for s in ["a\nb", "\u{2028}", "\r", "\u{85}"] {
            assert!(!shown(s).contains(['\n', '\r', '\u{2028}', '\u{85}']), "{s:?}");
        }
    }

    #[test]
    fn throughput_is_rounded_for_people() {
        let shown = |count, elapsed| Throughput { count, unit: "rows", elapsed }.to_string();
        assert_eq!(shown(8, Duration::from_nanos(43_600)), "8 rows in 43 µs");
        assert_eq!(shown(600, Duration::from_micros(43_600)), "600 rows in 43 ms (13.8k rows/s)");
        assert_eq!(shown(300, Duration::from_micros(43_600)), "300 rows in 43 ms (6881 rows/s)");
        assert_eq!(shown(20_000, Duration::from_millis(1_300)), "20000 rows in 1.3 s (15.4k rows/s)");
        assert_eq!(shown(13_749_000, Duration::from_secs(1)), "13749000 rows in 1.0 s (13.7M rows/s)");
        assert_eq!(shown(5_000_000, Duration::from_secs(250)), "5000000 rows in 250 s (20.0k rows/s)");
        assert_eq!(shown(0, Duration::from_secs(2)), "0 rows in 2.0 s (0 rows/s)");
    }

    #[test]
    fn charsets() {
        assert_eq!(json(TextEncoding::Latin1, b"caf\xe9 \x80"), "\"café €\"");
        assert_eq!(json(TextEncoding::Binary, b"\x00\xff"), "\"AP8=\"");
        assert_eq!(json(TextEncoding::Utf16Be, b"\x00h\x00i"), "\"hi\"");
        assert!(TextEncoding::Utf8.write_json(b"\xff", &mut Vec::new()).is_err());
        assert_eq!(TextEncoding::from_collation(8), Some(TextEncoding::Latin1));
        assert_eq!(TextEncoding::from_collation(45), Some(TextEncoding::Utf8));
        assert_eq!(TextEncoding::from_collation(255), Some(TextEncoding::Utf8));
        assert_eq!(TextEncoding::from_collation(63), Some(TextEncoding::Binary));
        assert_eq!(TextEncoding::from_collation(2305), Some(TextEncoding::Utf8));
    }
}
