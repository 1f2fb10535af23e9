//! The output file of an export: written under a hidden name beside its path (starting with
//! `.`, so engines and globs skip it), synced, renamed, the directory synced; removed when
//! dropped unfinished (an error, Ctrl-C), so a half-written file is never visible.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

/// A file being written under a hidden name beside its final path; removed when dropped
/// before [`persist`](Staged::persist).
pub struct Staged {
    temporary: PathBuf,
    target: PathBuf,
    persisted: bool,
}

impl Staged {
    /// Creates `.NAME.PID.strata-export` beside `target` (whose directory must exist).
    ///
    /// # Errors
    /// `target` is a directory or has no file name; its directory is missing or not
    /// writable.
    pub fn create(target: &Path) -> Result<(Self, File)> {
        let name = target
            .file_name()
            .filter(|_| !target.is_dir())
            .ok_or_else(|| anyhow!("--out {} is a directory, not a file", target.display()))?;
        let directory = match target.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !directory.is_dir() {
            bail!(
                "--out {}: directory {} does not exist",
                target.display(),
                directory.display()
            );
        }
        let temporary = directory.join(format!(
            ".{}.{}.strata-export",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file =
            File::create(&temporary).with_context(|| format!("create {}", temporary.display()))?;
        let staged = Staged {
            temporary,
            target: target.to_path_buf(),
            persisted: false,
        };
        Ok((staged, file))
    }

    /// Syncs `file`, renames it to the target and syncs the directory, so the complete file
    /// survives a crash under its name.
    pub fn persist(mut self, file: File) -> Result<()> {
        file.sync_all()
            .with_context(|| format!("sync {}", self.temporary.display()))?;
        drop(file);
        std::fs::rename(&self.temporary, &self.target)
            .with_context(|| format!("rename to {}", self.target.display()))?;
        self.persisted = true;
        if let Some(directory) = self.temporary.parent() {
            File::open(directory)
                .and_then(|directory| directory.sync_all())
                .with_context(|| format!("sync directory {}", directory.display()))?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A staged file is hidden beside its target, appears only when persisted, and is
    /// removed when dropped; a missing directory or a directory as target is refused.
    #[test]
    fn staged_files_appear_whole_or_not_at_all() {
        let directory = tempfile::tempdir().expect("tempdir");
        let target = directory.path().join("out.csv");
        let (staged, file) = Staged::create(&target).expect("create");
        assert!(
            staged
                .temporary
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(".out.csv.")),
            "{:?}",
            staged.temporary
        );
        drop(file);
        drop(staged);
        assert_eq!(
            std::fs::read_dir(directory.path()).expect("list").count(),
            0
        );
        let (staged, file) = Staged::create(&target).expect("create");
        staged.persist(file).expect("persist");
        let names: Vec<_> = std::fs::read_dir(directory.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.csv")]);
        let missing = directory.path().join("nowhere/out.csv");
        let error = Staged::create(&missing).err().expect("missing directory");
        assert!(error.to_string().contains("does not exist"), "{error}");
        let error = Staged::create(directory.path()).err().expect("a directory");
        assert!(error.to_string().contains("is a directory"), "{error}");
    }
}
