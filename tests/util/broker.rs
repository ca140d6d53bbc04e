//! A tansu broker (Kafka protocol) for the Kafka tests, and the messages read back from it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, root, Event};

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
