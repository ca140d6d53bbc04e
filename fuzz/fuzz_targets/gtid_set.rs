//! GTID sets: the text forms of both flavours (`--start`, position files) and the binary
//! PREVIOUS_GTIDS event body. What parses prints canonically: parsing the printed form gives
//! the same set, and printing it again gives the same text.
#![no_main]

use std::str::FromStr;

use binlog_tail::gtid::{GtidSet, MySqlGtidSet};
use binlog_tail::source::Start;
use harness::BoundedAlloc;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc::new();

fuzz_target!(|data: &[u8]| {
    ALLOC.bounded(data.len(), || {
        if let Ok(set) = MySqlGtidSet::from_previous_gtids(data) {
            let printed = set.to_string();
            if !printed.is_empty() {
                assert_eq!(MySqlGtidSet::parse(&printed).expect("printed set parses"), set);
            }
        }
        let Ok(text) = std::str::from_utf8(data) else { return };
        let _ = Start::from_str(text);
        if let Ok(set) = GtidSet::parse(text) {
            let printed = set.to_string();
            let again = GtidSet::parse(&printed).unwrap_or_else(|e| panic!("`{printed}` does not parse: {e}"));
            assert_eq!(again.to_string(), printed);
        }
    });
});
