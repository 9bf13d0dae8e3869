//! Contract version 0.3.0 (`wit/v0.3.0/plugin.wit`, frozen): its generated bindings and
//! wrappers ([`super::common::contract_version!`]), its delta from 0.2.0 for what the macro
//! writes once, and the calls only this version has.
//!
//! One minor version for every need of round 3 (`docs/design/contract-v0.3.0.md`): the
//! spec's `capabilities`; `row-batch.present` (the engine sends none yet); a check is told
//! the plan's `purpose` and an optional `model-rows`; a policy sees plugin changes and
//! built-in requirements and answers a record that may waive a built-in rule; and, below,
//! `destination.operations-for`, `writer.read` and the source's `warehouse` interface.

use backflow_plugin_sdk::warehouse as wh;

/// The export every plugin of this version has.
pub const PLUGIN_EXPORT: &str = "backflow:plugin/plugin@0.3.0";

/// The `warehouse` interface a 0.3.0 source exports.
pub const WAREHOUSE_EXPORT: &str = "backflow:plugin/warehouse@0.3.0";

/// The `destination` interface a 0.3.0 destination exports.
pub const DESTINATION_EXPORT: &str = "backflow:plugin/destination@0.3.0";

// The newest version's `host` records, which the macro's `host` impl converts to.
use super::newest_host as newest;

super::common::contract_version!("../wit/v0.3.0");

use source::exports::backflow::plugin::warehouse as wit_warehouse;

/// The encoding the plugin's spec asks for.
fn row_encoding(spec: &wit::PluginSpec) -> sdk::RowEncoding {
    match spec.row_encoding {
        wit::RowEncoding::Msgpack => sdk::RowEncoding::Msgpack,
        wit::RowEncoding::Json => sdk::RowEncoding::Json,
    }
}

/// An empty outcome list for a non-empty batch means every row was accepted.
const EMPTY_OUTCOMES_ACCEPT_ALL: bool = true;

/// What the spec declares.
fn capabilities(spec: &wit::PluginSpec) -> Vec<sdk::Capability> {
    spec.capabilities
        .iter()
        .map(|c| match c {
            wit::Capability::WarehouseDiff => sdk::Capability::WarehouseDiff,
            wit::Capability::CursorRead => sdk::Capability::CursorRead,
            wit::Capability::WarehouseLogs => sdk::Capability::WarehouseLogs,
            wit::Capability::ReadBack => sdk::Capability::ReadBack,
            wit::Capability::FieldPresence => sdk::Capability::FieldPresence,
        })
        .collect()
}

/// A batch as the engine sends it: every cell present (a batch with absent cells, from
/// field rules, goes through `Destination::write_present`).
fn wit_batch(columns: Vec<wit::Column>, row_count: u32, payload: Vec<u8>) -> wit::RowBatch {
    wit::RowBatch {
        columns,
        row_count,
        payload,
        present: None,
    }
}

/// What a check is told, purpose included.
fn plan_summary(plan: &sdk::PlanSummary) -> wit_quality_check::PlanSummary {
    wit_quality_check::PlanSummary {
        sync_name: plan.sync_name.clone(),
        purpose: match plan.purpose {
            sdk::PlanPurpose::Run => wit_quality_check::PlanPurpose::Run,
            sdk::PlanPurpose::Undo => wit_quality_check::PlanPurpose::Undo,
            sdk::PlanPurpose::Reconcile => wit_quality_check::PlanPurpose::Reconcile,
        },
        columns: plan.columns.iter().cloned().map(Into::into).collect(),
        snapshot_rows: plan.snapshot_rows,
        model_rows: plan.model_rows,
        added: plan.added,
        changed: plan.changed,
        removed: plan.removed,
    }
}

/// What a policy is asked, with the plugin changes and built-in requirements.
fn approval_request(
    request: &sdk::ApprovalRequest,
    review: &sdk::ReviewContext,
) -> wit_policy::ApprovalRequest {
    wit_policy::ApprovalRequest {
        kind: policy_request_kind(request.kind),
        author: request.author.clone(),
        author_role: policy_role_to_wit(request.author_role),
        description: request.description.clone(),
        syncs: policy_syncs(request),
        plugin_changes: review
            .plugin_changes
            .iter()
            .map(|c| wit_policy::PluginChange {
                name: c.name.clone(),
                old_hash: c.old_hash.clone(),
                new_hash: c.new_hash.clone(),
                spec_changes: c.spec_changes.clone(),
            })
            .collect(),
        built_in: review
            .built_in
            .iter()
            .map(|r| wit_policy::BuiltInRequirement {
                rule: r.rule.clone(),
                reason: r.reason.clone(),
                roles: r.roles.iter().copied().map(policy_role_to_wit).collect(),
                count: r.count,
            })
            .collect(),
    }
}

/// The decision and the rules it waives.
fn policy_decision(answer: wit_policy::PolicyDecision) -> sdk::PolicyDecision {
    sdk::PolicyDecision {
        decision: decision_from_wit(answer.decision),
        waive: answer
            .waive
            .into_iter()
            .map(|w| match w {
                wit_policy::WaivableRule::ApproverOtherThanAuthor => {
                    sdk::WaivableRule::ApproverOtherThanAuthor
                }
            })
            .collect(),
    }
}

// ---- What only 0.3.0 has ------------------------------------------------------------------

impl Destination {
    /// The operations `config_json` can express, with a hint for each it cannot.
    pub async fn operations_for(
        &self,
        store: &mut Store<PluginState>,
        config_json: &str,
    ) -> Result<sdk::OperationSupport, CallError> {
        let support = plugin_result(guest_call!(
            store,
            self.plugin
                .backflow_plugin_destination()
                .call_operations_for(&mut *store, config_json)
        )?)?;
        Ok(sdk::OperationSupport {
            operations: support.operations.into_iter().map(Into::into).collect(),
            hints: support
                .hints
                .into_iter()
                .map(|(op, hint)| (op.into(), hint))
                .collect(),
        })
    }

    /// Writes a batch some of whose cells may be absent (`present`, the `row-batch.present`
    /// bitmap; `None`: all present). Issue 36's field rules send absent cells only to a
    /// plugin declaring `field-presence` (checked by the caller).
    pub async fn write_present(
        &self,
        store: &mut Store<PluginState>,
        writer: ResourceAny,
        op: sdk::Operation,
        batch: sdk::Batch,
        present: Option<Vec<u8>>,
    ) -> Result<Vec<sdk::RowOutcome>, CallError> {
        let rows = batch.row_count as usize;
        let mut batch = wit::RowBatch::from(super::common::encode(batch, self.encoding)?);
        batch.present = present;
        let outcomes = plugin_result(guest_call!(
            store,
            self.plugin
                .backflow_plugin_destination()
                .writer()
                .call_write(&mut *store, writer, op.into(), &batch)
        )?)?;
        if EMPTY_OUTCOMES_ACCEPT_ALL && outcomes.is_empty() {
            return Ok(vec![sdk::RowOutcome::Accepted; rows]);
        }
        Ok(outcomes.into_iter().map(Into::into).collect())
    }

    /// What the destination holds for `keys` (MessagePack; encoded as the plugin speaks).
    pub async fn read(
        &self,
        store: &mut Store<PluginState>,
        writer: ResourceAny,
        keys: sdk::Batch,
    ) -> Result<wh::ReadResult, CallError> {
        let asked = keys.row_count as usize;
        let keys = wit::RowBatch::from(super::common::encode(keys, self.encoding)?);
        let result = plugin_result(guest_call!(
            store,
            self.plugin
                .backflow_plugin_destination()
                .writer()
                .call_read(&mut *store, writer, &keys)
        )?)?;
        let present = result.rows.present.clone();
        let rows = super::common::decode(result.rows.into(), self.encoding)?;
        let held: Vec<wh::Held> = result
            .held
            .into_iter()
            .map(|h| match h {
                wit_destination::Held::Absent => wh::Held::Absent,
                wit_destination::Held::Present(row) => wh::Held::Present(row),
            })
            .collect();
        check_read_result(asked, rows.row_count, &held)?;
        Ok(wh::ReadResult {
            rows,
            present,
            held,
        })
    }
}

/// A read-back answer must say something about every key, and point only at rows it has.
fn check_read_result(asked: usize, rows: u32, held: &[wh::Held]) -> Result<(), CallError> {
    let fatal = |m: String| Err(CallError::Plugin(sdk::PluginError::fatal(m)));
    if held.len() != asked {
        return fatal(format!(
            "the destination answered {} held entries for {asked} keys",
            held.len()
        ));
    }
    if let Some(row) = held.iter().find_map(|h| match h {
        wh::Held::Present(r) if *r >= rows => Some(*r),
        _ => None,
    }) {
        return fatal(format!(
            "the destination's read answer points at row {row} of {rows} rows"
        ));
    }
    Ok(())
}

fn snapshot_to_wit(t: &wh::SnapshotTable) -> wit_warehouse::SnapshotTable {
    wit_warehouse::SnapshotTable {
        schema: t.schema.clone(),
        table: t.table.clone(),
    }
}

impl Source {
    /// Creates the snapshot table if missing; the key columns it holds.
    pub async fn warehouse_prepare(
        &self,
        store: &mut Store<PluginState>,
        config_json: &str,
        snapshot: &wh::SnapshotTable,
        key_columns: &[sdk::Column],
    ) -> Result<Vec<sdk::Column>, CallError> {
        let keys: Vec<wit::Column> = key_columns.iter().cloned().map(Into::into).collect();
        let held = plugin_result(guest_call!(
            store,
            self.plugin.backflow_plugin_warehouse().call_prepare(
                &mut *store,
                config_json,
                &snapshot_to_wit(snapshot),
                &keys
            )
        )?)?;
        Ok(held.into_iter().map(Into::into).collect())
    }

    /// Opens a differ over the model and the snapshot table.
    pub async fn open_differ(
        &self,
        store: &mut Store<PluginState>,
        config_json: &str,
        request: &wh::DiffRequest,
        include_unchanged: bool,
    ) -> Result<ResourceAny, CallError> {
        let request = wit_warehouse::DiffRequest {
            query: request.query.clone(),
            key_columns: request.key_columns.clone(),
            snapshot: snapshot_to_wit(&request.snapshot),
            cursor: request
                .cursor
                .as_ref()
                .map(|c| wit_warehouse::CursorWindow {
                    column: c.column.clone(),
                    since: c.since.clone(),
                }),
            full_resync: request.full_resync,
        };
        plugin_result(guest_call!(
            store,
            self.plugin.backflow_plugin_warehouse().differ().call_open(
                &mut *store,
                config_json,
                &request,
                include_unchanged
            )
        )?)
    }

    /// The differ's model columns.
    pub async fn differ_columns(
        &self,
        store: &mut Store<PluginState>,
        differ: ResourceAny,
    ) -> Result<Vec<sdk::Column>, CallError> {
        let columns = guest_call!(
            store,
            self.plugin
                .backflow_plugin_warehouse()
                .differ()
                .call_columns(&mut *store, differ)
        )?;
        Ok(columns.into_iter().map(Into::into).collect())
    }

    /// The counts of the whole diff.
    pub async fn differ_counts(
        &self,
        store: &mut Store<PluginState>,
        differ: ResourceAny,
    ) -> Result<wh::DiffCounts, CallError> {
        let c = plugin_result(guest_call!(
            store,
            self.plugin
                .backflow_plugin_warehouse()
                .differ()
                .call_counts(&mut *store, differ)
        )?)?;
        Ok(wh::DiffCounts {
            model_rows: c.model_rows,
            snapshot_rows: c.snapshot_rows,
            added: c.added,
            changed: c.changed,
            removed: c.removed,
        })
    }

    /// The differ's next batch of changes (MessagePack), or `None` when done.
    pub async fn differ_next_batch(
        &self,
        store: &mut Store<PluginState>,
        differ: ResourceAny,
        max_rows: u32,
    ) -> Result<Option<wh::ChangeBatch>, CallError> {
        let batch = plugin_result(guest_call!(
            store,
            self.plugin
                .backflow_plugin_warehouse()
                .differ()
                .call_next_batch(&mut *store, differ, max_rows)
        )?)?;
        let Some(b) = batch else {
            return Ok(None);
        };
        let kind = match b.kind {
            wit_warehouse::ChangeKind::Added => sdk::ChangeKind::Added,
            wit_warehouse::ChangeKind::Changed => sdk::ChangeKind::Changed,
            wit_warehouse::ChangeKind::Removed => sdk::ChangeKind::Removed,
            wit_warehouse::ChangeKind::Unchanged => sdk::ChangeKind::Unchanged,
        };
        let rows = super::common::decode(b.rows.into(), self.encoding)?;
        let before = b
            .before
            .map(|before| super::common::decode(before.into(), self.encoding))
            .transpose()?;
        Ok(Some(wh::ChangeBatch {
            kind,
            rows,
            before,
            fingerprints: b.fingerprints,
        }))
    }

    /// The highest cursor value the differ read.
    pub async fn differ_max_cursor(
        &self,
        store: &mut Store<PluginState>,
        differ: ResourceAny,
    ) -> Result<Option<String>, CallError> {
        guest_call!(
            store,
            self.plugin
                .backflow_plugin_warehouse()
                .differ()
                .call_max_cursor(&mut *store, differ)
        )
    }

    /// Records what the destination acknowledged in the snapshot table.
    pub async fn write_back(
        &self,
        store: &mut Store<PluginState>,
        config_json: &str,
        write_back: wh::WriteBack,
    ) -> Result<(), CallError> {
        let delivered =
            wit::RowBatch::from(super::common::encode(write_back.delivered, self.encoding)?);
        let removed =
            wit::RowBatch::from(super::common::encode(write_back.removed, self.encoding)?);
        plugin_result(guest_call!(
            store,
            self.plugin.backflow_plugin_warehouse().call_write_back(
                &mut *store,
                config_json,
                &snapshot_to_wit(&write_back.snapshot),
                &delivered,
                &write_back.fingerprints,
                &removed
            )
        )?)
    }

    /// Writes sync logs into `schema`.
    pub async fn write_logs(
        &self,
        store: &mut Store<PluginState>,
        config_json: &str,
        schema: &str,
        runs: &[wh::RunLog],
        changes: &[wh::ChangeLog],
    ) -> Result<(), CallError> {
        let runs: Vec<wit_warehouse::RunLog> = runs
            .iter()
            .map(|r| wit_warehouse::RunLog {
                run_id: r.run_id.clone(),
                sync_name: r.sync_name.clone(),
                status: r.status.clone(),
                trigger: r.trigger.clone(),
                user: r.user.clone(),
                started_at: r.started_at.clone(),
                finished_at: r.finished_at.clone(),
                planned: r.planned,
                delivered: r.delivered,
                failed: r.failed,
                error: r.error.clone(),
            })
            .collect();
        let changes: Vec<wit_warehouse::ChangeLog> = changes
            .iter()
            .map(|c| wit_warehouse::ChangeLog {
                run_id: c.run_id.clone(),
                key: c.key.clone(),
                operation: c.operation.into(),
                status: c.status.clone(),
                error: c.error.clone(),
                at: c.at.clone(),
            })
            .collect();
        plugin_result(guest_call!(
            store,
            self.plugin.backflow_plugin_warehouse().call_write_logs(
                &mut *store,
                config_json,
                schema,
                &runs,
                &changes
            )
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_answer_covers_every_key_and_points_at_its_rows() {
        let held = [wh::Held::Present(0), wh::Held::Absent];
        assert!(check_read_result(2, 1, &held).is_ok());
        assert!(check_read_result(3, 1, &held).is_err(), "a key left out");
        let past = [wh::Held::Present(1)];
        assert!(check_read_result(1, 1, &past).is_err(), "row 1 of 1");
    }
}
