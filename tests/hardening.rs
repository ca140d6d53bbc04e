//! Bad input and hostile conditions found by an outside audit (issue 15): bad values refused
//! with exit code 2 before anything is written, secrets kept out of every output, signals and
//! unreachable servers or brokers ending in a clean stop with the position of what was delivered.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{binlog_tail, ok_events, stderr, wait_for_rows, MariaDb, Stream};

/// Asserts exit code 2 with one `error:` line and no panic; returns stderr.
fn usage_error(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "expected a usage error: {err}");
    assert!(err.contains("error: ") && !err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    err
}

/// Runs `cmd` to its end; a command that should have been refused at once but runs on is
/// killed after 60 s and fails the test.
fn output(cmd: &mut Command) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            Command::new("kill").args(["-9", &pid]).status().unwrap();
            panic!("{cmd:?} still ran after 60 s")
        }
    }
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn limit_zero_prints_nothing() {
    // A server of its own: its binlog files are read while no one writes to them.
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE l; CREATE TABLE l.t (id INT PRIMARY KEY); INSERT INTO l.t VALUES (1), (2), (3);");
    assert!(ok_events(&server.dump(&["--start", "earliest", "--limit", "0"])).is_empty());
    assert_eq!(ok_events(&server.dump(&["--start", "earliest", "--limit", "2"])).len(), 2);
    let files = server.binlog_files();
    let from_files =
        |limit: &str| binlog_tail().args(["dump", "--limit", limit, "--file"]).args(&files).output().unwrap();
    assert!(ok_events(&from_files("0")).is_empty());
    assert_eq!(ok_events(&from_files("1")).len(), 1);
}

#[test]
fn bad_values_are_usage_errors_that_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let url = format!("mysql://repl@127.0.0.1:{}", closed_port());
    let stream = |extra: &[&str]| {
        output(binlog_tail().args(["stream", "--url", &url, "--position-file"]).arg(&position).args(extra))
    };
    let kafka = |brokers: &str| stream(&["--sink", "kafka", "--kafka-brokers", brokers]);
    for (out, expected) in [
        (stream(&["--server-id", "0"]), "0 is not in 1..=4294967295"),
        (output(binlog_tail().args(["dump", "--url", &url, "--server-id", "0"])), "--server-id"),
        (kafka(""), "--kafka-brokers ``: an empty entry; give HOST:PORT[,HOST:PORT...]"),
        (kafka(",,,"), "an empty entry; give HOST:PORT"),
        (kafka("nohostport"), "`nohostport` has no port; give HOST:PORT"),
        (kafka("kafka:ninety"), "`ninety` in `kafka:ninety` is not a port"),
        (
            stream(&["--include", "["]),
            "`[`: `[` is not pattern syntax here; patterns know only * (any run of characters) and ?",
        ),
        (stream(&["--exclude", "shop.{a,b}"]), "`{` is not pattern syntax here"),
        (stream(&["--drop-column", "shop.users.[pw]"]), "`[` is not pattern syntax here"),
        (stream(&["--ops", "upsert"]), "`upsert` is not an operation"),
    ] {
        let err = usage_error(&out);
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
    }
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "server_id = 0\n").unwrap();
    let err = usage_error(&stream(&["--config", config.to_str().unwrap()]));
    assert!(err.contains("'0' for '--server-id") && err.contains("config file"), "{err}");
    assert!(!position.exists() && !dir.path().join("position.json.lock").exists(), "nothing was written");
}

#[test]
fn kafka_property_values_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[kafka]\n\"sasl.passwd\" = \"hunter2-in-a-file\"\n").unwrap();
    for (props, key) in [
        (vec!["-X", "sasl.pasword=hunter2-misspelled"], "sasl.pasword"),
        (vec!["-X", "security.protocol=hunter2-bad-value"], "security.protocol"),
        (vec!["-X", "sasl.password:hunter2-no-equals"], "-X"),
        (vec!["--config", config.to_str().unwrap()], "sasl.passwd"),
    ] {
        let out = output(
            binlog_tail()
                .args(["-vv", "stream", "--url", "mysql://repl@127.0.0.1:1", "--position-file"])
                .arg(&position)
                .args(["--sink", "kafka", "--kafka-brokers", "127.0.0.1:1"])
                .args(&props),
        );
        let err = usage_error(&out);
        assert!(err.contains(key), "the property is named: {err}");
        assert!(!err.contains("hunter2"), "a -X value was printed: {err}");
    }
}

#[test]
fn help_hides_a_url_from_the_environment() {
    for sub in ["dump", "stream", "check"] {
        let out = binlog_tail()
            .args([sub, "--help"])
            .env("BINLOG_TAIL_URL", "mysql://repl:hunter2@db:3306")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && help.contains("BINLOG_TAIL_URL"), "{help}");
        assert!(!help.contains("hunter2"), "`{sub} --help` shows the password: {help}");
    }
}

#[test]
fn a_password_in_the_url_is_warned_about_and_never_shown() {
    let server = MariaDb::shared();
    let url = format!("mysql://repl:replpass@127.0.0.1:{}", server.port);
    let out = output(binlog_tail().args(["dump", "--start", "latest", "--url", &url]));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("WARN")
            && err.contains("the --url holds a password")
            && err.contains("--password-file or MYSQL_PWD"),
        "{err}"
    );
    assert!(!err.contains("replpass"), "{err}");
}

#[test]
fn dump_without_replication_slave_names_the_grant() {
    let server = MariaDb::shared();
    server.sql(
        "CREATE USER IF NOT EXISTS noslave@'%' IDENTIFIED BY 'pw'; GRANT SELECT, BINLOG MONITOR ON *.* TO noslave@'%';",
    );
    let url = format!("mysql://noslave@127.0.0.1:{}", server.port);
    for sub in ["dump", "check"] {
        let out = output(binlog_tail().args([sub, "--url", &url]).env("MYSQL_PWD", "pw"));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("REPLICATION SLAVE") && text.contains("GRANT REPLICATION SLAVE"), "{sub}: {text}");
        assert!(!text.contains("check the password"), "{sub} blames the password: {text}");
    }
}

/// Waits until `stream`'s log contains `text`.
fn wait_for_log(stream: &Stream, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = stream.log();
        if log.contains(text) {
            return log;
        }
        assert!(Instant::now() < deadline, "no `{text}` in the log: {log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn saved_gtids(position: &Path) -> String {
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(position).unwrap()).unwrap();
    saved["gtid_set"].as_str().unwrap_or_default().to_string()
}

/// A stream that delivered two rows from a server of its own and saves its position only when
/// it stops; returns the server's GTID position after those rows.
struct Delivered {
    server: MariaDb,
    position: std::path::PathBuf,
    run: Stream,
    gtids: String,
    _dir: tempfile::TempDir,
}

fn delivered_two_rows() -> Delivered {
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY);");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let run = Stream::start(&server, &position, dir.path(), 0, &["--checkpoint-interval", "3600"]);
    run.wait_ready(&position);
    server.sql("INSERT INTO d.t VALUES (1), (2);");
    let gtids = server.gtid_pos();
    wait_for_rows(std::slice::from_ref(&run.stdout), "d", 2);
    Delivered { server, position, run, gtids, _dir: dir }
}

#[test]
fn sighup_stops_cleanly_like_sigterm() {
    let Delivered { server: _server, position, mut run, gtids, _dir } = delivered_two_rows();
    run.signal("-HUP");
    let status = run.wait();
    assert_eq!(status.code(), Some(0), "{}", run.log());
    assert_eq!(saved_gtids(&position), gtids, "the position covers the delivered rows");
}

#[test]
fn sigterm_while_reconnecting_saves_the_position_and_exits_0() {
    let Delivered { server, position, run, gtids, _dir } = delivered_two_rows();
    let pid = std::fs::read_to_string(server.dir.path().join("data/mysqld.pid")).unwrap();
    Command::new("kill").args(["-9", pid.trim()]).status().unwrap();
    // Every attempt is logged with its number and the address, and the number counts up.
    let address = format!("reconnecting to mysql://repl@127.0.0.1:{}", server.port);
    let log = wait_for_log(&run, "(attempt 3)");
    for n in 1..=3 {
        assert!(
            log.lines().any(|l| l.contains(&address) && l.contains(&format!("(attempt {n})"))),
            "attempt {n}: {log}"
        );
    }
    let log_before = run.log();
    let status = run.stop();
    assert_eq!(status.code(), Some(0), "{log_before}");
    assert_eq!(saved_gtids(&position), gtids, "the position covers the delivered rows");
}

#[test]
fn sigterm_while_the_first_connection_is_retried_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let port = closed_port();
    let mut child = binlog_tail()
        .args(["stream", "--url", &format!("mysql://repl@127.0.0.1:{port}"), "--position-file"])
        .arg(&position)
        // Ignored by stream, which retries anyway: it must not hide the attempts or the signal.
        .args(["--wait-for-server", "600"])
        .stdout(std::fs::File::create(dir.path().join("out.jsonl")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("err.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = std::fs::read_to_string(dir.path().join("err.log")).unwrap();
        if log.contains("(attempt 3)") {
            break log;
        }
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "{log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(log.contains(&format!("cannot connect to 127.0.0.1:{port}")), "{log}");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{log}");
    assert!(!position.exists(), "nothing was delivered, so no position was saved");
}

/// Kills every replication connection of a server as soon as it appears, until dropped.
struct DumpKiller(std::process::Child);

impl DumpKiller {
    fn start(server: &MariaDb) -> DumpKiller {
        let mut child = Command::new("mariadb")
            .args(["--no-defaults", "-h127.0.0.1", "-uadmin", "-padminpass", &format!("-P{}", server.port)])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the mariadb client (scripts/install-deps installs it)");
        let sql = "DELIMITER //
            BEGIN NOT ATOMIC
              DECLARE n INT DEFAULT 0;
              WHILE n < 2400 DO
                FOR t IN (SELECT id FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump') DO
                  BEGIN
                    DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN END;
                    EXECUTE IMMEDIATE CONCAT('KILL CONNECTION ', t.id);
                  END;
                END FOR;
                DO SLEEP(0.05);
                SET n = n + 1;
              END WHILE;
            END//
            ";
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), sql.as_bytes()).unwrap();
        drop(child.stdin.take());
        DumpKiller(child)
    }
}

impl Drop for DumpKiller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_server_that_closes_every_new_stream_is_given_up_on() {
    let server = MariaDb::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let killer = DumpKiller::start(&server);
    // No heartbeat arrives before a kill: every stream ends before its first event.
    let mut run = Stream::start(&server, &position, dir.path(), 0, &["--server-id", "4242", "--heartbeat", "60"]);
    let status = run.wait();
    let log = run.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("the server closed 5 replication streams in a row before sending any event"), "{log}");
    assert!(log.contains("--server-id 4242"), "{log}");
    for n in 1..=4 {
        assert!(log.contains(&format!("(attempt {n})")), "the attempt number counts across streams: {log}");
    }
    drop(killer);
    // Streams that deliver reset the count: the same command streams once nothing kills it.
    let run = Stream::start(&server, &position, dir.path(), 1, &["--server-id", "4242"]);
    server.sql("CREATE DATABASE dk; CREATE TABLE dk.t (id INT PRIMARY KEY); INSERT INTO dk.t VALUES (1);");
    wait_for_rows(std::slice::from_ref(&run.stdout), "dk", 1);
    assert_eq!(run.stop().code(), Some(0));
}

#[test]
fn unreachable_kafka_is_explained_and_sigterm_still_ends() {
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE uk; CREATE TABLE uk.t (id INT PRIMARY KEY);");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let brokers = format!("127.0.0.1:{}", closed_port());
    let mut run = Stream::start(&server, &position, dir.path(), 0, &["--sink", "kafka", "--kafka-brokers", &brokers]);
    run.wait_ready(&position);
    let saved = std::fs::read(&position).unwrap();
    server.sql("INSERT INTO uk.t VALUES (1), (2);");
    // At the default verbosity the log says why nothing is acknowledged.
    wait_for_log(&run, "Connection refused");
    run.signal("-TERM");
    let status = run.wait();
    let log = run.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("messages not acknowledged by Kafka (Kafka's last error:"), "{log}");
    assert!(log.contains("the rest is sent again after a restart"), "{log}");
    let refused = log.lines().filter(|l| l.contains("WARN") && l.contains("Connection refused")).count();
    assert!(refused <= 2, "each distinct Kafka error is logged once per 30 s, not on every retry: {log}");
    assert_eq!(std::fs::read(&position).unwrap(), saved, "nothing was acknowledged, so the position stayed");
}

/// A tiny tmpfs, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it, which needs root (scripts/test and CI run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_stops_the_stream_and_keeps_the_previous_position() {
    let server = MariaDb::shared();
    let db = server.fresh_db("full_disk");
    server.sql(&format!("CREATE TABLE {db}.t (id INT PRIMARY KEY);"));
    let disk = Tmpfs::mount("64k");
    let position = disk.0.path().join("position.json");
    let dir = tempfile::tempdir().unwrap();
    let mut run = Stream::start(server, &position, dir.path(), 0, &[]);
    run.wait_ready(&position);
    let saved = std::fs::read(&position).unwrap();
    // Fill the disk.
    let mut filler = std::fs::File::create(disk.0.path().join("filler")).unwrap();
    while std::io::Write::write_all(&mut filler, &[0u8; 4096]).is_ok() {}
    server.sql(&format!("INSERT INTO {db}.t VALUES (1);"));
    let status = run.wait();
    let log = run.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("cannot write the position file") && log.contains("No space left on device"), "{log}");
    assert_eq!(std::fs::read(&position).unwrap(), saved, "the previous position is intact");
    assert!(!disk.0.path().join("position.json.tmp").exists(), "no temp file is left behind");
}
