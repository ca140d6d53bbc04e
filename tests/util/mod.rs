//! Test support, one file per fixture: real MariaDB servers started by the project's own script
//! (`mariadb`), a tansu Kafka broker (`broker`), the real binary run as a process (`process`),
//! HTTP probes of its endpoints (`http`), a nats-server (`nats`), a redis-server (`redis`), both as a
//! `server` process, a webhook receiver (`webhook`), the sink crash tests' common run (`crash`), what the sink tests
//! check alike (`sink`), and the JSON event contract as a strict struct (`contract`). Everything is re-exported here, so tests
//! `use crate::util::{...}` by name.

mod broker;
mod contract;
mod crash;
mod http;
mod mariadb;
mod nats;
mod process;
mod redis;
mod server;
mod sink;
mod webhook;

pub use broker::*;
pub use contract::*;
pub use crash::*;
pub use http::*;
pub use mariadb::*;
pub use nats::*;
pub use process::*;
pub use redis::*;
pub use server::*;
pub use sink::*;
pub use webhook::*;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real MySQL binlogs in ../shared, or None (with a note) where they are absent.
pub fn shared_binlogs() -> Option<PathBuf> {
    let dir = root().join("../shared/mysql-binlogs");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: {} is absent, so the MySQL-written binlog tests did not run", dir.display());
        None
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A small deterministic random sequence (xorshift64) for kill timings and byte mutations.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Polls until `done` holds; the deadline only bounds a failing test.
pub fn until(what: &str, done: impl FnMut() -> bool) {
    poll_until(what, Duration::from_millis(200), done);
}

/// `until`, polling every `every`: for a state that may last only milliseconds.
pub fn poll_until(what: &str, every: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(every);
    }
}
