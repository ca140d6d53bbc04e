//! `binlog-tail check`: the preflight checks against a server, printed one per line, and
//! whether a saved position is still on it; with `--sink redis`, the Redis sink's checks too.

use anyhow::{bail, Result};

use super::runtime;
use crate::checkpoint::PositionFile;
use crate::cli::{CheckArgs, SinkKind};
use crate::config::{redis_settings, server_config};
use crate::preflight::{self, Status};
use crate::source::connection::{connect, connect_opts, flavor_of, redact};

pub fn check(args: CheckArgs) -> Result<()> {
    let cfg = server_config(&args.server, false)?;
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
        preflight::run(&mut conn, flavor, saved.as_ref(), true).await
    })?;
    if args.sink == Some(SinkKind::Redis) {
        checks.extend(crate::sink::redis::preflight::run(&redis_settings(args.redis)?));
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
