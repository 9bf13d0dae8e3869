//! Sources: reading the query to the end with small and large `max-rows`, every batch
//! within the limit and in the declared columns.

use super::options::Options;
use super::report::{describe_error, Outcome, Report};
use crate::host::{Plugin, PluginHost, SourceInstance};

/// Sources: how far each pass reads at most.
const SOURCE_BATCH_BUDGET: u64 = 5_000;
const SOURCE_ROW_BUDGET: u64 = 1_000_000;

/// Runs the source checks: malformed config, then two passes over the query (one row per
/// batch, then up to 1000) that must find the same rows.
pub(super) async fn check_source(
    report: &mut Report,
    host: &PluginHost,
    plugin: &Plugin,
    options: &Options,
) {
    let malformed = SourceInstance::open(
        host,
        plugin,
        &options.grants,
        options.limits,
        "{not json",
        &options.query,
    )
    .await;
    report.record_malformed_open(
        &malformed,
        "opened a reader with the config text `{not json`",
    );
    if let Ok(instance) = malformed {
        instance.close().await;
    }
    let mut counts = Vec::new();
    for max_rows in [1u32, 1000] {
        let name = format!("read to the end, max-rows {max_rows}");
        let mut reader = match SourceInstance::open(
            host,
            plugin,
            &options.grants,
            options.limits,
            &options.config,
            &options.query,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                report.record(name, Outcome::Fail, format!("open: {}", describe_error(&e)));
                return;
            }
        };
        let pass = read_to_end(&mut reader, max_rows).await;
        reader.close().await;
        match pass.problem {
            None => {
                let note = if pass.stopped_early {
                    " (stopped there: enough to judge)"
                } else {
                    ""
                };
                report.record(
                    name,
                    Outcome::Pass,
                    format!(
                        "{} rows in {} batches, {} columns{note}",
                        pass.rows, pass.batches, pass.columns
                    ),
                );
                counts.push(if pass.stopped_early {
                    None
                } else {
                    Some(pass.rows)
                });
            }
            Some(p) => {
                report.record(name, Outcome::Fail, p);
                return;
            }
        }
    }
    if let [Some(small), Some(large)] = counts[..] {
        if small != large {
            report.record(
                "the same rows whatever the batch size",
                Outcome::Fail,
                format!("{small} rows with max-rows 1, {large} with 1000"),
            );
        }
    }
}

/// What one pass over the query found.
struct ReadPass {
    rows: u64,
    batches: u64,
    /// The columns the reader declared.
    columns: usize,
    /// Whether the pass stopped at the budget rather than at the end of the model.
    stopped_early: bool,
    /// The first way the source broke the contract, if any.
    problem: Option<String>,
}

/// Reads batches of at most `max_rows` until the end (or the budget), checking each:
/// within the limit, in the declared columns, decodable; and an end after empty batches.
async fn read_to_end(reader: &mut SourceInstance, max_rows: u32) -> ReadPass {
    let columns = reader.columns().to_vec();
    let (mut rows, mut batches, mut empty_in_a_row) = (0u64, 0u64, 0u32);
    let mut stopped_early = false;
    let problem = loop {
        // Enough to see the source keep the contract; a large model need not be read
        // to its end (then both passes stop at the same row count).
        if batches >= SOURCE_BATCH_BUDGET || rows >= SOURCE_ROW_BUDGET {
            stopped_early = true;
            break None;
        }
        match reader.next_batch(max_rows).await {
            Ok(None) => break None,
            Ok(Some(batch)) => {
                batches += 1;
                rows += u64::from(batch.row_count);
                empty_in_a_row = if batch.row_count == 0 {
                    empty_in_a_row + 1
                } else {
                    0
                };
                if empty_in_a_row >= 1000 {
                    break Some(format!("{empty_in_a_row} empty batches in a row without an end (return none when the model is exhausted)"));
                }
                if batch.row_count > max_rows {
                    break Some(format!(
                        "batch {batches} holds {} rows, more than max-rows {max_rows}",
                        batch.row_count
                    ));
                }
                if batch.columns != columns {
                    break Some(format!(
                        "batch {batches} has other columns than `columns()` declared"
                    ));
                }
                if let Err(e) = batch.decode() {
                    break Some(format!("batch {batches} does not decode: {e}"));
                }
            }
            Err(e) => break Some(describe_error(&e)),
        }
    };
    ReadPass {
        rows,
        batches,
        columns: columns.len(),
        stopped_early,
        problem,
    }
}
