//! The sink crash tests' common run: the counter workload (`create_counter_tables`,
//! `counter_workload`) written while binlog-tail is SIGKILLed at random moments and the sink's
//! server goes away once under a running binlog-tail, then a last run; and the check of what a
//! reader holds once it drops what it already has. `SnapshotCrash`: the same for a snapshot's reads.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::MutexGuard;
use std::time::Duration;

use super::{counter_workload, create_counter_tables, heavy, write_in_batches, Event, MariaDb, Stream, XorShift};

pub struct Crash {
    pub server: MariaDb,
    pub dir: tempfile::TempDir,
    pub position: PathBuf,
    /// Transactions of the workload; SIGKILLed runs before the last.
    pub txs: usize,
    pub kills: usize,
    _heavy: MutexGuard<'static, ()>,
}

impl Crash {
    /// A MariaDB of its own with the counter tables; nothing runs yet.
    pub fn new(txs: usize, kills: usize) -> Crash {
        let _heavy = heavy();
        let server = MariaDb::start(&[]);
        create_counter_tables(&server);
        let dir = tempfile::tempdir().unwrap();
        let position = dir.path().join("position.json");
        Crash { server, dir, position, txs, kills, _heavy }
    }

    /// `sink` (the sink's options) with the position file and the workload's tables from the start.
    pub fn args(&self, sink: Vec<String>) -> Vec<String> {
        let mut args = sink;
        args.extend(["--position-file", self.position.to_str().unwrap()].map(String::from));
        args.extend(["--checkpoint-every", "50", "--include", "k", "--start", "earliest"].map(String::from));
        args
    }

    /// Writes the workload (`per_batch` transactions, then `pause`) while `kills` runs with `args`
    /// are each SIGKILLed 0.3 to 1 s in; in the middle one, `outage` takes the sink's server away
    /// and back once that run streams. The workload's second half starts as the outage does, so
    /// the run has rows to deliver while the server is away on any machine (the halves follow
    /// each other: the counters' updates stay in order). Returns when the workload is written.
    pub fn kill_runs(&self, args: &[String], per_batch: usize, pause: Duration, mut outage: impl FnMut(&Stream)) {
        let half = self.txs / 2;
        let write = |txs| write_in_batches(self.server.port, &counter_workload(txs), per_batch, pause);
        let mut first = Some(write(0..half));
        let mut second = None;
        let mut rng = XorShift(0x9e3779b97f4a7c15u64);
        for n in 0..self.kills {
            let mut run = Stream::spawn(&self.server, self.dir.path(), n, &as_strs(args));
            if n == self.kills / 2 {
                run.wait_streaming();
                first.take().expect("one outage").join().unwrap();
                second = Some(write(half..self.txs));
                outage(&run);
                assert!(run.child.try_wait().unwrap().is_none(), "binlog-tail exited in the outage: {}", run.log());
            }
            std::thread::sleep(Duration::from_millis(300 + rng.next() % 700));
            run.signal("-KILL");
            run.wait();
        }
        if let Some(first) = first {
            first.join().unwrap();
        }
        second.unwrap_or_else(|| write(half..self.txs)).join().unwrap();
    }

    /// The run after the SIGKILLed ones, left running to deliver the rest.
    pub fn last_run(&self, args: &[String]) -> Stream {
        Stream::spawn(&self.server, self.dir.path(), self.kills, &as_strs(args))
    }

    /// Every event of the workload: an insert and a counter update a transaction, and the three
    /// counter rows' own inserts.
    pub fn expected(&self) -> usize {
        3 + self.txs * 2
    }

    /// The stderr of every run started so far, in order.
    pub fn logs(&self) -> Vec<String> {
        logs(self.dir.path(), self.kills)
    }

    /// Checks what a reader holds: every inserted row once and none missing, every counter update
    /// in order per key. `context` (what was read, the last run's log) ends a failure's message.
    pub fn check(&self, held: &[Event], context: &str) {
        let mut inserted = HashSet::new();
        let mut counters: HashMap<&str, Vec<i64>> = HashMap::new();
        for e in held {
            let after = e.after.as_ref().unwrap_or_else(|| panic!("no after image: {e:?}"));
            match (e.op.as_str(), after["id"].as_i64().unwrap()) {
                ("insert", 0) => {}
                ("insert", id) => assert!(inserted.insert(id), "row {id} held twice"),
                ("update", _) => counters.entry(&e.table).or_default().push(after["v"].as_i64().unwrap()),
                (other, _) => panic!("unexpected {other}"),
            }
        }
        let missing: Vec<_> = (1..=self.txs as i64).filter(|id| !inserted.contains(id)).take(10).collect();
        assert!(missing.is_empty(), "rows missing, e.g. {missing:?}; {context}");
        for (table, values) in &counters {
            let t: usize = table[1..].parse().unwrap();
            let updates = (0..self.txs).filter(|i| i % 3 == t).count();
            assert_eq!(values.len(), updates, "{table}: counter updates missing or twice");
            assert!(values.windows(2).all(|w| w[0] < w[1]), "{table}: per-key order broken");
        }
    }
}

/// The `id` of a row image.
fn id(image: Option<&std::collections::BTreeMap<String, serde_json::Value>>) -> i64 {
    image.and_then(|i| i["id"].as_i64()).unwrap_or_else(|| panic!("no id: {image:?}"))
}

/// The stderr of runs 0 to `last` in `dir`, as far as they were started.
fn logs(dir: &std::path::Path, last: usize) -> Vec<String> {
    (0..=last).map_while(|n| std::fs::read_to_string(dir.join(format!("err.{n}.log"))).ok()).collect()
}

/// The first of `items` for each `key`, in order, and how many later ones repeated a key.
pub fn first_of_each<'a, T, K: Hash + Eq>(
    items: impl IntoIterator<Item = &'a T>,
    key: impl Fn(&T) -> K,
) -> (Vec<&'a T>, usize) {
    let mut seen = HashSet::new();
    let mut repeats = 0;
    let mut first = Vec::new();
    for item in items {
        if seen.insert(key(item)) {
            first.push(item);
        } else {
            repeats += 1;
        }
    }
    (first, repeats)
}

/// Owned arguments as the `&str`s `Stream` takes.
pub fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The snapshot crash test's run: a table `s.t` of `rows` rows read by `--snapshot initial` in
/// chunks of 100 while binlog-tail is SIGKILLed `kills` times mid-snapshot, each time once the
/// saved position has come further into the table; then a last run that finishes the snapshot,
/// and later changes (`CHANGES`).
pub struct SnapshotCrash {
    pub server: MariaDb,
    pub dir: tempfile::TempDir,
    pub position: PathBuf,
    pub rows: i64,
    pub kills: usize,
    /// Rows are updated, deleted and inserted while the killed runs snapshot (`with_writes`).
    writes: bool,
    _heavy: MutexGuard<'static, ()>,
}

/// The changes written after the snapshot: rows 1 to 5 updated, then one row inserted.
const CHANGES: usize = 6;

impl SnapshotCrash {
    pub fn new(rows: i64, kills: usize) -> SnapshotCrash {
        let _heavy = heavy();
        let server = MariaDb::start(&[]);
        server.sql(&format!(
            "CREATE DATABASE s; CREATE TABLE s.t (id INT PRIMARY KEY, v INT); INSERT INTO s.t SELECT seq, 0 FROM s.seq_1_to_{rows};"
        ));
        let dir = tempfile::tempdir().unwrap();
        let position = dir.path().join("position.json");
        SnapshotCrash { server, dir, position, rows, kills, writes: false, _heavy }
    }

    /// While the killed runs snapshot, 600 transactions update, delete and insert rows all over
    /// the table. Reads of rows changed meanwhile may then come twice (`sink::Reads`), so `run`
    /// checks that replaying what the target holds in order gives the table, not that each row
    /// is read once.
    pub fn with_writes(self) -> SnapshotCrash {
        SnapshotCrash { writes: true, ..self }
    }

    /// The writes of `with_writes`: transaction i updates row k, deletes it (every 10th) or
    /// inserts a row past the table (every 7th).
    fn workload(&self) -> String {
        let mut sql = String::new();
        for i in 0..600 {
            let k = 1 + (i * 7919) % self.rows;
            let statement = match i {
                _ if i % 10 == 3 => format!("DELETE FROM s.t WHERE id = {k}"),
                _ if i % 7 == 0 => format!("INSERT INTO s.t VALUES ({}, {i})", self.rows + 100 + i),
                _ => format!("UPDATE s.t SET v = {i} WHERE id = {k}"),
            };
            sql.push_str(&format!("START TRANSACTION;\n{statement};\nCOMMIT;\n"));
        }
        sql
    }

    /// The whole test with `sink` (the sink's options): the SIGKILLed runs, the last run, then
    /// `read` reads what the target holds until the condition it is given holds, and that is
    /// checked (`check`).
    pub fn run(&self, sink: Vec<String>, read: impl FnOnce(&dyn Fn(&[Event]) -> bool) -> Vec<Event>) {
        let args = self.args(sink);
        let writer =
            self.writes.then(|| write_in_batches(self.server.port, &self.workload(), 10, Duration::from_millis(30)));
        self.kill_runs(&args);
        if let Some(writer) = writer {
            writer.join().unwrap();
        }
        let last = self.last_run(&args);
        // The last change comes after everything else.
        let last_row = self.rows + 1;
        let held = read(&|held| held.iter().any(|e| e.op == "insert" && id(e.after.as_ref()) == last_row));
        let log = last.log();
        assert!(last.stop().success(), "{log}");
        let context = format!("last run: {log}");
        if self.writes {
            self.check_replay(&held, &context);
        } else {
            self.check(&held, &context);
        }
    }

    /// Replaying `held` in order (a read or insert sets a row, an update too, a delete removes
    /// it) gives the table as it is: nothing lost.
    fn check_replay(&self, held: &[Event], context: &str) {
        let mut replayed = std::collections::BTreeMap::new();
        let mut reads: HashMap<i64, usize> = HashMap::new();
        for e in held {
            let v = |image: &Option<std::collections::BTreeMap<String, serde_json::Value>>| {
                image.as_ref().unwrap()["v"].as_i64()
            };
            match e.op.as_str() {
                "delete" => drop(replayed.remove(&id(e.before.as_ref()))),
                op => {
                    *reads.entry(id(e.after.as_ref())).or_default() += usize::from(op == "read");
                    replayed.insert(id(e.after.as_ref()), v(&e.after));
                }
            }
        }
        let table: std::collections::BTreeMap<i64, Option<i64>> = self
            .server
            .sql("SELECT id, v FROM s.t")
            .lines()
            .map(|l| {
                let (id, v) = l.split_once('\t').unwrap();
                (id.parse().unwrap(), v.parse().ok())
            })
            .collect();
        let differ: Vec<_> = table.iter().filter(|(k, v)| replayed.get(*k) != Some(*v)).map(|(k, _)| k).collect();
        let extra: Vec<_> = replayed.keys().filter(|k| !table.contains_key(k)).collect();
        let twice = reads.values().filter(|&&n| n > 1).count();
        eprintln!(
            "snapshot crash test with writes: {} rows, {} SIGKILLs mid-snapshot, 600 transactions meanwhile: {} held, {} rows differ, {twice} rows read more than once",
            self.rows,
            self.kills,
            held.len(),
            differ.len()
        );
        assert!(
            differ.is_empty() && extra.is_empty(),
            "replayed, rows differ from the table, e.g. {:?}, {:?}; {context}",
            &differ[..differ.len().min(10)],
            &extra[..extra.len().min(10)]
        );
    }

    /// `sink` (the sink's options) with the position file and the snapshot's options.
    fn args(&self, sink: Vec<String>) -> Vec<String> {
        let mut args = sink;
        args.extend(["--position-file", self.position.to_str().unwrap(), "--include", "s"].map(String::from));
        args.extend(
            ["--snapshot", "initial", "--snapshot-chunk-size", "100", "--snapshot-parallelism", "2"].map(String::from),
        );
        // The position saved every 10 ms, so a kill's share is seen while the run still reads
        // (by default it is saved once a second: the whole table may be read by then).
        args.extend(["--checkpoint-interval", "0.01"].map(String::from));
        args
    }

    /// The key up to which the saved position says the snapshot has come (0 before the first
    /// chunk; None once it is complete).
    fn saved_progress(&self) -> Option<i64> {
        let Ok(text) = std::fs::read_to_string(&self.position) else { return Some(0) };
        let pos: serde_json::Value = serde_json::from_str(&text).unwrap();
        let snapshot = &pos["snapshot"];
        if snapshot["pending"].as_array().is_some_and(Vec::is_empty) {
            return None;
        }
        Some(snapshot["after"][0]["int"].as_i64().unwrap_or(0))
    }

    /// Run n is SIGKILLed once its saved position moved on from where it resumed, so each kill
    /// hits a running snapshot with chunks in flight and each run resumes further on. (Not at
    /// fixed shares of the table: a sink acknowledges reads in batches, and the batch that
    /// passes a share may be the table's last one.) The position is polled every few
    /// milliseconds: a batch may take only tens of them.
    fn kill_runs(&self, args: &[String]) {
        for n in 0..self.kills {
            let resumed_at = self.saved_progress().expect("the snapshot is not complete yet");
            let mut run = Stream::spawn(&self.server, self.dir.path(), n, &as_strs(args));
            super::poll_until("the snapshot moves on", Duration::from_millis(2), || {
                let progress = self.saved_progress();
                assert!(progress.is_some(), "the snapshot completed before kill {n}: {}", run.log());
                progress.unwrap() > resumed_at
            });
            run.signal("-KILL");
            run.wait();
        }
    }

    /// The run after the SIGKILLed ones: once its snapshot completes, the later changes are written.
    fn last_run(&self, args: &[String]) -> Stream {
        let run = Stream::spawn(&self.server, self.dir.path(), self.kills, &as_strs(args));
        run.wait_log("snapshot complete");
        let rows = self.rows;
        self.server.sql(&format!("UPDATE s.t SET v = 1 WHERE id <= 5; INSERT INTO s.t VALUES ({}, 1);", rows + 1));
        run
    }

    /// Every row read exactly once, then the changes once each, in order. `context` ends a
    /// failure's message.
    fn check(&self, held: &[Event], context: &str) {
        let mut reads: HashMap<i64, usize> = HashMap::new();
        let mut changes = Vec::new();
        for e in held {
            let id = e.after.as_ref().unwrap_or_else(|| panic!("no after image: {e:?}"))["id"].as_i64().unwrap();
            match e.op.as_str() {
                "read" => *reads.entry(id).or_default() += 1,
                _ => changes.push((e.op.clone(), id)),
            }
        }
        let twice = reads.values().filter(|&&n| n > 1).count();
        let skips = logs(self.dir.path(), self.kills)[1..]
            .iter()
            .filter(|l| l.contains("replayed snapshot reads the target holds were skipped"))
            .count();
        let missing: Vec<_> = (1..=self.rows).filter(|id| !reads.contains_key(id)).take(10).collect();
        eprintln!(
            "snapshot crash test: {} rows, {} SIGKILLs mid-snapshot, {skips} restarts skipped replayed reads: {} held, {} rows missing, {twice} rows read more than once",
            self.rows,
            self.kills,
            held.len(),
            (1..=self.rows).filter(|id| !reads.contains_key(id)).count()
        );
        assert!(missing.is_empty(), "rows never read, e.g. {missing:?}; {context}");
        assert_eq!(twice, 0, "rows read more than once; {context}");
        let expected: Vec<_> =
            (1..=5).map(|id| ("update".to_string(), id)).chain([("insert".into(), self.rows + 1)]).collect();
        assert_eq!(changes, expected, "the later changes, once each; {context}");
        assert_eq!(held.len(), self.rows as usize + CHANGES);
        assert!(skips > 0, "no restart skipped a replayed read: the kills tested nothing; {context}");
    }
}
