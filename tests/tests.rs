//! Integration tests: each runs the real `binlog-tail` binary against real MariaDB servers
//! (started by scripts/mariadb-start) or real MySQL-written binlog files.

mod util;

mod bad_input;
mod emit;
mod files;
mod history;
mod kafka;
mod mysql_files;
mod ops;
mod server;
mod stream;
mod transactions;
mod types;
