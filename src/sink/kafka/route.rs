//! Where each event goes in Kafka: topic, key and headers.
//!
//! Invariants: the value is exactly the JSON line `dump` prints (in the chosen format); the key
//! is the one the format's own tool gives (`--kafka-key pk`); the event id header is derived from
//! the binlog position (GTID or FILE:OFFSET, plus the row index), so a replayed event carries the
//! same id and consumers can deduplicate. Snapshot reads add their table and key, since many
//! share one position. `--kafka-headers` only leaves headers out: a header that is sent has the
//! same value in every mode (pinned by the sink's tests).
//!
//! Nothing is allocated here per message: the topic is kept for the table last routed (rows come
//! in runs of one table), the key and the header values are written into buffers that are reused.
//! librdkafka copies each header it is given, so fewer headers is the saving that remains.

use std::sync::Arc;

use rdkafka::message::{Header, OwnedHeaders};

use super::config::{HeaderMode, KafkaSettings, KeyMode};
use crate::event::{push_origin, Change, Ddl, Op};
use crate::format::{Encoder, Part};
use crate::outbox::Message;
use crate::schema::Table;

/// The destination of the message being sent, in buffers reused from one message to the next.
#[derive(Default)]
pub struct Router {
    /// The table whose topic `topic` is, when the last message was a change.
    topic_of: Option<Arc<Table>>,
    pub topic: String,
    key: Vec<u8>,
    has_key: bool,
    id: String,
    pos: String,
    /// A snapshot read's key, for its id.
    read_key: Vec<u8>,
}

impl Router {
    pub fn key(&self) -> Option<&[u8]> {
        self.has_key.then_some(self.key.as_slice())
    }

    /// Routes one message of a change (`part`); `op` names it in the headers (`tombstone` for
    /// Debezium's tombstones). The headers are None when none are sent.
    pub fn change(
        &mut self,
        settings: &KafkaSettings,
        encoder: &Encoder,
        c: &Change,
        part: Part,
        op: &str,
    ) -> Option<OwnedHeaders> {
        self.route(settings, encoder, c, part);
        let t = &c.table;
        if settings.headers == HeaderMode::None {
            return None;
        }
        if settings.headers == HeaderMode::All || c.op == Op::Read {
            self.pos.clear();
            push_origin(&mut self.pos, None, &c.file, c.offset);
        }
        self.id.clear();
        match c.op {
            // Chunks of several tables, or consecutive chunks of one, can share a position: a read
            // is named by its table and key (the whole row for a table without a primary key).
            Op::Read => {
                self.read_key.clear();
                if t.pk.is_empty() {
                    c.write_after(&mut self.read_key);
                } else {
                    c.write_pk(&mut self.read_key);
                }
                self.id.push_str(&self.pos);
                self.id.push('/');
                self.id.push_str(&t.db);
                self.id.push('.');
                self.id.push_str(&t.name);
                self.id.push('/');
                self.id.push_str(&String::from_utf8_lossy(&self.read_key));
            }
            _ => push_origin(&mut self.id, c.gtid.as_deref(), &c.file, c.offset),
        }
        self.id.push('/');
        self.id.push_str(itoa::Buffer::new().format(c.row));
        if part != Part::Whole || op == "tombstone" {
            // One row, several messages (Debezium): each keeps an id of its own.
            self.id.push('/');
            self.id.push_str(op);
        }
        let id = Header { key: "id", value: Some(self.id.as_str()) };
        Some(match settings.headers {
            HeaderMode::All => headers(6)
                .insert(Header { key: "gtid", value: c.gtid.as_deref() })
                .insert(Header { key: "op", value: Some(op) })
                .insert(Header { key: "db", value: Some(t.db.as_str()) })
                .insert(Header { key: "table", value: Some(t.name.as_str()) })
                .insert(Header { key: "pos", value: Some(self.pos.as_str()) })
                .insert(id),
            _ => headers(1).insert(id),
        })
    }

    /// Sets the topic and key of a change's message (`part`).
    pub fn route(&mut self, settings: &KafkaSettings, encoder: &Encoder, c: &Change, part: Part) {
        let t = &c.table;
        if !self.topic_of.as_ref().is_some_and(|known| Arc::ptr_eq(known, t)) {
            self.topic.clear();
            self.topic.push_str(&table_topic(settings, &t.db, &t.name));
            self.topic_of = Some(t.clone());
        }
        self.key.clear();
        self.has_key = match settings.key {
            KeyMode::Pk => encoder.write_pk_key(c, part, &mut self.key),
            KeyMode::None => false,
            KeyMode::Table => {
                self.key.extend_from_slice(t.db.as_bytes());
                self.key.push(b'.');
                self.key.extend_from_slice(t.name.as_bytes());
                true
            }
        };
    }

    pub fn ddl(&mut self, settings: &KafkaSettings, d: &Ddl) -> Option<OwnedHeaders> {
        self.set_topic(settings, &settings.ddl_topic);
        self.set_key(Some(d.db.as_bytes()));
        match settings.headers {
            HeaderMode::All => {
                self.pos.clear();
                push_origin(&mut self.pos, None, &d.file, d.offset);
                Some(
                    headers(4)
                        .insert(Header { key: "gtid", value: d.gtid.as_deref() })
                        .insert(Header { key: "op", value: Some("ddl") })
                        .insert(Header { key: "db", value: Some(d.db.as_str()) })
                        .insert(Header { key: "pos", value: Some(self.pos.as_str()) }),
                )
            }
            HeaderMode::Minimal => Some(headers(0)),
            HeaderMode::None => None,
        }
    }

    /// An outbox message: its own headers are part of it, sent in every mode.
    pub fn message(&mut self, settings: &KafkaSettings, msg: &Message) -> Option<OwnedHeaders> {
        self.set_topic(settings, &msg.topic);
        self.set_key(msg.key.as_deref());
        if msg.headers.is_empty() && settings.headers == HeaderMode::None {
            return None;
        }
        let mut h = headers(msg.headers.len());
        for (k, v) in &msg.headers {
            h = h.insert(Header { key: k, value: Some(v) });
        }
        Some(h)
    }

    fn set_topic(&mut self, settings: &KafkaSettings, name: &str) {
        self.topic_of = None;
        self.topic.clear();
        self.topic.push_str(&settings.topic_prefix);
        self.topic.push_str(name);
    }

    fn set_key(&mut self, key: Option<&[u8]>) {
        self.key.clear();
        self.key.extend_from_slice(key.unwrap_or_default());
        self.has_key = key.is_some();
    }
}

/// The topic of a table's changes.
pub fn table_topic(settings: &KafkaSettings, db: &str, table: &str) -> String {
    let mut topic = settings.topic_prefix.clone();
    topic.push_str(&settings.topic.replace("{db}", db).replace("{table}", table));
    topic
}

/// A header list for `n` headers and the order header the sink appends (`dedupe::HEADER`).
fn headers(n: usize) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(n + 1)
}
