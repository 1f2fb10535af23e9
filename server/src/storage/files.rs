//! File plumbing shared by segments and checkpoints: append-only files read through a
//! memory map, directory fsync, atomic replace, and rename-then-unlink.
//!
//! Every write and fsync passes through the optional [`Faults`] seam.
//!
//! File descriptors are a budgeted resource (a node hosts thousands of partitions under one
//! `RLIMIT_NOFILE`): a [`MappedFile`] that will not change keeps only its map, which needs no
//! descriptor, and closes its file ([`MappedFile::close`]); the file is reopened by path only
//! when it changes again. An fsync shares the open file instead of duplicating the descriptor,
//! so syncing never needs a descriptor of its own.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

use super::error::{IoContext, Result};
use super::fault::{self, Faults};

/// Suffix of a file renamed on its way to being unlinked. Recovery unlinks any it finds.
pub(crate) const DELETED_SUFFIX: &str = ".deleted";
/// Suffix of a file being written before an atomic rename. Recovery unlinks any it finds.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
/// Suffix of the space kept for the next [`replace_atomically`] of a file (see there).
pub(crate) const SPARE_SUFFIX: &str = ".spare";

/// An append-only file written with `pwrite` and read through a shared memory map.
///
/// The map is made once with a capacity larger than the file, so reads see bytes appended later
/// without remapping (Linux maps are coherent with the page cache). Only bytes below the file's
/// length may be touched: a page past the end of the file raises SIGBUS. Callers therefore slice
/// only below the length they wrote, and [`Bytes`] handed out stay valid until the range they
/// cover is truncated; truncating a range that a reader still holds is a contract violation
/// (the broker serves only committed offsets, which are never truncated).
pub(crate) struct MappedFile {
    path: PathBuf,
    /// Open while the file may change; `None` once [`MappedFile::close`]d (the map stays valid
    /// without it). Shared with [`SyncHandle`]s, so an fsync needs no descriptor of its own.
    file: Option<Arc<File>>,
    /// The whole mapping as one `Bytes`, so reads hand out refcounted slices with no copy.
    /// Never print or iterate it whole: it extends past the end of the file.
    map: Bytes,
    capacity_bytes: usize,
    faults: Option<Arc<Faults>>,
}

impl MappedFile {
    /// Opens (or with `create`, creates new) the file at `path` and maps `capacity_bytes` of it,
    /// or the whole file when that is larger.
    pub(crate) fn open(
        path: &Path,
        create: bool,
        capacity_bytes: usize,
        faults: Option<Arc<Faults>>,
    ) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .open(path)
            .context(if create { "create" } else { "open" }, path)?;
        let length = file.metadata().context("stat", path)?.len() as usize;
        let capacity_bytes = capacity_bytes.max(length).max(1);
        let map = map_file(&file, path, capacity_bytes)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(Arc::new(file)),
            map,
            capacity_bytes,
            faults,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Length of the file on disk.
    pub(crate) fn file_length(&self) -> Result<u64> {
        let metadata = match &self.file {
            Some(file) => file.metadata(),
            None => fs::metadata(&self.path),
        };
        Ok(metadata.context("stat", &self.path)?.len())
    }

    /// Closes the file descriptor; the map (and every slice handed out) stays valid. The next
    /// change, or [`MappedFile::sync`], reopens the file by path (writes already made stay in
    /// the page cache, and an fsync through any descriptor of the file covers them).
    pub(crate) fn close(&mut self) {
        self.file = None;
    }

    /// True while the file holds a descriptor.
    pub(crate) fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// The open file, reopened by path when it was closed.
    fn open_file(&mut self) -> Result<Arc<File>> {
        if let Some(file) = &self.file {
            return Ok(file.clone());
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .context("reopen", &self.path)?;
        let file = Arc::new(file);
        self.file = Some(file.clone());
        Ok(file)
    }

    /// The bytes in `range`, which must lie below the length written.
    pub(crate) fn slice(&self, range: Range<usize>) -> Bytes {
        assert!(range.end <= self.capacity_bytes);
        self.map.slice(range)
    }

    /// Borrowed view of the bytes in `range`, which must lie below the length written.
    pub(crate) fn view(&self, range: Range<usize>) -> &[u8] {
        assert!(range.end <= self.capacity_bytes);
        &self.map[range]
    }

    /// Writes `bytes` at `position`. On failure some prefix may have reached the file: the
    /// caller truncates back with [`MappedFile::set_length`].
    pub(crate) fn write_at(&mut self, bytes: &[u8], position: u64) -> Result<()> {
        self.write_parts_at([bytes], position)
    }

    /// Writes `parts`, one after another, at `position`, in one `pwritev` (a batch's stamped
    /// header and its records, which stay where the producer's request put them). On failure
    /// some prefix may have reached the file, as with [`MappedFile::write_at`].
    pub(crate) fn write_parts_at<const N: usize>(
        &mut self,
        parts: [&[u8]; N],
        position: u64,
    ) -> Result<()> {
        let file = self.open_file()?;
        let length: usize = parts.iter().map(|part| part.len()).sum();
        let end = position as usize + length;
        if end > self.capacity_bytes {
            // Grow the mapping first; earlier slices keep the old mapping alive.
            let capacity_bytes = end.max(self.capacity_bytes.saturating_mul(2));
            self.map = map_file(&file, &self.path, capacity_bytes)?;
            self.capacity_bytes = capacity_bytes;
        }
        if self.faults.as_ref().is_some_and(|f| f.write_fails()) {
            let bytes = parts.concat();
            let half = bytes.len() / 2;
            file.write_all_at(&bytes[..half], position)
                .context("write", &self.path)?;
            return Err(fault::enospc()).context("write", &self.path);
        }
        write_all_vectored_at(&file, parts, position).context("write", &self.path)
    }

    /// Writes `length_bytes` of zeros at `position` (through the page cache, like the data
    /// that will overwrite them; not synced). On failure some prefix may have been written, as
    /// with [`MappedFile::write_at`]: zeros only, which a reader of the log never mistakes for
    /// a batch.
    pub(crate) fn write_zeros(&mut self, position: u64, length_bytes: u64) -> Result<()> {
        /// Written from a static page run: no allocation per call.
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let file = self.open_file()?;
        if self.faults.as_ref().is_some_and(|f| f.write_fails()) {
            let half = (length_bytes / 2).min(ZEROS.len() as u64) as usize;
            file.write_all_at(&ZEROS[..half], position)
                .context("write", &self.path)?;
            return Err(fault::enospc()).context("write", &self.path);
        }
        let mut written = 0;
        while written < length_bytes {
            let chunk = (length_bytes - written).min(ZEROS.len() as u64) as usize;
            file.write_all_at(&ZEROS[..chunk], position + written)
                .context("write", &self.path)?;
            written += chunk as u64;
        }
        Ok(())
    }

    /// Allocates disk blocks for `length_bytes` from `position` without changing the file's
    /// length (`fallocate` with `FALLOC_FL_KEEP_SIZE`), so later writes there need no free
    /// space. Best effort: false when the file system refused (full, or no fallocate).
    pub(crate) fn allocate_ahead(&mut self, position: u64, length_bytes: u64) -> bool {
        use std::os::fd::AsRawFd;
        let (Ok(position), Ok(length)) = (
            libc::off_t::try_from(position),
            libc::off_t::try_from(length_bytes),
        ) else {
            return false;
        };
        let Ok(file) = self.open_file() else {
            return false;
        };
        let mode = libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on a descriptor `file` keeps open for the call.
        let allocated = unsafe { libc::fallocate(file.as_raw_fd(), mode, position, length) };
        allocated == 0
    }

    /// Truncates (or extends with zeros) the file to `length` bytes.
    pub(crate) fn set_length(&mut self, length: u64) -> Result<()> {
        self.open_file()?
            .set_len(length)
            .context("truncate", &self.path)
    }

    /// Makes every write before it durable (`fdatasync`: the length is data here), reopening
    /// a closed file for it.
    pub(crate) fn sync(&mut self) -> Result<()> {
        let file = self.open_file()?;
        SyncHandle {
            path: self.path.clone(),
            file,
            faults: self.faults.clone(),
        }
        .sync()
    }

    /// A handle on the file that can fsync it without borrowing this one, so the owner of a
    /// log can fsync outside its lock. It shares the open file (no descriptor is duplicated, so
    /// it cannot fail for want of one); `None` when the file is closed.
    pub(crate) fn sync_handle(&self) -> Option<SyncHandle> {
        self.file.as_ref().map(|file| SyncHandle {
            path: self.path.clone(),
            file: file.clone(),
            faults: self.faults.clone(),
        })
    }
}

/// A shared file handle to fsync (see [`MappedFile::sync_handle`]).
pub struct SyncHandle {
    path: PathBuf,
    file: Arc<File>,
    faults: Option<Arc<Faults>>,
}

impl SyncHandle {
    /// `fdatasync`s the file: every write made before the handle was taken is durable after.
    ///
    /// # Errors
    /// The I/O error, with the file's path.
    pub fn sync(&self) -> Result<()> {
        if self.faults.as_ref().is_some_and(|f| f.sync_fails()) {
            return Err(fault::eio()).context("fsync", &self.path);
        }
        let started = std::time::Instant::now();
        let synced = self.file.sync_data().context("fsync", &self.path);
        // Process-wide: storage knows of no node (see `metrics::fsync`).
        crate::metrics::fsync::observe(started);
        synced
    }
}

/// `pwritev` of every byte of `parts` at `position`, resumed after a short write.
fn write_all_vectored_at<const N: usize>(
    file: &File,
    parts: [&[u8]; N],
    position: u64,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let length: usize = parts.iter().map(|part| part.len()).sum();
    let mut written = 0;
    while written < length {
        // The parts not yet written, the first one cut where the last short write stopped; on
        // the stack (no allocation per batch).
        let mut vectors = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; N];
        let mut used = 0;
        let mut skip = written;
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            let rest = &part[skip..];
            skip = 0;
            vectors[used] = libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            };
            used += 1;
        }
        let count = libc::c_int::try_from(used).map_err(std::io::Error::other)?;
        let at = libc::off_t::try_from(position + written as u64).map_err(std::io::Error::other)?;
        // SAFETY: every iovec points into a slice of `parts`, borrowed for the call; the
        // descriptor belongs to `file`, open for the call.
        let result = unsafe { libc::pwritev(file.as_raw_fd(), vectors.as_ptr(), count, at) };
        match result {
            -1 => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            bytes => written += bytes as usize,
        }
    }
    Ok(())
}

fn map_file(file: &File, path: &Path, capacity_bytes: usize) -> Result<Bytes> {
    // SAFETY: the file belongs to this process's storage directory and is only appended to or
    // truncated by this module. Nobody slices past the written length (see `MappedFile`).
    let map: Mmap =
        unsafe { MmapOptions::new().len(capacity_bytes).map(file) }.context("mmap", path)?;
    Ok(Bytes::from_owner(map))
}

/// Fsyncs a directory, so that files created, renamed or removed in it stay so after a crash.
pub(crate) fn sync_dir(dir: &Path, faults: Option<&Faults>) -> Result<()> {
    if faults.is_some_and(|f| f.sync_fails()) {
        return Err(fault::eio()).context("fsync directory", dir);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context("fsync directory", dir)
}

/// Replaces `path` with `contents` atomically: write a temporary file, fsync it, rename it over
/// `path`, fsync the directory. A crash leaves either the old or the new contents.
///
/// The temporary file is the spare (`*.spare`) that the previous replace allocated, when there
/// is one: writing into blocks already allocated needs no free space, so a file no larger than
/// the last one can be replaced on a full disk (a node starting there must still record its
/// raft term and vote). After the rename, which frees the old file's blocks, a new spare of the
/// same size is allocated (`fallocate`, no data written, no fsync: it only holds the space).
pub fn replace_atomically(path: &Path, contents: &[u8], faults: Option<&Faults>) -> Result<()> {
    let tmp = with_suffix(path, TMP_SUFFIX);
    let spare = with_suffix(path, SPARE_SUFFIX);
    let mut file = match fs::rename(&spare, &tmp) {
        Ok(()) => OpenOptions::new()
            .write(true)
            .open(&tmp)
            .context("open", &tmp)?,
        Err(_) => File::create(&tmp).context("create", &tmp)?,
    };
    if faults.is_some_and(|f| f.write_fails()) {
        file.write_all(&contents[..contents.len() / 2])
            .context("write", &tmp)?;
        return Err(fault::enospc()).context("write", &tmp);
    }
    file.write_all(contents).context("write", &tmp)?;
    // A spare longer than `contents` keeps its tail until cut here (shrinking needs no space).
    file.set_len(contents.len() as u64)
        .context("truncate", &tmp)?;
    if faults.is_some_and(|f| f.sync_fails()) {
        return Err(fault::eio()).context("fsync", &tmp);
    }
    file.sync_all().context("fsync", &tmp)?;
    fs::rename(&tmp, path).context("rename", &tmp)?;
    let dir = path.parent().expect("a checkpoint lives in a directory");
    sync_dir(dir, faults)?;
    allocate_spare(&spare, contents.len());
    Ok(())
}

/// Allocates `length` bytes at `spare` for the next replace. Best effort: without a spare the
/// next replace only needs free space again.
fn allocate_spare(spare: &Path, length: usize) {
    use std::os::fd::AsRawFd;
    let Ok(length) = libc::off_t::try_from(length) else {
        return;
    };
    if length == 0 {
        return;
    }
    let Ok(file) = File::create(spare) else {
        return;
    };
    // SAFETY: fallocate on a descriptor this function owns; mode 0 allocates and extends.
    let allocated = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, length) } == 0;
    drop(file);
    if !allocated {
        let _ = fs::remove_file(spare);
    }
}

/// Removes files so that a crash never leaves a half-deleted set: first every file is renamed
/// to `*.deleted` and the directory fsynced, then each is unlinked. Recovery unlinks leftover
/// `*.deleted` files.
pub(crate) fn remove_files(dir: &Path, paths: &[PathBuf], faults: Option<&Faults>) -> Result<()> {
    let mut renamed = Vec::with_capacity(paths.len());
    for path in paths {
        let target = with_suffix(path, DELETED_SUFFIX);
        match fs::rename(path, &target) {
            Ok(()) => renamed.push(target),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).context("rename", path),
        }
    }
    sync_dir(dir, faults)?;
    for path in renamed {
        fs::remove_file(&path).context("unlink", &path)?;
    }
    sync_dir(dir, faults)
}

pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each replace leaves a spare of the new contents' size, and the next replace writes into
    /// it: contents are exact whether the spare is longer or shorter than them.
    #[test]
    fn replace_reuses_the_spare() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state");
        let spare = with_suffix(&path, SPARE_SUFFIX);
        for contents in [
            &b"first contents"[..],
            b"short",
            b"a good deal longer than before",
        ] {
            replace_atomically(&path, contents, None).expect("replace");
            assert_eq!(fs::read(&path).expect("read"), contents);
            let spare_length = fs::metadata(&spare).expect("a spare").len();
            assert_eq!(spare_length, contents.len() as u64);
            assert!(!with_suffix(&path, TMP_SUFFIX).exists());
        }
    }
}
