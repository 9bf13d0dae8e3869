//! Contract version 0.2.0 (`wit/v0.2.0/plugin.wit`, frozen): the generated bindings, one
//! module per world, and the only code that converts between them and the SDK's plain types.
//!
//! What 0.2.0 adds to 0.1.0 is the plugin's `row-encoding`: a `json` plugin gets and gives
//! row batches as JSON text. The engine keeps MessagePack everywhere else, so the wrappers
//! below convert at the call ([`sdk::json_rows`]): batches going in (`write`, `observe`) and
//! batches coming out (`next-batch`).
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
pub const PLUGIN_EXPORT: &str = "backflow:plugin/plugin@0.2.0";

super::common::contract_version!("../wit/v0.2.0");

/// The `host` interface is unchanged since 0.1.0: its calls go to the one implementation
/// (`host::imports`, written against 0.1.0's types), converting records on the way.
impl wit_host::Host for PluginState {
    async fn log(&mut self, level: wit_host::LogLevel, message: String) {
        use super::v0_1_0::wit_host as old;
        let level = match level {
            wit_host::LogLevel::Trace => old::LogLevel::Trace,
            wit_host::LogLevel::Debug => old::LogLevel::Debug,
            wit_host::LogLevel::Info => old::LogLevel::Info,
            wit_host::LogLevel::Warn => old::LogLevel::Warn,
            wit_host::LogLevel::Error => old::LogLevel::Error,
        };
        old::Host::log(self, level, message).await
    }

    async fn now_ms(&mut self) -> u64 {
        super::v0_1_0::wit_host::Host::now_ms(self).await
    }

    async fn http_send(
        &mut self,
        request: wit_host::HttpRequest,
    ) -> Result<wit_host::HttpResponse, wit_host::HttpError> {
        use super::v0_1_0::wit_host as old;
        let request = old::HttpRequest {
            method: request.method,
            url: request.url,
            headers: request
                .headers
                .into_iter()
                .map(|h| old::HttpHeader {
                    name: h.name,
                    value: h.value,
                })
                .collect(),
            body: request.body,
            timeout_ms: request.timeout_ms,
        };
        match old::Host::http_send(self, request).await {
            Ok(r) => Ok(wit_host::HttpResponse {
                status: r.status,
                headers: r
                    .headers
                    .into_iter()
                    .map(|h| wit_host::HttpHeader {
                        name: h.name,
                        value: h.value,
                    })
                    .collect(),
                body: r.body,
            }),
            Err(old::HttpError::Denied(m)) => Err(wit_host::HttpError::Denied(m)),
            Err(old::HttpError::InvalidRequest(m)) => Err(wit_host::HttpError::InvalidRequest(m)),
            Err(old::HttpError::Connection(m)) => Err(wit_host::HttpError::Connection(m)),
            Err(old::HttpError::Timeout(m)) => Err(wit_host::HttpError::Timeout(m)),
        }
    }
}

/// A batch of the engine's (MessagePack) in the plugin's encoding.
fn encode(batch: sdk::Batch, encoding: sdk::RowEncoding) -> Result<sdk::Batch, CallError> {
    match encoding {
        sdk::RowEncoding::Msgpack => Ok(batch),
        sdk::RowEncoding::Json => {
            let payload = sdk::json_rows::to_json_rows(&batch)
                .map_err(|e| CallError::Host(format!("encoding a batch as JSON rows: {e}")))?;
            Ok(sdk::Batch { payload, ..batch })
        }
    }
}

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

    /// The plugin's spec and the row encoding it speaks.
    pub async fn spec(
        &self,
        store: &mut Store<PluginState>,
    ) -> Result<(sdk::PluginSpec, sdk::RowEncoding), CallError> {
        let spec = guest_call!(
            store,
            self.0.backflow_plugin_plugin().call_spec(&mut *store)
        )?;
        let encoding = match spec.row_encoding {
            wit::RowEncoding::Msgpack => sdk::RowEncoding::Msgpack,
            wit::RowEncoding::Json => sdk::RowEncoding::Json,
        };
        Ok((spec.into(), encoding))
    }
}

pub struct Source(source::SourcePlugin, sdk::RowEncoding);

impl Source {
    pub async fn instantiate(
        store: &mut Store<PluginState>,
        pre: InstancePre<PluginState>,
        encoding: sdk::RowEncoding,
    ) -> Result<Source, CallError> {
        let pre = source::SourcePluginPre::new(pre).map_err(host_err)?;
        Ok(Source(
            guest_call!(store, pre.instantiate_async(&mut *store))?,
            encoding,
        ))
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
        let Some(batch) = plugin_result(batch)? else {
            return Ok(None);
        };
        let batch = sdk::Batch::from(batch);
        match self.1 {
            sdk::RowEncoding::Msgpack => Ok(Some(batch)),
            // What the plugin sent is checked here, row by row, against its own columns.
            sdk::RowEncoding::Json => {
                sdk::json_rows::from_json_rows(batch.columns, batch.row_count, &batch.payload)
                    .map(Some)
                    .map_err(|e| {
                        CallError::Plugin(sdk::PluginError::fatal(format!(
                            "the source returned a batch that is not valid JSON rows: {e}"
                        )))
                    })
            }
        }
    }
}

pub struct Destination(destination::DestinationPlugin, sdk::RowEncoding);

impl Destination {
    pub async fn instantiate(
        store: &mut Store<PluginState>,
        pre: InstancePre<PluginState>,
        encoding: sdk::RowEncoding,
    ) -> Result<Destination, CallError> {
        let pre = destination::DestinationPluginPre::new(pre).map_err(host_err)?;
        Ok(Destination(
            guest_call!(store, pre.instantiate_async(&mut *store))?,
            encoding,
        ))
    }

    pub async fn write(
        &self,
        store: &mut Store<PluginState>,
        writer: ResourceAny,
        op: sdk::Operation,
        batch: sdk::Batch,
    ) -> Result<Vec<sdk::RowOutcome>, CallError> {
        let rows = batch.row_count as usize;
        let batch = wit::RowBatch::from(encode(batch, self.1)?);
        let outcomes = guest_call!(
            store,
            self.0.backflow_plugin_destination().writer().call_write(
                &mut *store,
                writer,
                op.into(),
                &batch
            )
        )?;
        let outcomes = plugin_result(outcomes)?;
        // 0.2.0: an empty list for a non-empty batch means every row was accepted.
        if outcomes.is_empty() {
            return Ok(vec![sdk::RowOutcome::Accepted; rows]);
        }
        Ok(outcomes.into_iter().map(Into::into).collect())
    }
}

pub struct QualityCheck(quality_check::QualityCheckPlugin, sdk::RowEncoding);

impl QualityCheck {
    pub async fn instantiate(
        store: &mut Store<PluginState>,
        pre: InstancePre<PluginState>,
        encoding: sdk::RowEncoding,
    ) -> Result<QualityCheck, CallError> {
        let pre = quality_check::QualityCheckPluginPre::new(pre).map_err(host_err)?;
        Ok(QualityCheck(
            guest_call!(store, pre.instantiate_async(&mut *store))?,
            encoding,
        ))
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
        let after = wit::RowBatch::from(encode(after, self.1)?);
        let before = before
            .map(|b| encode(b, self.1).map(wit::RowBatch::from))
            .transpose()?;
        plugin_result(guest_call!(
            store,
            self.0
                .backflow_plugin_quality_check()
                .checker()
                .call_observe(&mut *store, checker, kind, &after, before.as_ref())
        )?)
    }
}
