//! Snapshots: every existing row as a `read` event, byte for byte what the binlog decoder prints,
//! and — under concurrent writes and SIGKILLs — followed by exactly the changes after it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{in_db, ok_events, read_events, root, sql_at, Event, MariaDb, Stream, TableLock, XorShift};

/// The `id` key column of each event, in order.
fn pk_ids<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<i64> {
    events.into_iter().map(|e| e.pk.as_ref().unwrap()["id"].as_i64().unwrap()).collect()
}

/// The raw JSON text of each line's `after` (the last field), keyed by the row's `id`.
fn raw_afters(stdout: &[u8], op: &str) -> BTreeMap<i64, String> {
    let mut out = BTreeMap::new();
    for line in String::from_utf8(stdout.to_vec()).unwrap().lines() {
        let e: Event = serde_json::from_str(line).unwrap();
        if e.op != op || e.table != "types" {
            continue;
        }
        let at = line.rfind(",\"after\":").expect("after is the last field");
        let raw = &line[at + ",\"after\":".len()..line.len() - 1];
        out.insert(e.pk.unwrap()["id"].as_i64().unwrap(), raw.to_string());
    }
    out
}

#[test]
fn read_events_are_byte_for_byte_the_binlog_inserts() {
    let server = MariaDb::shared();
    let db = server.fresh_db("snap_types");
    let start = server.gtid_pos();
    let sql = std::fs::read_to_string(root().join("fixtures/types.sql")).unwrap();
    // Only the inserts: every row of the fixture stays in the table.
    let inserts = sql.split("\nUPDATE").next().unwrap();
    server.sql(&format!("USE {db};\n{inserts}"));

    let binlog = server.dump(&["--start", &start, "--include", &format!("{db}.types")]);
    assert!(binlog.status.success(), "{}", crate::util::stderr(&binlog));
    let inserted = raw_afters(&binlog.stdout, "insert");
    let snap = server.dump(&["--snapshot", "initial", "--include", &format!("{db}.types")]);
    let events = ok_events(&snap);
    let read = raw_afters(&snap.stdout, "read");
    assert_eq!(inserted.len(), 3, "the fixture inserts three rows");
    assert_eq!(read, inserted, "read events must print every value exactly as the binlog decoder does");
    // The read's GTID set holds every insert it read.
    let newest_insert =
        crate::util::events(&binlog).iter().filter_map(|e| e.gtid.as_deref().map(seq_of)).max().unwrap();
    for e in &events {
        assert_eq!((e.op.as_str(), e.before.is_none(), e.xid), ("read", true, None));
        assert!(seq_of(e.gtid.as_deref().unwrap()) >= newest_insert, "{:?}", e.gtid);
        let (file, offset) = e.pos.rsplit_once(':').unwrap();
        assert!(file.starts_with("binlog.") && offset.parse::<u64>().unwrap() > 4, "pos {}", e.pos);
    }
    assert_eq!(
        events.iter().map(|e| (e.row, e.commit)).collect::<Vec<_>>(),
        [(0, false), (1, false), (2, true)],
        "one chunk, one transaction"
    );
}

#[test]
fn filters_keys_and_empty_tables() {
    let server = MariaDb::shared();
    let db = server.fresh_db("snap_filters");
    server.sql(&format!(
        "CREATE TABLE {db}.empty (id INT PRIMARY KEY);
         CREATE TABLE {db}.users (id INT PRIMARY KEY, name VARCHAR(20), secret VARCHAR(20));
         INSERT INTO {db}.users VALUES (1, 'ann', 'x'), (2, 'bob', 'y'), (3, 'cy', 'z');
         CREATE TABLE {db}.audit_log (id INT PRIMARY KEY);
         INSERT INTO {db}.audit_log VALUES (1);
         CREATE TABLE {db}.uniq (code CHAR(3) NOT NULL, note TEXT, UNIQUE KEY (code));
         INSERT INTO {db}.uniq VALUES ('b', 'two'), ('a', 'one'), ('C', 'three');
         CREATE TABLE {db}.bag (x INT, y INT);
         INSERT INTO {db}.bag VALUES (1, 1), (1, 1), (2, NULL);"
    ));
    // One chunk read at a time, and several: the same events (a table without a key in one go).
    let dump = |parallelism: &str| {
        in_db(
            ok_events(&server.dump(&[
                "--snapshot",
                "initial",
                "--snapshot-chunk-size",
                "2",
                "--snapshot-parallelism",
                parallelism,
                "--include",
                &db,
                "--exclude",
                "*.audit_*",
                "--drop-column",
                &format!("{db}.users.secret"),
            ])),
            &db,
        )
    };
    let events = dump("1");
    let strip = |events: &[Event]| -> Vec<_> {
        events.iter().map(|e| (e.table.clone(), e.row, e.commit, e.after.clone())).collect()
    };
    assert_eq!(strip(&events), strip(&dump("4")), "parallelism changes nothing in the output");
    let tables: Vec<&str> = events.iter().map(|e| e.table.as_str()).collect();
    assert_eq!(tables, ["bag", "bag", "bag", "uniq", "uniq", "uniq", "users", "users", "users"]);
    // A unique NOT NULL key chunks the table in the collation's order, and is the `pk` (the server
    // makes it the primary key, as change events say).
    let codes: Vec<&Value> = events[3..6].iter().map(|e| &e.after.as_ref().unwrap()["code"]).collect();
    assert_eq!(codes, ["a", "b", "C"]);
    assert_eq!(events[3].pk.as_ref().map(|k| &k["code"]), Some(&Value::from("a")));
    assert!(events[0].pk.is_none(), "a table without a key has no pk");
    assert_eq!(events[3..6].iter().map(|e| (e.row, e.commit)).collect::<Vec<_>>(), [(0, false), (1, true), (0, true)]);
    let user = events[6].after.as_ref().unwrap();
    assert_eq!((user.get("name"), user.get("secret")), (Some(&Value::from("ann")), None), "dropped columns stay out");

    let none = in_db(ok_events(&server.dump(&["--snapshot", "initial", "--include", &db, "--ops", "insert"])), &db);
    assert!(none.is_empty(), "--ops without read takes no snapshot: {none:?}");
    let keyed = server.dump(&[
        "--snapshot",
        "initial",
        "--include",
        &format!("{db}.bag"),
        "--snapshot-key",
        &format!("{db}.bag=nope"),
    ]);
    let err = crate::util::stderr(&keyed);
    assert_eq!(keyed.status.code(), Some(2), "a key that does not exist is a usage error: {err}");
    assert!(err.contains("--snapshot-key names `nope`"), "{err}");
    for bad in [&["--snapshot-key", "bag=x"][..], &["--snapshot-chunk-size", "0"], &["--snapshot-method", "watermark"]]
    {
        let out = server.dump(&[&["--snapshot", "initial"][..], bad].concat());
        let err = crate::util::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{bad:?} is a usage error: {err}");
        assert!(err.starts_with("error: ") && !err.contains("panicked"), "{err}");
    }
}

/// The identity of a row in the correctness test's tables.
fn identity(table: &str, image: &BTreeMap<String, Value>) -> String {
    match table {
        "big" => image["id"].to_string(),
        "ci" => format!("{}/{}", image["k"], image["n"]),
        "uq" => image["u"].to_string(),
        other => panic!("unexpected table {other}"),
    }
}

/// A random mix of inserts, updates and deletes on the keys the snapshot is reading.
fn workload_batch(rng: &mut XorShift, txs: usize) -> String {
    // Both cases of each letter: the same key under the case-insensitive collation.
    const LETTERS: [&str; 8] = ["a", "A", "b", "B", "e", "E", "h", "H"];
    let mut sql = String::new();
    for _ in 0..txs {
        sql.push_str("START TRANSACTION;\n");
        for _ in 0..1 + rng.next() % 3 {
            let v = rng.next() % 1000;
            let stmt = match rng.next() % 9 {
                0 => format!("DELETE FROM big WHERE id = {};", 1 + rng.next() % 105_000),
                1 | 2 => format!("UPDATE big SET v = {v}, s = 'u{v}' WHERE id = {};", 1 + rng.next() % 105_000),
                3 => format!(
                    "INSERT INTO big VALUES ({}, {v}, 'i{v}') ON DUPLICATE KEY UPDATE v = {v};",
                    1 + rng.next() % 105_000
                ),
                4 => format!(
                    "DELETE FROM ci WHERE k = '{}' AND n = {};",
                    LETTERS[(rng.next() % 8) as usize],
                    rng.next() % 300
                ),
                5 => format!(
                    "INSERT INTO ci VALUES ('{}', {}, {v}) ON DUPLICATE KEY UPDATE v = {v};",
                    LETTERS[(rng.next() % 8) as usize],
                    rng.next() % 300
                ),
                6 => format!(
                    "UPDATE ci SET v = {v} WHERE k = '{}' AND n = {};",
                    LETTERS[(rng.next() % 8) as usize],
                    rng.next() % 300
                ),
                7 => format!("DELETE FROM uq WHERE u = {};", rng.next() % 3000),
                _ => format!("INSERT INTO uq VALUES ({}, {v}) ON DUPLICATE KEY UPDATE v = {v};", rng.next() % 3000),
            };
            sql.push_str(&stmt);
            sql.push('\n');
        }
        sql.push_str("COMMIT;\n");
    }
    sql
}

fn snapshot_pending(position: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(position).ok()?;
    let pos: Value = serde_json::from_str(&text).ok()?;
    pos["snapshot"]["pending"].as_array().map(Vec::len)
}

fn reads_in(file: &Path) -> usize {
    std::fs::read_to_string(file).unwrap_or_default().lines().filter(|l| l.starts_with("{\"op\":\"read\"")).count()
}

/// The correctness test of the issue: ≥100,000 rows, a case-insensitive composite key, a table
/// without a primary key, concurrent inserts/updates/deletes on the same keys, SIGKILLs during
/// the snapshot, runs reading 4 chunks at once and 1. Replaying the output in order must give
/// exactly the tables' final contents.
#[test]
fn snapshot_under_writes_and_sigkills_replays_to_the_final_tables() {
    correctness("consistent");
}

/// The method for MySQL (which cannot run here), on MariaDB: DBLog's watermarks.
#[test]
fn watermark_snapshot_under_writes_and_sigkills_replays_to_the_final_tables() {
    correctness("watermark");
}

fn correctness(method: &str) {
    let _heavy = crate::util::heavy();
    let server = MariaDb::start(&[]);
    let port = server.port;
    server.sql(
        "CREATE DATABASE c; USE c;
         CREATE TABLE big (id INT PRIMARY KEY, v INT, s VARCHAR(20));
         INSERT INTO big SELECT seq, seq % 1000, CONCAT('s', seq) FROM seq_1_to_100000;
         CREATE TABLE ci (k VARCHAR(4) COLLATE utf8mb4_general_ci, n INT, v INT, PRIMARY KEY (k, n));
         INSERT INTO ci SELECT ELT(1 + seq % 8, 'a', 'B', 'c', 'D', 'e', 'F', 'g', 'H'), seq DIV 8, seq FROM seq_0_to_2399;
         CREATE TABLE uq (u INT NOT NULL, v INT, UNIQUE KEY (u));
         INSERT INTO uq SELECT seq, seq FROM seq_0_to_2999;
         CREATE TABLE marker (id INT PRIMARY KEY);
         CREATE TABLE signals (id VARCHAR(42) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT);
         GRANT INSERT, DELETE ON c.signals TO repl@'%';",
    );
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rng = XorShift(0x9e3779b97f4a7c15);
            let mut txs = 0;
            while !stop.load(Ordering::Relaxed) {
                sql_at(port, &format!("USE c;\n{}", workload_batch(&mut rng, 40)));
                txs += 40;
            }
            txs
        })
    };
    let chunk = 2000;
    let args = [
        "--snapshot",
        "initial",
        "--snapshot-chunk-size",
        "2000",
        "--include",
        "c.*",
        "--snapshot-method",
        method,
        "--signal-table",
        "c.signals",
    ];
    let mut files: Vec<PathBuf> = Vec::new();
    let kills = 3;
    // Runs alternate between several chunks read at once and one: a run resumes where the one
    // before it (with the other parallelism) was killed.
    let parallelism = |n: usize| ["--snapshot-parallelism", ["4", "1"][n % 2]];
    for n in 0..kills {
        let mut run = Stream::start(&server, &position, dir.path(), n, &[&args[..], &parallelism(n)].concat());
        files.push(run.stdout.clone());
        // Kill once this run has emitted a few chunks of its own, mid-table.
        let deadline = Instant::now() + Duration::from_secs(60);
        while reads_in(&run.stdout) < 3 * chunk + 700 {
            assert!(
                Instant::now() < deadline && run.child.try_wait().unwrap().is_none(),
                "no snapshot progress: {}",
                run.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        run.signal("-KILL");
        run.wait();
        let pending = snapshot_pending(&position).expect("the position file records the snapshot");
        assert!(pending > 0, "kill {n} landed after the snapshot finished: make the tables bigger");
    }
    let last = Stream::start(&server, &position, dir.path(), kills, &[&args[..], &parallelism(kills)].concat());
    files.push(last.stdout.clone());
    let deadline = Instant::now() + Duration::from_secs(90);
    while snapshot_pending(&position) != Some(0) {
        assert!(Instant::now() < deadline, "snapshot did not finish: {}", last.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let txs = writer.join().unwrap();
    server.sql("INSERT INTO c.marker VALUES (1)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read_events(&files).iter().any(|e| e.table == "marker") {
        assert!(Instant::now() < deadline, "stream did not catch up: {}", last.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = last.log();
    assert!(last.stop().success(), "{log}");

    // Within each run, reads sit exactly at their binlog positions among the changes: every
    // change before a read is older than it (smaller position), every change after it newer.
    for file in &files {
        let positions: Vec<(u64, u64, String)> = read_events(std::slice::from_ref(file))
            .into_iter()
            .map(|e| {
                let (f, o) = e.pos.rsplit_once(':').unwrap();
                (f.rsplit_once('.').unwrap().1.parse().unwrap(), o.parse().unwrap(), format!("{} {}", e.op, e.table))
            })
            .collect();
        for w in positions.windows(2) {
            assert!(
                (w[0].0, w[0].1) <= (w[1].0, w[1].1),
                "{}: {:?} is emitted before the older {:?}",
                file.display(),
                w[0],
                w[1]
            );
        }
    }

    // Each run reads a table in key order, whichever chunks were read at once.
    for file in &files {
        assert_reads_in_key_order(&read_events(std::slice::from_ref(file)), "big", "id");
    }

    // The same by GTID: a read's set holds every change emitted before it, none after it.
    for file in &files {
        let mut last: Option<(u64, bool)> = None;
        for e in read_events(std::slice::from_ref(file)) {
            let seq = seq_of(e.gtid.as_deref().expect("every event has a GTID"));
            if let Some((prev, prev_read)) = last {
                assert!(
                    seq >= prev && (seq > prev || !(prev_read && e.op != "read")),
                    "{}: {} {} {seq} after {prev}",
                    file.display(),
                    e.op,
                    e.table
                );
            }
            last = Some((seq, e.op == "read"));
        }
    }

    // Replay everything in output order.
    let events: Vec<Event> = read_events(&files).into_iter().filter(|e| e.db == "c" && e.table != "marker").collect();
    let mut state: HashMap<(String, String), BTreeMap<String, Value>> = HashMap::new();
    let mut reads: HashMap<(String, String), usize> = HashMap::new();
    for e in &events {
        match (e.op.as_str(), &e.before, &e.after) {
            ("read" | "insert" | "update", _, Some(after)) => {
                if let Some(before) = &e.before {
                    state.remove(&(e.table.clone(), identity(&e.table, before)));
                }
                state.insert((e.table.clone(), identity(&e.table, after)), after.clone());
                if e.op == "read" {
                    *reads.entry((e.table.clone(), identity(&e.table, after).to_lowercase())).or_default() += 1;
                }
            }
            ("delete", Some(before), None) => {
                state.remove(&(e.table.clone(), identity(&e.table, before)));
            }
            other => panic!("unexpected event shape {other:?}"),
        }
    }
    let mut expected: HashMap<(String, String), BTreeMap<String, Value>> = HashMap::new();
    let columns = [("big", ["id", "v", "s"]), ("ci", ["k", "n", "v"]), ("uq", ["u", "v", ""])];
    for (table, cols) in columns {
        for line in server.sql(&format!("SELECT * FROM c.{table}")).lines() {
            let row: BTreeMap<String, Value> = cols
                .iter()
                .zip(line.split('\t'))
                .filter(|(c, _)| !c.is_empty())
                .map(|(c, v)| (c.to_string(), v.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(v))))
                .collect();
            expected.insert((table.to_string(), identity(table, &row)), row);
        }
    }
    let wrong: Vec<_> = expected.iter().filter(|(k, v)| state.get(*k) != Some(*v)).take(5).collect();
    let extra: Vec<_> = state.keys().filter(|k| !expected.contains_key(*k)).take(5).collect();
    assert!(
        wrong.is_empty() && extra.is_empty(),
        "replayed output differs from the tables: missing or stale {wrong:?}, extra {extra:?}"
    );
    assert_eq!(state.len(), expected.len());
    assert!(expected.len() > 100_000);

    let reread: usize = reads.values().map(|n| n - 1).sum();
    eprintln!(
        "snapshot correctness ({method}): {} rows, {txs} concurrent transactions, {kills} SIGKILLs during the snapshot, {} events, {reread} rows read again",
        expected.len(),
        events.len()
    );
    assert!(reread <= kills * chunk, "{reread} rows read again: more than one chunk per kill");
    assert!(txs >= 200, "the workload ran alongside the snapshot: {txs} transactions");
}

/// The read events of `table` come in increasing order of its integer key `key`.
fn assert_reads_in_key_order(events: &[Event], table: &str, key: &str) {
    let keys: Vec<i64> = events
        .iter()
        .filter(|e| e.op == "read" && e.table == table)
        .map(|e| e.after.as_ref().unwrap()[key].as_i64().unwrap())
        .collect();
    if let Some(w) = keys.windows(2).find(|w| w[0] >= w[1]) {
        panic!("reads of {table} out of key order: {} before {}", w[0], w[1]);
    }
}

/// Several chunks read at once, under concurrent writes: of one table split by key ranges and of
/// several tables. The server shows the snapshot's reads running side by side, each table's reads
/// come in key order, and replaying the stream rebuilds every table as `SELECT *` shows it.
#[test]
fn consistent_chunks_read_side_by_side_under_writes_rebuild_the_tables() {
    side_by_side("consistent");
}

#[test]
fn watermark_chunks_read_side_by_side_under_writes_rebuild_the_tables() {
    side_by_side("watermark");
}

fn side_by_side(method: &str) {
    let server = MariaDb::shared();
    let db = server.fresh_db(&format!("snap_side_{method}"));
    let tables = ["big", "t1", "t2", "t3"];
    server.sql(&format!(
        "USE {db};
         CREATE TABLE big (id INT PRIMARY KEY, v INT);
         INSERT INTO big SELECT seq, seq FROM seq_1_to_30000;
         CREATE TABLE t1 (id INT PRIMARY KEY, v INT);
         INSERT INTO t1 SELECT seq, seq FROM seq_1_to_1500;
         CREATE TABLE t2 LIKE t1;
         INSERT INTO t2 SELECT * FROM t1;
         CREATE TABLE t3 LIKE t1;
         INSERT INTO t3 SELECT * FROM t1;
         CREATE TABLE held (id INT PRIMARY KEY);
         INSERT INTO held VALUES (1), (2);
         CREATE TABLE marker (id INT PRIMARY KEY);
         CREATE TABLE probe_done (id INT PRIMARY KEY);
         CREATE TABLE signals (id VARCHAR(42) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT);
         CREATE USER {db}@'%' IDENTIFIED BY 'replpass';
         GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO {db}@'%';
         GRANT INSERT, DELETE ON {db}.signals TO {db}@'%';"
    ));
    let port = server.port;
    // Sampled every millisecond by the server itself until probe_done has a row: the most
    // connections the stream holds besides its replication one (a reader connects only when
    // every one it has is busy with a chunk not yet emitted), and the most watermark windows open
    // at once (a low watermark row stays until its chunk's read ends).
    let probe = {
        let db = db.clone();
        std::thread::spawn(move || {
            sql_at(
                port,
                &format!(
                    "DELIMITER //
                     BEGIN NOT ATOMIC
                       DECLARE conns, windows INT DEFAULT 0;
                       WHILE NOT EXISTS (SELECT 1 FROM {db}.probe_done) DO
                         SET conns = GREATEST(conns, (SELECT COUNT(*) FROM information_schema.PROCESSLIST
                           WHERE USER = '{db}' AND COMMAND <> 'Binlog Dump'));
                         SET windows = GREATEST(windows, (SELECT COUNT(*) FROM {db}.signals WHERE id LIKE '%-low'));
                         DO SLEEP(0.001);
                       END WHILE;
                       SELECT conns, windows;
                     END//"
                ),
            )
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, db) = (stop.clone(), db.clone());
        std::thread::spawn(move || {
            let mut rng = XorShift(0x51afd7ed558ccd);
            let mut txs = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut sql = format!("USE {db};\n");
                for _ in 0..20 {
                    let (id, v) = (1 + rng.next() % 32_000, rng.next() % 1000);
                    let table = tables[(rng.next() % 4) as usize];
                    let id = if table == "big" { id } else { id % 1600 };
                    sql.push_str(&match rng.next() % 3 {
                        0 => format!("DELETE FROM {table} WHERE id = {id};\n"),
                        1 => format!("UPDATE {table} SET v = {v} WHERE id = {id};\n"),
                        _ => format!("INSERT INTO {table} VALUES ({id}, {v}) ON DUPLICATE KEY UPDATE v = {v};\n"),
                    });
                }
                sql_at(port, &sql);
                txs += 20;
            }
            txs
        })
    };
    // `held` is read second (tables go by name): while its read waits for this lock, the chunks
    // after it are read by other connections, however fast this machine emits.
    let lock = TableLock::hold(port, &format!("{db}.held"));
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let (include, signals) = (format!("{db}.*"), format!("{db}.signals"));
    let run = Stream::spawn_as(
        server,
        &db,
        dir.path(),
        0,
        &[
            "--position-file",
            position.to_str().unwrap(),
            "--snapshot",
            "initial",
            "--snapshot-chunk-size",
            "1000",
            "--snapshot-parallelism",
            "4",
            "--include",
            &include,
            "--snapshot-method",
            method,
            "--signal-table",
            &signals,
        ],
    );
    // Released once the probe can have seen several readers (and, with watermarks, their windows).
    let windows = if method == "watermark" { 2 } else { 0 };
    let side_by_side = format!(
        "SELECT (SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{db}' AND COMMAND <> 'Binlog Dump') >= 3
           AND (SELECT COUNT(*) FROM {db}.signals WHERE id LIKE '%-low') >= {windows}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.sql(&side_by_side) != "1" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(lock);
    let deadline = Instant::now() + Duration::from_secs(90);
    while snapshot_pending(&position) != Some(0) {
        assert!(Instant::now() < deadline, "snapshot did not finish: {}", run.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let txs = writer.join().unwrap();
    server.sql(&format!("INSERT INTO {db}.marker VALUES (1); INSERT INTO {db}.probe_done VALUES (1)"));
    let most = probe.join().unwrap();
    let (conns, windows) = most.split_once('\t').unwrap();
    let (conns, windows): (usize, usize) = (conns.parse().unwrap(), windows.parse().unwrap());
    let events = in_db(
        wait_for(std::slice::from_ref(&run.stdout), "the marker", |ev| ev.iter().any(|e| e.table == "marker")),
        &db,
    );
    let log = run.log();
    assert!(run.stop().success(), "{log}");

    let mut state: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let id_v = |image: &BTreeMap<String, Value>| (image["id"].as_i64().unwrap(), image["v"].as_i64().unwrap());
    for e in events.iter().filter(|e| tables.contains(&e.table.as_str())) {
        if let Some(before) = &e.before {
            state.remove(&(e.table.clone(), id_v(before).0));
        }
        if let Some(after) = &e.after {
            let (id, v) = id_v(after);
            state.insert((e.table.clone(), id), v);
        }
    }
    let mut expected = BTreeMap::new();
    for table in tables {
        for line in server.sql(&format!("SELECT id, v FROM {db}.{table}")).lines() {
            let (id, v) = line.split_once('\t').unwrap();
            expected.insert((table.to_string(), id.parse().unwrap()), v.parse().unwrap());
        }
        assert_reads_in_key_order(&events, table, "id");
    }
    let reads = events.iter().filter(|e| e.op == "read").count();
    eprintln!(
        "side by side ({method}): {reads} reads, {txs} concurrent statements, at most {conns} connections and {windows} windows at once"
    );
    assert!(state == expected, "replaying the stream does not rebuild the tables");
    // One reader at a time: 2 connections (it, and the schema lookups'); four at once: up to 5.
    assert!(conns >= 3, "the stream never held several reader connections at once: {conns}");
    if method == "watermark" {
        assert!(windows >= 2, "never two watermark windows at once: {windows}");
    }
    assert!(txs >= 100, "the writes ran alongside the snapshot: {txs} statements");
}

fn signal(server: &MariaDb, args: &[&str]) -> String {
    let out = crate::util::binlog_tail()
        .args(["snapshot", "--url", &format!("mysql://admin@127.0.0.1:{}", server.port)])
        .args(args)
        .env("MYSQL_PWD", "adminpass")
        .output()
        .unwrap();
    assert!(out.status.success(), "binlog-tail snapshot failed: {}", crate::util::stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn wait_for(files: &[PathBuf], what: &str, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = read_events(files);
        if done(&events) {
            return events;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn signal_table_starts_and_stops_incremental_snapshots_while_streaming() {
    let server = MariaDb::shared();
    let db = server.fresh_db("snap_signal");
    server.sql(&format!(
        "CREATE TABLE {db}.signals (id VARCHAR(42) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT);
         CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT);
         INSERT INTO {db}.t VALUES (1, 1), (2, 2), (3, 3);
         CREATE TABLE {db}.other (id INT PRIMARY KEY);
         INSERT INTO {db}.other VALUES (1);"
    ));
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let run = Stream::start(
        server,
        &position,
        dir.path(),
        0,
        &["--signal-table", &format!("{db}.signals"), "--include", &db],
    );
    run.wait_ready(&position);
    let files = [run.stdout.clone()];
    // Started and stopped in one transaction: nothing is read.
    server.sql(&format!(
        "START TRANSACTION;
         INSERT INTO {db}.signals VALUES ('s1', 'execute-snapshot', '{{\"data-collections\": [\"{db}.other\"], \"type\": \"incremental\"}}');
         INSERT INTO {db}.signals VALUES ('s2', 'stop-snapshot', '{{\"data-collections\": [\"{db}.other\"]}}');
         INSERT INTO {db}.signals VALUES ('s3', 'bogus', NULL);
         COMMIT;
         UPDATE {db}.t SET v = 20 WHERE id = 2;"
    ));
    let said = signal(server, &["--signal-table", &format!("{db}.signals"), "--table", &format!("{db}.t")]);
    assert!(said.starts_with("execute-snapshot signal "), "{said}");
    let events = wait_for(&files, "the incremental snapshot", |ev| ev.iter().filter(|e| e.op == "read").count() >= 3);
    server.sql(&format!("INSERT INTO {db}.t VALUES (4, 4);"));
    let events_after = wait_for(&files, "the insert after it", |ev| ev.iter().any(|e| e.op == "insert"));
    let log = run.log();
    assert!(run.stop().success(), "{log}");
    assert!(log.contains("has type `bogus`"), "an unknown signal is logged: {log}");
    let ops: Vec<(String, String)> = in_db(events_after, &db).iter().map(|e| (e.op.clone(), e.table.clone())).collect();
    let expect: Vec<(String, String)> = [("update", "t"), ("read", "t"), ("read", "t"), ("read", "t"), ("insert", "t")]
        .iter()
        .map(|(o, t)| (o.to_string(), t.to_string()))
        .collect();
    assert_eq!(ops, expect, "signal rows are not events; `other` was stopped before it was read");
    let row2 = events.iter().find(|e| e.op == "read" && e.pk.as_ref().unwrap()["id"] == 2).unwrap();
    assert_eq!(row2.after.as_ref().unwrap()["v"], 20, "the read sees the update before it");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&position).unwrap()).unwrap();
    assert_eq!(
        (saved["version"].clone(), saved["snapshot"]["done"].clone()),
        (Value::from(2), Value::from(1)),
        "{saved}"
    );
}

/// Streams `db` with a snapshot of one-row chunks, runs `sql` once the first rows were read,
/// and stops when the events satisfy `until` (named `what`). Returns the events and the log.
fn mid_snapshot(
    server: &MariaDb,
    db: &str,
    sql: &str,
    (what, until): (&str, fn(&[Event]) -> bool),
) -> (Vec<Event>, String) {
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    // Two connections: a DDL must not deadlock with the view one of them keeps after its chunk.
    let args = ["--snapshot", "initial", "--snapshot-chunk-size", "1", "--snapshot-parallelism", "2", "--include", db];
    let run = Stream::start(server, &position, dir.path(), 0, &args);
    let files = [run.stdout.clone()];
    wait_for(&files, "the first reads", |ev| ev.iter().any(|e| e.op == "read"));
    server.sql(sql);
    let events = wait_for(&files, what, until);
    let log = run.log();
    assert!(run.stop().success(), "{log}");
    (events, log)
}

#[test]
fn a_table_dropped_during_its_snapshot_is_skipped_and_the_stream_goes_on() {
    let server = MariaDb::shared();
    let db = server.fresh_db("snap_drop");
    server.sql(&format!(
        "USE {db}; CREATE TABLE {db}.a (id INT PRIMARY KEY); INSERT INTO {db}.a SELECT seq FROM seq_1_to_3000;
         CREATE TABLE {db}.z (id INT PRIMARY KEY); INSERT INTO {db}.z VALUES (1);"
    ));
    let (events, log) = mid_snapshot(
        server,
        &db,
        &format!("DROP TABLE {db}.a; INSERT INTO {db}.z VALUES (2);"),
        ("the insert after the drop and the next table", |ev| {
            ev.iter().any(|e| e.op == "insert") && ev.iter().any(|e| e.op == "read" && e.table == "z")
        }),
    );
    let reads_a = events.iter().filter(|e| e.op == "read" && e.table == "a").count();
    assert!(reads_a > 0 && reads_a < 3000, "the drop landed mid-table: {reads_a} rows read");
    assert!(log.contains("dropped during"), "{log}");
    // The next table is read (before or after the insert, at whichever position its chunk
    // belongs) and the stream goes on.
    let z: std::collections::BTreeSet<_> =
        events.iter().filter(|e| e.table == "z").map(|e| e.after.as_ref().unwrap()["id"].as_i64().unwrap()).collect();
    assert_eq!(z, [1, 2].into_iter().collect());
}

#[test]
fn sigterm_stops_at_a_chunk_boundary_and_the_restart_reads_every_row_once() {
    let server = MariaDb::shared();
    let db = server.fresh_db("snap_term");
    server.sql(&format!("USE {db}; CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t SELECT seq, 'x' FROM seq_1_to_30000;"));
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let args = ["--snapshot", "initial", "--snapshot-chunk-size", "100", "--include", &db];
    let first = Stream::start(server, &position, dir.path(), 0, &args);
    let files = [first.stdout.clone(), dir.path().join("out.1.jsonl")];
    wait_for(&files[..1], "some chunks", |ev| ev.len() >= 1000);
    assert!(first.stop().success());
    let stopped = read_events(&files[..1]);
    assert!(stopped.len() < 30_000, "stopped mid-snapshot: {} rows", stopped.len());
    assert!(
        stopped.len().is_multiple_of(100) && stopped.last().unwrap().commit,
        "a whole number of chunks: {}",
        stopped.len()
    );
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&position).unwrap()).unwrap();
    assert_eq!(saved["snapshot"]["pending"].as_array().unwrap().len(), 1, "{saved}");
    assert!(saved["snapshot"]["after"].is_array(), "the last emitted key is saved: {saved}");

    let second = Stream::start(server, &position, dir.path(), 1, &args);
    let events = wait_for(&files, "the rest of the table", |ev| ev.len() >= 30_000);
    assert!(second.stop().success());
    let ids = pk_ids(&events);
    assert_eq!(ids, (1..=30_000).collect::<Vec<_>>(), "every row once, in key order, across the restart");

    // A completed snapshot is not taken again: the stream just resumes.
    let third = Stream::start(server, &position, dir.path(), 2, &args);
    third.wait_ready(&position);
    server.sql(&format!("INSERT INTO {db}.t VALUES (0, 'new')"));
    let out = [third.stdout.clone()];
    let resumed = wait_for(&out, "the insert", |ev| ev.iter().any(|e| e.op == "insert"));
    assert!(third.stop().success());
    assert_eq!(resumed.iter().map(|e| e.op.as_str()).collect::<Vec<_>>(), ["insert"]);
}

/// Consecutive chunks are read in one snapshot transaction while it is fresh (one position query
/// for many chunks), and no transaction is left open once the snapshot is done.
#[test]
fn chunks_share_a_snapshot_view_and_none_stays_open_after_the_snapshot() {
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE views; USE views; CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t SELECT seq, 'x' FROM seq_1_to_20000;");
    let status_queries = || server.global_status("Com_show_status");
    let before = status_queries();
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let args = [
        "--snapshot",
        "initial",
        "--snapshot-chunk-size",
        "200",
        "--snapshot-parallelism",
        "1",
        "--include",
        "views.t",
    ];
    let stream = Stream::start(&server, &position, dir.path(), 0, &args);
    let events = wait_for(std::slice::from_ref(&stream.stdout), "the whole table", |ev| ev.len() >= 20_000);
    assert_eq!(events.len(), 20_000);
    let open = || {
        server.sql("SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id IN (SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'repl')")
    };
    crate::util::until("binlog-tail has no transaction open after its snapshot", || open().trim() == "0");
    // Still none a moment later, while the stream runs on.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(open().trim(), "0", "a transaction was opened again");
    let queries = status_queries() - before;
    assert!(stream.stop().success());
    // 100 chunks, each in a transaction of its own, would ask for 100 positions.
    assert!(queries < 50, "{queries} SHOW STATUS for 100 chunks: consecutive chunks did not share a view");
}

/// The progress report's row estimate is asked of the table being read: a query over every
/// table of the server opens them all (150 here; 23 ms before the first row on the bench server).
#[test]
fn the_row_estimate_opens_only_the_table_read() {
    let server = MariaDb::start(&[]);
    let mut sql = String::from("CREATE DATABASE others; USE others;");
    for i in 0..150 {
        sql.push_str(&format!("CREATE TABLE t{i} (id INT PRIMARY KEY);"));
    }
    sql.push_str("CREATE DATABASE est; USE est; CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t SELECT seq FROM seq_1_to_1000; ANALYZE TABLE t; FLUSH TABLES;");
    server.sql(&sql);
    let before = server.global_status("Opened_tables");
    let out = server.dump(&["--snapshot", "initial", "--include", "est.t"]);
    let opened = server.global_status("Opened_tables") - before;
    assert_eq!(ok_events(&out).len(), 1000);
    let err = crate::util::stderr(&out);
    let estimate: u64 = err
        .split("snapshot of `est`.`t` started (about ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row estimate logged: {err}"));
    assert!((500..=2000).contains(&estimate), "estimate {estimate} for 1000 rows");
    assert!(opened < 50, "the snapshot of one table opened {opened} tables");
}

/// A server whose connections start with `autocommit=0` (here through `init_connect`, which
/// applies to binlog-tail's user) still gets each watermark row committed on its own.
#[test]
fn watermarks_commit_on_a_server_whose_sessions_default_to_autocommit_off() {
    let server = MariaDb::start(&["--init-connect=SET autocommit=0"]);
    server.sql(
        "CREATE DATABASE w; USE w; CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t SELECT seq, seq FROM seq_1_to_1000;
         CREATE TABLE signals (id VARCHAR(42) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT);
         GRANT INSERT, DELETE ON w.signals TO repl@'%';",
    );
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let args = ["--snapshot", "initial", "--snapshot-method", "watermark", "--signal-table", "w.signals"];
    let stream = Stream::start(
        &server,
        &position,
        dir.path(),
        0,
        &[&args[..], &["--snapshot-chunk-size", "100", "--include", "w.t"]].concat(),
    );
    let events = wait_for(std::slice::from_ref(&stream.stdout), "the whole table", |ev| ev.len() >= 1000);
    assert!(stream.stop().success());
    let ids = pk_ids(&events);
    assert_eq!(ids, (1..=1000).collect::<Vec<_>>());
    assert_eq!(server.sql("SELECT COUNT(*) FROM w.signals").trim(), "0", "every watermark row deleted, and committed");
}

/// Chunks read side by side need to know where each ends before it is read. A dense integer key
/// says so by arithmetic; any other key by an index read of the rows ahead, which reads every
/// row a second time. The server's own count of index reads tells which happened.
#[test]
fn a_dense_integer_key_is_split_without_reading_the_rows_twice() {
    let server = MariaDb::start(&[]);
    server.sql(
        "CREATE DATABASE split; USE split;
         CREATE TABLE dense (id INT PRIMARY KEY, v INT); INSERT INTO dense SELECT seq, seq FROM seq_1_to_20000;
         CREATE TABLE sparse (id INT PRIMARY KEY, v INT); INSERT INTO sparse SELECT seq * 10, seq FROM seq_1_to_20000;
         ANALYZE TABLE dense, sparse;",
    );
    let index_reads = || server.global_status("Handler_read_next");
    for (table, twice) in [("dense", false), ("sparse", true)] {
        let before = index_reads();
        let out = server.dump(&[
            "--snapshot",
            "initial",
            "--include",
            &format!("split.{table}"),
            "--snapshot-parallelism",
            "2",
            "--snapshot-chunk-size",
            "1000",
        ]);
        let reads = index_reads() - before;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let events = ok_events(&out);
        let ids = pk_ids(&events);
        let step = if twice { 10 } else { 1 };
        assert_eq!(ids, (1..=20_000).map(|i| i * step).collect::<Vec<_>>(), "{table}: every row once, in key order");
        match twice {
            false => assert!(reads < 30_000, "{table}: {reads} index reads for 20,000 rows: split by reading ahead"),
            true => {
                assert!(reads >= 35_000, "{table}: {reads} index reads for 20,000 rows: not split by reading ahead")
            }
        }
    }
}

/// Chunks of an InnoDB table keyed by an integer primary key (one column, or several: `ints`,
/// whose key order is by `b`, then `id`), whose columns are all stored and visible, are read by
/// MariaDB's `HANDLER` (the server walks the key with no condition to test per row); any other
/// table's by range `SELECT`s. Either way, at parallelism 1 and 2, each row is read once, in key
/// order, with its values: a dense key's gaps (rows a `HANDLER` chunk reads past its end and
/// drops) included.
#[test]
fn chunks_are_read_by_handler_where_the_table_allows_it() {
    let server = MariaDb::start(&[]);
    server.sql(
        "CREATE DATABASE h; USE h;
         CREATE TABLE plain (id BIGINT UNSIGNED PRIMARY KEY, v VARCHAR(10)); INSERT INTO plain SELECT seq, seq FROM seq_1_to_2000;
         CREATE TABLE gaps (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO gaps SELECT seq, seq FROM seq_1_to_2000 WHERE seq % 7 <> 0;
         CREATE TABLE gen (id INT PRIMARY KEY, v VARCHAR(10), w INT AS (id * 2) VIRTUAL); INSERT INTO gen (id, v) SELECT seq, seq FROM seq_1_to_2000;
         CREATE TABLE hidden (id INT PRIMARY KEY, v VARCHAR(10), h INT INVISIBLE DEFAULT 5); INSERT INTO hidden (id, v) SELECT seq, seq FROM seq_1_to_2000;
         CREATE TABLE pair (id INT, k CHAR(1), v VARCHAR(10), PRIMARY KEY (id, k)); INSERT INTO pair SELECT seq, 'a', seq FROM seq_1_to_2000;
         CREATE TABLE uniq (id INT NOT NULL, v VARCHAR(10), UNIQUE KEY u (id)); INSERT INTO uniq SELECT seq, seq FROM seq_1_to_2000;
         CREATE TABLE aria (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=Aria; INSERT INTO aria SELECT seq, seq FROM seq_1_to_2000;
         CREATE TABLE ints (id INT, b TINYINT, v VARCHAR(10), PRIMARY KEY (b, id));
         INSERT INTO ints SELECT seq, IF(seq <= 1050, -1, 2), seq FROM seq_1_to_2000;
         ANALYZE TABLE plain, gaps, gen, hidden, pair, uniq, aria, ints;",
    );
    for (table, by_handler) in [
        ("plain", true),
        ("gaps", true),
        ("ints", true),
        ("gen", false),
        ("hidden", false),
        ("pair", false),
        ("uniq", false),
        ("aria", false),
    ] {
        for parallelism in ["1", "2"] {
            let before = server.global_status("Com_ha_read");
            let out = server.dump(&[
                "--snapshot",
                "initial",
                "--include",
                &format!("h.{table}"),
                "--snapshot-parallelism",
                parallelism,
                "--snapshot-chunk-size",
                "100",
            ]);
            let handler_reads = server.global_status("Com_ha_read") - before;
            assert!(out.status.success(), "{table}: {}", String::from_utf8_lossy(&out.stderr));
            let events = ok_events(&out);
            let expected: Vec<i64> = (1..=2000).filter(|i| table != "gaps" || i % 7 != 0).collect();
            assert_eq!(pk_ids(&events), expected, "{table} at parallelism {parallelism}: every row once, in key order");
            for e in &events {
                let after = e.after.as_ref().unwrap();
                assert_eq!(after["v"].as_str().unwrap(), after["id"].to_string(), "{table}: {after:?}");
                if table == "hidden" {
                    assert_eq!(after["h"], 5, "an invisible column is read too");
                }
            }
            match by_handler {
                // 20 chunks; the gaps make a `HANDLER` chunk read rows past its end, and the
                // table is read by `SELECT` after the first such chunk of a view.
                true => assert!(
                    handler_reads >= if table == "gaps" { 1 } else { 20 },
                    "{table}: {handler_reads} HANDLER reads"
                ),
                false => assert_eq!(handler_reads, 0, "{table} read by HANDLER"),
            }
        }
    }
}

#[test]
fn a_table_altered_during_its_snapshot_goes_on_with_its_new_columns() {
    let server = MariaDb::shared();
    let db = server.fresh_db("snap_alter");
    server.sql(&format!(
        "USE {db}; CREATE TABLE b (id INT PRIMARY KEY, v INT); INSERT INTO b SELECT seq, seq FROM seq_1_to_3000;"
    ));
    // 3,000 one-row chunks: the ALTER (which waits for the snapshot view reading the table,
    // up to 250 ms) lands mid-table however fast the chunks are read.
    let (events, _) = mid_snapshot(
        server,
        &db,
        &format!("ALTER TABLE {db}.b ADD COLUMN extra INT NOT NULL DEFAULT 7"),
        ("the whole table", |ev| ev.iter().any(|e| e.pk.as_ref().is_some_and(|k| k["id"] == 3000))),
    );
    let ids = pk_ids(&events);
    assert_eq!(ids, (1..=3000).collect::<Vec<_>>(), "every row once, in order");
    let with_extra = events
        .iter()
        .position(|e| e.after.as_ref().unwrap().contains_key("extra"))
        .expect("later chunks carry the new column");
    assert!(with_extra > 0, "the ALTER landed mid-table");
    assert!(events[with_extra..].iter().all(|e| e.after.as_ref().unwrap()["extra"] == 7));
}

/// `--snapshot-key` columns that are nullable or not unique would lose rows at chunk boundaries:
/// refused as a usage error, before anything is read or recorded.
#[test]
fn a_snapshot_key_that_is_nullable_or_not_unique_is_refused() {
    let server = MariaDb::shared();
    let db = server.fresh_db("snap_badkey");
    server.sql(&format!(
        "USE {db};
         CREATE TABLE {db}.nul (id INT PRIMARY KEY, u INT NULL, UNIQUE KEY (u));
         INSERT INTO {db}.nul VALUES (1, NULL), (2, NULL), (3, 1), (4, NULL), (5, 2);
         CREATE TABLE {db}.dup (id INT PRIMARY KEY, g INT NOT NULL, KEY (g));
         INSERT INTO {db}.dup SELECT seq, seq DIV 3 FROM seq_1_to_30;"
    ));
    let snapshot = |key: &str| -> Vec<String> {
        [
            "--snapshot",
            "initial",
            "--snapshot-chunk-size",
            "2",
            "--include",
            &db,
            "--snapshot-key",
            &format!("{db}.{key}"),
        ]
        .map(String::from)
        .to_vec()
    };
    for (key, why) in [("nul=u", "`u` is nullable"), ("dup=g", "not unique")] {
        let args = snapshot(key);
        let out = server.dump(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = crate::util::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(err.contains(why) && out.stdout.is_empty(), "{key}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let args = snapshot("nul=u");
    let mut run = Stream::start(server, &position, dir.path(), 0, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run.wait().code(), Some(2), "{}", run.log());
    assert!(!position.exists(), "nothing is recorded: {}", run.log());

    // Columns that hold a unique index's are a good key: every row once, in key order.
    let args = snapshot("dup=g,id");
    let events = in_db(ok_events(&server.dump(&args.iter().map(String::as_str).collect::<Vec<_>>())), &db);
    let ids = |table: &str| pk_ids(events.iter().filter(|e| e.table == table));
    assert_eq!(ids("dup"), (1..=30).collect::<Vec<_>>());
    assert_eq!(ids("nul"), [1, 2, 3, 4, 5]);
}

/// `binlog-tail <command> --url` as `user`.
fn run_as(server: &MariaDb, user: &str, password: &str, command: &str, args: &[&str]) -> std::process::Output {
    crate::util::binlog_tail()
        .args([command, "--url", &format!("mysql://{user}@127.0.0.1:{}", server.port)])
        .args(args)
        .env("MYSQL_PWD", password)
        .output()
        .unwrap()
}

/// information_schema hides the tables a user holds no privilege on: a snapshot that cannot see
/// or read every included table refuses, naming the GRANT, before anything is recorded.
#[test]
fn tables_the_user_may_not_read_are_an_error_before_anything_is_recorded() {
    let server = MariaDb::shared();
    let db = server.fresh_db("snap_grants");
    let mut sql = String::new();
    for (n, t) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        sql.push_str(&format!("CREATE TABLE {db}.{t} (id INT PRIMARY KEY); INSERT INTO {db}.{t} VALUES ({n});\n"));
    }
    server.sql(&format!(
        "{sql}
         DROP USER IF EXISTS snap_part@'%';
         CREATE USER snap_part@'%' IDENTIFIED BY 'partpass';
         GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO snap_part@'%';
         GRANT SELECT ON {db}.a TO snap_part@'%';
         GRANT SELECT ON {db}.b TO snap_part@'%';
         GRANT INSERT ON {db}.c TO snap_part@'%';"
    ));
    let dump = |args: &[&str]| run_as(server, "snap_part", "partpass", "dump", &[&["--stdout"], args].concat());
    let (a, b, c, d) = (format!("{db}.a"), format!("{db}.b"), format!("{db}.c"), format!("{db}.d"));

    // The whole database: d and e are invisible to the user, c is visible but not readable.
    let out = dump(&["--snapshot", "initial", "--include", &db]);
    let err = crate::util::failure(&out);
    assert!(err.contains(&format!("GRANT SELECT ON `{db}`.* TO 'snap_part'@'%'")), "{err}");
    assert!(err.contains(&format!("GRANT SELECT ON `{db}`.`c`")), "{err}");
    // Tables by name: the one it may not read and the one it cannot see are named.
    let out = dump(&["--snapshot", "initial", "--include", &a, "--include", &c, "--include", &d]);
    let err = crate::util::failure(&out);
    assert!(err.contains(&format!("GRANT SELECT ON `{db}`.`c`")), "{err}");
    assert!(err.contains(&format!("`{db}`.`d` is not visible")), "{err}");
    assert!(!err.contains(&format!("`{db}`.`a`")), "{err}");

    // A stream records nothing.
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let out = crate::util::binlog_tail()
        .args(["stream", "--url", &format!("mysql://snap_part@127.0.0.1:{}", server.port)])
        .args(["--position-file", position.to_str().unwrap(), "--snapshot", "initial", "--include", &db])
        .env("MYSQL_PWD", "partpass")
        .stdout(std::fs::File::create(dir.path().join("out.jsonl")).unwrap())
        .output()
        .unwrap();
    let err = crate::util::failure(&out);
    assert!(err.contains(&format!("GRANT SELECT ON `{db}`.*")), "{err}");
    assert!(!position.exists(), "nothing is recorded");
    assert_eq!(std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap(), "");

    // SELECT on every table it reads: the snapshot runs.
    let events = in_db(ok_events(&dump(&["--snapshot", "initial", "--include", &a, "--include", &b])), &db);
    assert_eq!(events.iter().map(|e| e.table.as_str()).collect::<Vec<_>>(), ["a", "b"]);
}

/// The sequence number of a GTID, or of a one-domain MariaDB GTID set (`0-1-42`).
fn seq_of(gtid: &str) -> u64 {
    assert!(!gtid.contains(','), "one domain: {gtid}");
    gtid.rsplit('-').next().unwrap().parse().unwrap()
}

/// The raw `pk` text of each event of `op`, with its table.
fn raw_pks(stdout: &[u8], op: &str) -> std::collections::BTreeSet<(String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for line in String::from_utf8(stdout.to_vec()).unwrap().lines() {
        let e: Event = serde_json::from_str(line).unwrap();
        if e.op == op {
            let (start, end) = (line.find(",\"pk\":").unwrap() + 6, line.find(",\"before\":").unwrap());
            out.insert((e.table.clone(), line[start..end].to_string()));
        }
    }
    out
}

/// A row's read and its changes carry the same key (so, in Kafka, the same partition): also for
/// tables whose primary key is a unique NOT NULL index the server promotes, in its own order.
#[test]
fn reads_carry_the_key_that_changes_carry() {
    let server = MariaDb::shared();
    let db = server.fresh_db("snap_pk");
    server.sql(&format!(
        "CREATE TABLE {db}.uq (u INT NOT NULL, v INT, UNIQUE KEY (u));
         CREATE TABLE {db}.pair (a INT NOT NULL, b INT NOT NULL, v INT, UNIQUE KEY k (b, a));
         CREATE TABLE {db}.two (z INT NOT NULL, y INT NOT NULL, v INT, UNIQUE KEY zz (z), UNIQUE KEY aa (y));
         CREATE TABLE {db}.pk (id INT NOT NULL, k INT NOT NULL, v INT, PRIMARY KEY (k, id));
         INSERT INTO {db}.uq VALUES (1, 1), (2, 2);
         INSERT INTO {db}.pair VALUES (1, 2, 1), (3, 4, 1);
         INSERT INTO {db}.two VALUES (1, 10, 1), (2, 20, 1);
         INSERT INTO {db}.pk VALUES (1, 5, 1), (2, 6, 1);"
    ));
    let start = server.gtid_pos();
    server.sql(&format!(
        "UPDATE {db}.uq SET v = 9; UPDATE {db}.pair SET v = 9; UPDATE {db}.two SET v = 9; UPDATE {db}.pk SET v = 9;"
    ));
    let changes = server.dump(&["--start", &start, "--include", &db]);
    assert!(changes.status.success(), "{}", crate::util::stderr(&changes));
    let reads = server.dump(&["--snapshot", "initial", "--include", &db]);
    assert!(reads.status.success(), "{}", crate::util::stderr(&reads));
    let (changed, read) = (raw_pks(&changes.stdout, "update"), raw_pks(&reads.stdout, "read"));
    assert_eq!(changed.len(), 8);
    assert_eq!(read, changed, "reads must carry the pk (columns, order, values) that changes carry");
}

/// `--limit N` counts read events too.
#[test]
fn limit_counts_read_events() {
    let server = MariaDb::shared();
    let db = server.fresh_db("snap_limit");
    server.sql(&format!("USE {db}; CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t SELECT seq FROM seq_1_to_500;"));
    let events = ok_events(&server.dump(&["--snapshot", "initial", "--include", &db, "--limit", "3"]));
    let ids = pk_ids(&events);
    assert_eq!(ids, [1, 2, 3]);
}

/// A snapshot request for tables that do not exist or are not included queues nothing: the
/// stream says so at WARN, naming each and why; `check_request` refuses it before a signal is
/// written.
#[test]
fn a_snapshot_request_that_matches_nothing_is_a_warning_with_the_reason() {
    let server = MariaDb::shared();
    let db = server.fresh_db("snap_nomatch");
    server.sql(&format!(
        "CREATE TABLE {db}.signals (id VARCHAR(42) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT);
         CREATE TABLE {db}.t (id INT PRIMARY KEY); INSERT INTO {db}.t VALUES (1);
         CREATE TABLE {db}.hidden (id INT PRIMARY KEY); INSERT INTO {db}.hidden VALUES (1);"
    ));
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let signals = format!("{db}.signals");
    let run = Stream::start(
        server,
        &position,
        dir.path(),
        0,
        &["--signal-table", &signals, "--include", &db, "--exclude", &format!("{db}.hidden")],
    );
    run.wait_ready(&position);
    let (nope, hidden) = (format!("{db}.nope"), format!("{db}.hidden"));
    // `binlog-tail snapshot` refuses a table that does not exist, before writing the signal...
    let refused = crate::util::binlog_tail()
        .args(["snapshot", "--url", &format!("mysql://admin@127.0.0.1:{}", server.port)])
        .args(["--signal-table", &signals, "--table", &nope])
        .env("MYSQL_PWD", "adminpass")
        .output()
        .unwrap();
    let err = crate::util::stderr(&refused);
    assert!(refused.status.code() == Some(2) && err.contains(&format!("`{nope}`: no such table")), "{err}");
    // ...and the stream warns about a signal row written by hand (the filters are its own).
    server.sql(&format!(
        "INSERT INTO {signals} VALUES ('by-hand', 'execute-snapshot', \
         '{{\"data-collections\": [\"{nope}\", \"{hidden}\"], \"type\": \"incremental\"}}')"
    ));
    run.wait_log("0 table(s) queued");
    let log = run.log();
    assert!(run.stop().success(), "{log}");
    let warned = |text: &str| log.lines().any(|l| l.contains("WARN") && l.contains(text));
    assert!(warned(&format!("`{nope}`: nothing to read: no such table")), "{log}");
    assert!(warned(&format!("`{hidden}`: nothing to read: excluded by the filters")), "{log}");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let checked = |tables: &[&str], filter: &binlog_tail::filter::Filter| {
        let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        rt.block_on(async {
            let url = format!("mysql://admin:adminpass@127.0.0.1:{}", server.port);
            let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap()).await.unwrap();
            binlog_tail::snapshot::check_request(&mut conn, &tables, filter).await.map_err(|e| format!("{e:#}"))
        })
    };
    let all = binlog_tail::filter::Filter::default();
    assert_eq!(checked(&[&format!("{db}.t"), &format!("{db}.*")], &all), Ok(()));
    let err = checked(&[&format!("{db}.t"), &nope], &all).unwrap_err();
    assert!(err.contains(&format!("`{nope}`: no such table")) && !err.contains(&format!("{db}.t`")), "{err}");
    let filter = binlog_tail::filter::Filter {
        exclude: vec![binlog_tail::filter::TablePattern::parse(&hidden).unwrap()],
        ..Default::default()
    };
    let err = checked(&[&hidden], &filter).unwrap_err();
    assert!(err.contains("excluded by the filters"), "{err}");
}

/// A table without a primary key: its changes before its (single) read are contained in the read,
/// so they are left out; replaying reads and changes in order gives exactly its rows, as a
/// multiset, under concurrent inserts, updates and deletes of duplicate rows.
#[test]
fn a_keyless_table_under_writes_replays_to_its_rows() {
    let server = MariaDb::shared();
    let db = server.fresh_db("snap_keyless");
    server.sql(&format!(
        "USE {db};
         CREATE TABLE {db}.a_first (id INT PRIMARY KEY, v INT);
         INSERT INTO {db}.a_first SELECT seq, seq FROM seq_1_to_20000;
         CREATE TABLE {db}.bag (x INT, y INT);
         INSERT INTO {db}.bag SELECT seq % 7, seq % 3 FROM seq_1_to_300;
         CREATE TABLE {db}.marker (id INT PRIMARY KEY);"
    ));
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let stop = Arc::new(AtomicBool::new(false));
    let port = server.port;
    let writer = {
        let (stop, db) = (stop.clone(), db.clone());
        std::thread::spawn(move || {
            let mut rng = XorShift(0x2545f4914f6cdd1d);
            let mut txs = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut sql = format!("USE {db};\n");
                for _ in 0..20 {
                    let (x, y) = (rng.next() % 7, rng.next() % 3);
                    sql.push_str(&match rng.next() % 3 {
                        0 => format!("INSERT INTO bag VALUES ({x}, {y});\n"),
                        1 => format!("DELETE FROM bag WHERE x = {x} LIMIT 1;\n"),
                        _ => format!("UPDATE bag SET y = {y} WHERE x = {x} LIMIT 2;\n"),
                    });
                }
                sql_at(port, &sql);
                txs += 20;
            }
            txs
        })
    };
    let run = Stream::start(
        server,
        &position,
        dir.path(),
        0,
        &["--snapshot", "initial", "--snapshot-chunk-size", "500", "--snapshot-parallelism", "4", "--include", &db],
    );
    let files = [run.stdout.clone()];
    wait_for(&files, "the read of bag", |ev| ev.iter().any(|e| e.op == "read" && e.table == "bag"));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let txs = writer.join().unwrap();
    server.sql(&format!("INSERT INTO {db}.marker VALUES (1)"));
    let events = wait_for(&files, "the marker", |ev| ev.iter().any(|e| e.table == "marker"));
    let log = run.log();
    assert!(run.stop().success(), "{log}");

    let row = |image: &BTreeMap<String, Value>| (image["x"].as_i64().unwrap(), image["y"].as_i64());
    let mut bag: BTreeMap<(i64, Option<i64>), i64> = BTreeMap::new();
    let bag_events: Vec<&Event> = events.iter().filter(|e| e.db == db && e.table == "bag").collect();
    let read_at = bag_events.iter().position(|e| e.op == "read").unwrap();
    for e in &bag_events {
        if let Some(before) = &e.before {
            *bag.entry(row(before)).or_default() -= 1;
        }
        if let Some(after) = &e.after {
            *bag.entry(row(after)).or_default() += 1;
        }
    }
    bag.retain(|_, n| *n != 0);
    let mut expected: BTreeMap<(i64, Option<i64>), i64> = BTreeMap::new();
    for line in server.sql(&format!("SELECT x, y FROM {db}.bag")).lines() {
        let (x, y) = line.split_once('\t').unwrap();
        *expected.entry((x.parse().unwrap(), y.parse().ok())).or_default() += 1;
    }
    let changes_after = bag_events[read_at..].iter().filter(|e| e.op != "read").count();
    eprintln!("keyless: {txs} statements, {read_at} changes before the read, {changes_after} after");
    assert_eq!(bag, expected, "replaying the keyless table's events gives its rows");
    assert_eq!(read_at, 0, "changes before the table's read are contained in it: left out");
    assert!(changes_after > 0, "the writes went on after the read");
}

/// MariaDB's snapshot writes nothing: a replica with `read_only=ON`, read by a user holding only
/// SELECT, REPLICATION SLAVE and BINLOG MONITOR (REPLICATION CLIENT), is snapshotted and streamed
/// while its primary takes writes, and the tables rebuilt from the events equal the replica's.
#[test]
fn a_read_only_replica_is_snapshotted_and_streamed_by_a_user_who_may_only_read() {
    let primary = MariaDb::start(&[]);
    let replica = MariaDb::start_with_env(&[("SERVER_ID", "2")], &["--read-only=ON", "--log-slave-updates=ON"]);
    primary.sql(
        "CREATE DATABASE ro; CREATE TABLE ro.t (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO ro.t SELECT seq, CONCAT('v', seq) FROM ro.seq_1_to_5000;
         CREATE TABLE ro.bag (v INT); INSERT INTO ro.bag SELECT seq % 7 FROM ro.seq_1_to_300;",
    );
    replica.sql(&format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl', MASTER_PASSWORD='replpass', \
         MASTER_USE_GTID=slave_pos; START SLAVE;",
        primary.port
    ));
    let caught_up = || replica.sql("SELECT @@gtid_slave_pos") == primary.sql("SELECT @@gtid_binlog_pos");
    crate::util::until("the replica caught up", caught_up);
    // The replication user of scripts/mariadb-start holds exactly these (no INSERT anywhere).
    let grants = replica.sql("SHOW GRANTS FOR repl@'%'");
    assert!(grants.contains("SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.*"), "{grants}");

    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let run = Stream::start(
        &replica,
        &position,
        dir.path(),
        0,
        &["--snapshot", "initial", "--include", "ro", "--snapshot-chunk-size", "400"],
    );
    // 200 transactions on the primary while the replica's snapshot runs.
    let sql: String = (0..200)
        .map(|i| {
            format!(
                "BEGIN; UPDATE ro.t SET v = CONCAT(v, '+') WHERE id % 97 = {m};
                 INSERT INTO ro.t VALUES ({new}, 'new') ON DUPLICATE KEY UPDATE v = 'again';
                 DELETE FROM ro.t WHERE id = {gone}; INSERT INTO ro.bag VALUES ({m7});
                 DELETE FROM ro.bag WHERE v = 3 LIMIT 1; COMMIT;\n",
                m = i % 97,
                new = 10_000 + i,
                gone = 1 + (i * 37) % 5000,
                m7 = i % 7
            )
        })
        .collect();
    let writes = crate::util::write_in_batches(primary.port, &sql, 10, Duration::from_millis(30));
    writes.join().unwrap();
    crate::util::until("the replica caught up", caught_up);
    let end = replica.sql("SELECT @@gtid_binlog_pos");
    let saved = || {
        let text = std::fs::read_to_string(&position).unwrap_or_default();
        serde_json::from_str::<Value>(&text).map(|p| p["gtid_set"].clone()).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while saved() != end.as_str() {
        assert!(Instant::now() < deadline, "saved {} of {end}: {}", saved(), run.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run.stdout.clone();
    assert!(run.stop().success());

    // Nothing was written on the replica: every transaction in its binlog came from the primary.
    let state = replica.sql("SELECT @@gtid_binlog_state");
    assert!(state.split(',').all(|g| g.split('-').nth(1) == Some("1")), "the replica wrote {state}");
    let events = crate::util::read_events(&[out]);
    assert!(events.iter().any(|e| e.op == "read") && events.iter().any(|e| e.op != "read"));
    let mut rows: BTreeMap<String, String> = BTreeMap::new();
    let mut bag: Vec<String> = Vec::new();
    for e in events.iter().filter(|e| e.db == "ro") {
        let image =
            |i: &Option<BTreeMap<String, serde_json::Value>>| serde_json::to_string(i.as_ref().unwrap()).unwrap();
        match (e.table.as_str(), e.op.as_str()) {
            ("t", "delete") => {
                rows.remove(&serde_json::to_string(&e.pk).unwrap());
            }
            ("t", _) => {
                rows.insert(serde_json::to_string(&e.pk).unwrap(), image(&e.after));
            }
            ("bag", "delete") => {
                let gone = image(&e.before);
                let at = bag.iter().position(|r| *r == gone).expect("a deleted row was there");
                bag.remove(at);
            }
            ("bag", _) => bag.push(image(&e.after)),
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: BTreeMap<String, String> = replica
        .sql("SELECT JSON_OBJECT('id', id), JSON_OBJECT('id', id, 'v', v) FROM ro.t")
        .lines()
        .map(|l| l.split_once('\t').unwrap())
        .map(|(k, v)| (compact(k), compact(v)))
        .collect();
    assert_eq!(rows.len(), expected.len());
    assert!(rows == expected, "the rebuilt table differs from the replica's");
    let mut expected_bag: Vec<String> =
        replica.sql("SELECT JSON_OBJECT('v', v) FROM ro.bag").lines().map(compact).collect();
    bag.sort();
    expected_bag.sort();
    assert_eq!(bag, expected_bag);
}

/// JSON text in serde_json's compact form, for comparing the server's JSON with events.
fn compact(json: &str) -> String {
    serde_json::to_string(&serde_json::from_str::<serde_json::Value>(json).unwrap()).unwrap()
}

/// No signal table and no write to the server: `binlog-tail snapshot --to` asks the stream over
/// its HTTP endpoint, with its bearer token, and hears what it did.
#[test]
fn an_incremental_snapshot_is_requested_over_http() {
    let server = MariaDb::shared();
    let db = server.fresh_db("snap_http");
    server.sql(&format!(
        "USE {db}; CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t SELECT seq, seq FROM seq_1_to_50;"
    ));
    let dir = tempfile::tempdir().unwrap();
    let (position, token) = (dir.path().join("position.json"), dir.path().join("token"));
    std::fs::write(&token, "s3cret\n").unwrap();
    let port = crate::util::free_port();
    let addr = format!("127.0.0.1:{port}");
    let run = Stream::start(
        server,
        &position,
        dir.path(),
        0,
        &["--include", &db, "--metrics-addr", &addr, "--http-token-file", token.to_str().unwrap()],
    );
    run.wait_ready(&position);
    let to = format!("http://{addr}");
    let ask = |extra: &[&str]| crate::util::binlog_tail().args(["snapshot", "--to", &to]).args(extra).output().unwrap();
    let table = format!("{db}.t");
    let anonymous = ask(&["--table", &table]);
    assert_eq!(anonymous.status.code(), Some(1), "{}", crate::util::stderr(&anonymous));
    assert!(crate::util::stderr(&anonymous).contains("bearer token"));

    let asked = ask(&["--table", &table, "--token-file", token.to_str().unwrap()]);
    assert!(asked.status.success(), "{}", crate::util::stderr(&asked));
    assert_eq!(String::from_utf8_lossy(&asked.stdout).trim(), format!("1 table(s) queued ({table})"));
    let events = wait_for(std::slice::from_ref(&run.stdout), "the 50 read events", |e| {
        e.iter().filter(|e| e.op == "read").count() == 50
    });
    let ids: Vec<i64> =
        events.iter().filter(|e| e.op == "read").map(|e| e.after.as_ref().unwrap()["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=50).collect::<Vec<_>>());

    let nothing = ask(&["--table", &format!("{db}.nope"), "--token-file", token.to_str().unwrap()]);
    let err = crate::util::stderr(&nothing);
    assert!(nothing.status.code() == Some(2) && err.contains("nothing to read"), "{err}");
    assert!(run.stop().success());
    // The request was saved with the position: the snapshot is recorded as done.
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&position).unwrap()).unwrap();
    assert_eq!(saved["snapshot"]["done"], 1, "{saved}");
}

/// Everything a decoder hands its sink from binlog files: the change events, and the executed
/// GTID set after each transaction.
#[derive(Default)]
struct Decoded {
    changes: Vec<binlog_tail::event::Change>,
    executed: Vec<Option<binlog_tail::gtid::GtidSet>>,
}

impl binlog_tail::sink::Sink for Decoded {
    fn change(&mut self, change: &binlog_tail::event::Change) -> anyhow::Result<()> {
        self.changes.push(change.clone());
        Ok(())
    }
    fn ddl(&mut self, _: &binlog_tail::event::Ddl) -> anyhow::Result<()> {
        Ok(())
    }
    fn message(&mut self, _: &binlog_tail::outbox::Message) -> anyhow::Result<()> {
        Ok(())
    }
    fn commit(&mut self, resume: &binlog_tail::position::Resume) -> anyhow::Result<()> {
        self.executed.push(resume.gtids.clone());
        Ok(())
    }
    fn acknowledged(&mut self) -> anyhow::Result<Option<binlog_tail::position::Resume>> {
        Ok(None)
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// information_schema as a MySQL server reports json.binlog.000001's `mysql.t` (MINIMAL
/// metadata: the binlog has no names), its first column the primary key.
struct KeyedByFirstColumn;

impl binlog_tail::decode::SchemaLookup for KeyedByFirstColumn {
    fn columns(&mut self, _: &str, _: &str) -> anyhow::Result<Vec<binlog_tail::decode::table::ColumnInfo>> {
        let column = |name: &str, data_type: &str| binlog_tail::decode::table::ColumnInfo {
            name: name.into(),
            unsigned: false,
            charset: None,
            values: None,
            is_pk: name == "id",
            data_type: data_type.into(),
        };
        Ok(vec![column("id", "int"), column("doc", "json"), column("name", "varchar"), column("age", "int")])
    }
}

fn decode_file(path: &Path, lookup: Option<Box<dyn binlog_tail::decode::SchemaLookup>>) -> Decoded {
    let mut decoder = binlog_tail::decode::Decoder::new(lookup, Default::default());
    let mut decoded = Decoded::default();
    binlog_tail::source::file::read_files(&[path.to_path_buf()], false, &mut decoder, &mut decoded).unwrap();
    decoded
}

/// The gtid-window method's part of the schedule, fed what MySQL servers wrote: the executed
/// sets after each transaction of binlog_transaction_with_GTID.000001 (seeded by its
/// Previous_gtids) and the row changes of json.binlog.000001, each given the GTID of one of those
/// transactions. The window refuses a stream ahead of `low`, leaves out of the chunk only the
/// keys changed from the first transaction not in `low` on (every change of a keyless table), and
/// closes exactly when the stream has executed `high`, never before the read sent it.
#[test]
fn gtid_window_places_a_chunk_by_the_gtids_a_mysql_server_wrote() {
    use binlog_tail::gtid::{GtidSet, MySqlGtidSet};
    use binlog_tail::snapshot::gtid_window::ChunkWindow;
    let Some(dir) = crate::util::shared_binlogs() else { return };
    // Its Previous_gtids is empty: before the first transaction nothing was executed.
    let mut sets = vec![MySqlGtidSet::default()];
    for set in decode_file(&dir.join("binlog_transaction_with_GTID.000001"), None).executed {
        match set {
            Some(GtidSet::MySql(set)) => sets.push(set),
            other => panic!("not a MySQL GTID set: {other:?}"),
        }
    }
    assert_eq!(sets.len(), 4, "three transactions: {sets:?}");
    // Transaction i: the one GTID executed set i + 1 adds.
    let gtid = |i: usize| -> Arc<str> {
        let added = sets[i + 1].difference(&sets[i]).to_string();
        assert!(!added.contains(',') && !added.rsplit(':').next().unwrap().contains('-'), "one GTID: {added}");
        Arc::from(added)
    };
    let rows = decode_file(&dir.join("json.binlog.000001"), Some(Box::new(KeyedByFirstColumn))).changes;
    let keyless = decode_file(&dir.join("json.binlog.000001"), None).changes;
    assert!(rows[0].table.pk == [0] && keyless[0].table.pk.is_empty() && rows.len() >= 4);
    let with_gtid = |c: &binlog_tail::event::Change, g: &Arc<str>| binlog_tail::event::Change {
        gtid: Some(g.clone()),
        ..c.clone()
    };
    let stream = |i: usize| Some(GtidSet::MySql(sets[i].clone()));

    // Nothing streamed yet; `low` holds transactions 0 and 2, whose GTID reached gtid_executed
    // before 1's did.
    let (t0, t1, t2) = (gtid(0), gtid(1), gtid(2));
    let mut low = sets[1].clone();
    for ((sid, tag), ranges) in sets[3].difference(&sets[2]).ranges {
        ranges.iter().for_each(|&(start, end)| low.add_interval(sid, &tag, start, end));
    }
    assert!(ChunkWindow::new(low.clone(), &sets[2]).is_err(), "the stream delivered 1, which low lacks");
    let (mut window, high) = ChunkWindow::new(low.clone(), &sets[0]).unwrap();
    window.observe(&with_gtid(&rows[0], &t0), true);
    assert!(window.changed.is_empty(), "in low: the row stays in the chunk");
    window.observe(&with_gtid(&rows[1], &t1), false);
    assert!(window.changed.is_empty(), "another table's change opens the window, and stays in the stream");
    window.observe(&with_gtid(&rows[2], &t2), true);
    window.observe(&with_gtid(&rows[3], &t2), true);
    let images = |c: &binlog_tail::event::Change| c.before.iter().chain(&c.after).count();
    assert_eq!(window.changed.len(), images(&rows[2]) + images(&rows[3]), "open from 1 on, though 2 is in low");
    assert!(window.changed.iter().all(|(table, _)| Arc::ptr_eq(table, &rows[2].table)));
    assert!(!window.closed(&stream(3)), "not before the read sent high");
    high.send(sets[3].clone()).unwrap();
    assert!(!window.closed(&stream(2)), "high holds transaction 2, not yet streamed");
    assert!(window.closed(&stream(3)));
    assert!(!window.closed(&Some(GtidSet::parse("0-1-5").unwrap())), "a MariaDB set never closes it");

    // A keyless table's changes are never held back once its window starts: all leave the read.
    let (mut window, _high) = ChunkWindow::new(low, &sets[1]).unwrap();
    window.observe(&with_gtid(&keyless[0], &t0), true);
    assert_eq!(window.changed.len(), images(&keyless[0]));
}

/// The GTID window needs MySQL's executed set: on MariaDB it is a usage error that names the
/// method to use, before anything is read.
#[test]
fn gtid_window_on_mariadb_is_a_usage_error() {
    let server = MariaDb::shared();
    let db = server.fresh_db("snap_gtid_window");
    server.sql(&format!("CREATE TABLE {db}.t (id INT PRIMARY KEY); INSERT INTO {db}.t VALUES (1)"));
    let out = server.dump(&["--snapshot", "initial", "--include", &db, "--snapshot-method", "gtid-window"]);
    let err = crate::util::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("gtid-window needs MySQL's gtid_executed set; on MariaDB use consistent"), "{err}");
    assert!(out.stdout.is_empty(), "nothing read");
}
