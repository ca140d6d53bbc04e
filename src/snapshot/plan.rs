//! Which tables a snapshot reads.

use std::time::Duration;

use anyhow::Result;
use mysql_async::prelude::Queryable;
use mysql_async::Opts;
use tokio::runtime::Handle;

use crate::filter::Filter;
use crate::source::server::connect;

/// Every base table outside the system schemas that the filters include and `wanted` accepts.
pub fn tables(
    rt: &Handle,
    opts: &Opts,
    filter: &Filter,
    wanted: &dyn Fn(&str, &str) -> bool,
) -> Result<Vec<[String; 2]>> {
    let tables: Vec<(String, String)> = rt.block_on(async {
        let mut conn = connect(opts, Duration::ZERO).await?;
        let rows = conn
            .query(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
                 AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
                 ORDER BY TABLE_SCHEMA, TABLE_NAME",
            )
            .await?;
        Ok::<_, anyhow::Error>(rows)
    })?;
    Ok(tables
        .into_iter()
        .filter(|(db, t)| filter.includes_table(db, t) && wanted(db, t))
        .map(|(db, t)| [db, t])
        .collect())
}
