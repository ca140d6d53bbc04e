//! The transactional outbox: rows inserted into an outbox table become domain events, routed by
//! aggregate, instead of change events.
//!
//! The decoder routes an outbox table's rows here instead of emitting change events, so they
//! take no part in a transaction's `row`/`commit` numbering.
//!
//! Invariants: only inserts are published (applications may delete outbox rows right after
//! inserting them; the binlog keeps the insert); the payload is published as stored, never
//! wrapped; a missing outbox column is an error, never an event with a hole in it.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;

use crate::schema::{Kind, RowImage, Table};
use crate::text::{write_json_str, TextEncoding};

/// One outbox table and how its columns map to the message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxTable {
    /// `db.table`.
    pub table: String,
    /// Topic template; `{aggregate_type}`, `{db}` and `{table}` are replaced.
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default = "default_id")]
    pub id_column: String,
    #[serde(default = "default_aggregate_type")]
    pub aggregate_type_column: String,
    #[serde(default = "default_aggregate_id")]
    pub aggregate_id_column: String,
    #[serde(default = "default_type")]
    pub type_column: String,
    #[serde(default = "default_payload")]
    pub payload_column: String,
}

/// The topic template of outbox tables that name none (`--outbox-topic`).
pub const DEFAULT_TOPIC: &str = "outbox.event.{aggregate_type}";

pub fn default_topic() -> String {
    DEFAULT_TOPIC.into()
}
fn default_id() -> String {
    "id".into()
}
fn default_aggregate_type() -> String {
    "aggregate_type".into()
}
fn default_aggregate_id() -> String {
    "aggregate_id".into()
}
fn default_type() -> String {
    "type".into()
}
fn default_payload() -> String {
    "payload".into()
}

impl OutboxTable {
    /// An outbox table with the common schema's column names.
    pub fn with_defaults(table: &str, topic: &str) -> Result<OutboxTable> {
        let t = OutboxTable {
            table: table.to_string(),
            topic: topic.to_string(),
            id_column: default_id(),
            aggregate_type_column: default_aggregate_type(),
            aggregate_id_column: default_aggregate_id(),
            type_column: default_type(),
            payload_column: default_payload(),
        };
        t.validate()?;
        Ok(t)
    }

    /// An `--outbox` value: `db.table`, or a JSON object with `table` and any of the column
    /// names and the topic (the config file's `[[outbox]]` tables arrive as such objects).
    pub fn parse(spec: &str, topic: &str) -> Result<OutboxTable> {
        if !spec.trim_start().starts_with('{') {
            return OutboxTable::with_defaults(spec, topic);
        }
        let mut value: serde_json::Value =
            serde_json::from_str(spec).with_context(|| format!("--outbox `{spec}` is not a JSON object"))?;
        if let Some(object) = value.as_object_mut() {
            object.entry("topic").or_insert_with(|| topic.into());
        }
        let table: OutboxTable = serde_json::from_value(value).with_context(|| format!("--outbox `{spec}`"))?;
        table.validate()?;
        Ok(table)
    }

    pub fn validate(&self) -> Result<()> {
        match self.table.split_once('.') {
            Some((db, t)) if !db.is_empty() && !t.is_empty() => Ok(()),
            _ => bail!("outbox table `{}` must be written db.table", self.table),
        }
    }

    pub fn is(&self, db: &str, table: &str) -> bool {
        self.table.split_once('.') == Some((db, table))
    }
}

/// A message for a topic: what the outbox turns an inserted row into.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The transaction it came from: its GTID, or `FILE:OFFSET` of the rows event.
    pub origin: String,
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub value: Vec<u8>,
}

impl Message {
    /// `{"topic":...,"key":...,"headers":{...},"value":...}`: the value embedded as JSON when
    /// it is JSON, else as a string (base64 when it is not UTF-8).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"topic\":");
        write_json_str(&self.topic, out);
        out.extend_from_slice(b",\"key\":");
        match &self.key {
            Some(k) => write_bytes(k, out),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"headers\":{");
        for (i, (name, value)) in self.headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_str(name, out);
            out.push(b':');
            write_bytes(value, out);
        }
        out.extend_from_slice(b"},\"value\":");
        if serde_json::from_slice::<serde::de::IgnoredAny>(&self.value).is_ok() {
            out.extend_from_slice(&self.value);
        } else {
            write_bytes(&self.value, out);
        }
        out.push(b'}');
    }
}

fn write_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => write_json_str(s, out),
        Err(_) => {
            let _ = TextEncoding::Binary.write_json(bytes, out);
        }
    }
}

/// The raw bytes of a decoded column value: strings unquoted, binary un-base64ed, JSON and
/// numbers as their text; None for SQL NULL.
fn raw_value(kind: &Kind, json: &[u8]) -> Result<Option<Vec<u8>>> {
    if json == b"null" {
        return Ok(None);
    }
    let binary = matches!(
        kind,
        Kind::FixedBinary { .. }
            | Kind::Str { text: TextEncoding::Binary, .. }
            | Kind::Blob { text: TextEncoding::Binary, .. }
    );
    if json.first() == Some(&b'"') && !matches!(kind, Kind::Json { .. }) {
        let s: String = serde_json::from_slice(json)?;
        if binary {
            return Ok(Some(base64::engine::general_purpose::STANDARD.decode(s)?));
        }
        return Ok(Some(s.into_bytes()));
    }
    Ok(Some(json.to_vec()))
}

/// The message for a row inserted into the outbox table `spec`.
pub fn message(spec: &OutboxTable, table: &Table, after: &RowImage, origin: String) -> Result<Message> {
    let column = |name: &str| -> Result<Option<Vec<u8>>> {
        let i = table.columns.iter().position(|c| c.name == name).with_context(|| {
            format!("outbox table {} has no column `{name}` (name it in the [[outbox]] settings)", spec.table)
        })?;
        raw_value(&table.columns[i].kind, after.value(i).unwrap_or(b"null"))
    };
    let text = |v: Option<Vec<u8>>| String::from_utf8_lossy(&v.unwrap_or_default()).into_owned();
    let aggregate_type = text(column(&spec.aggregate_type_column)?);
    let topic = spec
        .topic
        .replace("{aggregate_type}", &aggregate_type)
        .replace("{db}", &table.db)
        .replace("{table}", &table.name);
    let mut headers = Vec::new();
    if let Some(id) = column(&spec.id_column)? {
        headers.push(("id".to_string(), id));
    }
    if let Some(t) = column(&spec.type_column)? {
        headers.push(("type".to_string(), t));
    }
    Ok(Message {
        origin,
        topic,
        key: column(&spec.aggregate_id_column)?,
        headers,
        value: column(&spec.payload_column)?.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values() {
        let utf8 = Kind::Str { len_bytes: 1, text: TextEncoding::Utf8 };
        assert_eq!(raw_value(&utf8, b"\"Order\"").unwrap().unwrap(), b"Order");
        let bin = Kind::Blob { len_bytes: 2, text: TextEncoding::Binary };
        assert_eq!(raw_value(&bin, b"\"AP8=\"").unwrap().unwrap(), [0, 255]);
        let json = Kind::Json { len_bytes: 4 };
        assert_eq!(raw_value(&json, b"\"a string doc\"").unwrap().unwrap(), b"\"a string doc\"");
        assert_eq!(raw_value(&Kind::Int { bytes: 8, unsigned: false }, b"42").unwrap().unwrap(), b"42");
        assert_eq!(raw_value(&utf8, b"null").unwrap(), None);
    }

    #[test]
    fn message_json() {
        let m = Message {
            origin: "0-1-5".into(),
            topic: "outbox.event.Order".into(),
            key: Some(b"17".to_vec()),
            headers: vec![("id".into(), b"e1".to_vec()), ("type".into(), b"OrderCreated".to_vec())],
            value: br#"{"total": 5}"#.to_vec(),
        };
        let mut out = Vec::new();
        m.write_json(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"topic":"outbox.event.Order","key":"17","headers":{"id":"e1","type":"OrderCreated"},"value":{"total": 5}}"#
        );
    }
}
