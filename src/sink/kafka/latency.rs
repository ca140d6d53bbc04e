//! How long Kafka takes to acknowledge a transaction: from reading its end in the binlog to the
//! acknowledgement of its last message. Logged every minute and for the whole run at exit, so an
//! operator sees a slow broker before the position file falls behind.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const REPORT_EVERY: Duration = Duration::from_secs(60);

pub struct AckLatency {
    period: Histogram<u64>,
    run: Histogram<u64>,
    reported: Instant,
}

fn histogram() -> Histogram<u64> {
    // Microseconds up to an hour, three significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

fn summary(h: &Histogram<u64>) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "{} transactions, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    )
}

impl AckLatency {
    pub fn new() -> AckLatency {
        AckLatency { period: histogram(), run: histogram(), reported: Instant::now() }
    }

    /// A transaction whose end was read at `read` was acknowledged at `acked`.
    pub fn acknowledged(&mut self, read: Instant, acked: Instant) {
        let us = (acked.duration_since(read).as_micros() as u64).clamp(1, 3_600_000_000);
        self.period.saturating_record(us);
        self.run.saturating_record(us);
        if self.reported.elapsed() >= REPORT_EVERY {
            tracing::info!("Kafka acknowledgement latency, last minute: {}", summary(&self.period));
            self.period.reset();
            self.reported = Instant::now();
        }
    }

    /// The figures for the whole run, when there are any.
    pub fn run_summary(&self) -> Option<String> {
        (!self.run.is_empty()).then(|| summary(&self.run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_in_milliseconds() {
        let mut l = AckLatency::new();
        assert_eq!(l.run_summary(), None);
        let now = Instant::now();
        for ms in [1u64, 2, 3, 4, 100] {
            l.acknowledged(now, now + Duration::from_millis(ms));
        }
        let s = l.run_summary().unwrap();
        assert!(s.starts_with("5 transactions, p50 3.0 ms, p99 100."), "{s}");
    }
}
