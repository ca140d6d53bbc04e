//! Binlog events in, change events and transaction ends out.
//!
//! Invariants:
//! - Every change is handed to the sink before the end of its transaction, and a transaction's
//!   end (`Sink::commit`) is reported only after all its rows — so a position taken from a commit
//!   never skips a row. Positions are never taken at BEGIN.
//! - A transaction's rows are held back until its end (up to `HELD_ROWS` rows or `HELD_BYTES` of
//!   row images), so each carries the transaction's XID, which only its end tells, and the last
//!   `commit: true`. Past the bound the oldest rows go out early, without the XID: memory stays
//!   bounded whatever the transaction's size, and the last row always has both.
//! - Any event the decoder cannot decode faithfully (compressed MariaDB events, a corrupt payload,
//!   an unknown column type) is an error that names the position; rows are never skipped.

pub mod mariadb;
pub mod payload;
pub mod rows;
pub mod table;
pub mod value;

use std::collections::VecDeque;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use mysql_common::binlog::consts::{BinlogVersion, EventType};
use mysql_common::binlog::events::{FormatDescriptionEvent, GtidEvent, QueryEvent, RotateEvent, TableMapEvent};
use mysql_common::binlog::BinlogCtx;
use mysql_common::io::ParseBuf;
use mysql_common::proto::MyDeserialize;

use crate::event::{Change, Ddl, Op, SnapshotMark};
use crate::filter::Filter;
use crate::frame::{Checksums, EventReader, Partial, RawEvent, HEADER_LEN};
use crate::gtid::{Gtid, GtidSet, MySqlGtidSet, MAX_GNO};
use crate::outbox::OutboxTable;
use crate::position::{Flavor, Resume};
use crate::schema::Table;
use crate::signal::Signal;
use crate::sink::Sink;
use crate::text::Escaped;
use payload::Payload;
use rows::RowsEvent;
use table::{ColumnInfo, TableCache};

/// Event type codes the decoder acts on, as the header's byte (for `match`).
pub mod code {
    use mysql_common::binlog::consts::EventType;

    pub const QUERY: u8 = EventType::QUERY_EVENT as u8;
    pub const ROTATE: u8 = EventType::ROTATE_EVENT as u8;
    pub const FORMAT_DESCRIPTION: u8 = EventType::FORMAT_DESCRIPTION_EVENT as u8;
    pub const XID: u8 = EventType::XID_EVENT as u8;
    pub const TABLE_MAP: u8 = EventType::TABLE_MAP_EVENT as u8;
    pub const GTID: u8 = EventType::GTID_EVENT as u8;
    pub const ANONYMOUS_GTID: u8 = EventType::ANONYMOUS_GTID_EVENT as u8;
    pub const PREVIOUS_GTIDS: u8 = EventType::PREVIOUS_GTIDS_EVENT as u8;
    pub const XA_PREPARE: u8 = EventType::XA_PREPARE_LOG_EVENT as u8;
    pub const TRANSACTION_PAYLOAD: u8 = EventType::TRANSACTION_PAYLOAD_EVENT as u8;
    pub const GTID_TAGGED: u8 = EventType::GTID_TAGGED_LOG_EVENT as u8;
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
    /// The session that ran the transaction, from its BEGIN (MySQL writes one; MariaDB's GTID
    /// event replaces it).
    thread: Option<u32>,
    /// Inside BEGIN ... COMMIT/XID (or a GTID group that is not standalone).
    open: bool,
    /// Rows not yet handed to the sink, oldest first, and the bytes of their images.
    held: VecDeque<Change>,
    held_bytes: usize,
}

/// At most this many rows, or this many bytes of row images, are held back in a transaction.
const HELD_ROWS: usize = 10_000;
const HELD_BYTES: usize = 8 << 20;

fn image_bytes(c: &Change) -> usize {
    [&c.before, &c.after].into_iter().flatten().map(|i| i.json.len()).sum()
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
    /// The signal table (db, table): its inserts are handed to the sink as signals, whatever
    /// the filters say, and never emitted as change events.
    pub signal_table: Option<(String, String)>,
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
            .with_context(|| format!("at {}:{offset} (event type {})", Escaped(&self.file), ev.header.type_code))
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
                if t != code::ANONYMOUS_GTID && !(1..MAX_GNO).contains(&g.gno()) {
                    bail!("GTID event with the impossible transaction number {}", g.gno());
                }
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
                // (Parsed here: mysql_common allocates whatever counts the event claims.)
                let set = MySqlGtidSet::from_previous_gtids(ev.body)?;
                if self.gtids.is_none() {
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
                tracing::trace!(statement = %Escaped(&mariadb::parse_annotate_rows(ev.body)), "annotate rows");
            }
            mariadb::BINLOG_CHECKPOINT => {
                tracing::trace!(file = %Escaped(&mariadb::parse_binlog_checkpoint(ev.body)?), "binlog checkpoint");
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
                        self.tx.thread = Some(q.thread_id());
                        self.tx.open = true;
                    }
                    "COMMIT" | "ROLLBACK" => return self.end_transaction(None, next_offset, sink),
                    "XA" if sql.to_ascii_uppercase().contains("COMMIT")
                        || sql.to_ascii_uppercase().contains("ROLLBACK") =>
                    {
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
        let table_id_len = if fde.get_event_type_header_length(EventType::TABLE_MAP_EVENT) == 6 { 4 } else { 6 };
        table::check_optional_metadata(ev.body, table_id_len)?;
        let id = tme.table_id();
        let signal =
            self.opts.signal_table.as_ref().is_some_and(|(d, t)| *d == tme.database_name() && *t == tme.table_name());
        if !signal && !self.opts.filter.includes_table(&tme.database_name(), &tme.table_name()) {
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
                Escaped(&table.db),
                Escaped(&table.name)
            );
        } else {
            tracing::warn!(
                "`{}`.`{}`: the binlog lacks {} (binlog_row_metadata=MINIMAL); set binlog_row_metadata=FULL on the server, or read from the server with --url so information_schema can fill them in",
                Escaped(&table.db),
                Escaped(&table.name),
                table.gaps.join(", ")
            );
        }
    }

    fn rows(&mut self, ev: &RawEvent<'_>, offset: u64, sink: &mut dyn Sink) -> Result<Flow> {
        let post_header_len = self.fde.get_event_type_header_length(
            EventType::try_from(ev.header.type_code).unwrap_or(EventType::WRITE_ROWS_EVENT),
        );
        let rows_event = RowsEvent::parse(ev.header.type_code, ev.body, post_header_len)?;
        let table = self.tables.get(rows_event.table_id).with_context(|| {
            format!(
                "rows event for table id {} without a preceding TABLE_MAP (start the stream at a transaction boundary)",
                rows_event.table_id
            )
        })?;
        if let Some(table) =
            table.filter(|t| self.opts.signal_table.as_ref().is_some_and(|(d, n)| *d == t.db && *n == t.name))
        {
            if rows_event.op == Op::Insert {
                let table = table.clone();
                rows_event.for_each_row(&table, |_, after| {
                    let after = after.context("an insert without an after image")?;
                    match Signal::from_row(&table, &after) {
                        Ok(signal) => sink.signal(&signal),
                        Err(why) => {
                            tracing::warn!(
                                "ignoring a row of the signal table at {}:{offset}: {}",
                                Escaped(&self.file),
                                Escaped(&why)
                            );
                            Ok(())
                        }
                    }
                })?;
            }
            return Ok(Flow::Continue);
        }
        let outbox = table.and_then(|t| t.outbox).map(|i| &self.opts.outbox[i]);
        let Some(table) = table.filter(|_| outbox.is_some() || self.opts.filter.includes_op(rows_event.op)).cloned()
        else {
            self.stats.filtered_events += 1;
            self.stats.filtered_bytes += ev.body.len() as u64;
            return Ok(Flow::Continue);
        };
        if let Some(spec) = outbox {
            // Only inserts are published; the binlog keeps them even if the row is deleted.
            if rows_event.op == Op::Insert {
                rows_event.for_each_row(&table, |_, after| {
                    let after = after.context("an insert without an after image")?;
                    let origin = crate::event::origin(self.tx.gtid_text.as_deref(), &self.file, offset);
                    let msg = crate::outbox::message(spec, &table, &after, origin)
                        .with_context(|| format!("outbox row at {}:{offset}", Escaped(&self.file)))?;
                    sink.message(&msg)
                })?;
            }
            return Ok(Flow::Continue);
        }
        if sink.leaves_out(&table) {
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
                server_id: ev.header.server_id,
                thread: self.tx.thread,
                flavor: self.flavor.unwrap_or(Flavor::MySql),
                ts,
                gtid: self.tx.gtid_text.clone(),
                file: self.file.clone(),
                offset,
                xid: None,
                row: self.tx.rows,
                commit: false,
                snapshot: SnapshotMark::Stream,
                before,
                after,
            };
            self.tx.rows += 1;
            self.stats.changes += 1;
            self.tx.held_bytes += image_bytes(&change);
            self.tx.held.push_back(change);
            while flow == Flow::Continue
                && (self.tx.held.len() > HELD_ROWS || (self.tx.held_bytes > HELD_BYTES && self.tx.held.len() > 1))
            {
                let early = self.tx.held.pop_front().expect("more than one row is held");
                self.tx.held_bytes -= image_bytes(&early);
                flow = self.emit(early, sink)?;
            }
            Ok(())
        })?;
        Ok(flow)
    }

    fn emit(&mut self, change: Change, sink: &mut dyn Sink) -> Result<Flow> {
        sink.change(&change)?;
        self.emitted += 1;
        Ok(if self.limit_reached() { Flow::Stop } else { Flow::Continue })
    }

    /// True once `limit` change events were emitted (at once for `--limit 0`): read no further.
    pub fn limit_reached(&self) -> bool {
        self.opts.limit.is_some_and(|limit| self.emitted >= limit)
    }

    fn end_transaction(&mut self, xid: Option<u64>, next_offset: u64, sink: &mut dyn Sink) -> Result<Flow> {
        let mut flow = Flow::Continue;
        let held = std::mem::take(&mut self.tx.held);
        let last = held.len().saturating_sub(1);
        for (i, mut change) in held.into_iter().enumerate() {
            if flow == Flow::Stop {
                break;
            }
            change.xid = xid;
            change.commit = i == last;
            flow = self.emit(change, sink)?;
        }
        if let Some(gtid) = &self.tx.gtid {
            self.gtids.get_or_insert_with(|| GtidSet::empty_like(gtid)).add(gtid);
        }
        self.tx = Transaction::default();
        self.tables.trim();
        sink.commit(&Resume::new(self.file.clone(), next_offset, self.gtids.clone()))?;
        Ok(flow)
    }

    /// MySQL's TRANSACTION_PAYLOAD: a compressed transaction, decoded event by event as it is
    /// decompressed. A payload that does not decompress to exactly its declared size is an
    /// error: a partial payload would silently drop rows. A payload inside a payload is refused:
    /// servers never write one, and each level would multiply the work.
    fn payload(&mut self, ev: &RawEvent<'_>, offset: u64, next_offset: u64, sink: &mut dyn Sink) -> Result<Flow> {
        let payload = Payload::parse(ev.body)?;
        let declared = payload.uncompressed_size;
        let mut events = EventReader::new(payload.events()?, 0, Checksums { crc32: false });
        let mut flow = Flow::Continue;
        loop {
            match events.next_event() {
                Ok(Ok((inner_offset, inner))) => {
                    let t = inner.header.type_code;
                    if t == code::TRANSACTION_PAYLOAD || t == code::FORMAT_DESCRIPTION {
                        bail!("the transaction payload holds an event of type {t} at its offset {inner_offset}, which cannot be inside one: the payload is corrupt");
                    }
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
        if got != declared {
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

/// Regression inputs found by fuzzing (and by the outside test the fuzz targets were built to
/// reproduce): each is refused with an error that names the file, the offset, the event type
/// and what was wrong — no panic, no runaway memory or time.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Header;
    use crate::sink::stdout::StdoutSink;

    const FILE: &str = "binlog.000001";

    /// Feeds `(type, body)` events as if they sat at offsets 4, 1004, 2004, ...; returns the
    /// error with its context.
    fn feed(events: &[(u8, Vec<u8>)]) -> Result<(), String> {
        let mut decoder = Decoder::new(None, Options::default());
        decoder.set_file(FILE);
        let mut sink = StdoutSink::new(Vec::new(), crate::format::Encoder::new(Default::default()));
        for (i, (type_code, body)) in events.iter().enumerate() {
            let header = Header {
                timestamp: 1,
                type_code: *type_code,
                server_id: 1,
                event_size: (HEADER_LEN + body.len()) as u32,
                log_pos: 0,
                flags: 0,
            };
            let at = 4 + 1000 * i as u64;
            decoder.feed(RawEvent { header, body }, at, at + 1000, &mut sink).map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    }

    /// A TABLE_MAP of `db`.`t` (table id 7) with one column of `column_type` and its `meta`, and
    /// no optional metadata.
    fn table_map(column_type: u8, meta: &[u8]) -> Vec<u8> {
        let mut b = vec![7, 0, 0, 0, 0, 0, 1, 0]; // table id, flags
        b.extend([2, b'd', b'b', 0, 1, b't', 0]);
        b.extend([1, column_type, meta.len() as u8]);
        b.extend(meta);
        b.push(1); // nullability bitmap
        b
    }

    fn table_map_one_int() -> Vec<u8> {
        table_map(3, &[])
    }

    #[test]
    fn impossible_column_metadata_is_an_error() {
        // BIT(255 bytes + 255 bits): the byte count overflowed.
        let err = feed(&[(code::TABLE_MAP, table_map(16, &[0xff, 0xff]))]).unwrap_err();
        assert_names_place(&err, 4, code::TABLE_MAP, "BIT wider than 64 bits");
    }

    fn write_rows(bitmap: u8, rows: &[u8]) -> Vec<u8> {
        let mut b = vec![7, 0, 0, 0, 0, 0, 1, 0, 2, 0, 1, bitmap];
        b.extend(rows);
        b
    }

    fn assert_names_place(err: &str, offset: u64, type_code: u8, what: &str) {
        assert!(err.contains(&format!("at {FILE}:{offset} (event type {type_code})")), "{err}");
        assert!(err.contains(what), "{err}");
    }

    #[test]
    fn rows_that_consume_no_bytes_are_an_error_not_an_endless_loop() {
        let err =
            feed(&[(code::TABLE_MAP, table_map_one_int()), (rows::WRITE_V2, write_rows(0, &[0; 3]))]).unwrap_err();
        assert_names_place(&err, 1004, rows::WRITE_V2, "a row of zero bytes");
        // The same table with the column present decodes.
        feed(&[(code::TABLE_MAP, table_map_one_int()), (rows::WRITE_V2, write_rows(1, &[0, 42, 0, 0, 0]))]).unwrap();
    }

    #[test]
    fn enum_and_set_value_counts_are_checked_before_allocating() {
        // SET_STR_VALUE metadata claiming 2^40 values for the column: mysql_common would reserve
        // memory for all of them.
        let mut map = table_map_one_int();
        map.extend([5, 9, 0xfe]);
        map.extend((1u64 << 40).to_le_bytes());
        let err = feed(&[(code::TABLE_MAP, map)]).unwrap_err();
        assert_names_place(&err, 4, code::TABLE_MAP, "claims 1099511627776 ENUM/SET values in 0 bytes");
    }

    #[test]
    fn a_payload_inside_a_payload_is_refused() {
        let mut inner = vec![0u8; HEADER_LEN];
        inner[4] = code::TRANSACTION_PAYLOAD;
        inner[9] = HEADER_LEN as u8;
        // compression type none (255), uncompressed size, payload size; end mark; payload.
        let mut body = vec![2, 3, 0xfc, 0xff, 0, 3, 1, HEADER_LEN as u8, 1, 1, HEADER_LEN as u8, 0];
        body.extend(&inner);
        let err = feed(&[(code::TRANSACTION_PAYLOAD, body)]).unwrap_err();
        assert_names_place(&err, 4, code::TRANSACTION_PAYLOAD, "cannot be inside one");
    }

    #[test]
    fn an_unknown_payload_compression_is_an_error() {
        let body = vec![2, 1, 9, 1, 1, 0, 0];
        let err = feed(&[(code::TRANSACTION_PAYLOAD, body)]).unwrap_err();
        assert_names_place(&err, 4, code::TRANSACTION_PAYLOAD, "compression type 9");
    }

    #[test]
    fn previous_gtids_counts_are_checked_before_allocating() {
        // Claims 2^55 server UUIDs in 8 bytes; mysql_common would reserve memory for all of them.
        let body = (1u64 << 55).to_le_bytes().to_vec();
        let err = feed(&[(code::PREVIOUS_GTIDS, body)]).unwrap_err();
        assert_names_place(&err, 4, code::PREVIOUS_GTIDS, "claims 36028797018963968 server UUIDs");
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend([0xab; 16]);
        body.extend(u64::MAX.to_le_bytes());
        let err = feed(&[(code::PREVIOUS_GTIDS, body)]).unwrap_err();
        assert_names_place(&err, 4, code::PREVIOUS_GTIDS, "intervals but holds");
    }

    #[test]
    fn impossible_transaction_numbers_are_an_error() {
        let mut body = vec![1];
        body.extend([0xab; 16]);
        body.extend(u64::MAX.to_le_bytes());
        body.extend([2; 17]); // logical clock
        let err = feed(&[(code::GTID, body)]).unwrap_err();
        assert_names_place(&err, 4, code::GTID, "impossible transaction number 18446744073709551615");
    }
}
