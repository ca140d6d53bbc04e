//! binlog-tail as a library: the pipeline stages the binary wires together, and what the fuzz
//! targets drive directly.
//!
//! Layers, each using only those above it in this list (no import circles):
//! - `gtid`, `position` (flavour, resume point, the saved position and its JSON), `text`
//!   (charsets, JSON strings), `frame` (binlog event framing, CRC32), then `metrics` (counters
//!   and probe state, fed by the layers below)
//! - `schema` (decoded tables and row images), then `event` (the JSON contract, `Op`), then
//!   `format` (the Debezium, Maxwell and Canal envelopes of a change)
//! - `filter`, `outbox`, `signal` (incremental snapshot requests)
//! - `sink` (stdout, Kafka, NATS JetStream, Redis Streams, HTTP webhooks), `decode` (binlog events -> changes handed to a sink)
//! - `checkpoint` (the position's stores: a file, or a compacted Kafka topic with a lease for
//!   one writer; the sink wrapper that saves it), `error`, `shutdown`, `history` (is a position
//!   in a server's binlog history?), `preflight`, `source` (files; servers: connection,
//!   replication stream, information_schema columns)
//! - `snapshot` (existing rows read in chunks, emitted at their binlog positions)
//! - `cli` (every option, declared once; environment variables and the config file derived from
//!   the declarations), `config` (settings from the options), `ops` (metrics endpoint, lag poll,
//!   status, logs, completions, man page), `commands` (what each subcommand runs)

pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod decode;
pub mod error;
pub mod event;
pub mod filter;
pub mod format;
pub mod frame;
pub mod gtid;
pub mod history;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod position;
pub mod preflight;
pub mod schema;
pub mod shutdown;
pub mod signal;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod text;
