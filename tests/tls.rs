//! TLS to the server: a real MariaDB started with a certificate from a private CA and
//! `require_secure_transport=ON`, every certificate made by openssl in the test. A trusted CA
//! reads the rows written; an unknown CA, a wrong host name, a plain connection and a server
//! without TLS fail at once with an error that says it is TLS and what to do.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::util::{binlog_tail, failure, in_db, ok_events, stderr, Event, MariaDb, Stream};

/// Certificates made with openssl: a private CA (`ca`), a CA nobody trusts (`other-ca`), server
/// certificates signed by `ca` for 127.0.0.1 and localhost (`server`) and for another name
/// (`wrong`), a client certificate signed by `ca` (`client`) and one signed by `other-ca`
/// (`stranger`). Each `NAME.pem` has its key in `NAME.key`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn shared() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(|| {
            // Static, so never removed: under target/tmp rather than /tmp.
            let pki = Pki { dir: tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap() };
            pki.ca("ca");
            pki.ca("other-ca");
            pki.leaf("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth");
            pki.leaf("wrong", "ca", "subjectAltName=DNS:wrong.example.com\nextendedKeyUsage=serverAuth");
            pki.leaf("client", "ca", "extendedKeyUsage=clientAuth");
            pki.leaf("stranger", "other-ca", "extendedKeyUsage=clientAuth");
            pki
        })
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn arg(&self, file: &str) -> String {
        self.path(file).to_str().unwrap().to_string()
    }

    fn ca(&self, name: &str) {
        self.openssl(&["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-keyout", &format!("{name}.key"), "-out", &format!("{name}.pem"), "-days", "3650"])
            .args(["-subj", &format!("/CN=binlog-tail test {name}")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .status()
            .map(|s| assert!(s.success(), "openssl could not make the CA {name}"))
            .unwrap();
    }

    /// A certificate signed by `ca` with the extensions in `ext` (openssl's extfile syntax).
    fn leaf(&self, name: &str, ca: &str, ext: &str) {
        std::fs::write(self.path(&format!("{name}.ext")), format!("basicConstraints=CA:FALSE\n{ext}\n")).unwrap();
        let request = self
            .openssl(&["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", &format!("/CN={name}")])
            .status()
            .unwrap();
        assert!(request.success(), "openssl could not make the request for {name}");
        let sign = self
            .openssl(&["x509", "-req", "-in", &format!("{name}.csr"), "-CA", &format!("{ca}.pem")])
            .args(["-CAkey", &format!("{ca}.key"), "-CAcreateserial", "-days", "3650"])
            .args(["-out", &format!("{name}.pem"), "-extfile", &format!("{name}.ext")])
            .status()
            .unwrap();
        assert!(sign.success(), "openssl could not sign {name}");
    }

    fn openssl(&self, args: &[&str]) -> Command {
        let found = Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
        assert!(
            found,
            "the TLS tests make their certificates with openssl: run scripts/install-deps (or apt-get install openssl)"
        );
        let mut cmd = Command::new("openssl");
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    }

    /// mariadbd options serving the certificate `name` and trusting `ca` for client certificates.
    fn server_options(&self, name: &str) -> Vec<String> {
        vec![
            format!("--ssl-ca={}", self.arg("ca.pem")),
            format!("--ssl-cert={}", self.arg(&format!("{name}.pem"))),
            format!("--ssl-key={}", self.arg(&format!("{name}.key"))),
            "--require-secure-transport=ON".into(),
        ]
    }
}

/// A MariaDB that accepts only TLS connections, with the certificate for 127.0.0.1 and
/// localhost. (The admin's mariadb client of `sql()` uses TLS by default, without verifying.)
fn tls_server() -> &'static MariaDb {
    static SERVER: OnceLock<MariaDb> = OnceLock::new();
    SERVER.get_or_init(|| {
        let options = Pki::shared().server_options("server");
        let server = MariaDb::start(&options.iter().map(String::as_str).collect::<Vec<_>>());
        server.sql(
            "CREATE USER certuser@'%' IDENTIFIED BY 'certpass' REQUIRE X509; \
             GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO certuser@'%';",
        );
        server
    })
}

/// `dump` from `url` with the replication user's password (`MYSQL_PWD`), plus `env`.
fn dump(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    binlog_tail()
        .args(["dump", "--url", url, "--stdout"])
        .args(args)
        .env("MYSQL_PWD", "replpass")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// A fresh database `db` on `server` with three rows; returns their `after` images.
fn write_rows(server: &MariaDb, db: &str) -> Vec<serde_json::Value> {
    server.fresh_db(db);
    server.sql(&format!(
        "CREATE TABLE {db}.t (id INT PRIMARY KEY, secret VARCHAR(20)); \
         INSERT INTO {db}.t VALUES (1, 'over TLS'), (2, 'zoë'), (3, NULL);"
    ));
    vec![
        serde_json::json!({"id": 1, "secret": "over TLS"}),
        serde_json::json!({"id": 2, "secret": "zoë"}),
        serde_json::json!({"id": 3, "secret": null}),
    ]
}

fn afters(events: Vec<Event>, db: &str) -> Vec<serde_json::Value> {
    in_db(events, db).into_iter().map(|e| serde_json::to_value(e.after).unwrap()).collect()
}

/// Asserts exit code 2 (a bad option, caught before connecting) with `expected` in the message.
fn usage_error(out: &Output, expected: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "expected a usage error: {err}");
    assert!(err.contains(expected), "expected `{expected}` in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_trusted_ca_reads_the_rows_written() {
    let pki = Pki::shared();
    let server = tls_server();
    let written = write_rows(server, "tls_trusted");
    let ca = pki.arg("ca.pem");
    let port = server.port;
    let ip = format!("mysql://repl@127.0.0.1:{port}");
    let name = format!("mysql://repl@localhost:{port}");
    let require_ssl = format!("{ip}?require_ssl=true");
    for (what, url, args, env) in [
        ("--tls-ca", &ip, vec!["--tls-ca", &ca], vec![]),
        ("--tls-ca --tls-ca-only", &ip, vec!["--tls-ca", &ca, "--tls-ca-only"], vec![]),
        ("a host name", &name, vec!["--tls-ca", &ca], vec![]),
        ("?require_ssl=true", &require_ssl, vec!["--tls-ca", &ca], vec![]),
        ("SSL_CERT_FILE", &ip, vec!["--tls"], vec![("SSL_CERT_FILE", ca.as_str())]),
        ("BINLOG_TAIL_TLS_CA", &ip, vec![], vec![("BINLOG_TAIL_TLS_CA", ca.as_str())]),
    ] {
        let out = dump(url, &args, &env);
        assert_eq!(afters(ok_events(&out), "tls_trusted"), written, "with {what}");
    }
    let check =
        binlog_tail().args(["check", "--url", &ip, "--tls-ca", &ca]).env("MYSQL_PWD", "replpass").output().unwrap();
    assert!(check.status.success(), "check over TLS: {}{}", String::from_utf8_lossy(&check.stdout), stderr(&check));
}

#[test]
fn an_unknown_ca_fails_at_once_with_a_tls_error() {
    let pki = Pki::shared();
    let server = tls_server();
    let url = server.url();
    for args in [
        vec!["--tls-ca", &pki.arg("other-ca.pem")],
        vec!["--tls"],
        vec!["--tls-ca", &pki.arg("other-ca.pem"), "--tls-ca-only"],
    ] {
        let err = failure(&dump(&url, &args, &[]));
        assert!(err.contains("TLS connection to 127.0.0.1"), "{args:?}: {err}");
        assert!(
            err.contains("not signed by a CA binlog-tail trusts") && err.contains("--tls-ca FILE"),
            "{args:?}: {err}"
        );
    }
    // The URL's own switch verifies the same way (against the system's and built-in CAs).
    let err = failure(&dump(&format!("{url}?require_ssl=true"), &[], &[]));
    assert!(
        err.contains("TLS connection to 127.0.0.1") && err.contains("not signed by a CA binlog-tail trusts"),
        "{err}"
    );
    // `stream` does not retry it either, however long it may wait for a starting server.
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let other_ca = pki.arg("other-ca.pem");
    let mut stream =
        Stream::start(server, &position, dir.path(), 0, &["--tls-ca", &other_ca, "--wait-for-server", "3600"]);
    let status = stream.wait();
    let log = stream.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("not signed by a CA binlog-tail trusts"), "{log}");
    assert!(!log.contains("reconnecting") && !log.contains("retrying"), "a TLS failure was retried: {log}");
    assert!(!position.exists(), "a position was saved without a connection");
}

#[test]
fn a_wrong_host_name_fails_unless_the_certificate_is_checked_for_its_own_name() {
    let pki = Pki::shared();
    let options = pki.server_options("wrong");
    let server = MariaDb::start(&options.iter().map(String::as_str).collect::<Vec<_>>());
    let written = write_rows(&server, "tls_wrong_name");
    let ca = pki.arg("ca.pem");
    let err = failure(&dump(&server.url(), &["--tls-ca", &ca], &[]));
    assert!(err.contains("TLS connection to 127.0.0.1"), "{err}");
    assert!(err.contains("not valid for `127.0.0.1` (it names wrong.example.com)"), "{err}");
    assert!(err.contains("--tls-server-name"), "{err}");
    // The same CA check, for the name the certificate holds (as through a tunnel).
    let out = dump(&server.url(), &["--tls-ca", &ca, "--tls-server-name", "wrong.example.com"], &[]);
    assert_eq!(afters(ok_events(&out), "tls_wrong_name"), written);
    // A name the certificate does not hold fails the same way.
    let err = failure(&dump(&server.url(), &["--tls-ca", &ca, "--tls-server-name", "right.example.com"], &[]));
    assert!(err.contains("not valid for `right.example.com`"), "{err}");
}

#[test]
fn a_plain_connection_to_a_server_that_requires_tls_says_so() {
    let server = tls_server();
    let err = failure(&dump(&server.url(), &[], &[]));
    assert!(err.contains("access denied"), "{err}");
    assert!(err.contains("or the server requires TLS") && err.contains("--tls"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let mut stream = Stream::start(server, &position, dir.path(), 0, &[]);
    let status = stream.wait();
    let log = stream.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("or the server requires TLS"), "{log}");
    assert!(!log.contains("reconnecting"), "{log}");
}

#[test]
fn tls_to_a_server_without_tls_is_refused() {
    let server = MariaDb::shared();
    let ssl: String = server.sql("SELECT @@have_ssl");
    assert_ne!(ssl, "YES", "the shared test server is expected to run without TLS");
    for args in [vec!["--tls"], vec!["--tls-ca", &Pki::shared().arg("ca.pem")]] {
        let err = failure(&dump(&server.url(), &args, &[]));
        assert!(err.contains("TLS connection to 127.0.0.1") && err.contains("does not offer TLS"), "{err}");
    }
}

#[test]
fn a_client_certificate_logs_in_a_user_that_requires_x509() {
    let pki = Pki::shared();
    let server = tls_server();
    let written = write_rows(server, "tls_client_cert");
    let url = format!("mysql://certuser@127.0.0.1:{}", server.port);
    let ca = pki.arg("ca.pem");
    let with = |cert: &str, key: &str| {
        binlog_tail()
            .args(["dump", "--url", &url, "--stdout", "--tls-ca", &ca, "--tls-cert", cert, "--tls-key", key])
            .env("MYSQL_PWD", "certpass")
            .output()
            .unwrap()
    };
    let out = with(&pki.arg("client.pem"), &pki.arg("client.key"));
    assert_eq!(afters(ok_events(&out), "tls_client_cert"), written);

    let without = binlog_tail()
        .args(["dump", "--url", &url, "--stdout", "--tls-ca", &ca])
        .env("MYSQL_PWD", "certpass")
        .output()
        .unwrap();
    let err = failure(&without);
    assert!(err.contains("access denied") && err.contains("REQUIRE X509") && err.contains("--tls-cert"), "{err}");

    // A certificate from a CA the server does not trust is refused in the handshake.
    let err = failure(&with(&pki.arg("stranger.pem"), &pki.arg("stranger.key")));
    assert!(err.contains("TLS connection to 127.0.0.1"), "{err}");
    assert!(err.contains("the server refused the client certificate (UnknownCA)"), "{err}");
}

#[test]
fn turning_certificate_checks_off_is_loud() {
    let server = tls_server();
    let written = write_rows(server, "tls_unverified");
    let url = format!("{}?require_ssl=true&verify_ca=false", server.url());
    let out = dump(&url, &[], &[]);
    assert_eq!(afters(ok_events(&out), "tls_unverified"), written);
    let log = stderr(&out);
    assert!(log.contains("WARN") && log.contains("TLS without any certificate check (verify_ca=false"), "{log}");
}

#[test]
fn bad_tls_options_are_refused_before_connecting() {
    let pki = Pki::shared();
    // Nothing listens on port 1: each of these must fail before any connection is tried.
    let url = "mysql://repl@127.0.0.1:1";
    let (ca, cert, key) = (pki.arg("ca.pem"), pki.arg("client.pem"), pki.arg("client.key"));
    let missing = pki.arg("missing.pem");
    usage_error(&dump(url, &["--tls-ca", &missing], &[]), "cannot read --tls-ca");
    usage_error(&dump(url, &["--tls-ca", &key], &[]), "holds no certificate");
    usage_error(&dump(url, &["--tls-cert", &cert], &[]), "--tls-cert needs --tls-key");
    usage_error(&dump(url, &["--tls-key", &key], &[]), "--tls-key needs --tls-cert");
    usage_error(&dump(url, &["--tls-cert", &cert, "--tls-key", &cert], &[]), "holds no usable private key");
    let stranger_key = pki.arg("stranger.key");
    usage_error(
        &dump(url, &["--tls-cert", &cert, "--tls-key", &stranger_key], &[]),
        "the key does not belong to the certificate",
    );
    usage_error(
        &dump(url, &["--tls-ca-only"], &[]),
        "--tls-ca-only (or built_in_roots=false in --url) needs --tls-ca FILE",
    );
    usage_error(
        &dump(url, &["--tls-ca", &ca, "--tls-server-name", "not a name"], &[]),
        "--tls-server-name `not a name`",
    );
    usage_error(&dump(&format!("{url}?require_ssl=true&verify_ca=false"), &["--tls-ca", &ca], &[]), "verify_ca=false");
    usage_error(
        &dump(&format!("{url}?require_ssl=true&verify_identity=false"), &[], &[]),
        "verify_identity=false in --url is not supported",
    );
    usage_error(&dump(url, &["--tls"], &[("SSL_CERT_FILE", &missing)]), "SSL_CERT_FILE");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("binlog-tail.toml");
    std::fs::write(&config, format!("url = '{url}'\nposition_file = 'pos.json'\ntls_ca = '{missing}'\n")).unwrap();
    let out = binlog_tail().current_dir(dir.path()).args(["stream", "--config"]).arg(&config).output().unwrap();
    usage_error(&out, "cannot read --tls-ca");
    assert!(!dir.path().join("pos.json").exists());
}

#[test]
fn a_config_file_sets_up_tls_for_stream() {
    let pki = Pki::shared();
    let server = tls_server();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("binlog-tail.toml");
    let [ca, cert, key] = ["ca.pem", "client.pem", "client.key"].map(|f| pki.arg(f));
    std::fs::write(&config, format!("tls_ca = '{ca}'\ntls_ca_only = true\ntls_cert = '{cert}'\ntls_key = '{key}'\n"))
        .unwrap();
    let position = dir.path().join("position.json");
    let stream = Stream::start(server, &position, dir.path(), 0, &["--config", config.to_str().unwrap()]);
    stream.wait_ready(&position);
    let written = write_rows(server, "tls_config");
    let events = crate::util::wait_for_rows(std::slice::from_ref(&stream.stdout), "tls_config", written.len());
    assert_eq!(afters(events, "tls_config"), written);
    let status = stream.stop();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_dropped_tls_connection_is_resumed_unlike_a_certificate_failure() {
    let pki = Pki::shared();
    let options = pki.server_options("server");
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let server = MariaDb::start(&options);
    server.fresh_db("tls_restart");
    server.sql("CREATE TABLE tls_restart.t (id INT PRIMARY KEY)");
    let dir = tempfile::tempdir().unwrap();
    let position = dir.path().join("position.json");
    let ca = pki.arg("ca.pem");
    let stream = Stream::start(&server, &position, dir.path(), 0, &["--tls-ca", &ca]);
    stream.wait_ready(&position);
    server.sql("INSERT INTO tls_restart.t VALUES (1)");
    let files = [stream.stdout.clone()];
    assert_eq!(crate::util::wait_for_rows(&files, "tls_restart", 1).len(), 1, "{}", stream.log());
    server.restart(&options);
    server.sql("INSERT INTO tls_restart.t VALUES (2)");
    let ids: Vec<_> = crate::util::wait_for_rows(&files, "tls_restart", 2)
        .iter()
        .map(|e| e.after.clone().unwrap()["id"].clone())
        .collect();
    assert_eq!(ids, [serde_json::json!(1), serde_json::json!(2)], "{}", stream.log());
    assert!(stream.log().contains("reconnecting"), "{}", stream.log());
    assert_eq!(stream.stop().code(), Some(0));
}
