//! A source plugin's `warehouse` interface (contract 0.3.0, capabilities `warehouse-diff`,
//! `cursor-read`, `warehouse-logs`): typed calls for the snapshot table kept in the source
//! database, the diff computed there, the write-back of what was delivered and the sync
//! logs. The engine features that use them come with issue 39; the calls exist and are
//! checked here: a plugin that does not declare the capability a call needs is never called.

use super::bindings::{v0_3_0, ContractVersion};
use super::call::CallError;
use super::instance::{drop_resource, expanded_config, prepare, redact};
use super::{Grants, Limits, Plugin, PluginHost, PluginState};
use backflow_plugin_sdk::warehouse::{
    ChangeBatch, ChangeLog, DiffCounts, DiffRequest, RunLog, SnapshotTable, WriteBack,
};
use backflow_plugin_sdk::{Capability, Column, PluginError};
use wasmtime::component::ResourceAny;
use wasmtime::Store;

/// A source plugin's `warehouse` interface in one instance, with at most one open differ.
pub struct WarehouseInstance {
    store: Store<PluginState>,
    api: v0_3_0::Source,
    config_json: String,
    capabilities: Vec<Capability>,
    name: String,
    differ: Option<ResourceAny>,
}

impl WarehouseInstance {
    /// Instantiates a source that declares `warehouse-diff` or `warehouse-logs`; any other
    /// gets an error naming what it lacks.
    pub async fn open(
        host: &PluginHost,
        plugin: &Plugin,
        grants: &Grants,
        limits: Limits,
        config_json: &str,
    ) -> Result<WarehouseInstance, CallError> {
        let declares = |c| plugin.capabilities.contains(&c);
        if plugin.contract != ContractVersion::V0_3_0
            || !(declares(Capability::WarehouseDiff) || declares(Capability::WarehouseLogs))
        {
            return Err(lacks(&plugin.spec.name, Capability::WarehouseDiff));
        }
        let (mut store, pre) = prepare(host, plugin, grants, limits)?;
        // The same config a reader sees: `${env.NAME}` expanded from the granted variables.
        let config_json = expanded_config(plugin, grants, config_json)?;
        let api = v0_3_0::Source::instantiate(&mut store, pre, plugin.row_encoding).await;
        let api = redact(&store, api)?;
        Ok(WarehouseInstance {
            store,
            api,
            config_json,
            capabilities: plugin.capabilities.clone(),
            name: plugin.spec.name.clone(),
            differ: None,
        })
    }

    fn require(&self, capability: Capability) -> Result<(), CallError> {
        if self.capabilities.contains(&capability) {
            Ok(())
        } else {
            Err(lacks(&self.name, capability))
        }
    }

    /// Creates the snapshot table if missing; the key columns it holds.
    pub async fn prepare(
        &mut self,
        snapshot: &SnapshotTable,
        key_columns: &[Column],
    ) -> Result<Vec<Column>, CallError> {
        self.require(Capability::WarehouseDiff)?;
        let r = self
            .api
            .warehouse_prepare(&mut self.store, &self.config_json, snapshot, key_columns)
            .await;
        redact(&self.store, r)
    }

    /// Opens the diff (closing one opened before); its model columns.
    pub async fn open_differ(
        &mut self,
        request: &DiffRequest,
        include_unchanged: bool,
    ) -> Result<Vec<Column>, CallError> {
        self.require(Capability::WarehouseDiff)?;
        if request.cursor.is_some() {
            self.require(Capability::CursorRead)?;
        }
        if let Some(old) = self.differ.take() {
            drop_resource(&mut self.store, old).await;
        }
        let opened = async {
            let differ = self
                .api
                .open_differ(
                    &mut self.store,
                    &self.config_json,
                    request,
                    include_unchanged,
                )
                .await?;
            let columns = self.api.differ_columns(&mut self.store, differ).await?;
            Ok((differ, columns))
        }
        .await;
        let (differ, columns) = redact(&self.store, opened)?;
        self.differ = Some(differ);
        Ok(columns)
    }

    fn differ(&self) -> Result<ResourceAny, CallError> {
        self.differ
            .ok_or_else(|| CallError::Host("no diff is open".into()))
    }

    /// The counts of the open diff.
    pub async fn counts(&mut self) -> Result<DiffCounts, CallError> {
        let differ = self.differ()?;
        let r = self.api.differ_counts(&mut self.store, differ).await;
        redact(&self.store, r)
    }

    /// The open diff's next batch of changes, or `None` when done.
    pub async fn next_batch(&mut self, max_rows: u32) -> Result<Option<ChangeBatch>, CallError> {
        let differ = self.differ()?;
        let r = self
            .api
            .differ_next_batch(&mut self.store, differ, max_rows)
            .await;
        redact(&self.store, r)
    }

    /// The highest cursor value the open diff read.
    pub async fn max_cursor(&mut self) -> Result<Option<String>, CallError> {
        let differ = self.differ()?;
        let r = self.api.differ_max_cursor(&mut self.store, differ).await;
        redact(&self.store, r)
    }

    /// Records what the destination acknowledged in the snapshot table.
    pub async fn write_back(&mut self, write_back: WriteBack) -> Result<(), CallError> {
        self.require(Capability::WarehouseDiff)?;
        let r = self
            .api
            .write_back(&mut self.store, &self.config_json, write_back)
            .await;
        redact(&self.store, r)
    }

    /// Writes sync logs into `schema`.
    pub async fn write_logs(
        &mut self,
        schema: &str,
        runs: &[RunLog],
        changes: &[ChangeLog],
    ) -> Result<(), CallError> {
        self.require(Capability::WarehouseLogs)?;
        let r = self
            .api
            .write_logs(&mut self.store, &self.config_json, schema, runs, changes)
            .await;
        redact(&self.store, r)
    }

    /// Releases the open diff, if any.
    pub async fn close(mut self) {
        if let Some(differ) = self.differ.take() {
            drop_resource(&mut self.store, differ).await;
        }
    }
}

/// The error for a call a plugin's spec does not declare.
fn lacks(plugin: &str, capability: Capability) -> CallError {
    CallError::Plugin(PluginError::fatal(format!(
        "source plugin {plugin} does not declare the {capability} capability (contract 0.3.0)"
    )))
}
