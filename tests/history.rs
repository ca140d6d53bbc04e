//! Positions that are not in the server's history: a reset binlog, a GTID domain the server never
//! had, a diverged server, a `--start` the server cannot serve. Each is refused with what to do,
//! and the position file is left exactly as it was (or not written at all).

use std::path::Path;

use crate::util::{binlog_tail, wait_for_rows, MariaDb, Stream};

/// Streams `db` from the start of the binlog until `rows` rows arrived, then stops cleanly.
fn stream_until(server: &MariaDb, position: &Path, dir: &Path, db: &str, rows: usize) {
    let run = Stream::start(server, position, dir, 0, &["--start", "earliest"]);
    wait_for_rows(std::slice::from_ref(&run.stdout), db, rows);
    let log = run.log();
    assert!(run.stop().success(), "{log}");
}

/// Runs `stream` again on `position` and returns (exit code, log, change events printed).
fn resume(server: &MariaDb, position: &Path, dir: &Path, n: usize) -> (Option<i32>, String, usize) {
    let mut run = Stream::start(server, position, dir, n, &[]);
    let status = run.wait();
    let printed = crate::util::read_events(std::slice::from_ref(&run.stdout)).len();
    (status.code(), run.log(), printed)
}

fn insert_transactions(server: &MariaDb, table: &str, from: usize, count: usize) {
    let sql: String = (from..from + count).map(|i| format!("INSERT INTO {table} VALUES ({i});\n")).collect();
    server.sql(&sql);
}

#[test]
fn a_reset_binlog_with_a_longer_new_history_is_refused() {
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE r; CREATE TABLE r.t (id INT PRIMARY KEY); FLUSH BINARY LOGS; FLUSH BINARY LOGS;");
    insert_transactions(&server, "r.t", 1, 5);
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    stream_until(&server, &position, dir.path(), "r", 5);
    let saved = std::fs::read_to_string(&position).unwrap();
    assert!(saved.contains("binlog.000003"), "{saved}");

    // A new history that reaches past the saved sequence number: the same GTIDs exist again.
    server.sql("RESET MASTER;");
    insert_transactions(&server, "r.t", 100, 20);
    let (code, log, printed) = resume(&server, &position, dir.path(), 1);
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("RESET MASTER") && log.contains("binlog.000003"), "{log}");
    assert_eq!(printed, 0, "nothing of the new history is streamed as if it followed the old one");
    assert_eq!(std::fs::read_to_string(&position).unwrap(), saved, "the position file is unchanged");

    // The new history grows files with the old names again: binlog.000003 now exists, with
    // other contents at the saved offset.
    server.sql("FLUSH BINARY LOGS; FLUSH BINARY LOGS;");
    insert_transactions(&server, "r.t", 200, 20);
    let (code, log, printed) = resume(&server, &position, dir.path(), 2);
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("reset"), "{log}");
    assert_eq!(printed, 0);
    assert_eq!(std::fs::read_to_string(&position).unwrap(), saved);
}

#[test]
fn a_gtid_domain_the_server_never_had_is_refused() {
    let domain9 = MariaDb::start_with_env(&[("SERVER_ID", "3")], &["--gtid-domain-id=9"]);
    let other = MariaDb::start_with_env(&[("SERVER_ID", "4")], &[]);
    domain9.sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY);");
    insert_transactions(&domain9, "d.t", 1, 3);
    other.sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY);");
    insert_transactions(&other, "d.t", 1, 50);
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    stream_until(&domain9, &position, dir.path(), "d", 3);
    let saved = std::fs::read_to_string(&position).unwrap();
    assert!(saved.contains("\"9-3-5\""), "{saved}");

    let (code, log, printed) = resume(&other, &position, dir.path(), 1);
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("GTID domain 9"), "{log}");
    assert_eq!(printed, 0, "the other server's history is not replayed");
    assert_eq!(std::fs::read_to_string(&position).unwrap(), saved);
}

#[test]
fn a_diverged_server_is_refused_as_another_history_not_as_purged() {
    let first = MariaDb::start_with_env(&[("SERVER_ID", "5")], &[]);
    let diverged = MariaDb::start_with_env(&[("SERVER_ID", "6")], &[]);
    for server in [&first, &diverged] {
        server.sql("CREATE DATABASE v; CREATE TABLE v.t (id INT PRIMARY KEY);");
    }
    insert_transactions(&first, "v.t", 1, 3);
    insert_transactions(&diverged, "v.t", 1, 30);
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    stream_until(&first, &position, dir.path(), "v", 3);
    let saved = std::fs::read_to_string(&position).unwrap();

    let (code, log, printed) = resume(&diverged, &position, dir.path(), 1);
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("diverged") && !log.contains("purged"), "{log}");
    assert_eq!(printed, 0);
    assert_eq!(std::fs::read_to_string(&position).unwrap(), saved);
}

#[test]
fn a_start_the_server_cannot_serve_is_refused_before_anything_is_saved() {
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE s; CREATE TABLE s.t (id INT PRIMARY KEY);");
    insert_transactions(&server, "s.t", 1, 3);
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let cases: [(&str, i32, &str); 6] = [
        ("binlog.000001:500", 1, "is not the start of an event"),
        ("binlog.000001:99999999", 1, "past the end"),
        ("binlog.000009:4", 1, "has no binlog binlog.000009"),
        ("0-1-999999", 1, "ahead of the server"),
        ("7-1-3", 1, "GTID domain 7"),
        ("binlog.000001:x", 2, "is not a byte offset"),
    ];
    for (n, (start, code, message)) in cases.iter().enumerate() {
        let mut run = Stream::start(&server, &position, dir.path(), n, &["--start", start]);
        assert_eq!(run.wait().code(), Some(*code), "--start {start}: {}", run.log());
        assert!(run.log().contains(message), "--start {start}: {}", run.log());
        assert!(!position.exists(), "--start {start} wrote a position file");

        let dump = server.dump(&["--start", start]);
        assert_eq!(dump.status.code(), Some(*code), "dump --start {start}: {}", crate::util::stderr(&dump));
        assert!(crate::util::stderr(&dump).contains(message), "dump --start {start}: {}", crate::util::stderr(&dump));
        assert!(dump.stdout.is_empty());
    }

    // The same value from a config file is a configuration error too (exit 2).
    let config = dir.path().join("binlog-tail.toml");
    std::fs::write(&config, format!("url = '{}'\nstart = 'binlog.000001:x'\n", server.url())).unwrap();
    let out =
        binlog_tail().args(["stream", "--position-file"]).arg(&position).arg("--config").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", crate::util::stderr(&out));
    let err = crate::util::stderr(&out);
    assert!(err.contains("'binlog.000001:x' for '--start") && err.contains("config file"), "{err}");
    assert!(!position.exists());

    // A valid start at an event boundary is taken and saved; its GTID state is the one there.
    let boundary = server.sql("SHOW BINLOG EVENTS IN 'binlog.000001'");
    let third_gtid_end =
        boundary.lines().filter(|l| l.contains("\tXid\t")).nth(1).unwrap().split('\t').nth(4).unwrap().to_string();
    let start = format!("binlog.000001:{third_gtid_end}");
    let run = Stream::start(&server, &position, dir.path(), 10, &["--start", &start]);
    let events = wait_for_rows(std::slice::from_ref(&run.stdout), "s", 1);
    assert!(run.stop().success());
    let ids: Vec<i64> = events.iter().map(|e| e.after.as_ref().unwrap()["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [3], "only the transaction after {start}");
    let saved = std::fs::read_to_string(&position).unwrap();
    assert!(saved.contains("\"0-1-5\""), "the GTID state at the end is saved: {saved}");
}

#[test]
fn stdout_that_throws_events_away_is_refused_by_stream() {
    let server = MariaDb::shared();
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let bin = env!("CARGO_BIN_EXE_binlog-tail");
    // A closed stdout (`>&-`) becomes /dev/null when the process starts.
    for redirect in [">&-", ">/dev/null"] {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("exec \"$0\" stream --url {} --position-file \"$1\" {redirect}", server.url()))
            .arg(bin)
            .arg(&position)
            .env("MYSQL_PWD", "replpass")
            .output()
            .unwrap();
        let err = crate::util::failure(&out);
        assert!(err.contains("stdout is /dev/null") && err.contains("--allow-discard"), "{redirect}: {err}");
        assert!(!position.exists(), "{redirect}: no position written");
    }
    // Discarding on purpose is allowed.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec \"$0\" stream --url {} --position-file \"$1\" --allow-discard >/dev/null & sleep 2; kill -TERM $!; wait $!", server.url()))
        .arg(bin)
        .arg(&position)
        .env("MYSQL_PWD", "replpass")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::util::stderr(&out));
    assert!(position.exists());
}

#[test]
fn write_errors_on_stdout_stop_before_the_position_moves() {
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE w; CREATE TABLE w.t (id INT PRIMARY KEY);");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let run = binlog_tail()
        .args(["stream", "--url", &server.url(), "--position-file"])
        .arg(&position)
        .args(["--start", "earliest"])
        .env("MYSQL_PWD", "replpass")
        .stdout(full)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !position.exists() {
        assert!(std::time::Instant::now() < deadline, "stream did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    insert_transactions(&server, "w.t", 1, 200);
    let out = run.wait_with_output_timeout();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write to stdout") && err.contains("No space left"), "{err}");
    assert!(saved_seq(&position) <= 2, "no row was written, so no transaction with rows counts as delivered");

    let dump = std::process::Command::new(env!("CARGO_BIN_EXE_binlog-tail"))
        .args(["dump", "--url", &server.url(), "--stdout"])
        .env("MYSQL_PWD", "replpass")
        .stdout(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap())
        .output()
        .unwrap();
    let err = crate::util::failure(&dump);
    assert!(err.contains("cannot write to stdout"), "{err}");
}

#[test]
fn a_stream_whose_reader_goes_away_fails_instead_of_exiting_cleanly() {
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE g; CREATE TABLE g.t (id INT PRIMARY KEY);");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let mut run = binlog_tail()
        .args(["stream", "--url", &server.url(), "--position-file"])
        .arg(&position)
        .args(["--start", "earliest", "--checkpoint-every", "1"])
        .env("MYSQL_PWD", "replpass")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(run.stdout.take()); // the reader is gone
    insert_transactions(&server, "g.t", 1, 2000);
    let out = run.wait_with_output_timeout();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stdout was closed by its reader"), "{err}");
    assert!(saved_seq(&position) <= 2, "no transaction with rows counts as delivered");
}

/// The sequence number of the saved MariaDB GTID (domain 0), 0 when none is saved.
fn saved_seq(position: &Path) -> u64 {
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(position).unwrap()).unwrap();
    saved["gtid_set"].as_str().map_or(0, |g| g.rsplit('-').next().unwrap().parse().unwrap())
}

trait WaitTimeout {
    fn wait_with_output_timeout(self) -> std::process::Output;
}

impl WaitTimeout for std::process::Child {
    /// Waits up to 60 s for the child to exit by itself, then kills it (the test then fails).
    fn wait_with_output_timeout(mut self) -> std::process::Output {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.kill();
        self.wait_with_output().unwrap()
    }
}
