//! Typed, sandboxed plugin instances: a [`SourceInstance`] reads a model, a
//! [`DestinationInstance`] writes batches, a [`CheckInstance`] judges a plan, and
//! [`evaluate_policy`] asks a policy. Each owns its own [`Store`]; the task holding the
//! instance is the only one that ever touches that store.
//!
//! This is the version dispatch point: each instance holds the bindings of the contract
//! version its plugin implements (`…Api::V0_1_0`) and every call matches on it. Callers see
//! only the SDK's plain types.

use super::bindings::{v0_1_0, v0_2_0, v0_3_0, ContractVersion};
use super::call::{guest_call, CallError};
use super::{Grants, Limits, Plugin, PluginHost, PluginState};
use backflow_plugin_sdk::warehouse::ReadResult;
use backflow_plugin_sdk::{
    ApprovalRequest, Batch, Capability, ChangeKind, CheckResult, Column, Decision, Operation,
    OperationSupport, PlanSummary, PluginError, PolicyDecision, ReviewContext, RowOutcome,
    SyncContext,
};
use wasmtime::component::{InstancePre, ResourceAny};
use wasmtime::Store;

/// Cuts secrets from a call's error: every error leaving an instance goes through this.
pub(super) fn redact<T>(
    store: &Store<PluginState>,
    result: Result<T, CallError>,
) -> Result<T, CallError> {
    result.map_err(|e| e.redacted(&store.data().secrets))
}

/// The config a plugin sees: every `${env.NAME}` in its strings expanded by the host from
/// the plugin's granted variables, so a plugin in any language gets its secret without an
/// environment accessor (and the value is redacted from what it says, like every granted
/// variable's). A reference that cannot be expanded is a config error naming its field.
fn expanded_config(
    plugin: &Plugin,
    grants: &Grants,
    config_json: &str,
) -> Result<String, CallError> {
    crate::workspace::secrets::expand_config(
        config_json,
        &grants.env,
        &format!("plugin {}", plugin.spec.name),
        &|name| std::env::var(name).ok(),
    )
    .map_err(|e| {
        CallError::Plugin(PluginError::BadConfig(
            backflow_plugin_sdk::ConfigError::new(e.field, e.reason.to_string()),
        ))
    })
}

/// A fresh store with the plugin's grants, and the component (imports resolved at load).
pub(super) fn prepare(
    host: &PluginHost,
    plugin: &Plugin,
    grants: &Grants,
    limits: Limits,
) -> Result<(Store<PluginState>, InstancePre<PluginState>), CallError> {
    let store = host
        .new_store(&plugin.spec.name, grants, limits)
        .map_err(|e| CallError::Host(format!("{e:#}")))?;
    let pre = plugin.pre.clone();
    Ok((store, pre))
}

enum SourceApi {
    V0_1_0(v0_1_0::Source),
    V0_2_0(v0_2_0::Source),
    V0_3_0(v0_3_0::Source),
}

/// A source plugin with an open reader.
pub struct SourceInstance {
    store: Store<PluginState>,
    api: SourceApi,
    reader: Option<ResourceAny>,
    columns: Vec<Column>,
}

impl SourceInstance {
    /// Instantiates the plugin in a fresh store and opens a reader over `query`.
    pub async fn open(
        host: &PluginHost,
        plugin: &Plugin,
        grants: &Grants,
        limits: Limits,
        config_json: &str,
        query: &str,
    ) -> Result<SourceInstance, CallError> {
        let (mut store, pre) = prepare(host, plugin, grants, limits)?;
        let config_json = expanded_config(plugin, grants, config_json)?;
        let config_json = config_json.as_str();
        let opened = async {
            match plugin.contract {
                ContractVersion::V0_1_0 => {
                    let api =
                        v0_1_0::Source::instantiate(&mut store, pre, plugin.row_encoding).await?;
                    let reader = api.open(&mut store, config_json, query).await?;
                    let columns = api.columns(&mut store, reader).await?;
                    Ok((SourceApi::V0_1_0(api), reader, columns))
                }
                ContractVersion::V0_2_0 => {
                    let api =
                        v0_2_0::Source::instantiate(&mut store, pre, plugin.row_encoding).await?;
                    let reader = api.open(&mut store, config_json, query).await?;
                    let columns = api.columns(&mut store, reader).await?;
                    Ok((SourceApi::V0_2_0(api), reader, columns))
                }
                ContractVersion::V0_3_0 => {
                    let api =
                        v0_3_0::Source::instantiate(&mut store, pre, plugin.row_encoding).await?;
                    let reader = api.open(&mut store, config_json, query).await?;
                    let columns = api.columns(&mut store, reader).await?;
                    Ok((SourceApi::V0_3_0(api), reader, columns))
                }
            }
        }
        .await;
        let (api, reader, columns) = redact(&store, opened)?;
        Ok(SourceInstance {
            store,
            api,
            reader: Some(reader),
            columns,
        })
    }

    /// The reader's columns, as the plugin declared them when it opened.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The next batch, or `None` when the model is exhausted.
    pub async fn next_batch(&mut self, max_rows: u32) -> Result<Option<Batch>, CallError> {
        let reader = self
            .reader
            .ok_or_else(|| CallError::Host("reader already closed".into()))?;
        let result = match &self.api {
            SourceApi::V0_1_0(api) => api.next_batch(&mut self.store, reader, max_rows).await,
            SourceApi::V0_2_0(api) => api.next_batch(&mut self.store, reader, max_rows).await,
            SourceApi::V0_3_0(api) => api.next_batch(&mut self.store, reader, max_rows).await,
        };
        redact(&self.store, result)
    }

    /// Releases the reader (closing files and connections inside the plugin).
    pub async fn close(mut self) {
        if let Some(reader) = self.reader.take() {
            drop_resource(&mut self.store, reader).await;
        }
    }
}

/// Drops a guest resource (its destructor runs in the guest, so the clock runs too). A
/// failure leaves nothing to clean up: the store goes away with the instance.
pub(super) async fn drop_resource(store: &mut Store<PluginState>, resource: ResourceAny) {
    let _ = guest_call!(store, resource.resource_drop_async(&mut *store));
}

enum DestinationApi {
    V0_1_0(v0_1_0::Destination),
    V0_2_0(v0_2_0::Destination),
    V0_3_0(v0_3_0::Destination),
}

/// A destination plugin with an open writer.
pub struct DestinationInstance {
    store: Store<PluginState>,
    /// Boxed: the bindings of a 0.3.0 destination are large, and writers are moved around.
    api: Box<DestinationApi>,
    writer: Option<ResourceAny>,
    /// Whether its spec declares `read-back`.
    can_read: bool,
    /// Whether its spec declares `field-presence` (it takes absent cells).
    field_presence: bool,
}

impl DestinationInstance {
    /// Instantiates the plugin in a fresh store and opens a writer for one run of a sync.
    pub async fn open(
        host: &PluginHost,
        plugin: &Plugin,
        grants: &Grants,
        limits: Limits,
        config_json: &str,
        context: &SyncContext,
    ) -> Result<DestinationInstance, CallError> {
        let (mut store, pre) = prepare(host, plugin, grants, limits)?;
        let config_json = expanded_config(plugin, grants, config_json)?;
        let config_json = config_json.as_str();
        let opened = async {
            match plugin.contract {
                ContractVersion::V0_1_0 => {
                    let api =
                        v0_1_0::Destination::instantiate(&mut store, pre, plugin.row_encoding)
                            .await?;
                    let writer = api.open(&mut store, config_json, context).await?;
                    Ok((DestinationApi::V0_1_0(api), writer))
                }
                ContractVersion::V0_2_0 => {
                    let api =
                        v0_2_0::Destination::instantiate(&mut store, pre, plugin.row_encoding)
                            .await?;
                    let writer = api.open(&mut store, config_json, context).await?;
                    Ok((DestinationApi::V0_2_0(api), writer))
                }
                ContractVersion::V0_3_0 => {
                    let api =
                        v0_3_0::Destination::instantiate(&mut store, pre, plugin.row_encoding)
                            .await?;
                    let writer = api.open(&mut store, config_json, context).await?;
                    Ok((DestinationApi::V0_3_0(api), writer))
                }
            }
        }
        .await;
        let (api, writer) = redact(&store, opened)?;
        Ok(DestinationInstance {
            store,
            api: Box::new(api),
            writer: Some(writer),
            can_read: plugin.capabilities.contains(&Capability::ReadBack),
            field_presence: plugin.capabilities.contains(&Capability::FieldPresence),
        })
    }

    /// Writes a batch; one outcome per row in order, or an error if nothing was written.
    pub async fn write(
        &mut self,
        op: Operation,
        batch: Batch,
    ) -> Result<Vec<RowOutcome>, CallError> {
        self.write_present(op, batch, None).await
    }

    /// Writes a batch some of whose cells may be absent (`present`, contract 0.3.0: a bitmap,
    /// see `row-batch.present`; `None`: every cell present). Only a plugin declaring
    /// `field-presence` takes absent cells; any other gets an error, and is never called.
    pub async fn write_present(
        &mut self,
        op: Operation,
        batch: Batch,
        present: Option<Vec<u8>>,
    ) -> Result<Vec<RowOutcome>, CallError> {
        if present.is_some() && !self.field_presence {
            return Err(CallError::Host(
                "the batch leaves fields out, and the destination does not declare field-presence"
                    .into(),
            ));
        }
        let writer = self
            .writer
            .ok_or_else(|| CallError::Host("writer already closed".into()))?;
        let rows = batch.row_count as usize;
        let outcomes = match &*self.api {
            DestinationApi::V0_1_0(api) => api.write(&mut self.store, writer, op, batch).await,
            DestinationApi::V0_2_0(api) => api.write(&mut self.store, writer, op, batch).await,
            DestinationApi::V0_3_0(api) => {
                api.write_present(&mut self.store, writer, op, batch, present)
                    .await
            }
        };
        let secrets = &self.store.data().secrets;
        // A refusal's text is the destination's answer, which may echo the request's headers.
        let outcomes: Vec<RowOutcome> = redact(&self.store, outcomes)?
            .into_iter()
            .map(|o| match o {
                RowOutcome::Rejected(m) => RowOutcome::Rejected(crate::redact::redact(secrets, &m)),
                RowOutcome::Retryable(m) => {
                    RowOutcome::Retryable(crate::redact::redact(secrets, &m))
                }
                accepted => accepted,
            })
            .collect();
        if outcomes.len() != rows {
            return Err(CallError::Plugin(PluginError::fatal(format!(
                "destination returned {} row outcomes for a batch of {rows} rows",
                outcomes.len()
            ))));
        }
        Ok(outcomes)
    }

    /// What the destination holds for `keys` (rows of the primary-key fields). Only a 0.3.0
    /// plugin declaring `read-back` can answer; any other gets an error saying so, and is
    /// never called.
    pub async fn read(&mut self, keys: Batch) -> Result<ReadResult, CallError> {
        let writer = self
            .writer
            .ok_or_else(|| CallError::Host("writer already closed".into()))?;
        let result = match &*self.api {
            DestinationApi::V0_3_0(api) if self.can_read => {
                api.read(&mut self.store, writer, keys).await
            }
            _ => Err(CallError::Plugin(PluginError::fatal(format!(
                "destination plugin {} cannot read back what it holds: its spec does not declare the read-back capability (contract 0.3.0)",
                self.store.data().plugin_name
            )))),
        };
        redact(&self.store, result)
    }

    /// From now on, this writer's HTTP requests take turns with those of the other writers
    /// given the same `turns` (a semaphore of `max_in_flight` permits; see `request_gate`).
    pub fn take_turns(&mut self, turns: std::sync::Arc<tokio::sync::Semaphore>) {
        self.store.data_mut().request_gate = Some(super::request_gate::RequestGate::new(turns));
    }

    /// Gives this writer's turn back, if it holds one: its batch is recorded.
    pub fn end_turn(&mut self) {
        if let Some(gate) = self.store.data_mut().request_gate.as_mut() {
            gate.leave();
        }
    }

    /// Flushes and releases the writer. A turn it takes to flush ends with it.
    pub async fn finish(mut self) -> Result<(), CallError> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let result = match &*self.api {
            DestinationApi::V0_1_0(api) => api.finish(&mut self.store, writer).await,
            DestinationApi::V0_2_0(api) => api.finish(&mut self.store, writer).await,
            DestinationApi::V0_3_0(api) => api.finish(&mut self.store, writer).await,
        };
        drop_resource(&mut self.store, writer).await;
        redact(&self.store, result)
    }
}

enum CheckApi {
    V0_1_0(v0_1_0::QualityCheck),
    V0_2_0(v0_2_0::QualityCheck),
    V0_3_0(v0_3_0::QualityCheck),
}

/// A quality-check plugin with an open checker.
pub struct CheckInstance {
    store: Store<PluginState>,
    api: CheckApi,
    checker: Option<ResourceAny>,
}

impl CheckInstance {
    /// Instantiates the plugin in a fresh store and opens a checker for a run's plan.
    pub async fn open(
        host: &PluginHost,
        plugin: &Plugin,
        grants: &Grants,
        limits: Limits,
        config_json: &str,
        plan: &PlanSummary,
    ) -> Result<CheckInstance, CallError> {
        let (mut store, pre) = prepare(host, plugin, grants, limits)?;
        let config_json = expanded_config(plugin, grants, config_json)?;
        let config_json = config_json.as_str();
        let opened = async {
            match plugin.contract {
                ContractVersion::V0_1_0 => {
                    let api =
                        v0_1_0::QualityCheck::instantiate(&mut store, pre, plugin.row_encoding)
                            .await?;
                    let checker = api.open(&mut store, config_json, plan).await?;
                    Ok((CheckApi::V0_1_0(api), checker))
                }
                ContractVersion::V0_2_0 => {
                    let api =
                        v0_2_0::QualityCheck::instantiate(&mut store, pre, plugin.row_encoding)
                            .await?;
                    let checker = api.open(&mut store, config_json, plan).await?;
                    Ok((CheckApi::V0_2_0(api), checker))
                }
                ContractVersion::V0_3_0 => {
                    let api =
                        v0_3_0::QualityCheck::instantiate(&mut store, pre, plugin.row_encoding)
                            .await?;
                    let checker = api.open(&mut store, config_json, plan).await?;
                    Ok((CheckApi::V0_3_0(api), checker))
                }
            }
        }
        .await;
        let (api, checker) = redact(&store, opened)?;
        Ok(CheckInstance {
            store,
            api,
            checker: Some(checker),
        })
    }

    /// Planned rows of one kind; for `Changed`, `before` holds the last delivered values.
    pub async fn observe(
        &mut self,
        kind: ChangeKind,
        after: Batch,
        before: Option<Batch>,
    ) -> Result<(), CallError> {
        let checker = self
            .checker
            .ok_or_else(|| CallError::Host("checker already closed".into()))?;
        let result = match &self.api {
            CheckApi::V0_1_0(api) => {
                api.observe(&mut self.store, checker, kind, after, before)
                    .await
            }
            CheckApi::V0_2_0(api) => {
                api.observe(&mut self.store, checker, kind, after, before)
                    .await
            }
            CheckApi::V0_3_0(api) => {
                api.observe(&mut self.store, checker, kind, after, before)
                    .await
            }
        };
        redact(&self.store, result)
    }

    /// The checker's verdict (secrets cut from its message and samples); releases the
    /// checker.
    pub async fn finish(mut self) -> Result<CheckResult, CallError> {
        let checker = self
            .checker
            .take()
            .ok_or_else(|| CallError::Host("checker already closed".into()))?;
        let result = match &self.api {
            CheckApi::V0_1_0(api) => api.finish(&mut self.store, checker).await,
            CheckApi::V0_2_0(api) => api.finish(&mut self.store, checker).await,
            CheckApi::V0_3_0(api) => api.finish(&mut self.store, checker).await,
        };
        drop_resource(&mut self.store, checker).await;
        let secrets = &self.store.data().secrets;
        redact(&self.store, result).map(|mut r| {
            r.message = crate::redact::redact(secrets, &r.message);
            r.samples = r
                .samples
                .iter()
                .map(|s| crate::redact::redact(secrets, s))
                .collect();
            r
        })
    }
}

/// Calls an approval-policy plugin's `evaluate` once, in a fresh instance with no grants:
/// its decision only (see [`evaluate_policy_decision`] for the waivers).
pub async fn evaluate_policy(
    host: &PluginHost,
    plugin: &Plugin,
    limits: Limits,
    config_json: &str,
    request: &ApprovalRequest,
) -> Result<Decision, CallError> {
    let review = ReviewContext::default();
    evaluate_policy_decision(host, plugin, limits, config_json, request, &review)
        .await
        .map(|d| d.decision)
}

/// Calls an approval-policy plugin's `evaluate` once, in a fresh instance with no grants,
/// showing a 0.3.0 policy `review` (plugin changes, built-in requirements): its decision and
/// the built-in rules it explicitly waives (none from a 0.1.0 or 0.2.0 policy).
pub async fn evaluate_policy_decision(
    host: &PluginHost,
    plugin: &Plugin,
    limits: Limits,
    config_json: &str,
    request: &ApprovalRequest,
    review: &ReviewContext,
) -> Result<PolicyDecision, CallError> {
    let (mut store, pre) = prepare(host, plugin, &Grants::default(), limits)?;
    let decision = async {
        match plugin.contract {
            ContractVersion::V0_1_0 => {
                v0_1_0::ApprovalPolicy::instantiate(&mut store, pre)
                    .await?
                    .evaluate(&mut store, config_json, request, review)
                    .await
            }
            ContractVersion::V0_2_0 => {
                v0_2_0::ApprovalPolicy::instantiate(&mut store, pre)
                    .await?
                    .evaluate(&mut store, config_json, request, review)
                    .await
            }
            ContractVersion::V0_3_0 => {
                v0_3_0::ApprovalPolicy::instantiate(&mut store, pre)
                    .await?
                    .evaluate(&mut store, config_json, request, review)
                    .await
            }
        }
    }
    .await;
    redact(&store, decision)
}

/// The operations a destination's config can express, with a hint for each operation of
/// its spec it cannot (0.3.0 `operations-for`). A 0.1.0 or 0.2.0 plugin, or a 0.3.0 one
/// that answers operations outside its spec, is taken at its spec's word, restricted to it.
pub async fn destination_operations(
    host: &PluginHost,
    plugin: &Plugin,
    limits: Limits,
    config_json: &str,
) -> Result<OperationSupport, CallError> {
    if plugin.contract != ContractVersion::V0_3_0 {
        return Ok(OperationSupport::all_of(&plugin.spec));
    }
    let (mut store, pre) = prepare(host, plugin, &Grants::default(), limits)?;
    let support = async {
        v0_3_0::Destination::instantiate(&mut store, pre, plugin.row_encoding)
            .await?
            .operations_for(&mut store, config_json)
            .await
    }
    .await;
    let mut support = redact(&store, support)?;
    support
        .operations
        .retain(|op| plugin.spec.operations.contains(op));
    Ok(support)
}
