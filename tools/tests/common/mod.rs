//! What the CLI tests share: a real `strata-server` process (killed on drop) and the `strata`
//! binary run with a deadline.
//!
//! The server binary is `target/<profile>/strata-server`, next to the test's own directory;
//! when it is missing it is built with `cargo build -p strata-server --bin strata-server`.

#![allow(dead_code)] // Each test file uses its own part of this module.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long the server may take to answer its first request.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(60);
/// How long any one CLI command may take.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// A server process, killed on drop (before its data directory, if it owns one, is removed).
pub struct Server {
    child: Child,
    pub address: String,
    _data: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts node 1 on `data`, listening on `address`, without waiting for it.
    pub fn launch(data: &Path, address: &str) -> Self {
        let child = Command::new(server_binary())
            .args(["--node-id", "1", "--listen", address, "--data-dir"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start strata-server");
        Self {
            child,
            address: address.to_owned(),
            _data: None,
        }
    }

    /// Starts node 1 on a fresh data directory it owns and a free port, without waiting.
    pub fn launch_fresh() -> Self {
        let data = tempfile::tempdir().expect("data dir");
        let address = format!("127.0.0.1:{}", free_port());
        let mut server = Self::launch(data.path(), &address);
        server._data = Some(data);
        server
    }

    /// Waits until the server answers `cluster info`, polling with a short request timeout.
    pub fn wait_until_ready(&self) {
        let started = Instant::now();
        loop {
            let output = strata(
                &[
                    "--brokers",
                    &self.address,
                    "--timeout",
                    "2s",
                    "cluster",
                    "info",
                ],
                b"",
                COMMAND_DEADLINE,
            );
            if output.success {
                return;
            }
            assert!(
                started.elapsed() < STARTUP_DEADLINE,
                "the server did not answer within {STARTUP_DEADLINE:?}: {}",
                output.stderr
            );
        }
    }
}

/// `target/<profile>/`: the tests run from `target/<profile>/deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .to_path_buf()
}

pub fn server_binary() -> PathBuf {
    let path = profile_dir().join("strata-server");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "strata-server", "--bin", "strata-server"]);
        if profile_dir()
            .file_name()
            .is_some_and(|name| name == "release")
        {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building strata-server failed");
    }
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// A port nothing listens on right now: bind port 0, read the port, let it go.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("bound address").port()
}

/// What a finished command printed.
pub struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `strata ARGS` with `stdin`, killing it at the deadline.
pub fn strata(args: &[&str], stdin: &[u8], deadline: Duration) -> Output {
    strata_with_env(&[], args, stdin, deadline)
}

/// [`strata`] with environment variables set (`Some`) or removed (`None`).
pub fn strata_with_env(
    env: &[(&str, Option<&str>)],
    args: &[&str],
    stdin: &[u8],
    deadline: Duration,
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strata");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || {
        // The command may exit before reading everything; that is its business.
        let _ = input.write_all(&stdin);
    });
    let (done, finished) = mpsc::channel();
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = stderr.read_to_string(&mut err);
        let _ = done.send((out, err));
    });
    // The pipes close when the command exits.
    let (stdout, stderr) = match finished.recv_timeout(deadline) {
        Ok(output) => output,
        Err(_) => {
            let _ = child.kill();
            panic!("strata {args:?} did not finish within {deadline:?}");
        }
    };
    let status = child.wait().expect("wait for strata");
    writer.join().expect("stdin writer");
    reader.join().expect("output reader");
    Output {
        success: status.success(),
        code: status.code(),
        stdout,
        stderr,
    }
}
