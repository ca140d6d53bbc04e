//! The Redis Streams sink against a real redis-server (append-only file on): what lands in the
//! streams is read back with independent clients (redis-py: scripts/redis-read; redis-cli) and
//! compared with what was written.

use std::time::Duration;

use serde_json::json;

use crate::util::{
    a_wrong_then_the_right_secret, an_unreachable_server_is_retried, as_strs as args, first_of_each, Crash, MariaDb,
    Redis, Shop, SnapshotCrash, Stream,
};

fn redis_args(redis: &Redis) -> Vec<String> {
    vec!["--sink".into(), "redis".into(), "--redis-url".into(), redis.url()]
}

#[test]
fn events_land_in_stream_keys_with_the_dump_values_and_a_replay_adds_nothing() {
    let redis = Redis::start();
    let (shop, run) = Shop::start(redis_args(&redis));
    let entries = redis.read_until("*", |e| e.iter().filter(|e| e.key == "binlog_tail:shop.orders").count() >= 5);
    let acknowledged = crate::util::metric(shop.metrics_port, "binlog_tail_redis_acknowledged_entries_total");
    assert!(acknowledged >= 5.0, "{acknowledged}");
    let log = run.log();
    assert!(run.stop().success(), "{log}");

    // The value is exactly what dump prints for the same event, in commit order.
    let orders: Vec<_> = entries.iter().filter(|e| e.key == "binlog_tail:shop.orders").collect();
    let got: Vec<_> = orders.iter().map(|e| e.event()).collect();
    shop.check_orders(&got);
    assert!(orders.iter().all(|e| e.fields.keys().eq(["value"])), "one field, value: {orders:?}");

    // DDL events and the outbox message, under their keys.
    assert!(entries
        .iter()
        .any(|e| e.key == "binlog_tail:ddl" && e.fields["value"].contains("CREATE TABLE shop.orders")));
    let outbox: Vec<_> = entries.iter().filter(|e| e.key == "outbox.event.Order").collect();
    assert_eq!(outbox.len(), 1);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&outbox[0].fields["value"]).unwrap(), json!({"id": 3}));
    assert_eq!((outbox[0].fields["type"].as_str(), outbox[0].fields["key"].as_str()), ("OrderCreated", "3"));
    // The marker: a hash next to the streams, read with redis-cli.
    let marker = redis.cli(&["--scan", "--pattern", "binlog_tail:delivered:*"]);
    assert_eq!(redis.cli(&["TYPE", &marker]), "hash", "{marker}");
    // `status` finds it through the position file's id.
    let status = crate::util::binlog_tail()
        .args([
            "status",
            "--position-file",
            shop.position.to_str().unwrap(),
            "--sink",
            "redis",
            "--redis-url",
            &redis.url(),
        ])
        .args(["--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["redis"][0]["key"], json!(marker), "{report}");
    let through = report["redis"][0]["through"][0].as_str().unwrap_or_default();
    let last = got.last().unwrap().gtid.clone().unwrap();
    assert!(through.starts_with(&format!("{last}/")), "Redis holds through the last transaction: {report}");

    // A restart from the first position (a crash before any checkpoint) writes nothing twice.
    let log = shop.replay(entries.len(), |row| {
        redis.read_until("*", |e| e.iter().any(|e| e.fields["value"].contains(row))).len()
    });
    assert!(log.contains("replayed entries were already in Redis and skipped"), "{log}");
}

/// 2,000 transactions over three tables while binlog-tail is SIGKILLed 8 times and redis-server
/// is stopped and restarted once under a running binlog-tail: every row arrives once, per-key
/// order holds.
#[test]
fn sigkills_and_a_server_restart_lose_nothing_and_duplicate_nothing() {
    let crash = Crash::new(2_000, 8);
    let mut redis = Redis::start();
    let base = crash.args(redis_args(&redis));
    crash.kill_runs(&base, 100, Duration::from_millis(80), |run| {
        redis.stop();
        std::thread::sleep(Duration::from_secs(2));
        redis.restart();
        crate::util::until("binlog-tail writes to Redis again", || {
            redis.cli(&["--scan", "--pattern", "binlog_tail:delivered:*"]).lines().count() == 1
                && run.log().contains("retrying, the position waits")
        });
    });
    let replays_skipped =
        crash.logs()[..crash.kills].iter().filter(|l| l.contains("already in Redis and skipped")).count();
    assert!(replays_skipped > 0, "no run replayed what Redis held: the crashes tested nothing");
    let last = crash.last_run(&base);
    let expected = crash.expected();
    let entries = redis.read_until("binlog_tail:k.*", |e| e.len() >= expected);
    std::thread::sleep(Duration::from_millis(500));
    let entries = if entries.len() >= expected { redis.read("binlog_tail:k.*") } else { entries };
    let log = last.log();
    assert!(last.stop().success(), "{log}");

    let id = |e: &crate::util::RedisEntry| -> (String, u64, u64) {
        let (ms, seq) = e.id.split_once('-').unwrap();
        (e.key.clone(), ms.parse().unwrap(), seq.parse().unwrap())
    };
    assert!(entries.windows(2).all(|w| id(&w[0]) < id(&w[1])), "read key by key, in stream order");
    let events: Vec<_> = entries.iter().map(|e| e.event()).collect();
    for (entry, e) in entries.iter().zip(&events) {
        assert_eq!(entry.key, format!("binlog_tail:k.{}", e.table));
    }
    // Entries carry no id of their own: a row twice is a duplicate.
    let (held, duplicates) = first_of_each(&events, |e| {
        let after = e.after.as_ref().unwrap();
        (e.table.clone(), e.op.clone(), after["id"].as_i64(), after["v"].as_i64())
    });
    let held: Vec<_> = held.into_iter().cloned().collect();
    crash.check(&held, &format!("{} entries; last run: {log}", entries.len()));
    let (txs, kills) = (crash.txs, crash.kills);
    eprintln!("redis crash test: {txs} transactions, {kills} SIGKILLs, redis-server stopped and restarted once: 0 lost, {duplicates} duplicates, {} entries", entries.len());
    assert_eq!(duplicates, 0, "a restart writes nothing Redis already holds");
    assert_eq!(entries.len(), expected);
}

#[test]
fn an_unreachable_server_is_retried_and_logged_until_a_stop() {
    an_unreachable_server_is_retried("redis", "Redis");
}

#[test]
fn wrong_credentials_stop_with_the_fix_and_the_right_ones_stream() {
    let server = MariaDb::shared();
    let db = server.fresh_db("redis_auth");
    let redis = Redis::start_with(&["requirepass s3cret"]);
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    let mut extra = redis_args(&redis);
    extra.extend(["--include", &db, "--redis-password-file", password.to_str().unwrap()].map(String::from));
    let leaks = ["s3cret", "wrong\n"];
    let run = a_wrong_then_the_right_secret(server, &db, &extra, &password, "--redis-password-file", "s3cret", &leaks);
    crate::util::until("the row is in Redis", || {
        let out = std::process::Command::new("redis-cli")
            .args([
                "-p",
                &redis.port.to_string(),
                "-a",
                "s3cret",
                "--no-auth-warning",
                "XLEN",
                &format!("binlog_tail:{db}.t"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    });
    assert!(run.stop().success());
}

#[test]
fn a_key_of_another_type_an_oversized_value_and_no_aof_stop_with_the_fix_and_the_position_unchanged() {
    // A server of its own: another test's transactions would move the position it checks.
    let own = MariaDb::start(&[]);
    let server = &own;
    let db = server.fresh_db("redis_refusals");
    server.sql(&format!(
        "CREATE TABLE {db}.t (id INT PRIMARY KEY, b LONGBLOB); CREATE TABLE {db}.s (id INT PRIMARY KEY);"
    ));
    let redis = Redis::start_with(&["proto-max-bulk-len 1mb"]);
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let mut extra = redis_args(&redis);
    extra.extend(["--include".into(), db.clone()]);

    let run = Stream::start(server, &position, dir.path(), 0, &args(&extra));
    run.wait_ready(&position);
    server.sql(&format!("INSERT INTO {db}.t VALUES (1, 'small');"));
    redis.read_until("binlog_tail:*", |e| e.len() == 1);
    assert!(run.stop().success());
    let saved = std::fs::read(&position).unwrap();

    // A key holding a string where a stream goes: exit 1 naming the key, nothing of the batch written.
    let s_key = format!("binlog_tail:{db}.s");
    redis.cli(&["SET", &s_key, "not a stream"]);
    let mut run = Stream::start(server, &position, dir.path(), 1, &args(&extra));
    run.wait_streaming();
    server.sql(&format!("INSERT INTO {db}.s VALUES (1); INSERT INTO {db}.t VALUES (2, 'small');"));
    let status = run.wait();
    let log = run.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("WRONGTYPE") && log.contains(&format!("{s_key} holds a string")), "{log}");
    assert_eq!(std::fs::read(&position).unwrap(), saved, "the position did not move");
    assert_eq!(redis.read("binlog_tail:*").len(), 1, "the batch was not applied in part");

    // With the key free, the same transactions land; then a row larger than proto-max-bulk-len:
    // exit 1 naming the setting, the position where it was.
    redis.cli(&["DEL", &s_key]);
    let mut run = Stream::start(server, &position, dir.path(), 2, &args(&extra));
    redis.read_until("binlog_tail:*", |e| e.len() == 3);
    let last = server.gtid_pos();
    crate::util::until("the position covers both transactions", || {
        std::fs::read_to_string(&position).unwrap().contains(&format!("\"{last}\""))
    });
    let saved = std::fs::read(&position).unwrap();
    server.sql(&format!("INSERT INTO {db}.t VALUES (3, REPEAT('x', 1100000));"));
    let status = run.wait();
    let log = run.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("raise proto-max-bulk-len"), "{log}");
    assert_eq!(std::fs::read(&position).unwrap(), saved, "the position did not move");
    assert_eq!(redis.read("binlog_tail:*").len(), 3);

    // A Redis without an append-only file is refused, unless accepted.
    let volatile = Redis::start_with(&["appendonly no"]);
    let mut extra = redis_args(&volatile);
    extra.extend(["--include".into(), db.clone()]);
    let mut run = Stream::start(server, &position, dir.path(), 3, &args(&extra));
    let status = run.wait();
    let log = run.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("appendonly no") && log.contains("--redis-allow-no-aof"), "{log}");
    extra.push("--redis-allow-no-aof".into());
    let run = Stream::start(server, &position, dir.path(), 4, &args(&extra));
    run.wait_streaming();
    let log = run.log();
    assert!(run.stop().success(), "{log}");
    assert!(log.contains("restart of Redis loses acknowledged entries"), "{log}");
}

#[test]
fn check_reports_the_redis_servers_mode_and_persistence() {
    let server = MariaDb::shared();
    let check = |redis: &Redis| {
        crate::util::binlog_tail()
            .args(["check", "--url", &server.url(), "--sink", "redis", "--redis-url", &redis.url()])
            .env("MYSQL_PWD", "replpass")
            .output()
            .unwrap()
    };
    let everysec = Redis::start_with(&["appendfsync everysec"]);
    let out = check(&everysec);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("PASS  redis connection") && text.contains("PASS  redis mode"), "{text}");
    assert!(text.contains("WARN  redis persistence") && text.contains("appendfsync everysec"), "{text}");
    assert!(text.contains("CONFIG SET appendfsync always"), "the fix: {text}");

    let volatile = Redis::start_with(&["appendonly no"]);
    let out = check(&volatile);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL  redis persistence") && text.contains("--redis-allow-no-aof"), "{text}");

    let nothing = format!("redis://127.0.0.1:{}", crate::util::free_port());
    let out = crate::util::binlog_tail()
        .args(["check", "--url", &server.url(), "--sink", "redis", "--redis-url", &nothing])
        .env("MYSQL_PWD", "replpass")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL  redis connection"), "{text}");
}

/// A snapshot of 20,000 rows SIGKILLed 3 times with chunks in flight, then finished: Redis holds
/// every row's read once, then the later changes.
#[test]
fn sigkills_during_a_snapshot_leave_every_read_once() {
    let crash = SnapshotCrash::new(20_000, 3);
    let redis = Redis::start();
    let events = |e: &[crate::util::RedisEntry]| e.iter().map(|e| e.event()).collect::<Vec<_>>();
    crash.run(redis_args(&redis), |done| events(&redis.read_until("binlog_tail:s.t", |e| done(&events(e)))));
    // `status` shows the marker's last read: the table's last row.
    let status = crate::util::binlog_tail()
        .args(["status", "--position-file", crash.position.to_str().unwrap(), "--sink", "redis"])
        .args(["--redis-url", &redis.url(), "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let read = &report["redis"][0]["read"];
    assert_eq!((&read["table"], &read["key"]), (&json!("t"), &json!(format!("{{\"id\":{}}}", crash.rows))), "{report}");
}

/// The same with 600 transactions changing the table during the killed runs: what Redis holds,
/// replayed in order, gives the table.
#[test]
fn sigkills_during_a_snapshot_with_writes_lose_nothing() {
    let crash = SnapshotCrash::new(20_000, 3).with_writes();
    let redis = Redis::start();
    let events = |e: &[crate::util::RedisEntry]| e.iter().map(|e| e.event()).collect::<Vec<_>>();
    crash.run(redis_args(&redis), |done| events(&redis.read_until("binlog_tail:s.t", |e| done(&events(e)))));
}
