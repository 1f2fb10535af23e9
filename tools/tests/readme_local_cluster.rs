//! The README's "Run a local cluster yourself" section, run as written, so it never goes
//! stale: the test reads the section's command block out of README.md and runs each line with
//! bash against the binaries cargo built for this test.
//!
//! How each line runs, from what the line itself says:
//! - `cargo build ...`: skipped; cargo built the binaries before the test, and a
//!   `target/release/` directory in the test's working directory links to them.
//! - `... playground ...`: started in the background; the test waits (bounded) until it prints
//!   its `export` line, and stops it with SIGINT (Ctrl-C) at the end.
//! - `export NAME=...`: NAME is set to the value the playground printed for it.
//! - a line whose comment mentions Ctrl-C: started, interrupted with SIGINT once it printed as
//!   many lines as the consume before it, and it must then exit 0.
//! - every other line: run to completion within a deadline; it must exit 0.
//!
//! A change to the section that adds a kind of line this does not know fails the test with
//! the line, so the section and the test change together.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{COMMAND_DEADLINE, STARTUP_DEADLINE, server_binary};

/// How the section is found in README.md.
const SECTION_MARKER: &str = "Run a local cluster yourself";

/// How long an interrupted command may take to commit, leave and exit.
const INTERRUPT_DEADLINE: Duration = Duration::from_secs(30);

/// How often a background command's output is checked while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The command lines of the first indented block after the marker (continuations joined).
fn section_commands(readme: &str) -> Vec<String> {
    let start = readme
        .find(SECTION_MARKER)
        .unwrap_or_else(|| panic!("README.md has no {SECTION_MARKER:?} section"));
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in readme[start..].lines() {
        let Some(command) = line.strip_prefix("    ") else {
            if in_block && !line.trim().is_empty() {
                break;
            }
            continue;
        };
        in_block = true;
        let command = command.trim();
        match command.strip_suffix('\\') {
            Some(first) => pending.push_str(first),
            None => {
                pending.push_str(command);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    assert!(!commands.is_empty(), "the section has no command block");
    commands
}

/// A background process whose stdout lines are collected as they come.
struct Background {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Ends when the command's stdout closes.
    reader: Option<thread::JoinHandle<()>>,
    command: String,
}

impl Background {
    fn start(command: &str, cwd: &Path, env: &HashMap<String, String>) -> Self {
        let mut child = bash(command, cwd, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("start {command}: {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                collected.lock().expect("lines lock").push(line);
            }
        });
        Self {
            child,
            lines,
            reader: Some(reader),
            command: command.to_owned(),
        }
    }

    /// Waits until `done` holds for the lines printed so far; fails the test at the deadline.
    fn wait_for(&mut self, deadline: Duration, what: &str, done: impl Fn(&[String]) -> bool) {
        let started = Instant::now();
        loop {
            if done(&self.lines.lock().expect("lines lock")) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before {what}: {:?}",
                    self.command,
                    self.lines.lock().expect("lines lock")
                );
            }
            assert!(
                started.elapsed() < deadline,
                "{} did not reach {what} within {deadline:?}: {:?}",
                self.command,
                self.lines.lock().expect("lines lock")
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends SIGINT (Ctrl-C) and waits for a successful exit.
    fn interrupt(mut self) {
        // bash -c execs a simple command, so the child is the command itself.
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "{} exited with {status} after Ctrl-C",
                    self.command
                );
                return;
            }
            if started.elapsed() > INTERRUPT_DEADLINE {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit within {INTERRUPT_DEADLINE:?} of Ctrl-C",
                    self.command
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // A failed test still stops what it started (the playground stops its servers on
        // SIGINT; a second signal or kill is not needed when it already exited).
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            let started = Instant::now();
            while started.elapsed() < INTERRUPT_DEADLINE {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(POLL_INTERVAL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn bash(command: &str, cwd: &Path, env: &HashMap<String, String>) -> Command {
    let mut bash = Command::new("bash");
    // Only what the section exports reaches the commands, not the test's own environment.
    bash.args(["-c", command])
        .current_dir(cwd)
        .env_remove("STRATA_BROKERS")
        .envs(env);
    bash
}

/// Runs a command to completion within the deadline; returns its stdout.
fn run(command: &str, cwd: &Path, env: &HashMap<String, String>) -> String {
    let mut background = Background::start(command, cwd, env);
    let started = Instant::now();
    loop {
        if let Some(status) = background.child.try_wait().expect("wait") {
            assert!(status.success(), "`{command}` exited with {status}");
            break;
        }
        assert!(
            started.elapsed() < COMMAND_DEADLINE,
            "`{command}` did not finish within {COMMAND_DEADLINE:?}"
        );
        thread::sleep(POLL_INTERVAL);
    }
    // The command exited, so its stdout is closed and the reader ends.
    if let Some(reader) = background.reader.take() {
        reader.join().expect("stdout reader");
    }
    let lines = background.lines.lock().expect("lines lock");
    lines.join("\n")
}

/// Every command of the section runs as written and succeeds.
#[test]
fn readme_local_cluster_section_runs() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("read README.md");
    let commands = section_commands(&readme);

    let work = tempfile::tempdir().expect("work dir");
    let release = work.path().join("target/release");
    std::fs::create_dir_all(&release).expect("target/release");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_strata"), release.join("strata"))
        .expect("link strata");
    std::os::unix::fs::symlink(server_binary(), release.join("strata-server"))
        .expect("link strata-server");
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).expect("tmp");
    // The playground's data directory goes below the test's own directory.
    let mut env = HashMap::from([("TMPDIR".to_owned(), tmp.display().to_string())]);

    let mut playground: Option<Background> = None;
    let mut last_consume_lines = 0usize;
    let mut ran = 0;
    for line in &commands {
        let (command, comment) = match line.split_once(" #") {
            Some((command, comment)) => (command.trim(), comment.trim()),
            None => (line.trim(), ""),
        };
        eprintln!("README: {command}");
        if command.starts_with("cargo build") {
            continue;
        }
        if command.contains(" playground") {
            let mut started = Background::start(command, work.path(), &env);
            started.wait_for(STARTUP_DEADLINE, "printing its export line", |lines| {
                lines.iter().any(|line| line.trim().starts_with("export "))
            });
            playground = Some(started);
        } else if let Some(assignment) = command.strip_prefix("export ") {
            let (name, _) = assignment
                .split_once('=')
                .unwrap_or_else(|| panic!("README: `{command}` is not export NAME=..."));
            let printed = playground
                .as_ref()
                .unwrap_or_else(|| panic!("README: `{command}` comes before the playground"))
                .lines
                .lock()
                .expect("lines lock")
                .iter()
                .find_map(|line| {
                    line.trim()
                        .strip_prefix(&format!("export {name}="))
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| panic!("the playground printed no `export {name}=`"));
            env.insert(name.to_owned(), printed);
        } else if comment.contains("Ctrl-C") {
            let mut started = Background::start(command, work.path(), &env);
            let expected = last_consume_lines.max(1);
            started.wait_for(
                COMMAND_DEADLINE,
                &format!("printing {expected} lines"),
                |lines| lines.len() >= expected,
            );
            started.interrupt();
        } else {
            let stdout = run(command, work.path(), &env);
            if command.contains(" consume ") {
                last_consume_lines = stdout.lines().count();
                assert!(last_consume_lines > 0, "`{command}` printed nothing");
            }
        }
        ran += 1;
    }
    assert!(ran >= 5, "the section ran {ran} commands: {commands:?}");
    let playground = playground.expect("the section starts a playground");
    playground.interrupt();
}

/// The block is found and continuations are joined.
#[test]
fn section_parsing() {
    let readme = "intro\nRun a local cluster yourself:\n\n    a \\\n        b\n    c # note\n\nafter\n\n    other\n";
    assert_eq!(section_commands(readme), ["a b", "c # note"]);
}
