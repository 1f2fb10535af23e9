//! Read-only inspection of a partition directory, for `strata log dump` and `strata log verify`
//! (Kafka's kafka-dump-log). Nothing here writes: unlike [`PartitionLog::open`]
//! (super::PartitionLog::open), it neither truncates a torn tail nor rebuilds an index; it
//! reports what it finds.
//!
//! The walk streams: each batch, index entry and problem is handed to a visitor as it is found,
//! so memory stays flat however large the segments are. Every batch's records are decoded
//! (compressed ones through a bounded buffer), so a batch a consumer could not read is reported
//! with its file and position.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::batch::{
    BatchHeader, Compression, DECOMPRESSED_BYTES_MAX, HEADER_BYTES, validate_batch,
};
use super::checkpoint::{self, Checkpoint, LogStart};
use super::error::{IoContext, Result};
use super::files::{DELETED_SUFFIX, TMP_SUFFIX};
use super::index::{ENTRY_BYTES, IndexEntry};
use super::segment;

/// One stored batch as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub position: u64,
    pub raft_index: u64,
    pub header: BatchHeader,
    pub compression: Option<Compression>,
    pub crc_ok: bool,
    /// Every record decodes and they number as the header says (checked only when the CRC
    /// matches; compressed records are streamed through a bounded buffer).
    pub records_ok: bool,
}

/// What the walk reports, in file order.
#[derive(Debug)]
pub enum Event<'a> {
    /// The checkpoint in use (the default when the file is missing).
    Checkpoint {
        start: LogStart,
        reset_pending: bool,
    },
    /// A segment begins.
    Segment {
        log_path: &'a Path,
        base_offset: u64,
        base_raft_index: u64,
        size_bytes: u64,
        index_entries: usize,
    },
    Batch(&'a BatchReport),
    /// Something that recovery would have to repair, or that is damage.
    Problem {
        path: &'a Path,
        position: u64,
        what: &'a str,
    },
    /// Harmless leftovers that the next open removes.
    Note {
        path: &'a Path,
        what: &'a str,
    },
}

/// Totals of a walk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub segments: usize,
    pub batches: u64,
    pub problems: usize,
}

/// How deep below a directory [`partition_dirs`] looks: a node's data directory holds
/// `topics/{id}-{name}/{partition:05}/`, three levels.
pub const SEARCH_DEPTH_MAX: usize = 4;

/// Whether `dir` is a partition directory: it holds a segment (`{base_offset:020}.log`) or a
/// log-start checkpoint.
///
/// # Errors
/// When `dir` cannot be listed.
pub fn is_partition_dir(dir: &Path) -> Result<bool> {
    for entry in fs::read_dir(dir).context("list", dir)? {
        let name = entry.context("list", dir)?.file_name();
        let name = name.to_string_lossy();
        if name == checkpoint::FILE_NAME || segment::parse_log_file_name(&name).is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The partition directories at or below `root` (at most [`SEARCH_DEPTH_MAX`] levels down),
/// sorted by path: `root` alone when it is one, else every one found below it (a node's data
/// directory, a topic's directory). Symbolic links are not followed.
///
/// # Errors
/// When a directory cannot be listed.
pub fn partition_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = pending.pop() {
        if is_partition_dir(&dir)? {
            found.push(dir);
            continue;
        }
        if depth == SEARCH_DEPTH_MAX {
            continue;
        }
        for entry in fs::read_dir(&dir).context("list", &dir)? {
            let entry = entry.context("list", &dir)?;
            if entry.file_type().context("list", &dir)?.is_dir() {
                pending.push((entry.path(), depth + 1));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Walks the partition directory `dir` and reports through `visit`.
///
/// # Errors
/// Only when the directory or a file cannot be read at all; damage is reported as
/// [`Event::Problem`], never as an error.
pub fn inspect(dir: &Path, mut visit: impl FnMut(Event<'_>)) -> Result<Summary> {
    let mut summary = Summary::default();

    let mut bases = Vec::new();
    let mut notes = Vec::new();
    for entry in fs::read_dir(dir).context("list", dir)? {
        let entry = entry.context("list", dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(DELETED_SUFFIX) || name.ends_with(TMP_SUFFIX) {
            notes.push(entry.path());
        } else if let Some(base) = segment::parse_log_file_name(&name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    notes.sort();

    // Problems found while a batch is examined wait here and are reported before the batch.
    let mut problems: Vec<(PathBuf, u64, String)> = Vec::new();
    let checkpoint = match Checkpoint::read(dir) {
        Ok(checkpoint) => checkpoint,
        Err(error) => {
            problems.push((dir.join(checkpoint::FILE_NAME), 0, error.to_string()));
            Checkpoint::default()
        }
    };
    visit(Event::Checkpoint {
        start: checkpoint.start,
        reset_pending: checkpoint.reset_pending,
    });
    for path in &notes {
        visit(Event::Note {
            path,
            what: "leftover of an interrupted removal or replace; the next open removes it",
        });
    }
    if checkpoint.reset_pending {
        problems.push((
            dir.join(checkpoint::FILE_NAME),
            0,
            "a reset is pending: the next open removes every segment".to_string(),
        ));
    }

    let mut expected_offset = checkpoint.start.start_offset;
    let mut raft_index = checkpoint.start.prev_raft_index + 1;
    let mut last_term = checkpoint.start.prev_term;
    for (at, base) in bases.iter().enumerate() {
        let log_path = dir.join(segment::log_file_name(*base));
        let index_path = dir.join(segment::index_file_name(*base));
        let is_last = at + 1 == bases.len();
        if *base != expected_offset {
            problems.push((
                log_path.clone(),
                0,
                format!(
                    "segment starts at offset {base}, the log before it ends at {expected_offset}"
                ),
            ));
            expected_offset = *base;
        }
        let log = map_read_only(&log_path)?;
        let mut log_bytes: &[u8] = log.as_deref().unwrap_or(&[]);
        if is_last {
            // The active segment ends in zeros written ahead of its batches (see
            // `Segment::write_ahead`): not part of the log, and not damage.
            log_bytes = &log_bytes[..data_end(log_bytes)];
        }
        let index = match fs::metadata(&index_path) {
            Ok(_) => map_read_only(&index_path)?,
            Err(_) => {
                problems.push((index_path.clone(), 0, "index file is missing".to_string()));
                None
            }
        };
        let index_bytes: &[u8] = index.as_deref().unwrap_or(&[]);
        if !index_bytes.len().is_multiple_of(ENTRY_BYTES) {
            problems.push((
                index_path.clone(),
                0,
                format!(
                    "index length {} is not a whole number of entries",
                    index_bytes.len()
                ),
            ));
        }
        summary.segments += 1;
        flush(&mut problems, &mut summary, &mut visit);
        visit(Event::Segment {
            log_path: &log_path,
            base_offset: *base,
            base_raft_index: raft_index,
            size_bytes: log_bytes.len() as u64,
            index_entries: index_bytes.len() / ENTRY_BYTES,
        });

        let mut entries = index_bytes
            .chunks_exact(ENTRY_BYTES)
            .map(|chunk| IndexEntry::decode(chunk.try_into().expect("exact chunk")))
            .enumerate()
            .peekable();
        let mut previous_entry: Option<IndexEntry> = None;
        let segment_raft_base = raft_index;
        let mut max_timestamp = i64::MIN;
        let mut position = 0u64;
        while (position as usize) < log_bytes.len() {
            let rest = &log_bytes[position as usize..];
            let header = match BatchHeader::parse(rest) {
                Ok(header) if header.total_bytes() <= rest.len() => header,
                Ok(header) => {
                    problems.push((
                        log_path.clone(),
                        position,
                        format!(
                            "batch of {} bytes runs past the end of the file{}",
                            header.total_bytes(),
                            torn(is_last)
                        ),
                    ));
                    break;
                }
                Err(error) => {
                    problems.push((
                        log_path.clone(),
                        position,
                        format!("{error}{}", torn(is_last)),
                    ));
                    break;
                }
            };
            // Index entries at or before this batch.
            while let Some((number, entry)) =
                entries.next_if(|(_, e)| e.is_none_or(|e| u64::from(e.position) <= position))
            {
                let expected = IndexEntry {
                    relative_offset: expected_offset.wrapping_sub(*base) as u32,
                    relative_raft_index: raft_index.wrapping_sub(segment_raft_base) as u32,
                    position: position as u32,
                    max_timestamp_before: max_timestamp,
                };
                match entry {
                    None => problems.push((index_path.clone(), 0, format!("entry {number}: CRC mismatch"))),
                    Some(entry) if entry != expected => problems.push((
                        index_path.clone(),
                        0,
                        format!("entry {number}: {entry:?} does not match the log, expected {expected:?}"),
                    )),
                    Some(entry) if !entry.follows(previous_entry.as_ref()) => problems.push((
                        index_path.clone(),
                        0,
                        format!("entry {number}: does not follow the entry before it"),
                    )),
                    Some(entry) => previous_entry = Some(entry),
                }
            }
            let stored = &rest[..header.total_bytes()];
            let crc_ok = header.check_crc(stored).is_ok();
            // Decode every batch a consumer could be served, compressed or not: a batch whose
            // CRC matches but whose records do not decode is damage a reader would hit.
            let records = if crc_ok {
                validate_batch(stored, DECOMPRESSED_BYTES_MAX).map(|_| ())
            } else {
                Ok(())
            };
            if let Err(error) = &records {
                problems.push((
                    log_path.clone(),
                    position,
                    format!("batch does not decode: {error}"),
                ));
            }
            let report = BatchReport {
                position,
                raft_index,
                header,
                compression: header.compression().ok(),
                crc_ok,
                records_ok: crc_ok && records.is_ok(),
            };
            if header.base_offset != expected_offset as i64 {
                problems.push((
                    log_path.clone(),
                    position,
                    format!(
                        "base offset {} where {expected_offset} was expected",
                        header.base_offset
                    ),
                ));
            }
            if (header.partition_leader_epoch as i64) < last_term as i64 {
                problems.push((
                    log_path.clone(),
                    position,
                    format!(
                        "term {} after term {last_term}",
                        header.partition_leader_epoch
                    ),
                ));
            }
            if !crc_ok {
                problems.push((
                    log_path.clone(),
                    position,
                    format!("CRC-32C mismatch{}", torn(is_last)),
                ));
            }
            summary.batches += 1;
            flush(&mut problems, &mut summary, &mut visit);
            visit(Event::Batch(&report));
            expected_offset =
                (header.base_offset.max(0) as u64).saturating_add(header.offset_count());
            raft_index += 1;
            last_term = header.partition_leader_epoch.max(0) as u64;
            if !header.is_control() {
                max_timestamp = max_timestamp.max(header.max_timestamp);
            }
            position += header.total_bytes() as u64;
            if position as usize + HEADER_BYTES > log_bytes.len()
                && (position as usize) < log_bytes.len()
            {
                problems.push((
                    log_path.clone(),
                    position,
                    format!(
                        "{} trailing bytes are not a whole batch header{}",
                        log_bytes.len() - position as usize,
                        torn(is_last)
                    ),
                ));
                break;
            }
        }
        for (number, _) in entries {
            problems.push((
                index_path.clone(),
                0,
                format!("entry {number}: points past the last batch"),
            ));
        }
        flush(&mut problems, &mut summary, &mut visit);
    }
    flush(&mut problems, &mut summary, &mut visit);
    Ok(summary)
}

/// Where the batches of an active segment's log end: after the last whole batch when only
/// zeros follow it (space written ahead), else the whole file (whatever follows is reported).
fn data_end(log: &[u8]) -> usize {
    let mut position = 0;
    while let Ok(header) = BatchHeader::parse(&log[position..]) {
        let size = header.total_bytes();
        if size > log.len() - position {
            break;
        }
        position += size;
    }
    if log[position..].iter().all(|byte| *byte == 0) {
        position
    } else {
        log.len()
    }
}

fn torn(is_last: bool) -> &'static str {
    if is_last {
        " (a torn write: the next open truncates the log here)"
    } else {
        " (damage in a sealed segment: the next open fails)"
    }
}

fn flush(
    problems: &mut Vec<(PathBuf, u64, String)>,
    summary: &mut Summary,
    visit: &mut impl FnMut(Event<'_>),
) {
    for (path, position, what) in problems.drain(..) {
        summary.problems += 1;
        visit(Event::Problem {
            path: &path,
            position,
            what: &what,
        });
    }
}

/// Maps a whole file read-only; `None` for an empty file (which cannot be mapped).
fn map_read_only(path: &Path) -> Result<Option<Mmap>> {
    let file = File::open(path).context("open", path)?;
    if file.metadata().context("stat", path)?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: a read-only map of a file the tool only reads; a concurrent writer could change
    // bytes under it, which the walk tolerates (every read is bounds-checked).
    let map = unsafe { Mmap::map(&file) }.context("mmap", path)?;
    Ok(Some(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition directory is found as itself; below a node's or a topic's directory every
    /// one is found (sorted), and only those: other files and empty directories are not
    /// partitions, and nothing deeper than the limit is searched.
    #[test]
    fn partition_directories_are_found_below_a_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let touch = |path: &Path| {
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, b"").expect("write");
        };
        let topic = root.path().join("topics").join("1-orders");
        touch(&topic.join("00001").join("00000000000000000000.log"));
        touch(&topic.join("00000").join(checkpoint::FILE_NAME));
        touch(&root.path().join("node-1.log"));
        fs::create_dir_all(root.path().join("topics").join("2-empty").join("00000"))
            .expect("mkdir");
        let mut deep = root.path().to_path_buf();
        for level in 0..=SEARCH_DEPTH_MAX {
            deep.push(format!("d{level}"));
        }
        touch(&deep.join("00000000000000000000.log"));

        let expected = vec![topic.join("00000"), topic.join("00001")];
        assert_eq!(partition_dirs(root.path()).expect("search"), expected);
        assert_eq!(partition_dirs(&topic).expect("search"), expected);
        let partition = topic.join("00001");
        assert_eq!(
            partition_dirs(&partition).expect("search"),
            vec![partition.clone()]
        );
        assert!(is_partition_dir(&partition).expect("list"));
        assert!(!is_partition_dir(root.path()).expect("list"));
    }
}
