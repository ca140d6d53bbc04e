//! SIGINT/SIGTERM handling shared by the pipeline and the sinks that wait.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// SIGINT/SIGTERM: the first asks for a clean stop after the current transaction, the second
/// for a stop right away (still only saving positions of delivered transactions).
pub struct Shutdown {
    signals: AtomicU32,
    pub notify: Notify,
}

impl Shutdown {
    /// No stop requested yet; nothing listens for signals.
    pub fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown { signals: AtomicU32::new(0), notify: Notify::new() })
    }

    /// Listens for SIGINT/SIGTERM on `rt`.
    pub fn install(rt: &Runtime) -> Arc<Shutdown> {
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        rt.spawn(async move {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                let n = s.signals.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::info!("{}", if n == 1 { "stopping after the current transaction" } else { "stopping now" });
                s.notify.notify_one();
            }
        });
        shutdown
    }

    pub fn requested(&self) -> bool {
        self.signals.load(Ordering::SeqCst) > 0
    }

    pub fn forced(&self) -> bool {
        self.signals.load(Ordering::SeqCst) > 1
    }
}
