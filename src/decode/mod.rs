//! Binlog events in, change events and transaction ends out.
//!
//! Invariants:
//! - Every change is handed to the sink before the end of its transaction, and a transaction's
//!   end (`Sink::commit`) is reported only after all its rows — so a position taken from a commit
//!   never skips a row. Positions are never taken at BEGIN.
//! - One row is held back until the next row or the transaction end is seen, so the last row of
//!   each transaction carries `commit: true` without buffering the transaction.
//! - Any event the decoder cannot decode faithfully (compressed MariaDB events, a corrupt payload,
//!   an unknown column type) is an error that names the position; rows are never skipped.

pub mod mariadb;
pub mod rows;
pub mod table;
pub mod value;

use std::io::Read;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use mysql_common::binlog::consts::{BinlogVersion, EventType};
use mysql_common::binlog::events::{
    FormatDescriptionEvent, GtidEvent, PreviousGtidsEvent, QueryEvent, RotateEvent, TableMapEvent, TransactionPayloadEvent,
};
use mysql_common::binlog::BinlogCtx;
use mysql_common::io::ParseBuf;
use mysql_common::proto::MyDeserialize;

use crate::event::{Change, Ddl, Op};
use crate::filter::Filter;
use crate::outbox::OutboxTable;
use crate::gtid::{Gtid, GtidSet, MySqlGtidSet};
use crate::sink::Sink;
use crate::frame::{Checksums, EventReader, Partial, RawEvent, HEADER_LEN};
use crate::position::{Flavor, Resume};
use rows::RowsEvent;
use crate::schema::Table;
use table::{ColumnInfo, TableCache};

/// Event type codes the decoder acts on.
mod code {
    pub const QUERY: u8 = 2;
    pub const ROTATE: u8 = 4;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const GTID: u8 = 33;
    pub const ANONYMOUS_GTID: u8 = 34;
    pub const PREVIOUS_GTIDS: u8 = 35;
    pub const XA_PREPARE: u8 = 38;
    pub const TRANSACTION_PAYLOAD: u8 = 40;
    pub const GTID_TAGGED: u8 = 42;
}

/// Column information for tables whose binlog metadata is MINIMAL.
pub trait SchemaLookup {
    fn columns(&mut self, db: &str, table: &str) -> Result<Vec<ColumnInfo>>;
}

/// Whether the caller should keep feeding events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

#[derive(Default)]
struct Transaction {
    gtid: Option<Gtid>,
    gtid_text: Option<Arc<str>>,
    ts: u64,
    rows: u64,
    /// Inside BEGIN ... COMMIT/XID (or a GTID group that is not standalone).
    open: bool,
    pending: Option<Change>,
}

pub struct Decoder {
    fde: Arc<FormatDescriptionEvent<'static>>,
    pub flavor: Option<Flavor>,
    tables: TableCache,
    schema: Option<Box<dyn SchemaLookup>>,
    warned: std::collections::HashSet<(String, String)>,
    file: Arc<str>,
    /// True for server streams, where ROTATE events name the file being sent. In files (and
    /// relay logs) positions are those of the file being read, whatever a ROTATE says.
    rotates_name_file: bool,
    tx: Transaction,
    pub gtids: Option<GtidSet>,
    opts: Options,
    emitted: u64,
    /// Changes decoded, events seen and row bytes skipped, for logs and benchmarks.
    pub stats: Stats,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub events: u64,
    pub changes: u64,
    /// Rows events skipped undecoded by the table and operation filters, and their bytes.
    pub filtered_events: u64,
    pub filtered_bytes: u64,
}

/// What the decoder emits.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Stop after this many change events.
    pub limit: Option<u64>,
    pub filter: Filter,
    /// Emit DDL (and TRUNCATE) statements as events of their own.
    pub emit_ddl: bool,
    /// Outbox tables: their inserts become messages instead of change events.
    pub outbox: Vec<OutboxTable>,
}

impl Decoder {
    pub fn new(schema: Option<Box<dyn SchemaLookup>>, opts: Options) -> Self {
        Decoder {
            fde: Arc::new(FormatDescriptionEvent::new(BinlogVersion::Version4)),
            flavor: None,
            tables: TableCache::default(),
            schema,
            warned: Default::default(),
            file: Arc::from(""),
            rotates_name_file: true,
            tx: Transaction::default(),
            gtids: None,
            opts,
            emitted: 0,
            stats: Stats::default(),
        }
    }

    /// Names the file the following events come from (file sources; servers send ROTATE).
    pub fn set_file(&mut self, name: &str) {
        self.file = Arc::from(name);
        self.rotates_name_file = false;
    }

    /// The binlog file the events being fed come from.
    pub fn file(&self) -> &Arc<str> {
        &self.file
    }

    /// Seeds the executed GTID set (the start position), so commits report the full set.
    pub fn set_gtids(&mut self, gtids: Option<GtidSet>) {
        self.gtids = gtids;
    }

    /// True between a transaction's first event and its end.
    pub fn in_transaction(&self) -> bool {
        self.tx.gtid.is_some() || self.tx.open || self.tx.rows > 0
    }

    /// Decodes one event found at `offset`; `next_offset` is where the following event starts.
    pub fn feed(&mut self, ev: RawEvent<'_>, offset: u64, next_offset: u64, sink: &mut dyn Sink) -> Result<Flow> {
        self.stats.events += 1;
        self.handle(ev, offset, next_offset, sink)
            .with_context(|| format!("at {}:{offset} (event type {})", self.file, ev.header.type_code))
    }

    fn handle(&mut self, ev: RawEvent<'_>, offset: u64, next_offset: u64, sink: &mut dyn Sink) -> Result<Flow> {
        let t = ev.header.type_code;
        let fde = self.fde.clone();
        if let Some(why) = mariadb::undecodable(t) {
            bail!("{why}");
        }
        match t {
            code::FORMAT_DESCRIPTION => {
                let parsed: FormatDescriptionEvent<'_> = parse(&fde, &ev)?;
                self.flavor = Some(Flavor::from_version(&parsed.server_version()));
                self.fde = Arc::new(parsed.into_owned());
            }
            code::ROTATE if self.rotates_name_file => {
                let rotate: RotateEvent<'_> = parse(&fde, &ev)?;
                // A rotate names the file that the *following* events come from.
                self.file = Arc::from(rotate.name().as_ref());
            }
            code::GTID | code::GTID_TAGGED | code::ANONYMOUS_GTID => {
                let g: GtidEvent = parse(&fde, &ev)?;
                let gtid = (t != code::ANONYMOUS_GTID).then(|| Gtid::MySql {
                    sid: g.sid(),
                    tag: g.tag().map(|t| t.to_string()).unwrap_or_default(),
                    gno: g.gno(),
                });
                let commit_us = g.immediate_commit_timestamp();
                let ts = if commit_us > 0 { commit_us / 1_000_000 } else { u64::from(ev.header.timestamp) };
                self.begin_group(gtid, ts, false);
            }
            mariadb::GTID => {
                let g = mariadb::parse_gtid(ev.body, ev.header.server_id)?;
                self.begin_group(Some(g.gtid), u64::from(ev.header.timestamp), !g.standalone);
            }
            code::PREVIOUS_GTIDS => {
                // The executed set before this file: the base of the set positions report.
                let prev: PreviousGtidsEvent<'_> = parse(&fde, &ev)?;
                if self.gtids.is_none() {
                    let mut set = MySqlGtidSet::default();
                    for sid in prev.sids() {
                        let tag = sid.tag().map(|t| t.to_string()).unwrap_or_default();
                        for i in sid.intervals() {
                            set.add_interval(sid.uuid(), &tag, i.start(), i.end());
                        }
                    }
                    self.gtids = Some(GtidSet::MySql(set));
                }
            }
            mariadb::GTID_LIST => {
                let list = mariadb::parse_gtid_list(ev.body)?;
                if self.gtids.is_none() {
                    if let Some(first) = list.first() {
                        let mut set = GtidSet::empty_like(first);
                        list.iter().for_each(|g| set.add(g));
                        self.gtids = Some(set);
                    }
                }
            }
            mariadb::ANNOTATE_ROWS => {
                tracing::trace!(statement = %mariadb::parse_annotate_rows(ev.body), "annotate rows");
            }
            mariadb::BINLOG_CHECKPOINT => {
                tracing::trace!(file = %mariadb::parse_binlog_checkpoint(ev.body)?, "binlog checkpoint");
            }
            code::QUERY => {
                let q: QueryEvent<'_> = parse(&fde, &ev)?;
                let sql = q.query();
                let verb = sql.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
                match verb.as_str() {
                    "BEGIN" | "START" => {
                        if self.tx.gtid.is_none() && !self.tx.open {
                            self.tx.ts = u64::from(ev.header.timestamp);
                        }
                        self.tx.open = true;
                    }
                    "COMMIT" | "ROLLBACK" => return self.end_transaction(None, next_offset, sink),
                    "XA" if sql.to_ascii_uppercase().contains("COMMIT") || sql.to_ascii_uppercase().contains("ROLLBACK") => {
                        return self.end_transaction(None, next_offset, sink);
                    }
                    _ if !self.tx.open => {
                        // DDL and other standalone statements are transactions of their own.
                        self.tables.forget_looked_up();
                        if self.opts.emit_ddl && self.opts.filter.includes_db(&q.schema()) {
                            let ddl = Ddl {
                                db: q.schema().into_owned(),
                                sql: sql.into_owned(),
                                ts: u64::from(ev.header.timestamp),
                                gtid: self.tx.gtid_text.clone(),
                                file: self.file.clone(),
                                offset,
                            };
                            sink.ddl(&ddl)?;
                        }
                        return self.end_transaction(None, next_offset, sink);
                    }
                    _ => {}
                }
            }
            code::XID => {
                let xid = value::Cursor::new(ev.body).uint_le(8)?;
                return self.end_transaction(Some(xid), next_offset, sink);
            }
            code::XA_PREPARE => return self.end_transaction(None, next_offset, sink),
            code::TABLE_MAP => self.table_map(&ev)?,
            t if rows::op_of(t).is_some() => return self.rows(&ev, offset, sink),
            code::TRANSACTION_PAYLOAD => return self.payload(&ev, offset, next_offset, sink),
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn begin_group(&mut self, gtid: Option<Gtid>, ts: u64, open: bool) {
        self.tx.gtid_text = gtid.as_ref().map(|g| Arc::from(g.to_string()));
        self.tx.gtid = gtid;
        self.tx.ts = ts;
        self.tx.rows = 0;
        self.tx.open = open;
    }

    fn table_map(&mut self, ev: &RawEvent<'_>) -> Result<()> {
        if self.tables.reuses(ev.body) {
            return Ok(());
        }
        let fde = self.fde.clone();
        let tme: TableMapEvent<'_> = parse(&fde, ev)?;
        let id = tme.table_id();
        if !self.opts.filter.includes_table(&tme.database_name(), &tme.table_name()) {
            self.tables.insert(id, ev.body, None);
            return Ok(());
        }
        let info = if Table::needs_lookup(&tme) {
            match self.schema.as_mut() {
                Some(lookup) => Some(lookup.columns(&tme.database_name(), &tme.table_name())?),
                None => None,
            }
        } else {
            None
        };
        let mut table = Table::from_table_map(&tme, info.as_deref(), &self.opts.filter)?;
        table.outbox = self.opts.outbox.iter().position(|o| o.is(&table.db, &table.name));
        self.warn_gaps(&table, info.is_some());
        self.tables.insert(id, ev.body, Some(Arc::new(table)));
        Ok(())
    }

    fn warn_gaps(&mut self, table: &Table, looked_up: bool) {
        let key = (table.db.clone(), table.name.clone());
        if (table.gaps.is_empty() && !looked_up) || !self.warned.insert(key) {
            return;
        }
        if looked_up {
            tracing::warn!(
                "`{}`.`{}`: the binlog has no column metadata (binlog_row_metadata=MINIMAL); column names and types are taken from information_schema as it is now, which is wrong for rows written before a schema change. Set binlog_row_metadata=FULL on the server",
                table.db, table.name
            );
        } else {
            tracing::warn!(
                "`{}`.`{}`: the binlog lacks {} (binlog_row_metadata=MINIMAL); set binlog_row_metadata=FULL on the server, or read from the server with --url so information_schema can fill them in",
                table.db,
                table.name,
                table.gaps.join(", ")
            );
        }
    }

    fn rows(&mut self, ev: &RawEvent<'_>, offset: u64, sink: &mut dyn Sink) -> Result<Flow> {
        let post_header_len = self
            .fde
            .get_event_type_header_length(EventType::try_from(ev.header.type_code).unwrap_or(EventType::WRITE_ROWS_EVENT));
        let rows_event = RowsEvent::parse(ev.header.type_code, ev.body, post_header_len)?;
        let table = self
            .tables
            .get(rows_event.table_id)
            .with_context(|| format!("rows event for table id {} without a preceding TABLE_MAP (start the stream at a transaction boundary)", rows_event.table_id))?;
        let outbox = table.and_then(|t| t.outbox).map(|i| &self.opts.outbox[i]);
        let Some(table) = table.filter(|_| outbox.is_some() || self.opts.filter.includes_op(rows_event.op)).cloned() else {
            self.stats.filtered_events += 1;
            self.stats.filtered_bytes += ev.body.len() as u64;
            return Ok(Flow::Continue);
        };
        if let Some(spec) = outbox {
            // Only inserts are published; the binlog keeps them even if the row is deleted.
            if rows_event.op == Op::Insert {
                rows_event.for_each_row(&table, |_, after| {
                    let after = after.context("an insert without an after image")?;
                    let msg = crate::outbox::message(spec, &table, &after)
                        .with_context(|| format!("outbox row at {}:{offset}", self.file))?;
                    sink.message(&msg)
                })?;
            }
            return Ok(Flow::Continue);
        }
        let ts = if self.tx.ts > 0 { self.tx.ts } else { u64::from(ev.header.timestamp) };
        let mut flow = Flow::Continue;
        rows_event.for_each_row(&table, |before, after| {
            if flow == Flow::Stop {
                return Ok(());
            }
            let change = Change {
                op: rows_event.op,
                table: table.clone(),
                ts,
                gtid: self.tx.gtid_text.clone(),
                file: self.file.clone(),
                offset,
                xid: None,
                row: self.tx.rows,
                commit: false,
                before,
                after,
            };
            self.tx.rows += 1;
            self.stats.changes += 1;
            if let Some(prev) = self.tx.pending.replace(change) {
                flow = self.emit(prev, sink)?;
            }
            Ok(())
        })?;
        Ok(flow)
    }

    fn emit(&mut self, change: Change, sink: &mut dyn Sink) -> Result<Flow> {
        sink.change(&change)?;
        self.emitted += 1;
        Ok(match self.opts.limit {
            Some(limit) if self.emitted >= limit => Flow::Stop,
            _ => Flow::Continue,
        })
    }

    fn end_transaction(&mut self, xid: Option<u64>, next_offset: u64, sink: &mut dyn Sink) -> Result<Flow> {
        let mut flow = Flow::Continue;
        if let Some(mut last) = self.tx.pending.take() {
            last.commit = true;
            last.xid = xid;
            flow = self.emit(last, sink)?;
        }
        if let Some(gtid) = &self.tx.gtid {
            self.gtids.get_or_insert_with(|| GtidSet::empty_like(gtid)).add(gtid);
        }
        self.tx = Transaction::default();
        self.tables.trim();
        sink.commit(&Resume { file: self.file.clone(), offset: next_offset, gtids: self.gtids.clone() })?;
        Ok(flow)
    }

    /// MySQL's TRANSACTION_PAYLOAD: a compressed transaction, decoded event by event as it is
    /// decompressed. A payload that does not decompress to exactly its declared size is an
    /// error: a partial payload would silently drop rows.
    fn payload(&mut self, ev: &RawEvent<'_>, offset: u64, next_offset: u64, sink: &mut dyn Sink) -> Result<Flow> {
        let fde = self.fde.clone();
        let tpe: TransactionPayloadEvent<'_> = parse(&fde, ev)?;
        let declared = tpe.uncompressed_size();
        let reader = tpe.decompressed().context("cannot start decompressing the transaction payload")?;
        let mut counted = CountingReader { inner: reader, count: 0 };
        let mut events = EventReader::new(&mut counted, 0, Checksums { crc32: false });
        let mut flow = Flow::Continue;
        loop {
            match events.next_event() {
                Ok(Ok((_, inner))) => {
                    if flow == Flow::Continue {
                        flow = self.handle(inner, offset, next_offset, sink)?;
                    }
                }
                Ok(Err(Partial::End)) => break,
                Ok(Err(Partial::Truncated { have, need })) => {
                    bail!("the compressed transaction payload ends inside an event ({have} of {need} bytes): the payload is corrupt")
                }
                Err(e) => bail!("corrupt transaction payload: {e}"),
            }
        }
        let got = events.offset;
        drop(events);
        if got != declared || counted.count != declared {
            bail!("the compressed transaction payload decompressed to {got} bytes but declares {declared}: it is corrupt, and its rows cannot be trusted");
        }
        Ok(flow)
    }
}

/// Parses an event body with mysql_common, in the context of the current format description.
fn parse<'a, T>(fde: &'a FormatDescriptionEvent<'static>, ev: &RawEvent<'a>) -> Result<T>
where
    T: MyDeserialize<'a, Ctx = BinlogCtx<'a>>,
{
    let ctx = BinlogCtx::new(HEADER_LEN + ev.body.len(), fde, ev.header.type_code);
    ParseBuf(ev.body).parse(ctx).map_err(|e| anyhow!("malformed event: {e}"))
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}
