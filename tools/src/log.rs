//! `strata log dump` and `strata log verify`: offline views of a partition directory.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use strata_server::storage::inspect::{self, BatchReport, Event, Summary};

/// Prints the checkpoint, each segment and each batch, and any problem where it is found.
/// Exits 0 whatever it finds (use `verify` to check); 2 when the directory cannot be read.
pub fn dump(dir: &Path) -> Result<ExitCode> {
    walk(dir, true)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints only problems and a summary; exits 1 when there is any problem.
pub fn verify(dir: &Path) -> Result<ExitCode> {
    let summary = walk(dir, false)?;
    Ok(if summary.problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn walk(dir: &Path, print_batches: bool) -> Result<Summary> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut write_error = None;
    let summary = inspect::inspect(dir, |event| {
        if write_error.is_some() {
            return;
        }
        if let Err(error) = print_event(&mut out, &event, print_batches) {
            write_error = Some(error);
        }
    })
    .with_context(|| format!("cannot inspect {}", dir.display()))?;
    if let Some(error) = write_error {
        return Err(error).context("cannot write to stdout");
    }
    writeln!(
        out,
        "{} segments, {} batches, {} problems",
        summary.segments, summary.batches, summary.problems
    )?;
    out.flush()?;
    Ok(summary)
}

fn print_event(out: &mut impl Write, event: &Event<'_>, print_batches: bool) -> io::Result<()> {
    match event {
        Event::Checkpoint {
            start,
            reset_pending,
        } if print_batches => writeln!(
            out,
            "log start: offset {} after raft index {} (term {}){}",
            start.start_offset,
            start.prev_raft_index,
            start.prev_term,
            if *reset_pending {
                ", reset pending"
            } else {
                ""
            }
        ),
        Event::Segment {
            log_path,
            base_offset,
            base_raft_index,
            size_bytes,
            index_entries,
        } if print_batches => writeln!(
            out,
            "segment {}: base offset {base_offset}, base raft index {base_raft_index}, \
             {size_bytes} bytes, {index_entries} index entries",
            log_path.display()
        ),
        Event::Batch(report) if print_batches => print_batch(out, report),
        Event::Problem {
            path,
            position,
            what,
        } => writeln!(
            out,
            "PROBLEM {} at position {position}: {what}",
            path.display()
        ),
        Event::Note { path, what } => writeln!(out, "note {}: {what}", path.display()),
        _ => Ok(()),
    }
}

fn print_batch(out: &mut impl Write, report: &BatchReport) -> io::Result<()> {
    let header = &report.header;
    let offsets = if header.is_control() {
        format!("control at offset {}", header.base_offset)
    } else {
        format!(
            "offsets {}..={}",
            header.base_offset,
            header.base_offset + i64::from(header.last_offset_delta)
        )
    };
    let compression = report.compression.map_or_else(
        || "unknown".to_string(),
        |c| format!("{c:?}").to_lowercase(),
    );
    writeln!(
        out,
        "  position {} raft index {} term {}: {offsets}, {} records, {} bytes, \
         timestamps {}..{}, compression {compression}, producer {} epoch {} sequence {}, crc {}, \
         records {}",
        report.position,
        report.raft_index,
        header.partition_leader_epoch,
        header.record_count,
        header.total_bytes(),
        header.first_timestamp,
        header.max_timestamp,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        if report.crc_ok { "ok" } else { "MISMATCH" },
        match (report.crc_ok, report.records_ok) {
            (false, _) => "unchecked",
            (true, true) => "ok",
            (true, false) => "UNDECODABLE",
        }
    )
}
