//! The connection to Redis: preflight at start, then one thread that applies batches one at a
//! time, in the order they come, each as one atomic script with the stream's marker.
//!
//! Invariants:
//! - A batch is applied whole or not at all: the script (`APPLY`) checks everything that could
//!   refuse a write (the marker's place, the type of every key) before its first write, and
//!   Redis refuses a script's first write, not a later one, when memory is full. A script runs
//!   atomically, and its effects reach the append-only file and the replicas as one MULTI/EXEC.
//! - The marker's `batch` field names the last batch applied (`RUN:N`); each batch states the
//!   one it follows, so a batch never lands after a gap, and after a lost connection reading the
//!   marker tells whether the batch was applied (done) or not (sent again).
//! - Transient failures (Redis down, a timeout, LOADING, BUSY, READONLY during a failover) are
//!   retried without a time limit, the reason logged; a refusal retrying cannot change stops the
//!   run with the fix, the batch not applied.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use redis::{Connection, ErrorKind, RedisError, ServerErrorKind, Value};

use super::batch::Batch;
use super::config::{RedisSettings, MARKER_PREFIX};
use super::preflight;
use crate::metrics::Metrics;
use crate::preflight::Status;
use crate::shutdown::{Shutdown, Stopped};

/// How long connecting, and one command's answer, may take before the try counts as failed.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between two tries.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// KEYS[1]: the marker; KEYS[2..]: the batch's stream keys. ARGV[1]: the batch the marker must
/// name now (empty: none); ARGV[2]: this batch's name; ARGV[3]: `through` after it; ARGV[4]:
/// MAXLEN (empty: none); ARGV[5]: the position's id (for `status`); ARGV[6]: the last snapshot
/// read after it (`sink::LastRead`, empty: none); then per entry: its key's number in KEYS, its
/// field count n, and n field names and values.
const APPLY: &str = r"
local prev = redis.call('HGET', KEYS[1], 'batch') or ''
if prev ~= ARGV[1] then
  return redis.error_reply('BINLOGTAIL_MARKER ' .. prev)
end
for k = 2, #KEYS do
  local t = redis.call('TYPE', KEYS[k])['ok']
  if t ~= 'stream' and t ~= 'none' then
    return redis.error_reply('WRONGTYPE key ' .. KEYS[k] .. ' holds a ' .. t .. ', not a stream')
  end
end
local i = 7
while i <= #ARGV do
  local key = KEYS[tonumber(ARGV[i])]
  local last = i + 1 + 2 * tonumber(ARGV[i + 1])
  if ARGV[4] == '' then
    redis.call('XADD', key, '*', unpack(ARGV, i + 2, last))
  else
    redis.call('XADD', key, 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, i + 2, last))
  end
  i = last + 1
end
redis.call('HSET', KEYS[1], 'batch', ARGV[2], 'through', ARGV[3], 'position', ARGV[5], 'read', ARGV[6])
return 1
";

/// What became of a batch.
pub enum Outcome {
    Applied(u64),
    /// A refusal retrying cannot change: the text says what to do.
    Failed(String),
    /// A stop was asked while Redis could not take the batch.
    Stopped(String),
}

enum Failure {
    Transient(String),
    Definite(String),
}

/// What the preflight found.
pub struct Found {
    /// The marker's `through`: this stream's last entry in Redis, per series (`ORIGIN/INDEX` lines).
    pub through: String,
    /// The marker's `read`: this stream's last snapshot read in Redis (`sink::LastRead`).
    pub read: String,
    /// The largest value Redis takes (`proto-max-bulk-len`).
    pub max_bulk: usize,
}

pub struct Writer {
    client: redis::Client,
    conn: Option<Connection>,
    /// `--redis-url` without its password.
    shown: String,
    marker: String,
    maxlen: String,
    /// The SHA1 of `APPLY`, loaded on every connection.
    sha: String,
    /// The marker's `batch` as this writer left it (or found it at start).
    applied: String,
    /// Names this run's batches.
    run: String,
    /// The id of the position file (or Kafka position) this stream continues.
    position: String,
    /// A batch was sent and its answer lost: it may be applied.
    unsure: bool,
    shutdown: Arc<Shutdown>,
    /// Set when the sink is dropped: no more tries.
    pub quit: Arc<AtomicBool>,
    metrics: Option<Metrics>,
}

impl Writer {
    /// Connects (retrying while Redis cannot be reached) and checks the server: no cluster, its
    /// persistence, its largest value; reads the marker of `stream`.
    pub fn start(
        settings: &RedisSettings,
        (stream, position): (&str, &str),
        shutdown: Arc<Shutdown>,
        metrics: Option<Metrics>,
    ) -> Result<(Writer, Found)> {
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut w = Writer {
            client: settings.client()?,
            conn: None,
            shown: settings.shown_url(),
            marker: format!("{MARKER_PREFIX}{stream}"),
            maxlen: settings.maxlen.map(|n| n.to_string()).unwrap_or_default(),
            sha: redis::Script::new(APPLY).get_hash().to_string(),
            applied: String::new(),
            run: format!("{:x}-{:x}", started.as_millis(), std::process::id()),
            position: position.to_string(),
            unsure: false,
            shutdown,
            quit: Arc::new(AtomicBool::new(false)),
            metrics,
        };
        let mut pause = Duration::from_millis(250);
        let found = loop {
            match w.preflight(settings) {
                Ok(found) => break found,
                Err(Failure::Definite(text)) => bail!(text),
                Err(Failure::Transient(why)) => {
                    tracing::warn!("cannot reach Redis at {}: {why}; retrying", w.shown);
                    w.conn = None;
                }
            }
            let until = Instant::now() + pause;
            while Instant::now() < until {
                if w.shutdown.requested() {
                    return Err(Stopped("connecting to Redis".into()).into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            pause = (pause * 2).min(MAX_PAUSE);
        };
        Ok((w, found))
    }

    fn preflight(&mut self, settings: &RedisSettings) -> Result<Found, Failure> {
        self.connect()?;
        // Put back once the checks pass.
        let mut conn = self.conn.take().expect("connected");
        let server = preflight::inspect(&mut conn, settings.allow_no_aof).map_err(|e| classify(&e))?;
        for c in &server.checks {
            let fix = c.fix.as_deref().unwrap_or_default();
            match c.status {
                Status::Fail => {
                    return Err(Failure::Definite(format!("Redis at {}: {} — {fix}", self.shown, c.detail)))
                }
                Status::Warn => tracing::warn!("Redis at {}: {} — {fix}", self.shown, c.detail),
                Status::Pass => {}
            }
        }
        let (batch, through, read): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET").arg(&self.marker).arg("batch").arg("through").arg("read").query(&mut conn).map_err(
                |e| match classify(&e) {
                    Failure::Definite(text) if e.code() == Some("WRONGTYPE") => Failure::Definite(format!(
                    "{text}: key {} is binlog-tail's marker of this stream (a hash); delete or rename what is there",
                    self.marker
                )),
                    other => other,
                },
            )?;
        self.applied = batch.unwrap_or_default();
        self.conn = Some(conn);
        tracing::info!(
            "writing to Redis {} at {} (marker {}: {})",
            server.version,
            self.shown,
            self.marker,
            if self.applied.is_empty() { "none yet".to_string() } else { format!("batch {}", self.applied) }
        );
        Ok(Found { through: through.unwrap_or_default(), read: read.unwrap_or_default(), max_bulk: server.max_bulk })
    }

    /// The connection, opened (and the script loaded) if there is none.
    fn connect(&mut self) -> Result<&mut Connection, Failure> {
        if self.conn.is_none() {
            let mut conn = self.client.get_connection_with_timeout(TIMEOUT).map_err(|e| classify(&e))?;
            conn.set_read_timeout(Some(TIMEOUT)).map_err(|e| classify(&e))?;
            conn.set_write_timeout(Some(TIMEOUT)).map_err(|e| classify(&e))?;
            let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(APPLY).query(&mut conn).map_err(|e| classify(&e))?;
            debug_assert_eq!(sha, self.sha);
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    /// Applies batches as they come until the sink is dropped or a batch fails for good.
    pub fn run(mut self, batches: Receiver<Batch>, outcomes: Sender<Outcome>) {
        while let Ok(batch) = batches.recv() {
            if self.quit.load(Ordering::SeqCst) {
                return;
            }
            let outcome = self.apply(&batch);
            let go_on = matches!(outcome, Outcome::Applied(_));
            if outcomes.send(outcome).is_err() || !go_on {
                return;
            }
        }
    }

    /// Applies one batch, retrying transient failures.
    fn apply(&mut self, batch: &Batch) -> Outcome {
        let id = format!("{}:{}", self.run, batch.n);
        let mut pause = Duration::from_millis(100);
        loop {
            match self.try_apply(batch, &id) {
                Ok(()) => {
                    self.applied = id;
                    return Outcome::Applied(batch.n);
                }
                Err(Failure::Definite(text)) => return Outcome::Failed(text),
                Err(Failure::Transient(why)) => {
                    self.conn = None;
                    if let Some(m) = &self.metrics {
                        m.redis().retried(1);
                    }
                    if self.shutdown.requested() || self.quit.load(Ordering::SeqCst) {
                        return Outcome::Stopped(why);
                    }
                    tracing::warn!("Redis at {}: {why}; retrying, the position waits", self.shown);
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    fn try_apply(&mut self, batch: &Batch, id: &str) -> Result<(), Failure> {
        let (marker, applied) = (self.marker.clone(), self.applied.clone());
        let unsure = self.unsure;
        let conn = self.connect()?;
        if unsure {
            let now: Option<String> =
                redis::cmd("HGET").arg(&marker).arg("batch").query(conn).map_err(|e| classify(&e))?;
            let now = now.unwrap_or_default();
            self.unsure = false;
            if now == id {
                return Ok(());
            }
            if now != applied {
                return Err(moved(&marker, &now, &applied));
            }
        }
        let conn = self.conn.as_mut().expect("connected");
        let head = batch.head(&self.sha, &marker, [&applied, id, &self.maxlen, &self.position]);
        self.unsure = true;
        let answer = conn
            .send_packed_command(&head)
            .and_then(|()| conn.send_packed_command(batch.args()))
            .and_then(|()| conn.recv_response());
        let failure = match answer.map(Value::extract_error) {
            Ok(Ok(_)) => {
                self.unsure = false;
                return Ok(());
            }
            // Redis answered with a refusal: the script wrote nothing.
            Ok(Err(e)) => {
                self.unsure = false;
                if let Some(now) = e.detail().filter(|_| e.code() == Some("BINLOGTAIL_MARKER")) {
                    return Err(moved(&marker, now, &applied));
                }
                classify(&e)
            }
            Err(e) => classify(&e),
        };
        Err(failure)
    }
}

/// The marker names a batch this writer did not leave there.
fn moved(marker: &str, now: &str, expected: &str) -> Failure {
    let now = if now.is_empty() { "nothing" } else { now };
    Failure::Definite(format!(
        "the marker {marker} names batch {now}, not {expected}: Redis lost writes it had acknowledged (a restart without appendfsync always, a failover to a replica behind), or another binlog-tail writes this stream; binlog-tail stops so that nothing lands out of order — start it again to continue from what Redis holds"
    ))
}

/// Whether trying again can help, and what to do otherwise.
fn classify(e: &RedisError) -> Failure {
    if refused_tls(e) {
        return Failure::Definite(format!(
            "TLS to Redis failed ({e}): check --redis-tls-ca and the server's certificate (its names must include the --redis-url host)"
        ));
    }
    match e.kind() {
        ErrorKind::Io | ErrorKind::Parse => return Failure::Transient(e.to_string()),
        ErrorKind::AuthenticationFailed => return auth(e),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::NoScript,
        ) => return Failure::Transient(e.to_string()),
        ErrorKind::Server(ServerErrorKind::NoPerm) => {
            return Failure::Definite(format!(
                "Redis refused a command to this user ({e}): grant it the commands and keys binlog-tail needs (docs/redis.md: +info +config|get +script|load +evalsha +hget +hmget, and through the script +type +xadd +hset on its keys)"
            ))
        }
        _ => {}
    }
    match e.code() {
        Some("NOAUTH" | "WRONGPASS") => auth(e),
        Some("BUSY") => Failure::Transient(e.to_string()),
        Some("WRONGTYPE") => Failure::Definite(format!(
            "Redis refused the batch ({e}): give the streams keys of their own (--redis-key, --redis-ddl-key, the outbox topics), or delete what is there"
        )),
        Some("OOM") => Failure::Definite(format!(
            "Redis refused the batch ({e}): raise its maxmemory, free memory, or bound each stream with --redis-maxlen"
        )),
        _ => Failure::Definite(format!("Redis refused the batch: {e}")),
    }
}

/// A certificate or handshake rustls refused: connecting again cannot help.
fn refused_tls(e: &RedisError) -> bool {
    // The client keeps an I/O error as an `Arc<dyn Error>`, whose `source` skips the I/O error's own.
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    let shared = std::error::Error::source(e).and_then(|s| s.downcast_ref::<Shared>());
    let io = shared.and_then(|s| s.downcast_ref::<std::io::Error>()).and_then(std::io::Error::get_ref);
    io.is_some_and(|inner| inner.is::<rustls::Error>())
}

fn auth(e: &RedisError) -> Failure {
    Failure::Definite(format!(
        "Redis refused the credentials ({e}): check the user and password in --redis-url, or --redis-password-file"
    ))
}
