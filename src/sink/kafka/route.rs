//! Where each event goes in Kafka: topic, key and headers.
//!
//! Invariants: the value is exactly the JSON line `dump` prints (in the chosen format); the key
//! is the one the format's own tool gives (`--kafka-key pk`); the event id header is derived from
//! the binlog position (GTID or FILE:OFFSET, plus the row index), so a replayed event carries the
//! same id and consumers can deduplicate. Snapshot reads add their table and key, since many
//! share one position.

use rdkafka::message::{Header, OwnedHeaders};

use super::config::{KafkaSettings, KeyMode};
use crate::event::{Change, Ddl, Op};
use crate::format::{Encoder, Part};

pub struct Routed {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub headers: OwnedHeaders,
}

/// One message of a change (`part`); `op` names it in the headers (`tombstone` for Debezium's
/// tombstones).
pub fn change(settings: &KafkaSettings, encoder: &Encoder, c: &Change, part: Part, op: &str) -> Routed {
    let t = &c.table;
    let topic =
        format!("{}{}", settings.topic_prefix, settings.topic.replace("{db}", &t.db).replace("{table}", &t.name));
    let key = match settings.key {
        KeyMode::Pk => {
            let mut k = Vec::with_capacity(32);
            encoder.write_pk_key(c, part, &mut k).then_some(k)
        }
        KeyMode::None => None,
        KeyMode::Table => Some(format!("{}.{}", t.db, t.name).into_bytes()),
    };
    let position = format!("{}:{}", c.file, c.offset);
    let mut id = match c.op {
        // Chunks of several tables, or consecutive chunks of one, can share a position: a read
        // is named by its table and key (the whole row for a table without a primary key).
        Op::Read => {
            let mut key = Vec::with_capacity(64);
            if t.pk.is_empty() {
                c.write_after(&mut key);
            } else {
                c.write_pk(&mut key);
            }
            format!("{position}/{}.{}/{}/{}", t.db, t.name, String::from_utf8_lossy(&key), c.row)
        }
        _ => format!("{}/{}", crate::event::origin(c.gtid.as_deref(), &c.file, c.offset), c.row),
    };
    if part != Part::Whole || op == "tombstone" {
        // One row, several messages (Debezium): each keeps an id of its own.
        id.push('/');
        id.push_str(op);
    }
    let headers = OwnedHeaders::new_with_capacity(6)
        .insert(Header { key: "gtid", value: c.gtid.as_deref() })
        .insert(Header { key: "op", value: Some(op) })
        .insert(Header { key: "db", value: Some(t.db.as_str()) })
        .insert(Header { key: "table", value: Some(t.name.as_str()) })
        .insert(Header { key: "pos", value: Some(position.as_str()) })
        .insert(Header { key: "id", value: Some(id.as_str()) });
    Routed { topic, key, headers }
}

pub fn ddl(settings: &KafkaSettings, d: &Ddl) -> Routed {
    let position = format!("{}:{}", d.file, d.offset);
    let headers = OwnedHeaders::new_with_capacity(4)
        .insert(Header { key: "gtid", value: d.gtid.as_deref() })
        .insert(Header { key: "op", value: Some("ddl") })
        .insert(Header { key: "db", value: Some(d.db.as_str()) })
        .insert(Header { key: "pos", value: Some(position.as_str()) });
    Routed {
        topic: format!("{}{}", settings.topic_prefix, settings.ddl_topic),
        key: Some(d.db.clone().into_bytes()),
        headers,
    }
}
