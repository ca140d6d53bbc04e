//! The NATS sink against a real nats-server with JetStream: what lands in the stream is read back
//! with an independent client (nats-py, scripts/nats-read) and compared with what was written.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::util::{
    a_wrong_then_the_right_secret, an_unreachable_server_is_retried, as_strs as args, first_of_each, Crash, MariaDb,
    Nats, Shop, SnapshotCrash, Stream,
};

fn nats_args(nats: &Nats) -> Vec<String> {
    vec!["--sink".into(), "nats".into(), "--nats-url".into(), nats.url()]
}

#[test]
fn events_land_in_subjects_with_the_dump_values_and_stable_ids() {
    let nats = Nats::start();
    let mut sink = nats_args(&nats);
    sink.push("--nats-create-stream".into());
    let (shop, run) = Shop::start(sink);
    let msgs =
        nats.read_until("BINLOG_TAIL", |m| m.iter().filter(|m| m.subject == "binlog_tail.shop.orders").count() >= 5);
    let acknowledged = crate::util::metric(shop.metrics_port, "binlog_tail_nats_acknowledged_messages_total");
    assert!(acknowledged >= 5.0, "{acknowledged}");
    let log = run.log();
    assert!(run.stop().success(), "{log}");
    assert!(log.contains("created NATS stream BINLOG_TAIL"), "{log}");

    // The body is exactly what dump prints for the same event, in commit order.
    let orders: Vec<_> = msgs.iter().filter(|m| m.subject == "binlog_tail.shop.orders").collect();
    let got: Vec<_> = orders.iter().map(|m| m.event()).collect();
    shop.check_orders(&got);

    // Every message has a stable id: STREAM/GTID/INDEX.
    for (m, e) in orders.iter().zip(&got) {
        let id = &m.headers["Nats-Msg-Id"];
        assert!(id.contains(&format!("/{}/", e.gtid.as_deref().unwrap())), "{id}");
    }
    let ids: HashSet<_> = msgs.iter().map(|m| m.headers["Nats-Msg-Id"].clone()).collect();
    assert_eq!(ids.len(), msgs.len(), "ids are unique");

    // DDL events and the outbox message, routed to their subjects.
    assert!(msgs.iter().any(|m| m.subject == "binlog_tail.ddl" && m.data.contains("CREATE TABLE shop.orders")));
    let outbox: Vec<_> = msgs.iter().filter(|m| m.subject == "outbox.event.Order").collect();
    assert_eq!(outbox.len(), 1);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&outbox[0].data).unwrap(), json!({"id": 3}));
    assert_eq!(outbox[0].headers.get("type").map(String::as_str), Some("OrderCreated"));
    assert_eq!(outbox[0].headers.get("key").map(String::as_str), Some("3"));

    // A restart from the first position (a crash before any checkpoint) sends nothing twice.
    shop.replay(msgs.len(), |row| nats.read_until("BINLOG_TAIL", |m| m.iter().any(|m| m.data.contains(row))).len());
}

/// 2,000 transactions over three tables while binlog-tail is SIGKILLed 8 times and nats-server is
/// stopped and restarted once under a running binlog-tail: every row arrives once, per-key order
/// holds. The stream's duplicate window is 100 ms (the least JetStream allows), so what keeps replays out is reading what the
/// stream holds, not the server's deduplication.
#[test]
fn sigkills_and_a_server_restart_lose_nothing_and_duplicate_nothing() {
    let crash = Crash::new(2_000, 8);
    let mut nats = Nats::start();
    nats.create_stream("BINLOG_TAIL", "binlog_tail.>", Duration::from_millis(100));
    let base = crash.args(nats_args(&nats));
    crash.kill_runs(&base, 100, Duration::from_millis(80), |run| {
        nats.stop();
        std::thread::sleep(Duration::from_secs(2));
        nats.restart();
        // Connected at start, and again after the restart.
        crate::util::until("binlog-tail reconnects to NATS", || run.log().matches("NATS: connected").count() >= 2);
    });
    let last = crash.last_run(&base);
    let msgs = nats.read_until("BINLOG_TAIL", |m| {
        m.iter().map(|m| &m.headers["Nats-Msg-Id"]).collect::<HashSet<_>>().len() >= crash.expected()
    });
    let log = last.log();
    assert!(last.stop().success(), "{log}");

    assert!(msgs.windows(2).all(|w| w[0].seq < w[1].seq), "read in stream order");
    let (held, duplicates) = first_of_each(&msgs, |m| m.headers["Nats-Msg-Id"].clone());
    let events: Vec<_> = held.iter().map(|m| m.event()).collect();
    for (m, e) in held.iter().zip(&events) {
        assert_eq!(m.subject, format!("binlog_tail.k.{}", e.table));
    }
    crash.check(&events, &format!("{} messages; last run: {log}", msgs.len()));
    let (txs, kills) = (crash.txs, crash.kills);
    eprintln!("nats crash test: {txs} transactions, {kills} SIGKILLs, nats-server stopped and restarted once: 0 lost, {duplicates} duplicates, {} messages", msgs.len());
    assert_eq!(duplicates, 0, "a restart sends nothing the stream already holds");
}

#[test]
fn an_unreachable_server_is_retried_and_logged_until_a_stop() {
    an_unreachable_server_is_retried("nats", "NATS");
}

#[test]
fn a_missing_stream_or_an_oversized_message_stops_with_the_fix_and_the_position_unchanged() {
    // A server of its own: another test's transactions would move the position it checks.
    let own = MariaDb::start(&[]);
    let server = &own;
    let db = server.fresh_db("nats_refusals");
    server.sql(&format!("CREATE TABLE {db}.t (id INT PRIMARY KEY, b LONGBLOB);"));
    let nats = Nats::start_with("max_payload: 4096");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");

    // No stream, and no --nats-create-stream: exit 1 naming the command that creates it.
    let mut extra = nats_args(&nats);
    extra.extend(["--include".into(), db.clone()]);
    let mut run = Stream::start(server, &position, dir.path(), 0, &args(&extra));
    let status = run.wait();
    let log = run.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("NATS stream BINLOG_TAIL does not exist")
            && log.contains("nats stream add BINLOG_TAIL --subjects 'binlog_tail.*.*'"),
        "{log}"
    );

    // A row larger than the server's max_payload: exit 1, the position where it was.
    extra.push("--nats-create-stream".into());
    let run = Stream::start(server, &position, dir.path(), 1, &args(&extra));
    run.wait_ready(&position);
    server.sql(&format!("INSERT INTO {db}.t VALUES (1, 'small');"));
    nats.read_until("BINLOG_TAIL", |m| m.len() == 1);
    assert!(run.stop().success());
    let saved = std::fs::read(&position).unwrap();
    let mut run = Stream::start(server, &position, dir.path(), 2, &args(&extra));
    run.wait_streaming();
    server.sql(&format!("INSERT INTO {db}.t VALUES (2, REPEAT('x', 10000));"));
    let status = run.wait();
    let log = run.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("raise max_payload"), "{log}");
    assert_eq!(std::fs::read(&position).unwrap(), saved, "the position did not move");
    assert_eq!(nats.read("BINLOG_TAIL").len(), 1);
}

#[test]
fn wrong_credentials_stop_with_the_fix_and_the_right_ones_stream() {
    let server = MariaDb::shared();
    let db = server.fresh_db("nats_auth");
    let nats = Nats::start_with("authorization { token: \"s3cret\" }");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let mut extra = nats_args(&nats);
    extra.extend(
        ["--nats-create-stream", "--include", &db, "--nats-token-file", token.to_str().unwrap()].map(String::from),
    );
    let run =
        a_wrong_then_the_right_secret(server, &db, &extra, &token, "--nats-token-file", "s3cret", &["s3cret", "wrong"]);
    assert!(run.log().contains("created NATS stream"), "{}", run.log());
    assert!(run.stop().success());
}

/// A snapshot of 20,000 rows SIGKILLed 3 times with chunks in flight, then finished: the stream
/// holds every row's read once, then the later changes. The duplicate window is 100 ms, as above.
#[test]
fn sigkills_during_a_snapshot_leave_every_read_once() {
    let crash = SnapshotCrash::new(20_000, 3);
    let nats = Nats::start();
    nats.create_stream("BINLOG_TAIL", "binlog_tail.>", Duration::from_millis(100));
    let events = |m: &[crate::util::NatsMessage]| m.iter().map(|m| m.event()).collect::<Vec<_>>();
    crash.run(nats_args(&nats), |done| events(&nats.read_until("BINLOG_TAIL", |m| done(&events(m)))));
}

/// The same with 600 transactions changing the table during the killed runs: what the stream
/// holds, replayed in order, gives the table.
#[test]
fn sigkills_during_a_snapshot_with_writes_lose_nothing() {
    let crash = SnapshotCrash::new(20_000, 3).with_writes();
    let nats = Nats::start();
    nats.create_stream("BINLOG_TAIL", "binlog_tail.>", Duration::from_millis(100));
    let events = |m: &[crate::util::NatsMessage]| m.iter().map(|m| m.event()).collect::<Vec<_>>();
    crash.run(nats_args(&nats), |done| events(&nats.read_until("BINLOG_TAIL", |m| done(&events(m)))));
}
