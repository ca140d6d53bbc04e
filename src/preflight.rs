//! Checks before streaming: is the server configured so that its binlog holds every change,
//! exactly, and does it still hold the history we need? `binlog-tail check` prints them all;
//! `stream` refuses to start on a failure and logs the warnings.

use std::fmt;

use anyhow::Result;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::checkpoint::{Position, ServerIdentity};
use crate::position::Flavor;
use crate::gtid::{GtidSet, MariaDbGtidPos, MySqlGtidSet};

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
pub async fn run(conn: &mut Conn, flavor: Flavor, saved: Option<&Position>) -> Result<Vec<Check>> {
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
                    "OFF: out-of-order GTIDs are accepted, so a GTID position may not identify one point in history".into(),
                    Some("SET GLOBAL gtid_strict_mode=ON and in my.cnf"),
                )
            });
        }
    }

    checks.push(privileges(conn).await);
    if let Some(saved) = saved {
        checks.extend(position_checks(conn, flavor, saved).await?);
    }
    Ok(checks)
}

/// The replication privileges of the connected user, from SHOW GRANTS.
pub async fn privileges(conn: &mut Conn) -> Check {
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

/// Is the saved position still on the server, and not ahead of it?
async fn position_checks(conn: &mut Conn, flavor: Flavor, saved: &Position) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let logs: Vec<(String, u64)> = conn
        .query::<mysql_async::Row, _>("SHOW BINARY LOGS")
        .await?
        .into_iter()
        .filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1)?)))
        .collect();
    let oldest = logs.first().map(|l| l.0.clone()).unwrap_or_default();
    let gtids = saved.gtids()?;
    let by_gtid = match (flavor, &gtids) {
        (Flavor::MariaDb, Some(_)) => true,
        (Flavor::MySql, Some(_)) => var(conn, "gtid_mode").await.is_some_and(|m| m.eq_ignore_ascii_case("ON")),
        _ => false,
    };
    if by_gtid {
        let gtids = gtids.expect("by_gtid implies a set");
        checks.push(match (&gtids, flavor) {
            (GtidSet::MariaDb(saved_pos), Flavor::MariaDb) => mariadb_gtid_check(conn, saved_pos, &oldest).await?,
            (GtidSet::MySql(saved_set), Flavor::MySql) => mysql_gtid_check(conn, saved_set).await?,
            _ => check(
                "saved position",
                Status::Fail,
                format!("the position file holds a {} GTID set but this server is {flavor}", saved.flavor),
                Some("point --url at the server the position file belongs to, or use another --position-file"),
            ),
        });
    } else {
        match logs.iter().find(|(name, _)| *name == saved.file) {
            Some((_, size)) if *size >= saved.offset => checks.push(check(
                "saved position",
                Status::Pass,
                format!("{}:{} is on the server", saved.file, saved.offset),
                None,
            )),
            Some((_, size)) => checks.push(check(
                "saved position",
                Status::Fail,
                format!("{}:{} is past the end of that file ({size} bytes): the position belongs to another server or a binlog that was reset", saved.file, saved.offset),
                Some("point --url at the server the position file belongs to"),
            )),
            None => {
                let mut c = check(
                    "saved position",
                    Status::Fail,
                    format!(
                        "{} is no longer on the server (its oldest binlog is {oldest}): the changes from {}:{} to the start of {oldest} are lost",
                        saved.file, saved.file, saved.offset
                    ),
                    Some("keep binlogs longer (binlog_expire_logs_seconds / expire_logs_days); to go on despite the loss, move the position file away and start with --start earliest"),
                );
                c.lost = true;
                checks.push(c);
            }
        }
    }
    Ok(checks)
}

async fn mariadb_gtid_check(conn: &mut Conn, saved: &MariaDbGtidPos, oldest: &str) -> Result<Check> {
    let current = MariaDbGtidPos::parse(&var(conn, "gtid_binlog_pos").await.unwrap_or_default())?;
    for (domain, (_, seq)) in &saved.domains {
        if let Some((_, cur)) = current.domains.get(domain) {
            if cur < seq {
                return Ok(check(
                    "saved position",
                    Status::Fail,
                    format!("the saved GTID {saved} is ahead of the server ({current}): this server does not have transactions already delivered (restored from a backup, or a lagging replica)"),
                    Some("point --url at a server that has the whole history (e.g. the current primary)"),
                ));
            }
        }
    }
    // The oldest binlog's GTID_LIST is the state before it: anything the saved position lacks
    // up to that state was purged.
    let events: Vec<mysql_async::Row> = conn.query(format!("SHOW BINLOG EVENTS IN '{oldest}' LIMIT 5")).await?;
    let list = events
        .iter()
        .find(|r| r.get::<String, _>(2).as_deref() == Some("Gtid_list"))
        .and_then(|r| r.get::<String, _>(5))
        .unwrap_or_default();
    let purged_state = MariaDbGtidPos::parse(list.trim_matches(|c| c == '[' || c == ']'))?;
    let mut lost = Vec::new();
    for (domain, (server, seq)) in &purged_state.domains {
        let have = saved.domains.get(domain).map(|(_, s)| *s).unwrap_or(0);
        if have < *seq {
            lost.push(format!("domain {domain}: sequence numbers {} to {seq} (last {domain}-{server}-{seq})", have + 1));
        }
    }
    if lost.is_empty() {
        Ok(check("saved position", Status::Pass, format!("GTID {saved} is on the server"), None))
    } else {
        let mut c = check(
            "saved position",
            Status::Fail,
            format!("the binlogs after GTID {saved} were purged; lost: {}", lost.join("; ")),
            Some("keep binlogs longer (binlog_expire_logs_seconds); to go on despite the loss, move the position file away and start with --start earliest"),
        );
        c.lost = true;
        Ok(c)
    }
}

async fn mysql_gtid_check(conn: &mut Conn, saved: &MySqlGtidSet) -> Result<Check> {
    let purged = MySqlGtidSet::parse(&var(conn, "gtid_purged").await.unwrap_or_default())?;
    let executed = MySqlGtidSet::parse(&var(conn, "gtid_executed").await.unwrap_or_default())?;
    if !saved.is_subset(&executed) {
        return Ok(check(
            "saved position",
            Status::Fail,
            format!("the saved GTID set {saved} has transactions this server never executed ({executed}): restored from a backup, or a lagging replica"),
            Some("point --url at a server that has the whole history (e.g. the current primary)"),
        ));
    }
    let lost = purged.difference(saved);
    if lost.ranges.is_empty() {
        Ok(check("saved position", Status::Pass, "the saved GTID set is on the server".into(), None))
    } else {
        let mut c = check(
            "saved position",
            Status::Fail,
            format!("transactions after the saved position were purged; lost: {lost}"),
            Some("keep binlogs longer (binlog_expire_logs_seconds); to go on despite the loss, move the position file away and start with --start earliest"),
        );
        c.lost = true;
        Ok(c)
    }
}
