//! Transaction structure in the output: row indexes, commit flags, XIDs, GTIDs, keys.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use std::time::Duration;

use crate::util::{in_db, ok_events, stderr, MariaDb};

#[test]
fn multi_statement_transaction_across_tables() {
    let server = MariaDb::shared();
    let db = server.fresh_db("multi_tx");
    server.sql(&format!(
        "CREATE TABLE {db}.a (id INT PRIMARY KEY, v VARCHAR(10));
         CREATE TABLE {db}.nokey (x INT, y INT);
         CREATE TABLE {db}.composite (k1 INT, k2 VARCHAR(5), v INT, PRIMARY KEY (k2, k1));"
    ));
    let start = server.gtid_pos();
    server.sql(&format!(
        "START TRANSACTION;
         INSERT INTO {db}.a VALUES (1, 'one'), (2, 'two');
         INSERT INTO {db}.nokey VALUES (7, 8);
         UPDATE {db}.a SET v = 'uno' WHERE id = 1;
         INSERT INTO {db}.composite VALUES (5, 'x', 50);
         DELETE FROM {db}.a WHERE id = 2;
         COMMIT;
         INSERT INTO {db}.nokey VALUES (9, 9);"
    ));
    let ev = in_db(ok_events(&server.dump(&["--start", &start])), &db);
    let summary: Vec<(&str, &str, u64, bool)> =
        ev.iter().map(|e| (e.op.as_str(), e.table.as_str(), e.row, e.commit)).collect();
    assert_eq!(
        summary,
        [
            ("insert", "a", 0, false),
            ("insert", "a", 1, false),
            ("insert", "nokey", 2, false),
            ("update", "a", 3, false),
            ("insert", "composite", 4, false),
            ("delete", "a", 5, true),
            ("insert", "nokey", 0, true),
        ]
    );
    let tx_gtid = ev[0].gtid.clone().unwrap();
    assert!(ev[..6].iter().all(|e| e.gtid.as_deref() == Some(&tx_gtid)));
    assert_ne!(ev[6].gtid.as_deref(), Some(tx_gtid.as_str()));
    assert!(ev[..5].iter().all(|e| e.xid.is_none()));
    assert!(ev[5].xid.is_some() && ev[6].xid.is_some() && ev[5].xid != ev[6].xid);
    assert_eq!(ev[2].pk, None, "a table without a primary key has pk null");
    let pk = ev[4].pk.as_ref().unwrap();
    assert_eq!(pk.keys().collect::<Vec<_>>(), ["k1", "k2"]);
    assert_eq!((pk["k1"].as_i64(), pk["k2"].as_str()), (Some(5), Some("x")));
    assert_eq!(ev[3].before.as_ref().unwrap()["v"], "one");
    assert_eq!(ev[3].after.as_ref().unwrap()["v"], "uno");
    assert_eq!(ev[5].pk.as_ref().unwrap()["id"], 2, "delete keys come from the before image");
    // Positions are distinct event offsets in the server's binlog, in order.
    let offsets: Vec<u64> = ev.iter().map(|e| e.pos.rsplit(':').next().unwrap().parse().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
}

#[test]
fn limit_stops_after_n_events() {
    let server = MariaDb::shared();
    let db = server.fresh_db("limit_n");
    let start = server.gtid_pos();
    server.sql(&format!(
        "CREATE TABLE {db}.t (id INT PRIMARY KEY);
         INSERT INTO {db}.t VALUES (1), (2), (3), (4), (5);"
    ));
    let ev = ok_events(&server.dump(&["--start", &start, "--include", &db, "--limit", "3"]));
    assert_eq!(ev.len(), 3);
    let ids: Vec<i64> = ev.iter().map(|e| e.after.as_ref().unwrap()["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert!(!ev[2].commit, "row 3 of 5 is not the transaction's last");
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let server = MariaDb::shared();
    let db = server.fresh_db("closed_pipe");
    let start = server.gtid_pos();
    server.sql(&format!(
        "USE {db}; CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, pad CHAR(200) DEFAULT 'x');
         INSERT INTO t (id) SELECT seq FROM seq_1_to_20000;"
    ));
    let mut child = crate::util::binlog_tail()
        .args(["dump", "--url", &server.url(), "--stdout", "--start", &start])
        .env("MYSQL_PWD", "replpass")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("{\"op\":"), "{first}");
    // The reader is dropped here, like `| head -1` exiting.
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    assert!(!stderr(&out).contains("error"), "{}", stderr(&out));
}

#[test]
fn follow_keeps_tailing_new_commits() {
    let server = MariaDb::shared();
    let db = server.fresh_db("follow_tail");
    server.sql(&format!("CREATE TABLE {db}.t (id INT PRIMARY KEY);"));
    let mut child = crate::util::binlog_tail()
        .args(["dump", "--url", &server.url(), "--stdout", "--start", "latest", "--follow"])
        .env("MYSQL_PWD", "replpass")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = crate::util::line_channel(child.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    server.sql(&format!("INSERT INTO {db}.t VALUES (42);"));
    let found = lines.find(|l| l.contains(&format!("\"db\":\"{db}\"")));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let line = found.unwrap_or_else(|| panic!("the new row did not arrive while following: {}", stderr(&out)));
    let ev: crate::util::Event = serde_json::from_str(&line).unwrap();
    assert_eq!(ev.after.unwrap()["id"], 42);
    assert!(ev.commit);
}
