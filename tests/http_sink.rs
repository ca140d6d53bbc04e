//! The HTTP webhook sink against a real HTTP receiver (tests/util/webhook.rs) that logs every
//! request: what it got is compared with what `dump` prints, and a receiver deduplicating by
//! `Idempotency-Key` is rebuilt from its log.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::util::{
    a_replay_adds_only_the_new_row, as_strs as args, binlog_tail, first_of_each, in_db, ok_events, Crash, Event,
    Faults, MariaDb, Received, SnapshotCrash, Stream, Webhook,
};

fn http_args(hook: &Webhook, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["--sink".into(), "http".into(), "--http-url".into(), hook.url()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// What a receiver that keeps the first applied batch of each key holds, in the order it applied them.
fn deduplicated(log: &[Received]) -> Vec<&Received> {
    first_of_each(log.iter().filter(|r| r.applied), |r| r.key.clone()).0
}

fn lines(batches: &[&Received]) -> Vec<Event> {
    batches
        .iter()
        .flat_map(|r| r.body.lines())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an event ({e}): {l}")))
        .collect()
}

#[test]
fn batches_hold_the_dump_lines_with_keys_headers_and_the_token() {
    let server = MariaDb::start(&[]);
    let hook = Webhook::start(Faults::default());
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, status VARCHAR(10));");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let metrics_port = crate::util::free_port();
    let extra = http_args(
        &hook,
        &[
            "--include",
            "shop",
            "--start",
            "earliest",
            "--http-batch-rows",
            "2",
            "--http-header",
            "X-Source: binlog-tail test",
            "--http-sink-token-file",
            token.to_str().unwrap(),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ],
    );
    let run = Stream::start(&server, &position, dir.path(), 0, &args(&extra));
    run.wait_ready(&position);
    let start = std::fs::read(&position).unwrap();
    server.sql(
        "INSERT INTO shop.orders VALUES (1, 'new'), (2, 'new');
         UPDATE shop.orders SET status = 'paid' WHERE id = 1;
         INSERT INTO shop.orders VALUES (3, 'new'), (4, 'new'), (5, 'new');",
    );
    let log = hook.log_until("6 events arrive", |log| lines(&deduplicated(log)).len() >= 6);
    assert!(crate::util::metric(metrics_port, "binlog_tail_http_sink_acknowledged_rows_total") >= 6.0);
    let stderr = run.log();
    assert!(run.stop().success(), "{stderr}");

    let got = lines(&deduplicated(&log));
    let dumped = in_db(ok_events(&server.dump(&["--start", "earliest", "--include", "shop"])), "shop");
    assert_eq!(got, dumped, "the bodies are the lines dump prints, in order");
    // At most 2 events a batch: the 3-row transaction went in two parts.
    assert!(log.iter().all(|r| r.body.lines().count() <= 2 && r.body.ends_with('\n')));
    assert!(log.len() >= 4, "{log:?}");
    for r in &log {
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(r.header("authorization"), Some("Bearer s3cret"));
        assert_eq!(r.header("x-source"), Some("binlog-tail test"));
        let first: Event = serde_json::from_str(r.body.lines().next().unwrap()).unwrap();
        assert!(r.key.contains(&format!("/{}/", first.gtid.unwrap())), "STREAM/FIRST..LAST: {}", r.key);
    }
    let keys: HashSet<_> = log.iter().map(|r| &r.key).collect();
    assert_eq!(keys.len(), log.len(), "every batch its own key");
    assert!(!stderr.contains("s3cret"), "no token in the log: {stderr}");

    // `status` shows the journal: acknowledged through the last event, nothing in flight.
    let status = |json: &[&str]| {
        let out = binlog_tail().args(["status", "--position-file", position.to_str().unwrap()]).args(json).output();
        String::from_utf8(out.unwrap().stdout).unwrap()
    };
    let report: serde_json::Value = serde_json::from_str(&status(&["--json"])).unwrap();
    let http = &report["http"];
    assert!(http["journal"].as_str().unwrap().ends_with("position.json.http"), "{report}");
    let last_gtid = got.last().unwrap().gtid.clone().unwrap();
    assert!(http["acked"]["last"].as_str().unwrap().starts_with(&format!("{last_gtid}/")), "{report}");
    assert!(http["in_flight"].is_null(), "{report}");
    let text = status(&[]);
    assert!(
        text.contains(&format!("http acked     through {last_gtid}/")) && text.contains("http in flight none"),
        "{text}"
    );

    // A restart from the first position (a crash before any checkpoint): the journal says what
    // the receiver acknowledged, so nothing is sent again; a new row comes alone.
    let stderr = a_replay_adds_only_the_new_row(&server, &position, dir.path(), &start, &extra, 6, log.len(), |row| {
        hook.log_until("the new row arrives", |l| l.iter().any(|r| r.body.contains(row))).len()
    });
    assert!(stderr.contains("already acknowledged were skipped"), "{stderr}");
}

/// 3,000 transactions while binlog-tail is SIGKILLed 8 times, the receiver fails every 7th
/// request with 503, answers every 5th only after the sink's timeout, and is stopped and
/// started again once under a running binlog-tail: every batch sent again carries the body it
/// had, and a receiver deduplicating by key holds every row once, in per-key order.
#[test]
fn sigkills_503s_timeouts_and_a_receiver_restart_lose_nothing_and_replay_batches_byte_for_byte() {
    let crash = Crash::new(3_000, 8);
    let faults = || Faults { fail_every: 7, slow_every: 5, delay: Duration::from_millis(400), refuse: None };
    let mut hook = Webhook::start(faults());
    let base = crash.args(http_args(&hook, &["--http-batch-rows", "200", "--http-timeout", "0.2"]));
    // Pauses between the writer's batches make the stream idle: batches cut there by time, which a
    // replay would not cut alike.
    crash.kill_runs(&base, 30, Duration::from_millis(50), |run| {
        hook.stop();
        crate::util::until("binlog-tail logs the outage", || run.log().contains("cannot reach it"));
        hook.restart();
    });
    hook.set_faults(Faults::default());
    let last = crash.last_run(&base);
    let expected = crash.expected();
    let log = hook.log_until("every row arrives", |log| lines(&deduplicated(log)).len() >= expected);
    let stderr = last.log();
    assert!(last.stop().success(), "{stderr}");

    // Every key always carries the same body.
    let mut bodies: HashMap<&str, &str> = HashMap::new();
    let mut replayed = 0;
    for r in &log {
        let body = *bodies.entry(&r.key).or_insert(&r.body);
        assert_eq!(body, r.body, "key {} came with two bodies", r.key);
        replayed += usize::from(!std::ptr::eq(body, r.body.as_str()));
    }
    // A receiver keeping the first applied batch per key: each row once, in per-key order.
    let held = lines(&deduplicated(&log));
    crash.check(&held, &format!("last run: {stderr}"));
    assert_eq!(held.len(), expected, "nothing held twice");
    let failed = log.iter().filter(|r| r.status == 503).count();
    let logs = crash.logs();
    let resent = logs.iter().filter(|l| l.contains("sending again the batch in flight")).count();
    let skipped = logs.iter().filter(|l| l.contains("already acknowledged were skipped")).count();
    let (txs, kills) = (crash.txs, crash.kills);
    eprintln!(
        "http crash test: {txs} transactions, {kills} SIGKILLs, receiver restarted once, {} requests ({failed} answered 503, {replayed} repeats of a key); {resent} restarts sent the journal's batch again, {skipped} skipped acknowledged events: 0 lost, each row held once",
        log.len()
    );
    assert!(replayed > 0 && failed > 0 && resent > 0 && skipped > 0, "the faults happened");
}

#[test]
fn refusals_stop_with_the_status_and_body_and_an_unreachable_receiver_is_retried() {
    // A server of its own: no other test's transactions move the position.
    let own = MariaDb::start(&[]);
    let server = &own;
    let db = server.fresh_db("http_refusals");
    server.sql(&format!("CREATE TABLE {db}.t (id INT PRIMARY KEY);"));
    let mut hook = Webhook::start(Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let extra = http_args(&hook, &["--include", &db]);

    // `check --sink http` says whether the receiver answers.
    let url = hook.url();
    let check = || {
        let out = binlog_tail()
            .args(["check", "--url", &server.url(), "--sink", "http", "--http-url", &url])
            .env("MYSQL_PWD", "replpass")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(check().contains("PASS  http receiver"), "{}", check());

    // The receiver down: retried and logged; the position stays where it started.
    hook.stop();
    let down = check();
    assert!(down.contains("FAIL  http receiver") && down.contains("Connection refused"), "{down}");
    let run = Stream::start(server, &position, dir.path(), 0, &args(&extra));
    run.wait_ready(&position);
    let start = std::fs::read(&position).unwrap();
    server.sql(&format!("INSERT INTO {db}.t VALUES (1);"));
    run.wait_log("sending the batch again");
    assert!(run.log().contains("cannot reach it"), "{}", run.log());
    run.signal("-TERM");
    run.signal("-TERM");
    let mut run = run;
    run.wait();
    assert_eq!(std::fs::read(&position).unwrap(), start, "the position did not move");

    // 401 and 413: exit 1 with the status and the body's first line; the position unchanged.
    hook.restart();
    let refuse =
        |status: u16| Faults { refuse: Some((status, format!("refused {status}\nsecond line"))), ..Faults::default() };
    let refused = |run: &mut Stream, status: u16, fix: &str| {
        let code = run.wait();
        let log = run.log();
        assert_eq!(code.code(), Some(1), "{log}");
        assert!(log.contains(&format!("with {status}")) && log.contains(&format!("refused {status}")), "{log}");
        assert!(log.contains(fix) && !log.contains("second line"), "{log}");
    };
    // At the start, the batch the stopped run left in flight is refused.
    hook.set_faults(refuse(401));
    let mut run = Stream::start(server, &position, dir.path(), 1, &args(&extra));
    refused(&mut run, 401, "--http-sink-token-file");
    assert_eq!(std::fs::read(&position).unwrap(), start, "the position did not move");

    // With the receiver back, the row arrives (once more: the refusal was not applied).
    hook.set_faults(Faults::default());
    let mut run = Stream::start(server, &position, dir.path(), 2, &args(&extra));
    hook.log_until("the row arrives", |l| l.iter().any(|r| r.applied));
    run.wait_streaming();
    // While streaming, a batch refused for its size.
    crate::util::until("the row's position is saved", || std::fs::read(&position).unwrap() != start);
    let saved = std::fs::read(&position).unwrap();
    hook.set_faults(refuse(413));
    server.sql(&format!("INSERT INTO {db}.t VALUES (2);"));
    refused(&mut run, 413, "lower --http-batch-bytes");
    assert_eq!(std::fs::read(&position).unwrap(), saved, "the position did not move");
}

#[test]
fn bad_http_options_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("p.json");
    for (bad, says) in [
        (vec!["--http-url", "http://127.0.0.1:1/x", "--http-header", "NoColon"], "use NAME:VALUE"),
        (vec!["--http-url", "ftp://h/x"], "--http-url"),
        (vec!["--http-url", "http://h/x", "--http-header", "Idempotency-Key: 1"], "sets this header itself"),
        (vec![], "--sink http needs --http-url"),
    ] {
        let out = binlog_tail()
            .args(["stream", "--url", "mysql://repl@127.0.0.1:1", "--position-file", position.to_str().unwrap()])
            .args(["--sink", "http"])
            .args(&bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
        assert!(err.contains(says), "{bad:?}: {err}");
    }
}

/// A snapshot of 20,000 rows SIGKILLed 3 times with batches in flight, then finished: every key
/// always came with one body, and a receiver deduplicating by key holds every row's read once,
/// then the later changes.
#[test]
fn sigkills_during_a_snapshot_replay_batches_byte_for_byte_and_every_read_once() {
    let crash = SnapshotCrash::new(20_000, 3);
    let hook = Webhook::start(Faults::default());
    crash.run(http_args(&hook, &["--http-batch-rows", "150"]), |done| {
        let log = hook.log_until("the later changes arrive", |log| done(&lines(&deduplicated(log))));
        let mut bodies: HashMap<&str, &str> = HashMap::new();
        for r in &log {
            assert_eq!(*bodies.entry(&r.key).or_insert(&r.body), r.body, "key {} came with two bodies", r.key);
        }
        lines(&deduplicated(&log))
    });
}

/// The same with 600 transactions changing the table during the killed runs: what a receiver
/// deduplicating by key holds, replayed in order, gives the table.
#[test]
fn sigkills_during_a_snapshot_with_writes_lose_nothing() {
    let crash = SnapshotCrash::new(20_000, 3).with_writes();
    let hook = Webhook::start(Faults::default());
    crash.run(http_args(&hook, &["--http-batch-rows", "150"]), |done| {
        lines(&deduplicated(&hook.log_until("the later changes arrive", |log| done(&lines(&deduplicated(log))))))
    });
}
