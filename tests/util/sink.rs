//! What the tests of the NATS, Redis and HTTP sinks check alike besides the crash test
//! (`crash`): the shop workload and what it must deliver, a replay from the first saved position,
//! an unreachable server, and a wrong then a right secret.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{as_strs, free_port, in_db, ok_events, Event, MariaDb, Stream};

/// A MariaDB of its own with `shop.orders` and `shop.outbox`, and run 0 of binlog-tail.
pub struct Shop {
    pub server: MariaDb,
    pub dir: tempfile::TempDir,
    pub position: PathBuf,
    /// Run 0's arguments: the sink's, then the outbox, DDL events, a metrics endpoint, the earliest start.
    pub args: Vec<String>,
    pub metrics_port: u16,
    /// The position saved before any change was delivered.
    pub start: Vec<u8>,
}

impl Shop {
    /// Starts run 0 with `sink` (the sink's options) and, once it is ready, writes five changes
    /// of shop.orders (row 1 inserted, paid, shipped; rows 2 and 3) and one outbox message
    /// (`Order`, key 3, type `OrderCreated`, payload `{"id": 3}`) in row 3's transaction.
    pub fn start(sink: Vec<String>) -> (Shop, Stream) {
        let server = MariaDb::start(&[]);
        server.sql(
            "CREATE DATABASE shop;
             CREATE TABLE shop.orders (id INT PRIMARY KEY, status VARCHAR(10));
             CREATE TABLE shop.outbox (id VARCHAR(36) PRIMARY KEY, aggregate_type VARCHAR(20), aggregate_id VARCHAR(20), type VARCHAR(30), payload JSON);",
        );
        let dir = tempfile::tempdir().unwrap();
        let position = dir.path().join("position.json");
        let metrics_port = free_port();
        let mut args = sink;
        args.extend(
            ["--start", "earliest", "--outbox", "shop.outbox", "--emit-ddl", "--metrics-addr"].map(String::from),
        );
        args.push(format!("127.0.0.1:{metrics_port}"));
        let run = Stream::start(&server, &position, dir.path(), 0, &as_strs(&args));
        run.wait_ready(&position);
        let start = std::fs::read(&position).unwrap();
        server.sql(
            "INSERT INTO shop.orders VALUES (1, 'new'), (2, 'new');
             UPDATE shop.orders SET status = 'paid' WHERE id = 1;
             UPDATE shop.orders SET status = 'shipped' WHERE id = 1;
             START TRANSACTION;
             INSERT INTO shop.orders VALUES (3, 'new');
             INSERT INTO shop.outbox VALUES ('e-1', 'Order', '3', 'OrderCreated', '{\"id\": 3}');
             COMMIT;",
        );
        (Shop { server, dir, position, args, metrics_port, start }, run)
    }

    /// `got`, the shop.orders events delivered, are exactly what dump prints, in commit order.
    pub fn check_orders(&self, got: &[Event]) {
        let dumped = in_db(ok_events(&self.server.dump(&["--start", "earliest", "--include", "shop.orders"])), "shop");
        assert_eq!(got, dumped);
        let statuses: Vec<_> = got
            .iter()
            .filter(|e| e.pk.as_ref().unwrap()["id"] == json!(1))
            .map(|e| e.after.clone().unwrap()["status"].clone())
            .collect();
        assert_eq!(statuses, [json!("new"), json!("paid"), json!("shipped")]);
    }

    /// See `a_replay_adds_only_the_new_row`; row 4 is the new one.
    pub fn replay(&self, before: usize, read: impl FnOnce(&str) -> usize) -> String {
        a_replay_adds_only_the_new_row(
            &self.server,
            &self.position,
            self.dir.path(),
            &self.start,
            &self.args,
            4,
            before,
            read,
        )
    }
}

/// Run 1 with `args` from `start`, the position saved first (a crash before any checkpoint):
/// after row `id` is inserted into shop.orders, `read` waits until an item holding `"id":<id>`
/// has arrived and says how many items the sink's server holds: `before` and that one only.
/// Returns the run's log.
#[allow(clippy::too_many_arguments)]
pub fn a_replay_adds_only_the_new_row(
    server: &MariaDb,
    position: &Path,
    dir: &Path,
    start: &[u8],
    args: &[String],
    id: u32,
    before: usize,
    read: impl FnOnce(&str) -> usize,
) -> String {
    std::fs::write(position, start).unwrap();
    let again = Stream::start(server, position, dir, 1, &as_strs(args));
    again.wait_streaming();
    server.sql(&format!("INSERT INTO shop.orders VALUES ({id}, 'new');"));
    let after = read(&format!("\"id\":{id}"));
    let log = again.log();
    assert!(again.stop().success(), "{log}");
    assert_eq!(after, before + 1, "only the new row was added: {log}");
    log
}

/// `--sink <sink>` at a port where nothing listens: `cannot reach <name>` logged and retried
/// until a stop, which is a clean stop; nothing was delivered, so no position was saved.
pub fn an_unreachable_server_is_retried(sink: &str, name: &str) {
    let server = MariaDb::shared();
    let db = server.fresh_db(&format!("{sink}_unreachable"));
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let url = format!("{sink}://127.0.0.1:{}", free_port());
    let extra = ["--sink", sink, &format!("--{sink}-url"), &url, "--include", &db];
    let run = Stream::start(server, &position, dir.path(), 0, &extra);
    run.wait_log(&format!("cannot reach {name} at {url}"));
    assert!(run.log().contains("retrying"), "{}", run.log());
    let log = run.log();
    let status = run.stop();
    assert!(status.success(), "a stop while connecting is a clean stop, not {status}: {log}");
    assert!(!position.exists(), "nothing was delivered, so nothing was saved");
}

/// `args` name `secret_file` as the secret: with "wrong" in it, run 0 stops (exit 1) saying the
/// server refused the credentials and naming `option`, with neither secret in its log
/// (`leaks`: what must not appear); with `right` in it, run 1 streams, creates `<db>.t` and
/// inserts a row. Returns run 1.
pub fn a_wrong_then_the_right_secret(
    server: &MariaDb,
    db: &str,
    args: &[String],
    secret_file: &Path,
    option: &str,
    right: &str,
    leaks: &[&str],
) -> Stream {
    let dir = secret_file.parent().unwrap();
    let position = dir.join("position.json");
    std::fs::write(secret_file, "wrong\n").unwrap();
    let mut run = Stream::start(server, &position, dir, 0, &as_strs(args));
    let status = run.wait();
    let log = run.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("refused the credentials") && log.contains(option), "{log}");
    assert!(leaks.iter().all(|leak| !log.contains(leak)), "no secret in the log: {log}");

    std::fs::write(secret_file, format!("{right}\n")).unwrap();
    let run = Stream::start(server, &position, dir, 1, &as_strs(args));
    run.wait_streaming();
    server.sql(&format!("CREATE TABLE {db}.t (id INT PRIMARY KEY); INSERT INTO {db}.t VALUES (1);"));
    run
}
