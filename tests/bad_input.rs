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

/// A MySQL 8.0 binlog holding one row of one JSON column whose binary value is `doc`: format
/// description, table map, WRITE_ROWS_V2 and XID, with CRC32 checksums.
fn mysql_json_binlog(doc: &[u8]) -> Vec<u8> {
    let mut file = vec![0xfe, b'b', b'i', b'n'];
    let mut event = |type_code: u8, body: &[u8]| {
        let size = (19 + body.len() + 4) as u32;
        let start = file.len();
        file.extend(1u32.to_le_bytes()); // timestamp
        file.push(type_code);
        file.extend(1u32.to_le_bytes()); // server id
        file.extend(size.to_le_bytes());
        file.extend((start as u32 + size).to_le_bytes()); // next event's offset
        file.extend(0u16.to_le_bytes()); // flags
        file.extend(body);
        let crc = crc32fast::hash(&file[start..]);
        file.extend(crc.to_le_bytes());
    };
    let mut fde = vec![4, 0];
    fde.extend(b"8.0.36");
    fde.resize(2 + 50 + 4, 0); // server version, creation time
    fde.push(19); // header length
                  // MySQL 8.0's post-header lengths, by event type from 1.
    fde.extend([0, 13, 0, 8, 0, 0, 0, 0, 4, 0, 4, 0, 0, 0, 97, 0, 4, 26, 8, 0, 0, 0, 8, 8, 8, 2, 0, 0, 0, 10]);
    fde.extend([10, 10, 42, 42, 0, 18, 52, 0, 10, 40]);
    fde.push(1); // CRC32
    event(15, &fde);
    // Table 7, `db`.`t`: one nullable JSON column (4-byte length).
    event(19, &[7, 0, 0, 0, 0, 0, 1, 0, 2, b'd', b'b', 0, 1, b't', 0, 1, 0xf5, 1, 4, 1]);
    let mut rows = vec![7, 0, 0, 0, 0, 0, 1, 0, 2, 0, 1, 1, 0]; // ..., columns present, null bitmap
    rows.extend((doc.len() as u32).to_le_bytes());
    rows.extend(doc);
    event(30, &rows);
    event(16, &42u64.to_le_bytes());
    file
}

#[test]
fn a_json_opaque_decimal_of_hostile_precision_is_an_error_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    // DECIMAL(10,4) 1234.5678 as MySQL stores it in a JSON document: opaque, type NEWDECIMAL.
    let decimal = |precision, scale| [&[0x0f, 246, 7, precision, scale][..], &[0x80, 0x04, 0xd2, 0x16, 0x2e]].concat();
    let path = dir.path().join("json-decimal.bin");
    std::fs::write(&path, mysql_json_binlog(&decimal(10, 4))).unwrap();
    let events = crate::util::ok_events(&dump_file(&path));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].after.as_ref().unwrap()["@1"], "1234.5678");
    // Precision 5 with scale 200 made mysql_common allocate exabytes and abort the process.
    let hostile = mysql_json_binlog(&decimal(5, 200));
    std::fs::write(&path, &hostile).unwrap();
    let err = failure(&dump_file(&path));
    assert!(err.contains("DECIMAL(5,200) is impossible"), "{err}");
    assert!(err.contains("json-decimal.bin"), "the error names the file: {err}");
    assert!(!err.contains("memory allocation"), "{err}");
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
