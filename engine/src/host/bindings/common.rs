//! What every contract version's bindings have in common, written once: the
//! [`contract_version!`] macro, which each `vX_Y_Z` module invokes with its `wit/` directory,
//! and the version-independent helpers it calls ([`encode`], [`decode`]).
//!
//! Within one WIT version the generated Rust types are distinct types, but a version changes
//! few of them, so the code around them (the bindgen invocations, the world wrappers, the
//! conversions to the SDK's plain types, the `host` interface) is the same text for every
//! version. The macro holds that text; a version module holds only its delta, as the items
//! the macro's code calls:
//!
//! - `fn row_encoding(spec: &wit::PluginSpec) -> sdk::RowEncoding`: how the plugin's batches
//!   are encoded (0.1.0: always MessagePack; 0.2.0: the spec's `row-encoding`);
//! - `const EMPTY_OUTCOMES_ACCEPT_ALL: bool`: whether a `write` answering an empty list for a
//!   non-empty batch means every row was accepted (0.2.0) or is a wrong count (0.1.0);
//! - `fn capabilities(spec: &wit::PluginSpec) -> Vec<sdk::Capability>`: what the plugin
//!   declares beyond the basics (none before 0.3.0);
//! - `fn wit_batch(columns, row_count, payload) -> wit::RowBatch`: a batch the engine sends
//!   (0.3.0 adds `present`, left out here: a batch with absent cells goes through the
//!   0.3.0 destination's `write_present`);
//! - `fn plan_summary(&sdk::PlanSummary) -> wit_quality_check::PlanSummary`: what a check is
//!   told (0.3.0 adds `purpose`; `model-rows` became optional);
//! - `fn approval_request(&sdk::ApprovalRequest, &sdk::ReviewContext) -> wit_policy::ApprovalRequest`
//!   and `fn policy_decision(answer) -> sdk::PolicyDecision`: what a policy is asked and
//!   how its answer reads (0.3.0 adds plugin changes and built-in requirements, and answers
//!   a record that may waive a built-in rule).
//!
//! What only 0.3.0 has (`operations-for`, `writer.read`, the `warehouse` interface) is
//! written in `v0_3_0.rs` as more methods on the same wrappers.
//!
//! A new version whose change the macro cannot express that way adds such an item (a flag, a
//! conversion function) to every version module, or, for a method whose shape changed, moves
//! that method out of the macro into each version module, which then says how they differ.
//!
//! The `host` interface plugins import is implemented once, in `host::imports`, against the
//! newest version's types ([`super::newest_host`]); the macro's `impl wit_host::Host` converts
//! each version's records to those (for the newest version, field by field to the same type).
//!
//! The macro's paths resolve at the invocation site (`macro_rules!` hygiene covers local
//! variables only), so `wit`, `source`, `row_encoding` … are the invoking version's.

use crate::host::call::CallError;
use backflow_plugin_sdk as sdk;

/// A batch of the engine's (MessagePack) in the plugin's encoding, for `write` and `observe`.
pub(super) fn encode(
    batch: sdk::Batch,
    encoding: sdk::RowEncoding,
) -> Result<sdk::Batch, CallError> {
    match encoding {
        sdk::RowEncoding::Msgpack => Ok(batch),
        sdk::RowEncoding::Json => {
            let payload = sdk::json_rows::to_json_rows(&batch)
                .map_err(|e| CallError::Host(format!("encoding a batch as JSON rows: {e}")))?;
            Ok(sdk::Batch { payload, ..batch })
        }
    }
}

/// A batch a source returned, in the plugin's encoding, as the engine's (MessagePack). What a
/// JSON plugin sent is checked here, row by row, against its own columns.
pub(super) fn decode(
    batch: sdk::Batch,
    encoding: sdk::RowEncoding,
) -> Result<sdk::Batch, CallError> {
    match encoding {
        sdk::RowEncoding::Msgpack => Ok(batch),
        sdk::RowEncoding::Json => {
            sdk::json_rows::from_json_rows(batch.columns, batch.row_count, &batch.payload).map_err(
                |e| {
                    CallError::Plugin(sdk::PluginError::fatal(format!(
                        "the source returned a batch that is not valid JSON rows: {e}"
                    )))
                },
            )
        }
    }
}

/// What a plugin of a version before 0.3.0 is told as the model's row count: the count when
/// known, or else the best estimate from the plan (the snapshot plus what is added, minus
/// what is removed), since those versions have no way to say "unknown".
pub(super) fn model_rows_before_0_3_0(plan: &sdk::PlanSummary) -> u64 {
    plan.model_rows
        .unwrap_or_else(|| (plan.snapshot_rows + plan.added).saturating_sub(plan.removed))
}

/// The conversion layer for versions before 0.3.0: the delta items of
/// [`contract_version!`] that make such a plugin a 0.3.0 plugin that declares no
/// capability, is not told a plan's purpose, is not shown plugin changes or built-in
/// requirements, and never waives. (It answers `operations-for` with its spec's operations
/// and cannot read: see `host::instance`.)
macro_rules! before_0_3_0 {
    () => {
        /// No capabilities before 0.3.0.
        fn capabilities(_spec: &wit::PluginSpec) -> Vec<sdk::Capability> {
            Vec::new()
        }

        /// A batch as the engine sends it (no `present` before 0.3.0).
        fn wit_batch(columns: Vec<wit::Column>, row_count: u32, payload: Vec<u8>) -> wit::RowBatch {
            wit::RowBatch {
                columns,
                row_count,
                payload,
            }
        }

        /// What a check is told: no purpose, the model's row count estimated when unknown.
        fn plan_summary(plan: &sdk::PlanSummary) -> wit_quality_check::PlanSummary {
            wit_quality_check::PlanSummary {
                sync_name: plan.sync_name.clone(),
                columns: plan.columns.iter().cloned().map(Into::into).collect(),
                snapshot_rows: plan.snapshot_rows,
                model_rows: super::common::model_rows_before_0_3_0(plan),
                added: plan.added,
                changed: plan.changed,
                removed: plan.removed,
            }
        }

        /// What a policy is asked: no plugin changes, no built-in requirements.
        fn approval_request(
            request: &sdk::ApprovalRequest,
            _review: &sdk::ReviewContext,
        ) -> wit_policy::ApprovalRequest {
            wit_policy::ApprovalRequest {
                kind: policy_request_kind(request.kind),
                author: request.author.clone(),
                author_role: policy_role_to_wit(request.author_role),
                description: request.description.clone(),
                syncs: policy_syncs(request),
            }
        }

        /// A bare decision, which waives nothing.
        fn policy_decision(answer: wit_policy::Decision) -> sdk::PolicyDecision {
            decision_from_wit(answer).into()
        }
    };
}
pub(super) use before_0_3_0;

/// Generates a version's bindings and every wrapper around them: the bindgen modules
/// (`wit_dir` is the version's `wit/vX.Y.Z` directory, relative to `engine/`), the `host`
/// interface and its linker registration, the world wrappers (`Base`, `Source`,
/// `Destination`, `QualityCheck`, `ApprovalPolicy`) and the conversions between the version's
/// types and the SDK's. The invoking module defines `row_encoding` and
/// `EMPTY_OUTCOMES_ACCEPT_ALL` (see the module docs).
macro_rules! contract_version {
    ($wit_dir:literal) => {
        use crate::host::call::{guest_call, CallError};
        use crate::host::PluginState;
        use backflow_plugin_sdk as sdk;
        use wasmtime::component::{InstancePre, ResourceAny};
        use wasmtime::Store;

        // Generated from the WIT file, which documents it.
        #[allow(missing_docs)]
        mod generated {
            pub mod base {
                wasmtime::component::bindgen!({
                    path: $wit_dir,
                    world: "plugin-base",
                    imports: { default: async },
                    exports: { default: async },
                });
            }

            // The kind worlds reuse `base`'s `types` and `host`, so one host implementation
            // serves all.
            macro_rules! world {
                ($module:ident, $world:literal) => {
                    pub mod $module {
                        wasmtime::component::bindgen!({
                            path: $wit_dir,
                            world: $world,
                            imports: { default: async },
                            exports: { default: async },
                            with: {
                                "backflow:plugin/types": super::base::backflow::plugin::types,
                                "backflow:plugin/host": super::base::backflow::plugin::host,
                            },
                        });
                    }
                };
            }
            world!(source, "source-plugin");
            world!(destination, "destination-plugin");
            world!(quality_check, "quality-check-plugin");
            world!(approval_policy, "approval-policy-plugin");
        }

        /// The `host` interface plugins import (implemented in `host::imports`).
        pub use generated::base::backflow::plugin::host as wit_host;
        use generated::base::backflow::plugin::types as wit;
        use generated::{approval_policy, destination, quality_check, source};
        use approval_policy::exports::backflow::plugin::approval_policy as wit_policy;
        use destination::exports::backflow::plugin::destination as wit_destination;
        use quality_check::exports::backflow::plugin::quality_check as wit_quality_check;

        /// Adds this version's `host` interface to the linker.
        pub fn add_to_linker(
            linker: &mut wasmtime::component::Linker<PluginState>,
        ) -> wasmtime::Result<()> {
            wit_host::add_to_linker::<PluginState, wasmtime::component::HasSelf<PluginState>>(
                linker,
                |s| s,
            )
        }

        impl wit::Host for PluginState {}

        /// This version's `host` interface: its records converted to the newest version's,
        /// for the one implementation in `host::imports`.
        impl wit_host::Host for PluginState {
            async fn log(&mut self, level: wit_host::LogLevel, message: String) {
                let level = match level {
                    wit_host::LogLevel::Trace => newest::LogLevel::Trace,
                    wit_host::LogLevel::Debug => newest::LogLevel::Debug,
                    wit_host::LogLevel::Info => newest::LogLevel::Info,
                    wit_host::LogLevel::Warn => newest::LogLevel::Warn,
                    wit_host::LogLevel::Error => newest::LogLevel::Error,
                };
                self.host_log(level, message)
            }

            async fn now_ms(&mut self) -> u64 {
                self.host_now_ms()
            }

            async fn http_send(
                &mut self,
                request: wit_host::HttpRequest,
            ) -> Result<wit_host::HttpResponse, wit_host::HttpError> {
                let request = newest::HttpRequest {
                    method: request.method,
                    url: request.url,
                    headers: request
                        .headers
                        .into_iter()
                        .map(|h| newest::HttpHeader {
                            name: h.name,
                            value: h.value,
                        })
                        .collect(),
                    body: request.body,
                    timeout_ms: request.timeout_ms,
                };
                match self.host_http_send(request).await {
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
                    Err(newest::HttpError::Denied(m)) => Err(wit_host::HttpError::Denied(m)),
                    Err(newest::HttpError::InvalidRequest(m)) => {
                        Err(wit_host::HttpError::InvalidRequest(m))
                    }
                    Err(newest::HttpError::Connection(m)) => {
                        Err(wit_host::HttpError::Connection(m))
                    }
                    Err(newest::HttpError::Timeout(m)) => Err(wit_host::HttpError::Timeout(m)),
                }
            }
        }

        fn host_err(e: impl std::fmt::Display) -> CallError {
            CallError::Host(e.to_string())
        }

        fn plugin_result<T>(r: Result<T, wit::PluginError>) -> Result<T, CallError> {
            r.map_err(|e| CallError::Plugin(e.into()))
        }

        // ---- Worlds ------------------------------------------------------------------------

        /// Any plugin, seen through `plugin-base`: its spec and config check.
        pub struct Base(generated::base::PluginBase);

        impl Base {
            /// Instantiates the plugin.
            pub async fn instantiate(
                store: &mut Store<PluginState>,
                pre: InstancePre<PluginState>,
            ) -> Result<Base, CallError> {
                let pre = generated::base::PluginBasePre::new(pre).map_err(host_err)?;
                Ok(Base(guest_call!(store, pre.instantiate_async(&mut *store))?))
            }

            /// The plugin's spec, the row encoding it speaks and the capabilities it declares.
            pub async fn spec(
                &self,
                store: &mut Store<PluginState>,
            ) -> Result<(sdk::PluginSpec, sdk::RowEncoding, Vec<sdk::Capability>), CallError>
            {
                let spec = guest_call!(
                    store,
                    self.0.backflow_plugin_plugin().call_spec(&mut *store)
                )?;
                let encoding = row_encoding(&spec);
                let capabilities = capabilities(&spec);
                Ok((spec.into(), encoding, capabilities))
            }

            /// The plugin's own check of a config: every problem it finds.
            pub async fn check_config(
                &self,
                store: &mut Store<PluginState>,
                config_json: &str,
            ) -> Result<Vec<sdk::ConfigError>, CallError> {
                let errors = guest_call!(
                    store,
                    self.0
                        .backflow_plugin_plugin()
                        .call_check_config(&mut *store, config_json)
                )?;
                Ok(errors
                    .into_iter()
                    .map(|e| sdk::ConfigError {
                        field: e.field,
                        message: e.message,
                    })
                    .collect())
            }
        }

        /// A source plugin: readers over a model, in batches.
        pub struct Source {
            plugin: source::SourcePlugin,
            encoding: sdk::RowEncoding,
        }

        impl Source {
            /// Instantiates the plugin, which speaks `encoding` (from its spec).
            pub async fn instantiate(
                store: &mut Store<PluginState>,
                pre: InstancePre<PluginState>,
                encoding: sdk::RowEncoding,
            ) -> Result<Source, CallError> {
                let pre = source::SourcePluginPre::new(pre).map_err(host_err)?;
                let plugin = guest_call!(store, pre.instantiate_async(&mut *store))?;
                Ok(Source { plugin, encoding })
            }

            /// Opens a reader over `query`.
            pub async fn open(
                &self,
                store: &mut Store<PluginState>,
                config_json: &str,
                query: &str,
            ) -> Result<ResourceAny, CallError> {
                plugin_result(guest_call!(
                    store,
                    self.plugin
                        .backflow_plugin_source()
                        .reader()
                        .call_open(&mut *store, config_json, query)
                )?)
            }

            /// The reader's columns.
            pub async fn columns(
                &self,
                store: &mut Store<PluginState>,
                reader: ResourceAny,
            ) -> Result<Vec<sdk::Column>, CallError> {
                let columns = guest_call!(
                    store,
                    self.plugin
                        .backflow_plugin_source()
                        .reader()
                        .call_columns(&mut *store, reader)
                )?;
                Ok(columns.into_iter().map(Into::into).collect())
            }

            /// The reader's next batch (MessagePack, whatever the plugin speaks), or `None`
            /// when the model is exhausted.
            pub async fn next_batch(
                &self,
                store: &mut Store<PluginState>,
                reader: ResourceAny,
                max_rows: u32,
            ) -> Result<Option<sdk::Batch>, CallError> {
                let batch = guest_call!(
                    store,
                    self.plugin
                        .backflow_plugin_source()
                        .reader()
                        .call_next_batch(&mut *store, reader, max_rows)
                )?;
                plugin_result(batch)?
                    .map(|b| super::common::decode(b.into(), self.encoding))
                    .transpose()
            }
        }

        /// A destination plugin: writers that deliver batches.
        pub struct Destination {
            plugin: destination::DestinationPlugin,
            encoding: sdk::RowEncoding,
        }

        impl Destination {
            /// Instantiates the plugin, which speaks `encoding` (from its spec).
            pub async fn instantiate(
                store: &mut Store<PluginState>,
                pre: InstancePre<PluginState>,
                encoding: sdk::RowEncoding,
            ) -> Result<Destination, CallError> {
                let pre = destination::DestinationPluginPre::new(pre).map_err(host_err)?;
                let plugin = guest_call!(store, pre.instantiate_async(&mut *store))?;
                Ok(Destination { plugin, encoding })
            }

            /// Opens a writer for one run of a sync.
            pub async fn open(
                &self,
                store: &mut Store<PluginState>,
                config_json: &str,
                context: &sdk::SyncContext,
            ) -> Result<ResourceAny, CallError> {
                let context = wit_destination::SyncContext {
                    sync_name: context.sync_name.clone(),
                    primary_key: context.primary_key.clone(),
                    run_id: context.run_id.clone(),
                };
                plugin_result(guest_call!(
                    store,
                    self.plugin.backflow_plugin_destination().writer().call_open(
                        &mut *store,
                        config_json,
                        &context
                    )
                )?)
            }

            /// Writes a batch (MessagePack; encoded as the plugin speaks): the outcomes the
            /// plugin gives, one per row unless it misbehaves (the caller checks the count).
            pub async fn write(
                &self,
                store: &mut Store<PluginState>,
                writer: ResourceAny,
                op: sdk::Operation,
                batch: sdk::Batch,
            ) -> Result<Vec<sdk::RowOutcome>, CallError> {
                let rows = batch.row_count as usize;
                let batch = wit::RowBatch::from(super::common::encode(batch, self.encoding)?);
                let outcomes = guest_call!(
                    store,
                    self.plugin.backflow_plugin_destination().writer().call_write(
                        &mut *store,
                        writer,
                        op.into(),
                        &batch
                    )
                )?;
                let outcomes = plugin_result(outcomes)?;
                if EMPTY_OUTCOMES_ACCEPT_ALL && outcomes.is_empty() {
                    return Ok(vec![sdk::RowOutcome::Accepted; rows]);
                }
                Ok(outcomes.into_iter().map(Into::into).collect())
            }

            /// Flushes the writer.
            pub async fn finish(
                &self,
                store: &mut Store<PluginState>,
                writer: ResourceAny,
            ) -> Result<(), CallError> {
                plugin_result(guest_call!(
                    store,
                    self.plugin
                        .backflow_plugin_destination()
                        .writer()
                        .call_finish(&mut *store, writer)
                )?)
            }
        }

        /// A quality-check plugin: checkers that judge a run's plan.
        pub struct QualityCheck {
            plugin: quality_check::QualityCheckPlugin,
            encoding: sdk::RowEncoding,
        }

        impl QualityCheck {
            /// Instantiates the plugin, which speaks `encoding` (from its spec).
            pub async fn instantiate(
                store: &mut Store<PluginState>,
                pre: InstancePre<PluginState>,
                encoding: sdk::RowEncoding,
            ) -> Result<QualityCheck, CallError> {
                let pre = quality_check::QualityCheckPluginPre::new(pre).map_err(host_err)?;
                let plugin = guest_call!(store, pre.instantiate_async(&mut *store))?;
                Ok(QualityCheck { plugin, encoding })
            }

            /// Opens a checker for a run's plan.
            pub async fn open(
                &self,
                store: &mut Store<PluginState>,
                config_json: &str,
                plan: &sdk::PlanSummary,
            ) -> Result<ResourceAny, CallError> {
                let plan = plan_summary(plan);
                plugin_result(guest_call!(
                    store,
                    self.plugin.backflow_plugin_quality_check().checker().call_open(
                        &mut *store,
                        config_json,
                        &plan
                    )
                )?)
            }

            /// Planned rows of one kind (MessagePack; encoded as the plugin speaks).
            pub async fn observe(
                &self,
                store: &mut Store<PluginState>,
                checker: ResourceAny,
                kind: sdk::ChangeKind,
                after: sdk::Batch,
                before: Option<sdk::Batch>,
            ) -> Result<(), CallError> {
                let kind = kind.into();
                let after = wit::RowBatch::from(super::common::encode(after, self.encoding)?);
                let before = before
                    .map(|b| super::common::encode(b, self.encoding).map(wit::RowBatch::from))
                    .transpose()?;
                plugin_result(guest_call!(
                    store,
                    self.plugin
                        .backflow_plugin_quality_check()
                        .checker()
                        .call_observe(&mut *store, checker, kind, &after, before.as_ref())
                )?)
            }

            /// The checker's verdict.
            pub async fn finish(
                &self,
                store: &mut Store<PluginState>,
                checker: ResourceAny,
            ) -> Result<sdk::CheckResult, CallError> {
                use wit_quality_check::Verdict as V;
                let r = plugin_result(guest_call!(
                    store,
                    self.plugin
                        .backflow_plugin_quality_check()
                        .checker()
                        .call_finish(&mut *store, checker)
                )?)?;
                let verdict = match r.verdict {
                    V::Pass => sdk::Verdict::Pass,
                    V::Warn => sdk::Verdict::Warn,
                    V::Fail => sdk::Verdict::Fail,
                };
                Ok(sdk::CheckResult {
                    verdict,
                    message: r.message,
                    samples: r.samples,
                })
            }
        }

        /// An approval-policy plugin: one `evaluate` per instance.
        pub struct ApprovalPolicy(approval_policy::ApprovalPolicyPlugin);

        impl ApprovalPolicy {
            /// Instantiates the plugin.
            pub async fn instantiate(
                store: &mut Store<PluginState>,
                pre: InstancePre<PluginState>,
            ) -> Result<ApprovalPolicy, CallError> {
                let pre = approval_policy::ApprovalPolicyPluginPre::new(pre).map_err(host_err)?;
                Ok(ApprovalPolicy(guest_call!(
                    store,
                    pre.instantiate_async(&mut *store)
                )?))
            }

            /// Asks the policy about a change or a run. `review` is shown to 0.3.0 policies
            /// only; older ones never waive.
            pub async fn evaluate(
                &self,
                store: &mut Store<PluginState>,
                config_json: &str,
                request: &sdk::ApprovalRequest,
                review: &sdk::ReviewContext,
            ) -> Result<sdk::PolicyDecision, CallError> {
                let request = approval_request(request, review);
                let answer = guest_call!(
                    store,
                    self.0.backflow_plugin_approval_policy().call_evaluate(
                        &mut *store,
                        config_json,
                        &request
                    )
                )?;
                Ok(policy_decision(plugin_result(answer)?))
            }
        }

        fn policy_role_to_wit(r: sdk::Role) -> wit_policy::Role {
            match r {
                sdk::Role::Admin => wit_policy::Role::Admin,
                sdk::Role::Approver => wit_policy::Role::Approver,
                sdk::Role::Contributor => wit_policy::Role::Contributor,
                sdk::Role::Viewer => wit_policy::Role::Viewer,
            }
        }

        fn policy_role_from_wit(r: wit_policy::Role) -> sdk::Role {
            match r {
                wit_policy::Role::Admin => sdk::Role::Admin,
                wit_policy::Role::Approver => sdk::Role::Approver,
                wit_policy::Role::Contributor => sdk::Role::Contributor,
                wit_policy::Role::Viewer => sdk::Role::Viewer,
            }
        }

        fn policy_request_kind(kind: sdk::RequestKind) -> wit_policy::RequestKind {
            match kind {
                sdk::RequestKind::ConfigChange => wit_policy::RequestKind::ConfigChange,
                sdk::RequestKind::Run => wit_policy::RequestKind::Run,
            }
        }

        fn policy_syncs(request: &sdk::ApprovalRequest) -> Vec<wit_policy::SyncImpact> {
            request
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
                .collect()
        }

        fn decision_from_wit(decision: wit_policy::Decision) -> sdk::Decision {
            match decision {
                wit_policy::Decision::Approve(reason) => sdk::Decision::Approve(reason),
                wit_policy::Decision::Require(n) => sdk::Decision::Require {
                    count: n.count,
                    roles: n.roles.into_iter().map(policy_role_from_wit).collect(),
                    allow_self_approval: n.allow_self_approval,
                    reason: n.reason,
                },
                wit_policy::Decision::Reject(reason) => sdk::Decision::Reject(reason),
            }
        }

        // The conversions between this version's types and the SDK's.
        super::conversions::contract_conversions!();
    };
}
pub(super) use contract_version;

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(model_rows: Option<u64>) -> sdk::PlanSummary {
        sdk::PlanSummary {
            sync_name: "s".into(),
            purpose: sdk::PlanPurpose::Undo,
            columns: Vec::new(),
            snapshot_rows: 10,
            model_rows,
            added: 3,
            changed: 2,
            removed: 5,
        }
    }

    #[test]
    fn old_checks_are_told_the_model_rows_or_an_estimate() {
        assert_eq!(model_rows_before_0_3_0(&plan(Some(42))), 42);
        assert_eq!(model_rows_before_0_3_0(&plan(None)), 8, "10 + 3 - 5");
        let mut emptied = plan(None);
        emptied.snapshot_rows = 1;
        assert_eq!(model_rows_before_0_3_0(&emptied), 0, "never below zero");
    }
}
