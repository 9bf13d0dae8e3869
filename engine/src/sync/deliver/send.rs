//! Sending one batch: retries with backoff for retryable failures, halving batches refused
//! as a whole, isolating rows the destination names as bad.

use super::pacer::Pacer;
use super::writer::Writer;
use crate::domain::{Change, JournalOp};
use crate::host::CallError;
use crate::sync::commit::Sent;
use crate::sync::plan::PlannedRow;
use crate::sync::prepare::PreparedSync;
use crate::sync::run::Abort;
use backflow_plugin_sdk::{Batch, BatchBuilder, Column, Operation, PluginError, RowOutcome};
use std::time::{Duration, Instant};

/// Attempts per batch for retryable failures before its rows count as failed, when the
/// destination accepts nothing else either (an outage: fail fast, the next run resends).
pub(crate) const MAX_ATTEMPTS: u32 = 5;
/// How long a batch keeps retrying while the destination accepts other batches (an error
/// storm, not an outage): a batch must not fail by bad luck in a 50% error rate.
pub(crate) const RETRY_WINDOW: Duration = Duration::from_secs(300);
/// "Recently": an acknowledgement this fresh shows the destination is up.
const RECENT: Duration = Duration::from_secs(30);

/// When the destination last accepted a batch during this delivery, shared by the batches
/// in flight.
#[derive(Default)]
pub(crate) struct Health {
    last_ack: std::sync::Mutex<Option<Instant>>,
    /// The delivery stopped: no batch tries again.
    stopping: std::sync::atomic::AtomicBool,
}

impl Health {
    pub(crate) fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn acked(&self) {
        if let Ok(mut last) = self.last_ack.lock() {
            *last = Some(Instant::now());
        }
    }

    fn last_ack(&self) -> Option<Instant> {
        self.last_ack.lock().ok().and_then(|l| *l)
    }
}

/// Whether a batch that failed `attempt` times since `started` may try again: always within
/// [`MAX_ATTEMPTS`]; beyond, only while the destination accepted something in the last
/// [`RECENT`] and the batch has retried for less than [`RETRY_WINDOW`].
pub(crate) fn may_retry(
    attempt: u32,
    started: Instant,
    last_ack: Option<Instant>,
    now: Instant,
) -> bool {
    attempt < MAX_ATTEMPTS
        || (now.duration_since(started) < RETRY_WINDOW
            && last_ack.is_some_and(|t| now.duration_since(t) < RECENT))
}

/// Whether a destination refused every row of a batch with the same message: a verdict on
/// the batch, not on its rows.
pub(crate) fn refused_as_a_whole(outcomes: &[RowOutcome]) -> bool {
    match outcomes.first() {
        Some(RowOutcome::Rejected(first)) => outcomes
            .iter()
            .all(|o| matches!(o, RowOutcome::Rejected(m) if m == first)),
        _ => false,
    }
}

/// The batch of `rows` (their payloads) with `columns`, and which of its cells are present
/// (`None`: all of them).
pub(crate) fn build_batch(columns: &[Column], rows: &[PlannedRow]) -> (Batch, Option<Vec<u8>>) {
    let bytes: usize = rows.iter().map(|r| r.payload().len()).sum();
    let mut b = BatchBuilder::with_capacity(columns.to_vec(), bytes + 8);
    for r in rows {
        b.push_encoded_row(r.payload());
    }
    let present: Vec<Option<&[bool]>> = rows.iter().map(|r| r.present.as_deref()).collect();
    let present = crate::sync::field_rules::present_bitmap(&present, columns.len());
    (b.finish(), present)
}

/// One batch to send: the rows of one change, with the operation the sync's mode makes of it.
pub(crate) struct Outgoing<'a> {
    /// What the destination is asked to do with the rows.
    pub op: Operation,
    /// The change the rows are (added, changed, removed), for the run's counts.
    pub change: Change,
    /// The destination fields the rows carry, in order.
    pub columns: &'a [Column],
    /// The planned rows to send.
    pub rows: Vec<PlannedRow>,
}

/// Sends one batch through `writer`, retrying retryable failures with exponential backoff,
/// halving batches refused as a whole and isolating rows the destination names as bad.
/// Touches no shared state but the pacer, so several run at once (`max_in_flight`).
pub(crate) async fn send(
    writer: &mut Writer,
    pacer: &tokio::sync::Mutex<Pacer>,
    health: &Health,
    p: &PreparedSync,
    Outgoing {
        op,
        change,
        columns,
        mut rows,
    }: Outgoing<'_>,
) -> Sent {
    // Every update is read back first, including a row new to backflow that an update-mode
    // sync sends to a record the destination already holds; the read is paced like a write.
    if change == Change::Changed || op == Operation::Update {
        if super::if_empty::reads_back(p, columns) {
            pacer.lock().await.wait(rows.len()).await;
        }
        if let Err(e) = super::if_empty::leave_out_filled(writer, p, columns, &mut rows).await {
            let e = e.to_string();
            let rejected = rows.into_iter().map(|r| (r, e.clone())).collect();
            return Sent {
                change,
                acked: Vec::new(),
                rejected,
                result: Ok(()),
            };
        }
    }
    // Groups of rows still to send; a batch refused as a whole is split into halves.
    let mut groups: Vec<Vec<PlannedRow>> = vec![rows];
    let mut pending = Vec::new();
    let mut attempt = 0u32;
    let mut started = Instant::now();
    let mut last_error = String::new();
    let mut acked: Vec<JournalOp> = Vec::new();
    let mut rejected: Vec<(PlannedRow, String)> = Vec::new();
    let result = loop {
        if pending.is_empty() {
            match groups.pop() {
                Some(group) => {
                    pending = group;
                    attempt = 0;
                    started = Instant::now();
                    continue;
                }
                None => break Ok(()),
            }
        }
        if health.stopping() {
            // The delivery stopped: what is left of this batch was not acknowledged and
            // goes with the next run.
            break Ok(());
        }
        if attempt > 0 && !may_retry(attempt, started, health.last_ack(), Instant::now()) {
            for row in pending.drain(..) {
                rejected.push((
                    row,
                    format!("gave up after {attempt} attempts: {last_error}"),
                ));
            }
            break Ok(());
        }
        attempt += 1;
        pacer.lock().await.wait(pending.len()).await;
        let (batch, present) = build_batch(columns, &pending);
        let call_started = Instant::now();
        let written = writer.write(op, batch, present).await;
        crate::metrics::record_delivery(
            &p.sync.name,
            call_started.elapsed().as_secs_f64(),
            attempt > 1,
        );
        match written {
            Ok(outcomes) if pending.len() > 1 && refused_as_a_whole(&outcomes) => {
                // Every row refused for one reason: the destination could not say which
                // rows are bad (a 4xx for a JSON array, say). Halve the batch until the
                // bad rows stand alone, so the good ones still go through.
                let right = pending.split_off(pending.len() / 2);
                groups.push(right);
                groups.push(std::mem::take(&mut pending));
            }
            Ok(outcomes) => {
                if outcomes.iter().any(|o| matches!(o, RowOutcome::Accepted)) {
                    health.acked();
                }
                let sorted = sort_outcomes(change, pending, outcomes, &mut acked, &mut rejected);
                (pending, last_error) = (sorted.0, sorted.1.unwrap_or(last_error));
                if !pending.is_empty()
                    && !health.stopping()
                    && may_retry(attempt, started, health.last_ack(), Instant::now())
                {
                    backoff(attempt, None).await;
                }
            }
            Err(CallError::Plugin(PluginError::BadRow(bad)))
                if (bad.row_index as usize) < pending.len() =>
            {
                let row = pending.remove(bad.row_index as usize);
                rejected.push((row, bad.message));
                attempt -= 1;
            }
            Err(CallError::Plugin(
                e @ (PluginError::Retryable { .. } | PluginError::RateLimited { .. }),
            )) => {
                let retry_after = match &e {
                    PluginError::RateLimited { retry_after_ms, .. } => {
                        retry_after_ms.map(Duration::from_millis)
                    }
                    _ => None,
                };
                if !health.stopping() {
                    tracing::warn!(destination = %p.destination.name, attempt, "retrying batch: {e}");
                }
                last_error = e.to_string();
                if !health.stopping()
                    && may_retry(attempt, started, health.last_ack(), Instant::now())
                {
                    backoff(attempt, retry_after).await;
                }
            }
            Err(CallError::Plugin(PluginError::BadConfig(c))) => break Err(config_refused(p, &c)),
            Err(e) => {
                break Err(Abort::Destination(format!(
                    "destination {} failed: {e}",
                    p.destination.name
                )))
            }
        }
    };
    Sent {
        change,
        acked,
        rejected,
        result,
    }
}

/// Sorts a batch's row outcomes: accepted rows become journal ops in `acked`, refused ones
/// go to `rejected`. Returns the rows to try again, and the last retryable message if any.
fn sort_outcomes(
    change: Change,
    pending: Vec<PlannedRow>,
    outcomes: Vec<RowOutcome>,
    acked: &mut Vec<JournalOp>,
    rejected: &mut Vec<(PlannedRow, String)>,
) -> (Vec<PlannedRow>, Option<String>) {
    let mut retry = Vec::new();
    let mut last_error = None;
    for (row, outcome) in pending.into_iter().zip(outcomes) {
        match outcome {
            RowOutcome::Accepted => acked.push(match change {
                Change::Removed => JournalOp::Delete { key: row.key },
                _ => JournalOp::Upsert {
                    key: row.key,
                    fp: row.fp,
                    row: row.row,
                },
            }),
            RowOutcome::Rejected(m) => rejected.push((row, m)),
            RowOutcome::Retryable(m) => {
                last_error = Some(m);
                retry.push(row);
            }
        }
    }
    (retry, last_error)
}

/// The destination refused its config mid-delivery: the run stops, naming the key to fix.
fn config_refused(p: &PreparedSync, c: &backflow_plugin_sdk::ConfigError) -> Abort {
    let key = if c.field.is_empty() {
        p.destination.origin.key("config")
    } else {
        p.destination.origin.key(&format!("config.{}", c.field))
    };
    Abort::Destination(format!(
        "destination {}: {}: {key}: {}",
        p.destination.name,
        p.destination.origin.file.display(),
        c.message
    ))
}

/// Waits before a retry: exponential with jitter, or what the destination asked for, at
/// most a minute.
pub(crate) async fn backoff(attempt: u32, retry_after: Option<Duration>) {
    let exp = Duration::from_millis(200u64.saturating_mul(1 << attempt.min(6)));
    let jitter = Duration::from_millis(u64::from(ulid::Ulid::new().random() as u16 % 100));
    let wait = retry_after
        .unwrap_or(exp + jitter)
        .min(Duration::from_secs(60));
    tokio::time::sleep(wait).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_fails_fast_and_a_storm_keeps_retrying_within_the_window() {
        let t0 = Instant::now();
        let later = |s: u64| t0 + Duration::from_secs(s);
        // Nothing accepted lately: MAX_ATTEMPTS, then give up.
        assert!(may_retry(MAX_ATTEMPTS - 1, t0, None, later(1)));
        assert!(!may_retry(MAX_ATTEMPTS, t0, None, later(1)));
        // Other batches got through a moment ago: keep going, up to the window.
        assert!(may_retry(
            MAX_ATTEMPTS + 10,
            t0,
            Some(later(100)),
            later(110)
        ));
        assert!(
            !may_retry(MAX_ATTEMPTS + 10, t0, Some(later(100)), later(140)),
            "the last success is stale"
        );
        assert!(
            !may_retry(MAX_ATTEMPTS + 10, t0, Some(later(299)), later(301)),
            "the window is over"
        );
    }
}
