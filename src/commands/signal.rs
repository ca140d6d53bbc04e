//! `binlog-tail snapshot`: asks a running stream for an incremental snapshot (or to stop one),
//! over the stream's HTTP endpoint or with a row in its signal table.

use anyhow::Result;

use super::runtime;
use crate::cli::SignalArgs;
use crate::config::{parse_table, read_token, server_config};
use crate::error::Usage;
use crate::source::connection::{connect, connect_opts};

pub fn signal(args: SignalArgs) -> Result<()> {
    for t in &args.table {
        crate::filter::TablePattern::parse(t).map_err(|e| Usage(format!("--table: {e:#}")))?;
    }
    let kind = if args.stop { "stop-snapshot" } else { "execute-snapshot" };
    if let Some(to) = &args.to {
        let token = args.token_file.as_deref().map(|f| read_token(f, "--token-file")).transpose()?;
        let body = serde_json::json!({"type": kind, "data-collections": args.table}).to_string();
        println!("{}", post(to, token.as_deref(), &body)?);
        return Ok(());
    }
    let (db, table) = parse_table(args.signal_table.as_deref().expect("clap requires --to or --signal-table"))?;
    let cfg = server_config(&args.server, false)?;
    let opts = connect_opts(&cfg)?;
    let data = serde_json::json!({"data-collections": args.table, "type": "incremental"}).to_string();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let id = format!("binlog-tail-{nanos}-{}", std::process::id());
    let rt = runtime()?;
    rt.block_on(async {
        use mysql_async::prelude::Queryable;
        let mut conn = connect(&opts, cfg.wait_for_server).await?;
        if !args.stop {
            // Said to the requester now, not only in the stream's log: a pattern matching no table.
            crate::snapshot::check_request(&mut conn, &args.table, &crate::filter::Filter::default()).await?;
        }
        let sql = format!(
            "INSERT INTO `{}`.`{}` (id, type, data) VALUES (?, ?, ?)",
            db.replace('`', "``"),
            table.replace('`', "``")
        );
        conn.exec_drop(sql, (&id, kind, &data)).await.map_err(|e| match &e {
            mysql_async::Error::Server(s) if s.code == 1146 => anyhow::anyhow!(
                "the signal table `{db}`.`{table}` does not exist: create it with CREATE TABLE `{db}`.`{table}` {}",
                crate::signal::SIGNAL_TABLE_DDL
            ),
            mysql_async::Error::Server(s) if s.code == 1142 => anyhow::anyhow!(
                "user `{}` may not write the signal table: GRANT INSERT ON `{db}`.`{table}` TO ... ({})",
                opts.user().unwrap_or(""),
                s.message
            ),
            _ => anyhow::anyhow!("cannot write the signal row: {e}"),
        })
    })?;
    println!("{kind} signal {id} written to {db}.{table} for {}", args.table.join(", "));
    Ok(())
}

/// `POST /snapshot` to the stream at `to` (`http://HOST:PORT`), and its answer: the body of a
/// 200; a usage error for a request the stream refused (4xx but 401/403); an error otherwise.
fn post(to: &str, token: Option<&str>, body: &str) -> Result<String> {
    let bad_url = || Usage(format!("--to `{to}`: use http://HOST:PORT (the stream's --metrics-addr)"));
    let authority = to.strip_prefix("http://").ok_or_else(bad_url)?.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(bad_url().into());
    }
    let url = reqwest::Url::parse(&format!("http://{authority}/snapshot")).map_err(|_| bad_url())?;
    let client = reqwest::Client::builder()
        .timeout(crate::snapshot::requests::WAIT + std::time::Duration::from_secs(5))
        .build()?;
    let mut request = client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let (status, answer) = runtime()?.block_on(async {
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!("cannot reach the stream at {to}: {e} (is it running with --metrics-addr?)")
        })?;
        let status = response.status().as_u16();
        anyhow::Ok((status, response.text().await?))
    })?;
    let answer = answer.trim().to_string();
    match status {
        200 => Ok(answer),
        401 | 403 => anyhow::bail!("the stream at {to} refused the request ({status}): {answer}"),
        400..=499 => Err(Usage(format!("the stream at {to} refused the request: {answer}")).into()),
        _ => anyhow::bail!("the stream at {to} answered {status}: {answer}"),
    }
}
