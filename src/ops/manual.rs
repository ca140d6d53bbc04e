//! Shell completions and the man page, generated from the same clap definitions as the parser,
//! so they can never disagree with it.

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

pub fn completions(shell: Shell) -> Result<()> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut Cli::command(), "binlog-tail", &mut out);
    Ok(out.flush()?)
}

/// The man page (roff): `binlog-tail man > binlog-tail.1`.
pub fn man() -> Result<()> {
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    Ok(out.flush()?)
}
