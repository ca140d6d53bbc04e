//! A MySQL or MariaDB server, read as a replica over the replication protocol.
//!
//! Invariants: the connection is checked (binary log on, ROW format) before any event is read;
//! every event's CRC32 is verified; a connection that sends neither events nor heartbeats for
//! three heartbeat periods is treated as dead instead of hanging forever. Events travel to the
//! decoding thread through a bounded channel, so a slow sink slows reading instead of growing
//! memory.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Opts, OptsBuilder};
use mysql_common::binlog::consts::BinlogChecksumAlg;
use mysql_common::packets::{GnoInterval, Sid};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::frame::{Header, RawEvent};
use super::Start;
use crate::decode::table::ColumnInfo;
use crate::decode::{Flavor, SchemaLookup};
use crate::gtid::GtidSet;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub url: String,
    pub password: Option<String>,
    pub server_id: u32,
    pub start: Start,
    /// Keep tailing at the server's end instead of stopping there.
    pub follow: bool,
    pub heartbeat: Duration,
    /// How long to keep retrying the first connection while the server is starting.
    pub wait_for_server: Duration,
}

/// One event as received, checksum verified and stripped.
pub struct OwnedEvent {
    pub header: Header,
    pub body: Vec<u8>,
}

impl OwnedEvent {
    pub fn raw(&self) -> RawEvent<'_> {
        RawEvent { header: self.header, body: &self.body }
    }
}

pub enum Next {
    Event(OwnedEvent),
    /// Nothing arrived yet: a good moment to flush.
    Idle,
    End,
}

pub struct ServerSource {
    rx: mpsc::Receiver<Result<OwnedEvent>>,
    /// The executed GTID set the stream starts after, when known.
    pub start_gtids: Option<GtidSet>,
}

impl ServerSource {
    pub fn next(&mut self) -> Result<Next> {
        match self.rx.try_recv() {
            Ok(ev) => ev.map(Next::Event),
            Err(mpsc::error::TryRecvError::Empty) => Ok(Next::Idle),
            Err(mpsc::error::TryRecvError::Disconnected) => Ok(Next::End),
        }
    }

    pub fn next_blocking(&mut self) -> Result<Next> {
        match self.rx.blocking_recv() {
            Some(ev) => ev.map(Next::Event),
            None => Ok(Next::End),
        }
    }

    /// Connects, checks the server, and starts streaming from `cfg.start` on `rt`.
    pub fn open(rt: &Handle, cfg: &ServerConfig) -> Result<ServerSource> {
        let opts = connect_opts(cfg)?;
        let (mut conn, flavor) = rt.block_on(async {
            let mut conn = connect(&opts, cfg.wait_for_server).await?;
            let flavor = check_server(&mut conn).await?;
            Ok::<_, anyhow::Error>((conn, flavor))
        })?;
        let (start_file, start_pos, start_gtids) = rt.block_on(resolve_start(&mut conn, flavor, &cfg.start))?;
        let stream = rt.block_on(request_stream(conn, flavor, cfg, &start_file, start_pos, start_gtids.as_ref()))?;
        let (tx, rx) = mpsc::channel(1024);
        let timeout = cfg.heartbeat * 3;
        rt.spawn(pump(stream, tx, timeout));
        Ok(ServerSource { rx, start_gtids })
    }
}

pub fn connect_opts(cfg: &ServerConfig) -> Result<Opts> {
    let url = if cfg.url.contains("://") { cfg.url.clone() } else { format!("mysql://{}", cfg.url) };
    let opts = Opts::from_url(&url).map_err(|e| anyhow!("bad --url `{}`: {e} (expected mysql://USER@HOST:PORT)", redact(&url)))?;
    let mut builder = OptsBuilder::from_opts(opts).prefer_socket(false);
    if let Some(pw) = &cfg.password {
        builder = builder.pass(Some(pw.clone()));
    }
    Ok(builder.into())
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Connects, retrying refused or unreachable connections until `wait` has passed.
pub async fn connect(opts: &Opts, wait: Duration) -> Result<Conn> {
    let deadline = Instant::now() + wait;
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(10), Conn::new(opts.clone())).await;
        let err = match attempt {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => e,
            Err(_) => {
                if Instant::now() < deadline {
                    continue;
                }
                bail!("connecting to {}:{} timed out after 10 s: check the host, port and firewall", opts.ip_or_hostname(), opts.tcp_port());
            }
        };
        let retriable = matches!(err, mysql_async::Error::Io(_));
        if retriable && Instant::now() + delay < deadline {
            tracing::info!("server not reachable yet ({err}); retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
            continue;
        }
        return Err(explain(err, opts));
    }
}

/// Turns a driver error into a message that says what to do.
pub fn explain(err: mysql_async::Error, opts: &Opts) -> anyhow::Error {
    let host = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    match &err {
        mysql_async::Error::Server(e) if e.code == 1045 => anyhow!(
            "access denied for user `{}` at {host}: check the password (--password-file or MYSQL_PWD) and that the user may connect from this host",
            opts.user().unwrap_or("")
        ),
        mysql_async::Error::Server(e) if e.code == 1236 => anyhow!(
            "the server cannot send the binlog from the requested position: {} — the binlog there was probably purged (see SHOW BINARY LOGS and gtid_purged); start from `earliest` or a newer position, knowing that changes in between are lost",
            e.message
        ),
        mysql_async::Error::Server(e) if e.code == 4052 || e.message.contains("same server_uuid/server_id") => anyhow!(
            "another replica is connected with the same server id: give each binlog-tail its own --server-id ({})",
            e.message
        ),
        mysql_async::Error::Server(e) if e.code == 1227 || e.code == 1044 => anyhow!(
            "user `{}` lacks a privilege: {}. Grant it: GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO ...",
            opts.user().unwrap_or(""),
            e.message
        ),
        mysql_async::Error::Io(io) => anyhow!(
            "cannot connect to {host}: {io}. Is the server running and listening there? (--wait-for-server SECS waits for a server that is starting)"
        ),
        _ => anyhow!("{err}"),
    }
}

/// Reads the flavour and refuses servers whose binlog cannot give us rows.
async fn check_server(conn: &mut Conn) -> Result<Flavor> {
    let (version, log_bin, format): (String, i64, String) = conn
        .query_first("SELECT @@version, @@log_bin, @@binlog_format")
        .await?
        .context("the server returned no version")?;
    let flavor = if version.contains("MariaDB") { Flavor::MariaDb } else { Flavor::MySql };
    if log_bin == 0 {
        bail!("binary logging is off on this server (log_bin=OFF): start it with --log-bin --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL");
    }
    if !format.eq_ignore_ascii_case("ROW") {
        bail!("the server writes binlog_format={format}, so its binlog holds statements, not rows: set binlog_format=ROW (SET GLOBAL binlog_format=ROW and in the server config; sessions started before keep the old format)");
    }
    Ok(flavor)
}

/// The file/position and GTID set to start from.
async fn resolve_start(conn: &mut Conn, flavor: Flavor, start: &Start) -> Result<(String, u64, Option<GtidSet>)> {
    let gtid_var = match flavor {
        Flavor::MariaDb => "@@gtid_binlog_pos",
        Flavor::MySql => "@@gtid_executed",
    };
    Ok(match start {
        Start::Latest => {
            let (file, pos) = binlog_head(conn).await?;
            let gtids: Option<String> = conn.query_first(format!("SELECT {gtid_var}")).await.ok().flatten();
            let gtids = gtids.filter(|g| !g.trim().is_empty()).map(|g| GtidSet::parse(&g)).transpose()?;
            (file, pos, gtids)
        }
        Start::Earliest => {
            let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
            let first: String = logs
                .first()
                .and_then(|r| r.get(0))
                .context("the server lists no binary logs")?;
            (first, 4, None)
        }
        Start::FilePos(file, pos) => (file.clone(), *pos, None),
        Start::Gtid(set) => {
            match (flavor, set) {
                (Flavor::MariaDb, GtidSet::MariaDb(_)) | (Flavor::MySql, GtidSet::MySql(_)) => {}
                _ => bail!("--start {set} is a GTID of the other server flavour: this server is {flavor:?}"),
            }
            (String::new(), 4, Some(set.clone()))
        }
    })
}

async fn binlog_head(conn: &mut Conn) -> Result<(String, u64)> {
    // MySQL 8.4 renamed SHOW MASTER STATUS; MariaDB and older MySQL know the old name.
    let row: Option<mysql_async::Row> = match conn.query_first("SHOW BINARY LOG STATUS").await {
        Ok(row) => row,
        Err(_) => conn.query_first("SHOW MASTER STATUS").await?,
    };
    let row = row.context("the server reports no binlog position (is log_bin on?)")?;
    let file: String = row.get(0).context("no binlog file in SHOW MASTER STATUS")?;
    let pos: u64 = row.get(1).context("no binlog position in SHOW MASTER STATUS")?;
    Ok((file, pos))
}

async fn request_stream(
    mut conn: Conn,
    flavor: Flavor,
    cfg: &ServerConfig,
    file: &str,
    pos: u64,
    gtids: Option<&GtidSet>,
) -> Result<mysql_async::BinlogStream> {
    conn.query_drop(format!("SET @master_heartbeat_period = {}", cfg.heartbeat.as_nanos())).await?;
    let by_gtid = matches!(cfg.start, Start::Gtid(_));
    if flavor == Flavor::MariaDb {
        // Without this MariaDB sends a MySQL 5.x-compatible stream that hides its GTIDs.
        conn.query_drop("SET @mariadb_slave_capability = 4").await?;
        if let (true, Some(g)) = (by_gtid, gtids) {
            conn.query_drop(format!("SET @slave_connect_state = '{g}'")).await?;
            conn.query_drop("SET @slave_gtid_strict_mode = 1").await?;
        }
    }
    let mut request = BinlogStreamRequest::new(cfg.server_id);
    if !cfg.follow {
        request = request.with_non_blocking();
    }
    if !by_gtid || flavor == Flavor::MariaDb {
        request = request.with_filename(file.as_bytes()).with_pos(pos);
    }
    if let (Flavor::MySql, true, Some(GtidSet::MySql(set))) = (flavor, by_gtid, gtids) {
        if set.ranges.keys().any(|(_, tag)| !tag.is_empty()) {
            bail!("starting from a tagged GTID set is not supported yet: start from FILE:POS or an untagged set");
        }
        let sids: Vec<Sid<'static>> = set
            .ranges
            .iter()
            .map(|((uuid, _), ranges)| {
                Sid::new(*uuid).with_intervals(ranges.iter().map(|&(s, e)| GnoInterval::new(s, e)).collect())
            })
            .collect();
        request = request.with_gtid().with_gtid_set(sids);
    }
    let opts = conn.opts().clone();
    conn.get_binlog_stream(request).await.map_err(|e| explain(e, &opts))
}

/// Moves events from the connection into the channel until the stream ends or fails.
async fn pump(mut stream: mysql_async::BinlogStream, tx: mpsc::Sender<Result<OwnedEvent>>, timeout: Duration) {
    loop {
        let next = match tokio::time::timeout(timeout, stream.next()).await {
            Ok(next) => next,
            Err(_) => {
                let _ = tx
                    .send(Err(anyhow!("no event and no heartbeat from the server for {timeout:?}: the connection is dead")))
                    .await;
                return;
            }
        };
        let item = match next {
            None => return,
            Some(Err(e)) => {
                let msg = match &e {
                    mysql_async::Error::Server(s) if s.code == 1236 => anyhow!(
                        "the server cannot send the binlog from the requested position: {} — it was probably purged (see SHOW BINARY LOGS and gtid_purged); start from `earliest` or a newer position, knowing that changes in between are lost",
                        s.message
                    ),
                    mysql_async::Error::Server(s) if s.code == 4052 => anyhow!(
                        "another replica is connected with the same server id: give each binlog-tail its own --server-id ({})",
                        s.message
                    ),
                    _ => anyhow!("replication stream failed: {e}"),
                };
                let _ = tx.send(Err(msg)).await;
                return;
            }
            Some(Ok(event)) => {
                // mysql_async also yields the events inside a compressed transaction payload
                // (marked by a disabled checksum); the decoder unpacks payloads itself.
                if !event.footer().get_checksum_enabled() {
                    continue;
                }
                verified(&event)
            }
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

fn verified(event: &mysql_common::binlog::events::Event) -> Result<OwnedEvent> {
    let h = event.header();
    let header = Header {
        timestamp: h.timestamp(),
        type_code: h.event_type_raw(),
        server_id: h.server_id(),
        event_size: h.event_size(),
        log_pos: h.log_pos(),
        flags: h.flags_raw(),
    };
    if let (Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)), Some(stored)) =
        (event.footer().get_checksum_alg(), event.checksum())
    {
        let computed = event.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32);
        let stored = u32::from_le_bytes(stored);
        if computed != stored {
            bail!(
                "checksum mismatch in the event of type {} ending at {}: stored {stored:08x}, computed {computed:08x} (corrupted in transit or on the server)",
                header.type_code,
                header.log_pos
            );
        }
    }
    let mut body = event.data().to_vec();
    if header.type_code == ROTATE_EVENT {
        strip_unannounced_crc(&header, &mut body);
    }
    Ok(OwnedEvent { header, body })
}

const ROTATE_EVENT: u8 = 4;

/// The artificial ROTATE a server sends first precedes the format description that announces
/// checksums, so mysql_common leaves its CRC32 on the end of the file name. Strip it when the
/// last four bytes are the CRC of the rest.
fn strip_unannounced_crc(header: &Header, body: &mut Vec<u8>) {
    const POSITION_LEN: usize = 8;
    if body.len() < POSITION_LEN + 4 {
        return;
    }
    let split = body.len() - 4;
    let mut hasher = crc32fast::Hasher::new();
    let mut head = [0u8; super::frame::HEADER_LEN];
    head[..4].copy_from_slice(&header.timestamp.to_le_bytes());
    head[4] = header.type_code;
    head[5..9].copy_from_slice(&header.server_id.to_le_bytes());
    head[9..13].copy_from_slice(&header.event_size.to_le_bytes());
    head[13..17].copy_from_slice(&header.log_pos.to_le_bytes());
    head[17..19].copy_from_slice(&header.flags.to_le_bytes());
    hasher.update(&head);
    hasher.update(&body[..split]);
    if hasher.finalize().to_le_bytes() == body[split..] {
        body.truncate(split);
    }
}

/// `information_schema` lookups for tables whose binlog metadata is MINIMAL.
pub struct InfoSchema {
    rt: Handle,
    opts: Opts,
    conn: Option<Conn>,
}

impl InfoSchema {
    pub fn new(rt: Handle, opts: Opts) -> Self {
        InfoSchema { rt, opts, conn: None }
    }
}

impl SchemaLookup for InfoSchema {
    fn columns(&mut self, db: &str, table: &str) -> Result<Vec<ColumnInfo>> {
        let rows: Vec<(String, String, Option<String>, String)> = self.rt.block_on(async {
            if self.conn.is_none() {
                self.conn = Some(connect(&self.opts, Duration::ZERO).await?);
            }
            let conn = self.conn.as_mut().expect("just connected");
            let rows = conn
                .exec(
                    "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME, COLUMN_KEY FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                    (db, table),
                )
                .await?;
            Ok::<_, anyhow::Error>(rows)
        })?;
        if rows.is_empty() {
            bail!("`{db}`.`{table}` is not in information_schema (dropped since?), and the binlog has no column metadata: set binlog_row_metadata=FULL on the server");
        }
        Ok(rows
            .into_iter()
            .map(|(name, column_type, charset, key)| ColumnInfo {
                name,
                unsigned: column_type.contains("unsigned"),
                charset,
                values: enum_values(&column_type),
                is_pk: key == "PRI",
            })
            .collect())
    }
}

/// `enum('a','it''s')` -> ["a", "it's"]; None for other types.
fn enum_values(column_type: &str) -> Option<Vec<String>> {
    let inner = column_type
        .strip_prefix("enum(")
        .or_else(|| column_type.strip_prefix("set("))?
        .strip_suffix(')')?;
    let mut values = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut v = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    v.push('\'');
                }
                '\'' => break,
                '\\' => v.extend(chars.next()),
                c => v.push(c),
            }
        }
        values.push(v);
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_from_column_type() {
        assert_eq!(enum_values("enum('a','it''s','b,c')").unwrap(), ["a", "it's", "b,c"]);
        assert_eq!(enum_values("set('x','y')").unwrap(), ["x", "y"]);
        assert_eq!(enum_values("int(10) unsigned"), None);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("mysql://u:secret@h:3306/db"), "mysql://u:***@h:3306/db");
        assert_eq!(redact("mysql://u@h:3306"), "mysql://u@h:3306");
    }
}
