//! The real `binlog-tail` binary as a process: one-shot runs and their output, and long-running
//! `stream` processes writing to files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{events, Event, MariaDb};

pub fn binlog_tail() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_binlog-tail"));
    cmd.env_remove("MYSQL_PWD").env_remove("BINLOG_TAIL_URL").env("RUST_LOG", "binlog_tail=info");
    cmd.stdin(Stdio::null());
    cmd
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns the events.
pub fn ok_events(out: &Output) -> Vec<Event> {
    assert!(out.status.success(), "binlog-tail failed: {}\n{}", out.status, stderr(out));
    assert!(!stderr(out).contains("panicked"), "panic: {}", stderr(out));
    events(out)
}

/// Asserts a clean failure: non-zero exit, one `error:` line, no panic, nothing on stdout.
pub fn failure(out: &Output) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure, got success; stderr: {err}");
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains("error: "), "no error line: {err}");
    err
}

/// The crash tests each drive a server, a broker and many processes for a while; run them one at
/// a time so their timing does not depend on what else the test binary runs.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lines of a child's stdout, ending after 30 s of silence so a hung child cannot hang a test.
pub fn line_channel(stdout: std::process::ChildStdout) -> impl Iterator<Item = String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::iter::from_fn(move || rx.recv_timeout(std::time::Duration::from_secs(30)).ok())
}

/// A `binlog-tail stream` process writing to files in `dir`.
pub struct Stream {
    pub child: std::process::Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Stream {
    pub fn start(server: &MariaDb, position: &Path, dir: &Path, n: usize, extra: &[&str]) -> Stream {
        let position = position.to_str().expect("a UTF-8 path");
        Stream::spawn(server, dir, n, &[&["--position-file", position], extra].concat())
    }

    /// A stream whose arguments name the position store themselves.
    pub fn spawn(server: &MariaDb, dir: &Path, n: usize, args: &[&str]) -> Stream {
        Stream::spawn_as(server, "repl", dir, n, args)
    }

    /// A stream connecting as `user` (whose password is repl's).
    pub fn spawn_as(server: &MariaDb, user: &str, dir: &Path, n: usize, args: &[&str]) -> Stream {
        let stdout = dir.join(format!("out.{n}.jsonl"));
        let stderr = dir.join(format!("err.{n}.log"));
        let child = binlog_tail()
            .args(["stream", "--url", &format!("mysql://{user}@127.0.0.1:{}", server.port)])
            .args(args)
            .env("MYSQL_PWD", "replpass")
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Stream { child, stdout, stderr }
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
    }

    /// Sends SIGTERM and waits; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // (Drop then only reaps an exited process.)
        self.signal("-TERM");
        self.wait()
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "binlog-tail did not exit: {}", self.log());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the log holds `text`.
    pub fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains(text) {
            assert!(Instant::now() < deadline, "no `{text}` in the log: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the stream reads from the server.
    pub fn wait_streaming(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains("streaming from") && !self.log().contains("streaming after") {
            assert!(Instant::now() < deadline, "the stream did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the stream has saved its starting position (it is connected and reading).
    pub fn wait_ready(&self, position: &Path) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !position.exists() {
            assert!(std::time::Instant::now() < deadline, "stream did not start: {}", self.log());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Stream {
    /// A failing test must not leave a stream running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
