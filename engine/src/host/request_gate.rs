//! The gate on a delivery's requests: how `max_in_flight` stays the number of requests out
//! to the destination at once while one more writer builds its next batch.
//!
//! A destination's `write` builds its request (for `webhook`, encoding a batch as JSON) and
//! then waits for the answer. With one writer per request in flight, the next batch could
//! not be built until the answer came back, and the receiver's parsing and the plugin's
//! encoding took turns on the cores. A delivery therefore opens one writer more than
//! `max_in_flight` and hands every writer the same gate: a writer takes a turn at its first
//! request of a batch and keeps it until the delivery has recorded that batch's
//! acknowledgements, so at most `max_in_flight` batches are ever out and unrecorded (what a
//! crash may re-send), in the order their writers asked (usually the plan's; a writer that
//! takes longer to encode its batch may ask after the next one). Waiting for a turn is not
//! charged to the call's wall-clock limit (see [`super::cpu_clock::CpuMeter::turn_wait`]).
//! A delivery that stops closes the gate: a writer still waiting sends nothing.
//!
//! The gate sits in the host's `http-send`, so it only holds for plugins that reach the
//! network through it: a destination whose component imports `wasi:sockets` gets exactly
//! `max_in_flight` writers (see [`super::Plugin::uses_sockets`]), and so does a sync with a
//! rate limit, which paces batches before they are built.

use super::cpu_clock::CpuMeter;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The delivery stopped (its gate was closed) before this writer had its turn.
#[derive(Debug, PartialEq)]
pub(crate) struct Stopped;

/// One writer's place at the gate shared by a delivery's writers.
pub(crate) struct RequestGate {
    turns: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
}

impl RequestGate {
    /// A place at the gate of `turns` (a semaphore of `max_in_flight` permits).
    pub(crate) fn new(turns: Arc<Semaphore>) -> RequestGate {
        RequestGate { turns, held: None }
    }

    /// Waits for this writer's turn, unless it holds one already (a batch split in several
    /// requests, or retried, keeps its turn); the wait is kept on `meter`, so it does not
    /// count against the call's wall-clock limit. An error when the delivery stopped
    /// meanwhile (the gate is closed): nothing more may be sent.
    pub(crate) async fn enter(&mut self, meter: &CpuMeter) -> Result<(), Stopped> {
        if self.held.is_some() {
            return Ok(());
        }
        meter.begin_turn_wait();
        let turn = self.turns.clone().acquire_owned().await;
        meter.end_turn_wait();
        self.held = Some(turn.map_err(|_| Stopped)?);
        Ok(())
    }

    /// Gives the turn back: the writer's batch is recorded.
    pub(crate) fn leave(&mut self) {
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writers, one turn: the second waits until the first leaves, a writer holding the
    /// turn enters again at once, and turns go in the order they were asked for.
    #[tokio::test]
    async fn one_writer_at_a_time_and_in_order() {
        let turns = Arc::new(Semaphore::new(1));
        let (mut a, b, c) = (
            RequestGate::new(turns.clone()),
            RequestGate::new(turns.clone()),
            RequestGate::new(turns.clone()),
        );
        let meter = CpuMeter::default();
        a.enter(&meter).await.unwrap();
        a.enter(&meter).await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        // A writer that takes its turn, notes it, and gives it back.
        let take_turn = |mut gate: RequestGate, name: char| {
            let order = order.clone();
            tokio::spawn(async move {
                gate.enter(&CpuMeter::default()).await.unwrap();
                order.lock().unwrap().push(name);
                gate.leave();
            })
        };
        let b_task = take_turn(b, 'b');
        // One runtime thread: yielding lets b run until it waits at the gate, before c asks.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let c_task = take_turn(c, 'c');
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            order.lock().unwrap().is_empty(),
            "nobody passes while a holds the turn"
        );
        a.leave();
        b_task.await.unwrap();
        c_task.await.unwrap();
        assert_eq!(*order.lock().unwrap(), vec!['b', 'c']);
    }

    /// A delivery that stops closes its gate: a writer waiting for its turn, or asking for
    /// one later, gets an error instead of sending.
    #[tokio::test]
    async fn a_closed_gate_lets_nothing_more_through() {
        let turns = Arc::new(Semaphore::new(1));
        let (mut a, mut b) = (
            RequestGate::new(turns.clone()),
            RequestGate::new(turns.clone()),
        );
        let meter = CpuMeter::default();
        a.enter(&meter).await.unwrap();
        let waiting = tokio::spawn(async move { b.enter(&CpuMeter::default()).await });
        tokio::task::yield_now().await;
        turns.close();
        assert_eq!(waiting.await.unwrap(), Err(Stopped));
        let mut c = RequestGate::new(turns);
        assert_eq!(c.enter(&meter).await, Err(Stopped));
        assert!(
            a.enter(&meter).await.is_ok(),
            "a writer holding its turn finishes its batch"
        );
    }
}
