//! `strata`: the command-line tool of Strata.
//!
//! Layout:
//! - `main.rs`: argument parsing and dispatch.
//! - `output.rs`: output formats, JSON and time rendering, exit codes.
//! - `topic.rs`: `strata topic create|list|describe|delete|alter`.
//! - `produce.rs`: `strata produce TOPIC`, one record per stdin line.
//! - `consume.rs`: `strata consume TOPIC`, one or all partitions merged, or as a member of a
//!   consumer group (`--group`).
//! - `group.rs`: `strata group list|describe|reset-offsets|delete`, consumer groups and lag.
//! - `user.rs`: `strata user create|set-password|list|delete`, the cluster's users.
//! - `acl.rs`: `strata acl create|list|delete`, the cluster's ACLs.
//! - `cluster.rs`: `strata cluster info`: every node's view merged: nodes up or down, the
//!   controller leader, each partition's leader, replicas and in-sync replicas.
//! - `playground.rs`: `strata playground`: starts a local cluster of `strata-server`
//!   processes, prints how to use it, and stops it on Ctrl-C (or after `--run-demo`).
//! - `bench.rs`: `strata bench produce|consume`, throughput and latency.
//! - `log.rs`: `strata log dump|verify DIR`, offline inspection of a partition directory.
//!
//! Every online command takes the broker list (`--brokers` or `STRATA_BROKERS`), any nodes of
//! the cluster; the client routes each request to the node that serves it (see
//! `strata_client::Client`).
//!
//! Errors print as one line on stderr. Exit codes: 0 success; 1 when the broker refused the
//! request (the line names its error code) or `log verify` found a problem; 2 for usage
//! errors, unreachable brokers, transport failures and local I/O errors.

mod acl;
mod bench;
mod cluster;
mod consume;
mod group;
mod log;
mod output;
mod playground;
mod produce;
mod topic;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use strata_client::{BROKERS_ENV, Client, ClientConfig, DEFAULT_BROKERS};

use crate::output::Format;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a replicated, partitioned event log",
    after_help = "Exit codes: 0 success, 1 refused by the broker (or `log verify` found a \
                  problem), 2 usage, connection or local errors."
)]
struct Cli {
    /// Brokers to connect to: HOST:PORT[,HOST:PORT...], any nodes of the cluster; requests go
    /// to the node that leads what they ask for.
    #[arg(long, global = true, env = BROKERS_ENV, default_value = DEFAULT_BROKERS)]
    brokers: String,
    /// How long to wait for the broker's reply to each request, e.g. 30s or 500ms.
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Output format: text for people, json for programs (`log` prints text only).
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, list, describe, delete and reconfigure topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce one record per line of standard input.
    Produce(produce::ProduceArgs),
    /// Print the records of a topic.
    Consume(consume::ConsumeArgs),
    /// List, describe, reset and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Describe the cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Create, list, delete users and set their passwords.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Create, list and delete ACLs.
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// Measure produce or consume throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Start a local cluster of strata-server processes until Ctrl-C.
    Playground(playground::PlaygroundArgs),
    /// Inspect a partition directory on disk (read-only).
    #[command(subcommand)]
    Log(LogCommand),
}

#[derive(Subcommand)]
enum LogCommand {
    /// Print every batch: offsets, raft index, term, timestamps, size, record count, CRC status.
    Dump {
        /// The partition directory (holding `*.log`, `*.index`, `log-start.checkpoint`).
        dir: PathBuf,
    },
    /// Check every batch and index entry against the log; exit 1 on any inconsistency.
    Verify {
        /// The partition directory.
        dir: PathBuf,
    },
}

unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
}

/// Lets a closed pipe end the process quietly, as it does other Unix tools (`strata topic
/// list | head`): Rust ignores SIGPIPE, which makes printing to a closed pipe panic.
fn die_quietly_on_closed_pipe() {
    const SIGPIPE: i32 = 13;
    const SIG_DFL: usize = 0;
    // SAFETY: sets a signal's disposition to the default, before any thread starts.
    unsafe { signal(SIGPIPE, SIG_DFL) };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `consume` handles a closed pipe itself: it commits what it printed before it leaves.
    if !matches!(cli.command, Command::Consume(_)) {
        die_quietly_on_closed_pipe();
    }
    let result = match cli.command {
        Command::Log(LogCommand::Dump { dir }) => log::dump(&dir),
        Command::Log(LogCommand::Verify { dir }) => log::verify(&dir),
        Command::Playground(args) => playground::run(args),
        command => {
            let config = ClientConfig {
                request_timeout: cli.timeout,
                ..ClientConfig::default()
            };
            run_online(command, &cli.brokers, config, cli.format)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("strata: {error:#}");
            ExitCode::from(output::exit_code(&error))
        }
    }
}

/// Runs a command that talks to the cluster, on a runtime made for it.
fn run_online(
    command: Command,
    brokers: &str,
    config: ClientConfig,
    format: Format,
) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = Client::connect_with(brokers, config).await?;
        match command {
            Command::Topic(command) => topic::run(&client, command, format).await,
            Command::Produce(args) => produce::run(&client, args, format).await,
            Command::Consume(args) => consume::run(&client, args, format).await,
            Command::Group(command) => group::run(&client, command, format).await,
            Command::Cluster(command) => cluster::run(&client, command, format).await,
            Command::User(command) => user::run(&client, command, format).await,
            Command::Acl(command) => acl::run(&client, command, format).await,
            Command::Bench(command) => bench::run(&client, command, format).await,
            Command::Log(_) | Command::Playground(_) => {
                unreachable!("log and playground commands connect on their own, if at all")
            }
        }?;
        Ok(ExitCode::SUCCESS)
    })
}
