//! Progress of a long phase (rows read, planned, delivered). On a terminal (the CLI calls
//! [`enable_bars`]) each phase that lasts longer than a moment gets a bar with its count,
//! rate and, when the total is known, ETA; log lines are printed above the bars. Anywhere
//! else (a pipe, a log file, the service) a phase logs one line at most every two seconds.
//!
//! A run the service starts also reports to a [`LiveRun`] (set for the run's task with
//! [`reporting_to`]): its phase and counts, as `GET /api/v1/runs/ID` shows them while it goes on.

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

/// A run's progress while it goes on: its phase and counts, shared with whoever shows it.
#[derive(Debug, Default)]
pub struct LiveRun {
    inner: std::sync::Mutex<LiveCounts>,
}

#[derive(Debug, Default)]
struct LiveCounts {
    phase: &'static str,
    phase_started: Option<Instant>,
    phase_rows: u64,
    read: u64,
    planned: u64,
    delivered: u64,
    failed: u64,
}

/// What [`LiveRun::snapshot`] shows: the phase and counts of a run going on.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LiveProgress {
    /// `queued`, `prepare`, `read`, `plan`, `check`, `approval`, `deliver` or `commit`.
    pub phase: &'static str,
    /// Model rows read so far.
    pub read: u64,
    /// Rows the plan sends (known once the plan is made).
    pub planned: u64,
    /// Rows the destination acknowledged so far.
    pub delivered: u64,
    /// Rows the destination refused (or given up on) so far.
    pub failed: u64,
    /// Rows per second of the current phase since it began.
    pub rate: f64,
}

impl LiveRun {
    fn counts(&self) -> std::sync::MutexGuard<'_, LiveCounts> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enters `phase` (its rate counts from now).
    pub fn set_phase(&self, phase: &'static str) {
        let mut c = self.counts();
        if c.phase != phase {
            c.phase = phase;
            c.phase_started = Some(Instant::now());
            c.phase_rows = 0;
        }
    }

    /// The run's plan sends `rows`.
    pub fn set_planned(&self, rows: u64) {
        self.counts().planned = rows;
    }

    /// The phase and counts now.
    pub fn snapshot(&self) -> LiveProgress {
        let c = self.counts();
        let seconds = c.phase_started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        LiveProgress {
            phase: if c.phase.is_empty() {
                "queued"
            } else {
                c.phase
            },
            read: c.read,
            planned: c.planned,
            delivered: c.delivered,
            failed: c.failed,
            rate: if seconds > 0.0 {
                (c.phase_rows as f64 / seconds * 10.0).round() / 10.0
            } else {
                0.0
            },
        }
    }
}

tokio::task_local! {
    static LIVE: std::sync::Arc<LiveRun>;
}

/// Runs `work` reporting its progress to `live` (when given).
pub async fn reporting_to<F: std::future::Future>(
    live: Option<std::sync::Arc<LiveRun>>,
    work: F,
) -> F::Output {
    match live {
        Some(live) => LIVE.scope(live, work).await,
        None => work.await,
    }
}

/// The run's live progress on this task, if it reports to one.
pub(crate) fn live() -> Option<std::sync::Arc<LiveRun>> {
    LIVE.try_with(std::sync::Arc::clone).ok()
}

/// Enters `phase` in the run's live progress (if it reports to one) and in the `phase`
/// field of the run's log span (if it is in one).
pub(crate) fn enter_phase(phase: &'static str) {
    tracing::Span::current().record("phase", phase);
    if let Some(live) = live() {
        live.set_phase(phase);
    }
}

/// One phase's progress.
pub(crate) struct Progress {
    live: Option<std::sync::Arc<LiveRun>>,
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
        enter_phase(match what {
            "read" => "read",
            "planned" => "plan",
            _ => "deliver",
        });
        let live = live();
        Progress {
            live,
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
        if let Some(live) = &self.live {
            let mut c = live.counts();
            c.phase_rows += n;
            if self.what == "read" {
                c.read += n;
            }
        }
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

    /// Rows delivered and refused so far (the delivery phase's live counts).
    pub(crate) fn outcomes(&self, delivered: u64, failed: u64) {
        if let Some(live) = &self.live {
            let mut c = live.counts();
            c.delivered = delivered;
            c.failed = failed;
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
