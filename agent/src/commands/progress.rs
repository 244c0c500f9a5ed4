//! Terminal output shared by the backup, restore, verify and drill
//! commands: the progress bar and byte sizes.

use std::io::IsTerminal;
use std::time::Duration;

use steward_backup::restore::Progress;

/// Progress on a terminal: a bar with bytes, throughput and ETA when the
/// size is known, a spinner with bytes and throughput otherwise. Hidden
/// (no output at all) when stderr is not a terminal or `--quiet`.
#[derive(Debug, Clone)]
pub struct TermProgress {
    bar: indicatif::ProgressBar,
}

impl TermProgress {
    pub fn new(quiet: bool) -> Self {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr())
        };
        TermProgress { bar }
    }
}

impl Progress for TermProgress {
    fn start(&self, label: &str, total: Option<u64>) {
        let template = match total {
            Some(_) => "{msg:<32!} [{bar:28}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta}",
            None => "{spinner} {msg:<32!} {bytes:>10} {binary_bytes_per_sec:>12} {elapsed}",
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.reset();
        match total {
            Some(t) => self.bar.set_length(t),
            None => self.bar.unset_length(),
        }
        self.bar.set_message(label.to_string());
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    /// Printed above the bar on a terminal, plainly on stderr otherwise.
    fn note(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `1.5 GiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
