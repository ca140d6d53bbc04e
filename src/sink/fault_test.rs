//! For the sinks' unit tests of faults the integration tests cannot time: a server process
//! killed with thousands of one-message transactions in flight, and started again.
//!
//! Invariant: a `Server` is killed when dropped, also when the test fails.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::Sink;
use crate::outbox::Message;
use crate::position::Resume;

pub struct Server(Child);

impl Server {
    /// Runs `cmd` with its output discarded and waits until `ready` holds.
    pub fn start(mut cmd: Command, ready: impl Fn() -> bool) -> Server {
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!("{} ({e}; scripts/install-deps installs it)", cmd.get_program().to_string_lossy())
        });
        while !ready() {
            std::thread::sleep(Duration::from_millis(10));
        }
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `total` transactions of one message each (`{"n":N}` to `topic`, origin `0-1-N`) while
/// `server` is SIGKILLed 300 ms in and `restart` starts it again 200 ms later; then flushes and
/// checks that every transaction is acknowledged. Returns the restarted server.
pub fn send_through_a_kill(
    sink: &mut dyn Sink,
    topic: &str,
    total: u32,
    server: Server,
    restart: impl FnOnce() -> Server + Send,
) -> Server {
    let restarted = std::thread::scope(|scope| {
        let restart = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            drop(server); // SIGKILL
            std::thread::sleep(Duration::from_millis(200));
            restart()
        });
        for n in 0..total {
            let msg = Message {
                origin: format!("0-1-{n}"),
                topic: topic.into(),
                key: None,
                headers: vec![],
                value: format!("{{\"n\":{n}}}").into_bytes(),
            };
            sink.message(&msg).unwrap();
            sink.commit(&Resume::new(Arc::from("binlog.000001"), u64::from(n), None)).unwrap();
        }
        let restarted = restart.join().unwrap();
        sink.flush().unwrap();
        restarted
    });
    assert_eq!(sink.acknowledged().unwrap().map(|r| r.offset), Some(u64::from(total - 1)));
    restarted
}

/// Asserts that `got` is `expected` in order, showing where it first differs.
pub fn assert_in_order<T: PartialEq + std::fmt::Debug>(got: &[T], expected: &[T], what: &str) {
    let first_wrong = got.iter().zip(expected).position(|(a, b)| a != b);
    assert!(
        got.len() == expected.len() && first_wrong.is_none(),
        "{} {what} stored for {}; first out of place at {first_wrong:?}: {:?}",
        got.len(),
        expected.len(),
        first_wrong.map(|i| &got[i.saturating_sub(2)..(i + 3).min(got.len())])
    );
}
