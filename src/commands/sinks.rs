//! The sink a stream writes to, built in one place: stdout, or Kafka, NATS or Redis with their
//! deduplication stream, each with the encoder of the chosen format, and behind the lease's fence
//! when the position is kept in Kafka.

use std::io::{self, BufWriter, StdoutLock};
use std::sync::Arc;

use anyhow::Result;

use crate::checkpoint::lease::Fenced;
use crate::checkpoint::PositionStore;
use crate::cli::SinkKind;
use crate::config::StreamSettings;
use crate::format::{Encoder, FormatSettings};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sink::kafka::{dedupe, KafkaSink};
use crate::sink::nats::NatsSink;
use crate::sink::redis::RedisSink;
use crate::sink::stdout::StdoutSink;
use crate::sink::Sink;

/// JSON lines on stdout, buffered.
pub fn stdout(format: FormatSettings) -> StdoutSink<BufWriter<StdoutLock<'static>>> {
    StdoutSink::new(BufWriter::with_capacity(256 * 1024, io::stdout().lock()), Encoder::new(format))
}

/// The sink of `stream`, for a term on the position of `stream_id` kept in `store`; `new_stream`
/// says that nothing was ever sent under that id (so Kafka or NATS holds nothing of it to skip).
/// With the position in Kafka, only the lease holder sends (`Fenced`).
pub fn output(
    settings: &StreamSettings,
    store: &PositionStore,
    (stream_id, new_stream): (&str, bool),
    shutdown: &Arc<Shutdown>,
    metrics: &Metrics,
) -> Result<Box<dyn Sink>> {
    let out = target(settings, stream_id, new_stream, shutdown, metrics)?;
    Ok(match store {
        PositionStore::Kafka(kafka) => Box::new(Fenced::new(out, kafka.lease())),
        PositionStore::File(_) => out,
    })
}

/// The sink that delivers to the chosen target.
fn target(
    settings: &StreamSettings,
    stream_id: &str,
    new_stream: bool,
    shutdown: &Arc<Shutdown>,
    metrics: &Metrics,
) -> Result<Box<dyn Sink>> {
    let format = settings.format.clone();
    let stream = dedupe::stream_name(stream_id, &settings.message_identity);
    match (settings.sink, &settings.kafka, &settings.nats) {
        (SinkKind::Nats, _, Some(nats)) => {
            let encoder = Encoder::new(format);
            let sink =
                NatsSink::new(nats.clone(), encoder, shutdown.clone(), stream, new_stream, Some(metrics.clone()))?;
            Ok(Box::new(sink))
        }
        (SinkKind::Redis, _, _) if settings.redis.is_some() => {
            let redis = settings.redis.clone().expect("checked");
            let names = (stream, stream_id);
            let sink = RedisSink::new(redis, Encoder::new(format), shutdown.clone(), names, Some(metrics.clone()))?;
            Ok(Box::new(sink))
        }
        (SinkKind::Kafka, Some(kafka), _) => {
            let mut kafka = KafkaSink::new(kafka.clone(), Encoder::new(format), shutdown.clone(), stream)?;
            if new_stream {
                kafka.new_stream();
            }
            kafka.set_metrics(metrics.clone());
            Ok(Box::new(kafka))
        }
        _ => Ok(Box::new(stdout(format))),
    }
}
