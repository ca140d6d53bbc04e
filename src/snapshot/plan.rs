//! Which tables a snapshot reads, checked before anything is recorded.
//!
//! Invariants:
//! - information_schema (and SHOW TABLES) list only the tables the user holds some privilege
//!   on, so a table the user may not read can be missing from them without a trace. A plan is
//!   made only when the user provably sees every table the filters can include: it may SELECT
//!   every table (globally, or in each database an `--include` pattern names), or the table is
//!   named exactly and visible. Otherwise the snapshot refuses, naming the GRANT to run.
//! - Every planned table is readable: a table the user sees but may not SELECT (or only some of
//!   its columns) is an error naming it, never a table silently left out.
//! - Whether the user may SELECT all of a database is asked of the server itself: reading a table
//!   that does not exist answers "doesn't exist" (1146) only to a user who may read every table
//!   there, "denied" (1142) to others. That covers global, database and role grants alike.

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::chunk::quote;
use crate::filter::{Filter, TablePattern};

/// A table name no one uses: reading it tells what the user may read (see the invariants).
const NO_SUCH_TABLE: &str = "binlog-tail probe: no such table";
const NO_SUCH_DB: &str = "binlog-tail probe: no such database";

/// Every base table outside the system schemas that the user can see, in name order.
async fn visible_tables(conn: &mut Conn) -> Result<Vec<[String; 2]>> {
    let rows: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
             AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
             ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await?;
    Ok(rows.into_iter().map(|(db, t)| [db, t]).collect())
}

/// How reading `db`.`table` (no rows) went: Ok, or the server's error code.
async fn try_read(conn: &mut Conn, db: &str, table: &str) -> Result<Result<(), u16>> {
    match conn.query_drop(format!("SELECT * FROM {}.{} LIMIT 0", quote(db), quote(table))).await {
        Ok(()) => Ok(Ok(())),
        Err(mysql_async::Error::Server(e)) => Ok(Err(e.code)),
        Err(e) => Err(e.into()),
    }
}

/// True if the user may SELECT every table of `db` (None: of every database).
async fn reads_all(conn: &mut Conn, db: Option<&str>) -> Result<bool> {
    // "No such table" (or database), which only a user who may read it is told; others are
    // denied (1142).
    Ok(matches!(try_read(conn, db.unwrap_or(NO_SUCH_DB), NO_SUCH_TABLE).await?, Err(1146 | 1049)))
}

/// Of `tables`, those this user may not read, each with the reason and the GRANT that fixes it.
pub async fn unreadable(conn: &mut Conn, tables: &[[String; 2]]) -> Result<Vec<([String; 2], String)>> {
    let mut out = Vec::new();
    if tables.is_empty() || reads_all(conn, None).await? {
        return Ok(out);
    }
    let user = user(conn).await?;
    for [db, t] in tables {
        if let Err(code) = try_read(conn, db, t).await? {
            let why = match code {
                1142 | 1143 => format!(
                    "{user} may not SELECT (every column of) `{db}`.`{t}`: GRANT SELECT ON {}.{} TO {user}",
                    quote(db),
                    quote(t)
                ),
                code => format!("`{db}`.`{t}` cannot be read (error {code})"),
            };
            out.push(([db.clone(), t.clone()], why));
        }
    }
    Ok(out)
}

async fn user(conn: &mut Conn) -> Result<String> {
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await?;
    let user = user.unwrap_or_default();
    Ok(match user.rsplit_once('@') {
        Some((name, host)) => format!("'{name}'@'{host}'"),
        None => user,
    })
}

/// The tables the filters include (but those in `skip`), each one readable by this user. An
/// error lists every table (or database) the snapshot cannot read or cannot be sure to see,
/// with the GRANT that fixes it.
pub async fn included(conn: &mut Conn, filter: &Filter, skip: &[(String, String)]) -> Result<Vec<[String; 2]>> {
    let wanted = |db: &str, t: &str| filter.includes_table(db, t) && !skip.iter().any(|(d, n)| d == db && n == t);
    let tables: Vec<[String; 2]> = visible_tables(conn).await?.into_iter().filter(|[d, t]| wanted(d, t)).collect();
    if reads_all(conn, None).await? {
        return Ok(tables);
    }
    let user = user(conn).await?;
    let mut problems = Vec::new();
    // Databases whose tables the filters may include without naming them.
    let mut databases = BTreeSet::new();
    let everything = [TablePattern::parse("*.*").expect("a valid pattern")];
    let patterns = if filter.include.is_empty() { &everything[..] } else { &filter.include[..] };
    for p in patterns {
        match (p.exact_table(), p.exact_db()) {
            (Some((db, t)), _) => {
                if wanted(db, t) && !tables.iter().any(|[d, n]| d == db && n == t) {
                    problems.push(format!(
                        "`{db}`.`{t}` is not visible to {user}: it does not exist, or GRANT SELECT ON {}.{} TO {user}",
                        quote(db),
                        quote(t)
                    ));
                }
            }
            (None, Some(db)) => {
                databases.insert(db.to_string());
            }
            (None, None) => problems.push(format!(
                "the filters include databases by pattern (`--include` with a wildcard in the database, or none), \
                 and {user} sees only the tables it holds a privilege on: GRANT SELECT ON *.* TO {user}, or \
                 --include the databases or tables by name"
            )),
        }
    }
    let mut readable = BTreeSet::new();
    for db in &databases {
        if reads_all(conn, Some(db)).await? {
            readable.insert(db);
        } else {
            problems.push(format!(
                "{user} may not SELECT every table of `{db}`, and sees only those it holds a privilege on: \
                 GRANT SELECT ON {}.* TO {user}",
                quote(db)
            ));
        }
    }
    let unsure: Vec<[String; 2]> = tables.iter().filter(|[db, _]| !readable.contains(db)).cloned().collect();
    problems.extend(unreadable(conn, &unsure).await?.into_iter().map(|(_, why)| why));
    if !problems.is_empty() {
        bail!("the snapshot cannot read every table the filters include: {}", problems.join("; "));
    }
    Ok(tables)
}

/// Why a requested table pattern queues nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmatched {
    /// No table the user can see matches it.
    NotFound,
    /// Tables match, but the filters (or the signal/outbox tables) leave every one out.
    Excluded,
}

impl std::fmt::Display for Unmatched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unmatched::NotFound => "no such table (or not visible to this user)",
            Unmatched::Excluded => "excluded by the filters",
        })
    }
}

/// The tables a snapshot request for `patterns` queues (those the filters include, but those in
/// `skip`), and each pattern that matches none of them with the reason.
pub async fn requested(
    conn: &mut Conn,
    patterns: &[TablePattern],
    filter: &Filter,
    skip: &[(String, String)],
) -> Result<(Vec<[String; 2]>, Vec<(usize, Unmatched)>)> {
    let visible = visible_tables(conn).await?;
    let wanted = |[db, t]: &[String; 2]| filter.includes_table(db, t) && !skip.iter().any(|(d, n)| d == db && n == t);
    let mut unmatched = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        let matching: Vec<&[String; 2]> = visible.iter().filter(|[d, t]| p.matches(d, t)).collect();
        if matching.is_empty() {
            unmatched.push((i, Unmatched::NotFound));
        } else if !matching.into_iter().any(wanted) {
            unmatched.push((i, Unmatched::Excluded));
        }
    }
    let tables = visible.into_iter().filter(|t| wanted(t) && patterns.iter().any(|p| p.matches(&t[0], &t[1])));
    Ok((tables.collect(), unmatched))
}

/// For `binlog-tail snapshot` before it writes its signal: a usage error naming each of the
/// `tables` patterns that matches no table the `filter` includes (`Filter::default()` when the
/// stream's filters are unknown: then only tables that do not exist are refused).
pub async fn check_request(conn: &mut Conn, tables: &[String], filter: &Filter) -> Result<()> {
    let patterns = tables.iter().map(|t| TablePattern::parse(t)).collect::<Result<Vec<_>>>()?;
    let (_, unmatched) = requested(conn, &patterns, filter, &[]).await?;
    if unmatched.is_empty() {
        return Ok(());
    }
    let why: Vec<String> = unmatched.iter().map(|(i, why)| format!("`{}`: {why}", tables[*i])).collect();
    Err(crate::error::Usage(format!("no table to snapshot for {}", why.join("; "))).into())
}
