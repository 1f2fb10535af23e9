//! A real browser for the console's tests (`tests/console.rs`): Debian's headless Chromium
//! (`/usr/bin/chromium`, `apt-get install chromium` as root when missing) driven by Playwright
//! from PyPI (`tests/console/requirements.txt`, installed into `target/console-python-deps`
//! when the system's python3 cannot import it). Playwright is always told to launch that
//! Chromium, so it never downloads a browser of its own. Installs run once per test process,
//! and across processes under the same lock file as [`crate::kafka`]'s; a browser that cannot
//! be installed fails the test with the installer's output: never skipped silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::kafka::{apt_install, install_lock, repo, run_installer, runs};

/// Where Debian's package puts the browser; `tests/console/console.py` launches this one.
pub const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        if Path::new(CHROMIUM).exists() {
            return;
        }
        let _lock = install_lock();
        if !Path::new(CHROMIUM).exists() {
            apt_install(&["chromium"]);
        }
        assert!(
            Path::new(CHROMIUM).exists(),
            "chromium installed but {CHROMIUM} is missing"
        );
    });
}

/// The `PYTHONPATH` entry Playwright imports from (`None`: the system's).
fn python_deps() -> Option<PathBuf> {
    static DEPS: OnceLock<Option<PathBuf>> = OnceLock::new();
    DEPS.get_or_init(|| {
        let importable = |path: Option<&Path>| {
            let mut check = Command::new("python3");
            check.args(["-c", "import playwright.sync_api"]);
            if let Some(path) = path {
                check.env("PYTHONPATH", path);
            }
            check.output().is_ok_and(|output| output.status.success())
        };
        if importable(None) {
            return None;
        }
        let deps = repo().join("target/console-python-deps");
        let _lock = install_lock();
        if !importable(Some(&deps)) {
            if !runs("python3", &["-m", "pip", "--version"]) {
                apt_install(&["python3-pip"]);
            }
            let mut pip = Command::new("python3");
            pip.args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&deps)
            .arg("-r")
            .arg(repo().join("tests/console/requirements.txt"));
            run_installer(pip, "installing tests/console/requirements.txt");
        }
        Some(deps)
    })
    .clone()
}

/// `python3 tests/console/console.py` with Playwright importable and Chromium installed; run
/// it with [`crate::kafka::run`] (a deadline, the output on failure).
pub fn console_script() -> Command {
    chromium();
    let mut command = Command::new("python3");
    command
        .arg("-u")
        .arg(repo().join("tests/console/console.py"));
    if let Some(deps) = python_deps() {
        command.env("PYTHONPATH", deps);
    }
    // Playwright would otherwise look for (and offer to download) a browser of its own.
    command.env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
    command
}

/// `target/console-screenshots/`, created.
pub fn screenshots_dir() -> PathBuf {
    let dir = repo().join("target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("creating target/console-screenshots");
    dir
}
