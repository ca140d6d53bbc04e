//! What gets emitted: table/operation/column filters, schema changes, DDL events, the outbox.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::util::{binlog_tail, in_db, ok_events, stderr, wait_for_rows, Event, MariaDb, Stream};

/// A DDL event exactly as documented.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DdlEvent {
    op: String,
    db: String,
    ts: u64,
    gtid: Option<String>,
    pos: String,
    sql: String,
}

/// An outbox message exactly as documented.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxMessage {
    topic: String,
    key: Option<String>,
    headers: BTreeMap<String, String>,
    value: Value,
}

fn lines(out: &std::process::Output) -> Vec<String> {
    assert!(out.status.success(), "{}", stderr(out));
    String::from_utf8(out.stdout.clone()).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn table_operation_and_column_filters() {
    let server = MariaDb::start(&[]);
    server.sql(
        "CREATE DATABASE shop; CREATE DATABASE crm; CREATE DATABASE other;
         CREATE TABLE shop.orders (id INT PRIMARY KEY, total INT);
         CREATE TABLE shop.audit_orders (id INT PRIMARY KEY);
         CREATE TABLE shop.users (id INT PRIMARY KEY, email VARCHAR(50), password_hash VARCHAR(64));
         CREATE TABLE crm.contacts (id INT PRIMARY KEY);
         CREATE TABLE other.noise (id INT PRIMARY KEY, pad TEXT);
         INSERT INTO other.noise SELECT seq, REPEAT('x', 500) FROM other.seq_1_to_2000;
         INSERT INTO shop.orders VALUES (1, 10), (2, 20);
         UPDATE shop.orders SET total = 11 WHERE id = 1;
         DELETE FROM shop.orders WHERE id = 2;
         INSERT INTO shop.audit_orders VALUES (1);
         INSERT INTO shop.users VALUES (1, 'a@example.com', 'secret-hash');
         INSERT INTO crm.contacts VALUES (7);",
    );
    let filters = [
        "--include",
        "shop.*",
        "--include",
        "crm",
        "--exclude",
        "*.audit_*",
        "--ops",
        "insert,update",
        "--drop-column",
        "shop.users.password_*",
    ];
    let out = server.dump(&[&["--start", "earliest"][..], &filters].concat());
    let ev = ok_events(&out);
    let summary: Vec<(String, String, String)> =
        ev.iter().map(|e| (e.db.clone(), e.table.clone(), e.op.clone())).collect();
    let expected = [
        ("shop", "orders", "insert"),
        ("shop", "orders", "insert"),
        ("shop", "orders", "update"),
        ("shop", "users", "insert"),
        ("crm", "contacts", "insert"),
    ];
    assert_eq!(summary, expected.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())));
    let user = ev[3].after.as_ref().unwrap();
    assert_eq!(user.keys().collect::<Vec<_>>(), ["email", "id"], "the secret column never leaves");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret-hash"));
    // The 2000 noise rows and the excluded operations were skipped without decoding.
    let log = stderr(&out);
    assert!(log.contains("5 change events decoded"), "{log}");
    let skipped: u64 = log.split(" rows events (").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(skipped >= 3, "noise, audit and delete rows events skipped undecoded: {log}");

    // Files and server give the same filtered events.
    let files = server.binlog_files();
    let from_files =
        binlog_tail().args(["dump", "--stdout"]).args(filters).arg("--file").args(&files).output().unwrap();
    assert_eq!(ok_events(&from_files), ev);
}

#[test]
fn positions_advance_past_filtered_transactions() {
    let server = MariaDb::start(&[]);
    server.sql("CREATE DATABASE a; CREATE TABLE a.t (id INT PRIMARY KEY); CREATE DATABASE b; CREATE TABLE b.t (id INT PRIMARY KEY);");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let run = Stream::start(&server, &position, dir.path(), 0, &["--include", "a", "--checkpoint-interval", "0.1"]);
    std::thread::sleep(Duration::from_millis(500));
    let mut sql = String::new();
    for i in 0..200 {
        sql.push_str(&format!("INSERT INTO b.t VALUES ({i});\n"));
    }
    server.sql(&sql);
    let head = server.gtid_pos();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let saved: Value =
            serde_json::from_str(&std::fs::read_to_string(&position).unwrap_or_default()).unwrap_or(Value::Null);
        if saved["gtid_set"] == json!(head) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "position did not pass the filtered transactions: {saved}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(run.stop().success());
    assert!(std::fs::read_to_string(dir.path().join("out.0.jsonl")).unwrap().is_empty());
}

#[test]
fn alter_table_mid_stream_with_full_metadata() {
    let server = MariaDb::shared();
    let db = server.fresh_db("alter_full");
    let start = server.gtid_pos();
    server.sql(&format!(
        "CREATE TABLE {db}.t (id INT PRIMARY KEY, a VARCHAR(10), b INT);
         INSERT INTO {db}.t VALUES (1, 'one', 10);
         ALTER TABLE {db}.t ADD COLUMN c DATE AFTER a;
         INSERT INTO {db}.t VALUES (2, 'two', '2024-01-02', 20);
         ALTER TABLE {db}.t DROP COLUMN a;
         INSERT INTO {db}.t VALUES (3, '2024-01-03', 30);
         ALTER TABLE {db}.t RENAME COLUMN b TO bee;
         INSERT INTO {db}.t VALUES (4, '2024-01-04', 40);"
    ));
    // Decoded after all the changes: every row still carries the names it was written with.
    let ev = in_db(ok_events(&server.dump(&["--start", &start])), &db);
    let rows: Vec<Value> = ev.iter().map(|e| serde_json::to_value(e.after.as_ref().unwrap()).unwrap()).collect();
    assert_eq!(
        rows,
        [
            json!({"id": 1, "a": "one", "b": 10}),
            json!({"id": 2, "a": "two", "c": "2024-01-02", "b": 20}),
            json!({"id": 3, "c": "2024-01-03", "b": 30}),
            json!({"id": 4, "c": "2024-01-04", "bee": 40}),
        ]
    );
}

#[test]
fn alter_table_with_minimal_metadata_stops_instead_of_misnaming() {
    let server = MariaDb::start(&["--binlog-row-metadata=MINIMAL"]);
    server.sql(
        "CREATE DATABASE m; CREATE TABLE m.t (id INT PRIMARY KEY, v INT);
         INSERT INTO m.t VALUES (1, 10);
         ALTER TABLE m.t ADD COLUMN w INT;
         INSERT INTO m.t VALUES (2, 20, 200);",
    );
    // Read afterwards, the first row's table map (2 columns) no longer fits information_schema (3).
    let out = server.dump(&["--start", "earliest"]);
    let err = crate::util::failure(&out);
    assert!(err.contains("`m`.`t`") && err.contains("binlog_row_metadata=FULL"), "{err}");
    assert!(err.contains("at binlog.000001:"), "the error names the position: {err}");

    let other = MariaDb::start(&["--binlog-row-metadata=MINIMAL"]);
    other.sql(
        "CREATE DATABASE m; CREATE TABLE m.t (id INT PRIMARY KEY, v INT);
         INSERT INTO m.t VALUES (1, 10);
         ALTER TABLE m.t MODIFY v VARCHAR(10);",
    );
    let err = crate::util::failure(&other.dump(&["--start", "earliest"]));
    assert!(err.contains("changed since these rows were written") && err.contains("varchar"), "{err}");
}

#[test]
fn minimal_metadata_follows_ddl_while_tailing() {
    let server = MariaDb::start(&["--binlog-row-metadata=MINIMAL"]);
    server.sql("CREATE DATABASE m; CREATE TABLE m.t (id INT PRIMARY KEY, v INT);");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let run = Stream::start(&server, &position, dir.path(), 0, &[]);
    let files = vec![run.stdout.clone()];
    std::thread::sleep(Duration::from_millis(500));
    server.sql("INSERT INTO m.t VALUES (1, 10);");
    wait_for_rows(&files, "m", 1);
    server.sql("ALTER TABLE m.t CHANGE v renamed INT; INSERT INTO m.t VALUES (2, 20);");
    let ev = wait_for_rows(&files, "m", 2);
    assert!(run.stop().success());
    assert_eq!(serde_json::to_value(ev[0].after.as_ref().unwrap()).unwrap(), json!({"id": 1, "v": 10}));
    assert_eq!(serde_json::to_value(ev[1].after.as_ref().unwrap()).unwrap(), json!({"id": 2, "renamed": 20}));
}

#[test]
fn ddl_and_truncate_events() {
    let server = MariaDb::shared();
    let db = server.fresh_db("ddl_ev");
    let start = server.gtid_pos();
    server.sql(&format!(
        "USE {db}; CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1); TRUNCATE TABLE t; ALTER TABLE t ADD COLUMN x INT;"
    ));
    let out = server.dump(&["--start", &start, "--emit-ddl", "--include", &db]);
    let mut ddl = Vec::new();
    let mut changes = Vec::new();
    for line in lines(&out) {
        if line.starts_with("{\"op\":\"ddl\"") {
            ddl.push(serde_json::from_str::<DdlEvent>(&line).unwrap());
        } else {
            changes.push(serde_json::from_str::<Event>(&line).unwrap());
        }
    }
    let sql: Vec<&str> = ddl.iter().map(|d| d.sql.as_str()).collect();
    assert_eq!(sql, ["CREATE TABLE t (id INT PRIMARY KEY)", "TRUNCATE TABLE t", "ALTER TABLE t ADD COLUMN x INT"]);
    assert!(ddl.iter().all(|d| d.op == "ddl"
        && d.db == db
        && d.gtid.is_some()
        && d.ts > 0
        && d.pos.starts_with("binlog.")));
    assert_eq!(changes.len(), 1);
    // Off by default.
    let plain = lines(&server.dump(&["--start", &start, "--include", &db]));
    assert_eq!(plain.len(), 1);
}

#[test]
fn outbox_rows_become_routed_messages() {
    let server = MariaDb::shared();
    let db = server.fresh_db("outbox_svc");
    let start = server.gtid_pos();
    server.sql(&format!(
        "USE {db};
         CREATE TABLE orders (id INT PRIMARY KEY, total DECIMAL(10,2));
         CREATE TABLE outbox (id CHAR(36) PRIMARY KEY, aggregate_type VARCHAR(50), aggregate_id VARCHAR(50), type VARCHAR(50), payload JSON);
         START TRANSACTION;
         INSERT INTO orders VALUES (17, 99.50);
         INSERT INTO outbox VALUES ('5f1c0a4e-0000-4000-8000-000000000001', 'Order', '17', 'OrderCreated', '{{\"id\": 17, \"total\": \"99.50\"}}');
         DELETE FROM outbox WHERE id = '5f1c0a4e-0000-4000-8000-000000000001';
         COMMIT;
         INSERT INTO outbox VALUES ('5f1c0a4e-0000-4000-8000-000000000002', 'Customer', 'c-9', 'CustomerMoved', '{{\"city\": \"Zürich\"}}');
         UPDATE outbox SET type = 'Changed';"
    ));
    let out = server.dump(&["--start", &start, "--include", &db, "--outbox", &format!("{db}.outbox")]);
    let mut messages = Vec::new();
    let mut changes = Vec::new();
    for line in lines(&out) {
        if line.starts_with("{\"topic\":") {
            messages.push(serde_json::from_str::<OutboxMessage>(&line).unwrap());
        } else {
            changes.push(serde_json::from_str::<Event>(&line).unwrap());
        }
    }
    assert_eq!(messages.len(), 2, "one message per inserted outbox row; deletes and updates ignored");
    assert_eq!(messages[0].topic, "outbox.event.Order");
    assert_eq!(messages[0].key.as_deref(), Some("17"));
    assert_eq!(messages[0].headers["id"], "5f1c0a4e-0000-4000-8000-000000000001");
    assert_eq!(messages[0].headers["type"], "OrderCreated");
    assert_eq!(messages[0].value, json!({"id": 17, "total": "99.50"}), "the payload as stored, not wrapped");
    assert_eq!(messages[1].topic, "outbox.event.Customer");
    assert_eq!(messages[1].value, json!({"city": "Zürich"}));
    assert_eq!(changes.len(), 1, "the orders row in the same transaction is a normal change event");
    assert_eq!(changes[0].table, "orders");
    assert!(changes[0].commit, "the outbox rows do not change where the transaction ends");
}
