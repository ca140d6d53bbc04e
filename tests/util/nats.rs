//! A nats-server with JetStream, started in a temp dir like MariaDB, and an independent reader
//! of what a stream holds (nats-py, scripts/nats-read).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use super::{read_back, read_until, Event, ServerProcess};

/// A nats-server with JetStream on 127.0.0.1, its storage in a temp dir (Debian's nats-server:
/// scripts/install-deps).
pub struct Nats {
    server: ServerProcess,
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
        let mut n = Nats { server: ServerProcess::new() };
        std::fs::write(n.server.dir().join("nats.conf"), config).unwrap();
        n.restart();
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.server.port)
    }

    /// Starts (again) on the same port and storage.
    pub fn restart(&mut self) {
        let dir = self.server.dir();
        let mut cmd = Command::new("nats-server");
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &self.server.port.to_string(), "-sd"])
            .arg(dir.join("js"))
            .arg("-c")
            .arg(dir.join("nats.conf"))
            .stdout(Stdio::null())
            .stderr(self.server.log_file());
        self.server.start(cmd);
    }

    /// Stops the server (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        self.server.stop();
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
        read_back("nats-read", "nats-py", &[&self.url(), stream])
    }

    /// Reads `stream` until `done` holds for what it holds (60 s at most).
    pub fn read_until(&self, stream: &str, done: impl FnMut(&[NatsMessage]) -> bool) -> Vec<NatsMessage> {
        read_until(|| self.read(stream), done)
    }
}
