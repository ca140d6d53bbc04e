//! Delivers one batch at a time: journals it, then `POST`s it until the receiver answers 2xx,
//! or refuses it for good.
//!
//! Invariants:
//! - A batch is sent again, unchanged (same body, same `Idempotency-Key`), after a 408, a 429, a
//!   5xx, a timeout or a connection failure, without a time limit; the wait honours `Retry-After`
//!   (seconds or an HTTP date, at most `MAX_WAIT`), else backs off from 100 ms to 5 s. Each
//!   reason is logged (the same one at most every 30 s).
//! - Any other answer but 2xx (3xx, 4xx) is definite: the outcome names the status and the first
//!   line of the body, and the batch counts as not delivered.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, Response, StatusCode};

use super::config::HttpSettings;
use super::error_chain as chain;
use super::journal::Journal;
use crate::metrics::Metrics;
use crate::sink::warn_once;

/// The longest wait a `Retry-After` may ask for.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// Backoff between failed attempts without a `Retry-After`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How much of a refusal's body is read for the error.
const BODY_SHOWN: usize = 4096;

pub struct Batch {
    pub seq: u64,
    pub key: String,
    pub rows: usize,
    pub body: Bytes,
    /// The journal to write, with this state, before the batch is sent.
    pub journal: Option<(Journal, Vec<u8>)>,
}

pub enum Outcome {
    Acked { seq: u64 },
    Refused(String),
}

/// Sends every batch `batches` hands over, in order, reporting each outcome; ends when either
/// side is gone.
pub async fn run(
    settings: HttpSettings,
    client: Client,
    mut batches: tokio::sync::mpsc::Receiver<Batch>,
    outcomes: std::sync::mpsc::Sender<Outcome>,
    metrics: Option<Metrics>,
) {
    let mut logged = HashMap::new();
    while let Some(batch) = batches.recv().await {
        let outcome = deliver(&settings, &client, &batch, metrics.as_ref(), &mut logged).await;
        if outcomes.send(outcome).is_err() {
            return;
        }
    }
}

async fn deliver(
    settings: &HttpSettings,
    client: &Client,
    batch: &Batch,
    metrics: Option<&Metrics>,
    logged: &mut HashMap<String, Instant>,
) -> Outcome {
    if let Some((journal, head)) = &batch.journal {
        if let Err(e) = journal.save(head, &batch.body) {
            return Outcome::Refused(format!("{e:#}"));
        }
    }
    let url = settings.shown_url();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let sent = client
            .post(settings.url.clone())
            .header(CONTENT_TYPE, "application/x-ndjson")
            .header("Idempotency-Key", &batch.key)
            .body(batch.body.clone())
            .send()
            .await;
        let (reason, wait) = match sent {
            Ok(answer) if answer.status().is_success() => {
                if let Some(m) = metrics {
                    m.http_sink().acknowledged(batch.rows, Some(started.elapsed()));
                }
                return Outcome::Acked { seq: batch.seq };
            }
            Ok(answer) => {
                let status = answer.status();
                let retry_after = retry_after(&answer);
                let line = first_line(answer).await;
                if !transient(status) {
                    return Outcome::Refused(format!(
                        "the receiver at {url} refused a batch of {} events with {status}: {line}{}",
                        batch.rows,
                        hint(status, settings)
                    ));
                }
                (format!("it answered {status}: {line}"), retry_after)
            }
            Err(e) if e.is_timeout() => (format!("no answer within {} s", settings.timeout.as_secs_f64()), None),
            Err(e) => (format!("cannot reach it: {}", chain(&e)), None),
        };
        if let Some(m) = metrics {
            m.http_sink().retried(1);
        }
        let wait = wait.unwrap_or(backoff).min(MAX_WAIT);
        let kind = reason.split(':').next().unwrap_or_default().to_string();
        let text = format!("HTTP receiver at {url}: {reason}; sending the batch again in {} ms", wait.as_millis());
        warn_once(logged, &kind, &text);
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Answers worth sending the same request again for.
fn transient(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// What to change for a refusal retrying cannot overcome.
fn hint(status: StatusCode, settings: &HttpSettings) -> String {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => " — check --http-sink-token-file and --http-header".into(),
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            " — lower --http-batch-bytes (now {}) or --http-batch-rows, or raise the receiver's limit",
            settings.batch_bytes
        ),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => " — check the path in --http-url".into(),
        s if s.is_redirection() => " — give the address it redirects to as --http-url".into(),
        _ => String::new(),
    }
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(answer: &Response) -> Option<Duration> {
    let value = answer.headers().get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// The first line of the body (at most `BODY_SHOWN` bytes of it are read).
async fn first_line(mut answer: Response) -> String {
    let mut body = Vec::new();
    while body.len() < BODY_SHOWN {
        match answer.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(BODY_SHOWN);
    let text = String::from_utf8_lossy(&body);
    match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => line.chars().take(300).collect(),
        None => "(no body)".into(),
    }
}
