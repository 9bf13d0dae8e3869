//! Typed, sandboxed plugin instances: a [`SourceInstance`] reads a model, a
//! [`DestinationInstance`] writes batches. Each owns its own [`Store`]; the task holding the
//! instance is the only one that ever touches that store.

use super::bindings::{self, approval_policy, destination, quality_check, source, wit};
use super::{Grants, Limits, Plugin, PluginHost, PluginState};
use backflow_plugin_sdk::{Batch, Column, Operation, PluginError, RowOutcome, SyncContext};
use std::fmt;
use wasmtime::component::ResourceAny;
use wasmtime::Store;

/// Why a call into a plugin failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The plugin returned an error value; the instance is still usable.
    Plugin(PluginError),
    /// The plugin trapped, ran out of time or memory; the instance is unusable.
    Trap(String),
    /// The host could not set up the call (e.g. a granted directory is missing).
    Host(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Plugin(e) => write!(f, "{e}"),
            CallError::Trap(m) => write!(f, "{m}"),
            CallError::Host(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for CallError {}

impl CallError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, CallError::Plugin(e) if e.is_retryable())
    }
}

/// Starts the per-call CPU clock. Pair with [`finish`]; see [`guest_call!`].
pub(crate) fn begin(store: &mut Store<PluginState>) -> std::time::Duration {
    store.data_mut().clock.start();
    store.data().stderr.clear();
    store.set_epoch_deadline(1);
    store.data().clock.wall
}

/// The error for a call that outlived its wall-clock limit. The call's future was dropped,
/// which leaves the instance unusable, as a trap does.
pub(crate) fn wall_timeout(store: &mut Store<PluginState>) -> CallError {
    let state = store.data();
    CallError::Trap(format!(
        "plugin {} did not return within {} ms (its wall-clock limit, limits.wall_timeout_ms) and was stopped",
        state.plugin_name,
        state.clock.wall.as_millis()
    ))
}

/// Turns a wasmtime error (trap, interrupt, failed grow) into a [`CallError::Trap`] that says
/// what happened in words, including the tail of what the plugin wrote to stderr (a Rust
/// plugin's panic message lands there).
pub(crate) fn finish<R>(store: &mut Store<PluginState>, result: wasmtime::Result<R>) -> Result<R, CallError> {
    let error = match result {
        Ok(r) => return Ok(r),
        Err(e) => e,
    };
    let state = store.data();
    let name = &state.plugin_name;
    let detail = format!("{error:?}");
    let mut message = if state.clock.timed_out || matches!(error.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt)) {
        format!("plugin {name} exceeded its CPU time limit of {} ms and was stopped", state.clock.budget.as_millis())
    } else if detail.contains("forcing trap when growing memory") || detail.contains("memory allocation failed") {
        format!("plugin {name} exceeded its memory limit and was stopped")
    } else if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        format!("plugin {name} crashed ({trap})")
    } else {
        format!("plugin {name} failed: {}", error.root_cause())
    };
    let stderr = state.stderr.contents();
    let stderr = String::from_utf8_lossy(&stderr);
    let stderr = stderr.trim();
    if !stderr.is_empty() {
        let tail: String = stderr.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
        message.push_str(": ");
        message.push_str(&tail.replace('\n', " "));
    }
    tracing::debug!(plugin = %name, "{detail}");
    Err(CallError::Trap(message))
}

/// Calls into a guest with the CPU clock running: `guest_call!(store, future)`.
macro_rules! guest_call {
    ($store:expr, $call:expr) => {{
        let wall = $crate::host::instance::begin($store);
        match tokio::time::timeout(wall, $call).await {
            Ok(result) => $crate::host::instance::finish($store, result),
            Err(_) => Err($crate::host::instance::wall_timeout($store)),
        }
    }};
}
pub(crate) use guest_call;

fn plugin_result<T>(r: Result<T, wit::PluginError>) -> Result<T, CallError> {
    r.map_err(|e| CallError::Plugin(bindings::error_from_wit(e)))
}

fn host_err(e: impl fmt::Display) -> CallError {
    CallError::Host(e.to_string())
}

/// A source plugin with an open reader.
pub struct SourceInstance {
    store: Store<PluginState>,
    bindings: source::SourcePlugin,
    reader: Option<ResourceAny>,
    columns: Vec<Column>,
}

impl SourceInstance {
    pub async fn open(host: &PluginHost, plugin: &Plugin, grants: &Grants, limits: Limits, config_json: &str, query: &str) -> Result<SourceInstance, CallError> {
        let mut store = host.new_store(&plugin.spec.name, grants, limits).map_err(|e| CallError::Host(format!("{e:#}")))?;
        let pre = host.linker().instantiate_pre(&plugin.component).map_err(host_err)?;
        let pre = source::SourcePluginPre::new(pre).map_err(host_err)?;
        let bindings = guest_call!(&mut store, pre.instantiate_async(&mut store))?;
        let reader = guest_call!(&mut store, bindings.backflow_plugin_source().reader().call_open(&mut store, config_json, query))?;
        let reader = plugin_result(reader)?;
        let columns = guest_call!(&mut store, bindings.backflow_plugin_source().reader().call_columns(&mut store, reader))?;
        let columns = columns.into_iter().map(bindings::column_from_wit).collect();
        Ok(SourceInstance { store, bindings, reader: Some(reader), columns })
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The next batch, or `None` when the model is exhausted.
    pub async fn next_batch(&mut self, max_rows: u32) -> Result<Option<Batch>, CallError> {
        let reader = self.reader.ok_or_else(|| CallError::Host("reader already closed".into()))?;
        let store = &mut self.store;
        let batch = guest_call!(store, self.bindings.backflow_plugin_source().reader().call_next_batch(&mut *store, reader, max_rows))?;
        Ok(plugin_result(batch)?.map(|b| Batch {
            columns: b.columns.into_iter().map(bindings::column_from_wit).collect(),
            row_count: b.row_count,
            payload: b.payload,
        }))
    }

    /// Releases the reader (closing files and connections inside the plugin).
    pub async fn close(mut self) {
        if let Some(reader) = self.reader.take() {
            let store = &mut self.store;
            let _ = guest_call!(store, reader.resource_drop_async(&mut *store));
        }
    }
}

/// A destination plugin with an open writer.
pub struct DestinationInstance {
    store: Store<PluginState>,
    bindings: destination::DestinationPlugin,
    writer: Option<ResourceAny>,
}

impl DestinationInstance {
    pub async fn open(host: &PluginHost, plugin: &Plugin, grants: &Grants, limits: Limits, config_json: &str, context: &SyncContext) -> Result<DestinationInstance, CallError> {
        let mut store = host.new_store(&plugin.spec.name, grants, limits).map_err(|e| CallError::Host(format!("{e:#}")))?;
        let pre = host.linker().instantiate_pre(&plugin.component).map_err(host_err)?;
        let pre = destination::DestinationPluginPre::new(pre).map_err(host_err)?;
        let bindings = guest_call!(&mut store, pre.instantiate_async(&mut store))?;
        let ctx = destination::exports::backflow::plugin::destination::SyncContext {
            sync_name: context.sync_name.clone(),
            primary_key: context.primary_key.clone(),
            run_id: context.run_id.clone(),
        };
        let writer = guest_call!(&mut store, bindings.backflow_plugin_destination().writer().call_open(&mut store, config_json, &ctx))?;
        let writer = plugin_result(writer)?;
        Ok(DestinationInstance { store, bindings, writer: Some(writer) })
    }

    /// Writes a batch; one outcome per row in order, or an error if nothing was written.
    pub async fn write(&mut self, op: Operation, batch: Batch) -> Result<Vec<RowOutcome>, CallError> {
        use destination::exports::backflow::plugin::destination::RowOutcome as W;
        let writer = self.writer.ok_or_else(|| CallError::Host("writer already closed".into()))?;
        let rows = batch.row_count as usize;
        let wit_batch = wit::RowBatch {
            columns: batch.columns.iter().map(bindings::column_to_wit).collect(),
            row_count: batch.row_count,
            payload: batch.payload,
        };
        let store = &mut self.store;
        let outcomes = guest_call!(
            store,
            self.bindings.backflow_plugin_destination().writer().call_write(&mut *store, writer, bindings::operation_to_wit(op), &wit_batch)
        )?;
        let outcomes = plugin_result(outcomes)?;
        if outcomes.len() != rows {
            return Err(CallError::Plugin(PluginError::fatal(format!(
                "destination returned {} row outcomes for a batch of {rows} rows",
                outcomes.len()
            ))));
        }
        Ok(outcomes
            .into_iter()
            .map(|o| match o {
                W::Accepted => RowOutcome::Accepted,
                W::Rejected(m) => RowOutcome::Rejected(m),
                W::Retryable(m) => RowOutcome::Retryable(m),
            })
            .collect())
    }

    /// Flushes and releases the writer.
    pub async fn finish(mut self) -> Result<(), CallError> {
        let Some(writer) = self.writer.take() else { return Ok(()) };
        let store = &mut self.store;
        let result = guest_call!(store, self.bindings.backflow_plugin_destination().writer().call_finish(&mut *store, writer));
        let store = &mut self.store;
        let _ = guest_call!(store, writer.resource_drop_async(&mut *store));
        plugin_result(result?)
    }
}

/// A quality check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// `pass`, `warn` or `fail`.
    pub verdict: &'static str,
    pub message: String,
    pub samples: Vec<String>,
}

/// What a check is told about the plan before it sees rows.
pub struct CheckSummary<'a> {
    pub sync_name: &'a str,
    pub columns: &'a [Column],
    pub snapshot_rows: u64,
    pub model_rows: u64,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
}

/// Which planned rows a batch holds (mirrors `change-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckChange {
    Added,
    Changed,
    Removed,
    Unchanged,
}

/// A quality-check plugin with an open checker.
pub struct CheckInstance {
    store: Store<PluginState>,
    bindings: quality_check::QualityCheckPlugin,
    checker: Option<ResourceAny>,
}

fn batch_to_wit(batch: Batch) -> wit::RowBatch {
    wit::RowBatch { columns: batch.columns.iter().map(bindings::column_to_wit).collect(), row_count: batch.row_count, payload: batch.payload }
}

impl CheckInstance {
    pub async fn open(host: &PluginHost, plugin: &Plugin, grants: &Grants, limits: Limits, config_json: &str, summary: &CheckSummary<'_>) -> Result<CheckInstance, CallError> {
        use quality_check::exports::backflow::plugin::quality_check::PlanSummary;
        let mut store = host.new_store(&plugin.spec.name, grants, limits).map_err(|e| CallError::Host(format!("{e:#}")))?;
        let pre = host.linker().instantiate_pre(&plugin.component).map_err(host_err)?;
        let pre = quality_check::QualityCheckPluginPre::new(pre).map_err(host_err)?;
        let bindings = guest_call!(&mut store, pre.instantiate_async(&mut store))?;
        let plan = PlanSummary {
            sync_name: summary.sync_name.to_string(),
            columns: summary.columns.iter().map(bindings::column_to_wit).collect(),
            snapshot_rows: summary.snapshot_rows,
            model_rows: summary.model_rows,
            added: summary.added,
            changed: summary.changed,
            removed: summary.removed,
        };
        let checker = guest_call!(&mut store, bindings.backflow_plugin_quality_check().checker().call_open(&mut store, config_json, &plan))?;
        let checker = plugin_result(checker)?;
        Ok(CheckInstance { store, bindings, checker: Some(checker) })
    }

    pub async fn observe(&mut self, change: CheckChange, after: Batch, before: Option<Batch>) -> Result<(), CallError> {
        use quality_check::exports::backflow::plugin::quality_check::ChangeKind;
        let checker = self.checker.ok_or_else(|| CallError::Host("checker already closed".into()))?;
        let kind = match change {
            CheckChange::Added => ChangeKind::Added,
            CheckChange::Changed => ChangeKind::Changed,
            CheckChange::Removed => ChangeKind::Removed,
            CheckChange::Unchanged => ChangeKind::Unchanged,
        };
        let after = batch_to_wit(after);
        let before = before.map(batch_to_wit);
        let store = &mut self.store;
        let r = guest_call!(store, self.bindings.backflow_plugin_quality_check().checker().call_observe(&mut *store, checker, kind, &after, before.as_ref()))?;
        plugin_result(r)
    }

    pub async fn finish(mut self) -> Result<CheckOutcome, CallError> {
        use quality_check::exports::backflow::plugin::quality_check::Verdict;
        let checker = self.checker.take().ok_or_else(|| CallError::Host("checker already closed".into()))?;
        let store = &mut self.store;
        let r = guest_call!(store, self.bindings.backflow_plugin_quality_check().checker().call_finish(&mut *store, checker));
        let store = &mut self.store;
        let _ = guest_call!(store, checker.resource_drop_async(&mut *store));
        let r = plugin_result(r?)?;
        Ok(CheckOutcome {
            verdict: match r.verdict {
                Verdict::Pass => "pass",
                Verdict::Warn => "warn",
                Verdict::Fail => "fail",
            },
            message: r.message,
            samples: r.samples,
        })
    }
}

/// What an approval policy is asked (mirrors `approval-request`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PolicyRequest {
    /// `config-change` or `run`.
    pub kind: String,
    pub author: String,
    pub author_role: crate::domain::Role,
    pub description: String,
    pub syncs: Vec<PolicySyncImpact>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicySyncImpact {
    pub sync_name: String,
    pub destination: String,
    pub mode: String,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    pub column_labels: Vec<String>,
}

/// A policy's answer (mirrors `decision`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum PolicyDecision {
    Approve { reason: String },
    Require { count: u32, roles: Vec<crate::domain::Role>, allow_self_approval: bool, reason: String },
    Reject { reason: String },
}

/// Calls an approval-policy plugin's `evaluate` once, in a fresh instance with no grants.
pub async fn evaluate_policy(host: &PluginHost, plugin: &Plugin, limits: Limits, config_json: &str, request: &PolicyRequest) -> Result<PolicyDecision, CallError> {
    use crate::domain::Role;
    use approval_policy::exports::backflow::plugin::approval_policy as wit_policy;
    let role_to_wit = |r: Role| match r {
        Role::Admin => wit_policy::Role::Admin,
        Role::Approver => wit_policy::Role::Approver,
        Role::Contributor => wit_policy::Role::Contributor,
        Role::Viewer => wit_policy::Role::Viewer,
    };
    let role_from_wit = |r: wit_policy::Role| match r {
        wit_policy::Role::Admin => Role::Admin,
        wit_policy::Role::Approver => Role::Approver,
        wit_policy::Role::Contributor => Role::Contributor,
        wit_policy::Role::Viewer => Role::Viewer,
    };
    let mut store = host.new_store(&plugin.spec.name, &Grants::default(), limits).map_err(|e| CallError::Host(format!("{e:#}")))?;
    let pre = host.linker().instantiate_pre(&plugin.component).map_err(host_err)?;
    let pre = approval_policy::ApprovalPolicyPluginPre::new(pre).map_err(host_err)?;
    let bindings = guest_call!(&mut store, pre.instantiate_async(&mut store))?;
    let wit_request = wit_policy::ApprovalRequest {
        kind: if request.kind == "run" { wit_policy::RequestKind::Run } else { wit_policy::RequestKind::ConfigChange },
        author: request.author.clone(),
        author_role: role_to_wit(request.author_role),
        description: request.description.clone(),
        syncs: request
            .syncs
            .iter()
            .map(|s| wit_policy::SyncImpact {
                sync_name: s.sync_name.clone(),
                destination: s.destination.clone(),
                mode: s.mode.clone(),
                added: s.added,
                changed: s.changed,
                removed: s.removed,
                column_labels: s.column_labels.clone(),
            })
            .collect(),
    };
    let decision = guest_call!(&mut store, bindings.backflow_plugin_approval_policy().call_evaluate(&mut store, config_json, &wit_request))?;
    Ok(match plugin_result(decision)? {
        wit_policy::Decision::Approve(reason) => PolicyDecision::Approve { reason },
        wit_policy::Decision::Require(n) => PolicyDecision::Require {
            count: n.count,
            roles: n.roles.into_iter().map(role_from_wit).collect(),
            allow_self_approval: n.allow_self_approval,
            reason: n.reason,
        },
        wit_policy::Decision::Reject(reason) => PolicyDecision::Reject { reason },
    })
}
