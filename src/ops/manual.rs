//! Shell completions and the man page, generated from the same clap definitions as the parser,
//! so they can never disagree with it.

use std::io::Write;

use anyhow::Result;
use clap_complete::Shell;

use crate::cli::command;

pub fn completions(shell: Shell) -> Result<()> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut command(), "binlog-tail", &mut out);
    Ok(out.flush()?)
}

/// The man page (roff): `binlog-tail man > binlog-tail.1`: the command, then every
/// subcommand's options with their defaults and environment variables.
pub fn man() -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut cmd = command();
    cmd.build();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| s.get_arguments().any(|a| !a.is_positional())) {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        writeln!(out, ".SH \"BINLOG-TAIL {}\"\n{}", sub.get_name().to_uppercase(), about.replace('-', "\\-"))?;
        clap_mangen::Man::new(sub.clone()).render_options_section(&mut out)?;
    }
    Ok(out.flush()?)
}
