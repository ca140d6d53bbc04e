//! Test support: the real binary, real MariaDB servers started by the project's own script, and
//! the JSON event contract as a strict struct.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// One change event exactly as documented; unknown fields fail the test.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub op: String,
    pub db: String,
    pub table: String,
    pub ts: u64,
    pub gtid: Option<String>,
    pub pos: String,
    pub xid: Option<u64>,
    pub row: u64,
    pub commit: bool,
    pub pk: Option<BTreeMap<String, Value>>,
    pub before: Option<BTreeMap<String, Value>>,
    pub after: Option<BTreeMap<String, Value>>,
}

pub fn binlog_tail() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_binlog-tail"));
    cmd.env_remove("MYSQL_PWD").env_remove("BINLOG_TAIL_URL").env("RUST_LOG", "binlog_tail=info");
    cmd.stdin(Stdio::null());
    cmd
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Parses stdout as JSON lines into strict events; panics with the offending line otherwise.
pub fn events(out: &Output) -> Vec<Event> {
    let stdout = String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8");
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad event line ({e}): {line}")))
        .collect()
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

/// The real MySQL binlogs in ../shared, or None (with a note) where they are absent.
pub fn shared_binlogs() -> Option<PathBuf> {
    let dir = root().join("../shared/mysql-binlogs");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: {} is absent, so the MySQL-written binlog tests did not run", dir.display());
        None
    }
}

pub struct MariaDb {
    pub port: u16,
    pub dir: tempfile::TempDir,
}

static SHARED: OnceLock<MariaDb> = OnceLock::new();

/// The crash tests each drive a server, a broker and many processes for a while; run them one at
/// a time so their timing does not depend on what else the test binary runs.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

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
    fn drop(&mut self) {
        let pid_file = self.dir.path().join("data/mysqld.pid");
        if let Ok(pid) = std::fs::read_to_string(pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// Runs SQL as the admin user of the server on `port` (through Debian's mariadb client).
pub fn sql_at(port: u16, sql: &str) -> String {
    let mut child = Command::new("mariadb")
        .args(["--no-defaults", "--default-character-set=utf8mb4", "-h127.0.0.1", "-uadmin", "-padminpass", "-N", "-B"])
        .arg(format!("-P{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the mariadb client (scripts/install-deps installs it)");
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Events of one database only (tests share a server).
pub fn in_db(events: Vec<Event>, db: &str) -> Vec<Event> {
    events.into_iter().filter(|e| e.db == db).collect()
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

impl MariaDb {
    /// Stops the server (as a crash would, without a clean shutdown) and starts it again on the
    /// same data and port.
    pub fn restart(&self, extra: &[&str]) {
        self.crash();
        self.start_again(extra);
    }

    /// Kills the server without a clean shutdown and waits until it is gone.
    pub fn crash(&self) {
        let data = self.dir.path().join("data");
        let pid = std::fs::read_to_string(data.join("mysqld.pid")).unwrap();
        Command::new("kill").args(["-9", pid.trim()]).status().unwrap();
        while Command::new("kill").args(["-0", pid.trim()]).stderr(Stdio::null()).status().unwrap().success() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
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
        let stdout = dir.join(format!("out.{n}.jsonl"));
        let stderr = dir.join(format!("err.{n}.log"));
        let child = binlog_tail()
            .args(["stream", "--url", &server.url()])
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

/// Every event line in the files; a torn last line (SIGKILL mid-write) is not an event.
pub fn read_events(files: &[PathBuf]) -> Vec<Event> {
    let mut all = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines() {
            if let Ok(e) = serde_json::from_str::<Event>(line) {
                all.push(e);
            } else {
                assert!(!text.ends_with('\n') && text.ends_with(line), "bad line in {}: {line}", f.display());
            }
        }
    }
    all
}

/// The identity of an inserted row: (table, primary key).
pub fn row_key(e: &Event) -> (String, String) {
    (e.table.clone(), serde_json::to_string(&e.pk).unwrap())
}

/// Waits until `files` hold at least `n` distinct rows of `db`; returns all its events.
pub fn wait_for_rows(files: &[PathBuf], db: &str, n: usize) -> Vec<Event> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let ev = in_db(read_events(files), db);
        let distinct: std::collections::HashSet<_> = ev.iter().map(row_key).collect();
        if distinct.len() >= n || std::time::Instant::now() > deadline {
            return ev;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A tansu broker (Kafka protocol) on 127.0.0.1 with sqlite storage in a temp dir.
pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl Broker {
    pub fn start() -> Broker {
        let mut b = Broker { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None };
        b.restart();
        b
    }

    fn binary() -> PathBuf {
        let out = Command::new(root().join("scripts/install-tansu")).arg("--path").output().unwrap();
        let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        assert!(
            path.exists(),
            "tansu (the Kafka-protocol broker) is not installed: run scripts/install-tansu (scripts/test does)"
        );
        path
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and data.
    pub fn restart(&mut self) {
        let url = format!("tcp://{}", self.addr());
        let child = Command::new(Self::binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.dir.path().join("broker.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(std::time::Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // Without this index tansu's fetches slow down as topics grow, until consumers time out.
        let index = Command::new(root().join("scripts/tansu-index")).arg(self.dir.path()).output().unwrap();
        assert!(
            index.status.success(),
            "scripts/tansu-index (needs sqlite3: scripts/install-deps): {}",
            String::from_utf8_lossy(&index.stderr)
        );
    }

    /// Stops the broker the way an operator would (SIGTERM), waiting for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while c.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.create_topic_with(name, partitions, &[]);
    }

    /// A topic with configuration entries (`cleanup.policy=compact`).
    pub fn create_topic_with(&self, name: &str, partitions: u32, configs: &[&str]) {
        let out = Command::new(Self::binary())
            .args(["topic", "create", name, "--partitions", &partitions.to_string()])
            .args(configs.iter().flat_map(|c| ["--config", c]))
            .args(["--broker", &format!("tcp://{}", self.addr())])
            .output()
            .unwrap();
        assert!(out.status.success(), "topic create {name}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Grows `topic` to `partitions` partitions, as `kafka-topics.sh --alter --partitions` would on
    /// a real cluster. tansu 0.6 has no CreatePartitions request, so this stops the broker, adds
    /// the partitions to its sqlite storage the way creating the topic would have (a `topition`
    /// and an empty `watermark` row each), and starts it again on the same data.
    pub fn grow_partitions(&mut self, topic: &str, partitions: i32) {
        self.stop();
        let name = topic.replace('\'', "''");
        let mut sql = format!("UPDATE topic SET partitions = {partitions} WHERE name = '{name}';\n");
        for p in 0..partitions {
            sql.push_str(&format!(
                "INSERT OR IGNORE INTO topition (topic, partition) SELECT id, {p} FROM topic WHERE name = '{name}';
                 INSERT INTO watermark (topition) SELECT tp.id FROM topition tp JOIN topic t ON tp.topic = t.id
                   WHERE t.name = '{name}' AND tp.partition = {p} AND NOT EXISTS (SELECT 1 FROM watermark w WHERE w.topition = tp.id);\n"
            ));
        }
        let out = Command::new("sqlite3")
            .arg(self.dir.path().join("tansu.db"))
            .arg(&sql)
            .output()
            .expect("sqlite3 (scripts/install-deps installs it)");
        assert!(out.status.success(), "growing {topic}: {}", String::from_utf8_lossy(&out.stderr));
        self.restart();
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", self.addr()).create().unwrap();
        let meta = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        assert_eq!(meta.topics()[0].partitions().len() as i32, partitions, "{topic} did not grow");
    }

    /// How many messages `topic` holds, over all its partitions.
    pub fn stored(&self, topic: &str) -> i64 {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", self.addr()).create().unwrap();
        let meta = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        (0..meta.topics()[0].partitions().len() as i32)
            .map(|p| {
                let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
                high - low
            })
            .sum()
    }

    /// Writes `n` messages without binlog-tail's headers to every partition, as another
    /// producer would.
    pub fn write_foreign(&self, topic: &str, n: usize) {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", self.addr()).create().unwrap();
        let consumer: rdkafka::consumer::BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", self.addr()).create().unwrap();
        use rdkafka::consumer::Consumer;
        let partitions = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap().topics()[0]
            .partitions()
            .len() as i32;
        for p in 0..partitions {
            for i in 0..n {
                producer.send(BaseRecord::<(), _>::to(topic).payload(&format!("foreign {i}")).partition(p)).unwrap();
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    }

    /// Reads every message of `topic` from the beginning, until `n` arrived or 60 s passed.
    pub fn read(&self, topic: &str, n: usize) -> Vec<KafkaMessage> {
        self.read_until(topic, Duration::from_secs(60), |msgs| msgs.len() >= n)
    }

    /// Reads `topic` from the beginning until `done` says so or `timeout` passed.
    pub fn read_until(
        &self,
        topic: &str,
        timeout: Duration,
        mut done: impl FnMut(&[KafkaMessage]) -> bool,
    ) -> Vec<KafkaMessage> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::{Headers, Message};
        use rdkafka::{ClientConfig, Offset, TopicPartitionList};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.addr())
            .set("group.id", "binlog-tail-tests")
            .set("enable.auto.commit", "false")
            // A reset would silently skip messages; make it an error instead.
            .set("auto.offset.reset", "error")
            .create()
            .unwrap();
        let meta = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let partitions = meta.topics()[0].partitions().len() as i32;
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + timeout;
        while !done(&out) && std::time::Instant::now() < deadline {
            let Some(msg) = consumer.poll(std::time::Duration::from_millis(200)) else { continue };
            let msg = msg.unwrap();
            let headers = msg
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), x.value.map(|v| String::from_utf8_lossy(v).into_owned())))
                        .collect()
                })
                .unwrap_or_default();
            out.push(KafkaMessage {
                partition: msg.partition(),
                offset: msg.offset(),
                key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: msg.payload().map(|v| v.to_vec()).unwrap_or_default(),
                headers,
            });
        }
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            // Keep what the broker stored, to tell a lost message from an unread one.
            let kept = std::env::temp_dir().join(format!("binlog-tail-failed-tansu-{}", self.port));
            let _ = std::fs::create_dir_all(&kept);
            for entry in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
                let _ = std::fs::copy(entry.path(), kept.join(entry.file_name()));
            }
            eprintln!("tansu's data and log kept in {}", kept.display());
        }
    }
}

#[derive(Debug, Clone)]
pub struct KafkaMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Option<String>)>,
}

impl KafkaMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_deref())
    }

    pub fn event(&self) -> Event {
        serde_json::from_slice(&self.value)
            .unwrap_or_else(|e| panic!("bad value ({e}): {}", String::from_utf8_lossy(&self.value)))
    }
}

/// A small deterministic random sequence (xorshift64) for kill timings and byte mutations.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
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

/// GET `path` on 127.0.0.1:`port`: (status code, body), or None while nothing listens.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

/// The samples of a Prometheus text exposition: `name{labels}` -> value.
pub fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line: {l}"));
            (name.to_string(), value.parse().unwrap_or_else(|_| panic!("bad value: {l}")))
        })
        .collect()
}

pub fn metric(port: u16, name: &str) -> f64 {
    let (code, body) = get(port, "/metrics").expect("the metrics endpoint answers");
    assert_eq!(code, 200, "{body}");
    samples(&body).get(name).copied().unwrap_or_else(|| panic!("no {name} in\n{body}"))
}

/// Polls until `done` holds; the deadline only bounds a failing test.
pub fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

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
