//! `strata`: the command-line tool of Strata.
//!
//! Layout:
//! - `main.rs`: argument parsing and dispatch.
//! - `output.rs`: output formats, JSON and time rendering, exit codes.
//! - `topic.rs`: `strata topic create|list|describe|delete|alter|add-partitions`.
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
//! - `log.rs`: `strata log dump|verify DIR`, offline inspection of partition directories.
//! - `tls.rs`: `strata tls init DIR`: a CA, node certificates and an admin client certificate.
//! - `units.rs`: sizes (`1GiB`) and durations (`7d`) as every flag that takes one reads them.
//!
//! Every online command takes the broker list (`--brokers` or `STRATA_BROKERS`), any nodes of
//! the cluster; the client routes each request to the node that serves it (see
//! `strata_client::Client`). With `--user NAME` (or `STRATA_USER`) it sends a user name and
//! password, the password from `STRATA_PASSWORD` or the first line of standard input
//! (`--password-stdin`): never from an argument, which other users could read in `ps`.
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
mod tls;
mod topic;
mod units;
mod user;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use strata_client::{BROKERS_ENV, Client, ClientConfig, Credentials, DEFAULT_BROKERS};

use crate::output::Format;

/// The help section of the flags every command takes: apart, so each command's own options
/// stand out in its help.
const GLOBAL_OPTIONS: &str = "Global options";

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
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS, env = BROKERS_ENV, default_value = DEFAULT_BROKERS)]
    brokers: String,
    /// How long to wait for the broker's reply to each request, e.g. 30s or 500ms.
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Output format: text for people, json for programs (`log` prints text only).
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Connect with TLS, trusting the brokers' certificates signed by this CA (PEM).
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS, env = "STRATA_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for brokers that require one (mutual TLS), with --tls-key.
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS, env = "STRATA_TLS_CERT", value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true, help_heading = GLOBAL_OPTIONS,
        env = "STRATA_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// User name for brokers that require a password; the password comes from
    /// STRATA_PASSWORD or, with --password-stdin, from the first line of standard input.
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS, env = "STRATA_USER")]
    user: Option<String>,
    /// Read the password of --user from the first line of standard input (the rest of the
    /// input is left for the command, e.g. `produce`).
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS)]
    password_stdin: bool,
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
    /// Inspect partition directories on disk (read-only).
    #[command(subcommand)]
    Log(LogCommand),
    /// Certificates for a TLS cluster.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
}

#[derive(Subcommand)]
enum LogCommand {
    /// Print every batch: offsets, raft index, term, timestamps, size, record count, CRC status.
    Dump {
        /// A partition directory (holding `*.log`, `*.index`, `log-start.checkpoint`), or a
        /// directory with partition directories below it (a node's data directory, a topic's
        /// directory): each is dumped in turn.
        dir: PathBuf,
    },
    /// Check every batch and index entry against the log; exit 1 on any inconsistency.
    Verify {
        /// A partition directory, or a directory with partition directories below it (a
        /// node's data directory, a topic's directory): each is verified.
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
        Command::Tls(command) => tls::run(command),
        command => {
            let password = std::env::var(PASSWORD_ENV).ok();
            // A statement of its own: the stdin lock is released before the command runs (a
            // `produce` reads the rest of stdin).
            let credentials = credentials(
                cli.user,
                cli.password_stdin,
                password,
                &mut std::io::stdin().lock(),
            );
            credentials
                .and_then(|credentials| {
                    client_tls(&cli.tls_ca, &cli.tls_cert, &cli.tls_key)
                        .map(|tls| (credentials, tls))
                })
                .and_then(|(credentials, tls)| {
                    let config = ClientConfig {
                        request_timeout: cli.timeout,
                        tls,
                        credentials,
                        ..ClientConfig::default()
                    };
                    run_online(command, &cli.brokers, config, cli.format)
                })
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

/// The client's TLS settings from `--tls-ca`, `--tls-cert` and `--tls-key`.
fn client_tls(
    ca: &Option<PathBuf>,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
) -> Result<Option<strata_client::ClientTls>> {
    let Some(ca) = ca else {
        if cert.is_some() || key.is_some() {
            anyhow::bail!(
                "--tls-cert and --tls-key need --tls-ca (the CA of the brokers' certificates)"
            );
        }
        return Ok(None);
    };
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    Ok(Some(strata_client::ClientTls::from_files(ca, identity)?))
}

/// Longest password line read from standard input.
const PASSWORD_LINE_BYTES_MAX: u64 = 64 << 10;

/// The environment variable the password of `--user` is read from.
const PASSWORD_ENV: &str = "STRATA_PASSWORD";

/// The credentials the global flags ask for: `user` with the first line of `stdin` when
/// `password_stdin`, else with `env_password` (`STRATA_PASSWORD`).
///
/// # Errors
/// A password source without a user, or a user without a password source.
fn credentials(
    user: Option<String>,
    password_stdin: bool,
    env_password: Option<String>,
    stdin: &mut impl BufRead,
) -> Result<Option<Credentials>> {
    let Some(user) = user else {
        if password_stdin {
            bail!("--password-stdin needs --user NAME (or STRATA_USER)");
        }
        return Ok(None);
    };
    let password = if password_stdin {
        let mut line = String::new();
        // Bounded: a first line without its newline is not read whole into memory.
        std::io::Read::take(&mut *stdin, PASSWORD_LINE_BYTES_MAX).read_line(&mut line)?;
        let password = line.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            bail!(
                "--password-stdin: the first line of standard input is empty; it must be the password of {user:?}"
            );
        }
        password
    } else {
        match env_password {
            Some(password) if !password.is_empty() => password,
            _ => bail!(
                "--user {user} needs a password: set {PASSWORD_ENV} or pass --password-stdin \
                 (the first line of standard input); there is no --password flag, since \
                 arguments show in `ps`"
            ),
        }
    };
    Ok(Some(Credentials { user, password }))
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
            Command::Log(_) | Command::Playground(_) | Command::Tls(_) => {
                unreachable!("log, playground and tls commands connect on their own, if at all")
            }
        }?;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_environment_or_the_first_line_of_stdin() {
        let mut empty = std::io::Cursor::new(Vec::new());
        assert_eq!(
            credentials(None, false, Some("x".into()), &mut empty).expect("none asked"),
            None
        );
        let from_env = credentials(
            Some("alice".into()),
            false,
            Some("s3cret".into()),
            &mut empty,
        )
        .expect("env password");
        assert_eq!(
            from_env,
            Some(Credentials {
                user: "alice".into(),
                password: "s3cret".into()
            })
        );
        assert!(!format!("{from_env:?}").contains("s3cret"), "Debug redacts");
        let mut input = std::io::Cursor::new(b"pw:with colon\r\nrecord 1\n".to_vec());
        let from_stdin = credentials(
            Some("alice".into()),
            true,
            Some("ignored".into()),
            &mut input,
        )
        .expect("stdin password")
        .expect("credentials");
        assert_eq!(from_stdin.password, "pw:with colon");
        let mut rest = String::new();
        input.read_line(&mut rest).expect("read");
        assert_eq!(
            rest, "record 1\n",
            "the rest of stdin is left for the command"
        );

        let error = credentials(Some("alice".into()), false, None, &mut empty)
            .expect_err("no password source");
        assert!(error.to_string().contains("STRATA_PASSWORD"), "{error}");
        let error = credentials(None, true, None, &mut empty).expect_err("no user");
        assert!(error.to_string().contains("--user"), "{error}");
        let error =
            credentials(Some("alice".into()), true, None, &mut empty).expect_err("empty stdin");
        assert!(error.to_string().contains("empty"), "{error}");
    }
}
