//! A MySQL or MariaDB server, read as a replica over the replication protocol.
//!
//! Invariants: the connection is checked (binary log on, ROW format) before any event is read;
//! every event's CRC32 is verified; a connection that sends neither events nor heartbeats for
//! three heartbeat periods is treated as dead instead of hanging forever. Events travel to the
//! decoding thread through a bounded channel, so a slow sink slows reading instead of growing
//! memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Opts, OptsBuilder};
use mysql_common::binlog::consts::BinlogChecksumAlg;
use mysql_common::packets::{GnoInterval, Sid};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use tokio::sync::Notify;

use super::{tls, Start};
use crate::checkpoint::{Position, ServerIdentity};
use crate::decode::table::ColumnInfo;
use crate::decode::SchemaLookup;
use crate::error::{is_transient, Purged, Transient};
use crate::frame::{Header, RawEvent};
use crate::gtid::GtidSet;
use crate::history;
use crate::position::{Flavor, Resume};
use crate::preflight::{self, Check, Status};
use crate::text::Escaped;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub url: String,
    pub password: Option<String>,
    pub server_id: u32,
    /// Keep tailing at the server's end instead of stopping there.
    pub follow: bool,
    pub heartbeat: Duration,
    /// How long to keep retrying the first connection while the server is starting.
    pub wait_for_server: Duration,
    /// Resume saved positions by GTID set where the server has GTIDs (else by file and offset).
    pub resume_by_gtid: bool,
    /// TLS settings resolved from the options and the URL (`tls::resolve`); `None` leaves the
    /// URL's own.
    pub tls: Option<mysql_async::SslOpts>,
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
    /// The shutdown signal fired while waiting.
    Interrupted,
    End,
}

/// What to check before streaming.
pub enum Checks<'a> {
    /// Only what `dump` needs: binary log on, ROW format.
    Basic,
    /// Every preflight check, including whether the saved position is still on the server.
    Preflight(Option<&'a Position>),
}

pub struct ServerSource {
    rx: mpsc::Receiver<Result<OwnedEvent>>,
    /// The first event, received while opening.
    first: Option<OwnedEvent>,
    rt: Handle,
    pub flavor: Flavor,
    pub identity: ServerIdentity,
    /// The executed GTID set the stream starts after, when known.
    pub start_gtids: Option<GtidSet>,
    /// The stream was requested by GTID set rather than file and offset.
    pub resumed_by_gtid: bool,
    /// Where the stream starts, as a position to resume from.
    pub start: Resume,
    delivered: bool,
}

impl ServerSource {
    pub fn try_next(&mut self) -> Result<Next> {
        if let Some(first) = self.first.take() {
            return received(&mut self.delivered, Ok(first));
        }
        match self.rx.try_recv() {
            Ok(ev) => received(&mut self.delivered, ev),
            Err(mpsc::error::TryRecvError::Empty) => Ok(Next::Idle),
            Err(mpsc::error::TryRecvError::Disconnected) => Ok(Next::End),
        }
    }

    /// Waits up to `wait` for the next event, or until `interrupt` is notified.
    pub fn next_blocking(&mut self, interrupt: &Notify, wait: Duration) -> Result<Next> {
        if let Some(first) = self.first.take() {
            return received(&mut self.delivered, Ok(first));
        }
        let (rx, delivered) = (&mut self.rx, &mut self.delivered);
        self.rt.block_on(async {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => received(delivered, ev),
                    None => Ok(Next::End),
                },
                _ = interrupt.notified() => Ok(Next::Interrupted),
                _ = tokio::time::sleep(wait) => Ok(Next::Idle),
            }
        })
    }

    /// Whether the stream sent more than the preamble every new stream starts with (rotate,
    /// format description, GTID lists): a binlog event or a heartbeat. A server that refuses a
    /// replica often sends the preamble and closes.
    pub fn delivered(&self) -> bool {
        self.delivered
    }

    /// Connects, checks the server, and starts streaming from `start` on `rt`.
    pub fn open(rt: &Handle, cfg: &ServerConfig, start: &Start, checks: Checks<'_>) -> Result<ServerSource> {
        let opts = connect_opts(cfg)?;
        rt.block_on(async {
            let mut conn = connect(&opts, cfg.wait_for_server).await?;
            let (flavor, _) = flavor_of(&mut conn).await?;
            match checks {
                Checks::Basic => check_server(&mut conn).await?,
                Checks::Preflight(saved) => {
                    enforce(preflight::run(&mut conn, flavor, saved, cfg.resume_by_gtid).await?)?
                }
            }
            let identity = preflight::identity(&mut conn, flavor).await?;
            let at = resolve_start(&mut conn, flavor, start, cfg.resume_by_gtid).await?;
            match (&at.gtids, at.by_gtid) {
                (Some(g), true) => tracing::info!("streaming after GTID set {g}"),
                _ => tracing::info!("streaming from {}:{}", at.file, at.pos),
            }
            let stream = request_stream(conn, flavor, cfg, &at).await?;
            let (tx, mut rx) = mpsc::channel(1024);
            tokio::spawn(pump(stream, tx, cfg.heartbeat * 3, cfg.follow, opts.clone()));
            // The server refuses a start it cannot serve with an error instead of the first
            // event: only a stream that has begun counts as opened (and its start may be saved).
            let first = match rx.recv().await {
                Some(first) => Some(first.map_err(|e| if is_transient(&e) { e.context(EndedAtOnce) } else { e })?),
                None => None,
            };
            let start = Resume::new(Arc::from(at.file.as_str()), at.pos, at.gtids.clone());
            Ok(ServerSource {
                rx,
                first,
                rt: rt.clone(),
                flavor,
                identity,
                resumed_by_gtid: at.by_gtid,
                start_gtids: at.gtids,
                start,
                delivered: false,
            })
        })
    }
}

/// Marks a transient failure of a new stream before its first event: the server closed it at
/// once, which retrying may not cure.
#[derive(Debug, thiserror::Error)]
#[error("the server ended the new replication stream before its first event")]
pub struct EndedAtOnce;

/// An event from the pump, noting whether it is more than the stream's preamble.
fn received(delivered: &mut bool, ev: Result<OwnedEvent>) -> Result<Next> {
    use crate::decode::mariadb::{BINLOG_CHECKPOINT, GTID_LIST};
    use crate::frame::FORMAT_DESCRIPTION_EVENT;
    const PREVIOUS_GTIDS: u8 = 35;
    const PREAMBLE: [u8; 5] = [ROTATE_EVENT, FORMAT_DESCRIPTION_EVENT, PREVIOUS_GTIDS, BINLOG_CHECKPOINT, GTID_LIST];
    let ev = ev?;
    *delivered |= !PREAMBLE.contains(&ev.header.type_code);
    Ok(Next::Event(ev))
}

/// Fails on preflight failures (a purged binlog as `Purged`), logs the warnings.
fn enforce(checks: Vec<Check>) -> Result<()> {
    for c in checks.iter().filter(|c| c.status == Status::Warn) {
        tracing::warn!("{}: {} (fix: {})", c.name, c.detail, c.fix.as_deref().unwrap_or("-"));
    }
    let failed: Vec<&Check> = checks.iter().filter(|c| c.status == Status::Fail).collect();
    if failed.is_empty() {
        return Ok(());
    }
    let text = failed
        .iter()
        .map(|c| format!("{}: {} (fix: {})", c.name, c.detail, c.fix.as_deref().unwrap_or("-")))
        .collect::<Vec<_>>()
        .join("; ");
    if failed.iter().any(|c| c.lost) {
        return Err(Purged(text).into());
    }
    bail!("the server is not ready for streaming without losing events: {text}")
}

pub fn connect_opts(cfg: &ServerConfig) -> Result<Opts> {
    let mut builder = OptsBuilder::from_opts(parse_url(&cfg.url)?).prefer_socket(false);
    if let Some(pw) = &cfg.password {
        builder = builder.pass(Some(pw.clone()));
    }
    if let Some(tls) = &cfg.tls {
        builder = builder.ssl_opts(tls.clone());
    }
    Ok(builder.into())
}

/// The `--url` as the driver reads it (`mysql://` may be left out).
pub fn parse_url(url: &str) -> Result<Opts> {
    let url = if url.contains("://") { url.to_string() } else { format!("mysql://{url}") };
    Opts::from_url(&url).map_err(|e| {
        let hint = match &e {
            mysql_async::UrlError::UnknownParameter { param }
                if param.starts_with("ssl") || param.starts_with("tls") =>
            {
                ": TLS files are given with --tls-ca, --tls-cert and --tls-key"
            }
            _ => " (expected mysql://USER@HOST:PORT)",
        };
        anyhow!("bad --url `{}`: {e}{hint}", redact(&url))
    })
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

/// Connects, retrying refused or unreachable connections until `wait` has passed. A server that
/// cannot be reached at all is a `Transient` error, so a streaming caller can retry.
pub async fn connect(opts: &Opts, wait: Duration) -> Result<Conn> {
    let deadline = Instant::now() + wait;
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(10), Conn::new(opts.clone())).await;
        let err = match attempt {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => e,
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => {
                return Err(Transient(anyhow!(
                    "connecting to {}:{} timed out after 10 s: check the host, port and firewall",
                    opts.ip_or_hostname(),
                    opts.tcp_port()
                ))
                .into())
            }
        };
        let retriable = matches!(err, mysql_async::Error::Io(_)) && tls::explain(&err, opts).is_none();
        if retriable && Instant::now() + delay < deadline {
            tracing::info!("server not reachable yet ({err}); retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
            continue;
        }
        return Err(classify(err, opts));
    }
}

/// Turns a driver error into a message that says what to do, typed by what should happen next.
pub fn classify(err: mysql_async::Error, opts: &Opts) -> anyhow::Error {
    let host = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    let user = opts.user().unwrap_or("");
    if let Some(tls_failure) = tls::explain(&err, opts) {
        return tls_failure;
    }
    match &err {
        mysql_async::Error::Server(e) if e.code == 1045 => {
            // The server answers a plain connection it requires TLS for, and a missing client
            // certificate, with the same error as a wrong password.
            let tls_hint = match opts.ssl_opts() {
                None => "; or the server requires TLS (require_secure_transport): connect with --tls, or --tls-ca FILE for a private CA",
                Some(ssl) if ssl.client_identity().is_none() => "; or the user requires a client certificate (REQUIRE X509): give it with --tls-cert and --tls-key",
                Some(_) => "; or the server does not accept this client certificate for the user",
            };
            anyhow!(
                "access denied for user `{user}` at {host}: check the password (--password-file or MYSQL_PWD) and that the user may connect from this host{tls_hint}"
            )
        }
        // MySQL's ER_SECURE_TRANSPORT_REQUIRED (MariaDB answers with 1045 instead).
        mysql_async::Error::Server(e) if e.code == 3159 => anyhow!(
            "the server at {host} requires TLS ({}): connect with --tls, or --tls-ca FILE for a private CA",
            e.message
        ),
        mysql_async::Error::Server(e) if e.code == 1236 && diverged(&e.message) => Purged(format!(
            "the server's binlog does not hold the requested position in its history: {} — the position comes from another history (a diverged server, or a binlog reset since). Point --url at the server (or a replica of it) whose history the position belongs to; to start over, move the position file away and choose --start deliberately",
            e.message
        ))
        .into(),
        mysql_async::Error::Server(e) if e.code == 1236 => Purged(format!(
            "the server cannot send the binlog from the requested position: {} — the binlog there was probably purged (see SHOW BINARY LOGS and gtid_purged); the changes in between are lost. To go on anyway, move the position file away and start from `earliest` or a newer position",
            e.message
        ))
        .into(),
        mysql_async::Error::Server(e) if e.code == 4052 || e.message.contains("same server_uuid/server_id") => anyhow!(
            "another replica is connected with the same server id: give each binlog-tail its own --server-id ({})",
            e.message
        ),
        mysql_async::Error::Server(e) if e.code == 1227 || e.code == 1044 => anyhow!(
            "user `{user}` lacks a privilege: {}. Grant it: GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO ...",
            e.message
        ),
        mysql_async::Error::Io(io) => Transient(anyhow!(
            "cannot connect to {host}: {io}. Is the server running and listening there? (--wait-for-server SECS waits for a server that is starting)"
        ))
        .into(),
        // The server shutting down or killing our connection, lost connections: try again.
        mysql_async::Error::Server(e) if matches!(e.code, 1053 | 1927 | 2006 | 2013 | 1040 | 1203) => {
            Transient(anyhow!("the server ended the connection: {}", e.message)).into()
        }
        mysql_async::Error::Driver(_) => Transient(anyhow!("connection to {host} failed: {err}")).into(),
        _ => anyhow!("{err}"),
    }
}

/// MariaDB's refusals of a GTID that its binlog never held (as opposed to one it purged).
fn diverged(message: &str) -> bool {
    ["diverged", "is not in the master's binlog", "is missing the GTID", "conflicts with the binary log"]
        .iter()
        .any(|m| message.contains(m))
}

/// The server's flavour and its version string.
pub async fn flavor_of(conn: &mut Conn) -> Result<(Flavor, String)> {
    let version: String = conn.query_first("SELECT @@version").await?.context("the server returned no version")?;
    Ok((Flavor::from_version(&version), version))
}

/// Refuses servers whose binlog cannot give us rows.
async fn check_server(conn: &mut Conn) -> Result<()> {
    let (log_bin, format): (i64, String) =
        conn.query_first("SELECT @@log_bin, @@binlog_format").await?.context("the server returned no settings")?;
    if log_bin == 0 {
        bail!("binary logging is off on this server (log_bin=OFF): start it with --log-bin --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL");
    }
    if !format.eq_ignore_ascii_case("ROW") {
        bail!("the server writes binlog_format={format}, so its binlog holds statements, not rows: set binlog_format=ROW (SET GLOBAL binlog_format=ROW and in the server config; sessions started before keep the old format)");
    }
    Ok(())
}

/// Where the stream starts, resolved against the server.
struct StartAt {
    file: String,
    pos: u64,
    /// The executed set before the first event (seeds the decoder's set).
    gtids: Option<GtidSet>,
    /// Ask the server for the events after `gtids` instead of at `file:pos`.
    by_gtid: bool,
}

async fn resolve_start(conn: &mut Conn, flavor: Flavor, start: &Start, prefer_gtid: bool) -> Result<StartAt> {
    let gtid_var = match flavor {
        Flavor::MariaDb => "@@gtid_binlog_pos",
        Flavor::MySql => "@@gtid_executed",
    };
    let same_flavor = |set: &GtidSet| {
        matches!((flavor, set), (Flavor::MariaDb, GtidSet::MariaDb(_)) | (Flavor::MySql, GtidSet::MySql(_)))
    };
    Ok(match start {
        Start::Latest => {
            let head = binlog_head(conn).await?;
            // The GTID state must be the one *at* the head read, not a moment later: a
            // transaction committed in between would otherwise count as delivered.
            let gtids = match (flavor, head.executed) {
                (Flavor::MariaDb, _) => history::check_start_file(conn, flavor, &head.file, head.pos).await?,
                (Flavor::MySql, Some(executed)) => Some(executed),
                (Flavor::MySql, None) => {
                    let gtids: Option<String> = conn.query_first(format!("SELECT {gtid_var}")).await.ok().flatten();
                    gtids.filter(|g| !g.trim().is_empty()).map(|g| GtidSet::parse(&g)).transpose()?
                }
            };
            StartAt { file: head.file, pos: head.pos, gtids, by_gtid: false }
        }
        Start::Earliest => {
            let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
            let first: String = logs.first().and_then(|r| r.get(0)).context("the server lists no binary logs")?;
            StartAt { file: first, pos: 4, gtids: None, by_gtid: false }
        }
        Start::FilePos(file, pos) => {
            let gtids = history::check_start_file(conn, flavor, file, *pos).await?;
            StartAt { file: file.clone(), pos: *pos, gtids, by_gtid: false }
        }
        Start::Gtid(set) => {
            history::check_start_gtids(conn, flavor, set).await?;
            StartAt { file: String::new(), pos: 4, gtids: Some(set.clone()), by_gtid: true }
        }
        Start::Resume { file, offset, gtids } => {
            let gtid_mode_on = match flavor {
                Flavor::MariaDb => true,
                Flavor::MySql => conn
                    .query_first::<String, _>("SELECT @@gtid_mode")
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.eq_ignore_ascii_case("ON")),
            };
            let by_gtid = prefer_gtid && gtid_mode_on && gtids.as_ref().is_some_and(same_flavor);
            StartAt { file: file.clone(), pos: *offset, gtids: gtids.clone(), by_gtid }
        }
    })
}

/// The end of the server's binlog, and (MySQL) the executed GTID set reported with it.
struct Head {
    file: String,
    pos: u64,
    executed: Option<GtidSet>,
}

async fn binlog_head(conn: &mut Conn) -> Result<Head> {
    // MySQL 8.4 renamed SHOW MASTER STATUS; MariaDB and older MySQL know the old name.
    let row: Option<mysql_async::Row> = match conn.query_first("SHOW BINARY LOG STATUS").await {
        Ok(row) => row,
        Err(_) => conn.query_first("SHOW MASTER STATUS").await?,
    };
    let row = row.context("the server reports no binlog position (is log_bin on?)")?;
    let file: String = row.get(0).context("no binlog file in SHOW MASTER STATUS")?;
    let pos: u64 = row.get(1).context("no binlog position in SHOW MASTER STATUS")?;
    // MySQL's fifth column, Executed_Gtid_Set, is read together with the position.
    let executed: Option<String> = row.get_opt(4).and_then(|v| v.ok());
    let executed = executed.map(|g| g.split_whitespace().collect::<String>()).filter(|g| !g.is_empty());
    Ok(Head { file, pos, executed: executed.map(|g| GtidSet::parse(&g)).transpose()? })
}

async fn request_stream(
    mut conn: Conn,
    flavor: Flavor,
    cfg: &ServerConfig,
    at: &StartAt,
) -> Result<mysql_async::BinlogStream> {
    conn.query_drop(format!("SET @master_heartbeat_period = {}", cfg.heartbeat.as_nanos())).await?;
    if flavor == Flavor::MariaDb {
        // Without this MariaDB sends a MySQL 5.x-compatible stream that hides its GTIDs.
        conn.query_drop("SET @mariadb_slave_capability = 4").await?;
        if let (true, Some(g)) = (at.by_gtid, &at.gtids) {
            conn.query_drop(format!("SET @slave_connect_state = '{g}'")).await?;
            conn.query_drop("SET @slave_gtid_strict_mode = 1").await?;
        }
    }
    let mut request = BinlogStreamRequest::new(cfg.server_id);
    if !cfg.follow {
        request = request.with_non_blocking();
    }
    if !at.by_gtid || flavor == Flavor::MariaDb {
        request = request.with_filename(at.file.as_bytes()).with_pos(at.pos);
    }
    if let (Flavor::MySql, true, Some(GtidSet::MySql(set))) = (flavor, at.by_gtid, &at.gtids) {
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
    conn.get_binlog_stream(request).await.map_err(|e| stream_error(e, &opts))
}

/// A failure of the replication stream itself. The user is logged in by then, so "access
/// denied" (how MariaDB answers a missing REPLICATION SLAVE) is about the grant, not the password.
fn stream_error(err: mysql_async::Error, opts: &Opts) -> anyhow::Error {
    match &err {
        mysql_async::Error::Server(e) if e.code == 1045 || e.code == 1227 => anyhow!(
            "user `{}` may not read the binlog ({}): GRANT REPLICATION SLAVE ON *.* TO it (binlog-tail check lists every privilege it needs)",
            opts.user().unwrap_or(""),
            e.message
        ),
        _ => classify(err, opts),
    }
}

/// Moves events from the connection into the channel until the stream ends or fails.
async fn pump(
    mut stream: mysql_async::BinlogStream,
    tx: mpsc::Sender<Result<OwnedEvent>>,
    timeout: Duration,
    follow: bool,
    opts: Opts,
) {
    loop {
        let item = match tokio::time::timeout(timeout, stream.next()).await {
            Err(_) => Err(Transient(anyhow!(
                "no event and no heartbeat from the server for {timeout:?}: the connection is dead"
            ))
            .into()),
            // A tailing stream never ends by itself: the server closed it (shutdown, KILL).
            Ok(None) if follow => Err(Transient(anyhow!("the server closed the replication stream")).into()),
            Ok(None) => return,
            Ok(Some(Err(e))) => Err(stream_error(e, &opts).context("replication stream failed")),
            // mysql_async also yields the events inside a compressed transaction payload
            // (marked by a disabled checksum); the decoder unpacks payloads itself.
            Ok(Some(Ok(event))) if !event.footer().get_checksum_enabled() => continue,
            Ok(Some(Ok(event))) => verified(&event),
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
    let mut head = [0u8; crate::frame::HEADER_LEN];
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
        let rows: Vec<(String, String, Option<String>, String, String)> = self.rt.block_on(async {
            if self.conn.is_none() {
                self.conn = Some(connect(&self.opts, Duration::ZERO).await?);
            }
            let conn = self.conn.as_mut().expect("just connected");
            let rows = conn
                .exec(
                    "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME, COLUMN_KEY, DATA_TYPE FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                    (db, table),
                )
                .await?;
            Ok::<_, anyhow::Error>(rows)
        })?;
        if rows.is_empty() {
            bail!("`{db}`.`{table}` is not in information_schema (dropped since?), and the binlog has no column metadata: set binlog_row_metadata=FULL on the server", db = Escaped(db), table = Escaped(table));
        }
        Ok(rows
            .into_iter()
            .map(|(name, column_type, charset, key, data_type)| ColumnInfo {
                name,
                unsigned: column_type.contains("unsigned"),
                charset,
                values: enum_values(&column_type),
                is_pk: key == "PRI",
                data_type: data_type.to_ascii_lowercase(),
            })
            .collect())
    }
}

/// `enum('a','it''s')` -> ["a", "it's"]; None for other types.
fn enum_values(column_type: &str) -> Option<Vec<String>> {
    let inner = column_type.strip_prefix("enum(").or_else(|| column_type.strip_prefix("set("))?.strip_suffix(')')?;
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
