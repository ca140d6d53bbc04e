//! Table schemas built from TABLE_MAP events: column names, exact decoders, primary key.
//!
//! Invariants: a `Table` is built once per distinct TABLE_MAP and shared by every row decoded
//! under it, so each row pays only for its values. Names, signedness, charsets and ENUM/SET
//! values come from the binlog's own optional metadata (`binlog_row_metadata=FULL`), which
//! describes the table as it was when the row was written; only when that metadata is missing
//! are they taken from `information_schema`, and never without saying so.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use mysql_common::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_common::constants::ColumnType;

use super::value::Cursor;
use crate::filter::Filter;
use crate::schema::{Column, Kind, Table};
use crate::text::{write_json_str, Escaped, TextEncoding};

/// One column as `information_schema.COLUMNS` describes it (the MINIMAL-metadata fallback).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnInfo {
    pub name: String,
    pub unsigned: bool,
    pub charset: Option<String>,
    /// ENUM or SET values, from `COLUMN_TYPE`.
    pub values: Option<Vec<String>>,
    pub is_pk: bool,
    /// `DATA_TYPE`, e.g. `int`, `varchar`, `longtext`.
    pub data_type: String,
}

impl Table {
    /// True when the binlog metadata is too thin to decode rows without `information_schema`.
    pub fn needs_lookup(tme: &TableMapEvent<'_>) -> bool {
        !tme.iter_optional_meta().any(|f| matches!(f, Ok(OptionalMetadataField::ColumnName(_))))
    }

    pub fn from_table_map(tme: &TableMapEvent<'_>, info: Option<&[ColumnInfo]>, filter: &Filter) -> Result<Table> {
        let db = tme.database_name().into_owned();
        let name = tme.table_name().into_owned();
        let count = tme.columns_count() as usize;
        // For messages: the names come from the binlog's bytes.
        let shown = format!("`{}`.`{}`", Escaped(&db), Escaped(&name));
        if let Some(info) = info {
            if info.len() != count {
                bail!(
                    "table {shown} has {count} columns in the binlog but {} in information_schema: its schema changed since these rows were written. Set binlog_row_metadata=FULL on the server so the binlog carries its own column names",
                    info.len()
                );
            }
        }
        let meta =
            OptionalMetaExtractor::new(tme.iter_optional_meta()).context("bad optional metadata in TABLE_MAP")?;
        let mut enum_values = Vec::new();
        let mut set_values = Vec::new();
        let mut has_signedness = false;
        let mut has_charsets = false;
        for field in tme.iter_optional_meta() {
            match field.context("bad optional metadata in TABLE_MAP")? {
                OptionalMetadataField::EnumStrValue(v) => {
                    for e in v.iter_values() {
                        let e = e.context("bad ENUM metadata")?;
                        enum_values.push(e.values().iter().map(|x| x.value().into_owned()).collect::<Vec<_>>());
                    }
                }
                OptionalMetadataField::SetStrValue(v) => {
                    for s in v.iter_values() {
                        let s = s.context("bad SET metadata")?;
                        set_values.push(s.values().iter().map(|x| x.value().into_owned()).collect::<Vec<_>>());
                    }
                }
                OptionalMetadataField::Signedness(_) => has_signedness = true,
                OptionalMetadataField::DefaultCharset(_) | OptionalMetadataField::ColumnCharset(_) => {
                    has_charsets = true
                }
                _ => {}
            }
        }
        let mut names = meta.iter_column_name();
        let mut signedness = meta.iter_signedness();
        let mut charsets = meta.iter_charset();
        let mut enum_set_charsets = meta.iter_enum_and_set_charset();
        let mut enums = enum_values.into_iter();
        let mut sets = set_values.into_iter();
        let mut pk: Vec<usize> = Vec::new();
        for idx in meta.iter_primary_key() {
            pk.push(idx.context("bad primary key metadata")? as usize);
        }

        let mut gaps = Vec::new();
        let mut columns = Vec::with_capacity(count);
        for i in 0..count {
            let ty = tme
                .get_column_type(i)
                .map_err(|e| anyhow::anyhow!("column {i} of {shown}: {e}"))?
                .with_context(|| format!("TABLE_MAP of {shown} lacks column {i}"))?;
            let col_meta = tme.get_column_metadata(i).unwrap_or_default();
            let col_info = info.map(|c| &c[i]);
            let unsigned = if is_numeric(ty) { signedness.next() } else { None };
            let charset = if is_character(ty) {
                charsets.next().transpose()?
            } else if ty.is_enum_or_set_type() {
                enum_set_charsets.next().transpose()?
            } else {
                None
            };
            let unsigned = match (unsigned, col_info) {
                (Some(u), _) => u,
                (None, Some(c)) => c.unsigned,
                (None, None) => {
                    if is_numeric(ty) && !has_signedness {
                        note(&mut gaps, "signedness (integers read as signed)");
                    }
                    false
                }
            };
            let text = match (charset, col_info.and_then(|c| c.charset.as_deref())) {
                (Some(id), _) => TextEncoding::from_collation(id).with_context(|| {
                    format!("column {i} of {shown} has collation id {id}, which binlog-tail does not know")
                })?,
                (None, Some(cs)) => TextEncoding::from_charset(cs).with_context(|| {
                    format!("column {i} of {shown} has charset {cs}, which binlog-tail does not know")
                })?,
                (None, None) => {
                    if is_character(ty) && !has_charsets {
                        note(&mut gaps, "charsets (text read as UTF-8)");
                    }
                    TextEncoding::Utf8
                }
            };
            let values = |from_binlog: Option<Vec<String>>, gaps: &mut Vec<&'static str>| {
                from_binlog.or_else(|| col_info.and_then(|c| c.values.clone())).or_else(|| {
                    note(gaps, "ENUM/SET values (emitted as index / bitmask numbers)");
                    None
                })
            };
            let kind = match ty {
                ColumnType::MYSQL_TYPE_ENUM => {
                    let v = values(enums.next(), &mut gaps);
                    Kind::Enum { bytes: byte_at(col_meta, 1, i)?, names: v }
                }
                ColumnType::MYSQL_TYPE_SET => {
                    let v = values(sets.next(), &mut gaps);
                    Kind::Set { bytes: byte_at(col_meta, 1, i)?, names: v }
                }
                _ => kind_of(ty, col_meta, unsigned, text).with_context(|| format!("column {i} of {shown}"))?,
            };
            let col_name = match (names.next().transpose()?, col_info) {
                (Some(n), _) => n.name().into_owned(),
                (None, Some(c)) => c.name.clone(),
                (None, None) => {
                    note(&mut gaps, "column names (columns named @1, @2, ... by position)");
                    format!("@{}", i + 1)
                }
            };
            let mut key_json = Vec::with_capacity(col_name.len() + 3);
            write_json_str(&col_name, &mut key_json);
            key_json.push(b':');
            let dropped = filter.drops_column(&db, &name, &col_name);
            let sql_type = match col_info {
                // information_schema knows what the binlog cannot (MariaDB's JSON is a LONGTEXT there).
                Some(c) if c.data_type == "json" => c.data_type.clone(),
                _ => sql_type(ty, &kind),
            };
            columns.push(Column { name: col_name, key_json, kind, sql_type, dropped });
        }
        if pk.is_empty() {
            if let Some(info) = info {
                pk = primary_key(&info.iter().map(|c| c.is_pk).collect::<Vec<_>>(), &[]);
            }
        }
        if pk.iter().any(|&i| i >= count) {
            bail!("TABLE_MAP of {shown} names a primary-key column beyond its {count} columns");
        }
        let mut db_json = Vec::new();
        write_json_str(&db, &mut db_json);
        let mut name_json = Vec::new();
        write_json_str(&name, &mut name_json);
        if let Some(info) = info {
            check_types(&db, &name, tme, info)?;
        }
        pk.retain(|&i| !columns[i].dropped);
        Ok(Table { db, name, db_json, name_json, columns, pk, gaps, looked_up: info.is_some(), outbox: None })
    }
}

/// The key change events carry (`pk`) when the binlog does not name it, and the key a snapshot's
/// `read` events carry: the columns information_schema marks `PRI` (`is_pk`, by column). That is
/// the PRIMARY KEY or, in a table without one, the UNIQUE index on NOT NULL columns that the
/// server uses as its primary key (and names in the binlog's own metadata). Its columns come in
/// that index's order when `unique` (the unique indexes, each as column positions in index
/// order) holds an index of exactly those columns, as the binlog names them; else in column order.
pub fn primary_key(is_pk: &[bool], unique: &[Vec<usize>]) -> Vec<usize> {
    let columns: Vec<usize> = (0..is_pk.len()).filter(|&i| is_pk[i]).collect();
    let same_columns =
        |index: &&Vec<usize>| index.len() == columns.len() && index.iter().all(|c| columns.binary_search(c).is_ok());
    unique.iter().find(same_columns).cloned().unwrap_or(columns)
}

/// Columns that get a SIGNEDNESS bit, as the server's table map writer counts them (YEAR and
/// the pre-5.0 DECIMAL do not, whatever mysql_common's `is_numeric_type` says).
fn is_numeric(ty: ColumnType) -> bool {
    use ColumnType::*;
    matches!(
        ty,
        MYSQL_TYPE_TINY
            | MYSQL_TYPE_SHORT
            | MYSQL_TYPE_INT24
            | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG
            | MYSQL_TYPE_NEWDECIMAL
            | MYSQL_TYPE_FLOAT
            | MYSQL_TYPE_DOUBLE
    )
}

/// Columns that get a charset entry: the string types, and GEOMETRY (a BLOB in the server).
fn is_character(ty: ColumnType) -> bool {
    ty.is_character_type() || ty == ColumnType::MYSQL_TYPE_GEOMETRY
}

/// With MINIMAL metadata the column names come from information_schema as it is now. If its
/// types do not fit the binlog's, the table changed since the rows were written, and naming the
/// values by today's schema would put them under the wrong columns.
fn check_types(db: &str, table: &str, tme: &TableMapEvent<'_>, info: &[ColumnInfo]) -> Result<()> {
    use ColumnType::*;
    for (i, col) in info.iter().enumerate() {
        let Ok(Some(ty)) = tme.get_column_type(i) else { continue };
        let fits = match col.data_type.as_str() {
            "tinyint" | "bool" | "boolean" => ty == MYSQL_TYPE_TINY,
            "smallint" => ty == MYSQL_TYPE_SHORT,
            "mediumint" => ty == MYSQL_TYPE_INT24,
            "int" | "integer" => ty == MYSQL_TYPE_LONG,
            "bigint" => ty == MYSQL_TYPE_LONGLONG,
            "float" => ty == MYSQL_TYPE_FLOAT,
            "double" | "real" => ty == MYSQL_TYPE_DOUBLE,
            "decimal" | "numeric" => ty == MYSQL_TYPE_NEWDECIMAL,
            "year" => ty == MYSQL_TYPE_YEAR,
            "date" => matches!(ty, MYSQL_TYPE_NEWDATE | MYSQL_TYPE_DATE),
            "time" => matches!(ty, MYSQL_TYPE_TIME2 | MYSQL_TYPE_TIME),
            "datetime" => matches!(ty, MYSQL_TYPE_DATETIME2 | MYSQL_TYPE_DATETIME),
            "timestamp" => matches!(ty, MYSQL_TYPE_TIMESTAMP2 | MYSQL_TYPE_TIMESTAMP),
            "char" | "binary" => ty == MYSQL_TYPE_STRING,
            "varchar" | "varbinary" => matches!(ty, MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING),
            "tinytext" | "text" | "mediumtext" | "longtext" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                ty == MYSQL_TYPE_BLOB
            }
            "json" => matches!(ty, MYSQL_TYPE_JSON | MYSQL_TYPE_BLOB),
            "enum" => ty == MYSQL_TYPE_ENUM,
            "set" => ty == MYSQL_TYPE_SET,
            "bit" => ty == MYSQL_TYPE_BIT,
            "vector" => ty == MYSQL_TYPE_VECTOR,
            _ => true, // spatial and other types: nothing to compare with confidence
        };
        if !fits {
            bail!(
                "`{db}`.`{table}` changed since these rows were written: column {} is {ty:?} in the binlog but `{}` {} in information_schema, so its rows cannot be named by today's schema. Set binlog_row_metadata=FULL on the server (the binlog then carries its own column names), and start from a position after the schema change",
                i + 1,
                Escaped(&col.name),
                Escaped(&col.data_type),
                db = Escaped(db),
                table = Escaped(table),
            );
        }
    }
    Ok(())
}

fn note(gaps: &mut Vec<&'static str>, what: &'static str) {
    if !gaps.contains(&what) {
        gaps.push(what);
    }
}

fn byte_at(meta: &[u8], i: usize, col: usize) -> Result<u8> {
    meta.get(i).copied().with_context(|| format!("column {col} has truncated type metadata"))
}

/// The decoder for a column of binlog type `ty` with TABLE_MAP metadata `meta`.
fn kind_of(ty: ColumnType, meta: &[u8], unsigned: bool, text: TextEncoding) -> Result<Kind> {
    use ColumnType::*;
    let m = |i: usize| meta.get(i).copied().context("truncated type metadata");
    let len_bytes = || -> Result<u8> {
        let n = m(0)?;
        if !(1..=4).contains(&n) {
            bail!("impossible length size {n}");
        }
        Ok(n)
    };
    let fsp = || -> Result<u8> {
        let f = m(0)?;
        if f > 6 {
            bail!("impossible fractional seconds precision {f}");
        }
        Ok(f)
    };
    Ok(match ty {
        MYSQL_TYPE_TINY => Kind::Int { bytes: 1, unsigned },
        MYSQL_TYPE_SHORT => Kind::Int { bytes: 2, unsigned },
        MYSQL_TYPE_INT24 => Kind::Int { bytes: 3, unsigned },
        MYSQL_TYPE_LONG => Kind::Int { bytes: 4, unsigned },
        MYSQL_TYPE_LONGLONG => Kind::Int { bytes: 8, unsigned },
        MYSQL_TYPE_FLOAT => Kind::Float,
        MYSQL_TYPE_DOUBLE => Kind::Double,
        MYSQL_TYPE_NEWDECIMAL => Kind::Decimal { precision: m(0)?, scale: m(1)? },
        MYSQL_TYPE_YEAR => Kind::Year,
        MYSQL_TYPE_NEWDATE | MYSQL_TYPE_DATE => Kind::Date,
        MYSQL_TYPE_TIME => Kind::OldTime,
        MYSQL_TYPE_DATETIME => Kind::OldDateTime,
        MYSQL_TYPE_TIMESTAMP => Kind::OldTimestamp,
        MYSQL_TYPE_TIME2 => Kind::Time2 { fsp: fsp()? },
        MYSQL_TYPE_DATETIME2 => Kind::DateTime2 { fsp: fsp()? },
        MYSQL_TYPE_TIMESTAMP2 => Kind::Timestamp2 { fsp: fsp()? },
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
            let max = u16::from_le_bytes([m(0)?, m(1)?]);
            Kind::Str { len_bytes: if max < 256 { 1 } else { 2 }, text }
        }
        MYSQL_TYPE_STRING => {
            // CHAR(n): the maximum byte length is split across the two metadata bytes.
            let (b0, b1) = (m(0)?, m(1)?);
            let max =
                if b0 & 0x30 != 0x30 { u16::from(b1) | (u16::from((b0 & 0x30) ^ 0x30) << 4) } else { u16::from(b1) };
            let len_bytes = if max < 256 { 1 } else { 2 };
            if text == TextEncoding::Binary {
                // BINARY(n) loses its trailing zero bytes in the binlog; they are part of the value.
                Kind::FixedBinary { len_bytes, width: max }
            } else {
                Kind::Str { len_bytes, text }
            }
        }
        MYSQL_TYPE_BLOB | MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB => {
            Kind::Blob { len_bytes: len_bytes()?, text }
        }
        MYSQL_TYPE_JSON => Kind::Json { len_bytes: len_bytes()? },
        MYSQL_TYPE_GEOMETRY => Kind::Geometry { len_bytes: len_bytes()? },
        MYSQL_TYPE_VECTOR => Kind::Vector { len_bytes: len_bytes()? },
        MYSQL_TYPE_BIT => {
            // Metadata: bits beyond whole bytes, then whole bytes.
            let (rem_bits, whole_bytes) = (m(0)?, m(1)?);
            let bytes = u16::from(whole_bytes) + u16::from(rem_bits > 0);
            if bytes > 8 || rem_bits > 7 {
                bail!("BIT wider than 64 bits");
            }
            Kind::Bit { bytes: bytes as u8, bits: whole_bytes * 8 + rem_bits }
        }
        other => bail!("column type {other:?} cannot appear in row events"),
    })
}

/// Checks the optional metadata at the end of a TABLE_MAP body where mysql_common would trust a
/// count: its ENUM and SET value lists reserve memory for as many values as they claim. Each
/// count is checked against the bytes that hold the values. `table_id_len` is 6 (4 on servers
/// before 5.1.4).
pub fn check_optional_metadata(body: &[u8], table_id_len: usize) -> Result<()> {
    const SET_STR_VALUE: u64 = 5;
    const ENUM_STR_VALUE: u64 = 6;
    let mut cur = Cursor::new(body);
    cur.take(table_id_len + 2)?; // table id, flags
    for _ in 0..2 {
        let name_len = cur.uint_le(1)? as usize;
        cur.take(name_len + 1)?; // database, then table name, each NUL-terminated
    }
    let columns = usize::try_from(cur.lenenc()?)?;
    cur.take(columns)?;
    let meta_len = usize::try_from(cur.lenenc()?)?;
    cur.take(meta_len)?;
    cur.take(columns.div_ceil(8))?;
    while !cur.is_empty() {
        let field = cur.uint_le(1)?;
        let len = usize::try_from(cur.lenenc()?)?;
        let value = cur.take(len)?;
        if field != SET_STR_VALUE && field != ENUM_STR_VALUE {
            continue;
        }
        let mut values = Cursor::new(value);
        while !values.is_empty() {
            let count = values.lenenc()?;
            let left = values.data.len() - values.pos;
            if count > left as u64 {
                bail!("TABLE_MAP metadata claims {count} ENUM/SET values in {left} bytes");
            }
            for _ in 0..count {
                let value_len = usize::try_from(values.lenenc()?)?;
                values.take(value_len)?;
            }
        }
    }
    Ok(())
}

/// The SQL type text of a column, from its binlog type and decoder.
pub fn sql_type(ty: ColumnType, kind: &Kind) -> String {
    use ColumnType::*;
    let sized = |base: &str, n: u8| if n > 0 { format!("{base}({n})") } else { base.to_string() };
    let listed = |base: &str, names: &Option<Vec<String>>| match names {
        Some(names) => {
            let quoted: Vec<String> = names.iter().map(|n| format!("'{}'", n.replace('\'', "''"))).collect();
            format!("{base}({})", quoted.join(","))
        }
        None => base.to_string(),
    };
    let text_or_binary = |text: &TextEncoding, as_text: &str, as_binary: &str| {
        if *text == TextEncoding::Binary {
            as_binary.to_string()
        } else {
            as_text.to_string()
        }
    };
    match kind {
        Kind::Int { bytes, unsigned } => {
            let base = match bytes {
                1 => "tinyint",
                2 => "smallint",
                3 => "mediumint",
                4 => "int",
                _ => "bigint",
            };
            if *unsigned {
                format!("{base} unsigned")
            } else {
                base.to_string()
            }
        }
        Kind::Float => "float".into(),
        Kind::Double => "double".into(),
        Kind::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
        Kind::Year => "year".into(),
        Kind::Date => "date".into(),
        Kind::OldTime => "time".into(),
        Kind::OldDateTime => "datetime".into(),
        Kind::OldTimestamp => "timestamp".into(),
        Kind::Time2 { fsp } => sized("time", *fsp),
        Kind::DateTime2 { fsp } => sized("datetime", *fsp),
        Kind::Timestamp2 { fsp } => sized("timestamp", *fsp),
        Kind::Str { text, .. } if ty == MYSQL_TYPE_STRING => text_or_binary(text, "char", "binary"),
        Kind::Str { text, .. } => text_or_binary(text, "varchar", "varbinary"),
        Kind::FixedBinary { width, .. } => format!("binary({width})"),
        Kind::Blob { len_bytes, text } => {
            let size = ["tiny", "", "medium", "long"][usize::from(len_bytes.clamp(&1, &4) - 1)];
            format!("{size}{}", text_or_binary(text, "text", "blob"))
        }
        Kind::Json { .. } => "json".into(),
        Kind::Geometry { .. } => "geometry".into(),
        Kind::Vector { .. } => "vector".into(),
        Kind::Bit { bits, .. } => format!("bit({bits})"),
        Kind::Enum { names, .. } => listed("enum", names),
        Kind::Set { names, .. } => listed("set", names),
    }
}

/// Tables by TABLE_MAP id, reusing the built schema while the TABLE_MAP bytes are unchanged.
/// A table the filters exclude is cached as `None`: its rows are skipped undecoded.
#[derive(Default)]
pub struct TableCache {
    by_id: std::collections::HashMap<u64, (Vec<u8>, Option<Arc<Table>>)>,
}

impl TableCache {
    /// None if the id is unknown; Some(None) if the table is filtered out.
    pub fn get(&self, id: u64) -> Option<Option<&Arc<Table>>> {
        self.by_id.get(&id).map(|(_, t)| t.as_ref())
    }

    /// True if `raw` is a TABLE_MAP body identical to the one its table id was built from.
    pub fn reuses(&self, raw: &[u8]) -> bool {
        // Both id widths (4 and 6 bytes) are covered: identical bodies have identical ids.
        let id = raw.get(..6).map(|b| b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)));
        let id4 = raw.get(..4).map(|b| b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)));
        [id, id4].into_iter().flatten().any(|id| self.by_id.get(&id).is_some_and(|(r, _)| r == raw))
    }

    pub fn insert(&mut self, id: u64, raw: &[u8], table: Option<Arc<Table>>) {
        self.by_id.insert(id, (raw.to_vec(), table));
    }

    /// After DDL: schemas taken from information_schema may be stale now.
    pub fn forget_looked_up(&mut self) {
        self.by_id.retain(|_, (_, t)| !t.as_ref().is_some_and(|t| t.looked_up));
    }

    /// Called between transactions, when no rows event can still refer to a cached map: keeps
    /// the cache bounded on servers that churn through table ids.
    pub fn trim(&mut self) {
        if self.by_id.len() > 4096 {
            self.by_id.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::primary_key;

    #[test]
    fn primary_key_columns_in_their_index_order() {
        // PRIMARY KEY (c, a) or a promoted UNIQUE (c, a): the index's order, as the binlog names it.
        assert_eq!(primary_key(&[true, false, true], &[vec![1], vec![2, 0]]), [2, 0]);
        // No index known (the decoder's information_schema fallback): column order.
        assert_eq!(primary_key(&[true, false, true], &[]), [0, 2]);
        assert_eq!(primary_key(&[false, false], &[vec![0]]), Vec::<usize>::new());
    }
}
