//! The Kafka sink against a real Kafka-protocol broker (tansu): what lands in Kafka is read back
//! with a consumer and compared with what was written.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::util::{
    counter_workload, create_counter_tables, in_db, ok_events, Broker, Event, MariaDb, SnapshotCrash, Stream,
};

fn kafka_args(broker: &Broker) -> Vec<String> {
    vec!["--sink".into(), "kafka".into(), "--kafka-brokers".into(), broker.addr()]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn events_land_with_keys_headers_and_routing() {
    let server = MariaDb::start(&[]);
    let broker = Broker::start();
    broker.create_topic("shop.orders", 3);
    broker.create_topic("shop.nokey", 1);
    broker.create_topic("outbox.event.Order", 1);
    server.sql(
        "CREATE DATABASE shop;
         CREATE TABLE shop.orders (id INT PRIMARY KEY, status VARCHAR(10));
         CREATE TABLE shop.nokey (v INT);
         CREATE TABLE shop.outbox (id VARCHAR(36) PRIMARY KEY, aggregate_type VARCHAR(20), aggregate_id VARCHAR(20), type VARCHAR(30), payload JSON);",
    );
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let mut extra = kafka_args(&broker);
    extra.extend(["--start", "earliest", "--outbox", "shop.outbox", "--kafka-headers", "all"].map(String::from));
    let mut run = Stream::start(&server, &position, dir.path(), 0, &args(&extra));
    server.sql(
        "INSERT INTO shop.orders VALUES (1, 'new'), (2, 'new');
         UPDATE shop.orders SET status = 'paid' WHERE id = 1;
         UPDATE shop.orders SET status = 'shipped' WHERE id = 1;
         INSERT INTO shop.nokey VALUES (5);
         START TRANSACTION;
         INSERT INTO shop.orders VALUES (3, 'new');
         INSERT INTO shop.outbox VALUES ('e-1', 'Order', '3', 'OrderCreated', '{\"id\": 3}');
         COMMIT;",
    );
    let orders = broker.read("shop.orders", 5);
    run.signal("-TERM");
    assert!(run.wait().success(), "{}", run.log());
    let log = run.log();
    assert_eq!(orders.len(), 5, "{log}");
    // Five transactions sent messages (the earlier DDL ones did not, so they do not count).
    assert!(log.contains("Kafka acknowledgement latency, whole run: 5 transactions, p50 "), "{log}");

    // The value is exactly what dump prints for the same event.
    let dumped = in_db(ok_events(&server.dump(&["--start", "earliest", "--include", "shop.orders"])), "shop");
    let mut got: Vec<_> = orders.iter().map(|m| m.event()).collect();
    got.sort_by(|a, b| (&a.gtid, a.row).cmp(&(&b.gtid, b.row)));
    assert_eq!(got, dumped);

    // Key: the primary key as JSON; one key, one partition, in commit order.
    let row1: Vec<_> = orders.iter().filter(|m| m.key.as_deref() == Some("{\"id\":1}")).collect();
    assert_eq!(row1.len(), 3);
    assert!(row1.iter().all(|m| m.partition == row1[0].partition));
    let statuses: Vec<_> = row1.iter().map(|m| m.event().after.unwrap()["status"].clone()).collect();
    assert_eq!(statuses, [json!("new"), json!("paid"), json!("shipped")]);

    // Headers.
    let m = &row1[1];
    let e = m.event();
    assert_eq!(m.header("op"), Some("update"));
    assert_eq!(m.header("db"), Some("shop"));
    assert_eq!(m.header("table"), Some("orders"));
    assert_eq!(m.header("gtid"), e.gtid.as_deref());
    assert_eq!(m.header("pos"), Some(e.pos.as_str()));
    assert_eq!(m.header("id").map(str::to_string), Some(format!("{}/{}", e.gtid.unwrap(), e.row)));

    let nokey = broker.read("shop.nokey", 1);
    assert_eq!(nokey[0].key, None, "no primary key, no message key");
    let outbox = broker.read("outbox.event.Order", 1);
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].key.as_deref(), Some("3"));
    assert_eq!(outbox[0].header("type"), Some("OrderCreated"));
    assert_eq!(outbox[0].header("id"), Some("e-1"));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&outbox[0].value).unwrap(), json!({"id": 3}));
}

#[test]
fn fixed_topic_prefix_and_table_keys() {
    let server = MariaDb::start(&[]);
    let broker = Broker::start();
    broker.create_topic("cdc.all", 2);
    server.sql("CREATE DATABASE a; CREATE TABLE a.t (id INT PRIMARY KEY); CREATE TABLE a.u (id INT PRIMARY KEY);");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let mut extra = kafka_args(&broker);
    extra.extend(["--kafka-topic", "all", "--kafka-topic-prefix", "cdc.", "--kafka-key", "table"].map(String::from));
    let run = Stream::start(&server, &position, dir.path(), 0, &args(&extra));
    run.wait_ready(&position);
    server.sql("INSERT INTO a.t VALUES (1); INSERT INTO a.u VALUES (1); INSERT INTO a.t VALUES (2);");
    let msgs = broker.read("cdc.all", 3);
    assert!(run.stop().success());
    let keys: Vec<_> = msgs.iter().map(|m| m.key.clone().unwrap()).collect();
    assert_eq!(keys.iter().filter(|k| *k == "a.t").count(), 2);
    assert_eq!(keys.iter().filter(|k| *k == "a.u").count(), 1);
    // By default (--kafka-headers minimal) only what consumers and dedupe need.
    for m in &msgs {
        let names: Vec<_> = m.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["id", "binlog_tail.seq"]);
    }
}

#[test]
fn permanent_errors_stop_with_the_position_unchanged() {
    let server = MariaDb::start(&[]);
    let broker = Broker::start();
    broker.create_topic("p.t", 1);
    server.sql("CREATE DATABASE p; CREATE TABLE p.t (id INT PRIMARY KEY, blob_col LONGBLOB); CREATE TABLE p.missing (id INT PRIMARY KEY);");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let mut extra = kafka_args(&broker);
    extra.extend(
        ["--start", "latest", "-X", "message.max.bytes=20000", "-X", "topic.metadata.propagation.max.ms=2000"]
            .map(String::from),
    );
    let first = Stream::start(&server, &position, dir.path(), 0, &args(&extra));
    first.wait_ready(&position);
    server.sql("INSERT INTO p.t VALUES (1, 'small');");
    assert_eq!(broker.read("p.t", 1).len(), 1);
    assert!(first.stop().success());
    let saved = std::fs::read(&position).unwrap();

    // A message larger than allowed.
    server.sql("INSERT INTO p.t VALUES (2, REPEAT('x', 100000));");
    let mut run = Stream::start(&server, &position, dir.path(), 1, &args(&extra[..extra.len() - 2]));
    let status = run.wait();
    let log = run.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("`p`.`t`") && log.contains("binlog.") && log.contains("max.message.bytes"), "{log}");
    assert_eq!(std::fs::read(&position).unwrap(), saved, "the position did not move");

    // A topic that does not exist (the broker does not create topics).
    server.sql("DELETE FROM p.t WHERE id = 2;");
    let pos_file2 = dir.path().join("position2.json");
    let mut extra2 = kafka_args(&broker);
    extra2.extend(
        ["--start", "latest", "--include", "p.missing", "-X", "topic.metadata.propagation.max.ms=2000"]
            .map(String::from),
    );
    let mut run = Stream::start(&server, &pos_file2, dir.path(), 2, &args(&extra2));
    run.wait_ready(&pos_file2);
    let saved2 = std::fs::read(&pos_file2).unwrap();
    server.sql("INSERT INTO p.missing VALUES (1);");
    let status = run.wait();
    let log = run.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("create the topic"), "{log}");
    assert_eq!(std::fs::read(&pos_file2).unwrap(), saved2);
}

#[test]
fn sigkills_a_broker_outage_and_a_database_restart_lose_nothing() {
    crash_test(Store::File);
}

#[test]
fn with_the_position_in_kafka_and_another_producer_sigkills_and_outages_lose_nothing() {
    crash_test(Store::Kafka);
}

/// Where the crash test keeps its position. With Kafka, another producer writes to one of the
/// topics all along, and the broker outage also breaks the stream's lease.
#[derive(Clone, Copy, PartialEq)]
enum Store {
    File,
    Kafka,
}

/// 10,000 transactions over three tables while binlog-tail is SIGKILLed 22 times, MariaDB is
/// killed and restarted once and the broker is down for 11 s: every row arrives, per-key order
/// holds, and nothing is sent twice.
fn crash_test(store: Store) {
    let _heavy = crate::util::heavy();
    let server = MariaDb::start(&[]);
    let mut broker = Broker::start();
    create_counter_tables(&server);
    for t in 0..3 {
        broker.create_topic(&format!("k.t{t}"), 3);
    }
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let mut base = kafka_args(&broker);
    if store == Store::Kafka {
        broker.create_topic_with("binlog_tail.positions", 1, &["cleanup.policy=compact"]);
        base.extend(["--position-store", "kafka", "--kafka-lease-timeout", "1"].map(String::from));
    } else {
        base.extend(["--position-file".into(), position.to_str().unwrap().into()]);
    }
    let foreign = (store == Store::Kafka).then(|| ForeignWriter::start(&broker, "k.t1"));
    let txs = 10_000;
    // Written in two halves: the database restarts between them, while binlog-tail streams.
    let mut writer = Some(crate::util::write_in_batches(
        server.port,
        &counter_workload(0..txs / 2),
        250,
        Duration::from_millis(150),
    ));
    let mut rng = crate::util::XorShift(0x9e3779b97f4a7c15u64);
    let kills = 22;
    for n in 0..kills {
        let mut extra = base.clone();
        // --start applies only while no position is saved (a run may be killed before saving).
        extra.extend(["--checkpoint-every", "100", "--include", "k", "--start", "earliest"].map(String::from));
        let mut run = Stream::spawn(&server, dir.path(), n, &args(&extra));
        if store == Store::Kafka {
            // A restart waits for the killed instance's lease to expire.
            run.wait_streaming();
        }
        if n == kills / 4 {
            // MariaDB crashes and comes back under a running binlog-tail, which reconnects.
            writer.take().unwrap().join().unwrap();
            std::thread::sleep(Duration::from_secs(1));
            server.restart(&[]);
            std::thread::sleep(Duration::from_secs(1));
            assert!(
                run.child.try_wait().unwrap().is_none(),
                "binlog-tail exited when the database restarted: {}",
                run.log()
            );
            writer = Some(crate::util::write_in_batches(
                server.port,
                &counter_workload(txs / 2..txs),
                250,
                Duration::from_millis(150),
            ));
        }
        if n == kills / 2 {
            // The broker is down for over 10 s while binlog-tail keeps running, then comes back.
            broker.stop();
            std::thread::sleep(Duration::from_secs(11));
            broker.restart();
            if store == Store::Kafka {
                // Unheard for longer than its lease timeout, it stopped and stands by again.
                run.wait_log("lost the stream lease");
                run.wait_log("took over the stream lease");
            }
        }
        // Kafka acknowledges after a round trip and a linger, so a run needs a moment to make
        // progress: kill after 0.5-1.5 s.
        std::thread::sleep(Duration::from_millis(500 + rng.next() % 1000));
        run.signal("-KILL");
        run.wait();
    }
    writer.take().unwrap().join().unwrap();
    let mut extra = base.clone();
    extra.extend(["--include", "k"].map(String::from));
    let last = Stream::spawn(&server, dir.path(), kills, &args(&extra));
    if let Some(foreign) = foreign {
        let sent = foreign.stop();
        assert!(sent > 100, "the other producer wrote all along: {sent} messages");
    }

    // Every committed row change is in Kafka, the first delivery of each in commit order per key.
    let mut duplicates = [0; 3];
    for (t, duplicates) in duplicates.iter_mut().enumerate() {
        let expected_inserts = (0..txs).filter(|i| i % 3 == t).count();
        // An insert and a counter update per transaction, and the counter row's own insert.
        let expected = expected_inserts * 2 + 1;
        // Read until every distinct event is there (duplicates make the count larger).
        let mut ids = HashSet::new();
        let mut msgs = broker.read_until(&format!("k.t{t}"), Duration::from_secs(180), |msgs| {
            if let Some(id) = msgs.last().and_then(|m| m.header("id")) {
                ids.insert(id.to_string());
            }
            ids.len() >= expected
        });
        msgs.sort_by_key(|m| (m.partition, m.offset));
        let mut seen = HashSet::new();
        let mut counter_values = Vec::new();
        let mut inserted = HashSet::new();
        // The other producer's messages carry no id.
        for m in msgs.iter().filter(|m| m.header("id").is_some()) {
            if !seen.insert(m.header("id").unwrap().to_string()) {
                *duplicates += 1;
                continue;
            }
            let e = m.event();
            match e.op.as_str() {
                "insert" => {
                    let id = e.after.unwrap()["id"].as_i64().unwrap();
                    if id > 0 {
                        inserted.insert(id); // id 0 is the counter row, inserted at setup
                    }
                }
                "update" => counter_values.push(e.after.unwrap()["v"].as_i64().unwrap()),
                other => panic!("unexpected {other}"),
            }
        }
        let missing: Vec<i64> = (0..txs as i64)
            .filter(|i| i % 3 == t as i64)
            .map(|i| i + 1)
            .filter(|id| !inserted.contains(id))
            .take(10)
            .collect();
        assert_eq!(
            inserted.len(),
            expected_inserts,
            "k.t{t}: inserted rows missing from Kafka, e.g. {missing:?}; {} messages read; last run: {}",
            msgs.len(),
            last.log()
        );
        assert_eq!(counter_values.len(), expected_inserts, "k.t{t}: counter updates missing");
        assert!(counter_values.windows(2).all(|w| w[0] < w[1]), "k.t{t}: per-key order broken");
    }
    let log = last.log();
    assert!(last.stop().success(), "{log}");
    let store_name = match store {
        Store::File => "position file",
        Store::Kafka => "position in Kafka, another producer writing to k.t1",
    };
    eprintln!("kafka crash test ({store_name}): {txs} transactions, {kills} SIGKILLs, MariaDB killed and restarted once, broker stopped for 11 s and restarted, 0 lost, {duplicates:?} duplicates in k.t0, k.t1, k.t2");
    assert_eq!(duplicates, [0; 3], "a restart sends nothing a partition already holds");
    for t in 0..3 {
        let topic = format!("k.t{t}");
        let expected = (0..txs).filter(|i| i % 3 == t).count() * 2 + 1;
        // Everything the topic holds, the other producer's messages (without an id) included.
        let stored = broker.stored(&topic) as usize;
        let ours = broker.read(&topic, stored).iter().filter(|m| m.header("id").is_some()).count();
        assert_eq!(ours, expected, "{topic} holds each event once");
    }
}

/// Another producer writing to a topic binlog-tail writes to, a message every 200 ms to a
/// partition in turn, until stopped; without binlog-tail's headers.
struct ForeignWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl ForeignWriter {
    fn start(broker: &Broker, topic: &str) -> ForeignWriter {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (addr, topic, stopping) = (broker.addr(), topic.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
            // Retries through the broker's outage, like any producer.
            let producer: BaseProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &addr)
                .set("message.timeout.ms", "0")
                .create()
                .unwrap();
            let mut sent = 0;
            while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                let value = format!("not binlog-tail's {sent}");
                producer.send(BaseRecord::<(), _>::to(&topic).payload(&value).partition(sent as i32 % 3)).unwrap();
                sent += 1;
                producer.poll(Duration::from_millis(200));
            }
            producer.flush(Duration::from_secs(60)).unwrap();
            sent
        });
        ForeignWriter { stop, thread }
    }

    /// How many messages it wrote.
    fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

#[test]
fn a_replay_after_sigkill_sends_nothing_twice_even_past_another_producer() {
    let server = MariaDb::start(&[]);
    let broker = Broker::start();
    broker.create_topic("x.t", 3);
    server.sql("CREATE DATABASE x; CREATE TABLE x.t (id INT PRIMARY KEY);");
    let insert = |from: usize, to: usize| {
        let sql: String = (from..to)
            .map(|i| format!("INSERT INTO x.t VALUES ({i}), ({}), ({});\n", i + 100_000, i + 200_000))
            .collect();
        server.sql(&sql);
    };
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    // The position stays at the start, so a restart replays everything.
    let mut extra = kafka_args(&broker);
    extra.extend(
        ["--start", "earliest", "--checkpoint-every", "1000000", "--checkpoint-interval", "86400"].map(String::from),
    );
    let first = Stream::start(&server, &position, dir.path(), 0, &args(&extra));
    insert(0, 100);
    assert_eq!(broker.read("x.t", 300).len(), 300);
    first.signal("-KILL");
    drop(first);
    broker.write_foreign("x.t", 2);
    insert(100, 110);

    let second = Stream::start(&server, &position, dir.path(), 1, &args(&extra[..4]));
    let expected = 330 + 6;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while broker.stored("x.t") < expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2)); // anything sent twice would arrive by now
    let log = second.log();
    assert!(second.stop().success(), "{log}");
    assert_eq!(broker.stored("x.t"), expected, "each row once, and the other producer's messages: {log}");
    assert!(log.contains("were already there and skipped"), "the skipped replay is logged: {log}");
    let ids: HashSet<String> =
        broker.read("x.t", expected as usize).iter().filter_map(|m| m.header("id").map(str::to_string)).collect();
    assert_eq!(ids.len(), 330);
}

#[test]
fn a_topic_grown_between_runs_gets_duplicates_never_losses() {
    use binlog_tail::sink::kafka::dedupe::Partitioner;
    let server = MariaDb::start(&[]);
    let mut broker = Broker::start();
    broker.create_topic("g.t", 1);
    server.sql("CREATE DATABASE g; CREATE TABLE g.t (id INT PRIMARY KEY);");
    let insert = |rows: std::ops::Range<usize>| {
        server.sql(&rows.map(|i| format!("INSERT INTO g.t VALUES ({i});\n")).collect::<String>())
    };
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    // The position stays at the start, so the restart replays every row.
    let mut extra = kafka_args(&broker);
    extra.extend(
        ["--start", "earliest", "--checkpoint-every", "1000000", "--checkpoint-interval", "86400"].map(String::from),
    );
    let first = Stream::start(&server, &position, dir.path(), 0, &args(&extra));
    insert(0..200);
    assert_eq!(broker.read("g.t", 200).len(), 200);
    first.signal("-KILL");
    drop(first);
    broker.grow_partitions("g.t", 3);
    insert(200..220);

    // A replayed row whose key now maps to partition 0 is found in that partition's tail and
    // skipped; one mapping to a new partition is sent again: a duplicate, never a loss.
    let moved = (0..200)
        .filter(|i| Partitioner::Crc32.partition(Some(format!("{{\"id\":{i}}}").as_bytes()), b"", 3) != 0)
        .count();
    assert!(moved > 50, "the test needs keys that move: {moved}");
    let second = Stream::start(&server, &position, dir.path(), 1, &args(&extra[..4]));
    let expected = 220 + moved;
    let msgs = broker.read("g.t", expected);
    std::thread::sleep(Duration::from_secs(2)); // anything sent more often would arrive by now
    let log = second.log();
    assert!(second.stop().success(), "{log}");
    assert_eq!(broker.stored("g.t"), expected as i64, "{log}");
    let mut copies = std::collections::HashMap::new();
    for m in &msgs {
        let id = m.event().after.unwrap()["id"].as_i64().unwrap();
        copies.entry(id).or_insert_with(Vec::new).push(m.partition);
    }
    assert_eq!(copies.len(), 220, "every row is there");
    for (id, partitions) in copies.iter_mut() {
        partitions.sort();
        let now = Partitioner::Crc32.partition(Some(format!("{{\"id\":{id}}}").as_bytes()), b"", 3);
        let want = if *id < 200 && now != 0 { vec![0, now] } else { vec![now] };
        assert_eq!(*partitions, want, "row {id}: where its copies are");
    }
    eprintln!("grown topic: 200 rows replayed into 3 partitions instead of 1, {moved} duplicates (their keys moved), {} skipped", 200 - moved);
}

/// The Kafka options of the snapshot crash tests: 3 partitions, and a producer queue of 100
/// messages, which makes reading wait for the broker (the snapshot would end before a kill).
fn snapshot_args(broker: &Broker) -> Vec<String> {
    broker.create_topic("s.t", 3);
    let mut args = kafka_args(broker);
    args.extend(["-X", "queue.buffering.max.messages=100"].map(String::from));
    args
}

/// `s.t` of the snapshot crash test, read until `done` holds (asked about what arrived since it
/// was last asked: it looks for one event); then, after a pause for what other partitions still
/// had on the way, all of it.
fn snapshot_topic(broker: &Broker, done: &dyn Fn(&[Event]) -> bool) -> Vec<Event> {
    let events = |m: &[crate::util::KafkaMessage]| m.iter().map(|m| m.event()).collect::<Vec<_>>();
    let mut seen = 0;
    broker.read_until("s.t", Duration::from_secs(180), |m| {
        let now = done(&events(&m[seen..]));
        seen = m.len();
        now
    });
    std::thread::sleep(Duration::from_secs(2));
    let stored = broker.stored("s.t") as usize;
    events(&broker.read("s.t", stored))
}

/// A table of 20,000 rows read by `--snapshot initial` in chunks of 100 into 3 partitions while
/// binlog-tail is SIGKILLed mid-snapshot, then a last run: Kafka holds every row's read once
/// (`sink::Reads`, found in the partition tails), then the later changes.
#[test]
fn sigkills_during_a_snapshot_leave_every_read_once() {
    let crash = SnapshotCrash::new(20_000, 3);
    let broker = Broker::start();
    crash.run(snapshot_args(&broker), |done| {
        let mut held = snapshot_topic(&broker, done);
        // Kafka orders per partition: the later changes (rows 1 to 5 updated, then an insert)
        // are put in their order across partitions.
        held.sort_by_key(|e| (e.op != "read", e.op == "insert", e.after.as_ref().map(|a| a["id"].as_i64())));
        held
    });
}

/// The same with 600 transactions changing the table during the killed runs: what Kafka holds,
/// replayed in order per row (a row's messages share a partition), gives the table.
#[test]
fn sigkills_during_a_snapshot_with_writes_lose_nothing() {
    let crash = SnapshotCrash::new(20_000, 3).with_writes();
    let broker = Broker::start();
    crash.run(snapshot_args(&broker), |done| snapshot_topic(&broker, done));
}

#[test]
fn initial_snapshot_lands_in_the_same_topics_keyed_like_changes() {
    let server = MariaDb::start(&[]);
    let broker = Broker::start();
    broker.create_topic("shop.orders", 3);
    broker.create_topic("shop.nokey", 1);
    server.sql(
        "CREATE DATABASE shop; USE shop;
         CREATE TABLE orders (id INT PRIMARY KEY, status VARCHAR(10));
         INSERT INTO orders SELECT seq, 'old' FROM seq_1_to_25;
         CREATE TABLE nokey (v INT);
         INSERT INTO nokey VALUES (1), (1), (2);",
    );
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let mut extra = kafka_args(&broker);
    extra.extend(["--snapshot", "initial", "--snapshot-chunk-size", "10", "--kafka-headers", "all"].map(String::from));
    let run = Stream::start(&server, &position, dir.path(), 0, &args(&extra));
    let nokey = broker.read("shop.nokey", 3);
    assert_eq!(broker.read("shop.orders", 25).len(), 25, "the snapshot arrives first: {}", run.log());
    server.sql("UPDATE shop.orders SET status = 'new' WHERE id = 1; INSERT INTO shop.orders VALUES (26, 'new');");
    let orders = broker.read("shop.orders", 27);
    assert!(run.stop().success());
    assert_eq!((orders.len(), nokey.len()), (27, 3));
    let reads: Vec<_> = orders.iter().filter(|m| m.header("op") == Some("read")).collect();
    assert_eq!(reads.len(), 25);
    let ids: HashSet<_> = orders.iter().chain(&nokey).map(|m| m.header("id").unwrap().to_string()).collect();
    assert_eq!(ids.len(), 30, "every message has its own id");
    // The key is the primary key, so a row's read and its later changes share a partition, in order.
    let row1: Vec<_> = orders.iter().filter(|m| m.key.as_deref() == Some("{\"id\":1}")).collect();
    assert_eq!(row1.iter().map(|m| m.header("op").unwrap()).collect::<Vec<_>>(), ["read", "update"]);
    assert_eq!(row1[0].event().after.unwrap()["status"], json!("old"));
    assert_eq!(row1[0].partition, row1[1].partition);
    assert!(nokey.iter().all(|m| m.key.is_none()));
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&position).unwrap()).unwrap();
    assert_eq!(saved["snapshot"]["pending"], json!([]), "{saved}");
    assert_eq!(saved["snapshot"]["done"], json!(2));
}

#[test]
fn debezium_and_maxwell_keys_tombstones_and_primary_key_changes() {
    let server = MariaDb::start(&[]);
    let broker = Broker::start();
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, status VARCHAR(10));");
    let dir = tempfile::tempdir().unwrap();
    // One stream per setting, each from the start of the binlog into its own topics.
    let runs = [
        ("dbz.", "debezium", None),
        ("nt.", "debezium", Some("--debezium-tombstones=false")),
        ("mx.", "maxwell", None),
    ];
    let mut streams = Vec::new();
    for (n, (prefix, format, flag)) in runs.iter().enumerate() {
        broker.create_topic(&format!("{prefix}shop.orders"), 1);
        let position = dir.path().join(format!("position.{n}.json"));
        let mut extra = kafka_args(&broker);
        extra.extend(
            ["--start", "earliest", "--kafka-topic-prefix", prefix, "--format", format, "--kafka-headers", "all"]
                .map(String::from),
        );
        extra.extend(flag.map(String::from));
        let run = Stream::start(&server, &position, dir.path(), n, &args(&extra));
        run.wait_ready(&position);
        streams.push(run);
    }
    server.sql(
        "INSERT INTO shop.orders VALUES (1, 'new');
         UPDATE shop.orders SET id = 2 WHERE id = 1;
         UPDATE shop.orders SET status = 'paid' WHERE id = 2;
         DELETE FROM shop.orders WHERE id = 2;",
    );
    let dbz = broker.read("dbz.shop.orders", 7);
    let nt = broker.read("nt.shop.orders", 5);
    let mx = broker.read("mx.shop.orders", 4);
    for run in streams {
        assert!(run.stop().success());
    }
    let summary = |msgs: &[crate::util::KafkaMessage], field: &str| -> Vec<(String, String)> {
        msgs.iter()
            .map(|m| {
                let kind = if m.value.is_empty() {
                    "tombstone".to_string()
                } else {
                    serde_json::from_slice::<serde_json::Value>(&m.value).unwrap()[field].as_str().unwrap().to_string()
                };
                (m.key.clone().unwrap_or_default(), kind)
            })
            .collect()
    };
    let (k1, k2) = ("{\"id\":1}".to_string(), "{\"id\":2}".to_string());
    // The primary-key change is a delete (old key), its tombstone and a create (new key).
    let want = [(&k1, "c"), (&k1, "d"), (&k1, "tombstone"), (&k2, "c"), (&k2, "u"), (&k2, "d"), (&k2, "tombstone")];
    assert_eq!(summary(&dbz, "op"), want.map(|(k, o)| (k.clone(), o.to_string())));
    assert_eq!(dbz[2].header("op"), Some("tombstone"));
    let ids: HashSet<_> = dbz.iter().map(|m| m.header("id").unwrap().to_string()).collect();
    assert_eq!(ids.len(), dbz.len(), "every message has an id of its own: {ids:?}");
    assert_eq!(dbz.len(), 7);
    let no_tombstones = [(&k1, "c"), (&k1, "d"), (&k2, "c"), (&k2, "u"), (&k2, "d")];
    assert_eq!(summary(&nt, "op"), no_tombstones.map(|(k, o)| (k.clone(), o.to_string())));
    let key = |id: u32| format!("{{\"database\":\"shop\",\"table\":\"orders\",\"pk.id\":{id}}}");
    let maxwell = [(key(1), "insert"), (key(2), "update"), (key(2), "update"), (key(2), "delete")];
    assert_eq!(summary(&mx, "type"), maxwell.map(|(k, t)| (k, t.to_string())));
}
