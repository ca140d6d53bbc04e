//! SIGINT/SIGTERM/SIGHUP handling shared by the pipeline and the sinks that wait.
//!
//! Invariants: a signal never interrupts a transaction half-delivered to the sink; the first one
//! asks for a clean stop, and waiting for a sink after it lasts only while the sink makes
//! progress (it ends `GRACE` after the signal or the sink's last acknowledgement, whichever is
//! later, or at a second signal), so a stop request ends the process even when the sink is gone.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

/// How long a sink may go without acknowledging anything once a stop was requested (well inside
/// the 30 s an orchestrator such as Kubernetes waits before SIGKILL).
pub const GRACE: Duration = Duration::from_secs(10);

/// The first signal asks for a clean stop after the current transaction, the second for a stop
/// right away (still only saving positions of delivered transactions).
pub struct Shutdown {
    signals: AtomicU32,
    first: OnceLock<Instant>,
    pub notify: Notify,
}

impl Shutdown {
    /// No stop requested yet; nothing listens for signals.
    pub fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown { signals: AtomicU32::new(0), first: OnceLock::new(), notify: Notify::new() })
    }

    /// Listens for SIGINT, SIGTERM and SIGHUP (a closed terminal or `kill -HUP`) on `rt`.
    pub fn install(rt: &Runtime) -> Arc<Shutdown> {
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        rt.spawn(async move {
            let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                s.request();
            }
        });
        shutdown
    }

    /// What a signal does.
    pub fn request(&self) {
        self.first.get_or_init(Instant::now);
        let n = self.signals.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::info!("{}", if n == 1 { "stopping after the current transaction" } else { "stopping now" });
        self.notify.notify_one();
    }

    pub fn requested(&self) -> bool {
        self.signals.load(Ordering::SeqCst) > 0
    }

    pub fn forced(&self) -> bool {
        self.signals.load(Ordering::SeqCst) > 1
    }

    /// Why waiting for a sink must end now: a second signal, or `GRACE` passed since the first
    /// signal and since `progress`, the sink's last acknowledgement.
    pub fn stop_waiting(&self, progress: Instant) -> Option<String> {
        if self.forced() {
            Some("a second signal".into())
        } else {
            self.first
                .get()
                .filter(|first| progress.max(**first).elapsed() >= GRACE)
                .map(|_| format!("no acknowledgement for {} s after the stop signal", GRACE.as_secs()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_ends_at_a_second_signal_not_while_the_sink_progresses() {
        let s = Shutdown::new();
        let long_ago = Instant::now() - GRACE * 2;
        assert_eq!(s.stop_waiting(long_ago), None, "no stop requested");
        s.request();
        assert_eq!(s.stop_waiting(long_ago), None, "the grace starts at the signal");
        s.request();
        assert_eq!(s.stop_waiting(Instant::now()).as_deref(), Some("a second signal"));
    }
}
