//! `binlog-tail stream`: the supervisor. It opens the position store, and with the Kafka store
//! waits for the lease; then runs terms (see `term`) until a stop or a definite error, starting
//! a new term after a handover or a Kafka producer restart.
//!
//! Invariants: only the lease holder streams; a producer restart that does not move the
//! position on counts towards `MAX_RESTARTS`, after which the error stands.

use std::sync::Arc;

use anyhow::Result;
use tokio::runtime::Runtime;

use super::runtime;
use super::term::term;
use crate::checkpoint::kafka::KafkaPositions;
use crate::checkpoint::lease::Lease;
use crate::checkpoint::{self, PositionFile, PositionStore};
use crate::cli::{SinkKind, StreamArgs};
use crate::config::{PositionSettings, StreamSettings};
use crate::error::Restart;
use crate::metrics::Metrics;
use crate::ops;
use crate::position::Position;
use crate::shutdown::Shutdown;
use crate::sink::stdout::{self, Closed};
use crate::snapshot::requests::Requests;
use crate::source::connection::connect_opts;

/// Producer restarts in a row, without progress, after which the error stands.
const MAX_RESTARTS: u32 = 5;

pub fn stream(args: StreamArgs) -> Result<()> {
    supervise(StreamSettings::resolve(args)?).map_err(|e| {
        if e.chain().any(|c| c.is::<Closed>()) {
            // Unlike `dump | head`, a stream's reader going away is a failure: say so.
            anyhow::anyhow!(
                "stdout was closed by its reader; the position file holds the last transaction written before that"
            )
        } else {
            e
        }
    })
}

fn supervise(settings: StreamSettings) -> Result<()> {
    if settings.sink == SinkKind::Stdout {
        stdout::check_delivers(settings.allow_discard)?;
    }
    let rt = runtime()?;
    let shutdown = Shutdown::install(&rt)?;
    let metrics = Metrics::new();
    let requests = Requests::default();
    // An overdue heartbeat makes the lag grow (a frozen server), before the connection is given up.
    metrics.set_heartbeat(settings.server.heartbeat);
    if let Some(addr) = settings.metrics_addr {
        // Before the store, whose checks wait while Kafka cannot be reached: probes answer meanwhile.
        ops::http::serve(addr, metrics.clone(), requests.clone(), settings.http_token.clone())?;
    }
    let (store, lease) = open_store(&settings, &rt, &shutdown, &metrics)?;
    ops::behind::spawn(rt.handle(), connect_opts(&settings.server)?, metrics.clone());
    let mut restarts = Restarts::default();
    // For positions saved without one (version 1), one stream id for the whole process, so a
    // restarted term still recognises what the one before it sent.
    let mut new_id = (checkpoint::new_id(), false);
    loop {
        let held = match &lease {
            Some(lease) => {
                metrics.set_lease_held(false);
                match lease.wait() {
                    Some(held) => Some(held),
                    None => return Ok(()), // stopped while standing by
                }
            }
            None => None,
        };
        metrics.set_lease_held(true);
        let result = term(&settings, &store, &mut new_id, &rt, (&shutdown, &metrics, &requests));
        if let Some(held) = held {
            held.end(result.is_ok());
        }
        metrics.set_ready(false);
        if shutdown.handing_over() {
            // The lease went to another instance: stand by again.
            if let Err(e) = &result {
                tracing::info!("the stream stopped for the handover: {e:#}");
            }
            shutdown.handed_over();
            continue;
        }
        match result {
            // After a stop request, what could not be delivered stays an error, as at any stop.
            Err(e) if e.chain().any(|c| c.is::<Restart>()) && !shutdown.requested() => {
                restarts.record(store.load()?, e)?
            }
            other => return other,
        }
    }
}

/// Producer restarts in a row that did not move the position on.
#[derive(Default)]
struct Restarts {
    count: u32,
    at: Option<Position>,
}

impl Restarts {
    /// Records a restart after `err`, with the position now saved; an error once restarting
    /// stops helping.
    fn record(&mut self, now: Option<Position>, err: anyhow::Error) -> Result<()> {
        let moved = match (&self.at, &now) {
            (Some(a), Some(b)) => !a.same_place(b),
            (None, None) => false,
            _ => true,
        };
        self.count = if moved { 1 } else { self.count + 1 };
        self.at = now;
        if self.count > MAX_RESTARTS {
            return Err(err.context(format!(
                "the Kafka producer failed {} times in a row without delivering anything, and was restarted {MAX_RESTARTS} times",
                self.count
            )));
        }
        tracing::warn!(
            "{err:#}; starting again from the acknowledged position with a new Kafka producer (restart {} of at most {MAX_RESTARTS} without progress)",
            self.count
        );
        Ok(())
    }
}

/// The position store, and with the Kafka store the lease only whose holder streams.
fn open_store(
    settings: &StreamSettings,
    rt: &Runtime,
    shutdown: &Arc<Shutdown>,
    metrics: &Metrics,
) -> Result<(PositionStore, Option<Lease>)> {
    match &settings.position {
        PositionSettings::File(path) => Ok((PositionStore::File(PositionFile::open(path)?), None)),
        PositionSettings::Kafka { topic, name, lease_timeout } => {
            let kafka = settings.kafka.as_ref().expect("the Kafka store comes with the Kafka sink");
            let lease = Lease::join(kafka, topic, name, *lease_timeout, shutdown.clone(), metrics.clone())?;
            let positions = KafkaPositions::open(kafka, topic, name, lease.holder(), shutdown.clone())?;
            positions.check_topic(kafka, rt.handle())?;
            Ok((PositionStore::Kafka(positions), Some(lease)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Option<Position> {
        let text = format!(
            r#"{{"version":2,"file":"b.000001","offset":{offset},"gtid_set":null,"flavor":"mariadb","server":{{"server_id":1,"uuid":null,"hostname":"h"}},"updated_at":"now"}}"#
        );
        Some(Position::parse(&text).expect("a position"))
    }

    #[test]
    fn restarts_stop_after_the_limit_and_say_how_many_failures_there_were() {
        let mut restarts = Restarts::default();
        let err = || anyhow::anyhow!("fatal");
        restarts.record(at(4), err()).unwrap();
        for _ in 1..MAX_RESTARTS {
            restarts.record(at(4), err()).unwrap();
        }
        // Progress starts the count again.
        restarts.record(at(100), err()).unwrap();
        assert_eq!(restarts.count, 1);
        for _ in 1..MAX_RESTARTS {
            restarts.record(at(100), err()).unwrap();
        }
        let stop = restarts.record(at(100), err()).unwrap_err();
        assert_eq!(restarts.count, MAX_RESTARTS + 1);
        assert!(stop.to_string().contains(&format!("failed {} times", MAX_RESTARTS + 1)), "{stop}");
    }
}
