//! `binlog-tail stream`: every committed row delivered across SIGTERM, SIGKILL, dropped
//! connections, server restarts and failover; clear refusals when that promise cannot hold.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::util::{read_events, row_key, wait_for_rows, Event, MariaDb, Stream};

/// `txs` transactions over three tables, each inserting 1-3 rows with increasing ids.
fn workload(db: &str, txs: usize) -> (String, usize) {
    let mut sql = String::new();
    let mut rows = 0;
    let mut next_id = [1u64; 3];
    for i in 0..txs {
        sql.push_str("START TRANSACTION;\n");
        for r in 0..(1 + i % 3) {
            let t = (i + r) % 3;
            sql.push_str(&format!("INSERT INTO {db}.t{t} VALUES ({}, 'tx {i} row {r}');\n", next_id[t]));
            next_id[t] += 1;
            rows += 1;
        }
        sql.push_str("COMMIT;\n");
    }
    (sql, rows)
}

fn create_tables(server: &MariaDb, db: &str) {
    server.sql(&format!(
        "CREATE DATABASE {db};
         CREATE TABLE {db}.t0 (id BIGINT PRIMARY KEY, v VARCHAR(40));
         CREATE TABLE {db}.t1 (id BIGINT PRIMARY KEY, v VARCHAR(40));
         CREATE TABLE {db}.t2 (id BIGINT PRIMARY KEY, v VARCHAR(40));"
    ));
}

/// Asserts every row is present and per-table order holds; returns the number of duplicates.
fn verify(events: &[Event], expected_rows: usize) -> usize {
    let mut seen = HashSet::new();
    let mut last_id: HashMap<String, i64> = HashMap::new();
    let mut duplicates = 0;
    for e in events {
        let id = e.after.as_ref().unwrap()["id"].as_i64().unwrap();
        if !seen.insert(row_key(e)) {
            duplicates += 1;
            continue;
        }
        let last = last_id.entry(e.table.clone()).or_insert(0);
        assert!(id > *last, "{}: id {id} first delivered after {last}: commit order broken", e.table);
        *last = id;
    }
    if seen.len() != expected_rows {
        // Which rows: ids are dense per table, so gaps below the highest id are lost rows, and
        // rows beyond it were never delivered at all.
        let mut gaps = Vec::new();
        for (table, last) in &last_id {
            let ids: HashSet<i64> = events
                .iter()
                .filter(|e| &e.table == table)
                .map(|e| e.after.as_ref().unwrap()["id"].as_i64().unwrap())
                .collect();
            gaps.extend((1..*last).filter(|id| !ids.contains(id)).take(10).map(|id| format!("{table}.{id}")));
        }
        panic!("committed rows missing from the output: {} of {expected_rows} delivered; highest ids {last_id:?}; gaps {gaps:?}", seen.len());
    }
    duplicates
}

#[test]
fn sigterm_then_restart_delivers_every_row_exactly_once() {
    let server = MariaDb::start(&[]);
    create_tables(&server, "r");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let (sql, rows) = workload("r", 6000);

    let first = Stream::start(&server, &position, dir.path(), 0, &["--start", "earliest"]);
    let writer = {
        let port = server.port;
        std::thread::spawn(move || crate::util::sql_at(port, &sql))
    };
    wait_for_rows(std::slice::from_ref(&first.stdout), "r", 50);
    let status = first.stop();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
    writer.join().unwrap();

    let files: Vec<PathBuf> = (0..2).map(|n| dir.path().join(format!("out.{n}.jsonl"))).collect();
    let delivered_before = crate::util::in_db(read_events(&files[..1]), "r").len();
    assert!(delivered_before > 0 && delivered_before < rows, "stopped mid-workload: {delivered_before} of {rows}");
    let second = Stream::start(&server, &position, dir.path(), 1, &[]);
    let events = wait_for_rows(&files, "r", rows);
    assert!(second.stop().success());
    assert_eq!(verify(&events, rows), 0, "a clean stop and restart duplicates nothing");
    assert!(events.last().unwrap().commit);
}

#[test]
fn sigkill_at_random_moments_loses_nothing_resuming_by_gtid() {
    crash_test("gtid");
}

/// The path MySQL's default (gtid_mode=OFF) takes: positions are file and offset.
#[test]
fn sigkill_at_random_moments_loses_nothing_resuming_by_file_offset() {
    crash_test("file");
}

/// SIGKILLs per crash test: 24 by default; `scripts/chaos` sets `BINLOG_TAIL_CHAOS_KILLS=100`.
/// The workload grows with the kills so that they keep landing while rows stream.
fn crash_test(resume_by: &str) {
    let _heavy = crate::util::heavy();
    let kills: usize = std::env::var("BINLOG_TAIL_CHAOS_KILLS")
        .map_or(24, |k| k.parse().expect("BINLOG_TAIL_CHAOS_KILLS is a number"));
    let txs = 10_000 * kills.max(24) / 24;
    let server = MariaDb::start(&[]);
    create_tables(&server, "crash");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let (sql, rows) = workload("crash", txs);
    // Written in batches of 250 with pauses, so the kills land while rows are streaming.
    let writer = crate::util::write_in_batches(server.port, &sql, 250, Duration::from_millis(120));
    let mut rng = crate::util::XorShift(0x2545f4914f6cdd1du64);
    let mut files = Vec::new();
    for n in 0..kills {
        // Every run says where to start without a saved position: a run killed before it saved
        // its starting point leaves none, and the next run must not start at `latest`.
        let extra = ["--checkpoint-every", "50", "--resume-by", resume_by, "--start", "earliest"];
        let mut run = Stream::start(&server, &position, dir.path(), n, &extra);
        files.push(run.stdout.clone());
        if n % 2 == 1 {
            // Every other kill lands while rows stream, however slowly a loaded machine starts it.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::fs::metadata(&run.stdout).map_or(0, |m| m.len()) == 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        std::thread::sleep(Duration::from_millis(80 + rng.next() % 400));
        run.signal("-KILL");
        run.wait();
    }
    writer.join().unwrap();
    let last = Stream::start(&server, &position, dir.path(), kills, &["--resume-by", resume_by]);
    files.push(last.stdout.clone());
    let events = wait_for_rows(&files, "crash", rows);
    let log = last.log();
    assert!(last.stop().success(), "{log}");
    let distinct: HashSet<_> = events.iter().map(row_key).collect();
    if distinct.len() < rows {
        // What a loss looks like from here: where the last run started and what it said.
        let logs: Vec<String> = (0..=kills)
            .map(|n| {
                format!(
                    "run {n}: {}",
                    std::fs::read_to_string(dir.path().join(format!("err.{n}.log"))).unwrap_or_default()
                )
            })
            .collect();
        panic!(
            "{} of {rows} rows delivered; position file: {}\n{}",
            distinct.len(),
            std::fs::read_to_string(&position).unwrap_or_default(),
            logs[logs.len().saturating_sub(4)..].join("\n")
        );
    }
    let duplicates = verify(&events, rows);
    let busy_runs = files[..kills]
        .iter()
        .filter(|f| !crate::util::in_db(read_events(&[f.to_path_buf()]), "crash").is_empty())
        .count();
    eprintln!(
        "crash test (resume by {resume_by}): {rows} rows in {txs} transactions, {kills} SIGKILLs ({busy_runs} while delivering), 0 lost, {duplicates} duplicates"
    );
    assert!(busy_runs >= kills * 5 / 8, "most kills should hit a streaming process: {busy_runs} of {kills}");
    // Duplicates come only from the window after the last checkpoint: at most 50 transactions of
    // at most 3 rows per kill.
    assert!(duplicates <= kills * 150, "{duplicates} duplicates exceed the unacknowledged windows");
}

#[test]
fn killed_connection_and_server_restart_resume_by_themselves() {
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE k; CREATE TABLE k.t (id INT PRIMARY KEY);");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let stream = Stream::start(&server, &position, dir.path(), 0, &["--start", "earliest", "--heartbeat", "1"]);
    let files = vec![stream.stdout.clone()];
    server.sql("INSERT INTO k.t VALUES (1), (2);");
    wait_for_rows(&files, "k", 2);

    let dump_threads = server.sql("SELECT id FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'");
    assert!(!dump_threads.is_empty(), "binlog-tail is connected as a replica");
    for id in dump_threads.lines() {
        server.sql(&format!("KILL CONNECTION {id}"));
    }
    server.sql("INSERT INTO k.t VALUES (3);");
    assert_eq!(wait_for_rows(&files, "k", 3).len(), 3, "resumed after KILL CONNECTION: {}", stream.log());

    server.restart(&[]);
    server.sql("INSERT INTO k.t VALUES (4);");
    let events = wait_for_rows(&files, "k", 4);
    let log = stream.log();
    assert!(stream.stop().success(), "{log}");
    assert_eq!(verify(&events, 4), 0, "{log}");
    assert!(log.contains("reconnecting"), "each reconnect attempt is logged: {log}");
}

#[test]
fn purged_binlog_is_a_distinct_fatal_error() {
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE p; CREATE TABLE p.t (id INT PRIMARY KEY); INSERT INTO p.t VALUES (1);");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let first = Stream::start(&server, &position, dir.path(), 0, &["--start", "earliest"]);
    wait_for_rows(std::slice::from_ref(&first.stdout), "p", 1);
    assert!(first.stop().success());
    let saved = std::fs::read(&position).unwrap();

    server.sql("INSERT INTO p.t VALUES (2); FLUSH BINARY LOGS; INSERT INTO p.t VALUES (3); FLUSH BINARY LOGS;");
    server.purge_all_but_newest();

    let mut second = Stream::start(&server, &position, dir.path(), 1, &[]);
    let status = second.wait();
    let log = second.log();
    assert_eq!(status.code(), Some(3), "purged binlog exits with 3: {log}");
    assert!(log.contains("purged") && log.contains("lost"), "{log}");
    assert_eq!(std::fs::read(&position).unwrap(), saved, "the position file is unchanged");
}

#[test]
fn corrupt_and_locked_position_files_are_refused() {
    let server = MariaDb::shared();
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    std::fs::write(&position, b"{\"version\":1,\"flavor\":\"mariadb\",").unwrap();
    let mut run = Stream::start(server, &position, dir.path(), 0, &[]);
    assert_eq!(run.wait().code(), Some(1));
    assert!(run.log().contains("is corrupt"), "{}", run.log());
    assert_eq!(std::fs::read(&position).unwrap(), b"{\"version\":1,\"flavor\":\"mariadb\",");

    let position = dir.path().join("locked.json");
    let holder = Stream::start(server, &position, dir.path(), 1, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let mut second = Stream::start(server, &position, dir.path(), 2, &[]);
    assert_eq!(second.wait().code(), Some(1));
    assert!(second.log().contains("another binlog-tail is using the position file"), "{}", second.log());
    assert!(holder.stop().success());
}

#[test]
fn a_server_without_row_binlogs_is_refused_before_anything_is_written() {
    let server = MariaDb::start(&["--binlog-format=STATEMENT"]);
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let mut run = Stream::start(&server, &position, dir.path(), 0, &[]);
    assert_eq!(run.wait().code(), Some(1));
    assert!(run.log().contains("binlog_format"), "{}", run.log());
    assert!(!position.exists(), "no position file is written");
}

#[test]
fn check_tells_what_to_change() {
    let server = MariaDb::start(&[
        "--binlog-format=STATEMENT",
        "--binlog-row-image=MINIMAL",
        "--binlog-row-metadata=MINIMAL",
        "--gtid-strict-mode=OFF",
    ]);
    let out = crate::util::binlog_tail()
        .args(["check", "--url", &server.url()])
        .env("MYSQL_PWD", "replpass")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for expected in [
        "PASS  log_bin",
        "FAIL  binlog_format        STATEMENT",
        "fix: SET GLOBAL binlog_format=ROW",
        "WARN  binlog_row_image     MINIMAL",
        "fix: SET GLOBAL binlog_row_image=FULL",
        "WARN  binlog_row_metadata  MINIMAL",
        "WARN  gtid_strict_mode",
        "PASS  privileges",
        "2 passed, 1 failed, 3 warnings",
    ] {
        assert!(stdout.contains(expected), "missing `{expected}` in:\n{stdout}");
    }
    let good = crate::util::binlog_tail()
        .args(["check", "--url", &MariaDb::shared().url()])
        .env("MYSQL_PWD", "replpass")
        .output()
        .unwrap();
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stdout));
}

#[test]
fn failover_to_a_replica_resumes_by_gtid() {
    let primary = MariaDb::start(&[]);
    let replica = MariaDb::start_with_env(&[("SERVER_ID", "2")], &["--log-slave-updates"]);
    replica.sql(&format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl', MASTER_PASSWORD='replpass', MASTER_USE_GTID=slave_pos; START SLAVE;",
        primary.port
    ));
    primary.sql("CREATE DATABASE f; CREATE TABLE f.t (id INT PRIMARY KEY); INSERT INTO f.t VALUES (1), (2);");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let first = Stream::start(&primary, &position, dir.path(), 0, &["--start", "earliest"]);
    wait_for_rows(std::slice::from_ref(&first.stdout), "f", 2);
    assert!(first.stop().success());

    primary.sql("INSERT INTO f.t VALUES (3); INSERT INTO f.t VALUES (4);");
    let target = primary.gtid_pos();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while replica.sql("SELECT @@gtid_slave_pos") != target {
        assert!(std::time::Instant::now() < deadline, "replica did not catch up");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(primary); // the primary is gone

    let second = Stream::start(&replica, &position, dir.path(), 1, &[]);
    let files = vec![dir.path().join("out.0.jsonl"), second.stdout.clone()];
    let events = wait_for_rows(&files, "f", 4);
    let log = second.log();
    assert!(second.stop().success(), "{log}");
    assert_eq!(verify(&crate::util::in_db(events, "f"), 4), 0, "{log}");
    assert!(log.contains("failover"), "the server change is reported: {log}");
}

#[test]
fn a_silent_dead_connection_is_noticed_by_missed_heartbeats() {
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE h; CREATE TABLE h.t (id INT PRIMARY KEY); INSERT INTO h.t VALUES (1);");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let stream = Stream::start(&server, &position, dir.path(), 0, &["--start", "earliest", "--heartbeat", "0.5"]);
    let files = vec![stream.stdout.clone()];
    wait_for_rows(&files, "h", 1);
    // A frozen server keeps the TCP connection open but sends nothing, not even heartbeats.
    let pid = std::fs::read_to_string(server.dir.path().join("data/mysqld.pid")).unwrap();
    std::process::Command::new("kill").args(["-STOP", pid.trim()]).status().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    std::process::Command::new("kill").args(["-CONT", pid.trim()]).status().unwrap();
    server.sql("INSERT INTO h.t VALUES (2);");
    let events = wait_for_rows(&files, "h", 2);
    let log = stream.log();
    assert!(stream.stop().success(), "{log}");
    assert_eq!(verify(&events, 2), 0);
    assert!(log.contains("no event and no heartbeat"), "{log}");
}

#[test]
fn wait_for_server_rides_out_a_server_that_is_still_starting() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = dir.path().join("out.jsonl");
    let mut child = crate::util::binlog_tail()
        .args(["dump", "--stdout", "--start", "earliest", "--wait-for-server", "60"])
        .args(["--url", &format!("mysql://repl@127.0.0.1:{port}")])
        .env("MYSQL_PWD", "replpass")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(child.try_wait().unwrap().is_none(), "still waiting for the server");
    let server = MariaDb::start_on_port(port);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "dump connected once the server was up: {}", String::from_utf8_lossy(&out.stderr));
    drop(server);
}

#[test]
fn a_file_offset_position_is_refused_on_another_server() {
    let first = MariaDb::start(&[]);
    let other = MariaDb::start_with_env(&[("SERVER_ID", "7")], &[]);
    first.sql("CREATE DATABASE o; CREATE TABLE o.t (id INT PRIMARY KEY); INSERT INTO o.t VALUES (1);");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let run = Stream::start(&first, &position, dir.path(), 0, &["--start", "earliest", "--resume-by", "file"]);
    wait_for_rows(std::slice::from_ref(&run.stdout), "o", 1);
    assert!(run.stop().success());
    let saved = std::fs::read(&position).unwrap();
    let mut moved = Stream::start(&other, &position, dir.path(), 1, &["--resume-by", "file"]);
    assert_eq!(moved.wait().code(), Some(1));
    assert!(moved.log().contains("file offsets do not carry over between servers"), "{}", moved.log());
    assert_eq!(std::fs::read(&position).unwrap(), saved);
}

#[test]
fn config_file_flags_and_environment_in_that_order() {
    let server = MariaDb::shared();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("binlog-tail.toml");
    std::fs::write(
        &config,
        format!(
            "url = 'mysql://repl@127.0.0.1:1'\nposition_file = '{}'\ncheckpoint_every = 10\nresume_by = 'gtid'\n",
            dir.path().join("from-config.json").display()
        ),
    )
    .unwrap();
    let run = |env: &[(&str, &str)], args: &[&str], expect: &std::path::Path| {
        let mut child = crate::util::binlog_tail()
            .args(["stream", "--config"])
            .arg(&config)
            .args(args)
            .envs(env.iter().copied())
            .env("MYSQL_PWD", "replpass")
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !expect.exists() {
            assert!(std::time::Instant::now() < deadline, "no position file at {}", expect.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(child.wait().unwrap().success());
    };
    // The flag's URL beats the environment's (port 2) and the file's (port 1); the position file
    // comes from the config file.
    run(
        &[("BINLOG_TAIL_URL", "mysql://repl@127.0.0.1:2")],
        &["--url", &server.url()],
        &dir.path().join("from-config.json"),
    );
    // The environment beats the file, for the URL and for the position file.
    let env_position = dir.path().join("from-env.json");
    run(
        &[("BINLOG_TAIL_URL", &server.url()), ("BINLOG_TAIL_POSITION_FILE", env_position.to_str().unwrap())],
        &[],
        &env_position,
    );

    std::fs::write(&config, "url = 'mysql://repl@127.0.0.1:1'\nposition_fle = 'typo'\n").unwrap();
    let out = crate::util::binlog_tail().args(["stream", "--config"]).arg(&config).output().unwrap();
    let err = crate::util::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("position_fle") && err.contains("no such option"), "unknown keys are rejected: {err}");
}

/// However a term ends, what the sink acknowledged is saved: here, with no checkpoint due, the
/// reconnect after a dropped connection fails for good (the user is gone).
#[test]
fn a_definite_error_while_reconnecting_saves_what_was_delivered() {
    let server = MariaDb::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let out = dir.path().join("out.jsonl");
    server.sql(
        "CREATE USER gone@'%' IDENTIFIED BY 'gonepass'; \
         GRANT REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR, SELECT ON *.* TO gone@'%'; \
         CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY);",
    );
    let url = server.url().replace("repl@", "gone@");
    let child = crate::util::binlog_tail()
        .args(["stream", "--url", &url, "--include", "d", "--checkpoint-every", "1000000"])
        .args(["--checkpoint-interval", "86400", "--position-file", position.to_str().unwrap()])
        .env("MYSQL_PWD", "gonepass")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.path().join("err.log")).unwrap())
        .spawn()
        .unwrap();
    let mut stream = Stream { child, stdout: out.clone(), stderr: dir.path().join("err.log") };
    stream.wait_ready(&position);
    server.sql("INSERT INTO d.t VALUES (1); INSERT INTO d.t VALUES (2); INSERT INTO d.t VALUES (3);");
    let delivered = server.gtid_pos();
    crate::util::until("three rows on stdout", || {
        std::fs::read_to_string(&out).unwrap_or_default().lines().count() == 3
    });
    server.sql("DROP USER gone@'%'");
    let ids = server.sql("SELECT id FROM information_schema.PROCESSLIST WHERE USER = 'gone'");
    for id in ids.lines() {
        server.sql(&format!("KILL CONNECTION {id}"));
    }
    let status = stream.wait();
    assert_eq!(status.code(), Some(1), "{}", stream.log());
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&position).unwrap()).unwrap();
    // At least the three rows' transactions (the DROP USER after them may be delivered too).
    let seq = |gtid: &str| gtid.rsplit('-').next().unwrap().parse::<u64>().unwrap();
    let saved = saved["gtid_set"].as_str().unwrap().to_string();
    assert!(seq(&saved) >= seq(&delivered), "saved {saved}, delivered {delivered}: {}", stream.log());
}
