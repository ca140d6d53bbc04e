//! The position file and the config file, from text: parsing never panics, and what parses
//! survives a round trip (a saved position reads back as itself).
#![no_main]

use binlog_tail::config::check_stream_name;
use binlog_tail::filter::{parse_ops, ColumnPattern, TablePattern};
use binlog_tail::position::Position;
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
        // A config file becomes arguments that go through the same parsers as flags.
        let cmd = binlog_tail::cli::command();
        if let Ok(args) = binlog_tail::cli::file_args(&cmd, "stream", text, |_| false) {
            let argv = ["binlog-tail".into(), "stream".into()].into_iter().chain(args);
            if let Ok(cli) = binlog_tail::cli::parse_from(argv.collect::<Vec<std::ffi::OsString>>()) {
                if let binlog_tail::cli::Command::Stream(args) = cli.command {
                    let _ = args.emit.ops.as_deref().map(parse_ops);
                    for pattern in args.emit.include.iter().chain(&args.emit.exclude) {
                        let _ = TablePattern::parse(pattern);
                    }
                    for pattern in &args.emit.drop_column {
                        let _ = ColumnPattern::parse(pattern);
                    }
                    let _ = args.stream_name.as_deref().map(check_stream_name);
                }
            }
        }
    });
});
