//! The read-only chunk window for MySQL: DBLog's window, bounded by the server's executed GTID
//! set read before and after the chunk (`low`, `high` = `@@global.gtid_executed`) instead of by
//! watermark rows written to the source, so a snapshot needs no write access (what Debezium's
//! read-only incremental snapshots do).
//!
//! The argument, and what it relies on:
//! - MySQL adds a transaction's GTID to `gtid_executed` only after the storage engine committed
//!   it. So every transaction in `low` is visible to the chunk's read, which starts after `low`
//!   was read; a transaction not in `low` may or may not be.
//! - The window therefore opens at the first streamed transaction that is *not in `low`*, not at
//!   a binlog position: MySQL writes a transaction to the binlog before it commits in the
//!   engine, so a position taken at `low` can lie after transactions the read does not see. From
//!   the window's opening on, every key a streamed change touches leaves the chunk (its change
//!   events carry it, in order).
//! - The chunk is emitted when everything in `high` has streamed. Every transaction before that
//!   point and before the window is in `low` (so visible to the read, and the chunk's row is at
//!   least as new); every one inside the window dropped its keys. A transaction visible to the
//!   read but missing from `high` (committed, GTID not yet added) can only make a chunk row
//!   *newer* than its place; its own change event follows with the same values. So a read event
//!   never overwrites a newer change.
//! - One precondition: when the window starts, everything the stream has already delivered must
//!   be in `low` (the replication stream can deliver a transaction before its GTID reaches
//!   `gtid_executed`). `GtidWindow::new` refuses otherwise; `ChunkWindow::begin` reads `low`
//!   again a moment later until it holds (the stream does not move meanwhile).
//! - The stream must know every transaction it stands after (its executed set seeded from the
//!   server or the binlog's `Previous_gtids`), and every GTID in `high` must reach the binlog,
//!   else `high` is never reached: a chunk that waits a minute after its read names the GTIDs it
//!   waits for. A stream that has no set yet has executed nothing (no GTID transactions).
//! - The window sees the transactions that have change events (the decoder drops the rest): a
//!   transaction without changes has no key to drop, and a window that opens later than the
//!   first transaction not in `low` only keeps keys whose changes were in `low`, which the read
//!   saw. A table without a primary key is the exception: its changes from the window's start
//!   on are emitted, never held back (see `Snapshot::holds_back`), so all of them leave the read,
//!   even those in `low` (the read would repeat them).
//! - The window is a place in the stream, not a time: the stream waits for the chunk's read
//!   (at most one chunk's read, as with the consistent method), then goes on until `high` is
//!   streamed; nothing is written to the server.
//! - Without GTIDs (`gtid_mode=OFF`) there is nothing to bound the window with: such servers use
//!   the watermark method, which needs a writable signal table.
//!
//! MySQL cannot run on the project's machines: the logic is generic over the executed set and
//! checked by a simulation of random interleavings of binlog writes, engine commits, GTID
//! updates, reads and stream positions (the tests below), and `ChunkWindow` is fed the changes
//! and GTIDs of a binlog written by a real MySQL server (tests/snapshot.rs).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tokio::sync::oneshot;

use crate::event::Change;
use crate::gtid::{Gtid, GtidSet, MySqlGtidSet};
use crate::schema::{RowImage, Table};
use crate::source::connection::connect;

/// An executed-transactions set, as the window needs it.
pub trait Executed {
    type Id;
    fn contains(&self, id: &Self::Id) -> bool;
    fn is_subset(&self, other: &Self) -> bool;
}

impl Executed for MySqlGtidSet {
    type Id = Gtid;

    fn contains(&self, gtid: &Gtid) -> bool {
        match gtid {
            Gtid::MySql { sid, tag, gno } => self.contains_gtid(*sid, tag, *gno),
            Gtid::MariaDb { .. } => false,
        }
    }

    fn is_subset(&self, other: &Self) -> bool {
        MySqlGtidSet::is_subset(self, other)
    }
}

impl Executed for BTreeSet<u64> {
    type Id = u64;

    fn contains(&self, id: &u64) -> bool {
        BTreeSet::contains(self, id)
    }

    fn is_subset(&self, other: &Self) -> bool {
        BTreeSet::is_subset(self, other)
    }
}

/// The stream delivered a transaction whose GTID is not yet in `low`: read `low` again.
#[derive(Debug, PartialEq, Eq)]
pub struct NotYetExecuted;

/// Where one chunk belongs in the stream.
#[derive(Debug)]
pub struct GtidWindow<S> {
    low: S,
    /// Read after the chunk; None while it is being read.
    high: Option<S>,
    open: bool,
}

impl<S: Executed> GtidWindow<S> {
    /// The window of a chunk whose read starts after `low` was read, while the stream had
    /// delivered `streamed`.
    pub fn new(low: S, streamed: &S) -> Result<Self, NotYetExecuted> {
        if !streamed.is_subset(&low) {
            return Err(NotYetExecuted);
        }
        Ok(GtidWindow { low, high: None, open: false })
    }

    /// A streamed transaction (None: one without a GTID, taken as not in `low`): true if its
    /// changes fall inside the window (their keys leave the chunk).
    pub fn transaction(&mut self, id: Option<&S::Id>) -> bool {
        self.open |= id.is_none_or(|id| !self.low.contains(id));
        self.open
    }

    /// The chunk was read; `high` was read after it.
    pub fn read(&mut self, high: S) {
        self.high = Some(high);
    }

    /// True once the chunk was read and the stream has delivered everything in `high`: the
    /// chunk's rows (less the keys the window dropped) are emitted here.
    pub fn closed(&self, streamed: &S) -> bool {
        self.high.as_ref().is_some_and(|high| high.is_subset(streamed))
    }
}

/// The gtid-window method's part of the snapshot's schedule for one chunk in flight (public for
/// the tests that feed it a MySQL binlog).
pub struct ChunkWindow {
    window: GtidWindow<MySqlGtidSet>,
    /// `high`, sent by the read when it is done.
    high: oneshot::Receiver<MySqlGtidSet>,
    /// The transaction whose changes were seen last (its changes share one text).
    seen: Option<Arc<str>>,
    /// The images of the chunk table's changes inside the window: their keys leave the chunk.
    pub changed: Vec<(Arc<Table>, RowImage)>,
    /// When `high` arrived, until a stall was reported.
    waiting_since: Option<Instant>,
}

/// How long a read chunk waits for the stream to deliver `high` before a warning says so.
const STALL: Duration = Duration::from_secs(60);

/// How long `begin` waits for `low` to include what the stream delivered.
const LOW_ATTEMPTS: u32 = 1000;

impl ChunkWindow {
    /// The window of a chunk read after `low`, the stream having delivered `streamed`; the
    /// sender takes `high` once the read is done.
    pub fn new(
        low: MySqlGtidSet,
        streamed: &MySqlGtidSet,
    ) -> Result<(ChunkWindow, oneshot::Sender<MySqlGtidSet>), NotYetExecuted> {
        let window = GtidWindow::new(low, streamed)?;
        let (tx, high) = oneshot::channel();
        Ok((ChunkWindow { window, high, seen: None, changed: Vec::new(), waiting_since: None }, tx))
    }

    /// Reads `low` on the chunk's connection (again, until it includes `streamed`, what the
    /// stream has delivered): the chunk's read may start once this returns. The sender takes
    /// `high` once the read is done.
    pub(super) async fn begin(
        conn: &mut Conn,
        streamed: &Option<GtidSet>,
    ) -> Result<(ChunkWindow, oneshot::Sender<MySqlGtidSet>)> {
        let streamed = stream_set(streamed)?;
        for attempt in 0.. {
            match ChunkWindow::new(executed(conn).await?, &streamed) {
                Ok(started) => return Ok(started),
                Err(NotYetExecuted) if attempt < LOW_ATTEMPTS => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(NotYetExecuted) => {
                    let low = executed(conn).await?;
                    bail!(
                        "the server's @@global.gtid_executed ({low}) stays without transactions the stream has delivered ({}): cannot place the snapshot's chunk",
                        streamed.difference(&low)
                    )
                }
            }
        }
        unreachable!("the loop returns or fails")
    }

    /// A change the stream emitted; `on_table`: of the chunk's table.
    pub fn observe(&mut self, change: &Change, on_table: bool) {
        // The rows of a transaction share one `gtid` text: it is looked up once.
        if !matches!((&self.seen, &change.gtid), (Some(s), Some(g)) if Arc::ptr_eq(s, g)) {
            self.seen = change.gtid.clone();
            let id = change.gtid.as_deref().and_then(|g| MySqlGtidSet::parse(g).ok()).and_then(|set| single(&set));
            self.window.transaction(id.as_ref());
        }
        if on_table && (self.window.open || change.table.pk.is_empty()) {
            self.changed
                .extend(change.before.iter().chain(&change.after).map(|img| (change.table.clone(), img.clone())));
        }
    }

    /// True when the chunk belongs here, the stream having executed `streamed` (the read must
    /// be done: its result arrives after `high`).
    pub fn closed(&mut self, streamed: &Option<GtidSet>) -> bool {
        if let Ok(high) = self.high.try_recv() {
            self.window.read(high);
            self.waiting_since = Some(Instant::now());
        }
        let Ok(streamed) = stream_set(streamed) else { return false };
        if self.window.closed(&streamed) {
            return true;
        }
        // GTIDs that never reach the binlog (SET GLOBAL gtid_purged, a stream started without
        // its executed set) would hold the chunk forever: say which ones it waits for.
        if let (Some(high), Some(since)) = (&self.window.high, self.waiting_since) {
            if since.elapsed() >= STALL {
                tracing::warn!(
                    "snapshot: a chunk read {}s ago waits for the stream to deliver GTIDs {}; if the stream has caught up, they are not in the binlog (SET GLOBAL gtid_purged?): use --snapshot-method watermark",
                    since.elapsed().as_secs(),
                    high.difference(&streamed)
                );
                self.waiting_since = None;
            }
        }
        false
    }
}

/// The one GTID of a set parsed from a change's `gtid`.
fn single(set: &MySqlGtidSet) -> Option<Gtid> {
    match set.ranges.iter().next() {
        Some(((sid, tag), ranges)) if set.ranges.len() == 1 && ranges.len() == 1 && ranges[0].1 == ranges[0].0 + 1 => {
            Some(Gtid::MySql { sid: *sid, tag: tag.clone(), gno: ranges[0].0 })
        }
        _ => None,
    }
}

/// The stream's executed set as a MySQL set (none yet: nothing executed).
fn stream_set(streamed: &Option<GtidSet>) -> Result<Cow<'_, MySqlGtidSet>> {
    match streamed {
        None => Ok(Cow::Owned(MySqlGtidSet::default())),
        Some(GtidSet::MySql(set)) => Ok(Cow::Borrowed(set)),
        Some(GtidSet::MariaDb(_)) => {
            bail!("the gtid-window snapshot method needs MySQL's GTIDs; this stream has MariaDB's")
        }
    }
}

/// The server's `@@global.gtid_executed`.
pub(super) async fn executed(conn: &mut Conn) -> Result<MySqlGtidSet> {
    let text: Option<String> = conn.query_first("SELECT @@global.gtid_executed").await?;
    MySqlGtidSet::parse(&text.unwrap_or_default().split_whitespace().collect::<String>())
}

/// True if the MySQL server at `opts` runs with `gtid_mode=ON`.
pub async fn gtid_mode_on(opts: &Opts) -> Result<bool> {
    let mut conn = connect(opts, Duration::ZERO).await?;
    let mode: Option<String> = conn.query_first("SELECT @@global.gtid_mode").await?;
    Ok(mode.is_some_and(|m| m.eq_ignore_ascii_case("ON")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift): the same seeds, the same runs.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }

    /// One simulated server history: transaction `i` (binlog order) writes value `i` to key
    /// `key[i]`; it commits in the engine at `commit[i]` and enters `gtid_executed` at
    /// `executed[i]` (never before its commit). Transactions on the same key commit in binlog
    /// order (row locks); others may commit out of it.
    struct History {
        key: Vec<u64>,
        commit: Vec<u64>,
        executed: Vec<u64>,
    }

    impl History {
        fn random(rng: &mut Rng, n: usize, keys: u64) -> History {
            let key: Vec<u64> = (0..n).map(|_| rng.below(keys)).collect();
            let mut commit: Vec<u64> = (0..n as u64).map(|i| i * 10 + rng.below(40)).collect();
            for i in 0..n {
                if let Some(prev) = (0..i).rev().find(|&j| key[j] == key[i]) {
                    commit[i] = commit[i].max(commit[prev] + 1);
                }
            }
            let executed = commit.iter().map(|&c| c + rng.below(50)).collect();
            History { key, commit, executed }
        }

        fn executed_at(&self, t: u64) -> BTreeSet<u64> {
            (0..self.key.len() as u64).filter(|&i| self.executed[i as usize] <= t).collect()
        }

        /// The value of `key` a read at `t` sees: the last transaction on it committed by then
        /// (`None`: the initial row).
        fn read(&self, key: u64, t: u64) -> Option<u64> {
            (0..self.key.len()).filter(|&i| self.key[i] == key && self.commit[i] <= t).max().map(|i| i as u64)
        }

        /// The value of `key` after the first `prefix` transactions in binlog order.
        fn at(&self, key: u64, prefix: usize) -> Option<u64> {
            (0..prefix).filter(|&i| self.key[i] == key).max().map(|i| i as u64)
        }
    }

    /// Where a window opens: at the first transaction not in `low` (this module's rule), or at
    /// the binlog's end when `low` was read (a position: a flawed alternative); or this module's
    /// rule without its precondition (a window started while the stream is ahead of `low`).
    #[derive(Clone, Copy, PartialEq)]
    enum Rule {
        NotInLow,
        Position,
        Unchecked,
    }

    /// Runs a stream over a random history with one chunk (every key) read at a random time,
    /// and checks that each read row is at least as new as the stream's state where it is
    /// emitted, and that the consumer's final state is the server's. As `ChunkWindow` does:
    /// `low` is read again (the stream waiting) until it includes what the stream delivered, and
    /// transactions on a filtered table (key `keys`) never reach the window.
    fn simulate(seed: u64, rule: Rule) -> Result<(), String> {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let (n, keys) = (5 + rng.below(40) as usize, 1 + rng.below(8));
        let filtered = keys;
        let h = History::random(&mut rng, n, keys + 1);
        let end = h.executed.iter().max().copied().unwrap_or(0) + 1;
        let mut t_low = rng.below(end);
        // A transaction is in the binlog (and may stream) a while before it commits.
        let written = (0..n).filter(|&i| h.commit[i] <= t_low + 40).count();
        // The stream has delivered some prefix of the binlog when the window starts.
        let start = rng.below(written as u64 + 1) as usize;
        let streamed = |p: usize| (0..p as u64).collect::<BTreeSet<u64>>();
        let mut window = loop {
            if rule == Rule::Unchecked {
                break GtidWindow { low: h.executed_at(t_low), high: None, open: false };
            }
            match GtidWindow::new(h.executed_at(t_low), &streamed(start)) {
                Ok(w) => break w,
                Err(NotYetExecuted) if t_low < end => t_low += 1 + rng.below(3),
                Err(NotYetExecuted) => return Err(format!("seed {seed}: low never includes the streamed prefix")),
            }
        };
        let t_read = t_low + rng.below(30);
        window.read(h.executed_at(t_read + rng.below(30)));
        // The consumer's table: key -> the transaction whose value it holds (None: initial).
        let mut consumer: Vec<Option<u64>> = (0..keys).map(|k| h.at(k, start)).collect();
        let chunk: Vec<Option<u64>> = (0..keys).map(|k| h.read(k, t_read)).collect();
        let mut dropped = BTreeSet::new();
        let mut emitted = false;
        for p in start..=n {
            if !emitted && window.closed(&streamed(p)) {
                for k in (0..keys).filter(|k| !dropped.contains(k)) {
                    let (row, now) = (chunk[k as usize], h.at(k, p));
                    // Transaction numbers order each key's versions: older = smaller.
                    if row.map_or(-1, |v| v as i64) < now.map_or(-1, |v| v as i64) {
                        return Err(format!("seed {seed}: key {k} read as {row:?} after the stream reached {now:?}"));
                    }
                    consumer[k as usize] = row;
                }
                emitted = true;
            }
            if p == n {
                break;
            }
            if h.key[p] == filtered {
                continue;
            }
            let inside = match rule {
                Rule::NotInLow | Rule::Unchecked => window.transaction(Some(&(p as u64))),
                Rule::Position => p >= written,
            };
            if !emitted && inside {
                dropped.insert(h.key[p]);
            }
            consumer[h.key[p] as usize] = Some(p as u64);
        }
        if !emitted {
            return Err(format!("seed {seed}: the window never closed"));
        }
        let last: Vec<Option<u64>> = (0..keys).map(|k| h.at(k, n)).collect();
        if consumer != last {
            return Err(format!("seed {seed}: the consumer holds {consumer:?}, the server {last:?}"));
        }
        Ok(())
    }

    #[test]
    fn no_read_event_ever_overwrites_a_newer_change() {
        for seed in 0..20_000 {
            simulate(seed, Rule::NotInLow).unwrap();
        }
    }

    /// The same simulation finds histories where a window opened at a binlog position lets a
    /// read row overwrite a newer change: the simulation can tell a wrong rule from a right one.
    #[test]
    fn a_window_opened_at_a_position_would_overwrite_newer_changes() {
        let failures = (0..20_000).filter(|&seed| simulate(seed, Rule::Position).is_err()).count();
        assert!(failures > 0, "no history broke the position rule");
    }

    /// And histories where a window started while the stream had delivered a transaction not
    /// yet in `low` lets a read row overwrite it: the precondition is needed.
    #[test]
    fn a_window_started_ahead_of_low_would_overwrite_newer_changes() {
        let failures = (0..20_000).filter(|&seed| simulate(seed, Rule::Unchecked).is_err()).count();
        assert!(failures > 0, "no history broke the unchecked window");
    }

    #[test]
    fn mysql_sets_contain_their_transactions() {
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let set = MySqlGtidSet::parse(&format!("{uuid}:1-5:8,{uuid}:blue:2")).unwrap();
        let sid = crate::gtid::parse_uuid(uuid).unwrap();
        let gtid = |tag: &str, gno| Gtid::MySql { sid, tag: tag.into(), gno };
        let contained: Vec<bool> =
            [gtid("", 1), gtid("", 5), gtid("", 6), gtid("", 8), gtid("blue", 2), gtid("blue", 1)]
                .iter()
                .map(|g| Executed::contains(&set, g))
                .collect();
        assert_eq!(contained, [true, true, false, true, true, false]);
    }

    #[test]
    fn a_stream_ahead_of_low_is_refused() {
        let low: BTreeSet<u64> = [0, 1].into();
        let ahead: BTreeSet<u64> = [0, 1, 2].into();
        assert_eq!(GtidWindow::new(low.clone(), &ahead).unwrap_err(), NotYetExecuted);
        let mut w = GtidWindow::new(low.clone(), &[0].into()).unwrap();
        assert!(!w.transaction(Some(&1)), "in low: before the window");
        assert!(w.transaction(Some(&2)) && w.transaction(Some(&1)), "open from the first one not in low on");
        assert!(!w.closed(&[0, 1, 2, 3].into()), "not before the read is done");
        w.read([0, 1, 2, 3].into());
        assert!(!w.closed(&[0, 1, 2].into()) && w.closed(&[0, 1, 2, 3].into()));
        let mut unknown = GtidWindow::new(low, &[0].into()).unwrap();
        assert!(unknown.transaction(None), "a transaction without a GTID opens the window");
    }
}
