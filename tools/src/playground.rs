//! `strata playground`: a real cluster of `strata-server` processes on this machine, for trying
//! Strata out. Each node gets a free loopback port (bound to port 0 to pick it, released, then
//! passed explicitly), its own data directory and the same `--initial-cluster` list. Once every
//! node answers `ClusterInfo` and names the same controller leader, which hears from every
//! node, the playground prints the broker list and example commands, then runs until Ctrl-C or SIGTERM
//! and stops the servers with SIGTERM (SIGKILL after [`STOP_TIMEOUT`]). With `--run-demo` it
//! creates a replicated topic, produces and consumes a few records, and stops. With `--secure`
//! it first writes certificates (`strata tls init` into `DATA_DIR/certs`) and starts every node
//! with TLS on its listener and between nodes, authentication by client certificate or password
//! and ACLs on, the user `admin` (its password in `DATA_DIR/certs/admin.password`) as the first
//! user and a superuser, and prints the client settings (the admin certificate).
//!
//! Exit codes: 0 after a clean stop or demo; 2 when the servers do not become healthy within
//! `--startup-timeout` (their log tails are printed), cannot be started, or the demo fails.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use strata_client::proto::v1::{ErrorCode, TopicConfig};
use strata_client::{
    Client, ClientConfig, ClientTls, ConsumerConfig, ProducerConfig, ProducerRecord,
};
use strata_client::{Error, StartFrom};

/// The most nodes a playground starts.
const NODES_MAX: u32 = 9;

/// How long the servers get to stop after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the cluster's health is polled while starting, and how long each poll may take.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(200);
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The bytes of a node's log shown when it does not become healthy.
const LOG_TAIL_BYTES: u64 = 2048;

/// The demo's topic and record count.
const DEMO_TOPIC: &str = "playground-demo";
const DEMO_RECORDS: u32 = 10;

#[derive(clap::Args)]
pub struct PlaygroundArgs {
    /// Number of nodes (1 to 9).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Where the nodes keep their data (`node-N/`) and logs (`node-N.log`) [default: a new
    /// temporary directory, kept after exit].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The `strata-server` binary [default: next to this `strata`, else on PATH].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// How long the cluster may take to become healthy.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    startup_timeout: Duration,
    /// Once healthy: create a topic, produce and consume a few records, then stop.
    #[arg(long)]
    run_demo: bool,
    /// TLS everywhere (certificates in DATA_DIR/certs, as `strata tls init`), authentication by
    /// client certificate or password, ACLs on; the admin certificate and the user `admin`
    /// (password in DATA_DIR/certs/admin.password) are superusers.
    #[arg(long)]
    secure: bool,
}

/// One running `strata-server`.
struct Node {
    id: u32,
    address: String,
    log: PathBuf,
    child: Child,
    /// Set once its exit was seen.
    exited: bool,
    /// Its Kafka listener's address.
    kafka_address: String,
    /// Its HTTP listener's address (health, metrics, JSON API, console).
    http_address: String,
}

/// Starts the playground on its own runtime and runs it to the end.
pub fn run(args: PlaygroundArgs) -> Result<ExitCode> {
    if !(1..=NODES_MAX).contains(&args.nodes) {
        bail!("--nodes must be 1 to {NODES_MAX}, not {}", args.nodes);
    }
    let server_bin = server_binary(args.server_bin.as_deref());
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => fresh_temp_dir()?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    println!("data directory: {} (kept after exit)", data_dir.display());
    let certs = if args.secure {
        let certs = data_dir.join("certs");
        let hosts = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        crate::tls::init(&certs, args.nodes, &hosts, 365)?;
        println!("certificates: {}", certs.display());
        Some(certs)
    } else {
        None
    };
    let mut nodes = start_nodes(&server_bin, &data_dir, args.nodes, certs.as_deref())?;
    let tls = certs.as_deref().map(admin_tls).transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(&args, &mut nodes, tls, certs.as_deref()));
    stop_nodes(&mut nodes);
    result
}

/// The client settings of the admin certificate in `certs`.
fn admin_tls(certs: &Path) -> Result<ClientTls> {
    Ok(ClientTls::from_files(
        &certs.join("ca.pem"),
        Some((&certs.join("admin.pem"), &certs.join("admin.key"))),
    )?)
}

async fn serve(
    args: &PlaygroundArgs,
    nodes: &mut [Node],
    tls: Option<ClientTls>,
    certs: Option<&Path>,
) -> Result<ExitCode> {
    // Listened for from the start: a Ctrl-C or SIGTERM that comes while the cluster starts or
    // the text below prints (a script stopping the playground at once) is kept for
    // `wait_for_stop`, instead of ending the playground with its nodes left running.
    let stop = StopSignals::new()?;
    let brokers: Vec<&str> = nodes.iter().map(|node| node.address.as_str()).collect();
    let brokers = brokers.join(",");
    if let Err(error) = wait_healthy(nodes, &brokers, args.startup_timeout, tls.clone()).await {
        eprintln!("strata: the cluster did not become healthy: {error:#}");
        for node in nodes.iter() {
            eprintln!("--- node {} ({}) ---", node.id, node.log.display());
            eprintln!("{}", log_tail(&node.log));
        }
        return Ok(ExitCode::from(2));
    }
    println!("{} nodes up: {brokers}", nodes.len());
    let kafka: Vec<&str> = nodes
        .iter()
        .map(|node| node.kafka_address.as_str())
        .collect();
    let kafka = kafka.join(",");
    println!("Kafka bootstrap servers: {kafka}");
    let scheme = if certs.is_some() { "https" } else { "http" };
    println!(
        "Console: {scheme}://{}/ui/ (metrics at /metrics, health at /readyz, on every node: {})",
        nodes[0].http_address,
        nodes
            .iter()
            .map(|node| node.http_address.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    if args.run_demo {
        let replication_factor = nodes.len().min(3) as u32;
        demo(&brokers, replication_factor, tls).await?;
        println!("demo done: stopping the cluster");
        return Ok(ExitCode::SUCCESS);
    }
    let replication_factor = nodes.len().min(3);
    let tls_settings = match certs {
        Some(certs) => {
            let d = certs.display();
            format!(
                "\x20 export STRATA_TLS_CA={d}/ca.pem STRATA_TLS_CERT={d}/admin.pem \
                 STRATA_TLS_KEY={d}/admin.key\n\
                 \x20 # (the admin certificate is User:admin, a superuser; or, without \
                 STRATA_TLS_CERT/KEY, a password:\n\
                 \x20 #  export STRATA_USER=admin STRATA_PASSWORD=$(cat {d}/{ADMIN_PASSWORD_FILE}))\n"
            )
        }
        None => String::new(),
    };
    // With --secure, Kafka clients need TLS and SASL settings (see the README).
    let kafka_hint = if certs.is_none() {
        format!(
            "\x20 kcat -b {kafka} -C -t orders -e    # or any Kafka client, at the Kafka listeners\n"
        )
    } else {
        String::new()
    };
    let strata = cli_command();
    println!(
        "\nTry it (in another shell):\n\
         \x20 export STRATA_BROKERS={brokers}\n\
         {tls_settings}\
         \x20 {strata} topic create orders --partitions 3 --replication-factor {replication_factor}\n\
         \x20 seq 1 100 | {strata} produce orders\n\
         \x20 {strata} consume orders --from earliest --count 100\n\
         \x20 {strata} cluster info\n\
         {kafka_hint}\
         Kill a node's process (kill -9) to watch leadership move. Ctrl-C stops the cluster."
    );
    wait_for_stop(nodes, stop).await
}

/// How another shell runs this CLI: `strata` when that name on PATH is this executable, else
/// this executable's absolute path (`target/debug/strata` is not on PATH after a build).
fn cli_command() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|exe| exe.canonicalize()) else {
        return "strata".to_owned();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            dir.join("strata")
                .canonicalize()
                .is_ok_and(|found| found == exe)
        })
    });
    if on_path {
        "strata".to_owned()
    } else {
        exe.display().to_string()
    }
}

/// `--server-bin`, else `strata-server` next to this executable, else the name (found on PATH).
fn server_binary(given: Option<&Path>) -> PathBuf {
    if let Some(path) = given {
        return path.to_owned();
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("strata-server")));
    match beside {
        Some(path) if path.is_file() => path,
        _ => PathBuf::from("strata-server"),
    }
}

fn fresh_temp_dir() -> Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let dir =
        std::env::temp_dir().join(format!("strata-playground-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `count` distinct free loopback ports: all bound at once (so they differ), then released.
fn free_ports(count: u32) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<TcpListener>>>()
        .context("picking free ports")?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// The initial-cluster list: `1=HOST:PORT,2=HOST:PORT,...`.
fn initial_cluster(addresses: &[String]) -> String {
    addresses
        .iter()
        .enumerate()
        .map(|(index, address)| format!("{}={address}", index + 1))
        .collect::<Vec<String>>()
        .join(",")
}

/// How `--secure` nodes authenticate and authorize: a client certificate (the admin one is
/// `User:admin`) or a password, ACLs on, `admin` a superuser.
const SECURE_AUTH_FLAGS: [&str; 6] = [
    "--authentication",
    "mtls,password",
    "--authorization",
    "on",
    "--superusers",
    "User:admin",
];
/// The server's variable for the cluster's first user.
const BOOTSTRAP_USER_ENV: &str = "STRATA_BOOTSTRAP_USER";
/// The admin's password, beside the certificates (mode 0600).
const ADMIN_PASSWORD_FILE: &str = "admin.password";

/// The password of `admin` for a `--secure` playground: read from `certs/admin.password`,
/// which is written with a random password the first time.
fn admin_password(certs: &Path) -> Result<String> {
    use base64::Engine as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = certs.join(ADMIN_PASSWORD_FILE);
    if let Ok(password) = std::fs::read_to_string(&path) {
        return Ok(password.trim().to_owned());
    }
    let mut random = [0u8; 18];
    File::open("/dev/urandom")
        .and_then(|mut source| source.read_exact(&mut random))
        .context("reading /dev/urandom for the admin password")?;
    let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| writeln!(file, "{password}"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(password)
}

/// Starts `count` nodes; with `certs` (as `strata tls init` writes them) each runs with TLS on
/// its listener and between nodes, authentication by client certificate or password, ACLs on,
/// and `admin` (password in `certs/admin.password`) as its first user and a superuser.
fn start_nodes(
    server_bin: &Path,
    data_dir: &Path,
    count: u32,
    certs: Option<&Path>,
) -> Result<Vec<Node>> {
    let ports = free_ports(count * 3)?;
    let listeners = |nth: usize| -> Vec<String> {
        ports[nth * count as usize..(nth + 1) * count as usize]
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    };
    let (addresses, kafka_addresses, http_addresses) = (listeners(0), listeners(1), listeners(2));
    let cluster = initial_cluster(&addresses);
    let mut nodes = Vec::new();
    for (index, address) in addresses.iter().enumerate() {
        let id = index as u32 + 1;
        let node_dir = data_dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&node_dir)
            .with_context(|| format!("creating {}", node_dir.display()))?;
        let log = data_dir.join(format!("node-{id}.log"));
        let output = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(server_bin);
        command
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(address)
            .arg("--data-dir")
            .arg(&node_dir)
            .arg("--kafka-listen")
            .arg(&kafka_addresses[index])
            .arg("--http-listen")
            .arg(&http_addresses[index])
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        if count > 1 {
            command.arg("--initial-cluster").arg(&cluster);
        }
        if let Some(certs) = certs {
            let cert = certs.join(format!("node-{id}.pem"));
            let key = certs.join(format!("node-{id}.key"));
            let ca = certs.join("ca.pem");
            command
                .arg("--tls-cert")
                .arg(&cert)
                .arg("--tls-key")
                .arg(&key)
                .arg("--tls-client-ca")
                .arg(&ca)
                .arg("--peer-tls-cert")
                .arg(&cert)
                .arg("--peer-tls-key")
                .arg(&key)
                .arg("--peer-ca")
                .arg(&ca)
                .args(SECURE_AUTH_FLAGS)
                .env(
                    BOOTSTRAP_USER_ENV,
                    format!("admin:{}", admin_password(certs)?),
                );
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                stop_nodes(&mut nodes);
                return Err(error).with_context(|| {
                    format!(
                        "starting {} (give its path with --server-bin)",
                        server_bin.display()
                    )
                });
            }
        };
        println!(
            "node {id}: {address}, Kafka {}, pid {}",
            kafka_addresses[index],
            child.id()
        );
        nodes.push(Node {
            id,
            address: address.clone(),
            kafka_address: kafka_addresses[index].clone(),
            http_address: http_addresses[index].clone(),
            log,
            child,
            exited: false,
        });
    }
    Ok(nodes)
}

/// Polls every node's `ClusterInfo` until each answers, lists every node alive and names a
/// controller leader; fails at `timeout`, or at once when a server exits.
async fn wait_healthy(
    nodes: &mut [Node],
    brokers: &str,
    timeout: Duration,
    tls: Option<ClientTls>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let config = ClientConfig {
        connect_timeout: HEALTH_REQUEST_TIMEOUT,
        request_timeout: HEALTH_REQUEST_TIMEOUT,
        tls,
        ..ClientConfig::default()
    };
    let mut client: Option<Client> = None;
    let mut last = String::from("no node answered yet");
    loop {
        for node in nodes.iter_mut() {
            if let Some(status) = node.child.try_wait()? {
                node.exited = true;
                bail!("node {} exited ({status})", node.id);
            }
        }
        if client.is_none() {
            match Client::connect_with(brokers, config.clone()).await {
                Ok(connected) => client = Some(connected),
                Err(error) => last = error.to_string(),
            }
        }
        if let Some(client) = &client {
            match health(client, nodes).await {
                // A secure playground is ready once its first user exists too.
                Ok(()) if config.tls.is_none() => return Ok(()),
                Ok(()) => match client.admin().list_users().await {
                    Ok(users) if users.iter().any(|user| user.name == "admin") => return Ok(()),
                    Ok(_) => last = "the user admin is not created yet".to_string(),
                    Err(error) => last = format!("listing users: {error}"),
                },
                Err(reason) => last = reason,
            }
        }
        if Instant::now() >= deadline {
            bail!("not healthy within {timeout:?}: {last}");
        }
        tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
    }
}

/// Whether the cluster is whole: every node answers and knows every node and the same
/// controller leader, and that leader hears from every node (a follower hears only from the
/// nodes it shares raft groups with, so only the leader's `alive` says something about all).
/// The reason when not.
async fn health(client: &Client, nodes: &[Node]) -> Result<(), String> {
    let views = client.admin().cluster_views().await;
    let by_address: HashMap<&str, &strata_client::NodeView> = views
        .iter()
        .map(|view| (view.address.as_str(), view))
        .collect();
    let mut leaders = Vec::new();
    for node in nodes {
        let Some(view) = by_address.get(node.address.as_str()) else {
            return Err(format!("node {} was not asked", node.id));
        };
        let info = view
            .info
            .as_ref()
            .map_err(|error| format!("node {}: {error}", node.id))?;
        if info.nodes.len() != nodes.len() {
            return Err(format!("node {} knows {} nodes", node.id, info.nodes.len()));
        }
        if info.controller_leader_node_id == 0 {
            return Err(format!("node {} knows no controller leader", node.id));
        }
        leaders.push((node.id, info));
    }
    let leader = leaders[0].1.controller_leader_node_id;
    if let Some((id, other)) = leaders
        .iter()
        .find(|(_, info)| info.controller_leader_node_id != leader)
    {
        return Err(format!(
            "nodes disagree on the controller leader: {leader}, and {} for node {id}",
            other.controller_leader_node_id
        ));
    }
    let (_, leader_view) = leaders
        .iter()
        .find(|(id, _)| u64::from(*id) == leader)
        .ok_or_else(|| format!("the controller leader {leader} is not a playground node"))?;
    if let Some(down) = leader_view.nodes.iter().find(|other| !other.alive) {
        return Err(format!(
            "the controller leader has not heard from node {}",
            down.node_id
        ));
    }
    Ok(())
}

/// Creates a replicated topic (or reuses it), produces a few keyed records and reads them
/// back from their partitions' leaders.
async fn demo(brokers: &str, replication_factor: u32, tls: Option<ClientTls>) -> Result<()> {
    let config = ClientConfig {
        tls,
        ..ClientConfig::default()
    };
    let client = Client::connect_with(brokers, config).await?;
    let admin = client.admin();
    match admin
        .create_topic(DEMO_TOPIC, 3, replication_factor, TopicConfig::default())
        .await
    {
        Ok(_) => println!(
            "created topic {DEMO_TOPIC}: 3 partitions, replication factor {replication_factor}"
        ),
        Err(error) if error.code() == Some(ErrorCode::TopicAlreadyExists) => {
            println!("topic {DEMO_TOPIC} exists already");
        }
        Err(error) => return Err(error).context("creating the demo topic"),
    }
    let producer = client.producer(ProducerConfig::default())?;
    let mut deliveries = Vec::new();
    for i in 0..DEMO_RECORDS {
        let record =
            ProducerRecord::new(DEMO_TOPIC, format!("hello {i}")).key(format!("user-{}", i % 4));
        deliveries.push(producer.send(record).await.context("producing")?);
    }
    // Per partition: the first offset produced and how many records.
    let mut produced: HashMap<u32, (u64, u64)> = HashMap::new();
    for delivery in deliveries {
        let stored = delivery.await.context("delivering")?;
        let entry = produced
            .entry(stored.partition)
            .or_insert((stored.offset, 0));
        entry.0 = entry.0.min(stored.offset);
        entry.1 += 1;
    }
    producer.close().await?;
    println!("produced {DEMO_RECORDS} records");
    let mut partitions: Vec<(u32, (u64, u64))> = produced.into_iter().collect();
    partitions.sort_unstable();
    let mut consumed = 0;
    for (partition, (first, count)) in partitions {
        let mut consumer = client
            .subscribe(
                DEMO_TOPIC,
                partition,
                StartFrom::Offset(first),
                ConsumerConfig::default(),
            )
            .await
            .context("subscribing")?;
        for _ in 0..count {
            let record = tokio::time::timeout(Duration::from_secs(30), consumer.next())
                .await
                .map_err(|_| Error::Timeout { after_ms: 30_000 })?
                .context("consuming")?
                .context("the subscription ended")?;
            let value = record.value.as_deref().unwrap_or_default();
            println!(
                "consumed partition {partition} offset {}: {}",
                record.offset,
                String::from_utf8_lossy(value)
            );
            consumed += 1;
        }
    }
    println!("consumed {consumed} records");
    Ok(())
}

/// The playground's Ctrl-C (SIGINT) and SIGTERM handlers, installed once.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the Ctrl-C handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }
}

/// Runs until Ctrl-C or SIGTERM (also one received before), saying when a node exits on its
/// own.
async fn wait_for_stop(nodes: &mut [Node], mut stop: StopSignals) -> Result<ExitCode> {
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.interrupt.recv() => break,
            _ = stop.terminate.recv() => break,
            _ = check.tick() => {
                for node in nodes.iter_mut().filter(|node| !node.exited) {
                    if let Some(status) = node.child.try_wait()? {
                        node.exited = true;
                        println!("node {} exited ({status}); see {}", node.id, node.log.display());
                    }
                }
            }
        }
    }
    println!("stopping the cluster");
    Ok(ExitCode::SUCCESS)
}

unsafe extern "C" {
    /// kill(2): the standard library can send only SIGKILL.
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

const SIGTERM: i32 = 15;

/// SIGTERM to every running node, then waits for all of them, up to [`STOP_TIMEOUT`] in all;
/// those still running then get SIGKILL.
fn stop_nodes(nodes: &mut [Node]) {
    for node in nodes.iter_mut() {
        if node.exited || matches!(node.child.try_wait(), Ok(Some(_))) {
            node.exited = true;
            continue;
        }
        let pid = i32::try_from(node.child.id()).expect("pids fit in i32");
        // SAFETY: kill(2) on our own child, which has not been waited for yet, so its pid
        // cannot have been reused.
        unsafe { libc_kill(pid, SIGTERM) };
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline && nodes.iter().any(|node| !node.exited) {
        for node in nodes.iter_mut().filter(|node| !node.exited) {
            if matches!(node.child.try_wait(), Ok(Some(_)) | Err(_)) {
                node.exited = true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for node in nodes.iter_mut().filter(|node| !node.exited) {
        eprintln!(
            "strata: node {} did not stop within {STOP_TIMEOUT:?}: killing it",
            node.id
        );
        let _ = node.child.kill();
        let _ = node.child.wait();
        node.exited = true;
    }
}

/// The last [`LOG_TAIL_BYTES`] of a node's log.
fn log_tail(path: &Path) -> String {
    let mut tail = String::new();
    let read = File::open(path).and_then(|mut file| {
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        tail = String::from_utf8_lossy(&bytes).into_owned();
        Ok(())
    });
    match read {
        Ok(()) if tail.is_empty() => "(empty)".to_owned(),
        Ok(()) => tail,
        Err(error) => format!("(cannot read: {error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The initial-cluster list numbers nodes from 1 in address order.
    #[test]
    fn initial_cluster_list() {
        let addresses = ["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()];
        assert_eq!(initial_cluster(&addresses), "1=127.0.0.1:1,2=127.0.0.1:2");
    }

    /// Free ports are distinct and nonzero.
    #[test]
    fn free_ports_differ() {
        let mut ports = free_ports(5).expect("ports");
        assert!(ports.iter().all(|port| *port != 0));
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 5);
    }

    /// A given server binary wins; otherwise a name or path ending in strata-server.
    #[test]
    fn server_binary_choice() {
        assert_eq!(
            server_binary(Some(Path::new("/opt/s"))),
            PathBuf::from("/opt/s")
        );
        assert!(server_binary(None).ends_with("strata-server"));
    }
}
