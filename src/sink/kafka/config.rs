//! Kafka producer configuration: safe defaults, pass-through librdkafka properties, and the
//! routing settings.
//!
//! Invariants: idempotence, `acks=all` and unlimited retries are the defaults (a user may
//! override them deliberately with `-X`); secrets given as properties are never logged.

use anyhow::{bail, Result};
use rdkafka::ClientConfig;
use serde::Deserialize;

/// Which bytes become the message key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyMode {
    /// The primary key as a JSON object: every change of a row goes to the same partition.
    Pk,
    /// `db.table`: a table's changes stay in order relative to each other.
    Table,
    /// No key: round-robin partitions.
    None,
}

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    /// Topic template: `{db}` and `{table}` are replaced; a name without them is one fixed topic.
    pub topic: String,
    pub topic_prefix: String,
    /// Where DDL events go (`--emit-ddl`).
    pub ddl_topic: String,
    pub key: KeyMode,
    pub compression: String,
    /// librdkafka properties (`-X key=value`, `[kafka]` in the config file), applied last.
    pub properties: Vec<(String, String)>,
    /// Skip replayed messages that a partition already holds (`--kafka-dedupe`).
    pub dedupe: bool,
}

impl KafkaSettings {
    /// The property `partitioner`, if set.
    pub fn partitioner(&self) -> Option<&str> {
        self.properties.iter().rev().find(|(k, _)| k == "partitioner").map(|(_, v)| v.as_str())
    }

    /// What decides which message goes where (never the property values, which may be secrets).
    pub fn routing(&self) -> String {
        format!("{}|{}|{}|{:?}|{}", self.topic, self.topic_prefix, self.ddl_topic, self.key, self.partitioner().unwrap_or(""))
    }

    pub fn client_config(&self) -> Result<ClientConfig> {
        if !["zstd", "lz4", "snappy", "gzip", "none"].contains(&self.compression.as_str()) {
            bail!("--kafka-compression {} is not one of zstd, lz4, snappy, gzip, none", self.compression);
        }
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            // Retriable errors are retried until they succeed: nothing is dropped by a timeout.
            .set("message.timeout.ms", "0")
            .set("compression.type", &self.compression)
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            // Bounded memory: when this much is in flight, reading the binlog waits.
            .set("queue.buffering.max.kbytes", "32768")
            .set("queue.buffering.max.messages", "100000");
        if self.dedupe {
            // A partition's last message proves the ones before it are there only if no
            // message can land after one that failed.
            cfg.set("enable.gapless.guarantee", "true");
        }
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
        Ok(cfg)
    }
}

/// `key=value` from `-X`.
pub fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{text}` is not key=value (a librdkafka property, e.g. -X security.protocol=SASL_SSL)")),
    }
}

/// Settings for unit tests: the default routing, to `brokers`.
#[cfg(test)]
pub fn test_settings(brokers: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: brokers.into(),
        topic: "{db}.{table}".into(),
        topic_prefix: String::new(),
        ddl_topic: "ddl".into(),
        key: KeyMode::Pk,
        compression: "lz4".into(),
        properties: vec![],
        dedupe: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_safe_and_overridable() {
        let s = KafkaSettings { properties: vec![("linger.ms".into(), "50".into())], ..test_settings("b:9092") };
        let cfg = s.client_config().unwrap();
        assert_eq!(cfg.get("enable.idempotence"), Some("true"));
        assert_eq!(cfg.get("acks"), Some("all"));
        assert_eq!(cfg.get("linger.ms"), Some("50"));
        assert!(KafkaSettings { compression: "brotli".into(), ..s }.client_config().is_err());
        assert_eq!(parse_property("sasl.password=a=b").unwrap(), ("sasl.password".into(), "a=b".into()));
        assert!(parse_property("nonsense").is_err());
    }
}
