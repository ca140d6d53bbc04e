//! A redis-server with an append-only file, started in a temp dir like MariaDB, and an
//! independent reader of what its streams hold (redis-py, scripts/redis-read).

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{free_port, root, Event};

/// A redis-server on 127.0.0.1 with `appendonly yes` and `appendfsync always`, its files in a
/// temp dir (Debian's redis-server: scripts/install-deps).
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
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
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nappendonly yes\nappendfsync always\nsave \"\"\n{}\n",
            dir.path().display(),
            config.join("\n")
        );
        std::fs::write(dir.path().join("redis.conf"), conf).unwrap();
        let mut r = Redis { port, dir, child: None };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and files.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .arg(self.dir.path().join("redis.conf"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.dir.path().join("server.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/install-deps installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM: it writes its append-only file and exits) and waits for it.
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

    /// One command with redis-cli (an independent client); its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli (scripts/install-deps installs redis-tools)");
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Every entry of the streams matching `pattern`, key by key, each in stream order (redis-py).
    pub fn read(&self, pattern: &str) -> Vec<RedisEntry> {
        let out = Command::new(root().join("scripts/redis-read")).args([&self.url(), pattern]).output().unwrap();
        assert!(
            out.status.success(),
            "scripts/redis-read (needs redis-py: scripts/install-deps): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line ({e}): {l}")))
            .collect()
    }

    /// Reads until `done` holds for what the streams hold (60 s at most).
    pub fn read_until(&self, pattern: &str, mut done: impl FnMut(&[RedisEntry]) -> bool) -> Vec<RedisEntry> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let entries = self.read(pattern);
            if done(&entries) || Instant::now() > deadline {
                return entries;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
