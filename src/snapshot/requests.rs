//! Incremental snapshot requests that arrive over HTTP (`POST /snapshot` on `--metrics-addr`)
//! instead of as signal-table rows, so a stream on a read-only server can take them.
//!
//! Invariants: a request is applied by the stream itself, at a point between transactions, like
//! a signal row; the requester's answer says what it did (tables queued, patterns that matched
//! nothing and why) once the snapshot's new progress was handed to the checkpoint with a commit.
//! A request the stream does not take within `WAIT` is answered as not taken, never as done.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::signal::Signal;

/// How long a requester waits for the stream to take its request.
pub const WAIT: Duration = Duration::from_secs(30);

/// What became of a request: its answer text, or why it was refused.
pub type Answer = Result<String, String>;

/// Requests waiting for the stream, shared by the HTTP endpoint and the snapshot.
#[derive(Default, Clone)]
pub struct Requests(Arc<Mutex<Queue>>);

#[derive(Default)]
struct Queue {
    next_id: u64,
    waiting: VecDeque<(u64, Signal, Sender<Answer>)>,
}

impl Requests {
    /// Applies `signal` through the stream and returns its answer, or None if the stream did
    /// not take it within `wait` (it is then withdrawn: never applied later).
    pub fn submit(&self, signal: Signal, wait: Duration) -> Option<Answer> {
        let (tx, rx) = mpsc::channel();
        let id = {
            let mut queue = self.lock();
            queue.next_id += 1;
            let id = queue.next_id;
            queue.waiting.push_back((id, signal, tx));
            id
        };
        if let Ok(answer) = rx.recv_timeout(wait) {
            return Some(answer);
        }
        let mut queue = self.lock();
        let before = queue.waiting.len();
        queue.waiting.retain(|(i, ..)| *i != id);
        if queue.waiting.len() < before {
            return None;
        }
        drop(queue);
        // Taken just now: its answer comes with the commit that is being made.
        rx.recv().ok()
    }

    /// The next request, if any.
    pub fn take(&self) -> Option<(Signal, Sender<Answer>)> {
        self.lock().waiting.pop_front().map(|(_, signal, reply)| (signal, reply))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The body of `POST /snapshot`: the signal table's `type` and `data` in one JSON object, e.g.
/// `{"type": "execute-snapshot", "data-collections": ["shop.orders"]}`.
pub fn parse(body: &str) -> Result<Signal, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(rename = "type")]
        kind: String,
        #[serde(rename = "data-collections", default)]
        collections: Vec<String>,
    }
    let body: Body = serde_json::from_str(body).map_err(|e| {
        format!("expected {{\"type\": \"execute-snapshot\" or \"stop-snapshot\", \"data-collections\": [\"db.table\", ...]}}: {e}")
    })?;
    match body.kind.as_str() {
        "execute-snapshot" if body.collections.is_empty() => Err("name the tables in data-collections".into()),
        "execute-snapshot" => Ok(Signal::Execute(body.collections)),
        "stop-snapshot" => Ok(Signal::Stop(body.collections)),
        other => Err(format!("type `{other}`: use execute-snapshot or stop-snapshot")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_the_queue() {
        assert_eq!(
            parse(r#"{"type": "execute-snapshot", "data-collections": ["a.b"]}"#),
            Ok(Signal::Execute(vec!["a.b".into()]))
        );
        assert_eq!(parse(r#"{"type": "stop-snapshot"}"#), Ok(Signal::Stop(vec![])));
        for bad in [
            r#"{"type": "execute-snapshot"}"#,
            r#"{"type": "x"}"#,
            "{}",
            "nope",
            r#"{"type": "stop-snapshot", "x": 1}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let requests = Requests::default();
        // Not taken in time: withdrawn, never applied later.
        assert_eq!(requests.submit(Signal::Stop(vec![]), Duration::from_millis(10)), None);
        assert!(requests.take().is_none());
        let stream = requests.clone();
        let applier = std::thread::spawn(move || loop {
            if let Some((signal, reply)) = stream.take() {
                reply.send(Ok(format!("{signal:?}"))).unwrap();
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        });
        assert_eq!(requests.submit(Signal::Stop(vec![]), WAIT), Some(Ok("Stop([])".into())));
        applier.join().unwrap();
    }
}
