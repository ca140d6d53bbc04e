//! The documentation cannot drift from the options: every `binlog-tail ...` command line in a code
//! block of README.md or docs/*.md parses with the real command-line parser, and the README stays
//! short enough to read in five minutes.

use std::path::PathBuf;

use crate::util::root;

/// README.md and every docs/*.md, as (path relative to the repository, text).
pub fn doc_files() -> Vec<(String, String)> {
    let mut paths = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.strip_prefix(root()).unwrap().to_path_buf())
        .collect();
    docs.sort();
    paths.extend(docs);
    paths.into_iter().map(|p| (p.display().to_string(), std::fs::read_to_string(root().join(&p)).unwrap())).collect()
}

/// The shell's words that end a command: what follows is another command, a redirection or a comment.
fn ends_command(word: &str) -> bool {
    ["|", "||", "&&", ";", "&"].contains(&word) || word.starts_with('>') || word.starts_with("2>")
}

/// Every `binlog-tail` command in the fenced code blocks of `text`, as (line number, words): lines
/// ending in `\` joined, a leading `$ ` prompt and `NAME=value` assignments dropped, and the words
/// cut at a pipe, a redirection, `&&` or a `#` comment.
fn commands(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut in_code = false;
    let mut pending: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_code = !in_code;
            pending = None;
            continue;
        }
        if !in_code {
            continue;
        }
        let (start, mut joined) = match pending.take() {
            Some((start, so_far)) => (start, so_far + " " + trimmed),
            None => (n + 1, trimmed.strip_prefix("$ ").unwrap_or(trimmed).to_string()),
        };
        if let Some(head) = joined.strip_suffix('\\') {
            joined = head.to_string();
            pending = Some((start, joined));
            continue;
        }
        let Some(words) = shlex::split(&joined) else { continue };
        let mut words = words.into_iter().skip_while(|w| is_assignment(w)).peekable();
        if words.peek().map(String::as_str) != Some("binlog-tail") {
            continue;
        }
        out.push((start, words.take_while(|w| !ends_command(w)).collect()));
    }
    out
}

/// `NAME=value`, as in `MYSQL_PWD=secret binlog-tail ...`.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

#[test]
fn every_command_line_in_the_docs_parses() {
    // A `--config FILE` in the docs reads the example file of docs/configuration.md, so the
    // example is parsed too.
    let dir = tempfile::tempdir().unwrap();
    let example = dir.path().join("binlog-tail.toml");
    let configuration = std::fs::read_to_string(crate::util::root().join("docs/configuration.md")).unwrap();
    let toml = configuration.split("```toml\n").nth(1).and_then(|t| t.split("```").next()).expect("a TOML example");
    std::fs::write(&example, toml).unwrap();
    let mut failures = Vec::new();
    let mut count = 0;
    for (path, text) in doc_files() {
        for (line, mut words) in commands(&text) {
            count += 1;
            if let Some(at) = words.iter().position(|w| w == "--config") {
                words[at + 1] = example.to_str().unwrap().to_string();
            }
            if let Err(e) = binlog_tail::cli::parse_from(&words) {
                failures.push(format!("{path}:{line}: `{}`\n{}", words.join(" "), e.render()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} command lines do not parse:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The extraction itself must keep working: the docs hold dozens of examples.
    assert!(count >= 30, "only {count} command lines found in the docs");
}

#[test]
fn the_readme_is_short() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 260, "README.md has {lines} lines: move details to docs/");
}

/// Every relative link (`](docs/kafka.md)`, `](kafka.md#shutdown)`) names a file that exists and,
/// with `#`, a heading of that file.
#[test]
fn relative_links_reach_their_file_and_heading() {
    let mut broken = Vec::new();
    for (path, text) in doc_files() {
        let dir = root().join(&path).parent().unwrap().to_path_buf();
        for (n, line) in text.lines().enumerate() {
            for target in line.split("](").skip(1).filter_map(|rest| rest.split_once(')').map(|(t, _)| t)) {
                if target.contains("://") {
                    continue;
                }
                let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
                let file = if file.is_empty() { root().join(&path) } else { dir.join(file) };
                let found = match std::fs::read_to_string(&file) {
                    Ok(linked) => {
                        anchor.is_empty() || linked.lines().any(|l| heading_anchor(l).as_deref() == Some(anchor))
                    }
                    Err(_) => file.is_dir() && anchor.is_empty(),
                };
                if !found {
                    broken.push(format!("{path}:{}: ({target})", n + 1));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// GitHub's anchor of a Markdown heading: lower case, spaces to `-`, punctuation dropped.
fn heading_anchor(line: &str) -> Option<String> {
    let title = line.strip_prefix('#')?.trim_start_matches('#').trim();
    Some(
        title
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect(),
    )
}

#[test]
fn command_lines_are_found_joined_and_cut() {
    let text = "binlog-tail dump --url x\n\
                ```sh\n\
                $ binlog-tail dump --url mysql://repl@db:3306 \\\n\
                \x20   --include 'shop.*'   # a comment\n\
                MYSQL_PWD=pw binlog-tail check --url u | jq . && echo done\n\
                binlog-tail dump --file a.bin >out.jsonl\n\
                binlog-tail dump --file a.bin 2>/dev/null\n\
                kafka-topics.sh --create\n\
                ```\n";
    let found = commands(text);
    let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    assert_eq!(
        found,
        [
            (3, words("binlog-tail dump --url mysql://repl@db:3306 --include shop.*")),
            (5, words("binlog-tail check --url u")),
            (6, words("binlog-tail dump --file a.bin")),
            (7, words("binlog-tail dump --file a.bin")),
        ]
    );
}
