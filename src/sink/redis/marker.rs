//! The markers as `status` reads them: which streams in a Redis continue a position, and how far
//! Redis holds each.
//!
//! Invariant: reads only (SCAN, HMGET); changes nothing.

use std::time::Duration;

use anyhow::{Context as _, Result};
use redis::Commands as _;
use serde::Serialize;

use super::config::{RedisSettings, MARKER_PREFIX};
use crate::sink::LastRead;

/// One marker naming the position.
#[derive(Debug, Serialize)]
pub struct Delivered {
    pub key: String,
    /// The last batch applied.
    pub batch: String,
    /// The last entry delivered, per binlog series: `ORIGIN/INDEX`.
    pub through: Vec<String>,
    /// The last snapshot read delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<LastRead>,
}

/// The markers of the streams that continue the position `position` (its id).
pub fn delivered(settings: &RedisSettings, position: &str) -> Result<Vec<Delivered>> {
    let url = settings.shown_url();
    let mut conn = settings
        .client()?
        .get_connection_with_timeout(Duration::from_secs(10))
        .with_context(|| format!("cannot use Redis at {url}"))?;
    let listed: Result<Vec<String>, _> = conn
        .scan_match(format!("{MARKER_PREFIX}*"))
        .with_context(|| format!("cannot list the markers in Redis at {url}"))?
        .collect();
    let mut keys = listed?;
    keys.sort();
    let mut found = Vec::new();
    for key in keys {
        let (of, batch, through, read): (Option<String>, Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET").arg(&key).arg("position").arg("batch").arg("through").arg("read").query(&mut conn)?;
        if of.as_deref() == Some(position) {
            let through = through.unwrap_or_default().lines().map(str::to_string).collect();
            let read = read.as_deref().and_then(LastRead::parse);
            found.push(Delivered { key, batch: batch.unwrap_or_default(), through, read });
        }
    }
    Ok(found)
}
