//! # Continuous capture (issue 15): every closed window of a captured topic's partitions
//! written once as a Parquet file
//!
//! A topic captures while its `capture.dir` is set (see `TopicConfig`). The leader of each of
//! its partitions closes a window of committed records from the partition's capture position
//! when the window's stored bytes reach `capture.max-bytes` (at a batch boundary, at least one
//! batch) or `capture.interval-ms` after the leader first saw uncaptured data, and writes its
//! data records (control batches skipped) as
//! `{dir}/{topic}/partition={p}/{first:020}-{last:020}.parquet`. The interval is measured
//! on the leader's own monotonic clock and restarts when leadership moves: a new leader waits
//! at most one more interval. A window of control batches only moves the position and writes
//! nothing.
//!
//! ## Layout
//! - [`target`]: where files go ([`target::CaptureTarget`]), the probe at create/alter, and
//!   publishing a spooled file under its final name.
//! - [`bucket`]: an S3-compatible bucket as a target (`s3://BUCKET/PREFIX`).
//! - [`window`]: which batches a window takes (pure) and writing its records.
//! - [`runner`]: the per-node task that drives the windows of the partitions it leads.
//!
//! ## Exactly once per offset range
//! The capture position of each partition (`next_offset`, and the `pending` window) lives in
//! the controller's replicated metadata and moves only by two compare-and-set commands:
//! 1. `CaptureWindowOpen { expected_next, first, last }` is applied only if the position is
//!    `expected_next` with nothing pending; it records `first..=last` as pending. The window's
//!    bounds are now fixed, whoever finishes it.
//! 2. The leader writes the window to a spool name, makes it durable and renames it to its
//!    final name (see [`target`]); a reader never sees a partial file under a final name.
//! 3. `CaptureWindowDone { first, last }` is applied only if that window is pending, and moves
//!    the position to `last + 1`.
//!
//! A leader that dies between 1 and 3 leaves the window pending; the next leader (or the same
//! node after a restart) finds it in the metadata and rewrites exactly that window: the same
//! name, and the same rows, because the committed log below the high watermark is the same on
//! every replica. So the rename either creates the file or replaces an identical one. A leader
//! working from a stale view of the metadata only gets its Open or Done refused (and at worst
//! rewrites an identical file); windows never overlap, because a window opens only at the
//! position the previous one moved to. Retention never removes records at or above the
//! position while `capture.block-retention` is true, so every offset is written in exactly one
//! file; with it false, records retention removed first are skipped and the gap logged.

pub mod bucket;
pub mod runner;
pub mod target;
pub mod window;
