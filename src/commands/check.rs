//! `binlog-tail check`: the preflight checks against a server, printed one per line, whether a
//! saved position is still on it, and the sink's own checks (`--sink http`: the receiver answers;
//! `--sink redis`: reachable, standalone, persistence).

use anyhow::{bail, Result};

use super::runtime;
use crate::checkpoint::PositionFile;
use crate::cli::{CheckArgs, SinkKind};
use crate::config::{http_settings, redis_settings, server_config};
use crate::preflight::{self, Check, Status};
use crate::sink::http::config::HttpSettings;
use crate::source::connection::{connect, connect_opts, flavor_of, redact};

pub fn check(args: CheckArgs) -> Result<()> {
    let cfg = server_config(&args.server, false)?;
    let http = match args.sink {
        Some(SinkKind::Http) => Some(http_settings(args.http)?),
        _ => None,
    };
    let redis = match args.sink {
        Some(SinkKind::Redis) => Some(redis_settings(args.redis)?),
        _ => None,
    };
    let saved = match &args.position_file {
        Some(path) => PositionFile::open(path)?.load()?,
        None => None,
    };
    let rt = runtime()?;
    let opts = connect_opts(&cfg)?;
    let mut checks = rt.block_on(async {
        let mut conn = connect(&opts, cfg.wait_for_server).await?;
        let (flavor, version) = flavor_of(&mut conn).await?;
        println!("server {} ({version})", redact(&cfg.url));
        let mut checks = preflight::run(&mut conn, flavor, saved.as_ref(), true).await?;
        if let Some(http) = &http {
            checks.push(http_receiver(http).await?);
        }
        anyhow::Ok(checks)
    })?;
    if let Some(redis) = &redis {
        checks.extend(crate::sink::redis::preflight::run(redis));
    }
    for c in &checks {
        println!("{c}");
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    println!("{} passed, {failed} failed, {warned} warnings", checks.len() - failed - warned);
    if failed > 0 {
        bail!("{failed} check(s) failed: streaming from this server could lose or corrupt events");
    }
    Ok(())
}

/// The HTTP receiver answers a `HEAD` of `--http-url` (any status but 401/403 will do: it is
/// there and reachable; a `POST` would be a batch).
async fn http_receiver(settings: &HttpSettings) -> Result<Check> {
    let url = settings.shown_url();
    let answer = settings.client()?.head(settings.url.clone()).send().await;
    let (status, detail, fix) = match answer {
        Ok(a) if matches!(a.status().as_u16(), 401 | 403) => (
            Status::Fail,
            format!("{url} refused the credentials ({})", a.status()),
            Some("check --http-sink-token-file and --http-header".to_string()),
        ),
        Ok(a) => (Status::Pass, format!("{url} answers ({} to HEAD)", a.status()), None),
        Err(e) => (
            Status::Fail,
            format!("cannot reach {url}: {}", crate::sink::http::error_chain(&e)),
            Some("check --http-url, the receiver and --http-tls-ca".to_string()),
        ),
    };
    Ok(Check { name: "http receiver", status, detail, fix, lost: false })
}
