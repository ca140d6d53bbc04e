//! Real MariaDB servers started by scripts/mariadb-start, and SQL run through Debian's client.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{binlog_tail, free_port, root};

pub struct MariaDb {
    pub port: u16,
    pub dir: tempfile::TempDir,
}

static SHARED: OnceLock<MariaDb> = OnceLock::new();

impl MariaDb {
    /// One server shared by the tests of this run; each test works in its own database.
    pub fn shared() -> &'static MariaDb {
        SHARED.get_or_init(|| MariaDb::start(&[]))
    }

    /// A server of its own, with extra mariadbd options.
    pub fn start(extra: &[&str]) -> MariaDb {
        Self::start_with_env(&[], extra)
    }

    /// A server of its own; `env` goes to scripts/mariadb-start (e.g. SERVER_ID).
    pub fn start_with_env(env: &[(&str, &str)], extra: &[&str]) -> MariaDb {
        Self::launch(free_port(), env, extra)
    }

    /// A server of its own on the given port.
    pub fn start_on_port(port: u16) -> MariaDb {
        Self::launch(port, &[], &[])
    }

    fn launch(port: u16, env: &[(&str, &str)], extra: &[&str]) -> MariaDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new(root().join("scripts/mariadb-start"))
            .envs(env.iter().copied())
            .arg(dir.path().join("data"))
            .arg(port.to_string())
            .arg("--owner-pid")
            .arg(std::process::id().to_string())
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/mariadb-start");
        assert!(
            out.status.success(),
            "could not start MariaDB: {}\nThe tests need Debian's mariadb-server: run scripts/test (it installs it) or apt-get install mariadb-server",
            String::from_utf8_lossy(&out.stderr)
        );
        MariaDb { port, dir }
    }

    pub fn url(&self) -> String {
        format!("mysql://repl@127.0.0.1:{}", self.port)
    }

    /// Runs SQL as the admin user; returns tab-separated output without headers.
    pub fn sql(&self, sql: &str) -> String {
        sql_at(self.port, sql)
    }

    /// A fresh database for one test, and the GTID position before it was created.
    pub fn fresh_db(&self, name: &str) -> String {
        self.sql(&format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name};"));
        name.to_string()
    }

    pub fn gtid_pos(&self) -> String {
        self.sql("SELECT @@gtid_binlog_pos")
    }

    /// A server-wide counter of `SHOW GLOBAL STATUS` (e.g. `Handler_read_next`).
    pub fn global_status(&self, name: &str) -> u64 {
        let out = self.sql(&format!("SHOW GLOBAL STATUS LIKE '{name}'"));
        out.split_whitespace().last().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{out}"))
    }

    /// `binlog-tail dump --url` with the replication user's password in MYSQL_PWD.
    pub fn dump(&self, args: &[&str]) -> Output {
        binlog_tail()
            .args(["dump", "--url", &self.url(), "--stdout"])
            .args(args)
            .env("MYSQL_PWD", "replpass")
            .output()
            .unwrap()
    }

    /// Purges every binlog file but the newest. MariaDB keeps a binlog until its binlog
    /// checkpoint has moved on: purge until it is gone.
    pub fn purge_all_but_newest(&self) {
        let newest = self.sql("SHOW MASTER STATUS").split('\t').next().unwrap().to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            self.sql(&format!("PURGE BINARY LOGS TO '{newest}'"));
            if self.sql("SHOW BINARY LOGS").lines().count() == 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "could not purge: {}", self.sql("SHOW BINARY LOGS"));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The server's binlog files, oldest first.
    pub fn binlog_files(&self) -> Vec<PathBuf> {
        let data = self.dir.path().join("data");
        let index = std::fs::read_to_string(data.join("binlog.index")).expect("binlog index");
        index
            .lines()
            .map(|l| {
                let p = Path::new(l.trim());
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    data.join(p)
                }
            })
            .collect()
    }
}

impl Drop for MariaDb {
    /// The server is gone before its data directory is removed: a server still shutting down
    /// writes files into the directory being removed, and the removal leaves it behind.
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("data/mysqld.pid")) {
            kill_and_wait(pid.trim());
        }
    }
}

/// SIGKILLs a server and waits (at most 10 s) until its process is gone. A pid file left by a
/// server that is gone already may name another process by now: only a mariadbd is killed.
fn kill_and_wait(pid: &str) {
    let comm = std::fs::read_to_string(Path::new("/proc").join(pid).join("comm")).unwrap_or_default();
    if comm.trim() != "mariadbd" {
        return;
    }
    let _ = Command::new("kill").args(["-9", pid]).stderr(Stdio::null()).status();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while running(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn running(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

/// Debian's mariadb client as the admin user of the server on `port`, SQL on its stdin, each
/// answer written out at once.
fn admin_client(port: u16) -> std::process::Child {
    Command::new("mariadb")
        .args(["--no-defaults", "--default-character-set=utf8mb4", "-h127.0.0.1", "-uadmin", "-padminpass", "-N", "-B"])
        .arg("--unbuffered")
        .arg(format!("-P{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the mariadb client (scripts/install-deps installs it)")
}

/// Runs SQL as the admin user of the server on `port` (through Debian's mariadb client).
pub fn sql_at(port: u16, sql: &str) -> String {
    let mut child = admin_client(port);
    use std::io::Write;
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "SQL failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        &sql[..sql.len().min(2000)]
    );
    String::from_utf8(out.stdout).unwrap().trim_end().to_string()
}

/// `LOCK TABLES <table> WRITE` held by a session of its own until dropped: every read of the
/// table by another session waits meanwhile.
pub struct TableLock(std::process::Child);

impl TableLock {
    /// Returns once the lock is held.
    pub fn hold(port: u16, table: &str) -> TableLock {
        use std::io::{BufRead, Write};
        let mut client = admin_client(port);
        writeln!(client.stdin.as_mut().unwrap(), "LOCK TABLES {table} WRITE; SELECT 'locked';").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(client.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked", "LOCK TABLES {table} WRITE failed");
        TableLock(client)
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        // Closing the client's input ends its session, which releases the lock.
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

impl MariaDb {
    /// Stops the server (as a crash would, without a clean shutdown) and starts it again on the
    /// same data and port.
    pub fn restart(&self, extra: &[&str]) {
        self.crash();
        self.start_again(extra);
    }

    /// Kills the server without a clean shutdown and waits until it is gone.
    pub fn crash(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("data/mysqld.pid")).unwrap();
        kill_and_wait(pid.trim());
        assert!(!running(pid.trim()), "mariadbd {pid} outlived SIGKILL by 10 s");
    }

    /// Starts the server again on the same data and port.
    pub fn start_again(&self, extra: &[&str]) {
        let data = self.dir.path().join("data");
        let out = Command::new(root().join("scripts/mariadb-start"))
            .arg(&data)
            .arg(self.port.to_string())
            .arg("--owner-pid")
            .arg(std::process::id().to_string())
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "restart failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Runs a workload of `START TRANSACTION ... COMMIT;` blocks in batches of `per_batch`
/// transactions with a pause between batches, so it lasts long enough for crash tests.
pub fn write_in_batches(port: u16, sql: &str, per_batch: usize, pause: Duration) -> std::thread::JoinHandle<()> {
    let batches: Vec<String> =
        sql.split_inclusive("COMMIT;\n").collect::<Vec<_>>().chunks(per_batch).map(|c| c.concat()).collect();
    std::thread::spawn(move || {
        for batch in batches {
            sql_at(port, &batch);
            std::thread::sleep(pause);
        }
    })
}

/// The crash tests' tables: k.t0, k.t1 and k.t2, each with a counter row (id 0).
pub fn create_counter_tables(server: &MariaDb) {
    server.sql("CREATE DATABASE k;");
    for t in 0..3 {
        server.sql(&format!("CREATE TABLE k.t{t} (id INT PRIMARY KEY, v INT); INSERT INTO k.t{t} VALUES (0, -1);"));
    }
}

/// Transactions `txs` of the crash tests' workload: each inserts a row and bumps the counter row
/// of one of the tables of `create_counter_tables`, so per-key order can be checked.
pub fn counter_workload(txs: std::ops::Range<usize>) -> String {
    let mut sql = String::new();
    for i in txs {
        let t = i % 3;
        sql.push_str(&format!(
            "START TRANSACTION;\nINSERT INTO k.t{t} VALUES ({}, {i});\nUPDATE k.t{t} SET v = {i} WHERE id = 0;\nCOMMIT;\n",
            i + 1
        ));
    }
    sql
}
