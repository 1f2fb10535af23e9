//! The CLI's credentials against a real `strata-server` with TLS and `--authentication
//! password` (certificates from `strata tls init`): the password from the first line of stdin
//! (`--password-stdin`, the rest left for `produce`) or from `STRATA_PASSWORD`; no credentials
//! is AUTHENTICATION_FAILED; `--user` without a password source is a usage error before
//! anything is sent.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{COMMAND_DEADLINE, Output, STARTUP_DEADLINE};

const PASSWORD: &str = "admin-password";

/// A server with password authentication and ACLs, whose bootstrap superuser is `admin`;
/// killed on drop.
struct SecureServer {
    child: std::process::Child,
    address: String,
    /// The CA of the server's certificate (passwords travel only over TLS).
    tls_ca: String,
    _data: tempfile::TempDir,
}

impl Drop for SecureServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> SecureServer {
    let data = tempfile::tempdir().expect("data dir");
    let certs = data.path().join("certs");
    let init = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["tls", "init"])
        .arg(&certs)
        .args(["--nodes", "1", "--hosts", "127.0.0.1"])
        .output()
        .expect("strata tls init");
    assert!(init.status.success(), "{init:?}");
    let address = format!("127.0.0.1:{}", common::free_port());
    let child = Command::new(common::server_binary())
        .args(["--node-id", "1", "--listen", &address, "--data-dir"])
        .arg(data.path().join("data"))
        .arg("--tls-cert")
        .arg(certs.join("node-1.pem"))
        .arg("--tls-key")
        .arg(certs.join("node-1.key"))
        .args([
            "--authentication",
            "password",
            "--authorization",
            "on",
            "--superusers",
            "User:admin",
        ])
        .env("STRATA_BOOTSTRAP_USER", format!("admin:{PASSWORD}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start strata-server");
    SecureServer {
        child,
        address,
        tls_ca: certs.join("ca.pem").to_str().expect("utf8").to_string(),
        _data: data,
    }
}

fn strata(server: &SecureServer, args: &[&str], stdin: &[u8]) -> Output {
    let mut all = vec![
        "--brokers",
        server.address.as_str(),
        "--tls-ca",
        server.tls_ca.as_str(),
    ];
    all.extend_from_slice(args);
    common::strata(&all, stdin, COMMAND_DEADLINE)
}

/// Runs `strata ARGS` with `STRATA_PASSWORD` set to `password` (or removed), stdin empty;
/// returns its exit code, stdout and stderr.
fn strata_with_env(args: &[&str], password: Option<&str>) -> (Option<i32>, String, String) {
    let output = common::strata_with_env(
        &[("STRATA_PASSWORD", password)],
        args,
        b"",
        COMMAND_DEADLINE,
    );
    (output.code, output.stdout, output.stderr)
}

#[test]
fn the_password_comes_from_stdin_or_the_environment() {
    let server = start();
    let with_password = |rest: &str| format!("{PASSWORD}\n{rest}").into_bytes();
    // Until the server serves and has its bootstrap user.
    let started = Instant::now();
    loop {
        let created = strata(
            &server,
            &[
                "--user",
                "admin",
                "--password-stdin",
                "--timeout",
                "2s",
                "topic",
                "create",
                "orders",
                "--partitions",
                "1",
            ],
            &with_password(""),
        );
        if created.success {
            break;
        }
        assert!(
            started.elapsed() < STARTUP_DEADLINE,
            "admin could not create a topic within {STARTUP_DEADLINE:?}: {}",
            created.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let produced = strata(
        &server,
        &["--user", "admin", "--password-stdin", "produce", "orders"],
        &with_password("first\nsecond\n"),
    );
    assert!(produced.success, "{}", produced.stderr);

    // STRATA_PASSWORD instead of stdin.
    let (code, stdout, stderr) = strata_with_env(
        &[
            "--brokers",
            &server.address,
            "--tls-ca",
            &server.tls_ca,
            "--user",
            "admin",
            "consume",
            "orders",
            "--from",
            "earliest",
            "--count",
            "2",
        ],
        Some(PASSWORD),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("first") && stdout.contains("second") && !stdout.contains(PASSWORD),
        "the records, and not the password line: {stdout}"
    );

    let anonymous = strata(&server, &["topic", "list"], b"");
    assert_eq!(anonymous.code, Some(1), "{}", anonymous.stderr);
    assert!(
        anonymous.stderr.contains("AUTHENTICATION_FAILED"),
        "{}",
        anonymous.stderr
    );
    let (code, _, stderr) = strata_with_env(
        &[
            "--brokers",
            &server.address,
            "--tls-ca",
            &server.tls_ca,
            "--user",
            "admin",
            "topic",
            "list",
        ],
        None,
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("STRATA_PASSWORD") && stderr.contains("--password-stdin"),
        "{stderr}"
    );
}
