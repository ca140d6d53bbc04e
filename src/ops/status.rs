//! `binlog-tail status`: the saved position, its age, and with `--url` whether the server can
//! still continue from it (the preflight checks, including the purge and history checks) and how
//! far behind its binlog end it is. Exit code 0 healthy, 1 error, 3 the position is lost
//! (purged, reset or diverged history) — for cron jobs and probes.
//!
//! With `--sink redis`, also how far Redis holds the streams that continue the position; with a
//! position file, the HTTP sink's journal beside it (`POSITION.http`) when there is one: how far
//! the receiver acknowledged, and the batch in flight.
//!
//! Invariants: reads the position file without taking its lock (a running stream holds it), or
//! the position in Kafka without joining the stream's lease, and changes nothing, neither the
//! position nor the server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

use crate::checkpoint::kafka::PositionReader;
use crate::checkpoint::read_position;
use crate::cli::{PositionStoreKind, SinkKind, StatusArgs};
use crate::config::{check_stream_name, kafka_connection, redis_settings, server_config};
use crate::error::{Purged, Usage};
use crate::history::binlogs;
use crate::metrics::ReadPosition;
use crate::ops::behind::bytes_behind;
use crate::position::Position;
use crate::preflight::{self, Status};
use crate::sink::http::journal::{Journal, State};
use crate::source::connection::{connect, connect_opts, flavor_of, redact};
use crate::text::Escaped;

#[derive(Serialize)]
struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    position_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position_kafka: Option<KafkaLocation>,
    position: Position,
    /// Seconds since the position file was written.
    age_seconds: u64,
    server: Option<ServerReport>,
    /// With `--sink redis`: the markers of the streams that continue this position.
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<Vec<crate::sink::redis::marker::Delivered>>,
    /// The HTTP sink's journal beside the position file, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<HttpReport>,
    /// Why `status` fails (its exit code is not 0), or absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The HTTP sink's journal: its file and what it holds (the batch in flight without its body).
#[derive(Serialize)]
struct HttpReport {
    journal: String,
    #[serde(flatten)]
    state: State,
}

/// Where a position in Kafka is.
#[derive(Serialize)]
struct KafkaLocation {
    topic: String,
    key: String,
}

#[derive(Serialize)]
struct ServerReport {
    url: String,
    /// Bytes from the saved position to the server's binlog end (same server only).
    behind_bytes: Option<u64>,
    checks: Vec<CheckReport>,
}

#[derive(Serialize)]
struct CheckReport {
    name: &'static str,
    status: &'static str,
    detail: String,
    fix: Option<String>,
}

/// The saved position and how old it is, from the file or from Kafka.
fn saved(args: &StatusArgs) -> Result<Report> {
    let report = |position, age: Option<Duration>| Report {
        position_file: None,
        position_kafka: None,
        position,
        age_seconds: age.map_or(0, |d| d.as_secs()),
        server: None,
        redis: None,
        http: None,
        error: None,
    };
    let Some(path) = &args.position_file else {
        if args.position_store != Some(PositionStoreKind::Kafka) {
            return Err(Usage("give --position-file PATH, or --position-store kafka with --stream-name".into()).into());
        }
        let name = check_stream_name(
            args.stream_name
                .as_deref()
                .context("--position-store kafka needs --stream-name: the stream whose position to report")?,
        )?;
        let topic = args.kafka_position_topic.clone();
        let settings = kafka_connection(args.kafka_brokers.clone(), &args.kafka_property)?;
        let reader = PositionReader::new(&settings, &topic, &name)?;
        let saved = reader.read()?.with_context(|| {
            format!(
                "there is no position in Kafka topic {topic} under key {name}: nothing was streamed under that name yet (check --stream-name)"
            )
        })?;
        let written =
            saved.written_ms.and_then(|ms| u64::try_from(ms).ok()).map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
        let age = written.and_then(|t| SystemTime::now().duration_since(t).ok());
        return Ok(Report { position_kafka: Some(KafkaLocation { topic, key: name }), ..report(saved.position, age) });
    };
    let position = read_position(path)?.with_context(|| {
        format!("there is no position file {}: nothing was streamed with it yet (check the path)", path.display())
    })?;
    let age =
        std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| SystemTime::now().duration_since(t).ok());
    let journal = Journal::beside(path);
    let http = journal.load()?.map(|(state, _)| HttpReport { journal: journal.path().display().to_string(), state });
    Ok(Report { position_file: Some(path.display().to_string()), http, ..report(position, age) })
}

/// Prints the report; with `--json` always one JSON object on stdout, whose `error` holds the
/// error a failure exits with (the report's other fields only when there is a report).
pub fn status(args: StatusArgs) -> Result<()> {
    let (mut report, verdict) = match check(&args) {
        Ok(checked) => checked,
        Err(e) => {
            if args.json {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            }
            return Err(e);
        }
    };
    if args.json {
        report.error = verdict.as_ref().err().map(|e| format!("{e:#}"));
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    verdict
}

/// The saved position and, with `--url`, the server's view of it; the verdict fails when the
/// server cannot continue from the position.
fn check(args: &StatusArgs) -> Result<(Report, Result<()>)> {
    let mut report = saved(args)?;
    let mut lost = None;
    let mut failed = None;
    if args.server.url.is_some() {
        let cfg = server_config(&args.server, false)?;
        let opts = connect_opts(&cfg)?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let saved = &report.position;
        let (checks, behind) = rt.block_on(async {
            let mut conn = connect(&opts, cfg.wait_for_server).await?;
            let (flavor, _) = flavor_of(&mut conn).await?;
            let checks = preflight::run(&mut conn, flavor, Some(saved), true).await?;
            let same_server = preflight::identity(&mut conn, flavor).await? == saved.server;
            let read = ReadPosition { file: saved.file.as_str().into(), offset: saved.offset };
            let behind = if same_server { bytes_behind(&binlogs(&mut conn).await?, &read) } else { None };
            anyhow::Ok((checks, behind))
        })?;
        for c in checks.iter().filter(|c| c.status == Status::Fail) {
            let text = format!("{}: {}", c.name, c.detail);
            if c.lost {
                lost.get_or_insert(text);
            } else {
                failed.get_or_insert(text);
            }
        }
        let checks = checks
            .into_iter()
            .map(|c| CheckReport {
                name: c.name,
                status: match c.status {
                    Status::Pass => "pass",
                    Status::Warn => "warn",
                    Status::Fail => "fail",
                },
                detail: c.detail,
                fix: c.fix,
            })
            .collect();
        report.server = Some(ServerReport { url: redact(&cfg.url), behind_bytes: behind, checks });
    }
    if args.sink == Some(SinkKind::Redis) {
        let id = report.position.stream_id.clone().unwrap_or_default();
        report.redis = Some(crate::sink::redis::marker::delivered(&redis_settings(args.redis.clone())?, &id)?);
    }
    let verdict = match (lost, failed) {
        (Some(text), _) => Err(Purged(format!("the server cannot continue from the saved position: {text}")).into()),
        (None, Some(text)) => Err(anyhow!("the server is not ready to continue from the saved position: {text}")),
        (None, None) => Ok(()),
    };
    Ok((report, verdict))
}

fn print_text(r: &Report) {
    let p = &r.position;
    if let Some(file) = &r.position_file {
        println!("position file  {file}");
    }
    if let Some(k) = &r.position_kafka {
        println!("position in    Kafka topic {}, key {}", k.topic, k.key);
    }
    println!("flavor         {}", p.flavor);
    println!("gtid set       {}", p.gtid_set.as_deref().unwrap_or("-"));
    println!("file:offset    {}:{}", p.file, p.offset);
    println!("server         {}", p.server);
    println!("written        {} ({} s ago)", p.updated_at, r.age_seconds);
    if let Some(s) = &p.snapshot {
        match s.pending.first() {
            Some([db, table]) => {
                println!(
                    "snapshot       {} table(s) done, {} left, reading `{}`.`{}`",
                    s.done,
                    s.pending.len(),
                    Escaped(db),
                    Escaped(table)
                )
            }
            None => println!("snapshot       complete: {} table(s)", s.done),
        }
    }
    for d in r.redis.iter().flatten() {
        println!("redis          {} holds through {} (batch {})", d.key, d.through.join(", "), d.batch);
        if let Some(read) = &d.read {
            println!("redis          {} holds snapshot reads through {}", d.key, read.to_json());
        }
    }
    if r.redis.as_ref().is_some_and(Vec::is_empty) {
        println!("redis          no marker continues this position: nothing delivered to Redis yet");
    }
    if let Some(h) = &r.http {
        print_journal(h);
    }
    if let Some(s) = &r.server {
        println!("checked on     {}", s.url);
        match s.behind_bytes {
            Some(b) => println!("behind         {b} bytes"),
            None => println!("behind         unknown (another server, or the file is no longer there)"),
        }
        for c in &s.checks {
            println!("{:<5}          {}: {}", c.status.to_uppercase(), c.name, c.detail);
        }
    }
}

/// The HTTP journal: what the receiver acknowledged, and what is in flight.
fn print_journal(h: &HttpReport) {
    println!("http journal   {} (stream {})", h.journal, h.state.stream);
    match &h.state.acked {
        Some(a) => {
            let last = if a.last.is_empty() { "no change event" } else { a.last.as_str() };
            let whole = if a.complete { "its transaction whole" } else { "inside its transaction" };
            let place = a.place.as_ref().map(|p| format!(", transactions up to {}:{}", p.file, p.offset));
            println!("http acked     through {last} ({whole}){}", place.unwrap_or_default());
            if let Some(read) = &a.read {
                println!("http acked     snapshot reads through {}", read.to_json());
            }
        }
        None => println!("http acked     nothing yet"),
    }
    match &h.state.in_flight {
        Some(f) => println!(
            "http in flight batch {}: {} events, {} bytes{} (sent again first on the next start)",
            f.key,
            f.rows,
            f.bytes,
            if f.complete { "" } else { ", part of a transaction" }
        ),
        None => println!("http in flight none"),
    }
}
