//! Bad input of every kind: a one-line error that says what to do, exit 1, never a panic.

use std::path::Path;

use crate::util::{binlog_tail, failure, MariaDb};

fn dump_file(path: &Path) -> std::process::Output {
    binlog_tail().args(["dump", "--stdout", "--file"]).arg(path).output().unwrap()
}

/// A small real binlog with a few row events, written by MariaDB (with CRC32 checksums).
fn real_binlog(dir: &Path) -> Vec<u8> {
    // A server of its own: the shared one's newest file may be rotated by other tests meanwhile.
    let server = MariaDb::start(&[]);
    let db = server.fresh_db("bad_input_src");
    server.sql(&format!(
        "CREATE TABLE {db}.t (id INT PRIMARY KEY, s VARCHAR(20), j JSON, d DECIMAL(8,2), t DATETIME(3));
         INSERT INTO {db}.t VALUES (1, 'a', '[1]', 1.25, NOW(3)), (2, 'b', NULL, -3, NOW(3));
         UPDATE {db}.t SET s = 'c';"
    ));
    let files = server.binlog_files();
    let bytes = std::fs::read(files.last().unwrap()).unwrap();
    std::fs::write(dir.join("real.bin"), &bytes).unwrap();
    bytes
}

#[test]
fn random_bytes_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    for (name, bytes) in [
        ("random.bin", random.clone()),
        ("empty.bin", vec![]),
        ("magic-then-noise.bin", [&[0xfe, b'b', b'i', b'n'][..], &random].concat()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = failure(&dump_file(&path));
        assert!(err.contains(name), "the error names the file: {err}");
        assert!(err.contains("not a binlog") || err.contains("corrupt"), "{err}");
    }
    let err = failure(&dump_file(&dir.path().join("missing.bin")));
    assert!(err.contains("cannot open"), "{err}");
}

#[test]
fn truncated_file_is_reported_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = real_binlog(dir.path());
    // Cut in the middle of the last event, then in the middle of its header.
    for cut in [bytes.len() - 7, bytes.len() - 40] {
        let path = dir.path().join("cut.bin");
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = failure(&dump_file(&path));
        assert!(err.contains("ends in the middle of an event at offset"), "{err}");
        assert!(err.contains("--follow"), "{err}");
    }
}

#[test]
fn a_flipped_byte_fails_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = real_binlog(dir.path());
    let at = bytes.len() - 100;
    bytes[at] ^= 0x5a;
    let path = dir.path().join("flipped.bin");
    std::fs::write(&path, &bytes).unwrap();
    let err = failure(&dump_file(&path));
    assert!(err.contains("checksum mismatch"), "{err}");
}

/// Corrupts event bodies and then fixes their CRC32, so the damage reaches every parser: the
/// result must always be a clean exit (0 or 1), never a panic or a hang.
#[test]
fn malformed_event_bodies_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let original = real_binlog(dir.path());
    let events = event_spans(&original);
    let path = dir.path().join("mutated.bin");
    let mut rng = crate::util::XorShift(0x9e3779b97f4a7c15);
    let mut rand = move || rng.next();
    for round in 0..120 {
        let mut bytes = original.clone();
        let (start, len) = events[1 + (rand() as usize % (events.len() - 1))];
        for _ in 0..1 + rand() % 4 {
            let at = start + 19 + (rand() as usize % (len - 23));
            bytes[at] = rand() as u8;
        }
        let crc = crc32fast::hash(&bytes[start..start + len - 4]);
        bytes[start + len - 4..start + len].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let out = dump_file(&path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "round {round}: panic on a mutated event at {start}: {err}");
        assert!(matches!(out.status.code(), Some(0) | Some(1)), "round {round}: {:?} {err}", out.status);
    }
}

fn event_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = 4;
    while at + 19 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 9..at + 13].try_into().unwrap()) as usize;
        spans.push((at, len));
        at += len;
    }
    spans
}

#[test]
fn wrong_password() {
    let server = MariaDb::shared();
    let out = binlog_tail()
        .args(["dump", "--stdout", "--url", &server.url()])
        .env("MYSQL_PWD", "not-the-password")
        .output()
        .unwrap();
    let err = failure(&out);
    assert!(err.contains("access denied for user `repl`"), "{err}");
    assert!(err.contains("--password-file or MYSQL_PWD"), "{err}");
}

#[test]
fn password_file_is_read() {
    let server = MariaDb::shared();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "replpass\n").unwrap();
    let out = binlog_tail()
        .args(["dump", "--stdout", "--start", "latest", "--url", &server.url(), "--password-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn unreachable_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = binlog_tail()
        .args(["dump", "--stdout", "--url", &format!("mysql://repl@127.0.0.1:{port}")])
        .env("MYSQL_PWD", "x")
        .output()
        .unwrap();
    let err = failure(&out);
    assert!(err.contains(&format!("cannot connect to 127.0.0.1:{port}")), "{err}");
    assert!(err.contains("--wait-for-server"), "{err}");
}

#[test]
fn servers_without_row_binlogs_are_refused() {
    let statement = MariaDb::start(&["--binlog-format=STATEMENT"]);
    let err = failure(&statement.dump(&[]));
    assert!(err.contains("binlog_format=STATEMENT") && err.contains("set binlog_format=ROW"), "{err}");
    drop(statement);

    let no_binlog = MariaDb::start(&["--skip-log-bin"]);
    let err = failure(&no_binlog.dump(&[]));
    assert!(err.contains("binary logging is off"), "{err}");
}

#[test]
fn mariadb_compressed_events_stop_the_stream_with_the_fix() {
    let server = MariaDb::start(&["--log-bin-compress=ON", "--log-bin-compress-min-len=10"]);
    server.sql(
        "CREATE DATABASE c; CREATE TABLE c.t (id INT PRIMARY KEY, s TEXT);
         INSERT INTO c.t VALUES (1, REPEAT('compress me ', 100));",
    );
    let err = failure(&server.dump(&["--start", "earliest"]));
    assert!(err.contains("log_bin_compress=OFF"), "{err}");
    let files = server.binlog_files();
    let out = binlog_tail().args(["dump", "--stdout", "--file"]).args(&files).output().unwrap();
    let err = failure(&out);
    assert!(err.contains("log_bin_compress=OFF"), "{err}");
}

/// A table name with a newline (MariaDB accepts any character in a quoted name, and a crafted
/// binlog can hold any bytes) is escaped in log lines: it cannot forge a line of its own. The
/// change event keeps the name exactly.
#[test]
fn names_with_newlines_cannot_forge_log_lines() {
    // MINIMAL metadata: reading the file without --url warns about the table by name.
    let server = MariaDb::start(&["--binlog-row-metadata=MINIMAL"]);
    server.sql(
        "CREATE DATABASE inj; CREATE TABLE inj.`t\nERROR forged line` (id INT PRIMARY KEY);
         INSERT INTO inj.`t\nERROR forged line` VALUES (1);",
    );
    let out = binlog_tail().args(["dump", "--stdout", "--file"]).args(server.binlog_files()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(r"`inj`.`t\nERROR forged line`: the binlog lacks"), "the warning names the table: {err}");
    assert!(!err.lines().any(|l| l.starts_with("ERROR forged")), "a forged line on stderr: {err}");
    let events = crate::util::events(&out);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].table, "t\nERROR forged line");
}
