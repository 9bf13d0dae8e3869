//! Contract version 0.1.0 (`wit/v0.1.0/plugin.wit`, frozen): the generated bindings, one
//! module per world, and the only code that converts between them and the SDK's plain types.
//!
//! Everything outside this module speaks the SDK's types ([`sdk::Batch`], [`sdk::PlanSummary`],
//! [`sdk::ApprovalRequest`], …). Each wrapper (`Base`, `Source`, …) instantiates its world and
//! makes one call per method with the guest's CPU clock running; errors come back as
//! [`CallError`] values. A new contract version is a sibling module with the same wrappers.

use crate::host::call::{guest_call, CallError};
use crate::host::PluginState;
use backflow_plugin_sdk as sdk;
use wasmtime::component::{InstancePre, ResourceAny};
use wasmtime::Store;

/// The export every plugin of this version has.
pub const PLUGIN_EXPORT: &str = "backflow:plugin/plugin@0.1.0";

super::common::contract_version!("../wit/v0.1.0");

// ---- Worlds --------------------------------------------------------------------------------

/// Any plugin, seen through `plugin-base`: its spec and config check.
pub struct Base(generated::base::PluginBase);

impl Base {
    pub async fn instantiate(
        store: &mut Store<PluginState>,
        pre: InstancePre<PluginState>,
    ) -> Result<Base, CallError> {
        let pre = generated::base::PluginBasePre::new(pre).map_err(host_err)?;
        Ok(Base(guest_call!(
            store,
            pre.instantiate_async(&mut *store)
        )?))
    }

    pub async fn spec(&self, store: &mut Store<PluginState>) -> Result<sdk::PluginSpec, CallError> {
        Ok(guest_call!(
            store,
            self.0.backflow_plugin_plugin().call_spec(&mut *store)
        )?
        .into())
    }
}

pub struct Source(source::SourcePlugin);

impl Source {
    pub async fn instantiate(
        store: &mut Store<PluginState>,
        pre: InstancePre<PluginState>,
    ) -> Result<Source, CallError> {
        let pre = source::SourcePluginPre::new(pre).map_err(host_err)?;
        Ok(Source(guest_call!(
            store,
            pre.instantiate_async(&mut *store)
        )?))
    }

    pub async fn next_batch(
        &self,
        store: &mut Store<PluginState>,
        reader: ResourceAny,
        max_rows: u32,
    ) -> Result<Option<sdk::Batch>, CallError> {
        let batch = guest_call!(
            store,
            self.0
                .backflow_plugin_source()
                .reader()
                .call_next_batch(&mut *store, reader, max_rows)
        )?;
        Ok(plugin_result(batch)?.map(Into::into))
    }
}

pub struct Destination(destination::DestinationPlugin);

impl Destination {
    pub async fn instantiate(
        store: &mut Store<PluginState>,
        pre: InstancePre<PluginState>,
    ) -> Result<Destination, CallError> {
        let pre = destination::DestinationPluginPre::new(pre).map_err(host_err)?;
        Ok(Destination(guest_call!(
            store,
            pre.instantiate_async(&mut *store)
        )?))
    }

    pub async fn write(
        &self,
        store: &mut Store<PluginState>,
        writer: ResourceAny,
        op: sdk::Operation,
        batch: sdk::Batch,
    ) -> Result<Vec<sdk::RowOutcome>, CallError> {
        let batch = wit::RowBatch::from(batch);
        let outcomes = guest_call!(
            store,
            self.0.backflow_plugin_destination().writer().call_write(
                &mut *store,
                writer,
                op.into(),
                &batch
            )
        )?;
        Ok(plugin_result(outcomes)?
            .into_iter()
            .map(Into::into)
            .collect())
    }
}

pub struct QualityCheck(quality_check::QualityCheckPlugin);

impl QualityCheck {
    pub async fn instantiate(
        store: &mut Store<PluginState>,
        pre: InstancePre<PluginState>,
    ) -> Result<QualityCheck, CallError> {
        let pre = quality_check::QualityCheckPluginPre::new(pre).map_err(host_err)?;
        Ok(QualityCheck(guest_call!(
            store,
            pre.instantiate_async(&mut *store)
        )?))
    }

    pub async fn observe(
        &self,
        store: &mut Store<PluginState>,
        checker: ResourceAny,
        kind: sdk::ChangeKind,
        after: sdk::Batch,
        before: Option<sdk::Batch>,
    ) -> Result<(), CallError> {
        let kind = kind.into();
        let after = wit::RowBatch::from(after);
        let before = before.map(wit::RowBatch::from);
        plugin_result(guest_call!(
            store,
            self.0
                .backflow_plugin_quality_check()
                .checker()
                .call_observe(&mut *store, checker, kind, &after, before.as_ref())
        )?)
    }
}
