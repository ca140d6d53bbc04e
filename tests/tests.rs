//! Integration tests: each runs the real `binlog-tail` binary against real MariaDB servers
//! (started by scripts/mariadb-start) or real MySQL-written binlog files.

mod util;

mod bad_input;
mod docs;
mod emit;
mod files;
mod formats;
mod hardening;
mod history;
mod http_sink;
mod kafka;
mod kafka_store;
mod mysql_files;
mod nats;
mod ops;
mod redis;
mod server;
mod snapshot;
mod stream;
mod tls;
mod transactions;
mod types;
