//! The sink a stream writes to, built in one place: stdout, or Kafka, NATS, Redis or HTTP with their
//! deduplication stream, each with the encoder of the chosen format, and behind the lease's fence
//! when the position is kept in Kafka.

use std::io::{self, StdoutLock};
use std::sync::Arc;

use anyhow::Result;

use crate::checkpoint::lease::Fenced;
use crate::checkpoint::PositionStore;
use crate::cli::SinkKind;
use crate::config::StreamSettings;
use crate::format::{Encoder, FormatSettings};
use crate::metrics::Metrics;
use crate::position::Position;
use crate::shutdown::Shutdown;
use crate::sink::http::HttpSink;
use crate::sink::kafka::KafkaSink;
use crate::sink::nats::NatsSink;
use crate::sink::order;
use crate::sink::redis::RedisSink;
use crate::sink::stdout::StdoutSink;
use crate::sink::Sink;

/// JSON lines on stdout (the sink buffers them).
pub fn stdout(format: FormatSettings) -> StdoutSink<StdoutLock<'static>> {
    StdoutSink::new(io::stdout().lock(), Encoder::new(format))
}

/// The sink of `stream`, for a term on the position of `stream_id` kept in `store`, which held
/// `saved` at the term's start; `new_stream` says that nothing was ever sent under that id (so
/// Kafka or NATS holds nothing of it to skip). With the position in Kafka, only the lease holder
/// sends (`Fenced`).
pub fn output(
    settings: &StreamSettings,
    (store, saved): (&PositionStore, Option<&Position>),
    (stream_id, new_stream): (&str, bool),
    shutdown: &Arc<Shutdown>,
    metrics: &Metrics,
) -> Result<Box<dyn Sink>> {
    let out = target(settings, (store, saved), (stream_id, new_stream), shutdown, metrics)?;
    Ok(match store {
        PositionStore::Kafka(kafka) => Box::new(Fenced::new(out, kafka.lease())),
        PositionStore::File(_) => out,
    })
}

/// The sink that delivers to the chosen target.
fn target(
    settings: &StreamSettings,
    (store, saved): (&PositionStore, Option<&Position>),
    (stream_id, new_stream): (&str, bool),
    shutdown: &Arc<Shutdown>,
    metrics: &Metrics,
) -> Result<Box<dyn Sink>> {
    let format = settings.format.clone();
    let stream = order::stream_name(stream_id, &settings.message_identity);
    // `StreamSettings::resolve` sets the settings of the chosen sink.
    let missing = || anyhow::anyhow!("no settings for --sink {:?}", settings.sink);
    let observed = Some(metrics.clone());
    Ok(match settings.sink {
        SinkKind::Stdout => Box::new(stdout(format)),
        SinkKind::Kafka => {
            let kafka_settings = settings.kafka.clone().ok_or_else(missing)?;
            let mut kafka = KafkaSink::new(kafka_settings, Encoder::new(format), shutdown.clone(), stream)?;
            if new_stream {
                kafka.new_stream();
            }
            kafka.resume(saved)?;
            kafka.set_metrics(metrics.clone());
            Box::new(kafka)
        }
        SinkKind::Nats => {
            let nats = settings.nats.clone().ok_or_else(missing)?;
            let encoder = Encoder::new(format);
            Box::new(NatsSink::new(nats, encoder, shutdown.clone(), (stream, new_stream), saved, observed)?)
        }
        SinkKind::Redis => {
            let redis = settings.redis.clone().ok_or_else(missing)?;
            Box::new(RedisSink::new(
                redis,
                Encoder::new(format),
                shutdown.clone(),
                (stream, stream_id, saved),
                observed,
            )?)
        }
        SinkKind::Http => {
            let http = settings.http.clone().ok_or_else(missing)?;
            let PositionStore::File(file) = store else {
                anyhow::bail!("--sink http keeps its journal beside --position-file");
            };
            let encoder = Encoder::new(format);
            Box::new(HttpSink::new(http, encoder, shutdown.clone(), stream, new_stream, file.path(), saved, observed)?)
        }
    })
}
