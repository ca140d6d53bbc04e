//! WRITE/UPDATE/DELETE_ROWS events (v1 and v2, MySQL and MariaDB) and PARTIAL_UPDATE_ROWS,
//! decoded into row images of JSON values.
//!
//! Invariants: a row image holds exactly the columns the event's column bitmap names (columns
//! left out by `binlog_row_image=MINIMAL/NOBLOB` are absent, not null); a partial JSON update is
//! applied to the before image, and where that is impossible the value says so explicitly.

use anyhow::{bail, Context, Result};
use mysql_common::binlog::consts::EventType;
use mysql_common::binlog::jsondiff::{JsonDiff, JsonDiffOperation};
use mysql_common::io::ParseBuf;

use super::value::{check_jsonb, write_value, Cursor};
use crate::event::Op;
use crate::schema::{Kind, RowImage, Table};
use crate::text::Escaped;

/// Rows event type codes, as the header's byte (MariaDB writes the same codes).
pub const WRITE_V1: u8 = EventType::WRITE_ROWS_EVENT_V1 as u8;
pub const UPDATE_V1: u8 = EventType::UPDATE_ROWS_EVENT_V1 as u8;
pub const DELETE_V1: u8 = EventType::DELETE_ROWS_EVENT_V1 as u8;
pub const WRITE_V2: u8 = EventType::WRITE_ROWS_EVENT as u8;
pub const UPDATE_V2: u8 = EventType::UPDATE_ROWS_EVENT as u8;
pub const DELETE_V2: u8 = EventType::DELETE_ROWS_EVENT as u8;
pub const PARTIAL_UPDATE: u8 = EventType::PARTIAL_UPDATE_ROWS_EVENT as u8;

pub fn op_of(type_code: u8) -> Option<Op> {
    match type_code {
        WRITE_V1 | WRITE_V2 => Some(Op::Insert),
        UPDATE_V1 | UPDATE_V2 | PARTIAL_UPDATE => Some(Op::Update),
        DELETE_V1 | DELETE_V2 => Some(Op::Delete),
        _ => None,
    }
}

/// The fixed part of a rows event, and where its rows start.
pub struct RowsEvent<'a> {
    pub table_id: u64,
    pub op: Op,
    pub partial: bool,
    pub columns: usize,
    present_before: &'a [u8],
    present_after: &'a [u8],
    rows: &'a [u8],
}

impl<'a> RowsEvent<'a> {
    /// `post_header_len` comes from the format description event (6 = 4-byte table ids).
    pub fn parse(type_code: u8, body: &'a [u8], post_header_len: u8) -> Result<RowsEvent<'a>> {
        let op = op_of(type_code).context("not a rows event")?;
        let mut cur = Cursor::new(body);
        let table_id = cur.uint_le(if post_header_len == 6 { 4 } else { 6 })?;
        let _flags = cur.uint_le(2)?;
        if matches!(type_code, WRITE_V2 | UPDATE_V2 | DELETE_V2 | PARTIAL_UPDATE) {
            let extra = cur.uint_le(2)? as usize;
            cur.take(extra.checked_sub(2).context("bad extra-data length in rows event")?)?;
        }
        let columns = cur.lenenc()? as usize;
        let bitmap_len = columns.div_ceil(8);
        let present_before = cur.take(bitmap_len)?;
        let present_after = if op == Op::Update { cur.take(bitmap_len)? } else { present_before };
        Ok(RowsEvent {
            table_id,
            op,
            partial: type_code == PARTIAL_UPDATE,
            columns,
            present_before,
            present_after,
            rows: &body[cur.pos..],
        })
    }

    /// Decodes every row, handing each (before, after) pair to `emit` as it is decoded.
    pub fn for_each_row(
        &self,
        table: &Table,
        mut emit: impl FnMut(Option<RowImage>, Option<RowImage>) -> Result<()>,
    ) -> Result<()> {
        if self.columns != table.columns.len() {
            bail!(
                "rows event has {} columns but the table map of `{}`.`{}` has {}",
                self.columns,
                Escaped(&table.db),
                Escaped(&table.name),
                table.columns.len()
            );
        }
        let mut cur = Cursor::new(self.rows);
        while !cur.is_empty() {
            let row_start = cur.pos;
            match self.op {
                // Rows events carry no snapshot reads; `op_of` never yields Read.
                Op::Insert | Op::Read => {
                    let after = RowImage::decode(table, self.present_after, &mut cur, None)?;
                    emit(None, Some(after))?;
                }
                Op::Delete => {
                    let before = RowImage::decode(table, self.present_before, &mut cur, None)?;
                    emit(Some(before), None)?;
                }
                Op::Update => {
                    let before = RowImage::decode(table, self.present_before, &mut cur, None)?;
                    let partial_bits = if self.partial { partial_json_bits(table, &mut cur)? } else { None };
                    let after = RowImage::decode(table, self.present_after, &mut cur, Some((&before, partial_bits)))?;
                    emit(Some(before), Some(after))?;
                }
            }
            if cur.pos == row_start {
                // A row of no bytes (no columns present) would repeat forever.
                bail!("rows event for `{}`.`{}` holds a row of zero bytes (its column bitmap names no column): the event is corrupt", Escaped(&table.db), Escaped(&table.name));
            }
        }
        Ok(())
    }
}

/// PARTIAL_UPDATE_ROWS: value options, then one bit per JSON column of the table saying
/// whether its after value is a diff.
fn partial_json_bits(table: &Table, cur: &mut Cursor<'_>) -> Result<Option<Vec<bool>>> {
    const PARTIAL_JSON_UPDATES: u64 = 1;
    let options = cur.lenenc()?;
    if options & PARTIAL_JSON_UPDATES == 0 {
        return Ok(None);
    }
    let json_columns = table.columns.iter().filter(|c| c.kind.is_json()).count();
    let bits = cur.take(json_columns.div_ceil(8))?;
    Ok(Some((0..json_columns).map(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect()))
}

impl RowImage {
    fn decode(
        table: &Table,
        present: &[u8],
        cur: &mut Cursor<'_>,
        partial_of: Option<(&RowImage, Option<Vec<bool>>)>,
    ) -> Result<RowImage> {
        let n = table.columns.len();
        let bit = |bits: &[u8], i: usize| bits[i / 8] & (1 << (i % 8)) != 0;
        let present_count = (0..n).filter(|&i| bit(present, i)).count();
        let nulls = cur.take(present_count.div_ceil(8))?;
        let mut image = RowImage { json: Vec::with_capacity(16 * present_count), spans: vec![None; n], object: false };
        let mut nth_present = 0;
        let mut nth_json = 0;
        for (i, col) in table.columns.iter().enumerate() {
            let is_json = col.kind.is_json();
            let json_idx = nth_json;
            nth_json += usize::from(is_json);
            if !bit(present, i) {
                continue;
            }
            let start = image.json.len();
            if bit(nulls, nth_present) {
                image.json.extend_from_slice(b"null");
            } else {
                let diff = match &partial_of {
                    Some((before, Some(bits))) if is_json && bits.get(json_idx) == Some(&true) => Some(before),
                    _ => None,
                };
                match (diff, &col.kind) {
                    (Some(before), Kind::Json { len_bytes }) => {
                        let len = cur.uint_le(*len_bytes as usize)? as usize;
                        apply_json_diffs(before.value(i), cur.take(len)?, &mut image.json)
                            .with_context(|| format!("partial JSON update of column `{}`", Escaped(&col.name)))?;
                    }
                    _ => write_value(&col.kind, cur, &mut image.json).with_context(|| {
                        format!(
                            "column `{}` of `{}`.`{}`",
                            Escaped(&col.name),
                            Escaped(&table.db),
                            Escaped(&table.name)
                        )
                    })?,
                }
            }
            image.spans[i] = Some((start as u32, image.json.len() as u32));
            nth_present += 1;
        }
        Ok(image)
    }
}

/// Writes the after value of a JSON column updated by diffs. With the before value present the
/// diffs are applied; without it the value is `{"unapplied_json_diff": [...]}`, so a consumer
/// sees exactly what the binlog holds instead of a wrong document.
fn apply_json_diffs(before: Option<&[u8]>, mut raw: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut diffs = Vec::new();
    while !raw.is_empty() {
        check_diff_value(raw)?;
        let mut buf = ParseBuf(raw);
        let diff: JsonDiff<'_> = buf.parse(()).context("bad JSON diff")?;
        raw = buf.0;
        diffs.push(diff);
    }
    let mut doc = match before.map(serde_json::from_slice::<serde_json::Value>) {
        Some(Ok(doc)) if !doc.is_null() => Some(doc),
        _ => None,
    };
    if let Some(doc) = doc.as_mut() {
        let applied = diffs.iter().try_for_each(|d| -> Result<()> {
            let value = d.value().cloned().map(jsonb_value_to_serde).transpose()?;
            apply_one(doc, &d.path_str(), d.operation(), value)
        });
        if applied.is_ok() {
            serde_json::to_writer(out, doc)?;
            return Ok(());
        }
    }
    let mut listed = Vec::new();
    for d in &diffs {
        let value = d.value().cloned().map(jsonb_value_to_serde).transpose()?;
        let op = match d.operation() {
            JsonDiffOperation::REPLACE => "replace",
            JsonDiffOperation::INSERT => "insert",
            JsonDiffOperation::REMOVE => "remove",
        };
        listed.push(serde_json::json!({"op": op, "path": d.path_str(), "value": value}));
    }
    serde_json::to_writer(out, &serde_json::json!({ "unapplied_json_diff": listed }))?;
    Ok(())
}

/// Checks the binary JSON value of the diff at the start of `raw` (operation byte, path,
/// value) before mysql_common parses it recursively.
fn check_diff_value(raw: &[u8]) -> Result<()> {
    const REMOVE: u8 = 2;
    let mut cur = Cursor::new(raw);
    let op = cur.uint_le(1)? as u8;
    let path_len = cur.lenenc()?;
    cur.take(usize::try_from(path_len)?)?;
    if op != REMOVE {
        let len = cur.lenenc()?;
        check_jsonb(cur.take(usize::try_from(len)?)?).context("bad binary JSON in diff")?;
    }
    Ok(())
}

fn jsonb_value_to_serde(v: mysql_common::binlog::jsonb::Value<'_>) -> Result<serde_json::Value> {
    let dom = v.parse().context("bad binary JSON in diff")?;
    Ok(dom.into())
}

#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// MySQL JSON path as written in diffs: `$`, `.key`, `."quoted key"`, `[n]`.
fn parse_path(path: &str) -> Result<Vec<Step>> {
    let rest = path.strip_prefix('$').context("JSON path must start with $")?;
    let mut steps = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut key = String::new();
                if chars.peek() == Some(&'"') {
                    chars.next();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => key.push(chars.next().context("bad escape in JSON path")?),
                            '"' => break,
                            c => key.push(c),
                        }
                    }
                } else {
                    while let Some(&c) = chars.peek() {
                        if c == '.' || c == '[' {
                            break;
                        }
                        key.push(c);
                        chars.next();
                    }
                }
                steps.push(Step::Key(key));
            }
            '[' => {
                let idx: String = chars.by_ref().take_while(|&c| c != ']').collect();
                steps.push(Step::Index(idx.trim().parse().context("bad array index in JSON path")?));
            }
            c if c.is_whitespace() => {}
            c => bail!("unexpected `{}` in JSON path", c.escape_debug()),
        }
    }
    Ok(steps)
}

fn apply_one(
    doc: &mut serde_json::Value,
    path: &str,
    op: JsonDiffOperation,
    value: Option<serde_json::Value>,
) -> Result<()> {
    use serde_json::Value;
    let mut steps = parse_path(path)?;
    let last = steps.pop();
    let mut parent = &mut *doc;
    for step in &steps {
        parent = match (step, parent) {
            (Step::Key(k), Value::Object(m)) => m.get_mut(k).context("path not found")?,
            (Step::Index(i), Value::Array(a)) => a.get_mut(*i).context("path not found")?,
            _ => bail!("path not found"),
        };
    }
    match (op, last, parent) {
        (JsonDiffOperation::REPLACE, None, p) => *p = value.context("replace without value")?,
        (JsonDiffOperation::REPLACE, Some(Step::Key(k)), Value::Object(m)) if m.contains_key(&k) => {
            m.insert(k, value.context("replace without value")?);
        }
        (JsonDiffOperation::REPLACE, Some(Step::Index(i)), Value::Array(a)) if i < a.len() => {
            a[i] = value.context("replace without value")?;
        }
        (JsonDiffOperation::INSERT, Some(Step::Key(k)), Value::Object(m)) => {
            m.insert(k, value.context("insert without value")?);
        }
        (JsonDiffOperation::INSERT, Some(Step::Index(i)), Value::Array(a)) => {
            a.insert(i.min(a.len()), value.context("insert without value")?);
        }
        (JsonDiffOperation::REMOVE, Some(Step::Key(k)), Value::Object(m)) => {
            m.remove(&k).context("path not found")?;
        }
        (JsonDiffOperation::REMOVE, Some(Step::Index(i)), Value::Array(a)) if i < a.len() => {
            a.remove(i);
        }
        _ => bail!("cannot apply {op:?} at {}", Escaped(path)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_paths() {
        assert_eq!(parse_path("$").unwrap(), vec![]);
        assert_eq!(
            parse_path("$.a[2].\"b c\"").unwrap(),
            vec![Step::Key("a".into()), Step::Index(2), Step::Key("b c".into())]
        );
        assert!(parse_path("a.b").is_err());
    }

    #[test]
    fn json_diff_ops() {
        let mut doc = json!({"a": [1, 2, 3], "b": {"c": 1}});
        apply_one(&mut doc, "$.a[1]", JsonDiffOperation::REPLACE, Some(json!("x"))).unwrap();
        apply_one(&mut doc, "$.a[0]", JsonDiffOperation::INSERT, Some(json!(0))).unwrap();
        apply_one(&mut doc, "$.b.c", JsonDiffOperation::REMOVE, None).unwrap();
        apply_one(&mut doc, "$.b.d", JsonDiffOperation::INSERT, Some(json!(true))).unwrap();
        assert_eq!(doc, json!({"a": [0, 1, "x", 3], "b": {"d": true}}));
        assert!(apply_one(&mut doc, "$.zz.y", JsonDiffOperation::REPLACE, Some(json!(1))).is_err());
    }
}
