//! What the declarations in `cli` imply: every option's environment variable, the config file
//! read as extra arguments, and the value parsers that keep bad values at exit code 2.
//!
//! Invariants: an option set on the command line or in the environment is never taken from the
//! config file (flags > environment > file); a file key that is no option of any subcommand is
//! an error (a typo must not silently fall back to a default), and the file's values go through
//! the same parsers as flags. The `[kafka]` table is the one exception to "flags replace": its
//! properties come before the `-X` flags, so a flag overrides one property and keeps the others.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use super::Cli;

/// Every option's environment variable is this and its long name in upper snake case.
pub const ENV_PREFIX: &str = "BINLOG_TAIL_";
/// The config-file table whose keys are librdkafka properties (`-X`).
pub const CONFIG_TABLE_KAFKA: &str = "kafka";

/// The command line's definition, with the environment variables derived from the declarations.
pub fn command() -> clap::Command {
    Cli::command().mut_args(with_env).mut_subcommands(|sub| sub.mut_args(with_env))
}

/// Parses the process's arguments, the environment and the config file; exits on a bad one.
pub fn parse() -> Cli {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Parses `args` (the program name first), the environment and the config file they name.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cmd = command();
    // A lenient first pass finds the subcommand, the config file and where each value came from.
    let first = cmd.clone().ignore_errors(true).try_get_matches_from(&args)?;
    let mut from_file = None;
    if let Some((name, sub)) = first.subcommand() {
        if let Ok(Some(path)) = sub.try_get_one::<std::path::PathBuf>("config") {
            let extra = config_args(&cmd, name, path, &first)?;
            // Right after the subcommand: before the flags, so `-X` flags come after the file's.
            let at = args.iter().skip(1).position(|a| a == name).map_or(args.len(), |i| i + 2);
            args.splice(at..at, extra);
            from_file = Some(path.clone());
        }
    }
    let matches = cmd.try_get_matches_from(&args).map_err(|e| match &from_file {
        Some(path) if e.kind() != ErrorKind::DisplayHelp && e.kind() != ErrorKind::DisplayVersion => {
            let text = e.to_string();
            let first_line = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
            usage(format!("{first_line} (flags, environment and the config file {})", path.display()))
        }
        _ => e,
    })?;
    Cli::from_arg_matches(&matches)
}

/// The environment variable of an option: `--kafka-brokers` is `BINLOG_TAIL_KAFKA_BROKERS`.
pub fn env_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.to_uppercase().replace('-', "_"))
}

fn with_env(arg: Arg) -> Arg {
    let counted = matches!(arg.get_action(), ArgAction::Count);
    match arg.get_long() {
        Some(long) if arg.get_env().is_none() && !counted && !["help", "version"].contains(&long) => {
            let name = env_name(long);
            arg.env(name)
        }
        _ => arg,
    }
}

/// The config file as arguments for subcommand `name`, leaving out what `matches` (the command
/// line and the environment) already set.
fn config_args(
    cmd: &clap::Command,
    name: &str,
    path: &Path,
    matches: &ArgMatches,
) -> Result<Vec<OsString>, clap::Error> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read the config file --config {shown}: {e}")))?;
    let sub_matches = matches.subcommand_matches(name).expect("the subcommand that was parsed");
    let given = |arg: &Arg| {
        let matches = if arg.is_global_set() { matches } else { sub_matches };
        matches!(matches.value_source(arg.get_id().as_str()), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
    };
    file_args(cmd, name, &text, given).map_err(|e| usage(format!("config file {shown}: {e}")))
}

/// A config file's text as arguments of subcommand `name`, without the options `given` says
/// are set already.
pub fn file_args(
    cmd: &clap::Command,
    name: &str,
    text: &str,
    given: impl Fn(&Arg) -> bool,
) -> Result<Vec<OsString>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let sub = cmd.find_subcommand(name).ok_or_else(|| format!("no subcommand `{name}`"))?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let bad = |why: String| format!("`{key}`: {why}");
        if key == CONFIG_TABLE_KAFKA {
            let toml::Value::Table(properties) = value else {
                return Err(bad("a table of librdkafka properties ([kafka] with key = \"value\" lines)".into()));
            };
            if find_arg(sub, "kafka-property").is_some() {
                for (k, v) in dotted(properties) {
                    out.push(format!("--kafka-property={k}={}", scalar(v).map_err(bad)?).into());
                }
            }
            continue;
        }
        let long = key.replace('_', "-");
        let arg = match (find_arg(sub, &long), find_arg(cmd, &long)) {
            (Some(arg), _) => arg,
            (None, Some(global)) if global.is_global_set() => global,
            (None, _) if cmd.get_subcommands().any(|s| find_arg(s, &long).is_some()) => continue,
            (None, _) => {
                return Err(bad(format!(
                    "no such option: keys are the long options of `binlog-tail {name} --help` with `_` for `-`"
                )))
            }
        };
        if long == "config" {
            return Err(bad("a config file cannot name another".into()));
        }
        if !given(arg) {
            out.extend(option_args(arg, value).map_err(bad)?);
        }
    }
    Ok(out)
}

fn find_arg<'a>(cmd: &'a clap::Command, long: &str) -> Option<&'a Arg> {
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long) || a.get_all_aliases().is_some_and(|aliases| aliases.contains(&long)))
}

/// librdkafka properties with their dotted names: TOML reads `linger.ms = 5` as a table
/// `linger` holding `ms`, and `"linger.ms" = 5` as one key; both are `linger.ms`.
fn dotted(table: &toml::Table) -> Vec<(String, &toml::Value)> {
    let mut out = Vec::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(inner) => out.extend(dotted(inner).into_iter().map(|(k, v)| (format!("{key}.{k}"), v))),
            _ => out.push((key.clone(), value)),
        }
    }
    out
}

/// One option's value from the file as command-line arguments.
fn option_args(arg: &Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().expect("options have long names");
    if !arg.get_action().takes_values() {
        return match value {
            toml::Value::Boolean(true) => Ok(vec![format!("--{long}").into()]),
            toml::Value::Boolean(false) => Ok(vec![]),
            _ => Err("expected true or false".into()),
        };
    }
    let items = match value {
        toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => items.iter().collect(),
        toml::Value::Array(_) => return Err("takes one value, not a list".into()),
        other => vec![other],
    };
    items.into_iter().map(|v| Ok(format!("--{long}={}", scalar(v)?).into())).collect()
}

/// A value as the text a flag would hold; a table (an `[[outbox]]` entry) as JSON.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Table(t) => serde_json::to_string(t).map_err(|e| e.to_string()),
        toml::Value::Array(_) => Err("a list inside a list".into()),
        toml::Value::Datetime(_) => Err("a date is no value of any option".into()),
    }
}

fn usage(message: String) -> clap::Error {
    clap::Error::raw(ErrorKind::ValueValidation, format!("{message}\n"))
}

/// A parser of seconds between `min` and `max` (no NaN, no infinity).
pub(super) fn seconds(min: f64, max: f64) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let secs: f64 = text.trim().parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
        if !(min..=max).contains(&secs) {
            return Err(format!("{secs} seconds is out of range: use {min} to {max}"));
        }
        Ok(Duration::from_secs_f64(secs))
    }
}

/// `HOST:PORT` for `--metrics-addr`.
pub(super) fn metrics_addr(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("`{text}` is not HOST:PORT, e.g. 0.0.0.0:9187"))
}

/// Held by every unit test that parses: one of them sets environment variables.
#[cfg(test)]
pub(crate) static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;

    /// Every option of subcommand `name`: its long name, environment variable, and whether it
    /// takes a value.
    fn options(name: &str) -> Vec<(String, Option<String>, bool)> {
        let cmd = command();
        let sub = cmd.find_subcommand(name).unwrap();
        sub.get_arguments()
            .chain(cmd.get_arguments().filter(|a| a.is_global_set()))
            .filter(|a| !a.is_positional() && a.get_long().is_some_and(|l| l != "help" && l != "version"))
            .map(|a| {
                let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
                let long = a.get_long().unwrap().to_string();
                (long, env, a.get_action().takes_values())
            })
            .collect()
    }

    #[test]
    fn every_option_of_stream_and_dump_has_an_environment_variable_and_a_config_key() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        for name in ["stream", "dump"] {
            let options = options(name);
            assert!(options.len() > 20, "{name}: {options:?}");
            for (long, env, takes_value) in &options {
                if long == "verbose" {
                    continue; // -v counts; RUST_LOG is its environment variable
                }
                assert_eq!(env.as_deref(), Some(env_name(long).as_str()), "{name} --{long}");
                if long == "config" {
                    continue;
                }
                // The key is handed to the same option: a flag's key takes a boolean, not a number.
                let key = long.replace('-', "_");
                let file = dir.path().join(format!("{name}-{key}.toml"));
                std::fs::write(&file, format!("{key} = {}\n", if *takes_value { "'x'" } else { "7" })).unwrap();
                let parsed = parse_from(["binlog-tail", name, "--config", file.to_str().unwrap()]);
                let text = parsed.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
                assert!(!text.contains("no such option"), "{name} {key}: {text}");
                assert!(*takes_value || text.contains("true or false"), "{name} {key}: {text}");
            }
        }
    }

    use super::ENV_LOCK as ENV;

    fn stream(args: &[&str], config: &str) -> Result<crate::cli::StreamArgs, clap::Error> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, config).unwrap();
        let argv = [&["binlog-tail", "stream", "--config", file.to_str().unwrap()][..], args].concat();
        match parse_from(argv)?.command {
            Command::Stream(s) => Ok(s),
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_win_over_the_environment_which_wins_over_the_file() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let file = "heartbeat = 3\ninclude = ['a', 'b']\nformat = 'maxwell'\nkafka_topic = 'file'\n\
                    emit_ddl = true\ndrop_columns = ['a.t.x']\nsnapshot_keys = ['a.t=k']\n[kafka]\nacks = 'all'\nlinger.ms = 7\n";
        let s = stream(&[], file).unwrap();
        assert_eq!(s.server.heartbeat, Duration::from_secs(3));
        assert_eq!(
            (s.emit.include.as_slice(), s.emit.format),
            (&["a".to_string(), "b".into()][..], crate::format::Format::Maxwell)
        );
        assert!(s.emit.emit_ddl);
        assert_eq!((s.emit.drop_column.len(), s.snapshot.snapshot_key.len()), (1, 1));
        assert_eq!(s.kafka.kafka_property, ["acks=all", "linger.ms=7"]);
        std::env::set_var("BINLOG_TAIL_HEARTBEAT", "4");
        std::env::set_var("BINLOG_TAIL_INCLUDE", "c,d");
        std::env::set_var("BINLOG_TAIL_FORMAT", "debezium");
        let s = stream(&["-X", "acks=1"], file).unwrap();
        assert_eq!(s.server.heartbeat, Duration::from_secs(4));
        assert_eq!(s.emit.include, ["c", "d"]);
        assert_eq!(s.emit.format, crate::format::Format::Debezium);
        assert_eq!(s.kafka.kafka_property, ["acks=all", "linger.ms=7", "acks=1"], "file first, the flag last wins");
        assert_eq!(s.kafka.kafka_topic, "file");
        let s = stream(&["--heartbeat", "5", "--include", "e", "--format", "canal", "--kafka-topic", "flag"], file)
            .unwrap();
        assert_eq!(s.server.heartbeat, Duration::from_secs(5));
        assert_eq!((s.emit.include.as_slice(), s.emit.format), (&["e".to_string()][..], crate::format::Format::Canal));
        assert_eq!(s.kafka.kafka_topic, "flag");
        // A bad value in the environment is exit 2 too.
        std::env::set_var("BINLOG_TAIL_HEARTBEAT", "-1");
        assert_eq!(stream(&[], "").unwrap_err().exit_code(), 2);
        for var in ["BINLOG_TAIL_HEARTBEAT", "BINLOG_TAIL_INCLUDE", "BINLOG_TAIL_FORMAT"] {
            std::env::remove_var(var);
        }
    }

    #[test]
    fn bad_values_from_any_source_are_usage_errors() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        for (args, file) in [
            (&["--heartbeat=-1"][..], ""),
            (&["--heartbeat", "100000000"][..], ""),
            (&["--heartbeat", "0"][..], ""),
            (&["--checkpoint-interval", "1e12"][..], ""),
            (&["--checkpoint-interval=nan"][..], ""),
            (&["--checkpoint-interval=inf"][..], ""),
            (&["--checkpoint-interval=-1"][..], ""),
            (&["--kafka-lease-timeout=-1"][..], ""),
            (&["--kafka-lease-timeout=100000"][..], ""),
            (&["--checkpoint-every", "0"][..], ""),
            (&["--snapshot-chunk-size", "0"][..], ""),
            (&["--snapshot-parallelism", "0"][..], ""),
            (&[][..], "snapshot_parallelism = 0"),
            (&["--metrics-addr", "nowhere"][..], ""),
            (&[][..], "heartbeat = '10s'"),
            (&[][..], "format = 'xml'"),
            (&[][..], "no_such_key = 1"),
            (&[][..], "url = 'a'\nurl = 'b'"),
            (&[][..], "tls = 'yes'"),
            (&[][..], "url = ['a', 'b']"),
            (&[][..], "config = 'other.toml'"),
        ] {
            let err = stream(args, file).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?} {file:?}: {err}");
        }
        let missing = parse_from(["binlog-tail", "stream", "--config", "/nonexistent/c.toml"]).unwrap_err();
        assert!(missing.exit_code() == 2 && missing.to_string().contains("cannot read"), "{missing}");
        // A key of another subcommand is no error: one file can serve `stream` and `dump`.
        assert!(stream(&[], "follow = true\nlimit = 3").is_ok());
        let err = stream(&[], "heartbeat = 0.01").unwrap_err().to_string();
        assert!(err.contains("config file") && err.contains("0.01"), "{err}");
    }

    #[test]
    fn an_outbox_table_from_the_file_keeps_its_columns() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let s = stream(&[], "[[outbox]]\ntable = 'shop.outbox'\npayload_column = 'body'\n").unwrap();
        assert_eq!(s.emit.outbox.len(), 1);
        let value: serde_json::Value = serde_json::from_str(&s.emit.outbox[0]).unwrap();
        assert_eq!(value, serde_json::json!({"table": "shop.outbox", "payload_column": "body"}));
    }
}
