//! A redis-server with an append-only file, started in a temp dir like MariaDB, and an
//! independent reader of what its streams hold (redis-py, scripts/redis-read).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::{read_back, read_until, Event, ServerProcess};

/// A redis-server on 127.0.0.1 with `appendonly yes` and `appendfsync always`, its files in a
/// temp dir (Debian's redis-server: scripts/install-deps).
pub struct Redis {
    pub port: u16,
    server: ServerProcess,
}

/// One stream entry read back by an independent client (redis-py: scripts/redis-read).
#[derive(Debug, Clone, Deserialize)]
pub struct RedisEntry {
    pub key: String,
    pub id: String,
    pub fields: BTreeMap<String, String>,
}

impl RedisEntry {
    pub fn event(&self) -> Event {
        let value = &self.fields["value"];
        serde_json::from_str(value).unwrap_or_else(|e| panic!("bad value ({e}): {value}"))
    }
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// With these `redis.conf` lines added (e.g. `requirepass s3cret`).
    pub fn start_with(config: &[&str]) -> Redis {
        let server = ServerProcess::new();
        let port = server.port;
        let conf = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nappendonly yes\nappendfsync always\nsave \"\"\n{}\n",
            server.dir().display(),
            config.join("\n")
        );
        std::fs::write(server.dir().join("redis.conf"), conf).unwrap();
        let mut r = Redis { port, server };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and files, and waits until the append-only file is
    /// loaded: until then commands answer LOADING (a password-protected server answers NOAUTH,
    /// which is as far as this wait can see).
    pub fn restart(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg(self.server.dir().join("redis.conf")).stdout(self.server.log_file()).stderr(Stdio::null());
        self.server.start(cmd);
        super::until("redis-server has loaded its append-only file", || {
            let (Ok(answer) | Err(answer)) = self.try_cli(&["ping"]);
            answer == "PONG" || answer.starts_with("NOAUTH")
        });
    }

    /// Stops the server (SIGTERM: it writes its append-only file and exits) and waits for it.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// One command with redis-cli (an independent client); its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|e| panic!("redis-cli {args:?}: {e}"))
    }

    /// One command with redis-cli: its output, or what it printed on failure.
    fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli (scripts/install-deps installs redis-tools)");
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).trim().to_string();
        if out.status.success() {
            Ok(text(out.stdout))
        } else {
            Err(text(out.stderr))
        }
    }

    /// Every entry of the streams matching `pattern`, key by key, each in stream order (redis-py).
    pub fn read(&self, pattern: &str) -> Vec<RedisEntry> {
        read_back("redis-read", "redis-py", &[&self.url(), pattern])
    }

    /// Reads until `done` holds for what the streams hold (60 s at most).
    pub fn read_until(&self, pattern: &str, done: impl FnMut(&[RedisEntry]) -> bool) -> Vec<RedisEntry> {
        read_until(|| self.read(pattern), done)
    }
}
