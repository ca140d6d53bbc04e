//! binlog-tail: the command line. Each subcommand runs a pipeline from the library; this file
//! only parses arguments, sets up logging and turns the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;

use binlog_tail::cli::{Cli, Command};
use binlog_tail::{error, pipeline, sink};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Dump(args) => pipeline::dump(args),
        Command::Stream(args) => pipeline::stream(args),
        Command::Check(args) => pipeline::check(args),
        Command::Snapshot(args) => pipeline::signal(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.chain().any(|c| c.is::<sink::stdout::Closed>()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.chain().any(|c| c.is::<error::Purged>()) {
                ExitCode::from(error::EXIT_PURGED)
            } else if e.chain().any(|c| c.is::<error::Usage>()) {
                ExitCode::from(error::EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "binlog_tail=info",
        1 => "binlog_tail=debug",
        _ => "binlog_tail=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}
