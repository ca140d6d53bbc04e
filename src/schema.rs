//! The decoded shape of a table and of its rows: what the decoder builds from a TABLE_MAP and a
//! rows event, and what the event contract, the filters, the outbox and the sinks read.
//!
//! Invariants: a `Table` is immutable once built and shared (behind `Arc`) by every row decoded
//! under it; a `RowImage` holds each present column's value as finished JSON text, so sinks copy
//! bytes and never re-encode values.

use crate::text::TextEncoding;

#[derive(Debug)]
pub struct Column {
    pub name: String,
    /// `"name":` as JSON, rendered once.
    pub key_json: Vec<u8>,
    pub kind: Kind,
    /// The column's type as SQL text, as far as the binlog tells it (`int unsigned`,
    /// `decimal(5,2)`, `datetime(6)`, `enum('a','b')`; character lengths are not in the binlog).
    pub sql_type: String,
    /// Left out of every event (`--drop-column`): decoded only to find the next value.
    pub dropped: bool,
}

#[derive(Debug)]
pub struct Table {
    pub db: String,
    pub name: String,
    /// The db and table names as JSON strings, rendered once.
    pub db_json: Vec<u8>,
    pub name_json: Vec<u8>,
    pub columns: Vec<Column>,
    /// Indexes of the primary-key columns; empty when the table has none.
    pub pk: Vec<usize>,
    /// What the binlog did not say and how it was filled in, for the one-time warning.
    pub gaps: Vec<&'static str>,
    /// Names and types came from information_schema (MINIMAL metadata), so DDL makes them stale.
    pub looked_up: bool,
    /// Index of the outbox settings when this is an outbox table (set by the decoder).
    pub outbox: Option<usize>,
}

/// How a column's value is laid out in the binlog's row format (and so how it is decoded).
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Int {
        bytes: u8,
        unsigned: bool,
    },
    Float,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
    },
    Year,
    Date,
    /// Pre-5.6 TIME, DATETIME and TIMESTAMP formats (no fractional seconds).
    OldTime,
    OldDateTime,
    OldTimestamp,
    Time2 {
        fsp: u8,
    },
    DateTime2 {
        fsp: u8,
    },
    Timestamp2 {
        fsp: u8,
    },
    /// CHAR, VARCHAR, BINARY, VARBINARY: a 1- or 2-byte length, then the bytes.
    Str {
        len_bytes: u8,
        text: TextEncoding,
    },
    /// BINARY(n): stored without trailing zero bytes, which are restored up to `width`.
    FixedBinary {
        len_bytes: u8,
        width: u16,
    },
    /// BLOB and TEXT families: a 1- to 4-byte length, then the bytes.
    Blob {
        len_bytes: u8,
        text: TextEncoding,
    },
    Json {
        len_bytes: u8,
    },
    Geometry {
        len_bytes: u8,
    },
    Vector {
        len_bytes: u8,
    },
    /// BIT(bits), stored in `bytes` big-endian bytes.
    Bit {
        bytes: u8,
        bits: u8,
    },
    Enum {
        bytes: u8,
        names: Option<Vec<String>>,
    },
    Set {
        bytes: u8,
        names: Option<Vec<String>>,
    },
}

impl Kind {
    /// True for JSON columns, which PARTIAL_UPDATE_ROWS may send as diffs.
    pub fn is_json(&self) -> bool {
        matches!(self, Kind::Json { .. })
    }
}

/// One row image: each present column's JSON value, as byte ranges into one buffer.
#[derive(Debug, Clone)]
pub struct RowImage {
    pub json: Vec<u8>,
    /// Per table column: the span of its JSON value, or None when the image lacks the column.
    pub spans: Vec<Option<(u32, u32)>>,
    /// `json` is the whole native object, `{"col":value,...}` of every column (none dropped),
    /// the spans pointing at the values inside it: written out with one copy (snapshot reads).
    pub object: bool,
}

impl Table {
    /// A table whose columns have plain names (no JSON escaping needed), for unit tests.
    #[cfg(test)]
    pub fn for_test(db: &str, name: &str, columns: Vec<(&str, Kind)>, pk: Vec<usize>) -> std::sync::Arc<Table> {
        let columns = columns
            .into_iter()
            .map(|(name, kind)| Column {
                name: name.into(),
                key_json: format!("\"{name}\":").into_bytes(),
                kind,
                sql_type: String::new(),
                dropped: false,
            })
            .collect();
        std::sync::Arc::new(Table {
            db: db.into(),
            name: name.into(),
            db_json: format!("\"{db}\"").into_bytes(),
            name_json: format!("\"{name}\"").into_bytes(),
            columns,
            pk,
            gaps: vec![],
            looked_up: false,
            outbox: None,
        })
    }
}

impl RowImage {
    /// Asks the CPU to start loading the image's bytes: a snapshot's rows are written on a
    /// reader thread and emitted on the stream's, where each row's first touch would otherwise
    /// wait for memory.
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // SAFETY: SSE is part of x86_64; a prefetch is a hint that reads nothing and never
            // faults, whatever the address.
            unsafe {
                for line in self.json.chunks(64) {
                    _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
                }
                _mm_prefetch::<_MM_HINT_T0>(self.spans.as_ptr().cast());
            }
        }
    }

    pub fn value(&self, col: usize) -> Option<&[u8]> {
        let (s, e) = self.spans.get(col).copied().flatten()?;
        Some(&self.json[s as usize..e as usize])
    }

    /// An image of every column from its JSON text, for unit tests.
    #[cfg(test)]
    pub fn from_json(values: &[&str]) -> RowImage {
        let mut image = RowImage { json: Vec::new(), spans: Vec::new(), object: false };
        for v in values {
            let start = image.json.len() as u32;
            image.json.extend_from_slice(v.as_bytes());
            image.spans.push(Some((start, image.json.len() as u32)));
        }
        image
    }
}
