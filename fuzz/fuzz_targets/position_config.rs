//! The position file and the config file, from text: parsing never panics, and what parses
//! survives a round trip (a saved position reads back as itself).
#![no_main]

use std::str::FromStr;

use binlog_tail::config::{check_stream_name, FileConfig};
use binlog_tail::filter::{parse_ops, ColumnPattern, TablePattern};
use binlog_tail::position::Position;
use binlog_tail::source::Start;
use harness::BoundedAlloc;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc::new();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    ALLOC.bounded(data.len(), || {
        if let Ok(pos) = Position::parse(text) {
            let saved = serde_json::to_string(&pos).expect("a position serializes");
            assert_eq!(Position::parse(&saved).expect("a saved position parses"), pos);
        }
        if let Ok(config) = FileConfig::parse(text) {
            // The values a config file hands to the same validators as flags.
            let _ = config.start.as_deref().map(Start::from_str);
            let _ = config.ops.as_deref().map(parse_ops);
            for pattern in config.include.iter().chain(&config.exclude) {
                let _ = TablePattern::parse(pattern);
            }
            for pattern in &config.drop_columns {
                let _ = ColumnPattern::parse(pattern);
            }
            let _ = config.stream_name.as_deref().map(check_stream_name);
        }
    });
});
