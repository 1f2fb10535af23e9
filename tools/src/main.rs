//! `strata`: the command-line tool of Strata.
//!
//! Layout:
//! - `main.rs`: argument parsing and dispatch.
//! - `log.rs`: `strata log dump|verify DIR`, offline inspection of a partition directory.
//!
//! Errors print as one line on stderr with a non-zero exit code.

mod log;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a replicated, partitioned event log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Log(LogCommand::Dump { dir }) => log::dump(&dir),
        Command::Log(LogCommand::Verify { dir }) => log::verify(&dir),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("strata: {error:#}");
            ExitCode::from(2)
        }
    }
}
