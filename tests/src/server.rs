//! Real `strata-server` processes for tests: started on `127.0.0.1` with an OS-assigned port
//! (read back from the server's first line of output, so tests never collide), killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::broker_client::BrokerClient;
use strata_proto::v1::groups_client::GroupsClient;
use strata_proto::v1::start_position::Position;
use strata_proto::v1::{CreateTopicRequest, FetchRequest, StartPosition, TopicDescription};
use tonic::transport::Channel;

/// How long a server may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to stop after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `strata-server` binary of this build profile, built once per test process.
pub fn server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            // target/<profile>/deps/<test> -> target/<profile>/strata-server
            let exe = std::env::current_exe().expect("test executable path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("test binaries live in target/<profile>/deps");
            let binary = profile_dir.join("strata-server");
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let mut build = Command::new(env!("CARGO"));
            build.args([
                "build",
                "-q",
                "-p",
                "strata-server",
                "--bin",
                "strata-server",
            ]);
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("running cargo build");
            assert!(status.success(), "building strata-server failed");
            binary
        })
        .clone()
}

/// The generated `strata.v1` clients, on one connection to a server.
#[derive(Clone)]
pub struct Clients {
    pub admin: AdminClient<Channel>,
    pub broker: BrokerClient<Channel>,
    pub groups: GroupsClient<Channel>,
}

impl Clients {
    /// Every record still stored in a partition, from its log start up to the high watermark,
    /// decoded by the server, as (offset, value as text).
    pub async fn read_values(&mut self, topic: &str, partition: u32) -> Vec<(u64, String)> {
        self.try_read_values(topic, partition).await.expect("fetch")
    }

    /// [`Clients::read_values`], returning a failed fetch: a read while retention runs may
    /// find that its next page was removed (OFFSET_OUT_OF_RANGE).
    pub async fn try_read_values(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<Vec<(u64, String)>, tonic::Status> {
        let mut values = Vec::new();
        let mut position = Position::Earliest(true);
        loop {
            let fetched = self
                .broker
                .fetch(FetchRequest {
                    topic: topic.to_string(),
                    partition,
                    start: Some(StartPosition {
                        position: Some(position),
                    }),
                    max_bytes: 4 << 20,
                    decode: true,
                    ..FetchRequest::default()
                })
                .await?
                .into_inner();
            for record in fetched.records {
                let value = record.value.unwrap_or_default();
                values.push((record.offset, String::from_utf8_lossy(&value).to_string()));
            }
            position = Position::Offset(fetched.next_offset);
            if fetched.next_offset >= fetched.high_watermark {
                return Ok(values);
            }
        }
    }

    /// Creates a topic with replication factor 1 and the default config.
    pub async fn create_topic(&mut self, name: &str, partitions: u32) -> TopicDescription {
        self.admin
            .create_topic(CreateTopicRequest {
                name: name.to_string(),
                partitions,
                replication_factor: 1,
                config: None,
            })
            .await
            .expect("create topic")
            .into_inner()
    }
}

/// Spawns `command` (a `strata-server`, or a shell that execs one) with the tests' log level,
/// and returns it with the lines of its standard output.
pub fn spawn_server(mut command: Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = command
        .env(
            "RUST_LOG",
            std::env::var("STRATA_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".to_string()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning strata-server");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (child, received)
}

/// Waits (bounded) for the first line of a server's output and returns the address it says it
/// listens on.
pub fn listening_address(lines: &mpsc::Receiver<String>) -> String {
    let line = lines
        .recv_timeout(START_TIMEOUT)
        .unwrap_or_else(|_| panic!("strata-server did not start within {START_TIMEOUT:?}"));
    line.strip_prefix("strata-server listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from strata-server: {line}"))
        .to_string()
}

/// Waits (bounded) for the line after [`listening_address`]'s of a server started with
/// `--kafka-listen`, and returns the Kafka address it names.
pub fn kafka_listening_address(lines: &mpsc::Receiver<String>) -> String {
    let line = lines
        .recv_timeout(START_TIMEOUT)
        .unwrap_or_else(|_| panic!("strata-server did not start within {START_TIMEOUT:?}"));
    line.strip_prefix("strata-server kafka listening on ")
        .unwrap_or_else(|| panic!("expected the Kafka listener's line, got: {line}"))
        .to_string()
}

/// Waits (bounded) for the line of a server started with `--http-listen` that names its HTTP
/// address (after the gRPC and Kafka lines).
pub fn http_listening_address(lines: &mpsc::Receiver<String>) -> String {
    let line = lines
        .recv_timeout(START_TIMEOUT)
        .unwrap_or_else(|_| panic!("strata-server did not start within {START_TIMEOUT:?}"));
    line.strip_prefix("strata-server http listening on ")
        .unwrap_or_else(|| panic!("expected the HTTP listener's line, got: {line}"))
        .to_string()
}

/// A running server process.
pub struct ServerProcess {
    child: Child,
    pub address: String,
    /// The Kafka listener's address, when started with `--kafka-listen`.
    pub kafka_address: Option<String>,
    /// The HTTP listener's address, when started with `--http-listen`.
    pub http_address: Option<String>,
    pub data_dir: PathBuf,
    node_id: u64,
    initial_cluster: Option<String>,
    extra_args: Vec<String>,
    /// Environment variables it starts with (kept for restarts).
    env: Vec<(String, String)>,
    /// Its standard output until it has said where it listens.
    lines: Option<mpsc::Receiver<String>>,
}

impl ServerProcess {
    /// Starts node `node_id` on `data_dir` and waits until it listens.
    pub fn start(data_dir: &Path, node_id: u64) -> Self {
        Self::start_on(data_dir, node_id, "127.0.0.1:0")
    }

    /// Starts on a given listen address (a restart reuses its old port).
    pub fn start_on(data_dir: &Path, node_id: u64, listen: &str) -> Self {
        let mut server = Self::launch(data_dir, node_id, listen, None);
        server.wait_ready();
        server
    }

    /// Starts a process without waiting for it to serve (a cluster's nodes wait for each other:
    /// launch them all, then [`ServerProcess::wait_ready`] on each). `initial_cluster` is the
    /// `--initial-cluster` list.
    pub fn launch(
        data_dir: &Path,
        node_id: u64,
        listen: &str,
        initial_cluster: Option<&str>,
    ) -> Self {
        Self::launch_with(data_dir, node_id, listen, initial_cluster, &[])
    }

    /// [`ServerProcess::launch`] with more flags (kept for restarts).
    pub fn launch_with(
        data_dir: &Path,
        node_id: u64,
        listen: &str,
        initial_cluster: Option<&str>,
        extra_args: &[String],
    ) -> Self {
        Self::launch_with_env(data_dir, node_id, listen, initial_cluster, extra_args, &[])
    }

    /// [`ServerProcess::launch_with`] with environment variables (kept for restarts), such as
    /// the `AWS_*` settings of a capture bucket.
    pub fn launch_with_env(
        data_dir: &Path,
        node_id: u64,
        listen: &str,
        initial_cluster: Option<&str>,
        extra_args: &[String],
        env: &[(String, String)],
    ) -> Self {
        let mut command = Command::new(server_binary());
        command.envs(env.iter().map(|(key, value)| (key, value)));
        command
            .args([
                "--node-id",
                &node_id.to_string(),
                "--listen",
                listen,
                "--data-dir",
            ])
            .arg(data_dir);
        if let Some(cluster) = initial_cluster {
            command.args(["--initial-cluster", cluster]);
        }
        command.args(extra_args);
        let (child, received) = spawn_server(command);
        Self {
            child,
            address: listen.to_string(),
            kafka_address: None,
            http_address: None,
            data_dir: data_dir.to_path_buf(),
            node_id,
            initial_cluster: initial_cluster.map(str::to_string),
            extra_args: extra_args.to_vec(),
            env: env.to_vec(),
            lines: Some(received),
        }
    }

    /// Waits (bounded) until the process prints that it serves; records its address.
    pub fn wait_ready(&mut self) {
        let Some(lines) = self.lines.take() else {
            return;
        };
        self.address = listening_address(&lines);
        if self.extra_args.iter().any(|arg| arg == "--kafka-listen") {
            self.kafka_address = Some(kafka_listening_address(&lines));
        }
        if self.extra_args.iter().any(|arg| arg == "--http-listen") {
            self.http_address = Some(http_listening_address(&lines));
        }
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The process id, e.g. to read `/proc/PID/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://ADDRESS`, for tonic clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Connects the generated clients (bounded: 10 s).
    pub async fn clients(&self) -> Clients {
        let channel = Channel::from_shared(self.endpoint())
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("connect");
        Clients {
            admin: AdminClient::new(channel.clone()),
            broker: BrokerClient::new(channel.clone()),
            groups: GroupsClient::new(channel),
        }
    }

    /// SIGKILL: no chance to sync or clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded) for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc_kill(pid, 15) };
        // A watchdog kills the server if it has not exited in time, which ends the wait below.
        let (exited, watched) = mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let timed_out = watched.recv_timeout(STOP_TIMEOUT).is_err();
            if timed_out {
                // SAFETY: kill(2) on the child's pid; the wait below has not returned yet.
                unsafe { libc_kill(pid, 9) };
            }
            timed_out
        });
        let status = self.child.wait().expect("waiting for strata-server");
        let _ = exited.send(());
        let timed_out = watchdog.join().expect("watchdog thread");
        assert!(
            !timed_out,
            "server did not stop within {STOP_TIMEOUT:?} of SIGTERM"
        );
        status.code()
    }

    /// Starts the same node again on the same data and port, and waits until it serves.
    pub fn restart(&mut self) {
        self.relaunch();
        self.wait_ready();
    }

    /// Kills the node (SIGKILL) and starts it again on the same data and port, without waiting.
    pub fn relaunch(&mut self) {
        self.kill9();
        let restarted = Self::launch_with_env(
            &self.data_dir.clone(),
            self.node_id,
            &self.address.clone(),
            self.initial_cluster.clone().as_deref(),
            &self.extra_args.clone(),
            &self.env.clone(),
        );
        *self = restarted;
    }

    /// Replaces the extra flags the next [`ServerProcess::relaunch`] starts the node with.
    pub fn set_extra_args(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|arg| arg.to_string()).collect();
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
