//! A nats-server with JetStream, started in a temp dir like MariaDB, and an independent reader
//! of what a stream holds (nats-py, scripts/nats-read).

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{free_port, root, Event};

/// A nats-server with JetStream on 127.0.0.1, its storage in a temp dir (Debian's nats-server:
/// scripts/install-deps).
pub struct Nats {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

/// One message read back from a stream by an independent client (nats-py: scripts/nats-read).
#[derive(Debug, Clone, Deserialize)]
pub struct NatsMessage {
    pub seq: u64,
    pub subject: String,
    pub headers: BTreeMap<String, String>,
    pub data: String,
}

impl NatsMessage {
    pub fn event(&self) -> Event {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("bad value ({e}): {}", self.data))
    }
}

impl Nats {
    pub fn start() -> Nats {
        Nats::start_with("")
    }

    /// With `config` as the server's configuration file (e.g. `max_payload: 4096`).
    pub fn start_with(config: &str) -> Nats {
        let n = Nats { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None };
        std::fs::write(n.dir.path().join("nats.conf"), config).unwrap();
        let mut n = n;
        n.restart();
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and storage.
    pub fn restart(&mut self) {
        let store = self.dir.path().join("js");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd", store.to_str().unwrap()])
            .arg("-c")
            .arg(self.dir.path().join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("server.log")).unwrap())
            .spawn()
            .expect("nats-server (scripts/install-deps installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
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

    /// Creates stream `name` for `subjects` with file storage and this duplicate window (nats-py).
    pub fn create_stream(&self, name: &str, subjects: &str, duplicate_window: Duration) {
        let script = format!(
            "import asyncio, nats\nfrom nats.js.api import StreamConfig\nasync def main():\n    nc = await nats.connect('{}')\n    await nc.jetstream().add_stream(StreamConfig(name='{name}', subjects=['{subjects}'], duplicate_window={}))\n    await nc.close()\nasyncio.run(main())",
            self.url(),
            duplicate_window.as_secs_f64()
        );
        let out = Command::new("python3").args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "creating stream {name} (nats-py): {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Every message of `stream`, oldest first, read with nats-py.
    pub fn read(&self, stream: &str) -> Vec<NatsMessage> {
        let out = Command::new(root().join("scripts/nats-read")).args([&self.url(), stream]).output().unwrap();
        assert!(
            out.status.success(),
            "scripts/nats-read (needs nats-py: scripts/install-deps): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line ({e}): {l}")))
            .collect()
    }

    /// Reads `stream` until `done` holds for what it holds (60 s at most).
    pub fn read_until(&self, stream: &str, mut done: impl FnMut(&[NatsMessage]) -> bool) -> Vec<NatsMessage> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let msgs = self.read(stream);
            if done(&msgs) || Instant::now() > deadline {
                return msgs;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}
