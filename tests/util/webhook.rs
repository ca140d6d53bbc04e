//! A webhook receiver for the HTTP sink's tests: a real HTTP server on 127.0.0.1 (tiny_http) that
//! logs every request it gets (its `Idempotency-Key`, headers and body), can fail a share of them
//! with 503 or answer some only after a delay (longer than the sink's timeout), can refuse every
//! request with a given status, and can be stopped and started again on the same port.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// What the receiver answered.
    pub status: u16,
    /// The receiver applied the batch (it answered 2xx, or would have after its delay).
    pub applied: bool,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// How the receiver misbehaves.
#[derive(Default)]
pub struct Faults {
    /// Every `fail_every`-th request is answered 503 (0: never).
    pub fail_every: u64,
    /// Every `slow_every`-th request is applied, then answered after `delay` (0: never).
    pub slow_every: u64,
    pub delay: Duration,
    /// Every request is refused with this status and body.
    pub refuse: Option<(u16, String)>,
}

pub struct Webhook {
    pub port: u16,
    log: Arc<Mutex<Vec<Received>>>,
    faults: Arc<Mutex<Faults>>,
    count: Arc<AtomicU64>,
    running: Option<(Arc<tiny_http::Server>, JoinHandle<()>)>,
}

impl Webhook {
    pub fn start(faults: Faults) -> Webhook {
        let mut hook = Webhook {
            port: super::free_port(),
            log: Arc::default(),
            faults: Arc::new(Mutex::new(faults)),
            count: Arc::default(),
            running: None,
        };
        hook.restart();
        hook
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/events", self.port)
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Polls until `done` holds for the log (60 s at most).
    pub fn log_until(&self, what: &str, mut done: impl FnMut(&[Received]) -> bool) -> Vec<Received> {
        let mut log = self.log();
        super::until(what, || {
            log = self.log();
            done(&log)
        });
        log
    }

    /// Starts serving (again) on the same port.
    pub fn restart(&mut self) {
        let server = loop {
            match tiny_http::Server::http(("127.0.0.1", self.port)) {
                Ok(server) => break Arc::new(server),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let (log, faults, count, serving) = (self.log.clone(), self.faults.clone(), self.count.clone(), server.clone());
        let thread = std::thread::spawn(move || {
            while let Ok(request) = serving.recv() {
                let (log, faults, n) = (log.clone(), faults.clone(), count.fetch_add(1, Ordering::SeqCst) + 1);
                std::thread::spawn(move || answer(request, n, &log, &faults));
            }
        });
        self.running = Some((server, thread));
    }

    /// Stops serving: connections are refused until `restart`.
    pub fn stop(&mut self) {
        if let Some((server, thread)) = self.running.take() {
            server.unblock();
            thread.join().unwrap();
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(mut request: tiny_http::Request, n: u64, log: &Mutex<Vec<Received>>, faults: &Mutex<Faults>) {
    let mut body = String::new();
    if request.as_reader().read_to_string(&mut body).is_err() {
        return;
    }
    let headers: Vec<(String, String)> =
        request.headers().iter().map(|h| (h.field.to_string(), h.value.to_string())).collect();
    let key = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("idempotency-key")).map(|(_, v)| v.clone());
    let (status, text, delay) = {
        let f = faults.lock().unwrap();
        match &f.refuse {
            Some((status, text)) => (*status, text.clone(), Duration::ZERO),
            None if n.is_multiple_of(f.fail_every) => (503, "try later".to_string(), Duration::ZERO),
            None if n.is_multiple_of(f.slow_every) => (200, "ok".to_string(), f.delay),
            None => (200, "ok".to_string(), Duration::ZERO),
        }
    };
    let received = Received { key: key.unwrap_or_default(), headers, body, status, applied: status == 200 };
    log.lock().unwrap().push(received);
    std::thread::sleep(delay);
    let _ = request.respond(tiny_http::Response::from_string(text).with_status_code(status));
}
