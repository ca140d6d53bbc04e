//! binlog-tail: the command line. Each subcommand runs a pipeline from the library; this file
//! only parses arguments, sets up logging and turns the outcome into an exit code.

use std::process::ExitCode;

use binlog_tail::cli::{self, Command};
use binlog_tail::ops::{logging, manual, status};
use binlog_tail::{commands, error, shutdown, sink};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::parse();
    let log_format = cli.log_format;
    logging::init(cli.verbose, log_format);
    let result = match cli.command {
        Command::Dump(args) => commands::dump(args),
        Command::Stream(args) => commands::stream(args),
        Command::Check(args) => commands::check(args),
        Command::Snapshot(args) => commands::signal(args),
        Command::Status(args) => status::status(args),
        Command::Completions { shell } => manual::completions(shell),
        Command::Man => manual::man(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.chain().any(|c| c.is::<sink::stdout::Closed>()) => ExitCode::SUCCESS,
        Err(e) if e.chain().any(|c| c.is::<shutdown::Stopped>()) => {
            tracing::info!("{e:#}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            logging::report_error(log_format, &e);
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
