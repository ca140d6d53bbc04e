//! Where a position sits in a server's binlog history, checked before anything streams.
//!
//! A GTID set alone cannot tell a new history from the old one: after `RESET MASTER` (or on a
//! rebuilt server) the same GTIDs are written again, so resuming "after GTID 0-1-966" would
//! silently skip the new history's first 966 transactions. So a saved position is checked with
//! everything it holds. On the server it was taken on, its file must still be there at the same
//! place in the sequence of binlog files (or have been purged in order, older than the oldest
//! file), and the GTID state at its offset must be the one saved. On any server, every GTID
//! domain it names must be in that server's history, not ahead of it, and not purged. A
//! `--start` value is checked the same way before it is used or saved, so a bad value never
//! reaches the position file.
//!
//! Invariants: nothing here changes the server or the position file; every refusal names what is
//! wrong and the fix. MariaDB's `BINLOG_GTID_POS(file, offset)` reads the file from its start, so
//! it is NULL for an offset inside an event: an exact boundary test that also gives the GTID
//! state there. MySQL has no such function: there the server's own reader checks the offset
//! (`SHOW BINLOG EVENTS ... FROM offset`), and a file's PREVIOUS_GTIDS must lie within the saved
//! set (a reset history writes the same file names with other contents).

use anyhow::{bail, Result};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::gtid::{GtidSet, MariaDbBinlogState, MariaDbGtidPos, MySqlGtidSet};
use crate::position::{Flavor, Position};

/// The outcome of a history check.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    Fine(String),
    Refused {
        detail: String,
        fix: &'static str,
        /// The position is not in this history (reset, purged, diverged): continuing from it
        /// would lose or repeat transactions.
        lost: bool,
    },
}

const FIX_PURGED: &str = "keep binlogs longer (binlog_expire_logs_seconds); to go on despite the loss, move the position file away and start with --start earliest";
const FIX_OTHER_HISTORY: &str = "point --url at the server (or a replica of it) whose history the position file belongs to; to start over on this history, move the position file away and choose --start deliberately";
const FIX_BEHIND: &str = "point --url at a server that has the whole history (e.g. the current primary)";

fn refused(detail: String, fix: &'static str, lost: bool) -> Finding {
    Finding::Refused { detail, fix, lost }
}

/// One binlog file the server has, as `SHOW BINARY LOGS` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct BinlogFile {
    pub name: String,
    pub size: u64,
}

pub async fn binlogs(conn: &mut Conn) -> Result<Vec<BinlogFile>> {
    let rows: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some(BinlogFile { name: r.get::<String, _>(0)?, size: r.get::<u64, _>(1)? }))
        .collect())
}

/// Where a file named by a position is among the server's binlog files.
#[derive(Debug, Clone, PartialEq)]
pub enum Place {
    Present {
        size: u64,
    },
    /// Older than the oldest file: purged in the normal way.
    Purged {
        oldest: String,
    },
    /// Newer than the newest file: the numbering started again (`RESET MASTER`, a rebuilt server).
    Newer {
        newest: String,
    },
    /// Missing although older and newer files exist, or named after another basename.
    Foreign {
        have: String,
    },
}

/// `binlog.000042` -> ("binlog", 42).
fn numbered(name: &str) -> Option<(&str, u64)> {
    let (base, number) = name.rsplit_once('.')?;
    Some((base, number.parse().ok()?))
}

/// `binlog.000003 to binlog.000007`: the binlog files a server has, for messages.
fn span(logs: &[BinlogFile]) -> String {
    match (logs.first(), logs.last()) {
        (Some(first), Some(last)) => format!("{} to {}", first.name, last.name),
        _ => "no binlog files".to_string(),
    }
}

pub fn place(logs: &[BinlogFile], file: &str) -> Place {
    if let Some(f) = logs.iter().find(|f| f.name == file) {
        return Place::Present { size: f.size };
    }
    let have = span(logs);
    let (Some((base, n)), Some(first), Some(last)) = (numbered(file), logs.first(), logs.last()) else {
        return Place::Foreign { have };
    };
    match (numbered(&first.name), numbered(&last.name)) {
        (Some((b, oldest)), Some((_, _))) if b == base && n < oldest => Place::Purged { oldest: first.name.clone() },
        (Some((b, _)), Some((_, newest))) if b == base && n > newest => Place::Newer { newest: last.name.clone() },
        _ => Place::Foreign { have },
    }
}

/// A saved position against this server. `same_server`: the server's identity is the one saved
/// with the position, so its file and offset mean something here. `by_gtid`: the position will
/// be resumed by its GTID set (else by file and offset, which only the same server can serve).
pub async fn check_saved(
    conn: &mut Conn,
    flavor: Flavor,
    saved: &Position,
    same_server: bool,
    by_gtid: bool,
) -> Result<Finding> {
    let logs = binlogs(conn).await?;
    let gtids = saved.gtids()?;
    if !same_server && !by_gtid {
        return Ok(refused(
            format!(
                "the position {}:{} was taken on server {} but --url reaches another server: file offsets do not carry over between servers",
                saved.file, saved.offset, saved.server
            ),
            "point --url at the original server, resume by GTID (enable GTIDs for failover), or move the position file away and choose --start deliberately",
            false,
        ));
    }
    if same_server && !saved.file.is_empty() {
        match place(&logs, &saved.file) {
            Place::Present { size } => {
                if let refusal @ Finding::Refused { .. } =
                    check_offset(conn, flavor, &saved.file, saved.offset, size, gtids.as_ref()).await?
                {
                    return Ok(refusal);
                }
            }
            Place::Purged { oldest } if gtids.is_none() => {
                return Ok(refused(
                    format!(
                        "{} is no longer on the server (its oldest binlog is {oldest}): the changes from {}:{} to the start of {oldest} are lost",
                        saved.file, saved.file, saved.offset
                    ),
                    FIX_PURGED,
                    true,
                ))
            }
            Place::Purged { .. } => {} // the GTID checks below name the lost range
            Place::Newer { newest } => {
                return Ok(refused(
                    format!(
                        "the position names {}:{}, but this server's newest binlog is {newest}: its binlog was reset (RESET MASTER) or the server rebuilt since the position was saved, so the saved position is not in its history (resuming by GTID would skip the new history's first transactions)",
                        saved.file, saved.offset
                    ),
                    FIX_OTHER_HISTORY,
                    true,
                ))
            }
            Place::Foreign { have } => {
                return Ok(refused(
                    format!(
                        "the position names {}:{}, which is not among this server's binlogs ({have}) although it is not older than them: the binlog was reset or renamed, or the position belongs to another server",
                        saved.file, saved.offset
                    ),
                    FIX_OTHER_HISTORY,
                    true,
                ))
            }
        }
    }
    let fine = || Ok(Finding::Fine(format!("{}:{} is on the server", saved.file, saved.offset)));
    match (flavor, gtids) {
        (Flavor::MariaDb, Some(GtidSet::MariaDb(set))) => mariadb_gtids(conn, &set, &logs, Purpose::Saved).await,
        (Flavor::MySql, Some(GtidSet::MySql(set))) if mysql_gtid_mode(conn).await => {
            mysql_gtids(conn, &set, Purpose::Saved).await
        }
        // MySQL without GTIDs resumes by file and offset, checked above.
        (Flavor::MySql, Some(GtidSet::MySql(_))) | (_, None) => fine(),
        (_, Some(_)) => Ok(refused(
            format!("the position file holds a {} GTID set but this server is {flavor}", saved.flavor),
            "point --url at the server the position file belongs to, or use another --position-file",
            false,
        )),
    }
}

/// A `--start FILE:POS`: the file must be on the server and the offset an event boundary in
/// it. Returns the GTID state there where the server can say (MariaDB), to seed positions.
pub async fn check_start_file(conn: &mut Conn, flavor: Flavor, file: &str, offset: u64) -> Result<Option<GtidSet>> {
    let logs = binlogs(conn).await?;
    let range = span(&logs);
    let size = match place(&logs, file) {
        Place::Present { size } => size,
        Place::Purged { oldest } => bail!(
            "--start {file}:{offset}: {file} was purged; the oldest binlog on the server is {oldest} (it has {range})"
        ),
        Place::Newer { newest } | Place::Foreign { have: newest } => {
            bail!("--start {file}:{offset}: the server has no binlog {file} (it has {range}, newest {newest}); see SHOW BINARY LOGS")
        }
    };
    match check_offset(conn, flavor, file, offset, size, None).await? {
        Finding::Refused { detail, .. } => bail!("--start {file}:{offset}: {detail}"),
        Finding::Fine(_) => {}
    }
    Ok(match flavor {
        Flavor::MariaDb => {
            gtid_state_at(conn, file, offset).await?.filter(|s| !s.domains.is_empty()).map(GtidSet::MariaDb)
        }
        Flavor::MySql => None,
    })
}

/// A `--start GTIDSET`: every domain known to the server, not ahead of it, not purged.
pub async fn check_start_gtids(conn: &mut Conn, flavor: Flavor, set: &GtidSet) -> Result<()> {
    let finding = match (flavor, set) {
        (Flavor::MariaDb, GtidSet::MariaDb(set)) => {
            let logs = binlogs(conn).await?;
            mariadb_gtids(conn, set, &logs, Purpose::Start).await?
        }
        (Flavor::MySql, GtidSet::MySql(set)) => mysql_gtids(conn, set, Purpose::Start).await?,
        _ => bail!("--start {set} is a GTID set of the other server flavour: this server is {flavor}"),
    };
    match finding {
        Finding::Fine(_) => Ok(()),
        Finding::Refused { detail, .. } => bail!("--start {set}: {detail}"),
    }
}

/// Is `offset` an event boundary of `file` (of `size` bytes), with the GTID state `gtids` there?
async fn check_offset(
    conn: &mut Conn,
    flavor: Flavor,
    file: &str,
    offset: u64,
    size: u64,
    gtids: Option<&GtidSet>,
) -> Result<Finding> {
    if offset > size {
        return Ok(refused(
            format!("{file}:{offset} is past the end of that file ({size} bytes): the binlog was reset and written again, or the position belongs to another server"),
            FIX_OTHER_HISTORY,
            true,
        ));
    }
    let not_a_boundary = || {
        refused(
            format!("{file}:{offset} is not the start of an event in this server's {file}: the binlog was reset and written again, or the position belongs to another server"),
            FIX_OTHER_HISTORY,
            true,
        )
    };
    match flavor {
        Flavor::MariaDb => {
            let Some(there) = gtid_state_at(conn, file, offset).await? else {
                return Ok(not_a_boundary());
            };
            if let Some(GtidSet::MariaDb(saved)) = gtids {
                let differs: Vec<String> = saved
                    .domains
                    .iter()
                    .filter(|(domain, gtid)| there.domains.get(*domain) != Some(*gtid))
                    .map(|(domain, (server, seq))| format!("{domain}-{server}-{seq}"))
                    .collect();
                if !differs.is_empty() {
                    return Ok(refused(
                        format!(
                            "at {file}:{offset} this server's binlog is at GTID state [{there}], but the position was saved at [{saved}] ({} differ): the binlog was reset (RESET MASTER) and written again since, so resuming would skip or repeat transactions",
                            differs.join(", ")
                        ),
                        FIX_OTHER_HISTORY,
                        true,
                    ));
                }
            }
        }
        Flavor::MySql => {
            let at = conn.query_drop(format!("SHOW BINLOG EVENTS IN {} FROM {offset} LIMIT 1", sql_string(file))).await;
            match at {
                Ok(()) => {}
                Err(mysql_async::Error::Server(e)) if e.code == 1220 => return Ok(not_a_boundary()),
                Err(e) => return Err(e.into()),
            }
            if let (Some(GtidSet::MySql(saved)), Some(before)) = (gtids, previous_gtids(conn, file).await?) {
                if !before.is_subset(saved) {
                    return Ok(refused(
                        format!("this server's {file} starts after GTIDs {before}, which the position saved in it ({saved}) does not include: the binlog was reset (RESET MASTER) and written again since"),
                        FIX_OTHER_HISTORY,
                        true,
                    ));
                }
            }
        }
    }
    Ok(Finding::Fine(format!("{file}:{offset} is an event boundary of this server's history")))
}

/// MariaDB's GTID state at an event boundary; None where the offset is not one.
async fn gtid_state_at(conn: &mut Conn, file: &str, offset: u64) -> Result<Option<MariaDbGtidPos>> {
    let state: Option<Option<String>> = conn.exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file, offset)).await?;
    state.flatten().map(|s| MariaDbGtidPos::parse(&s)).transpose()
}

/// MySQL's PREVIOUS_GTIDS at the start of a binlog file.
async fn previous_gtids(conn: &mut Conn, file: &str) -> Result<Option<MySqlGtidSet>> {
    let events: Vec<mysql_async::Row> =
        conn.query(format!("SHOW BINLOG EVENTS IN {} LIMIT 4", sql_string(file))).await?;
    let info = events
        .iter()
        .find(|r| r.get::<String, _>(2).as_deref() == Some("Previous_gtids"))
        .and_then(|r| r.get::<String, _>(5));
    info.map(|text| MySqlGtidSet::parse(&text.split_whitespace().collect::<String>())).transpose()
}

/// Whether a GTID set is a saved position (a failure means history is lost: exit 3) or a
/// `--start` value (the user can choose another).
#[derive(Clone, Copy, PartialEq)]
enum Purpose {
    Saved,
    Start,
}

async fn mariadb_gtids(
    conn: &mut Conn,
    set: &MariaDbGtidPos,
    logs: &[BinlogFile],
    purpose: Purpose,
) -> Result<Finding> {
    let lost = purpose == Purpose::Saved;
    let current = MariaDbGtidPos::parse(&var(conn, "gtid_binlog_pos").await?.unwrap_or_default())?;
    let state = MariaDbBinlogState::parse(&var(conn, "gtid_binlog_state").await?.unwrap_or_default())?;
    // The oldest binlog's GTID_LIST is the state before it: what was purged.
    let purged = match logs.first() {
        Some(oldest) => gtid_state_at(conn, &oldest.name, 4).await?.unwrap_or_default(),
        None => MariaDbGtidPos::default(),
    };
    for (domain, (server, seq)) in &set.domains {
        let Some((cur_server, cur_seq)) = current.domains.get(domain) else {
            return Ok(refused(
                format!("GTID domain {domain} ({domain}-{server}-{seq}) is not in this server's binlog (it has [{current}]): the position comes from another history"),
                FIX_OTHER_HISTORY,
                lost,
            ));
        };
        if cur_seq < seq {
            return Ok(refused(
                format!("GTID {domain}-{server}-{seq} is ahead of the server, which has written up to {domain}-{cur_server}-{cur_seq}: this server does not have those transactions (restored from a backup, or a lagging replica)"),
                FIX_BEHIND,
                false,
            ));
        }
        // In strict mode a domain's sequence numbers only grow, so the server that wrote this
        // GTID must have reached `seq` in the domain; if not, the histories diverged.
        let written = state.last(*domain, *server).is_some_and(|last| last >= *seq);
        let purged_past = purged.domains.get(domain).is_some_and(|(_, p)| p >= seq);
        if !written && !purged_past {
            return Ok(refused(
                format!("GTID {domain}-{server}-{seq} was never written in this server's history (domain {domain} is at {domain}-{cur_server}-{cur_seq} from other servers): the histories diverged"),
                FIX_OTHER_HISTORY,
                lost,
            ));
        }
    }
    let mut gone = Vec::new();
    for (domain, (server, seq)) in &purged.domains {
        let have = set.domains.get(domain).map(|(_, s)| *s).unwrap_or(0);
        if have < *seq {
            gone.push(format!(
                "domain {domain}: sequence numbers {} to {seq} (last {domain}-{server}-{seq})",
                have + 1
            ));
        }
    }
    if gone.is_empty() {
        return Ok(Finding::Fine(format!("GTID {set} is on the server")));
    }
    Ok(refused(format!("the binlogs after GTID {set} were purged; lost: {}", gone.join("; ")), FIX_PURGED, lost))
}

async fn mysql_gtids(conn: &mut Conn, set: &MySqlGtidSet, purpose: Purpose) -> Result<Finding> {
    let purged = MySqlGtidSet::parse(&var(conn, "gtid_purged").await?.unwrap_or_default())?;
    let executed = MySqlGtidSet::parse(&var(conn, "gtid_executed").await?.unwrap_or_default())?;
    if !set.is_subset(&executed) {
        return Ok(refused(
            format!("the GTID set {set} has transactions this server never executed ({executed}): restored from a backup, a lagging replica, or another history"),
            FIX_BEHIND,
            false,
        ));
    }
    let lost = purged.difference(set);
    if lost.ranges.is_empty() {
        return Ok(Finding::Fine("the GTID set is on the server".into()));
    }
    Ok(refused(
        format!("transactions after the position were purged; lost: {lost}"),
        FIX_PURGED,
        purpose == Purpose::Saved,
    ))
}

async fn mysql_gtid_mode(conn: &mut Conn) -> bool {
    var(conn, "gtid_mode").await.ok().flatten().is_some_and(|m| m.eq_ignore_ascii_case("ON"))
}

async fn var(conn: &mut Conn, name: &str) -> Result<Option<String>> {
    Ok(conn.query_first::<Option<String>, _>(format!("SELECT @@{name}")).await?.flatten())
}

/// A string literal for statements that take no placeholders (`SHOW BINLOG EVENTS IN ...`).
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(names: &[&str]) -> Vec<BinlogFile> {
        names.iter().map(|n| BinlogFile { name: n.to_string(), size: 1000 }).collect()
    }

    #[test]
    fn where_a_position_file_sits_among_the_binlogs() {
        let have = logs(&["binlog.000003", "binlog.000004"]);
        assert_eq!(place(&have, "binlog.000004"), Place::Present { size: 1000 });
        assert_eq!(place(&have, "binlog.000001"), Place::Purged { oldest: "binlog.000003".into() });
        // RESET MASTER starts again at 000001: a saved 000005 is newer than anything there.
        assert_eq!(place(&logs(&["binlog.000001"]), "binlog.000005"), Place::Newer { newest: "binlog.000001".into() });
        assert!(matches!(place(&have, "mysql-bin.000001"), Place::Foreign { .. }));
        assert!(matches!(place(&logs(&["binlog.000003", "binlog.000005"]), "binlog.000004"), Place::Foreign { .. }));
        assert!(matches!(place(&[], "binlog.000001"), Place::Foreign { .. }));
    }

    #[test]
    fn sql_strings_are_quoted() {
        assert_eq!(sql_string("binlog.000001"), "'binlog.000001'");
        assert_eq!(sql_string("a'b\\c"), "'a''b\\\\c'");
    }
}
