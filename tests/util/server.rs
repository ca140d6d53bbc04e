//! A server process of a sink's tests (nats-server, redis-server): on a port of its own with its
//! files in a temp dir, restartable on both, stopped when dropped; and what it holds, read back
//! with an independent client script (scripts/*-read) printing one JSON object a line.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::{free_port, root};

pub struct ServerProcess {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ServerProcess {
    /// A free port and an empty temp dir; nothing runs yet.
    pub fn new() -> ServerProcess {
        ServerProcess { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log file (created anew on each start).
    pub fn log_file(&self) -> std::fs::File {
        std::fs::File::create(self.dir.path().join("server.log")).unwrap()
    }

    /// Starts `cmd` (its output directed by the caller) and waits until the port accepts connections.
    pub fn start(&mut self, mut cmd: Command) {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} ({e}; scripts/install-deps installs it)"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "{program} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `scripts/<script> ARGS` (which needs `client`: scripts/install-deps) and parses its lines.
pub fn read_back<T: DeserializeOwned>(script: &str, client: &str, args: &[&str]) -> Vec<T> {
    let path: PathBuf = root().join("scripts").join(script);
    let out = Command::new(path).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "scripts/{script} (needs {client}: scripts/install-deps): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line ({e}): {l}")))
        .collect()
}

/// Reads with `read` until `done` holds for what it returns (60 s at most; then what it last read).
pub fn read_until<T>(mut read: impl FnMut() -> Vec<T>, mut done: impl FnMut(&[T]) -> bool) -> Vec<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let items = read();
        if done(&items) || Instant::now() > deadline {
            return items;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
