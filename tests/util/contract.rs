//! The JSON event contract as a strict struct, and reading events from stdout and files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;

use serde::Deserialize;
use serde_json::Value;

/// One change event exactly as documented; unknown fields fail the test.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub op: String,
    pub db: String,
    pub table: String,
    pub ts: u64,
    pub gtid: Option<String>,
    pub pos: String,
    pub xid: Option<u64>,
    pub row: u64,
    pub commit: bool,
    pub pk: Option<BTreeMap<String, Value>>,
    pub before: Option<BTreeMap<String, Value>>,
    pub after: Option<BTreeMap<String, Value>>,
}

/// Parses stdout as JSON lines into strict events; panics with the offending line otherwise.
pub fn events(out: &Output) -> Vec<Event> {
    let stdout = String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8");
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad event line ({e}): {line}")))
        .collect()
}

/// Events of one database only (tests share a server).
pub fn in_db(events: Vec<Event>, db: &str) -> Vec<Event> {
    events.into_iter().filter(|e| e.db == db).collect()
}

/// Every event line in the files; a torn last line (SIGKILL mid-write) is not an event.
pub fn read_events(files: &[PathBuf]) -> Vec<Event> {
    let mut all = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines() {
            if let Ok(e) = serde_json::from_str::<Event>(line) {
                all.push(e);
            } else {
                assert!(!text.ends_with('\n') && text.ends_with(line), "bad line in {}: {line}", f.display());
            }
        }
    }
    all
}

/// The identity of an inserted row: (table, primary key).
pub fn row_key(e: &Event) -> (String, String) {
    (e.table.clone(), serde_json::to_string(&e.pk).unwrap())
}

/// Waits until `files` hold at least `n` distinct rows of `db`; returns all its events.
pub fn wait_for_rows(files: &[PathBuf], db: &str, n: usize) -> Vec<Event> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let ev = in_db(read_events(files), db);
        let distinct: std::collections::HashSet<_> = ev.iter().map(row_key).collect();
        if distinct.len() >= n || std::time::Instant::now() > deadline {
            return ev;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
