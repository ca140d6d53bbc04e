//! `binlog-tail snapshot`: writes the signal row that asks a running stream for a snapshot.

use anyhow::Result;

use super::runtime;
use crate::cli::SignalArgs;
use crate::config::{parse_table, server_config};
use crate::error::Usage;
use crate::source::connection::{connect, connect_opts};

pub fn signal(args: SignalArgs) -> Result<()> {
    let (db, table) = parse_table(&args.signal_table)?;
    for t in &args.table {
        crate::filter::TablePattern::parse(t).map_err(|e| Usage(format!("--table: {e:#}")))?;
    }
    let cfg = server_config(&args.server, false)?;
    let opts = connect_opts(&cfg)?;
    let kind = if args.stop { "stop-snapshot" } else { "execute-snapshot" };
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
