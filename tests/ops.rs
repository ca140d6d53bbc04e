//! Operating binlog-tail: `/metrics`, `/healthz` and `/readyz` scraped while a stream runs against
//! MariaDB, `status` on a healthy and on a purged position, JSON logs, completions and man page.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use crate::util::{binlog_tail, get, heavy, in_db, metric, samples, until, wait_for_rows, Event, MariaDb, Stream};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn metrics_and_probes_follow_a_stream_behind_a_backlog_and_a_server_restart() {
    let _heavy = heavy();
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE m; CREATE TABLE m.t (id INT PRIMARY KEY, pad VARCHAR(300));");
    // A backlog of over 6 MiB written an hour "ago" (the session timestamp is what binlog events carry): while
    // binlog-tail is stuck in it, the lag is at least that hour.
    let mut backlog = String::from("USE m;\nSET timestamp = UNIX_TIMESTAMP() - 3600;\n");
    for tx in 0..200 {
        backlog.push_str(&format!(
            "INSERT INTO m.t SELECT seq, REPEAT('x', 300) FROM seq_{}_to_{};\n",
            tx * 100 + 1,
            tx * 100 + 100
        ));
    }
    server.sql(&backlog);

    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let port = free_port();
    // stdout is a pipe nobody reads yet: once it is full, binlog-tail waits in the backlog.
    let mut child = binlog_tail()
        .args(["stream", "--url", &server.url(), "--start", "earliest", "--heartbeat", "1", "--position-file"])
        .arg(&position)
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("MYSQL_PWD", "replpass")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("err.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(dir.path().join("err.log")).unwrap_or_default();
    until("the endpoint answers", || get(port, "/healthz").is_some());
    assert_eq!(get(port, "/healthz").unwrap().0, 200);
    until("the stream is ready", || get(port, "/readyz").is_some_and(|(c, _)| c == 200));
    until("the read position is known to be behind", || metric(port, "binlog_tail_behind_bytes") > 0.0);
    let lag = metric(port, "binlog_tail_lag_seconds");
    assert!(lag >= 3000.0, "lag {lag} while stuck in a backlog written an hour ago\n{}", log());
    assert!(metric(port, "binlog_tail_events_read_total") > 0.0);

    // Read everything: binlog-tail catches up, and the lag and distance return to 0.
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(|l| serde_json::from_str::<Event>(&l.unwrap()).unwrap())
            .filter(|e| e.db == "m")
            .count()
    });
    let changes = "binlog_tail_changes_emitted_total{db=\"m\",table=\"t\",op=\"insert\"}";
    until("all 20000 rows are counted", || metric(port, changes) == 20000.0);
    until("behind_bytes returns to 0", || metric(port, "binlog_tail_behind_bytes") == 0.0);
    until("the lag returns to 0", || metric(port, "binlog_tail_lag_seconds") == 0.0);
    assert!(metric(port, "binlog_tail_transactions_total") >= 200.0);
    assert!(metric(port, "binlog_tail_checkpoints_total") >= 1.0);
    assert!(metric(port, "binlog_tail_bytes_read_total") > 20000.0 * 300.0);
    // Starting more than 4 MiB behind shows the progress (stderr is not a terminal: log lines).
    until("the end of the catch-up is logged", || log().contains("caught up with the server's binlog end"));
    assert!(log().contains("catching up: "), "{}", log());

    // New writes in real time move the counters; idle again, the lag stays 0 (heartbeats).
    server.sql("INSERT INTO m.t VALUES (100001, 'live');");
    until("the live row is counted", || metric(port, changes) == 20001.0);
    until("the lag is 0 again", || metric(port, "binlog_tail_lag_seconds") == 0.0);
    for _ in 0..6 {
        // Idle across several heartbeat periods: the lag does not grow.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(metric(port, "binlog_tail_lag_seconds"), 0.0, "idle and caught up\n{}", log());
    }

    // The server goes away: not ready; back: ready again, and the reconnect is counted.
    server.crash();
    until("/readyz says 503", || get(port, "/readyz").is_some_and(|(c, _)| c == 503));
    assert_eq!(get(port, "/healthz").unwrap().0, 200, "alive while waiting for the server");
    server.start_again(&[]);
    until("/readyz says 200 again", || get(port, "/readyz").is_some_and(|(c, _)| c == 200));
    assert!(metric(port, "binlog_tail_reconnects_total") >= 1.0);
    assert!(metric(port, "binlog_tail_errors_total{kind=\"stream\"}") >= 1.0, "{}", log());
    server.sql("INSERT INTO m.t VALUES (100002, 'after restart');");
    until("the row after the restart is counted", || metric(port, changes) == 20002.0);

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success(), "{}", log());
    assert_eq!(reader.join().unwrap(), 20002, "every row counted was printed");
}

/// A frozen server (SIGSTOP: no events, no heartbeats, the connection open) shows a lag that
/// grows with the time nothing arrived, and back to 0 once it answers again.
#[test]
fn lag_grows_while_the_server_is_frozen() {
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE z; CREATE TABLE z.t (id INT PRIMARY KEY); INSERT INTO z.t VALUES (1);");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let position = dir.path().join("position.json");
    let run = Stream::start(&server, &position, dir.path(), 0, &["--heartbeat", "1", "--metrics-addr", &addr]);
    until("the stream is ready", || get(port, "/readyz").is_some_and(|(c, _)| c == 200));
    server.sql("INSERT INTO z.t VALUES (2);");
    wait_for_rows(std::slice::from_ref(&run.stdout), "z", 1);
    let lag = || metric(port, "binlog_tail_lag_seconds");
    until("caught up", || lag() == 0.0);

    /// Sends SIGCONT when dropped, so a failing test does not leave the server frozen.
    struct Frozen(String);
    impl Drop for Frozen {
        fn drop(&mut self) {
            Command::new("kill").args(["-CONT", &self.0]).status().unwrap();
        }
    }
    let pid = std::fs::read_to_string(server.dir.path().join("data/mysqld.pid")).unwrap().trim().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let frozen = Frozen(pid);
    let since = std::time::Instant::now();
    until("the lag shows the silence", || lag() >= 2.5);
    let first = lag();
    std::thread::sleep(Duration::from_secs(2));
    let second = lag();
    assert!(second >= first + 1.5, "the lag grows while nothing arrives: {first} then {second}\n{}", run.log());
    assert!(second <= since.elapsed().as_secs_f64() + 1.5, "at most the time frozen: {second}");
    drop(frozen);
    until("the lag is 0 again", || lag() == 0.0);
    server.sql("INSERT INTO z.t VALUES (3);");
    wait_for_rows(std::slice::from_ref(&run.stdout), "z", 2);
    assert!(run.stop().success());
}

/// `status --json`, decoded strictly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Status {
    position_file: String,
    position: SavedPosition,
    age_seconds: u64,
    server: Option<ServerStatus>,
    /// Why status exits non-zero.
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // every field is decoded so an unexpected one fails the test
struct SavedPosition {
    version: u32,
    flavor: String,
    gtid_set: Option<String>,
    file: String,
    offset: u64,
    server: serde_json::Value,
    updated_at: String,
    stream_id: Option<String>,
    #[serde(default)]
    snapshot: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerStatus {
    url: String,
    behind_bytes: Option<u64>,
    checks: Vec<CheckStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CheckStatus {
    name: String,
    status: String,
    detail: String,
    fix: Option<String>,
}

fn status(server: &MariaDb, position: &std::path::Path) -> (Option<i32>, Status, String) {
    let out = binlog_tail()
        .args(["status", "--json", "--url", &server.url(), "--position-file"])
        .arg(position)
        .env("MYSQL_PWD", "replpass")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bad status JSON ({e}): {stderr}"));
    (out.status.code(), report, stderr)
}

#[test]
fn status_reports_the_saved_position_and_exits_3_once_its_binlog_is_purged() {
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE s; CREATE TABLE s.t (id INT PRIMARY KEY); INSERT INTO s.t VALUES (1), (2);");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let run = Stream::start(&server, &position, dir.path(), 0, &["--start", "earliest"]);
    wait_for_rows(std::slice::from_ref(&run.stdout), "s", 2);
    // status reads beside a running stream (which holds the position file's lock).
    let out = binlog_tail().args(["status", "--position-file"]).arg(&position).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("file:offset    binlog.000001:"));
    assert!(run.stop().success());

    let (code, report, stderr) = status(&server, &position);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report.position_file, position.display().to_string());
    assert_eq!(report.position.flavor, "mariadb");
    assert_eq!(report.position.file, "binlog.000001");
    assert_eq!(report.position.gtid_set.as_deref(), Some(server.gtid_pos().as_str()));
    assert!(report.age_seconds < 3600);
    let checked = report.server.expect("checked against the server");
    assert!(checked.url.ends_with(&format!("127.0.0.1:{}", server.port)));
    assert_eq!(checked.behind_bytes, Some(0), "nothing written since");
    assert!(checked.checks.iter().any(|c| c.name == "saved position" && c.status == "pass"), "{checked:?}");

    server.sql("INSERT INTO s.t VALUES (3);");
    let (code, report, _) = status(&server, &position);
    assert_eq!(code, Some(0));
    assert!(report.server.unwrap().behind_bytes.unwrap() > 0, "one transaction behind");

    server.sql("FLUSH BINARY LOGS; INSERT INTO s.t VALUES (4); FLUSH BINARY LOGS;");
    server.purge_all_but_newest();
    let (code, report, stderr) = status(&server, &position);
    assert_eq!(code, Some(3), "{stderr} {report:?}");
    assert!(stderr.contains("purged"), "{stderr}");
    assert!(report.error.as_deref().is_some_and(|e| e.contains("purged")), "{report:?}");
    let checked = report.server.unwrap();
    assert!(checked.checks.iter().any(|c| c.name == "saved position" && c.status == "fail"), "{checked:?}");

    let missing = binlog_tail().args(["status", "--position-file"]).arg(dir.path().join("none.json")).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("there is no position file"));
}

/// `status --json` that fails before it has a report still prints one JSON object, with the
/// error, and keeps the exit code.
#[test]
fn status_json_prints_its_error_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let json_error = |out: &std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON on stdout ({e}): {stderr}"));
        assert_eq!(report.as_object().map(|o| o.len()), Some(1), "{report}");
        report["error"].as_str().unwrap_or_else(|| panic!("no error in {report}")).to_string()
    };
    let missing =
        binlog_tail().args(["status", "--json", "--position-file"]).arg(dir.path().join("none.json")).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(json_error(&missing).contains("there is no position file"));
    let usage = binlog_tail()
        .args(["status", "--json", "--position-store", "kafka", "--stream-name", "a b", "--kafka-brokers", "x:1"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2), "a usage error still exits 2");
    assert!(json_error(&usage).contains("--stream-name `a b`"));
}

#[test]
fn json_logs_put_one_json_object_on_every_stderr_line() {
    let server = MariaDb::shared();
    let db = server.fresh_db("jsonlog");
    server.sql(&format!("CREATE TABLE {db}.t (id INT PRIMARY KEY); INSERT INTO {db}.t VALUES (1);"));
    let dump = server.dump(&["--start", "earliest", "--log-format", "json", "-v"]);
    assert!(dump.status.success());
    assert_eq!(in_db(crate::util::events(&dump), &db).len(), 1);
    let failing = binlog_tail()
        .args([
            "stream",
            "--log-format",
            "json",
            "--url",
            "mysql://repl@127.0.0.1:1",
            "--position-file",
            "/nonexistent/dir/p.json",
        ])
        .env("MYSQL_PWD", "secret-password")
        .output()
        .unwrap();
    assert_eq!(failing.status.code(), Some(1));
    let mut levels = Vec::new();
    for out in [&dump, &failing] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.is_empty());
        assert!(!stderr.contains("secret-password"), "{stderr}");
        for line in stderr.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(v["timestamp"].is_string() && v["message"].is_string(), "{line}");
            levels.push(v["level"].as_str().unwrap().to_string());
        }
    }
    assert!(levels.contains(&"INFO".to_string()) && levels.contains(&"ERROR".to_string()), "{levels:?}");
}

#[test]
fn completions_and_the_man_page_are_generated_from_the_command_line() {
    for shell in ["bash", "zsh", "fish"] {
        let out = binlog_tail().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("binlog-tail") && script.contains("position-file") && script.contains("status"),
            "{shell}"
        );
    }
    let bash = binlog_tail().args(["completions", "bash"]).output().unwrap().stdout;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.bash"), bash).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(dir.path().join("c.bash")).output().unwrap();
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));

    let man = binlog_tail().arg("man").output().unwrap();
    assert!(man.status.success());
    let page = String::from_utf8(man.stdout).unwrap();
    assert!(page.starts_with(".ie") || page.contains(".TH binlog-tail"), "{}", &page[..page.len().min(200)]);
    assert!(page.contains("stream") && page.contains("completions"));
    assert_eq!(binlog_tail().args(["completions", "tcsh"]).output().unwrap().status.code(), Some(2));
}

#[test]
fn a_bad_metrics_address_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = binlog_tail()
        .args(["stream", "--url", "mysql://repl@127.0.0.1:1", "--metrics-addr", "no-port-here", "--position-file"])
        .arg(dir.path().join("p.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics-addr"));
    assert!(!dir.path().join("p.json").exists());
}

/// The compose file's MySQL options: those MariaDB shares make a server that `check` passes on;
/// the MySQL-only GTID options are there.
#[test]
fn the_compose_files_mysql_options_pass_check() {
    let compose = std::fs::read_to_string(crate::util::root().join("examples/docker-compose.yml")).unwrap();
    let options: Vec<&str> = compose
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "image: mysql:8.4")
        .skip_while(|l| *l != "command:")
        .skip(1)
        .map_while(|l| l.strip_prefix("- --"))
        .collect();
    for mysql_only in ["gtid-mode=ON", "enforce-gtid-consistency=ON"] {
        assert!(options.contains(&mysql_only), "{options:?}");
    }
    let shared: Vec<String> = options
        .iter()
        .filter(|o| o.starts_with("binlog-") || o.starts_with("log-bin"))
        .map(|o| format!("--{o}"))
        .collect();
    assert_eq!(shared.len(), 4, "{options:?}");
    let shared: Vec<&str> = shared.iter().map(String::as_str).collect();
    let server = MariaDb::start(&shared);
    let out = binlog_tail().args(["check", "--url", &server.url()]).env("MYSQL_PWD", "replpass").output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    for setting in ["log_bin", "binlog_format", "binlog_row_image", "binlog_row_metadata"] {
        assert!(report.lines().any(|l| l.starts_with("PASS") && l.contains(setting)), "{setting}: {report}");
    }
}

/// Every binlog-tail command the example workflow runs is shown in the docs.
#[test]
fn the_workflows_commands_are_the_docs() {
    let workflow = std::fs::read_to_string(crate::util::root().join("examples/github-actions.yml")).unwrap();
    let docs: String = crate::docs::doc_files().into_iter().map(|(_, text)| text).collect();
    let commands: Vec<&str> = workflow
        .lines()
        .filter_map(|l| l.trim().strip_prefix("run: "))
        .filter(|c| c.starts_with("binlog-tail "))
        .collect();
    assert_eq!(commands.len(), 2, "{workflow}");
    for c in commands {
        assert!(docs.contains(c), "neither README.md nor docs/ show `{c}`");
    }
}

#[test]
fn kafka_metrics_count_what_the_broker_acknowledged() {
    let server = MariaDb::shared();
    let db = server.fresh_db("opsk");
    server.sql(&format!("CREATE TABLE {db}.t (id INT PRIMARY KEY);"));
    let broker = crate::util::Broker::start();
    broker.create_topic("opsk.t", 1);
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let brokers = broker.addr();
    let extra = ["--sink", "kafka", "--kafka-brokers", &brokers, "--include", "opsk", "--metrics-addr", &addr];
    let run = Stream::start(server, &position, dir.path(), 0, &extra);
    run.wait_ready(&position);
    let sql: String = (0..5).map(|tx| format!("INSERT INTO {db}.t VALUES ({}), ({});\n", tx * 2, tx * 2 + 1)).collect();
    server.sql(&sql);
    assert_eq!(broker.read("opsk.t", 10).len(), 10, "{}", run.log());
    until("every acknowledged transaction is in the histogram", || {
        metric(port, "binlog_tail_kafka_ack_latency_seconds_count") >= 5.0
    });
    assert_eq!(metric(port, "binlog_tail_kafka_in_flight_messages"), 0.0);
    assert_eq!(metric(port, "binlog_tail_kafka_in_flight_bytes"), 0.0);
    assert_eq!(metric(port, "binlog_tail_kafka_delivery_errors_total"), 0.0);
    assert_eq!(metric(port, "binlog_tail_changes_emitted_total{db=\"opsk\",table=\"t\",op=\"insert\"}"), 10.0);
    let log = run.log();
    assert!(run.stop().success(), "{log}");
}

#[test]
fn snapshot_progress_shows_in_metrics_and_status() {
    let server = MariaDb::start(&[]);
    server.sql(
        "CREATE DATABASE sm; USE sm; CREATE TABLE sm.a (id INT PRIMARY KEY); INSERT INTO sm.a SELECT seq FROM seq_1_to_250;
         CREATE TABLE sm.b (id INT PRIMARY KEY); INSERT INTO sm.b VALUES (1), (2);",
    );
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let extra = ["--snapshot", "initial", "--snapshot-chunk-size", "100", "--include", "sm", "--metrics-addr", &addr];
    let run = Stream::start(&server, &position, dir.path(), 0, &extra);
    wait_for_rows(std::slice::from_ref(&run.stdout), "sm", 252);
    until("the snapshot is complete in /metrics", || {
        get(port, "/metrics")
            .is_some_and(|(_, body)| samples(&body).get("binlog_tail_snapshot_tables_done") == Some(&2.0))
    });
    assert_eq!(metric(port, "binlog_tail_snapshot_tables_pending"), 0.0);
    let (_, body) = get(port, "/metrics").unwrap();
    let read_a: f64 = samples(&body)
        .iter()
        .filter(|(k, _)| {
            k.starts_with("binlog_tail_changes_emitted_total") && k.contains("table=\"a\"") && k.contains("op=\"read\"")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(read_a, 250.0, "{body}");
    assert!(run.stop().success());
    let out = binlog_tail().args(["status", "--position-file"]).arg(&position).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("snapshot       complete: 2 table(s)"), "{text}");
}
