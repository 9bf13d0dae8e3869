//! Warehouse-side diff (`[models.NAME] diff = "warehouse"`, issue 39): the snapshot of what a
//! sync delivered lives in a table of the source database, which computes the diff through
//! the source plugin's `warehouse` interface (contract 0.3.0, capability `warehouse-diff`).
//! Only changed rows cross the wire, and the engine's state does not grow with the model.
//!
//! What this module owns:
//! (`sync::prepare` refuses at load a model whose source lacks the capability.)
//! - [`snapshot_table`]: the table's name, one per sync *state key* (a draft's state key is
//!   its own, so a draft never touches the published sync's table) and per primary key and
//!   destination (changing either starts a fresh table: every row is added, as locally);
//! - [`plan`]: the plan built from the differ's change batches, in the same files as a
//!   local plan, so checks, approvals and delivery work unchanged;
//! - [`write_back`]: acknowledged rows journaled as today (a file journal of their own,
//!   never applied to the local snapshot), then written back to the table idempotently, at
//!   the end of the run or, after a crash, at the start of the next one.

pub(crate) mod plan;
mod table;
pub(crate) mod write_back;

pub(crate) use table::snapshot_table;

use super::prepare::PreparedSync;
use super::run::Abort;
use crate::host::{PluginHost, WarehouseInstance};
use crate::workspace::DiffLocation;
use backflow_plugin_sdk::Column;

/// Whether a sync's model diffs in the warehouse.
pub(crate) fn in_warehouse(p: &PreparedSync) -> bool {
    p.model.diff == DiffLocation::Warehouse
}

/// Opens the source's `warehouse` interface for a sync.
pub(crate) async fn open_instance(
    host: &PluginHost,
    p: &PreparedSync,
) -> Result<WarehouseInstance, Abort> {
    WarehouseInstance::open(
        host,
        &p.source_plugin,
        &p.source.grants,
        p.source.limits,
        &p.source.config_json,
    )
    .await
    .map_err(|e| Abort::Source(super::prepare::open_error(p, &p.source, &e)))
}

/// Creates the snapshot table if missing (before the first delivery; never in a dry run).
pub(crate) async fn prepare_table(
    wh: &mut WarehouseInstance,
    p: &PreparedSync,
    key_columns: &[Column],
) -> Result<(), Abort> {
    let table = snapshot_table(p);
    let keys: Vec<Column> = p
        .model
        .primary_key
        .iter()
        .zip(key_columns)
        .map(|(name, c)| Column {
            name: name.clone(),
            value_type: c.value_type,
            nullable: false,
        })
        .collect();
    wh.prepare(&table, &keys).await.map_err(|e| {
        Abort::Source(format!(
            "source {} could not create the snapshot table {}.{}: {e}",
            p.source.name, table.schema, table.table
        ))
    })?;
    Ok(())
}

/// A warehouse-diff run's open `warehouse` interface.
pub(crate) struct WarehouseRun {
    instance: WarehouseInstance,
}

impl WarehouseRun {
    /// Opens the source's `warehouse` interface and the sync's warehouse journal, writing
    /// back first what an interrupted run left in it.
    pub(crate) async fn open(
        host: &PluginHost,
        ws: &crate::workspace::Workspace,
        state: &crate::state::StateStore,
        p: &PreparedSync,
        meta: &crate::state::SyncMeta,
    ) -> Result<(WarehouseRun, super::commit::journal::Journal), Abort> {
        let mut instance = open_instance(host, p).await?;
        let mut journal = write_back::open_journal(ws, p)?;
        let written = write_back::replay(&mut instance, ws, state, p, meta, &mut journal).await?;
        if written > 0 {
            tracing::info!(sync = %p.sync.name, rows = written, "wrote back to the warehouse snapshot the deliveries of an interrupted run");
        }
        Ok((WarehouseRun { instance }, journal))
    }

    /// The run's plan, from the database's diff.
    pub(crate) async fn plan(
        &mut self,
        ws: &crate::workspace::Workspace,
        p: &PreparedSync,
        full_resync: bool,
    ) -> Result<super::plan::Plan, Abort> {
        let options = super::plan::PlanOptions {
            full_resync,
            sort_first: false,
        };
        plan::build_plan(&mut self.instance, ws, p, options).await
    }

    /// Before the first delivery: the snapshot table exists, and the journal's columns are
    /// written down.
    pub(crate) async fn before_delivery(
        &mut self,
        ws: &crate::workspace::Workspace,
        p: &PreparedSync,
        plan: &super::plan::Plan,
    ) -> Result<(), Abort> {
        prepare_table(&mut self.instance, p, &plan.key_columns).await?;
        write_back::record_columns(ws, p, &plan.columns, &plan.key_columns)
    }

    /// After delivery: writes back what was acknowledged; the run fails if that fails (the
    /// rows stay journaled for the next run).
    pub(crate) async fn after_delivery(
        mut self,
        ws: &crate::workspace::Workspace,
        state: &crate::state::StateStore,
        p: &PreparedSync,
        meta: &crate::state::SyncMeta,
        journal: &mut super::commit::journal::Journal,
        outcome: super::outcome::RunOutcome,
    ) -> super::outcome::RunOutcome {
        use super::outcome::RunOutcome;
        let written = write_back::replay(&mut self.instance, ws, state, p, meta, journal).await;
        self.instance.close().await;
        match (written, outcome) {
            (Ok(_), RunOutcome::Succeeded) => match table::record_mapping(ws, p) {
                Ok(()) => RunOutcome::Succeeded,
                Err(e) => RunOutcome::Failed(e.to_string()),
            },
            (Ok(_), outcome) => outcome,
            (Err(e), RunOutcome::Failed(first)) => RunOutcome::Failed(format!("{first}; and {e}")),
            (Err(e), _) => RunOutcome::Failed(e.to_string()),
        }
    }
}

/// Opens a run's delivery journal: a warehouse-diff sync's own (with its `warehouse`
/// interface, after writing back what an interrupted run left), or the local one.
pub(crate) async fn open_journal(
    host: &PluginHost,
    ws: &crate::workspace::Workspace,
    state: &crate::state::StateStore,
    p: &PreparedSync,
    meta: &crate::state::SyncMeta,
) -> Result<(Option<WarehouseRun>, super::commit::journal::Journal), Abort> {
    if in_warehouse(p) {
        let (wh, journal) = WarehouseRun::open(host, ws, state, p, meta).await?;
        Ok((Some(wh), journal))
    } else {
        Ok((None, super::commit::open_journal(ws, state, p, meta)?))
    }
}

/// Why a warehouse-diff sync's run cannot be undone.
pub(crate) fn no_undo(p: &PreparedSync) -> Abort {
    Abort::Undo(format!(
        "model {} diffs in the warehouse (diff = \"warehouse\"): the engine keeps no per-row changelog for it, so its runs cannot be undone; nothing was sent",
        p.model.name
    ))
}

/// A reconcile of a warehouse-diff sync: refused, the drift report compares the destination
/// with the engine's snapshot, which this mode does not keep.
pub(crate) fn no_reconcile(p: &PreparedSync) -> Abort {
    Abort::Model(format!(
        "model {} diffs in the warehouse (diff = \"warehouse\"): drift and reconcile compare the destination with the engine's own snapshot, which this mode does not keep; nothing was sent",
        p.model.name
    ))
}

/// [`WarehouseRun::before_delivery`] for a warehouse-diff run; nothing otherwise.
pub(crate) async fn before_delivery(
    wh: Option<&mut WarehouseRun>,
    ws: &crate::workspace::Workspace,
    p: &PreparedSync,
    plan: &super::plan::Plan,
) -> Result<(), Abort> {
    match wh {
        Some(wh) => wh.before_delivery(ws, p, plan).await,
        None => Ok(()),
    }
}

/// [`WarehouseRun::after_delivery`] for a warehouse-diff run; the outcome otherwise.
pub(crate) async fn after_delivery(
    wh: Option<WarehouseRun>,
    ws: &crate::workspace::Workspace,
    state: &crate::state::StateStore,
    p: &PreparedSync,
    meta: &crate::state::SyncMeta,
    journal: &mut super::commit::journal::Journal,
    outcome: super::outcome::RunOutcome,
) -> super::outcome::RunOutcome {
    match wh {
        Some(wh) => {
            wh.after_delivery(ws, state, p, meta, journal, outcome)
                .await
        }
        None => outcome,
    }
}
