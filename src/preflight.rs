//! Checks before streaming: is the server configured so that its binlog holds every change,
//! exactly, and does it still hold the history we need? `binlog-tail check` prints them all;
//! `stream` refuses to start on a failure and logs the warnings.

use std::fmt;

use anyhow::Result;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::history::{self, Finding};
use crate::position::{Flavor, Position, ServerIdentity};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to change, for warnings and failures.
    pub fix: Option<String>,
    /// A failure that means events were already lost (the binlog was purged).
    pub lost: bool,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        write!(f, "{tag}  {:<20} {}", self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n      fix: {fix}")?;
        }
        Ok(())
    }
}

fn check(name: &'static str, status: Status, detail: String, fix: Option<&str>) -> Check {
    Check { name, status, detail, fix: fix.map(str::to_string), lost: false }
}

async fn var(conn: &mut Conn, name: &str) -> Option<String> {
    conn.query_first::<Option<String>, _>(format!("SELECT @@{name}")).await.ok().flatten().flatten()
}

/// What the server is, as far as positions care.
pub async fn identity(conn: &mut Conn, flavor: Flavor) -> Result<ServerIdentity> {
    let server_id = var(conn, "server_id").await.and_then(|v| v.parse().ok()).unwrap_or(0);
    let hostname = var(conn, "hostname").await.unwrap_or_default();
    let uuid = match flavor {
        Flavor::MySql => var(conn, "server_uuid").await,
        Flavor::MariaDb => None,
    };
    Ok(ServerIdentity { uuid, server_id, hostname })
}

/// Every check, in a fixed order. `saved` is the position streaming would resume from.
/// `resume_by_gtid`: a saved position will be resumed by its GTID set where the server has GTIDs.
pub async fn run(
    conn: &mut Conn,
    flavor: Flavor,
    saved: Option<&Position>,
    resume_by_gtid: bool,
) -> Result<Vec<Check>> {
    use Status::*;
    let mut checks = Vec::new();
    let on = |v: &Option<String>| v.as_deref().is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("ON"));

    let log_bin = var(conn, "log_bin").await;
    checks.push(if on(&log_bin) {
        check("log_bin", Pass, "ON".into(), None)
    } else {
        check(
            "log_bin",
            Fail,
            "OFF: the server writes no binlog".into(),
            Some("start the server with --log-bin (log_bin in my.cnf); this needs a restart"),
        )
    });

    let format = var(conn, "binlog_format").await.unwrap_or_default();
    checks.push(if format.eq_ignore_ascii_case("ROW") {
        check("binlog_format", Pass, "ROW".into(), None)
    } else {
        check(
            "binlog_format",
            Fail,
            format!("{format}: the binlog holds statements, not rows"),
            Some("SET GLOBAL binlog_format=ROW and binlog_format=ROW in my.cnf (running sessions keep the old format until they reconnect)"),
        )
    });

    let image = var(conn, "binlog_row_image").await.unwrap_or_else(|| "FULL".into());
    checks.push(if image.eq_ignore_ascii_case("FULL") {
        check("binlog_row_image", Pass, "FULL".into(), None)
    } else {
        check(
            "binlog_row_image",
            Warn,
            format!("{image}: before/after images lack unchanged columns (they are left out of events)"),
            Some("SET GLOBAL binlog_row_image=FULL and in my.cnf"),
        )
    });

    match var(conn, "binlog_row_metadata").await {
        Some(m) if m.eq_ignore_ascii_case("FULL") => checks.push(check("binlog_row_metadata", Pass, "FULL".into(), None)),
        other => checks.push(check(
            "binlog_row_metadata",
            Warn,
            format!(
                "{}: the binlog carries no column names; they are read from information_schema as it is now, which is wrong for rows written before a schema change",
                other.unwrap_or_else(|| "unsupported".into())
            ),
            Some("SET GLOBAL binlog_row_metadata=FULL and in my.cnf (MySQL 8.0.1+, MariaDB 10.5+)"),
        )),
    }

    match flavor {
        Flavor::MySql => {
            let mode = var(conn, "gtid_mode").await.unwrap_or_else(|| "OFF".into());
            checks.push(if mode.eq_ignore_ascii_case("ON") {
                check("gtid_mode", Pass, "ON".into(), None)
            } else {
                check(
                    "gtid_mode",
                    Warn,
                    format!("{mode}: positions are file:offset, which do not survive a failover to another server"),
                    Some("enable GTIDs (gtid_mode=ON, enforce_gtid_consistency=ON) to resume on a new primary after failover"),
                )
            });
        }
        Flavor::MariaDb => {
            let strict = var(conn, "gtid_strict_mode").await;
            checks.push(if on(&strict) {
                check("gtid_strict_mode", Pass, "ON".into(), None)
            } else {
                check(
                    "gtid_strict_mode",
                    Warn,
                    "OFF: out-of-order GTIDs are accepted, so a GTID position may not identify one point in history"
                        .into(),
                    Some("SET GLOBAL gtid_strict_mode=ON and in my.cnf"),
                )
            });
        }
    }

    checks.push(privileges(conn).await);
    if let Some(saved) = saved {
        checks.push(position_check(conn, flavor, saved, resume_by_gtid).await?);
    }
    Ok(checks)
}

async fn privileges(conn: &mut Conn) -> Check {
    let grants: Vec<String> = match conn.query("SHOW GRANTS").await {
        Ok(g) => g,
        Err(e) => return check("privileges", Status::Warn, format!("cannot read SHOW GRANTS: {e}"), None),
    };
    let global: Vec<String> = grants
        .iter()
        .filter(|g| g.contains(" ON *.* "))
        .flat_map(|g| {
            let list = g.trim_start_matches("GRANT ").split(" ON *.* ").next().unwrap_or("");
            list.split(',').map(|p| p.trim().to_ascii_uppercase()).collect::<Vec<_>>()
        })
        .collect();
    let has = |p: &str| global.iter().any(|g| g == p || g == "ALL PRIVILEGES" || g == "ALL");
    let mut missing = Vec::new();
    if !has("REPLICATION SLAVE") && !has("REPLICATION REPLICA") {
        missing.push("REPLICATION SLAVE");
    }
    if !has("REPLICATION CLIENT") && !has("BINLOG MONITOR") {
        missing.push("REPLICATION CLIENT");
    }
    if !missing.is_empty() {
        return check(
            "privileges",
            Status::Fail,
            format!("missing {}", missing.join(", ")),
            Some(&format!("GRANT {}, SELECT ON *.* TO <this user>", missing.join(", "))),
        );
    }
    if !has("SELECT") {
        return check(
            "privileges",
            Status::Warn,
            "no global SELECT: information_schema lookups (binlog_row_metadata=MINIMAL) see only granted tables".into(),
            Some("GRANT SELECT ON *.* TO <this user>"),
        );
    }
    check("privileges", Status::Pass, "REPLICATION SLAVE, REPLICATION CLIENT, SELECT".into(), None)
}

/// Is the saved position part of this server's history, still there, and not ahead of it?
async fn position_check(conn: &mut Conn, flavor: Flavor, saved: &Position, resume_by_gtid: bool) -> Result<Check> {
    let same_server = identity(conn, flavor).await? == saved.server;
    Ok(match history::check_saved(conn, flavor, saved, same_server, resume_by_gtid).await? {
        Finding::Fine(detail) => check("saved position", Status::Pass, detail, None),
        Finding::Refused { detail, fix, lost } => {
            Check { name: "saved position", status: Status::Fail, detail, fix: Some(fix.to_string()), lost }
        }
    })
}
