//! The Debezium, Maxwell and Canal formats: every column type written by a real MariaDB, compared
//! with hand-written expectations (fixtures/types.<format>.expected.json); the shape of each
//! format against the examples in its project's documentation (fixtures/formats/); and the
//! options that go with them.

use std::collections::BTreeMap;
use std::process::Output;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::util::{binlog_tail, ok_events, root, shared_binlogs, stderr, MariaDb, Stream};

type Row = BTreeMap<String, Value>;

/// Debezium's change event (JSON converter, no schemas); unknown fields fail the test.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debezium {
    pub before: Option<Row>,
    pub after: Option<Row>,
    pub source: DebeziumSource,
    pub transaction: Option<Value>,
    pub op: String,
    pub ts_ms: u64,
    pub ts_us: u64,
    pub ts_ns: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebeziumSource {
    pub version: String,
    pub connector: String,
    pub name: String,
    pub ts_ms: u64,
    pub ts_us: u64,
    pub ts_ns: u64,
    pub snapshot: String,
    pub db: String,
    pub table: String,
    pub server_id: u32,
    pub gtid: Option<String>,
    pub file: String,
    pub pos: u64,
    pub row: u64,
    pub thread: Option<u32>,
    pub query: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maxwell {
    pub database: String,
    pub table: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub ts: u64,
    #[serde(default)]
    pub xid: Option<u64>,
    #[serde(default)]
    pub commit: Option<bool>,
    pub position: String,
    pub gtid: Option<String>,
    pub server_id: u32,
    pub data: Row,
    #[serde(default)]
    pub old: Option<Row>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Canal {
    pub data: Vec<Row>,
    pub database: String,
    pub es: u64,
    pub id: u64,
    pub is_ddl: bool,
    pub mysql_type: BTreeMap<String, String>,
    pub old: Option<Vec<Row>>,
    pub pk_names: Option<Vec<String>>,
    pub sql: String,
    pub sql_type: BTreeMap<String, i32>,
    pub table: String,
    pub ts: u64,
    #[serde(rename = "type")]
    pub kind: String,
}

/// Every stdout line as `T`, after checking the run succeeded.
fn parse<T: DeserializeOwned>(out: &Output) -> Vec<T> {
    assert!(out.status.success(), "binlog-tail failed: {}\n{}", out.status, stderr(out));
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line ({e}): {line}")))
        .collect()
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("fixtures").join(name)).unwrap()).unwrap()
}

fn row(v: &Value) -> Option<Row> {
    serde_json::from_value(v.clone()).unwrap()
}

/// `sql(db)` run in a fresh database on the shared server: (server, db, GTID position before it).
fn written(name: &str, sql: impl Fn(&str) -> String) -> (&'static MariaDb, String, String) {
    let server = MariaDb::shared();
    let db = server.fresh_db(name);
    let start = server.gtid_pos();
    server.sql(&sql(&db));
    (server, db, start)
}

/// The types fixture written into a fresh database.
fn types_db(name: &str) -> (&'static MariaDb, String, String) {
    let sql = std::fs::read_to_string(root().join("fixtures/types.sql")).unwrap();
    written(name, |db| format!("USE {db};\n{sql}"))
}

#[test]
fn every_type_in_debezium_format() {
    let (server, db, start) = types_db("types_debezium");
    let got: Vec<Debezium> = parse(&server.dump(&["--start", &start, "--include", &db, "--format", "debezium"]));
    let want = fixture("types.debezium.expected.json");
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let what = format!("{} row {}", g.op, g.source.row);
        assert_eq!(json!(g.op), w["op"], "{what}");
        assert_eq!(json!(g.source.row), w["row"], "{what}");
        assert_eq!(g.before, row(&w["before"]), "{what}: before");
        assert_eq!(g.after, row(&w["after"]), "{what}: after");
        let s = &g.source;
        assert_eq!((s.connector.as_str(), s.name.as_str(), s.snapshot.as_str()), ("mariadb", "127_0_0_1", "false"));
        assert_eq!((s.db.as_str(), s.table.as_str(), s.server_id), (db.as_str(), "types", 1));
        assert!(s.version.starts_with("binlog-tail-"), "{}", s.version);
        assert!(s.gtid.as_deref().is_some_and(|g| g.starts_with("0-1-")), "{:?}", s.gtid);
        assert!(s.file.starts_with("binlog.0") && s.pos >= 4, "{}:{}", s.file, s.pos);
        assert_eq!((s.ts_us, s.ts_ns), (s.ts_ms * 1000, s.ts_ms * 1_000_000));
        assert_eq!(s.thread, None, "MariaDB writes no BEGIN event to take the thread from");
        assert_eq!(s.query, None);
        assert_eq!(g.transaction, None);
        assert!(g.ts_ms >= s.ts_ms && g.ts_us / 1000 == g.ts_ms && g.ts_ns / 1000 == g.ts_us, "processing time");
    }

    // For Flink SQL: dates and times as SQL text, zero dates null.
    let sql: Vec<Debezium> =
        parse(&server.dump(&["--start", &start, "--include", &db, "--format", "debezium", "--debezium-time", "sql"]));
    let first = sql[0].after.as_ref().unwrap();
    let temporal = ["dt", "dtm", "dtm6", "ts", "tm", "tm3"].map(|c| first[c].clone());
    assert_eq!(
        temporal,
        [
            json!("1000-01-01"),
            json!("1000-01-01 00:00:00"),
            json!("1000-01-01 00:00:00.000001"),
            json!("1970-01-01 00:00:01.000000"),
            json!("-838:59:59"),
            json!("-00:00:00.500")
        ]
    );
    let zero = sql[2].after.as_ref().unwrap();
    assert_eq!(
        ["dt", "dtm", "dtm6", "ts"].map(|c| zero[c].clone()),
        [Value::Null, Value::Null, Value::Null, Value::Null]
    );
    assert_eq!(zero["tm"], json!("00:00:00"));
}

#[test]
fn every_type_in_maxwell_format() {
    let (server, db, start) = types_db("types_maxwell");
    let out = server.dump(&["--start", &start, "--include", &db, "--format", "maxwell"]);
    let got: Vec<Maxwell> = parse(&out);
    let want = fixture("types.maxwell.expected.json");
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (n, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(json!(g.kind), w["type"], "event {n}");
        assert_eq!(Some(&g.data), row(&w["data"]).as_ref(), "event {n}: data");
        assert_eq!(g.old, row(&w.get("old").cloned().unwrap_or(Value::Null)), "event {n}: old");
        assert_eq!((g.database.as_str(), g.table.as_str(), g.server_id), (db.as_str(), "types", 1));
        let commit = w["commit"].as_bool().unwrap();
        assert_eq!(g.commit, commit.then_some(true), "event {n}: commit appears only on the last row");
        assert!(g.xid.is_some(), "event {n}: every row carries its transaction's xid");
        let (file, offset) = g.position.rsplit_once(':').unwrap();
        assert!(file.starts_with("binlog.0") && offset.parse::<u64>().unwrap() >= 4, "{}", g.position);
        assert!(g.gtid.as_deref().is_some_and(|x| x.starts_with("0-1-")));
        assert!(g.ts > 1_700_000_000, "ts in seconds: {}", g.ts);
    }
    // DECIMAL is a JSON number with every digit (more than an f64 holds, so checked as text).
    let text = String::from_utf8(out.stdout).unwrap();
    for digits in [
        "-99999999999999999999999999999999999.999999999999999999999999999999",
        "0.000000000000000000000000000001",
        "-999.99",
        "0.00",
    ] {
        assert!(text.contains(&format!(":{digits},")), "DECIMAL {digits} as an exact number: {text}");
    }
}

#[test]
fn every_type_in_canal_format() {
    let (server, db, start) = types_db("types_canal");
    let got: Vec<Canal> = parse(&server.dump(&["--start", &start, "--include", &db, "--format", "canal"]));
    let want = fixture("types.canal.expected.json");
    let events = want["events"].as_array().unwrap();
    assert_eq!(got.len(), events.len());
    let mysql_type: BTreeMap<String, String> = serde_json::from_value(want["mysqlType"].clone()).unwrap();
    let sql_type: BTreeMap<String, i32> = serde_json::from_value(want["sqlType"].clone()).unwrap();
    for (n, (g, w)) in got.iter().zip(events).enumerate() {
        assert_eq!(json!(g.kind), w["type"], "event {n}");
        assert_eq!(json!(g.data), w["data"], "event {n}: data");
        assert_eq!(json!(g.old), w["old"], "event {n}: old");
        assert_eq!(g.mysql_type, mysql_type);
        assert_eq!(g.sql_type, sql_type);
        assert_eq!(g.pk_names, Some(vec!["id".to_string()]));
        assert_eq!(
            (g.database.as_str(), g.table.as_str(), g.is_ddl, g.sql.as_str()),
            (db.as_str(), "types", false, "")
        );
        assert_eq!(g.id, got[0].id + n as u64, "message ids count up");
        assert!(g.es % 1000 == 0 && g.ts >= g.es, "es is the commit time, ts the processing time");
        // Every value a string or null.
        assert!(g
            .data
            .iter()
            .chain(g.old.iter().flatten())
            .flat_map(|r| r.values())
            .all(|v| v.is_string() || v.is_null()));
    }
}

/// Asserts `ours` has the field names, nesting and JSON types of `theirs` (an example from the
/// format's documentation), except for the listed paths.
fn same_shape(path: &str, ours: &Value, theirs: &Value, extra: &[&str], differ: &[&str]) {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if differ.contains(&path) {
        return;
    }
    assert_eq!(kind(ours), kind(theirs), "{path}: {ours} where the documentation has {theirs}");
    match (ours, theirs) {
        (Value::Object(o), Value::Object(t)) => {
            for (k, tv) in t {
                let p = format!("{path}.{k}");
                let ov = o.get(k).unwrap_or_else(|| panic!("{p} is missing: {ours}"));
                same_shape(&p, ov, tv, extra, differ);
            }
            for k in o.keys().filter(|k| !t.contains_key(*k)) {
                assert!(extra.contains(&format!("{path}.{k}").as_str()), "{path}.{k} is not in the documented example");
            }
        }
        (Value::Array(o), Value::Array(t)) => {
            assert_eq!(o.len(), t.len(), "{path}");
            for (ov, tv) in o.iter().zip(t) {
                same_shape(&format!("{path}[]"), ov, tv, extra, differ);
            }
        }
        _ => {}
    }
}

fn lines(out: &Output) -> Vec<Value> {
    parse(out)
}

#[test]
fn each_format_has_the_shape_of_its_documented_example() {
    // The tables of the documented examples, and the same changes.
    let (server, db, start) = written("doc_examples", |db| {
        format!(
            "CREATE TABLE {db}.products (id INT PRIMARY KEY, name VARCHAR(255), description VARCHAR(512), weight FLOAT);
             CREATE TABLE {db}.maxwell (id INT PRIMARY KEY, daemon VARCHAR(255));
             INSERT INTO {db}.products VALUES (111, 'scooter', 'Big 2-wheel scooter', 5.18);
             UPDATE {db}.products SET weight = 5.15 WHERE id = 111;
             INSERT INTO {db}.maxwell VALUES (1, 'Stanislaw Lem');
             UPDATE {db}.maxwell SET daemon = 'Firebus!  Firebus!' WHERE id = 1;"
        )
    });
    let dump = |format: &str, table: &str| {
        lines(&server.dump(&["--start", &start, "--include", &format!("{db}.{table}"), "--format", format]))
    };

    let debezium = dump("debezium", "products");
    let update = &debezium[1];
    // ts_us and ts_ns came with Debezium 2.6, after the documented example; thread is null on
    // MariaDB, which writes no BEGIN event; the example's server had no GTIDs.
    same_shape(
        "",
        update,
        &fixture("formats/debezium.example.json"),
        &[".ts_us", ".ts_ns", ".source.ts_us", ".source.ts_ns"],
        &[".source.thread", ".source.gtid"],
    );
    assert_eq!(update["op"], "u");
    assert_eq!((update["before"]["weight"].clone(), update["after"]["weight"].clone()), (json!(5.18), json!(5.15)));

    let maxwell = dump("maxwell", "maxwell");
    // position, gtid and server_id are Maxwell's optional fields (output_binlog_position, ...).
    same_shape("", &maxwell[1], &fixture("formats/maxwell.example.json"), &[".position", ".gtid", ".server_id"], &[]);
    assert_eq!(maxwell[1]["old"], json!({"daemon": "Stanislaw Lem"}));

    let canal = dump("canal", "products");
    let example = fixture("formats/canal.example.json");
    same_shape("", &canal[1], &example, &[], &[]);
    assert_eq!(canal[1]["sqlType"], example["sqlType"], "JDBC type codes as in the example");
    assert_eq!(
        (canal[1]["data"][0]["weight"].clone(), canal[1]["old"][0]["weight"].clone()),
        (json!("5.15"), json!("5.18"))
    );
}

#[test]
fn debezium_turns_a_primary_key_change_into_delete_and_create() {
    let (server, db, start) = written("pk_change", |db| {
        format!(
            "CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(10), secret VARCHAR(10));
             INSERT INTO {db}.t VALUES (1, 'a', 's');
             UPDATE {db}.t SET id = 2 WHERE id = 1;
             DELETE FROM {db}.t WHERE id = 2;"
        )
    });
    let args = |format: &'static str| {
        let drop = format!("{db}.t.secret");
        server.dump(&["--start", &start, "--include", &db, "--format", format, "--drop-column", &drop])
    };
    let got: Vec<Debezium> = parse(&args("debezium"));
    let ops: Vec<_> = got.iter().map(|e| e.op.as_str()).collect();
    assert_eq!(ops, ["c", "d", "c", "d"], "no tombstones outside Kafka");
    assert_eq!(got[1].before.as_ref().unwrap()["id"], json!(1));
    assert_eq!(got[2].after.as_ref().unwrap()["id"], json!(2));
    assert_eq!((got[1].source.row, got[2].source.row), (0, 0), "both halves are the same binlog row");
    // --drop-column holds in every format.
    assert!(got
        .iter()
        .flat_map(|e| e.before.iter().chain(e.after.iter()))
        .all(|r| !r.contains_key("secret") && r.contains_key("v")));
    let maxwell: Vec<Maxwell> = parse(&args("maxwell"));
    assert_eq!(maxwell[1].old, Some(BTreeMap::from([("id".to_string(), json!(1))])));
    assert!(maxwell.iter().all(|e| !e.data.contains_key("secret")));
    let canal: Vec<Canal> = parse(&args("canal"));
    assert!(canal.iter().all(|e| !e.data[0].contains_key("secret")
        && !e.sql_type.contains_key("secret")
        && !e.mysql_type.contains_key("secret")));
    let native = ok_events(&args("native"));
    assert_eq!(native.len(), 3);
}

#[test]
fn debezium_options_need_the_debezium_format() {
    for (args, says) in [
        (vec!["--format", "maxwell", "--debezium-time", "sql"], "--debezium-time applies only to --format debezium"),
        (vec!["--debezium-tombstones=false"], "--debezium-tombstones applies only to --format debezium"),
        (vec!["--format", "avro"], "invalid value 'avro' for '--format"),
        (vec!["--format", "debezium", "--debezium-time", "epoch"], "invalid value 'epoch' for '--debezium-time"),
    ] {
        let out = binlog_tail().args(["dump", "--file", "/nonexistent"]).args(&args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn mysql_written_binlogs_in_debezium_and_canal_formats() {
    let Some(dir) = shared_binlogs() else { return };
    let file = dir.join("mysql_type_bit.000001");
    let dump = |format: &str| binlog_tail().args(["dump", "--format", format, "--file"]).arg(&file).output().unwrap();
    let debezium: Vec<Debezium> = parse(&dump("debezium"));
    let s = &debezium[0].source;
    assert_eq!(
        (s.connector.as_str(), s.name.as_str(), s.thread),
        ("mysql", "binlog-tail", Some(9)),
        "thread from MySQL's BEGIN"
    );
    assert_eq!(s.gtid.as_deref(), Some("fbda2ad0-7c46-11ec-ae30-4ef7efc81a2a:3"));
    // BIT(3) b'100' and BIT(8) 32 as Debezium's bytes, least significant first.
    let after = debezium[0].after.as_ref().unwrap();
    assert_eq!((after["a"].clone(), after["c"].clone()), (json!("BA=="), json!("IA==")));
    let canal: Vec<Canal> = parse(&dump("canal"));
    assert_eq!(canal[0].mysql_type["a"], "bit(3)");
    assert_eq!((canal[0].sql_type["a"], canal[0].pk_names.clone()), (-7, None), "a table without a primary key");
    assert_eq!(canal[0].data[0]["a"], json!("4"));
}

#[test]
fn stream_takes_the_format_from_its_config_file() {
    let server = MariaDb::shared();
    let db = server.fresh_db("stream_format");
    server.sql(&format!("CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(10));"));
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let config = dir.path().join("binlog-tail.toml");
    std::fs::write(&config, format!("include = [\"{db}\"]\nformat = \"canal\"\n")).unwrap();
    let run =
        Stream::start(server, &position, dir.path(), 0, &["--config", config.to_str().unwrap(), "--start", "latest"]);
    run.wait_ready(&position);
    server.sql(&format!("INSERT INTO {db}.t VALUES (1, 'x'); UPDATE {db}.t SET v = 'y' WHERE id = 1;"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&run.stdout).unwrap().lines().count() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = std::fs::read_to_string(&run.stdout).unwrap();
    assert!(run.stop().success());
    let got: Vec<Canal> = out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let kinds: Vec<_> = got.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, ["INSERT", "UPDATE"]);
    assert_eq!(got[1].old, Some(vec![BTreeMap::from([("v".to_string(), json!("x"))])]));
}

/// Maxwell repeats the transaction's XID on every row (it buffers the transaction): so does
/// `--format maxwell`, for transactions up to 10,000 rows; of a larger one, the rows beyond that
/// go out before the XID is known, without it. The native event keeps it on the commit row.
#[test]
fn maxwell_puts_the_xid_on_every_row_of_a_transaction() {
    let server = MariaDb::shared();
    let db = server.fresh_db("maxwell_xid");
    let start = server.gtid_pos();
    server.sql(&format!(
        "CREATE TABLE {db}.t (id INT PRIMARY KEY);
         BEGIN; INSERT INTO {db}.t VALUES (1), (2); UPDATE {db}.t SET id = 3 WHERE id = 1; COMMIT;
         INSERT INTO {db}.t SELECT seq FROM {db}.seq_100_to_10101;"
    ));
    let dump = |format| server.dump(&["--start", &start, "--include", &db, "--format", format]);
    let got: Vec<Maxwell> = parse(&dump("maxwell"));
    assert_eq!(got.len(), 3 + 10_002);
    let (small, large) = got.split_at(3);
    let xid = small[0].xid.expect("the first row has the xid");
    assert!(small.iter().all(|e| e.xid == Some(xid)), "one xid on every row");
    let commits: Vec<_> = got.iter().map(|e| e.commit == Some(true)).collect();
    assert_eq!(commits.iter().filter(|c| **c).count(), 2, "commit only on each transaction's last row");
    assert!(commits[2] && commits[got.len() - 1]);
    let (early, held) = large.split_at(2);
    assert!(early.iter().all(|e| e.xid.is_none()), "rows beyond the bound go out before the xid is known");
    let large_xid = held[0].xid.expect("the held rows have the xid");
    assert!(large_xid != xid && held.iter().all(|e| e.xid == Some(large_xid)));

    let native = ok_events(&dump("native"));
    let xids: Vec<_> = native[..3].iter().map(|e| e.xid).collect();
    assert_eq!(xids, [None, None, Some(xid)], "the native event names it on the commit row only");
}

/// Debezium's `source.snapshot` on reads, as Debezium 2.x/3.x marks them: in an initial snapshot
/// of three tables (chunks of 2; the last table's rows fill its chunks exactly) the first read
/// says `first`, the last `last`, each later table's first read `first_in_data_collection`, each
/// earlier table's last `last_in_data_collection`, the rest `true`. Reads of an incremental
/// snapshot say `incremental`, changes `false`.
#[test]
fn debezium_marks_the_first_and_last_reads_of_a_snapshot() {
    let (server, db, _) = written("debezium_marks", |db| {
        format!(
            "CREATE TABLE {db}.a (id INT PRIMARY KEY); INSERT INTO {db}.a VALUES (1), (2), (3), (4), (5);
             CREATE TABLE {db}.b (id INT PRIMARY KEY); INSERT INTO {db}.b VALUES (1);
             CREATE TABLE {db}.c (id INT PRIMARY KEY); INSERT INTO {db}.c VALUES (1), (2), (3), (4);
             CREATE TABLE {db}.signals (id VARCHAR(42) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT);"
        )
    });
    let marks = |events: &[Debezium]| -> Vec<String> {
        events
            .iter()
            .map(|e| format!("{}{} {}", e.source.table, e.after.as_ref().unwrap()["id"], e.source.snapshot))
            .collect()
    };
    let include = format!("{db}.?");
    let args = ["--snapshot", "initial", "--snapshot-chunk-size", "2", "--include", &include, "--format", "debezium"];
    let initial: Vec<Debezium> = parse(&server.dump(&args));
    assert_eq!(
        marks(&initial),
        [
            "a1 first",
            "a2 true",
            "a3 true",
            "a4 true",
            "a5 last_in_data_collection",
            "b1 last_in_data_collection",
            "c1 first_in_data_collection",
            "c2 true",
            "c3 true",
            "c4 last"
        ]
    );

    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let signals = format!("{db}.signals");
    let run = Stream::start(
        server,
        &position,
        dir.path(),
        0,
        &["--signal-table", &signals, "--include", &include, "--format", "debezium", "--snapshot-chunk-size", "2"],
    );
    run.wait_ready(&position);
    server.sql(&format!(
        "INSERT INTO {signals} VALUES ('s1', 'execute-snapshot', '{{\"data-collections\": [\"{db}.c\"]}}');
         UPDATE {db}.a SET id = 6 WHERE id = 5;"
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&run.stdout).unwrap().lines().count() < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = std::fs::read_to_string(&run.stdout).unwrap();
    assert!(run.stop().success());
    let got: Vec<Debezium> =
        out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let (reads, changes): (Vec<_>, Vec<_>) = got.into_iter().partition(|e| e.op == "r");
    assert_eq!(marks(&reads), ["c1 incremental", "c2 incremental", "c3 incremental", "c4 incremental"]);
    assert!(!changes.is_empty() && changes.iter().all(|e| e.source.snapshot == "false"), "{changes:?}");
}
