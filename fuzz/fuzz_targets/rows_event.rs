//! One rows event body decoded against one TABLE_MAP body, without a file around them:
//! input = [rows type selector u8][TABLE_MAP length u16 LE][TABLE_MAP body][rows body].
//! `scripts/fuzz` seeds it with every (TABLE_MAP, rows event) pair of the sample binlogs.
#![no_main]

use binlog_tail::decode::code::{TABLE_MAP, XID};
use binlog_tail::decode::rows::{DELETE_V1, DELETE_V2, PARTIAL_UPDATE, UPDATE_V1, UPDATE_V2, WRITE_V1, WRITE_V2};
use binlog_tail::decode::{Decoder, Options};
use binlog_tail::frame::{Header, RawEvent, HEADER_LEN};
use binlog_tail::sink::stdout::StdoutSink;
use binlog_tail::sink::Sink;
use harness::{assert_error_names_place, BoundedAlloc, JsonLines};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc::new();

const ROWS_TYPES: [u8; 7] = [WRITE_V1, UPDATE_V1, DELETE_V1, WRITE_V2, UPDATE_V2, DELETE_V2, PARTIAL_UPDATE];

fn event(type_code: u8, body: &[u8]) -> RawEvent<'_> {
    let event_size = (HEADER_LEN + body.len()) as u32;
    RawEvent { header: Header { timestamp: 1, type_code, server_id: 1, event_size, log_pos: 0, flags: 0 }, body }
}

fuzz_target!(|data: &[u8]| {
    let [selector, l0, l1, rest @ ..] = data else { return };
    let map_len = usize::from(u16::from_le_bytes([*l0, *l1])).min(rest.len());
    let (table_map, rows) = rest.split_at(map_len);
    let rows_type = ROWS_TYPES[usize::from(*selector) % ROWS_TYPES.len()];
    ALLOC.bounded(data.len(), || {
        let mut decoder = Decoder::new(None, Options::default());
        decoder.set_file("fuzz.000001");
        let mut sink = StdoutSink::new(JsonLines::default(), binlog_tail::format::Encoder::new(Default::default()));
        let events = [(TABLE_MAP, table_map), (rows_type, rows), (XID, &[0u8; 8][..])];
        for (i, (type_code, body)) in events.into_iter().enumerate() {
            let at = 4 + 1000 * i as u64;
            if let Err(e) = decoder.feed(event(type_code, body), at, at + 1000, &mut sink) {
                assert_error_names_place(&e, "fuzz.000001");
                return;
            }
        }
        sink.flush().expect("JSON lines");
    });
});
