//! `strata log dump` and `strata log verify`: offline views of a partition directory, or of
//! every partition directory below a node's data directory or a topic's directory (each
//! headed by its path, then a total). A directory with no partition at or below it is refused
//! with a hint, so a wrong path never reads as an empty, healthy log.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use strata_server::storage::inspect::{self, BatchReport, Event, Summary};

use crate::output::count_text;

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
    let partitions =
        inspect::partition_dirs(dir).with_context(|| format!("cannot search {}", dir.display()))?;
    if partitions.is_empty() {
        bail!(
            "no partition directory at or below {} (searched {} levels down): a partition \
             directory holds segment files named like 00000000000000000000.log; a node's are \
             DATA_DIR/topics/ID-TOPIC/PARTITION, e.g. DATA_DIR/topics/1-orders/00000",
            dir.display(),
            inspect::SEARCH_DEPTH_MAX
        );
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if let [only] = partitions.as_slice()
        && only == dir
    {
        return walk_partition(&mut out, dir, print_batches);
    }
    let mut total = Summary::default();
    for partition in &partitions {
        writeln!(out, "== {}", partition.display())?;
        let summary = walk_partition(&mut out, partition, print_batches)?;
        total.segments += summary.segments;
        total.batches += summary.batches;
        total.problems += summary.problems;
    }
    writeln!(
        out,
        "total: {}, {}, {}, {}",
        count_text(partitions.len() as u64, "partition directory"),
        count_text(total.segments as u64, "segment"),
        count_text(total.batches, "batch"),
        count_text(total.problems as u64, "problem")
    )?;
    out.flush()?;
    Ok(total)
}

/// Inspects one partition directory, printing what `print_batches` asks and a summary line.
fn walk_partition(out: &mut impl Write, dir: &Path, print_batches: bool) -> Result<Summary> {
    let mut write_error = None;
    let summary = inspect::inspect(dir, |event| {
        if write_error.is_some() {
            return;
        }
        if let Err(error) = print_event(out, &event, print_batches) {
            write_error = Some(error);
        }
    })
    .with_context(|| format!("cannot inspect {}", dir.display()))?;
    if let Some(error) = write_error {
        return Err(error).context("cannot write to stdout");
    }
    writeln!(
        out,
        "{}, {}, {}",
        count_text(summary.segments as u64, "segment"),
        count_text(summary.batches, "batch"),
        count_text(summary.problems as u64, "problem")
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
