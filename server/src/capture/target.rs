//! Where capture files go: a [`CaptureTarget`] parsed from `capture.dir`, probed when a topic
//! is created or altered, and the two steps of making a file visible: write it to a spool
//! path, then [`publish`](CaptureTarget::publish) it under its final name (or
//! [`discard`](CaptureTarget::discard) it).
//!
//! A directory target spools to a hidden temporary file beside the final one (`.{file}.tmp`,
//! which no `*.parquet` glob matches), fsyncs it, renames it and fsyncs the directory: a reader
//! sees a whole file under its final name or nothing, and after a crash the name is durable
//! only with its whole contents. A bucket target ([`Bucket`]) spools under the data directory
//! and uploads: S3 shows an object whole or not at all.

use std::path::{Path, PathBuf};

use super::bucket::Bucket;

/// A capture destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureTarget {
    /// An absolute directory on this node's file system.
    Dir(PathBuf),
    /// An S3-compatible bucket and prefix (`s3://BUCKET/PREFIX`).
    Bucket(Bucket),
}

impl CaptureTarget {
    /// The target `capture.dir` names.
    ///
    /// # Errors
    /// A relative path, an empty value, another URL scheme, or a bucket URL that is not
    /// valid, with what is valid.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with("s3://") {
            return Bucket::parse(text).map(CaptureTarget::Bucket);
        }
        if text.contains("://") {
            return Err(format!(
                "capture.dir {text:?}: the only valid values are an absolute directory path or \
                 s3://bucket/prefix"
            ));
        }
        let path = Path::new(text);
        if text.is_empty() || !path.is_absolute() {
            return Err(format!(
                "capture.dir {text:?} is not an absolute path: give an absolute directory path \
                 (such as /var/lib/strata-capture) or s3://bucket/prefix"
            ));
        }
        Ok(CaptureTarget::Dir(path.to_path_buf()))
    }

    /// Checks that files can be written here: a directory is created if missing, and a probe
    /// file is written, fsynced and removed. On failure nothing this made is left behind.
    ///
    /// # Errors
    /// What failed, naming the path and the OS error.
    pub async fn probe(&self) -> Result<(), String> {
        match self {
            CaptureTarget::Dir(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || probe_dir(&dir))
                    .await
                    .map_err(|error| format!("probing the capture directory failed: {error}"))?
            }
            CaptureTarget::Bucket(bucket) => bucket.probe().await,
        }
    }

    /// Where a file that will be published as `relative` is written first. A directory
    /// target spools beside the final name, so publishing is a rename on one file system;
    /// `data_dir` is for targets that must spool locally.
    pub fn spool_path(&self, relative: &str, data_dir: &Path) -> PathBuf {
        match self {
            CaptureTarget::Bucket(bucket) => bucket.spool_path(relative, data_dir),
            CaptureTarget::Dir(dir) => {
                let finished = dir.join(relative);
                let name = finished
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                finished.with_file_name(format!(".{name}.tmp"))
            }
        }
    }

    /// Makes the spooled file visible as `relative`, durably: fsync the file, rename it to
    /// its final name (replacing an identical file an earlier leader may have published),
    /// fsync the directory.
    ///
    /// # Errors
    /// The step that failed, with the path and the OS error; the spool file may remain (the
    /// caller discards it).
    pub async fn publish(&self, spool: &Path, relative: &str) -> Result<(), String> {
        match self {
            CaptureTarget::Dir(dir) => {
                let spool = spool.to_path_buf();
                let finished = dir.join(relative);
                tokio::task::spawn_blocking(move || publish_in_dir(&spool, &finished))
                    .await
                    .map_err(|error| format!("publishing a capture file failed: {error}"))?
            }
            CaptureTarget::Bucket(bucket) => bucket.publish(spool, relative).await,
        }
    }

    /// Removes a spooled file that will not be published (a failed write); a file already
    /// gone is fine, and another failure is only logged (the next attempt replaces it).
    pub async fn discard(&self, spool: &Path) {
        let spool = spool.to_path_buf();
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_file(&spool) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(format!("{}: {error}", spool.display())),
        })
        .await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "removing a capture spool file failed"),
            Err(error) => tracing::warn!(%error, "removing a capture spool file failed"),
        }
    }
}

/// A window's file name relative to the target: Hive-style `partition=N` directories, so
/// engines prune by partition, and zero-padded offsets, so names sort by offset.
pub fn relative_name(topic: &str, partition: u32, first: u64, last: u64) -> String {
    format!("{topic}/partition={partition}/{first:020}-{last:020}.parquet")
}

fn probe_dir(dir: &Path) -> Result<(), String> {
    // The first missing ancestor: everything from it down is this probe's to remove again.
    let mut created_from = None;
    let mut ancestor = Some(dir);
    while let Some(path) = ancestor {
        if path.exists() {
            break;
        }
        created_from = Some(path.to_path_buf());
        ancestor = path.parent();
    }
    let probed = write_probe(dir);
    if probed.is_err()
        && let Some(created) = created_from
    {
        // Only directories this probe made, empty: remove_dir refuses anything else.
        let mut path = dir.to_path_buf();
        loop {
            let _ = std::fs::remove_dir(&path);
            if path == created || !path.pop() {
                break;
            }
        }
    }
    probed
}

fn write_probe(dir: &Path) -> Result<(), String> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|error| {
        format!(
            "capture.dir {}: cannot create the directory: {error}",
            dir.display()
        )
    })?;
    let probe = dir.join(format!(".strata-capture-probe-{}", std::process::id()));
    let written = std::fs::File::create(&probe)
        .and_then(|mut file| {
            file.write_all(b"strata capture probe")?;
            file.sync_all()
        })
        .map_err(|error| {
            format!(
                "capture.dir {}: cannot write a file there: {error}",
                dir.display()
            )
        });
    let removed = std::fs::remove_file(&probe);
    written?;
    removed.map_err(|error| {
        format!(
            "capture.dir {}: cannot remove the probe file {}: {error}",
            dir.display(),
            probe.display()
        )
    })
}

fn publish_in_dir(spool: &Path, finished: &Path) -> Result<(), String> {
    let context = |what: &str, path: &Path, error: std::io::Error| {
        format!("{what} {}: {error}", path.display())
    };
    std::fs::File::open(spool)
        .and_then(|file| file.sync_all())
        .map_err(|error| context("fsync of capture file", spool, error))?;
    std::fs::rename(spool, finished)
        .map_err(|error| context("renaming capture file to", finished, error))?;
    let parent = finished.parent().unwrap_or(Path::new("/"));
    std::fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| context("fsync of capture directory", parent, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_absolute_directories_only() {
        assert_eq!(
            CaptureTarget::parse("/data/capture"),
            Ok(CaptureTarget::Dir(PathBuf::from("/data/capture")))
        );
        for (bad, says) in [
            ("", "absolute"),
            ("relative/dir", "absolute"),
            ("./dir", "absolute"),
            ("s3://Bucket/prefix", "not a bucket name"),
            ("gs://bucket", "s3://"),
        ] {
            let error = CaptureTarget::parse(bad).expect_err(bad);
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }

    #[test]
    fn names_are_hive_style_and_sort_by_offset() {
        assert_eq!(
            relative_name("orders", 3, 10, 19),
            "orders/partition=3/00000000000000000010-00000000000000000019.parquet"
        );
        assert!(relative_name("t", 0, 9, 9) < relative_name("t", 0, 10, 10));
    }

    /// Publishing leaves the final file, with the spooled contents, and no temporary file; a
    /// second publish of the same name (a new leader rewriting a window) replaces it.
    #[tokio::test]
    async fn publish_renames_the_spool_and_leaves_no_temporary_file() {
        let root = tempfile::tempdir().expect("tempdir");
        let target = CaptureTarget::Dir(root.path().to_path_buf());
        let relative = relative_name("t", 0, 0, 4);
        for contents in [&b"first"[..], b"second"] {
            let spool = target.spool_path(&relative, Path::new("/unused"));
            assert_eq!(spool.parent(), root.path().join(&relative).parent());
            std::fs::create_dir_all(spool.parent().expect("parent")).expect("dirs");
            std::fs::write(&spool, contents).expect("spool");
            target.publish(&spool, &relative).await.expect("publish");
            assert!(!spool.exists(), "the spool file is renamed away");
            assert_eq!(
                std::fs::read(root.path().join(&relative)).expect("published"),
                contents
            );
        }
        let names: Vec<_> = std::fs::read_dir(root.path().join("t/partition=0"))
            .expect("dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A failed publish (the spool is gone) is an error naming the file; discard is quiet.
        let missing = target.spool_path(&relative_name("t", 0, 5, 9), Path::new("/unused"));
        let error = target
            .publish(&missing, &relative_name("t", 0, 5, 9))
            .await
            .expect_err("no spool");
        assert!(error.contains(".tmp"), "{error}");
        target.discard(&missing).await;
    }

    /// A probe creates a missing directory and leaves no probe file; a path under a regular
    /// file fails, naming the path, and creates nothing.
    #[tokio::test]
    async fn probe_creates_the_directory_or_fails_leaving_nothing() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("a/b");
        CaptureTarget::Dir(dir.clone())
            .probe()
            .await
            .expect("probe");
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0);
        let file = root.path().join("file");
        std::fs::write(&file, b"in the way").expect("file");
        let error = CaptureTarget::Dir(file.join("sub"))
            .probe()
            .await
            .expect_err("a file is in the way");
        assert!(error.contains("file/sub"), "{error}");
        assert!(!file.join("sub").exists());
    }
}
