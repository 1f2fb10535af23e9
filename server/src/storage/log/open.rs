//! Opening a partition directory: removing what interrupted deletions left behind, checking
//! that the segments follow each other, and recovering each one (the last may end in a torn
//! write; a sealed one must be whole).

use std::fs;
use std::path::{Path, PathBuf};

use super::{LogConfig, PartitionLog};
use crate::storage::checkpoint::Checkpoint;
use crate::storage::error::{Error, IoContext, Result};
use crate::storage::files::{self, DELETED_SUFFIX, TMP_SUFFIX};
use crate::storage::segment::{self, INDEX_SUFFIX, LOG_SUFFIX, Recovery, Segment};

impl PartitionLog {
    /// Opens the log in `dir`, creating it when missing, and recovers it: leftovers of
    /// interrupted deletions are removed, sealed segments are checked (their indexes rebuilt
    /// when in doubt), and the torn tail of the last segment is cut off.
    ///
    /// # Errors
    /// An invalid config; I/O errors; [`Error::Corrupt`] for damage a crash cannot explain (a bad
    /// batch in a sealed segment, a damaged checkpoint, segments that do not follow each other).
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let faults = config.faults.clone();
        if !dir.exists() {
            fs::create_dir_all(&dir).context("create directory", &dir)?;
            if let Some(parent) = dir.parent() {
                files::sync_dir(parent, faults.as_deref())?;
            }
        }
        let (mut bases, index_bases) = list_segments(&dir)?;

        // An index without its log is left from an interrupted removal.
        let orphans: Vec<PathBuf> = index_bases
            .iter()
            .filter(|base| bases.binary_search(base).is_err())
            .map(|base| dir.join(segment::index_file_name(*base)))
            .collect();
        if !orphans.is_empty() {
            files::remove_files(&dir, &orphans, faults.as_deref())?;
        }

        let checkpoint = Checkpoint::read(&dir)?;
        let start = checkpoint.start;
        // A pending reset means every segment present predates it; segments below the start
        // offset were being removed by retention when the process stopped.
        let stale: Vec<u64> = if checkpoint.reset_pending {
            std::mem::take(&mut bases)
        } else {
            let keep_from = bases.partition_point(|base| *base < start.start_offset);
            bases.drain(..keep_from).collect()
        };
        if !stale.is_empty() {
            let paths = segment_paths(&dir, &stale);
            files::remove_files(&dir, &paths, faults.as_deref())?;
        }

        let mut log = Self {
            dir,
            config,
            start,
            segments: Vec::with_capacity(bases.len().max(1)),
            last_term: start.prev_term,
            failed: None,
        };
        if bases.is_empty() {
            let segment = log.new_segment(start.start_offset, start.prev_raft_index + 1)?;
            log.segments.push(segment);
        }
        if checkpoint.reset_pending {
            Checkpoint {
                start,
                reset_pending: false,
            }
            .write(&log.dir, faults.as_deref())?;
        }
        let mut next = (start.start_offset, start.prev_raft_index + 1);
        for (position, base) in bases.iter().enumerate() {
            if *base != next.0 {
                return Err(Error::Corrupt {
                    path: log.dir.join(segment::log_file_name(*base)),
                    position: 0,
                    reason: format!(
                        "segment starts at offset {base} but the log before it ends at offset {}",
                        next.0
                    ),
                });
            }
            let recovery = if position + 1 == bases.len() {
                Recovery::TruncateTornTail
            } else {
                Recovery::Strict
            };
            let segment = Segment::open(
                &log.dir,
                *base,
                next.1,
                log.config.capacity_bytes(),
                log.config.index_interval_bytes,
                recovery,
                faults.clone(),
            )?;
            // Terms never decrease; the leader epoch is outside the CRC, so check it across
            // segment boundaries too (inside a segment the walk does).
            let term_before = log
                .segments
                .iter()
                .rev()
                .find_map(Segment::last_term)
                .unwrap_or(start.prev_term);
            if let Some(first_term) = segment.first_term()?
                && first_term < term_before
            {
                return Err(Error::Corrupt {
                    path: segment.log_path().to_path_buf(),
                    position: 0,
                    reason: format!("batch term {first_term} after term {term_before}"),
                });
            }
            next = (segment.next_offset(), segment.next_raft_index());
            log.segments.push(segment);
        }
        log.last_term = log.term(log.last_raft_index())?;
        Ok(log)
    }
}

fn segment_paths(dir: &Path, bases: &[u64]) -> Vec<PathBuf> {
    bases
        .iter()
        .flat_map(|base| {
            [
                dir.join(segment::log_file_name(*base)),
                dir.join(segment::index_file_name(*base)),
            ]
        })
        .collect()
}

/// The base offsets of the segment logs in `dir`, sorted, and those of the indexes (in directory
/// order). Files left by an interrupted deletion or replacement are removed on the way.
fn list_segments(dir: &Path) -> Result<(Vec<u64>, Vec<u64>)> {
    let mut bases = Vec::new();
    let mut index_bases = Vec::new();
    for entry in fs::read_dir(dir).context("list", dir)? {
        let entry = entry.context("list", dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(DELETED_SUFFIX) || name.ends_with(TMP_SUFFIX) {
            fs::remove_file(entry.path()).context("unlink", &entry.path())?;
        } else if let Some(base) = segment::parse_log_file_name(name) {
            bases.push(base);
        } else if let Some(digits) = name.strip_suffix(INDEX_SUFFIX) {
            let log_name = format!("{digits}{LOG_SUFFIX}");
            if let Some(base) = segment::parse_log_file_name(&log_name) {
                index_bases.push(base);
            }
        }
    }
    bases.sort_unstable();
    Ok((bases, index_bases))
}
