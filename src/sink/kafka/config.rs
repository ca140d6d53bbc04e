//! Kafka producer configuration: safe defaults, pass-through librdkafka properties, and the
//! routing settings.
//!
//! Invariants: idempotence and `acks=all` are fixed (`FIXED`: the position moves only past
//! messages every in-sync replica holds, and dedupe relies on the gapless guarantee); unlimited
//! retries and the tuning defaults may be overridden with `-X`; secrets given as properties are
//! never logged.

use anyhow::{bail, Result};
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

/// Which bytes become the message key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyMode {
    /// The primary key as a JSON object: every change of a row goes to the same partition.
    Pk,
    /// `db.table`: a table's changes stay in order relative to each other.
    Table,
    /// No key: round-robin partitions.
    None,
}

/// Which headers binlog-tail puts on the messages it makes (an outbox message's own headers are
/// part of it and always sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HeaderMode {
    /// `gtid`, `op`, `db`, `table`, `pos`, `id` and `binlog_tail.seq`.
    All,
    /// `id` (for consumers that deduplicate) and `binlog_tail.seq` (for --kafka-dedupe): the rest
    /// is in the value, the topic and the key.
    Minimal,
    /// None: only with --kafka-dedupe off, which needs `binlog_tail.seq`.
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
    pub headers: HeaderMode,
}

/// `--kafka-topic`'s default.
pub const DEFAULT_TOPIC: &str = "{db}.{table}";
/// `--kafka-ddl-topic`'s default.
pub const DEFAULT_DDL_TOPIC: &str = "binlog_tail.ddl";
/// `--kafka-compression`'s default.
pub const DEFAULT_COMPRESSION: &str = "lz4";

impl KafkaSettings {
    /// The defaults, on `brokers` with `properties`.
    pub fn new(brokers: String, properties: Vec<(String, String)>) -> KafkaSettings {
        KafkaSettings {
            brokers,
            topic: DEFAULT_TOPIC.into(),
            topic_prefix: String::new(),
            ddl_topic: DEFAULT_DDL_TOPIC.into(),
            key: KeyMode::Pk,
            compression: DEFAULT_COMPRESSION.into(),
            properties,
            dedupe: true,
            headers: HeaderMode::Minimal,
        }
    }

    /// The property `partitioner`, if set.
    pub fn partitioner(&self) -> Option<&str> {
        self.properties.iter().rev().find(|(k, _)| k == "partitioner").map(|(_, v)| v.as_str())
    }

    /// What decides which message goes where (never the property values, which may be secrets).
    pub fn routing(&self) -> String {
        format!(
            "{}|{}|{}|{:?}|{}",
            self.topic,
            self.topic_prefix,
            self.ddl_topic,
            self.key,
            self.partitioner().unwrap_or("")
        )
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
            // Latency stays bounded by linger.ms (a batch waits at most that long); under load a
            // batch fills up first: up to 10,000 messages or 1 MB per partition and request.
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("batch.size", "1000000")
            // Bounded memory: when this much is in flight, reading the binlog waits. The byte
            // limit counts keys and values only; each message costs librdkafka a few hundred
            // bytes more, so the count is what keeps the process within 64 MiB. 20,000 messages
            // are still tens of milliseconds of work at full speed, more than a broker round trip.
            .set("queue.buffering.max.kbytes", "16384")
            .set("queue.buffering.max.messages", "20000");
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

    /// The same cluster and security settings for a consumer (partition tails, the position
    /// store, the lease), without the producer-only properties, which would only make it warn.
    pub fn consumer_config(&self) -> Result<ClientConfig> {
        let mut cfg = self.client_config()?;
        for key in PRODUCER_ONLY {
            cfg.remove(key);
        }
        cfg.set("enable.auto.commit", "false").set("enable.partition.eof", "false");
        Ok(cfg)
    }

    /// Every setting checked as librdkafka will read it, without creating a client: a misspelled
    /// key or a bad value is named, its value never printed.
    pub fn check(&self) -> Result<()> {
        if self.headers == HeaderMode::None && self.dedupe {
            bail!("--kafka-headers none leaves out the binlog_tail.seq header that --kafka-dedupe relies on: add --kafka-dedupe off, or use --kafka-headers minimal");
        }
        for (key, value) in &self.properties {
            if let Some((_, allowed, why)) = FIXED.iter().find(|(k, _, _)| k == key) {
                let fixed_here = *key != "enable.gapless.guarantee" || self.dedupe;
                if fixed_here && !allowed.contains(&value.as_str()) {
                    bail!("-X {key} cannot be changed: {why}");
                }
            }
        }
        match self.client_config()?.create_native_config() {
            Ok(_) => Ok(()),
            Err(KafkaError::ClientConfig(_, desc, key, _)) => {
                bail!(
                    "bad Kafka property `{key}`: {} (see librdkafka's CONFIGURATION.md)",
                    self.redactor().apply(&desc)
                )
            }
            Err(e) => bail!("bad Kafka settings: {}", self.redactor().apply(&e.to_string())),
        }
    }

    pub fn redactor(&self) -> Redactor {
        let mut values: Vec<String> =
            self.properties.iter().map(|(_, v)| v.clone()).filter(|v| !v.is_empty()).collect();
        // Longest first, so a value containing another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Redactor(values)
    }
}

/// Properties whose value binlog-tail's guarantees depend on: (key, accepted values, why).
pub const FIXED: [(&str, &[&str], &str); 3] = [
    ("acks", &["all", "-1"], "the position moves only past messages that every in-sync replica holds (acks=all); with fewer acknowledgements a broker failure loses messages the position already counts as delivered"),
    ("enable.idempotence", &["true"], "an idempotent producer is what keeps retries from writing duplicates or reordering messages"),
    ("enable.gapless.guarantee", &["true"], "--kafka-dedupe skips what a partition's last message proves delivered, which holds only if no message can be lost before it (turn dedupe off with --kafka-dedupe off to change it)"),
];

const PRODUCER_ONLY: [&str; 12] = [
    "enable.idempotence",
    "acks",
    "compression.type",
    "linger.ms",
    "batch.num.messages",
    "batch.size",
    "message.timeout.ms",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "max.in.flight.requests.per.connection",
    "enable.gapless.guarantee",
    "partitioner",
];

/// Logs one of librdkafka's own log lines (`client` names which of binlog-tail's clients): at
/// debug level, its debug lines at trace; they are only read with `-v`.
pub fn log_librdkafka(client: &str, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        rdkafka::config::RDKafkaLogLevel::Debug => tracing::trace!("librdkafka{client} {fac}: {message}"),
        _ => tracing::debug!("librdkafka{client} {fac}: {message}"),
    }
}

/// Takes the values of `-X` properties out of librdkafka's text: its errors quote them ("Invalid
/// value \"...\" for configuration property"), and a value may be a password.
#[derive(Debug, Clone)]
pub struct Redactor(Vec<String>);

impl Redactor {
    pub fn apply(&self, text: &str) -> String {
        let mut text = text.to_string();
        for value in &self.0 {
            text = text.replace(&format!("\"{value}\""), "\"***\"");
            // Short values (`-X linger.ms=5`) are no secrets; replacing them everywhere would
            // garble every number in the message.
            if value.len() >= 4 {
                text = text.replace(value.as_str(), "***");
            }
        }
        text
    }
}

/// Checks a bootstrap list, `HOST:PORT[,HOST:PORT...]` (each may start with `PROTOCOL://`; an
/// IPv6 host goes in brackets). librdkafka would accept an empty or port-less list and then wait
/// forever for brokers it can never reach.
pub fn check_brokers(list: &str) -> Result<(), String> {
    let problem = list.split(',').map(str::trim).find_map(|entry| {
        let addr = entry.split_once("://").map_or(entry, |(_, addr)| addr);
        let Some((host, port)) = addr.rsplit_once(':') else {
            return Some(if entry.is_empty() {
                "an empty entry".to_string()
            } else {
                format!("`{entry}` has no port")
            });
        };
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "/[]".contains(c)) {
            return Some(format!("`{entry}` has no host name"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => None,
            _ => Some(format!("`{port}` in `{entry}` is not a port")),
        }
    });
    match problem {
        None => Ok(()),
        Some(why) => {
            Err(format!("--kafka-brokers `{list}`: {why}; give HOST:PORT[,HOST:PORT...], e.g. kafka1:9092,kafka2:9092"))
        }
    }
}

/// `key=value` from `-X`.
pub fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        // Not echoed: it may be a password typed with the wrong separator.
        _ => Err("not key=value (a librdkafka property, e.g. -X security.protocol=SASL_SSL)".into()),
    }
}

/// Settings for unit tests: the default routing, to `brokers`.
#[cfg(test)]
pub fn test_settings(brokers: &str) -> KafkaSettings {
    KafkaSettings { ddl_topic: "ddl".into(), ..KafkaSettings::new(brokers.into(), vec![]) }
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

    #[test]
    fn the_properties_the_guarantees_rest_on_are_fixed() {
        let with = |k: &str, v: &str, dedupe| KafkaSettings {
            properties: vec![(k.into(), v.into())],
            dedupe,
            ..test_settings("b:9092")
        };
        assert!(with("acks", "1", true).check().unwrap_err().to_string().contains("-X acks cannot be changed"));
        assert!(with("enable.idempotence", "false", false).check().is_err());
        assert!(with("enable.gapless.guarantee", "false", true).check().is_err());
        assert!(with("acks", "all", true).check().is_ok());
        assert!(with("linger.ms", "50", true).check().is_ok());
        // Dedupe reads back the order header: a stream without headers cannot have it.
        let bare = |dedupe| KafkaSettings { headers: HeaderMode::None, dedupe, ..test_settings("b:9092") };
        assert!(bare(true).check().unwrap_err().to_string().contains("--kafka-dedupe off"));
        assert!(bare(false).check().is_ok());
    }

    #[test]
    fn property_values_never_appear_in_errors() {
        let with =
            |k: &str, v: &str| KafkaSettings { properties: vec![(k.into(), v.into())], ..test_settings("b:9092") };
        let err = with("sasl.pasword", "hunter2secret").check().unwrap_err().to_string();
        assert!(err.contains("`sasl.pasword`") && !err.contains("hunter2secret"), "{err}");
        let err = with("security.protocol", "hunter2secret").check().unwrap_err().to_string();
        assert!(
            err.contains("`security.protocol`") && err.contains("\"***\"") && !err.contains("hunter2secret"),
            "{err}"
        );
        let err = with("linger.ms", "xyz").check().unwrap_err().to_string();
        assert!(!err.contains("xyz"), "{err}");
        with("sasl.password", "hunter2secret").check().unwrap();
        let r = with("sasl.password", "hunter2secret").redactor();
        assert_eq!(r.apply("auth with hunter2secret failed"), "auth with *** failed");
    }

    #[test]
    fn broker_lists() {
        for good in ["kafka:9092", "a:1, b:2", "SSL://kafka.example.com:9093", "[::1]:9092", "10.0.0.1:9092"] {
            assert_eq!(check_brokers(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "an empty entry"),
            (",,,", "an empty entry"),
            ("a:1,", "an empty entry"),
            ("nohostport", "`nohostport` has no port"),
            (":9092", "has no host name"),
            ("kafka:port", "`port` in `kafka:port` is not a port"),
            ("kafka:0", "is not a port"),
            ("kafka:99999", "is not a port"),
        ] {
            let err = check_brokers(bad).unwrap_err();
            assert!(err.contains(why) && err.contains("HOST:PORT"), "{bad}: {err}");
        }
    }
}
