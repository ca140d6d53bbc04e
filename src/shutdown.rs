//! SIGINT/SIGTERM/SIGHUP handling shared by the pipeline and the sinks that wait.
//!
//! Invariants: the first signal asks for a clean stop after the current transaction; waiting for
//! a sink after it lasts only while the sink makes progress (it ends `GRACE` after the signal or
//! the sink's last acknowledgement, whichever is later, or at a second signal), so a stop request
//! ends the process even when the sink is gone. However it ends, the saved position covers only
//! what the sink acknowledged. A handover (the Kafka position store's lease is being taken by
//! another instance) stops the stream the same way, but the process then stands by instead of
//! exiting.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

/// A wait (for Kafka, for the stream's lease) ended by a stop request: the process ends as at
/// any stop, with exit code 0.
#[derive(Debug, thiserror::Error)]
#[error("stopped while {0}")]
pub struct Stopped(pub String);

/// How long a sink may go without acknowledging anything once a stop was requested (well inside
/// the 30 s an orchestrator such as Kubernetes waits before SIGKILL).
pub const GRACE: Duration = Duration::from_secs(10);

/// The first signal asks for a clean stop after the current transaction, the second for a stop
/// right away (still only saving positions of delivered transactions).
pub struct Shutdown {
    signals: AtomicU32,
    first: OnceLock<Instant>,
    /// Set, with when it was asked, while the stream is handed over to another instance.
    handing_over: AtomicBool,
    handover_at: Mutex<Option<Instant>>,
    pub notify: Notify,
}

impl Shutdown {
    /// No stop requested yet; nothing listens for signals.
    pub fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown {
            signals: AtomicU32::new(0),
            first: OnceLock::new(),
            handing_over: AtomicBool::new(false),
            handover_at: Mutex::new(None),
            notify: Notify::new(),
        })
    }

    /// Listens for SIGINT, SIGTERM and SIGHUP (a closed terminal or `kill -HUP`) on `rt`. The
    /// handlers are in place when this returns, so a signal sent at any later moment asks for a
    /// stop (registered from the spawned task, a loaded machine could leave the default action,
    /// which kills the process, in place for a while).
    pub fn install(rt: &Runtime) -> Result<Arc<Shutdown>> {
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let listen = |kind: SignalKind, name: &str| {
            let _runtime = rt.enter();
            signal(kind).with_context(|| format!("cannot listen for {name}"))
        };
        let mut int = listen(SignalKind::interrupt(), "SIGINT")?;
        let mut term = listen(SignalKind::terminate(), "SIGTERM")?;
        let mut hup = listen(SignalKind::hangup(), "SIGHUP")?;
        rt.spawn(async move {
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                s.request();
            }
        });
        Ok(shutdown)
    }

    /// What a signal does.
    pub fn request(&self) {
        self.first.get_or_init(Instant::now);
        let n = self.signals.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::info!("{}", if n == 1 { "stopping after the current transaction" } else { "stopping now" });
        self.notify.notify_one();
    }

    /// What losing the stream's lease does: stop after the current transaction, as at a signal,
    /// until `handed_over`.
    pub fn handover(&self) {
        self.handover_at.lock().expect("not poisoned").get_or_insert_with(Instant::now);
        if !self.handing_over.swap(true, Ordering::SeqCst) {
            tracing::info!("handing the stream over: stopping after the current transaction");
        }
        self.notify.notify_one();
    }

    pub fn handing_over(&self) -> bool {
        self.handing_over.load(Ordering::SeqCst)
    }

    /// The stream stopped for the handover: the next one may run.
    pub fn handed_over(&self) {
        *self.handover_at.lock().expect("not poisoned") = None;
        self.handing_over.store(false, Ordering::SeqCst);
    }

    pub fn requested(&self) -> bool {
        self.signals.load(Ordering::SeqCst) > 0 || self.handing_over()
    }

    pub fn forced(&self) -> bool {
        self.signals.load(Ordering::SeqCst) > 1
    }

    /// Why waiting for a sink must end now: a second signal, or `GRACE` passed since the first
    /// signal (or the handover) and since `progress`, the sink's last acknowledgement.
    pub fn stop_waiting(&self, progress: Instant) -> Option<String> {
        if self.forced() {
            return Some("a second signal".into());
        }
        let handover = *self.handover_at.lock().expect("not poisoned");
        let asked = self.first.get().copied().into_iter().chain(handover).min()?;
        (progress.max(asked).elapsed() >= GRACE)
            .then(|| format!("no acknowledgement for {} s after the stop was asked", GRACE.as_secs()))
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

    #[test]
    fn a_handover_stops_like_a_signal_until_it_is_done() {
        let s = Shutdown::new();
        s.handover();
        assert!(s.requested() && !s.forced());
        assert_eq!(s.stop_waiting(Instant::now()), None, "the grace starts at the handover");
        *s.handover_at.lock().unwrap() = Some(Instant::now() - GRACE * 2);
        assert!(s.stop_waiting(Instant::now() - GRACE * 2).is_some());
        s.handed_over();
        assert!(!s.requested());
        assert_eq!(s.stop_waiting(Instant::now() - GRACE * 2), None);
    }
}
