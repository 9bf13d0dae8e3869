//! The CPU clock of a plugin call: how much processor time the call has really used.
//!
//! The budget (`limits.call_timeout_ms`) is CPU time, not wall time. A wall clock minus the
//! time spent in host calls would also charge the guest for every moment its thread was not
//! running it: the OS descheduling the process on a busy machine (or stopping it with
//! SIGSTOP), or the async runtime running other tasks after the guest yielded at an epoch
//! tick. So the clock reads the CPU time of the thread that polls the call
//! (`CLOCK_THREAD_CPUTIME_ID`), only while it polls it: [`Charged`] wraps the call's future
//! and adds up, poll by poll, the thread CPU time spent inside; the epoch callback adds the
//! poll in progress. A wasmtime guest runs on a fiber on the polling thread, so its
//! instructions land on that thread's clock; waits on the network return `Pending` and
//! cost nothing. Host functions the guest calls synchronously are charged to it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// CPU time the calling thread has used since it started.
#[cfg(unix)]
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on every
    // unix this builds for (Linux, macOS, the BSDs).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Without a thread CPU clock, wall time (which over-charges a descheduled guest).
#[cfg(not(unix))]
pub(crate) fn thread_cpu_time() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// The CPU time one call has used so far, shared by the call's [`Charged`] future and the
/// store's epoch callback.
#[derive(Debug, Default)]
pub(crate) struct CpuMeter {
    /// Nanoseconds used in the polls that have finished.
    charged_ns: AtomicU64,
    /// The polling thread's CPU time when the poll in progress began, in nanoseconds plus
    /// one (0: no poll in progress).
    poll_began_ns: AtomicU64,
    /// Time the call has waited for its turn to send (see `request_gate`): added to its
    /// wall-clock limit.
    turn_wait: std::sync::Mutex<TurnWait>,
}

/// A call's waits for its turn to send: those that ended, and the one under way.
#[derive(Debug, Default)]
struct TurnWait {
    ended: Duration,
    since: Option<tokio::time::Instant>,
}

impl CpuMeter {
    /// Starts a new call at zero.
    pub(crate) fn reset(&self) {
        self.charged_ns.store(0, Ordering::Relaxed);
        self.poll_began_ns.store(0, Ordering::Relaxed);
        if let Ok(mut wait) = self.turn_wait.lock() {
            *wait = TurnWait::default();
        }
    }

    /// The call starts waiting for its turn to send: for other writers' requests to be
    /// answered and recorded, the destination's time, not this call's.
    pub(crate) fn begin_turn_wait(&self) {
        if let Ok(mut wait) = self.turn_wait.lock() {
            wait.since = Some(tokio::time::Instant::now());
        }
    }

    /// The call has its turn (or gave up waiting for it).
    pub(crate) fn end_turn_wait(&self) {
        if let Ok(mut wait) = self.turn_wait.lock() {
            if let Some(since) = wait.since.take() {
                wait.ended += since.elapsed();
            }
        }
    }

    /// How long the call has waited for its turn to send so far, the wait under way
    /// included, and whether it is waiting now.
    pub(crate) fn turn_wait(&self) -> (Duration, bool) {
        match self.turn_wait.lock() {
            Ok(wait) => (
                wait.ended + wait.since.map_or(Duration::ZERO, |s| s.elapsed()),
                wait.since.is_some(),
            ),
            Err(_) => (Duration::ZERO, false),
        }
    }

    /// CPU time used so far, including the poll in progress. Call it on the polling thread
    /// (the epoch callback runs there).
    pub(crate) fn used(&self) -> Duration {
        let mut ns = self.charged_ns.load(Ordering::Relaxed);
        let began = self.poll_began_ns.load(Ordering::Relaxed);
        if began > 0 {
            ns = ns.saturating_add(nanos(thread_cpu_time()).saturating_sub(began - 1));
        }
        Duration::from_nanos(ns)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A call's future with its CPU time metered (see the module documentation).
pub(crate) struct Charged<F> {
    meter: Arc<CpuMeter>,
    call: Pin<Box<F>>,
}

impl<F: Future> Charged<F> {
    pub(crate) fn new(meter: Arc<CpuMeter>, call: F) -> Charged<F> {
        Charged {
            meter,
            call: Box::pin(call),
        }
    }
}

impl<F: Future> Future for Charged<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let began = nanos(thread_cpu_time());
        self.meter
            .poll_began_ns
            .store(began.saturating_add(1), Ordering::Relaxed);
        let result = self.call.as_mut().poll(cx);
        let spent = nanos(thread_cpu_time()).saturating_sub(began);
        self.meter.poll_began_ns.store(0, Ordering::Relaxed);
        self.meter.charged_ns.fetch_add(spent, Ordering::Relaxed);
        result
    }
}

/// While a call waits for its turn to send, its own time stands still and its deadline moves
/// with the clock: it is looked at again this often meanwhile.
const TURN_RECHECK: Duration = Duration::from_millis(100);

/// Runs a call within its wall-clock limit, `wall` plus whatever time the call waited for
/// its turn to send (which `meter` keeps); `None` if it ran out.
pub(crate) async fn within_wall<F: Future>(
    wall: Duration,
    meter: Arc<CpuMeter>,
    call: F,
) -> Option<F::Output> {
    let started = tokio::time::Instant::now();
    let mut call = std::pin::pin!(call);
    loop {
        let (waited, waiting) = meter.turn_wait();
        let mut deadline = started + wall + waited;
        if waiting {
            deadline = deadline.max(tokio::time::Instant::now() + TURN_RECHECK);
        }
        match tokio::time::timeout_at(deadline, call.as_mut()).await {
            Ok(output) => return Some(output),
            Err(_) => {
                // Waiting for its turn, or it waited meanwhile: its deadline moved on.
                let (waited, waiting) = meter.turn_wait();
                if waiting || started + wall + waited > tokio::time::Instant::now() {
                    continue;
                }
                return None;
            }
        }
    }
}

/// The clock of the current call in a plugin's store.
#[derive(Debug)]
pub(crate) struct CallClock {
    pub(crate) meter: Arc<CpuMeter>,
    pub(crate) budget: Duration,
    /// Wall-clock bound on one call, whatever the guest is waiting on.
    pub(crate) wall: Duration,
    pub(crate) timed_out: bool,
}

impl CallClock {
    pub(crate) fn new(budget: Duration, wall: Duration) -> CallClock {
        CallClock {
            meter: Arc::default(),
            budget,
            wall,
            timed_out: false,
        }
    }

    pub(crate) fn start(&mut self) {
        self.meter.reset();
        self.timed_out = false;
    }

    /// Whether the call has used up its CPU budget (checked at each epoch tick).
    pub(crate) fn over_budget(&self) -> bool {
        self.meter.used() > self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that is ready on its second poll.
    struct Twice(bool);
    impl Future for Twice {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn time_between_polls_is_not_charged() {
        let meter = Arc::new(CpuMeter::default());
        let mut charged = std::pin::pin!(Charged::new(meter.clone(), Twice(false)));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(charged.as_mut().poll(&mut cx).is_pending());
        // Between the polls the thread sleeps: descheduled, no CPU used by the call.
        std::thread::sleep(Duration::from_millis(200));
        assert!(charged.as_mut().poll(&mut cx).is_ready());
        assert!(
            meter.used() < Duration::from_millis(200),
            "the sleep was charged: {:?}",
            meter.used()
        );
    }

    /// A call's wall-clock limit runs out as set, unless the call waited for its turn to
    /// send: that time is added to it, however long the wait (the clock is tokio's, paused
    /// and advanced by hand).
    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_turn_moves_the_wall_clock_deadline() {
        let wall = Duration::from_secs(10);
        let meter = Arc::new(CpuMeter::default());
        let slow = within_wall(
            wall,
            meter.clone(),
            tokio::time::sleep(Duration::from_secs(15)),
        );
        assert!(slow.await.is_none(), "15 s of its own against 10 s");

        // 2 s of its own, then 25 s waiting for a turn (longer than the limit), then 7 s.
        let call = |meter: Arc<CpuMeter>, own_after: u64| async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            meter.begin_turn_wait();
            tokio::time::sleep(Duration::from_secs(25)).await;
            meter.end_turn_wait();
            tokio::time::sleep(Duration::from_secs(own_after)).await;
        };
        let meter = Arc::new(CpuMeter::default());
        assert!(
            within_wall(wall, meter.clone(), call(meter.clone(), 7))
                .await
                .is_some(),
            "9 s of its own"
        );
        assert_eq!(meter.turn_wait(), (Duration::from_secs(25), false));

        meter.reset();
        assert_eq!(meter.turn_wait(), (Duration::ZERO, false));
        assert!(
            within_wall(wall, meter.clone(), call(meter.clone(), 9))
                .await
                .is_none(),
            "11 s of its own"
        );
    }

    #[test]
    fn the_poll_in_progress_counts() {
        let meter = CpuMeter::default();
        meter
            .poll_began_ns
            .store(nanos(thread_cpu_time()) + 1, Ordering::Relaxed);
        let mut x = 0u64;
        let until = std::time::Instant::now() + Duration::from_millis(30);
        while std::time::Instant::now() < until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(meter.used() > Duration::ZERO);
    }
}
