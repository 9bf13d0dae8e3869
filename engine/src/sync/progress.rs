//! Progress of a long phase (rows read, planned, delivered). On a terminal (the CLI calls
//! [`enable_bars`]) each phase that lasts longer than a moment gets a bar with its count,
//! rate and, when the total is known, ETA; log lines are printed above the bars. Anywhere
//! else (a pipe, a log file, the service) a phase logs one line at most every two seconds.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The bars on the terminal, once [`enable_bars`] was called.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// A phase shorter than this never shows a bar (no flicker for small runs).
const BAR_AFTER: Duration = Duration::from_millis(500);
/// Without bars, how often a phase logs its progress.
const LOG_EVERY: Duration = Duration::from_secs(2);

/// Shows progress as bars on stderr from now on. Call once, only when stderr is a terminal,
/// and log through [`LogWriter`] so log lines do not tear the bars.
pub fn enable_bars() {
    let _ = BARS.set(MultiProgress::new());
}

/// A `tracing` writer for stderr that hides the bars while a line is written.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match BARS.get() {
            Some(bars) => bars
                .suspend(|| std::io::stderr().write_all(buf))
                .map(|_| buf.len()),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

/// One phase's progress.
pub(crate) struct Progress {
    what: &'static str,
    /// Rows the phase will handle, or 0 when unknown (reading a model).
    total: u64,
    done: u64,
    started: Instant,
    last_log: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub(crate) fn new(what: &'static str, total: u64) -> Progress {
        Progress {
            what,
            total,
            done: 0,
            started: Instant::now(),
            last_log: Instant::now(),
            bar: None,
        }
    }

    pub(crate) fn advance(&mut self, n: u64) {
        self.done += n;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
            return;
        }
        if let Some(bars) = BARS.get() {
            if self.started.elapsed() >= BAR_AFTER {
                self.bar = Some(self.start_bar(bars));
            }
            return;
        }
        if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            if self.total > 0 {
                tracing::info!(
                    "{} {}/{} rows ({rate:.0} rows/s)",
                    self.what,
                    self.done,
                    self.total
                );
            } else {
                tracing::info!("{} {} rows ({rate:.0} rows/s)", self.what, self.done);
            }
        }
    }

    fn start_bar(&self, bars: &MultiProgress) -> ProgressBar {
        let (bar, template) = if self.total > 0 {
            (
                ProgressBar::new(self.total),
                "{msg:>9} [{bar:30}] {human_pos}/{human_len} rows  {rate}  ETA {eta}",
            )
        } else {
            (
                ProgressBar::no_length(),
                "{msg:>9} {spinner} {human_pos} rows  {rate}  {elapsed}",
            )
        };
        // The templates are constants; a bad one would only lose the styling.
        if let Ok(style) = ProgressStyle::with_template(template) {
            let rate = |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                // The average since the phase began: steadier than indicatif's recent-rate estimate,
                // which jumps when a bar appears with rows already done.
                let _ = write!(
                    w,
                    "{:.0} rows/s",
                    state.pos() as f64 / state.elapsed().as_secs_f64().max(1e-3)
                );
            };
            bar.set_style(style.progress_chars("=> ").with_key("rate", rate));
        }
        // Rates and ETA count from the phase's start, not from when the bar appeared.
        let bar = bar
            .with_elapsed(self.started.elapsed())
            .with_message(self.what)
            .with_position(self.done);
        let bar = bars.add(bar);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// Ends the phase: its bar gives way to one line with the final count and rate (a
    /// finished bar would be erased by the next redraw of the others).
    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            let seconds = self.started.elapsed().as_secs_f64();
            let line = format!(
                "{:>9} {} rows in {seconds:.1} s ({:.0} rows/s)",
                self.what,
                self.done,
                self.done as f64 / seconds.max(1e-3)
            );
            if let Some(bars) = BARS.get() {
                let _ = bars.println(line);
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // A phase that ended early (an error) leaves its bar where it stopped.
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}
