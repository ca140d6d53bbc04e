//! How far reading is behind the server's binlog end: polled every few seconds over a second
//! connection (`SHOW BINARY LOGS`), published as `binlog_tail_behind_bytes`, and shown as
//! catch-up progress while a stream starts far behind (an indicatif bar on a terminal, a log line
//! every 10 s otherwise).
//!
//! Invariants: the poll never touches the replication connection or the position; when the
//! server cannot be reached the last value stays and the poll tries again next time.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use mysql_async::{Conn, Opts};
use tokio::runtime::Handle;

use crate::history::{binlogs, BinlogFile};
use crate::metrics::{Metrics, ReadPosition};
use crate::source::connection::connect;

const POLL: Duration = Duration::from_secs(2);
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Progress is shown only when the start is at least this far behind.
const FAR_BEHIND: u64 = 4 << 20;

/// Bytes from `read` to the end of the newest file, or None when the read file is not listed
/// (nothing read yet, or purged meanwhile).
pub fn bytes_behind(logs: &[BinlogFile], read: &ReadPosition) -> Option<u64> {
    let at = logs.iter().position(|f| *f.name == *read.file)?;
    let rest: u64 = logs[at + 1..].iter().map(|f| f.size).sum();
    Some(logs[at].size.saturating_sub(read.offset) + rest)
}

/// Starts polling on `rt` for the rest of the process.
pub fn spawn(rt: &Handle, opts: Opts, metrics: Metrics) {
    rt.spawn(async move {
        let mut conn: Option<Conn> = None;
        let mut progress: Option<Progress> = None;
        // Progress is for a start far behind, not for every later burst of writes.
        let mut first = true;
        loop {
            tokio::time::sleep(POLL).await;
            if conn.is_none() {
                conn = connect(&opts, Duration::ZERO).await.ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            let logs = match binlogs(c).await {
                Ok(logs) => logs,
                Err(e) => {
                    tracing::debug!("polling the server's binlog end: {e:#}");
                    conn = None;
                    continue;
                }
            };
            let Some(behind) = bytes_behind(&logs, &metrics.read_position()) else { continue };
            metrics.set_behind(behind);
            if progress.as_mut().is_some_and(|p| p.update(behind)) {
                progress = None;
            } else if progress.is_none() && first && behind >= FAR_BEHIND {
                progress = Some(Progress::new(behind));
            }
            first = false;
        }
    });
}

/// Catch-up progress toward the server's binlog end.
struct Progress {
    start: u64,
    bar: Option<ProgressBar>,
    last: (Instant, u64),
    logged: Instant,
}

impl Progress {
    fn new(behind: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(behind);
            if let Ok(style) =
                ProgressStyle::with_template("catching up {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
            {
                bar.set_style(style);
            }
            bar
        });
        if bar.is_none() {
            tracing::info!("catching up: {} MiB behind the server's binlog end", behind >> 20);
        }
        Progress { start: behind, bar, last: (Instant::now(), behind), logged: Instant::now() }
    }

    /// Shows the new distance; true once caught up.
    fn update(&mut self, behind: u64) -> bool {
        let done = self.start.saturating_sub(behind);
        if let Some(bar) = &self.bar {
            bar.set_length(self.start.max(done + behind));
            bar.set_position(done);
            if behind == 0 {
                bar.finish_and_clear();
            }
        } else if behind == 0 {
            tracing::info!("caught up with the server's binlog end");
        } else if self.logged.elapsed() >= LOG_EVERY {
            let (at, was) = self.last;
            let rate = was.saturating_sub(behind) as f64 / at.elapsed().as_secs_f64();
            let eta = if rate > 0.0 { format!("{:.0} s", behind as f64 / rate) } else { "unknown".into() };
            tracing::info!(
                behind_bytes = behind,
                "catching up: {:.1} MiB behind, closing at {:.1} MiB/s, ETA {eta}",
                behind as f64 / 1048576.0,
                rate / 1048576.0
            );
            self.last = (Instant::now(), behind);
            self.logged = Instant::now();
        }
        behind == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_the_rest_of_the_read_file_and_every_later_file() {
        let logs = [("b.000001", 1000), ("b.000002", 500), ("b.000003", 300)]
            .map(|(n, size)| BinlogFile { name: n.into(), size })
            .to_vec();
        let at = |file: &str, offset| ReadPosition { file: Arc::from(file), offset };
        assert_eq!(bytes_behind(&logs, &at("b.000002", 400)), Some(100 + 300));
        assert_eq!(bytes_behind(&logs, &at("b.000003", 300)), Some(0));
        assert_eq!(bytes_behind(&logs, &at("b.000000", 4)), None);
    }
}
