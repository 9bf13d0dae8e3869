//! Stage 6: delivery. The plan is sent change by change (deletes, then updates, then
//! inserts) in batches through a pool of writers (one plugin instance each: `max_in_flight`
//! of them, and one more building the next batch while the others' requests are out),
//! paced by the sync's rate limit; every finished batch is handed to the
//! [`Committer`](super::commit::Committer).

pub(crate) mod if_empty;
pub mod pacer;
pub mod send;
pub mod writer;

use super::commit::{Committer, Sent};
use super::field_rules::PayloadRules;
use super::plan::file::PlanReader;
use super::plan::{Payload, Plan, PlannedRow};
use super::prepare::{open_error, primary_key_fields, PreparedSync};
use super::progress::Progress;
use super::run::{Abort, StopSignal, Tally};
use crate::domain::{operation_for, Change};
use crate::host::{DestinationInstance, PluginHost};
use backflow_plugin_sdk::codec::{read_array_len, write_row_header};
use backflow_plugin_sdk::{Column, Operation, SyncContext};
use futures::StreamExt;
use pacer::Pacer;
use send::{send, Outgoing};
use std::time::{Duration, Instant};
use writer::Writer;

/// What looks on while a delivery goes on: the service's stop signal, and the delivery
/// debugger's recorder given to every writer.
#[derive(Clone, Copy, Default)]
pub(crate) struct Watch<'a> {
    /// Set by a service shutting down: no new batch starts.
    pub stop: Option<&'a StopSignal>,
    /// Sees the writers' HTTP requests (see `host::capture`).
    pub capture: Option<&'a std::sync::Arc<crate::host::RequestCapture>>,
}

/// Sends the plan. Returns when every planned row was sent (or refused), or when a batch
/// failed in a way that stops the run, the time budget ran out, or the plan could not be
/// read; batches in flight then still finish and are recorded.
pub(crate) async fn deliver(
    host: &PluginHost,
    p: &PreparedSync,
    plan: &Plan,
    run_id: &str,
    committer: &mut Committer<'_>,
    tally: &mut Tally,
    watch: Watch<'_>,
) -> Result<(), Abort> {
    let started = Instant::now();
    let pacer = Pacer::new(p.rate_limit);
    let turns = std::sync::Arc::new(tokio::sync::Semaphore::new(p.sync.max_in_flight as usize));
    let one_ahead = builds_one_ahead(p, &pacer);
    let mut idle = open_writers(host, p, run_id, one_ahead, &turns, watch.capture).await?;
    let pacer = tokio::sync::Mutex::new(pacer);
    let health = send::Health::default();
    // A budget too far away to add to the clock is no deadline (the config bounds it anyway).
    let deadline = p
        .sync
        .time_budget_s
        .and_then(|s| started.checked_add(Duration::from_secs(s)));
    let mut progress = Progress::new("delivered", tally.planned.total());
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut stop: Option<Abort> = None;
    // Takes a finished send: its rows are recorded, then its writer's turn to send ends and
    // the writer is free again.
    let mut settle =
        |(mut writer, sent): (Writer, Sent), idle: &mut Vec<Writer>, tally: &mut Tally| {
            let n = (sent.acked.len() + sent.rejected.len()) as u64;
            let result = record_counted(committer, sent, tally, p, &progress);
            writer.end_turn();
            idle.push(writer);
            progress.advance(n);
            result
        };
    // Deletes first, then updates, then inserts (each group finished before the next): a key
    // that moved between rows never exists twice in the destination.
    'changes: for change in [Change::Removed, Change::Changed, Change::Added] {
        let Some(op) = operation_for(p.sync.mode, change) else {
            continue;
        };
        let (columns, event_ids) = columns_of(p, plan, change, op);
        let mut reader = match plan.rows(change) {
            Ok(r) => r,
            Err(e) => {
                stop = Some(Abort::io("reading the plan")(e));
                break 'changes;
            }
        };
        loop {
            let rows = match next_batch(&mut reader, (p, plan), change, event_ids) {
                Ok(rows) => rows,
                Err(e) => {
                    stop = Some(e);
                    break 'changes;
                }
            };
            if rows.is_empty() {
                break;
            }
            if let Some(e) = must_stop(p, watch.stop, deadline, tally) {
                stop = Some(e);
                break 'changes;
            }
            // Wait for a free writer, recording what finished meanwhile.
            while idle.is_empty() {
                let Some(done) = in_flight.next().await else {
                    break;
                };
                if let Err(e) = settle(done, &mut idle, tally) {
                    stop = Some(e);
                    break 'changes;
                }
            }
            let Some(mut writer) = idle.pop() else {
                stop = Some(Abort::Internal("no destination writer is free".into()));
                break 'changes;
            };
            let (pacer, health, columns) = (&pacer, &health, columns.clone());
            in_flight.push(async move {
                let batch = Outgoing {
                    op,
                    change,
                    columns: &columns,
                    rows,
                };
                let sent = send(&mut writer, pacer, health, p, batch).await;
                (writer, sent)
            });
        }
        // Finish this change before starting the next.
        while let Some(done) = in_flight.next().await {
            if let Err(e) = settle(done, &mut idle, tally) {
                stop = Some(e);
                break 'changes;
            }
        }
    }
    if stop.is_some() {
        // Nothing more goes out: a writer still waiting for its turn sends nothing, and a
        // batch under way does not try again (their rows go with the next run).
        health.stop();
        turns.close();
    }
    // Batches still in flight after a stop: let them end and record what they delivered.
    while let Some(done) = in_flight.next().await {
        if let Err(e) = settle(done, &mut idle, tally) {
            tracing::warn!(sync = %p.sync.name, "{e}");
        }
    }
    drop(in_flight);
    if stop.is_none() {
        progress.finish();
    }
    let finished = finish_writers(p, idle).await;
    match stop {
        Some(e) => Err(e),
        None => finished,
    }
}

/// Records a finished send and counts its rows as they are recorded (in the metrics and the
/// run's live progress), so both move while a long run goes on, not only at its end.
fn record_counted(
    committer: &mut Committer<'_>,
    sent: Sent,
    tally: &mut Tally,
    p: &PreparedSync,
    progress: &Progress,
) -> Result<(), Abort> {
    let before = (tally.delivered, tally.failed);
    let result = committer.record(sent, tally);
    crate::metrics::record_rows(&p.sync.name, before, (tally.delivered, tally.failed));
    progress.outcomes(tally.delivered.total(), tally.failed.total());
    result
}

/// Whether one more writer builds its batch while the others' requests are out, taking
/// turns: one writer (one plugin instance, one store) per request in flight, and one more
/// that builds its batch meanwhile, when the writers' requests can take turns: at most
/// `max_in_flight` of them are out at once, and each writer's turn lasts until its batch is
/// recorded (see `host::request_gate`).
/// Not with a rate limit: the pacer books a batch's slot before the batch is built, so
/// batches waiting for their turn would go out together when it came.
fn builds_one_ahead(p: &PreparedSync, pacer: &Pacer) -> bool {
    !pacer.paces()
        && p.destination_plugin
            .as_ref()
            .is_some_and(|plugin| !plugin.uses_sockets)
}

/// Opens the destination's writers: `max_in_flight` of them, and one more when they take
/// turns (`one_ahead`); their requests are shown to `capture` (the delivery debugger).
async fn open_writers(
    host: &PluginHost,
    p: &PreparedSync,
    run_id: &str,
    one_ahead: bool,
    turns: &std::sync::Arc<tokio::sync::Semaphore>,
    capture: Option<&std::sync::Arc<crate::host::RequestCapture>>,
) -> Result<Vec<Writer>, Abort> {
    let context = SyncContext {
        sync_name: p.sync.name.clone(),
        primary_key: primary_key_fields(p),
        run_id: run_id.to_string(),
    };
    let mut writers: Vec<Writer> = Vec::new();
    for _ in 0..p.sync.max_in_flight + u32::from(one_ahead) {
        writers.push(match &p.destination_plugin {
            None => Writer::Noop,
            Some(plugin) => {
                let mut writer = DestinationInstance::open(
                    host,
                    plugin,
                    &p.destination.grants,
                    p.destination.limits,
                    &p.destination.config_json,
                    &context,
                )
                .await
                .map_err(|e| Abort::Destination(open_error(p, &p.destination, &e)))?;
                if one_ahead {
                    writer.take_turns(turns.clone());
                }
                if let Some(capture) = capture {
                    writer.capture_requests(capture.clone(), context.primary_key.clone());
                }
                Writer::Wasm(writer)
            }
        });
    }
    Ok(writers)
}

/// Ends every writer; the last failure, if any.
async fn finish_writers(p: &PreparedSync, writers: Vec<Writer>) -> Result<(), Abort> {
    let mut finish = Ok(());
    for writer in writers {
        if let Err(e) = writer.finish().await {
            finish = Err(e);
        }
    }
    finish.map_err(|e| {
        Abort::Destination(format!(
            "destination {} failed to finish: {e}",
            p.destination.name
        ))
    })
}

/// The fields a change sends, and whether its rows carry an event id (`append` mode).
fn columns_of(p: &PreparedSync, plan: &Plan, change: Change, op: Operation) -> (Vec<Column>, bool) {
    match (change, op) {
        (Change::Removed, _) => (plan.key_columns.clone(), false),
        (_, Operation::Append) => {
            let mut c = plan.columns.clone();
            c.push(Column {
                name: p.sync.event_id_field.clone(),
                value_type: backflow_plugin_sdk::ValueType::Text,
                nullable: false,
            });
            (c, true)
        }
        _ => (plan.columns.clone(), false),
    }
}

/// The next batch of a change's rows, with their payloads: up to `batch_size` rows and
/// [`MAX_BATCH_BYTES`]; empty at the end of the change.
fn next_batch(
    reader: &mut PlanReader<'_>,
    (p, plan): (&PreparedSync, &Plan),
    change: Change,
    event_ids: bool,
) -> Result<Vec<PlannedRow>, Abort> {
    let rules = PayloadRules::new(&p.sync.field_rules, &plan.columns, &plan.key_columns);
    // Grown as rows come: a large batch_size must not allocate up front. A batch also
    // ends at MAX_BATCH_BYTES, so memory is bounded in bytes whatever the rows weigh.
    let mut rows = Vec::with_capacity((p.batch_size as usize).min(4096));
    let mut bytes = 0usize;
    while rows.len() < p.batch_size as usize && bytes < MAX_BATCH_BYTES {
        let Some(mut row) = reader.next().map_err(Abort::io("reading the plan"))? else {
            break;
        };
        row.payload = if change == Change::Removed {
            Payload::Key
        } else if event_ids {
            Payload::Built(with_event_id(&row.row, &p.sync.name, &row.key))
        } else {
            Payload::Row
        };
        with_field_rules(&mut row, p, change, event_ids, &rules);
        let size = row.payload().len();
        if size > MAX_BATCH_BYTES {
            return Err(Abort::Destination(format!(
                "row {} is {} MiB, more than the {} MiB one batch may carry to the destination plugin; nothing more was sent",
                row.key_text(),
                size >> 20,
                MAX_BATCH_BYTES >> 20
            )));
        }
        bytes += size;
        rows.push(row);
    }
    Ok(rows)
}

/// Leaves out of a row's payload the fields its sync's field rules leave out (absent cells
/// hold null; the row says which are present).
fn with_field_rules(
    row: &mut PlannedRow,
    p: &PreparedSync,
    change: Change,
    event_ids: bool,
    rules: &PayloadRules,
) {
    let Some(mut present) = rules.present(change, &row.row, &row.before) else {
        return;
    };
    let sent = PayloadRules::payload(&row.row, &present);
    row.payload = Payload::Built(if event_ids {
        present.push(true);
        with_event_id(&sent, &p.sync.name, &row.key)
    } else {
        sent
    });
    row.present = Some(present);
}

/// Why no further batch may start: the service is shutting down, or the time budget ran out.
fn must_stop(
    p: &PreparedSync,
    stop_signal: Option<&StopSignal>,
    deadline: Option<Instant>,
    tally: &Tally,
) -> Option<Abort> {
    if stop_signal.is_some_and(|s| s.is_stopped()) {
        return Some(Abort::Shutdown { left: tally.left() });
    }
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Some(Abort::TimeBudget {
            seconds: p.sync.time_budget_s.unwrap_or(0),
            key: p.sync.origin.key("time_budget_s"),
            left: tally.left(),
        });
    }
    None
}

/// The most bytes of rows one batch carries to the destination plugin (a batch ends at
/// `batch_size` rows or here, whichever comes first). A single larger row is an error.
pub(crate) const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Appends a stable event id (derived from the sync and the row's key) to an encoded row.
pub(crate) fn with_event_id(row: &[u8], sync: &str, key: &[u8]) -> Vec<u8> {
    let mut rest = row;
    let n = read_array_len(&mut rest).unwrap_or(0);
    let mut out = Vec::with_capacity(row.len() + 40);
    write_row_header(&mut out, n as u32 + 1);
    out.extend_from_slice(rest);
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(sync.as_bytes());
    h.update(&[0]);
    h.update(key);
    backflow_plugin_sdk::codec::write_text(&mut out, &format!("{:032x}", h.digest128()));
    out
}
