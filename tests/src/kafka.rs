//! Kafka clients nobody here wrote, for the Kafka listener's interoperability tests, installed
//! on first use so that `cargo test --workspace` needs nothing installed by hand:
//! - Python (confluent-kafka, which bundles librdkafka; kafka-python; aiokafka; and the other
//!   Python the tests use: prometheus-client, DuckDB, pyarrow, moto): the system's
//!   when all import, else the pinned `tests/kafka/requirements.txt` installed from PyPI into
//!   `target/kafka-python-deps`;
//! - kcat (librdkafka's CLI): the system's, else Debian's package (`apt-get install kcat`, as
//!   root, which CI is);
//! - kafkajs: `tests/kafka/package.json` installed from npm into `target/kafka-node-deps`.
//!
//! On a fresh Debian machine (CI's, as root) whatever the installers need comes from Debian's
//! packages first: `python3-pip` when python3 has no pip, `nodejs` and `npm` when npm is
//! missing, so no separate install script is needed.
//!
//! Installs run once per test process, and across test processes under a lock file, so
//! parallel tests never install twice at once. A client that cannot be installed fails the
//! test with the installer's output: interoperability is never skipped silently.
//!
//! [`run`] runs a client program with a deadline and returns its output, failing the test
//! with everything it printed when it fails or hangs.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Holds an exclusive lock on `target/kafka-clients.lock` while installing.
pub(crate) fn install_lock() -> File {
    let target = repo().join("target");
    std::fs::create_dir_all(&target).expect("creating target/");
    let file = File::create(target.join("kafka-clients.lock")).expect("creating the lock file");
    file.lock().expect("locking target/kafka-clients.lock");
    file
}

pub(crate) fn run_installer(mut command: Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run the installer: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether `program args...` runs and succeeds.
pub(crate) fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Installs Debian packages (`apt-get`, as root, which CI is), failing the test with
/// apt-get's output when it cannot.
pub(crate) fn apt_install(packages: &[&str]) {
    let what = packages.join(" ");
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    run_installer(update, &format!("apt-get update (for {what}; needs root)"));
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_installer(install, &format!("apt-get install {what} (needs root)"));
}

/// The `PYTHONPATH` entry the Python Kafka clients import from (`None`: the system's).
fn python_deps() -> Option<PathBuf> {
    static DEPS: OnceLock<Option<PathBuf>> = OnceLock::new();
    DEPS.get_or_init(|| {
        let importable = |path: Option<&Path>| {
            let mut check = Command::new("python3");
            check.args([
                "-c",
                "import confluent_kafka, kafka, aiokafka, snappy, lz4.frame, zstandard, prometheus_client, \
                 duckdb, pyarrow, moto.server",
            ]);
            if let Some(path) = path {
                check.env("PYTHONPATH", path);
            }
            check.output().is_ok_and(|output| output.status.success())
        };
        if importable(None) {
            return None;
        }
        let deps = repo().join("target/kafka-python-deps");
        let requirements = repo().join("tests/kafka/requirements.txt");
        let wanted = std::fs::read_to_string(&requirements).expect("tests/kafka/requirements.txt");
        // What the directory was installed from: a changed pin reinstalls it.
        let stamp = deps.join("installed-from-requirements.txt");
        let _lock = install_lock();
        let current = std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted);
        if !current || !importable(Some(&deps)) {
            if deps.exists() {
                std::fs::remove_dir_all(&deps).expect("removing an outdated target/kafka-python-deps");
            }
            // A fresh Debian has python3 without pip. `pip install --target` installs beside
            // the system's packages, not into them, so PEP 668 does not stop it.
            if !runs("python3", &["-m", "pip", "--version"]) {
                apt_install(&["python3-pip"]);
            }
            let mut pip = Command::new("python3");
            pip.args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&deps)
            .arg("-r")
            .arg(&requirements);
            run_installer(pip, "installing tests/kafka/requirements.txt");
            std::fs::write(&stamp, &wanted).expect("writing the requirements stamp");
        }
        Some(deps)
    })
    .clone()
}

/// `python3` with the Kafka clients importable, running `tests/kafka/<script>`.
pub fn python(script: &str) -> Command {
    python_script(&format!("tests/kafka/{script}"))
}

/// `python3` with everything in `tests/kafka/requirements.txt` importable (Kafka clients,
/// prometheus-client, DuckDB, pyarrow, moto), running `script` (a path from the workspace
/// root).
pub fn python_script(script: &str) -> Command {
    let mut command = Command::new("python3");
    command.arg("-u").arg(repo().join(script));
    if let Some(deps) = python_deps() {
        command.env("PYTHONPATH", deps);
    }
    command
}

/// kcat's path, installed from Debian's packages when missing.
pub fn kcat() -> PathBuf {
    static KCAT: OnceLock<PathBuf> = OnceLock::new();
    KCAT.get_or_init(|| {
        let found = || {
            Command::new("sh")
                .args(["-c", "command -v kcat"])
                .output()
                .ok()
                .filter(|output| output.status.success())
                .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
        };
        if let Some(path) = found() {
            return path;
        }
        let _lock = install_lock();
        if let Some(path) = found() {
            return path;
        }
        apt_install(&["kcat"]);
        found().expect("kcat installed but not on PATH")
    })
    .clone()
}

/// `node` with kafkajs resolvable, running `tests/kafka/<script>`.
pub fn node(script: &str) -> Command {
    static DEPS: OnceLock<PathBuf> = OnceLock::new();
    let deps = DEPS.get_or_init(|| {
        let deps = repo().join("target/kafka-node-deps");
        let installed = || deps.join("node_modules/kafkajs/package.json").exists();
        if !installed() {
            let _lock = install_lock();
            if !installed() {
                if !runs("npm", &["--version"]) {
                    apt_install(&["nodejs", "npm"]);
                }
                std::fs::create_dir_all(&deps).expect("creating target/kafka-node-deps");
                std::fs::copy(
                    repo().join("tests/kafka/package.json"),
                    deps.join("package.json"),
                )
                .expect("copying tests/kafka/package.json");
                let mut npm = Command::new("npm");
                npm.args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
                    .arg(&deps);
                run_installer(npm, "npm install kafkajs");
            }
        }
        deps.join("node_modules")
    });
    let mut command = Command::new("node");
    command
        .arg(repo().join("tests/kafka").join(script))
        .env("NODE_PATH", deps);
    command
}

/// Runs `command` to completion within `timeout` and returns its output; fails the test with
/// everything the program printed when it exits unsuccessfully or runs out of time (then it
/// is killed).
pub fn run(mut command: Command, timeout: Duration) -> Output {
    let described = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {described}: {e}"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the client") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    let printed = || {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )
    };
    match status {
        None => panic!(
            "{described} did not finish within {timeout:?}\n{}",
            printed()
        ),
        Some(status) if !status.success() => {
            panic!("{described} failed ({status})\n{}", printed())
        }
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
    }
}

/// A one-node server with a Kafka listener on a free loopback port, and its data directory.
pub fn start_server() -> (tempfile::TempDir, crate::server::ServerProcess) {
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = crate::server::ServerProcess::launch_with(
        data.path(),
        1,
        "127.0.0.1:0",
        None,
        &["--kafka-listen".to_string(), "127.0.0.1:0".to_string()],
    );
    server.wait_ready();
    (data, server)
}

/// The Kafka address of a server started with `--kafka-listen`.
pub fn bootstrap(server: &crate::server::ServerProcess) -> String {
    server.kafka_address.clone().expect("kafka address")
}

/// A TCP connection to a Kafka listener whose reads give up after `timeout`.
pub fn connect(address: &str, timeout: Duration) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(address).expect("connecting to the Kafka listener");
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    stream
}

/// Creates a topic of `partitions` partitions, one replica each, over gRPC.
pub async fn create_topic(clients: &mut crate::server::Clients, name: &str, partitions: u32) {
    clients
        .admin
        .create_topic(strata_proto::v1::CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor: 1,
            ..Default::default()
        })
        .await
        .expect("create topic");
}

/// Runs a client program (see [`run`]) and returns the JSON lines it printed.
pub fn json_lines(command: Command, timeout: Duration) -> Vec<serde_json::Value> {
    let output = run(command, timeout);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("the client program prints JSON lines"))
        .collect()
}

/// Every record of a partition, decoded by the server (gRPC Fetch, decode on).
pub async fn grpc_records(
    clients: &mut crate::server::Clients,
    topic: &str,
    partition: u32,
) -> Vec<strata_proto::v1::Record> {
    use strata_proto::v1 as pb;
    let mut records = Vec::new();
    let mut start = pb::start_position::Position::Earliest(true);
    loop {
        let fetched = clients
            .broker
            .fetch(pb::FetchRequest {
                topic: topic.to_string(),
                partition,
                start: Some(pb::StartPosition {
                    position: Some(start),
                }),
                max_bytes: 4 << 20,
                decode: true,
                ..Default::default()
            })
            .await
            .expect("gRPC fetch")
            .into_inner();
        records.extend(fetched.records);
        if fetched.next_offset >= fetched.high_watermark {
            return records;
        }
        start = pb::start_position::Position::Offset(fetched.next_offset);
    }
}
