//! Binlog files on disk written by MariaDB: a file still being written is followed to its end.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use crate::util::{binlog_tail, line_channel, Event, MariaDb};

#[test]
fn follow_waits_for_the_rest_of_a_growing_file() {
    let server = MariaDb::start(&[]);
    server.sql(
        "CREATE DATABASE g; CREATE TABLE g.t (id INT PRIMARY KEY, s VARCHAR(100));
         INSERT INTO g.t VALUES (1, 'first');
         INSERT INTO g.t VALUES (2, 'second');",
    );
    let full = std::fs::read(server.binlog_files().last().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.000001");
    // Everything but the last 30 bytes: the file ends inside the last transaction's last event.
    let cut = full.len() - 30;
    std::fs::write(&path, &full[..cut]).unwrap();

    let mut child = binlog_tail()
        .args(["dump", "--stdout", "--follow", "--file"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = line_channel(child.stdout.take().unwrap());
    let first: Event = serde_json::from_str(&lines.next().expect("the first row")).unwrap();
    assert_eq!(first.after.unwrap()["id"], 1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "still waiting for the rest of the file");

    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&full[cut..]).unwrap();
    let second: Event = serde_json::from_str(&lines.next().expect("the second row once the file grew")).unwrap();
    assert_eq!(second.after.unwrap()["id"], 2);
    assert!(second.commit);
    child.kill().unwrap();
    let _ = child.wait();
}
