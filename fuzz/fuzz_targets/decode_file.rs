//! Whole binlog files from bytes, exactly as `dump --file` reads them: framing, the format
//! description, every event type, MariaDB events, compressed payloads, table maps and rows.
//! Checksums are recomputed first so that mutated events reach the decoder.
#![no_main]

use binlog_tail::decode::{Decoder, Options};
use binlog_tail::frame::reseal;
use binlog_tail::sink::stdout::StdoutSink;
use binlog_tail::sink::Sink;
use binlog_tail::source::file::read_binlog;
use harness::{assert_error_names_place, BoundedAlloc, JsonLines};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc::new();

const FILE: &str = "fuzz.000001";

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if let Some(events) = bytes.get_mut(4..) {
        reseal(events);
    }
    ALLOC.bounded(data.len(), || {
        let options = Options { emit_ddl: true, ..Options::default() };
        let mut decoder = Decoder::new(None, options);
        let mut sink = StdoutSink::new(JsonLines::default(), binlog_tail::format::Encoder::new(Default::default()));
        let progress = indicatif::ProgressBar::hidden();
        match read_binlog(FILE, &bytes[..], false, &mut decoder, &mut sink, &progress) {
            Ok(_) => sink.flush().expect("JSON lines"),
            Err(e) => assert_error_names_place(&e, FILE),
        }
    });
});
