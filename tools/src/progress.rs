//! What the CLI says on stderr besides errors: progress of long work and notes, both only for
//! a person watching, and both silenced by `--quiet`.
//!
//! Progress draws only when stderr is a terminal (indicatif, the well-kept crate for it,
//! redraws in place at a bounded rate); piped or redirected, nothing is drawn, so logs and
//! scripts see only what the command prints on purpose. Notes (a partition read from another
//! offset than asked, say) print as `strata: ...` lines unless `--quiet`.

use std::fmt::Display;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

/// Set once by `main` from `--quiet`, before any command runs.
static QUIET: AtomicBool = AtomicBool::new(false);

/// How often a spinner advances on its own while the work gives no news.
const SPINNER_TICK: Duration = Duration::from_millis(120);

/// Silences progress and notes for the rest of the process (`--quiet`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Prints a note on stderr, unless `--quiet`.
pub fn note(message: impl Display) {
    if !quiet() {
        eprintln!("strata: {message}");
    }
}

/// Whether progress would be seen: stderr is a terminal and not `--quiet`.
pub fn shown() -> bool {
    !quiet() && std::io::stderr().is_terminal()
}

/// A bar over `total` units of work (`bytes`: shown as sizes and a rate), labelled `what`, as
/// wide as the terminal leaves room for (a line that wraps would not redraw in place);
/// hidden when [`shown`] is false. Finish it with `finish_and_clear`.
pub fn bar(total: u64, what: &str, bytes: bool) -> ProgressBar {
    if !shown() {
        return ProgressBar::hidden();
    }
    let template = if bytes {
        "{msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
    } else {
        "{msg} [{wide_bar}] {human_pos}/{human_len} {per_sec} {eta}"
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        .with_style(style)
        .with_message(what.to_owned())
        // Dropped on an error's early return: cleared, so the error line stands alone.
        .with_finish(ProgressFinish::AndClear);
    bar.enable_steady_tick(SPINNER_TICK);
    bar
}

/// A spinner for one long request (`what`: what it waits for), with the time waited so far;
/// hidden when [`shown`] is false.
pub fn waiting(what: &str) -> ProgressBar {
    if !shown() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        .with_style(style)
        .with_message(what.to_owned())
        // Dropped on an error's early return: cleared, so the error line stands alone.
        .with_finish(ProgressFinish::AndClear);
    spinner.enable_steady_tick(SPINNER_TICK);
    spinner
}

/// A spinner with a running count, for work of unknown size (`what`: a label such as
/// "records"); hidden when [`shown`] is false.
pub fn spinner(what: &str) -> ProgressBar {
    if !shown() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{spinner} {msg} {human_pos} ({per_sec}, {elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        .with_style(style)
        .with_message(what.to_owned())
        // Dropped on an error's early return: cleared, so the error line stands alone.
        .with_finish(ProgressFinish::AndClear);
    spinner.enable_steady_tick(SPINNER_TICK);
    spinner
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under `cargo test` stderr is captured, not a terminal: progress draws nothing, and
    /// `--quiet` hides it even on a terminal.
    #[test]
    fn hidden_off_a_terminal_and_when_quiet() {
        if !std::io::stderr().is_terminal() {
            assert!(bar(10, "x", false).is_hidden());
            assert!(spinner("x").is_hidden());
            assert!(waiting("x").is_hidden());
        }
        set_quiet(true);
        assert!(quiet());
        assert!(bar(10, "x", true).is_hidden());
        assert!(spinner("x").is_hidden());
        set_quiet(false);
    }
}
