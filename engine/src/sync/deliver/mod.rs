//! Stage 6: delivery. The plan is sent change by change (deletes, then updates, then
//! inserts) in batches through a pool of writers (one plugin instance each: `max_in_flight`
//! of them, and one more building the next batch while the others' requests are out),
//! paced by the sync's rate limit; every finished batch is handed to the
//! [`Committer`](super::commit::Committer).

pub mod pacer;
pub mod send;
pub mod writer;

use super::commit::Committer;
use super::plan::{Payload, Plan};
use super::prepare::{open_error, primary_key_fields, PreparedSync};
use super::progress::Progress;
use super::{Abort, Tally};
use crate::domain::{operation_for, Change};
use crate::host::{DestinationInstance, PluginHost};
use backflow_plugin_sdk::codec::{read_array_len, write_row_header};
use backflow_plugin_sdk::{Column, Operation, SyncContext};
use futures::StreamExt;
use pacer::{effective_rate_limit, Pacer};
use send::{send, Sent};
use std::time::{Duration, Instant};
use writer::Writer;

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
    stop_signal: Option<&crate::sync::StopSignal>,
) -> Result<(), Abort> {
    let started = Instant::now();
    let context = SyncContext {
        sync_name: p.sync.name.clone(),
        primary_key: primary_key_fields(p),
        run_id: run_id.to_string(),
    };
    // One writer (one plugin instance, one store) per request in flight, and one more that
    // builds its batch meanwhile, when the writers' requests can take turns: at most
    // `max_in_flight` of them are out at once, and each writer's turn lasts until its batch
    // is recorded (see `host::request_gate`).
    // Not with a rate limit: the pacer books a batch's slot before the batch is built, so
    // batches waiting for their turn would go out together when it came.
    let pacer = Pacer::new(effective_rate_limit(p).map_err(Abort)?);
    let paced = pacer.paces();
    let turns = std::sync::Arc::new(tokio::sync::Semaphore::new(p.sync.max_in_flight as usize));
    let one_ahead = !paced
        && p.destination_plugin
            .as_ref()
            .is_some_and(|plugin| !plugin.uses_sockets);
    let mut idle: Vec<Writer> = Vec::new();
    for _ in 0..p.sync.max_in_flight + u32::from(one_ahead) {
        idle.push(match &p.destination_plugin {
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
                .map_err(|e| Abort(open_error(p, &p.destination, &e)))?;
                if one_ahead {
                    writer.take_turns(turns.clone());
                }
                Writer::Wasm(writer)
            }
        });
    }
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
            let result = committer.record(sent, tally);
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
        let (columns, event_ids) = match (change, op) {
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
        };
        let mut reader = match plan.rows(change) {
            Ok(r) => r,
            Err(e) => {
                stop = Some(Abort(format!("reading the plan: {e}")));
                break 'changes;
            }
        };
        loop {
            // Grown as rows come: a large batch_size must not allocate up front. A batch also
            // ends at MAX_BATCH_BYTES, so memory is bounded in bytes whatever the rows weigh.
            let mut rows = Vec::with_capacity((p.batch_size as usize).min(4096));
            let mut bytes = 0usize;
            while rows.len() < p.batch_size as usize && bytes < MAX_BATCH_BYTES {
                match reader.next() {
                    Ok(Some(mut row)) => {
                        row.payload = if change == Change::Removed {
                            Payload::Key
                        } else if event_ids {
                            Payload::Built(with_event_id(&row.row, &p.sync.name, &row.key))
                        } else {
                            Payload::Row
                        };
                        let size = row.payload().len();
                        if size > MAX_BATCH_BYTES {
                            stop = Some(Abort(format!(
                                "row {} is {} MiB, more than the {} MiB one batch may carry to the destination plugin; nothing more was sent",
                                row.key_text(),
                                size >> 20,
                                MAX_BATCH_BYTES >> 20
                            )));
                            break 'changes;
                        }
                        bytes += size;
                        rows.push(row);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        stop = Some(Abort(format!("reading the plan: {e}")));
                        break 'changes;
                    }
                }
            }
            if rows.is_empty() {
                break;
            }
            if stop_signal.is_some_and(|s| s.is_stopped()) {
                let left = tally.planned.total() - tally.delivered.total() - tally.failed.total();
                stop = Some(Abort(format!(
                    "{SHUTDOWN_STOP}; {left} planned rows were not sent and go with the next run"
                )));
                break 'changes;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let left = tally.planned.total() - tally.delivered.total() - tally.failed.total();
                stop = Some(Abort(format!(
                    "stopped after the time budget of {} s ({}); {left} planned rows were not sent and go with the next run",
                    p.sync.time_budget_s.unwrap_or(0),
                    p.sync.origin.key("time_budget_s")
                )));
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
                stop = Some(Abort(
                    "internal error: no destination writer is free".into(),
                ));
                break 'changes;
            };
            let (pacer, health, columns) = (&pacer, &health, columns.clone());
            in_flight.push(async move {
                let sent = send(&mut writer, pacer, health, p, op, change, &columns, rows).await;
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
    let mut finish = Ok(());
    for writer in idle {
        if let Err(e) = writer.finish().await {
            finish = Err(e);
        }
    }
    if let Some(e) = stop {
        return Err(e);
    }
    finish.map_err(|e| {
        Abort(format!(
            "destination {} failed to finish: {e}",
            p.destination.name
        ))
    })
}

/// How a run stopped by a shutting-down service begins its error (and becomes `interrupted`).
pub(crate) const SHUTDOWN_STOP: &str = "stopped: the service is shutting down";

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
