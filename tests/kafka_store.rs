//! The position kept in Kafka (`--position-store kafka`) against a real Kafka-protocol broker
//! (tansu): the topic checks, resuming from Kafka alone, and one writer per stream (a lease held
//! as consumer group membership: a standby takes over after a SIGKILL and after a clean stop).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::util::{binlog_tail, get, metric, samples, until, Broker, MariaDb, Stream};

/// `stream` arguments for the Kafka sink with the position in `positions`, under `name`.
fn kafka_store(broker: &Broker, positions: &str, name: &str) -> Vec<String> {
    let args = [
        "--sink",
        "kafka",
        "--kafka-brokers",
        &broker.addr(),
        "--position-store",
        "kafka",
        "--kafka-position-topic",
        positions,
    ];
    let mut v: Vec<String> = args.map(String::from).to_vec();
    v.extend(["--stream-name".into(), name.into(), "--kafka-lease-timeout".into(), "2".into()]);
    v
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The newest position saved under `name`, as JSON.
fn saved(broker: &Broker, positions: &str, name: &str) -> Option<Value> {
    let total = broker.stored(positions) as usize;
    let msgs = broker.read(positions, total);
    let last = msgs.iter().rfind(|m| m.key.as_deref() == Some(name))?;
    Some(serde_json::from_slice(&last.value).expect("a position is JSON"))
}

/// Rows `from..to` of table `db.t`, one transaction each.
fn insert(server: &MariaDb, db: &str, rows: std::ops::Range<u32>) {
    let sql: String = rows.map(|i| format!("INSERT INTO {db}.t VALUES ({i}, {i});\n")).collect();
    server.sql(&sql);
}

/// How many times each row id arrived in `topic`, waiting until `rows` distinct ones did.
fn arrivals(broker: &Broker, topic: &str, rows: usize) -> HashMap<i64, usize> {
    let mut seen = std::collections::HashSet::new();
    let msgs = broker.read_until(topic, Duration::from_secs(60), |msgs| {
        if let Some(m) = msgs.last() {
            seen.insert(m.header("id").unwrap().to_string());
        }
        seen.len() >= rows
    });
    let mut count = HashMap::new();
    for m in msgs {
        *count.entry(m.event().after.unwrap()["id"].as_i64().unwrap()).or_default() += 1;
    }
    count
}

#[test]
fn the_position_topic_must_exist_compacted_and_the_store_needs_the_kafka_sink() {
    let server = MariaDb::shared();
    let broker = Broker::start();
    broker.create_topic("deleting", 1);
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[String]| {
        let mut run = Stream::spawn(server, dir.path(), 0, &args(extra));
        let status = run.wait();
        (status.code(), run.log())
    };
    let (code, log) = run(&kafka_store(&broker, "missing", "s"));
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("topic missing for positions does not exist") && log.contains("--config cleanup.policy=compact"),
        "{log}"
    );
    let (code, log) = run(&kafka_store(&broker, "deleting", "s"));
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("cleanup.policy delete") && log.contains("--add-config cleanup.policy=compact"), "{log}");

    // Usage errors exit 2 before anything is read.
    let usage = |extra: &[&str]| {
        let out = binlog_tail()
            .args(["stream", "--url", &server.url(), "--position-store", "kafka"])
            .args(extra)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = usage(&[]);
    assert!(code == Some(2) && err.contains("needs --sink kafka"), "{err}");
    let kafka = ["--sink", "kafka", "--kafka-brokers", "127.0.0.1:1"];
    let (code, err) = usage(&[&kafka[..], &["--position-file", "p.json"]].concat());
    assert!(code == Some(2) && err.contains("--position-file applies to --position-store file"), "{err}");
    let (code, err) = usage(&[&kafka[..], &["--stream-name", "a b"]].concat());
    assert!(code == Some(2) && err.contains("--stream-name `a b`"), "{err}");
}

/// A fresh database `db` with a table `t`, and a broker with its topic of `partitions` and a
/// compacted topic `positions`.
fn setup(db: &str, partitions: u32) -> (&'static MariaDb, String, Broker) {
    let server = MariaDb::shared();
    let db = server.fresh_db(db);
    server.sql(&format!("CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT);"));
    let broker = Broker::start();
    broker.create_topic_with("positions", 1, &["cleanup.policy=compact"]);
    broker.create_topic(&format!("{db}.t"), partitions);
    (server, db, broker)
}

#[test]
fn streaming_resumes_from_the_position_in_kafka_alone() {
    let (server, db, broker) = setup("kstore", 2);
    let dir = tempfile::tempdir().unwrap();
    let mut extra = kafka_store(&broker, "positions", "resume");
    extra.extend(["--include".into(), db.clone()]);
    let first = Stream::spawn(server, dir.path(), 0, &args(&extra));
    first.wait_streaming();
    insert(server, &db, 1..11);
    assert_eq!(arrivals(&broker, &format!("{db}.t"), 10).len(), 10);
    // Once idle, the saved position reaches the last transaction.
    let last_gtid = server.gtid_pos();
    until("the position reaches the last transaction", || {
        saved(&broker, "positions", "resume")
            .is_some_and(|p| p["gtid_set"].as_str().is_some_and(|g| g.contains(&last_gtid)))
    });
    assert!(first.stop().success());

    // `status` reads it from Kafka too, and checks it against the server.
    let status = |name: &str| {
        binlog_tail()
            .args([
                "status",
                "--url",
                &server.url(),
                "--json",
                "--position-store",
                "kafka",
                "--kafka-brokers",
                &broker.addr(),
            ])
            .args(["--kafka-position-topic", "positions", "--stream-name", name])
            .env("MYSQL_PWD", "replpass")
            .output()
            .unwrap()
    };
    let out = status("resume");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["position_kafka"], serde_json::json!({"topic": "positions", "key": "resume"}));
    assert!(report["position"]["gtid_set"].as_str().unwrap().contains(&last_gtid), "{report}");
    assert!(report["server"]["checks"].as_array().unwrap().iter().all(|c| c["status"] != "fail"), "{report}");
    assert!(report["age_seconds"].as_u64().unwrap() < 60, "{report}");
    let out = status("nobody");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("there is no position in Kafka topic positions under key nobody: nothing was streamed"),
        "{err}"
    );

    // A new process, with nothing on disk, continues after what was delivered: each row once.
    insert(server, &db, 11..16);
    let dir = tempfile::tempdir().unwrap();
    let second = Stream::spawn(server, dir.path(), 1, &args(&extra));
    let count = arrivals(&broker, &format!("{db}.t"), 15);
    std::thread::sleep(Duration::from_secs(1)); // a replay would arrive by now
    let log = second.log();
    assert!(second.stop().success(), "{log}");
    assert!(log.contains("streaming after GTID set"), "{log}");
    assert_eq!(broker.stored(&format!("{db}.t")), 15, "each row once: {count:?}");
    let position = saved(&broker, "positions", "resume").unwrap();
    assert_eq!(position["version"], 2);
    assert!(position["stream_id"].is_string() && position["server"]["server_id"].is_number(), "{position}");
}

#[test]
fn one_instance_streams_and_a_standby_takes_over_after_a_kill_and_a_clean_stop() {
    let (server, db, broker) = setup("klease", 3);
    let dir = tempfile::tempdir().unwrap();
    let instance = |n: usize| {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut extra = kafka_store(&broker, "positions", "lease");
        extra.extend(["--include".into(), db.clone(), "--metrics-addr".into(), format!("127.0.0.1:{port}")]);
        (Stream::spawn(server, dir.path(), n, &args(&extra)), port)
    };
    let (a, a_port) = instance(0);
    a.wait_streaming();
    let (b, b_port) = instance(1);
    b.wait_log("standing by");
    until("both serve metrics", || get(a_port, "/metrics").is_some() && get(b_port, "/metrics").is_some());
    assert_eq!((metric(a_port, "binlog_tail_stream_lease"), metric(b_port, "binlog_tail_stream_lease")), (1.0, 0.0));
    let (code, body) = get(b_port, "/readyz").unwrap();
    assert_eq!((code, body.as_str()), (503, "standing by: another instance holds the stream lease\n"));
    insert(server, &db, 1..21);
    assert_eq!(arrivals(&broker, &format!("{db}.t"), 20).len(), 20);
    assert!(!b.log().contains("streaming "), "the standby read nothing: {}", b.log());

    // SIGKILL: the standby takes over once the dead instance's session expired.
    a.signal("-KILL");
    drop(a);
    insert(server, &db, 21..31);
    b.wait_log("took over the stream lease");
    b.wait_streaming();
    assert_eq!(arrivals(&broker, &format!("{db}.t"), 30).len(), 30);
    until("the new holder is ready", || get(b_port, "/readyz").is_some_and(|(code, _)| code == 200));

    // A clean stop hands over at once, its last position saved: nothing is replayed.
    let (c, _) = instance(2);
    c.wait_log("standing by");
    assert!(b.stop().success());
    c.wait_log("took over the stream lease");
    insert(server, &db, 31..41);
    let count = arrivals(&broker, &format!("{db}.t"), 40);
    std::thread::sleep(Duration::from_secs(1));
    let log = c.log();
    assert!(c.stop().success(), "{log}");
    assert!(!log.contains("already there and skipped"), "a clean handover replays nothing: {log}");
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "duplicates: {twice:?}");
    assert_eq!((count.len(), broker.stored(&format!("{db}.t"))), (40, 40));
}

/// Two instances of one stream for `LEASE_TEST_SECS` seconds (60 unless set; `scripts/lease-soak`
/// runs longer) under a steady insert load and no fault: never two holders at once, and every
/// row exactly once in the topic.
#[test]
fn two_instances_under_load_never_hold_the_lease_at_once() {
    let secs: u64 = std::env::var("LEASE_TEST_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let (server, db, broker) = setup("kfence", 3);
    let dir = tempfile::tempdir().unwrap();
    let instance = |n: usize| {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut extra = kafka_store(&broker, "positions", "fence");
        // The timeout of the reported overlaps.
        *extra.last_mut().unwrap() = "3".into();
        extra.extend(["--include".into(), db.clone(), "--metrics-addr".into(), format!("127.0.0.1:{port}")]);
        (Stream::spawn(server, dir.path(), n, &args(&extra)), port)
    };
    let (a, a_port) = instance(0);
    a.wait_streaming();
    let (b, b_port) = instance(1);
    until("both serve metrics", || get(a_port, "/metrics").is_some() && get(b_port, "/metrics").is_some());

    // About 25 rows a second, one transaction each, while both instances' lease gauges are
    // sampled every 100 ms.
    let load = {
        let (port, db) = (server.port, db.clone());
        std::thread::spawn(move || {
            let (until, mut next) = (std::time::Instant::now() + Duration::from_secs(secs), 1);
            while std::time::Instant::now() < until {
                let sql: String =
                    (next..next + 5).map(|i| format!("INSERT INTO {db}.t VALUES ({i}, {i});\n")).collect();
                crate::util::sql_at(port, &sql);
                next += 5;
                std::thread::sleep(Duration::from_millis(200));
            }
            next - 1
        })
    };
    let started = std::time::Instant::now();
    let (mut both, mut sampled, mut holders) = (Vec::new(), 0, [0u32; 2]);
    while !load.is_finished() {
        let held = [a_port, b_port].map(|p| match get(p, "/metrics") {
            Some((_, body)) => samples(&body).get("binlog_tail_stream_lease") == Some(&1.0),
            None => panic!("an instance stopped: --- A\n{}\n--- B\n{}", a.log(), b.log()),
        });
        sampled += 1;
        for (n, h) in held.iter().enumerate() {
            holders[n] += u32::from(*h);
        }
        if held == [true, true] {
            both.push(started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let rows = load.join().unwrap();
    let count = arrivals(&broker, &format!("{db}.t"), rows as usize);
    std::thread::sleep(Duration::from_secs(2)); // a duplicate in flight arrives by now
    let logs = format!("--- A\n{}\n--- B\n{}", a.log(), b.log());
    assert!(both.is_empty(), "both instances held the lease at {both:?} s ({sampled} samples): {logs}");
    assert!(holders.iter().sum::<u32>() > sampled / 2, "someone streamed: {holders:?} of {sampled}: {logs}");
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{} rows more than once: {twice:?}: {logs}", twice.len());
    assert_eq!((count.len(), broker.stored(&format!("{db}.t"))), (rows as usize, rows as i64));
    let takeovers = logs.matches("claimed the stream lease").count();
    eprintln!(
        "{rows} rows once each; {sampled} samples, held by A {} and B {}; {takeovers} claims waited",
        holders[0], holders[1]
    );
}
