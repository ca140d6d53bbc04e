//! Reading from a live server: start positions, file/server equivalence, MINIMAL metadata.

use crate::util::{binlog_tail, in_db, ok_events, stderr, MariaDb};

#[test]
fn dump_file_matches_dump_url() {
    let server = MariaDb::shared();
    let db = server.fresh_db("file_vs_url");
    server.sql(&format!(
        "CREATE TABLE {db}.t (id INT PRIMARY KEY, v JSON, d DECIMAL(10,3));
         INSERT INTO {db}.t VALUES (1, '[1,2]', 1.5), (2, NULL, -2.25);
         UPDATE {db}.t SET d = d * 2;
         DELETE FROM {db}.t WHERE id = 1;
         FLUSH BINARY LOGS;
         INSERT INTO {db}.t VALUES (3, '{{}}', 0);"
    ));
    let from_url = in_db(ok_events(&server.dump(&["--start", "earliest"])), &db);
    let files = server.binlog_files();
    assert!(files.len() >= 2, "the test spans a binlog rotation");
    let out = binlog_tail().arg("dump").arg("--stdout").arg("--file").args(&files).output().unwrap();
    let from_files = in_db(ok_events(&out), &db);
    assert_eq!(from_url.len(), 6);
    assert_eq!(from_url, from_files);
    assert!(from_url[5].pos.starts_with("binlog.000002:"), "{}", from_url[5].pos);
}

#[test]
fn start_positions() {
    let server = MariaDb::shared();
    let db = server.fresh_db("start_pos");
    server.sql(&format!("CREATE TABLE {db}.t (id INT PRIMARY KEY); INSERT INTO {db}.t VALUES (1);"));
    let before_second = server.gtid_pos();
    server.sql(&format!("INSERT INTO {db}.t VALUES (2); INSERT INTO {db}.t VALUES (3);"));

    let ids = |args: &[&str]| -> Vec<i64> {
        in_db(ok_events(&server.dump(args)), &db)
            .iter()
            .map(|e| e.after.as_ref().unwrap()["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids(&["--start", &before_second]), [2, 3], "GTID start resumes after the set");
    assert_eq!(ids(&["--start", "earliest"]), [1, 2, 3]);
    assert!(ids(&["--start", "latest"]).is_empty());

    let all = in_db(ok_events(&server.dump(&["--start", "earliest"])), &db);
    let third = all.iter().find(|e| e.after.as_ref().unwrap()["id"] == 3).unwrap();
    // FILE:POS of the third row's GTID event: the transaction start right after row 2's commit.
    let second = all.iter().find(|e| e.after.as_ref().unwrap()["id"] == 2).unwrap();
    let third_file = third.pos.rsplit_once(':').unwrap().0;
    let gtid_events = server.sql(&format!("SHOW BINLOG EVENTS IN '{third_file}'"));
    let third_gtid_pos = gtid_events
        .lines()
        .filter(|l| l.contains("\tGtid\t"))
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|c| c[5].contains(&format!("GTID {}", third.gtid.as_deref().unwrap())))
        .map(|c| format!("{}:{}", c[0], c[1]))
        .expect("the GTID event of the third insert");
    assert_eq!(ids(&["--start", &third_gtid_pos]), [3]);
    assert_ne!(second.gtid, third.gtid);

    let bad = server.dump(&["--start", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"]);
    let err = crate::util::failure(&bad);
    assert!(err.contains("other server flavour"), "{err}");
}

#[test]
fn minimal_metadata_falls_back_to_information_schema() {
    let server = MariaDb::start(&["--binlog-row-metadata=MINIMAL"]);
    server.sql(
        "CREATE DATABASE m; CREATE TABLE m.t (id INT UNSIGNED PRIMARY KEY, size ENUM('s','m','l'), note VARCHAR(10) CHARACTER SET latin1);
         INSERT INTO m.t VALUES (4294967295, 'l', 'olé');",
    );
    let out = server.dump(&["--start", "earliest"]);
    let ev = in_db(ok_events(&out), "m");
    assert_eq!(ev.len(), 1);
    let after = ev[0].after.as_ref().unwrap();
    assert_eq!(after["id"], 4294967295u64);
    assert_eq!(after["size"], "l");
    assert_eq!(after["note"], "olé");
    assert_eq!(ev[0].pk.as_ref().unwrap()["id"], 4294967295u64);
    let err = stderr(&out);
    assert_eq!(err.matches("binlog_row_metadata=MINIMAL").count(), 1, "one warning per table: {err}");
    assert!(err.contains("information_schema"), "{err}");

    // Offline there is no information_schema: columns are named by position, and it says so.
    let files = server.binlog_files();
    let out = binlog_tail().args(["dump", "--stdout", "--file"]).args(&files).output().unwrap();
    let ev = in_db(ok_events(&out), "m");
    let after = ev[0].after.as_ref().unwrap();
    assert_eq!(after.keys().collect::<Vec<_>>(), ["@1", "@2", "@3"]);
    assert_eq!(after["@2"], 3, "ENUM index without its names");
    assert!(stderr(&out).contains("column names (columns named @1, @2, ... by position)"), "{}", stderr(&out));
}
