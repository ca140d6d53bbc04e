//! The event loop shared by `dump` and `stream`: server events into the decoder, and every
//! point between transactions offered to the snapshot.

use std::time::Duration;

use anyhow::Result;
use mysql_common::binlog::consts::EventType;

use crate::decode::{Decoder, Flow};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sink::Sink;
use crate::snapshot::{Snapshot, Snapshotting};
use crate::source::server::{Next, ServerSource};

/// How often an idle stream wakes up to save a checkpoint that fell due.
const IDLE_WAKEUP: Duration = Duration::from_millis(250);

/// When `run` returns by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// At the end of the stream (never, when following).
    End,
    /// When the snapshot (if any) has been emitted and the stream has nothing more to send now.
    SnapshotDone,
}

/// Feeds server events to the decoder until the stream ends, the limit is reached, or a shutdown
/// was requested and no transaction is open. A snapshot gets every point between transactions.
pub fn run(
    source: &mut ServerSource,
    decoder: &mut Decoder,
    sink: &mut dyn Sink,
    shutdown: &Shutdown,
    mut snapshot: Option<&mut Snapshot>,
    until: Until,
    metrics: &Metrics,
) -> Result<()> {
    // The last point between transactions, where an idle stream stands.
    let (mut at_file, mut at_offset) = (source.start.file.clone(), source.start.offset);
    loop {
        if shutdown.requested() && (!decoder.in_transaction() || shutdown.forced()) || decoder.limit_reached() {
            return Ok(());
        }
        let next = match source.try_next()? {
            Next::Idle => {
                if let Some(snap) = snapshot.as_deref_mut() {
                    snap.reached(&at_file, at_offset, &decoder.gtids, sink, shutdown)?;
                }
                if until == Until::SnapshotDone && snapshot.as_deref().is_none_or(Snapshot::complete) {
                    return Ok(());
                }
                // Flushing when idle also saves a due checkpoint; waking up now and then lets a
                // checkpoint that fell due while waiting be saved too.
                sink.flush()?;
                source.next_blocking(&shutdown.notify, IDLE_WAKEUP)?
            }
            other => other,
        };
        match next {
            Next::Event(ev) => {
                let h = ev.header;
                let next_offset = u64::from(h.log_pos);
                let offset = next_offset.saturating_sub(u64::from(h.event_size));
                let flow = match snapshot.as_deref_mut() {
                    Some(snap) => decoder.feed(
                        ev.raw(),
                        offset,
                        next_offset,
                        &mut Snapshotting { sink: &mut *sink, snapshot: snap },
                    )?,
                    None => decoder.feed(ev.raw(), offset, next_offset, sink)?,
                };
                metrics.event_read(&h, decoder.file(), next_offset);
                metrics.set_rows_events_filtered(decoder.stats.filtered_events);
                if flow == Flow::Stop {
                    return Ok(());
                }
                // Artificial events (log_pos 0) and rotations do not mark a place in the file.
                let marks_a_place = h.log_pos != 0 && h.type_code != EventType::ROTATE_EVENT as u8;
                if let Some(snap) = snapshot.as_deref_mut().filter(|_| marks_a_place) {
                    if !decoder.in_transaction() {
                        (at_file, at_offset) = (decoder.file().clone(), next_offset);
                        snap.reached(&at_file, at_offset, &decoder.gtids, sink, shutdown)?;
                    }
                }
            }
            Next::End => return Ok(()),
            Next::Idle | Next::Interrupted => {}
        }
    }
}
