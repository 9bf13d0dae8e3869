//! What every contract version's bindings have in common, written once: the
//! [`contract_version!`] macro, which each `vX_Y_Z` module invokes with its `wit/` directory.
//!
//! Within one WIT version the generated Rust types are distinct types, but a version changes
//! few of them, so the code around them (the bindgen invocations, the calls whose types did
//! not change, the conversions to the SDK's plain types) is the same text for every version.
//! The macro holds that text; a version module holds only its delta: the structs of its
//! world wrappers, their `instantiate`, and the methods whose types or meaning changed
//! (0.2.0: the spec's `row-encoding`, JSON batches, an empty outcome list). A change to a
//! shared method that a new version alters moves that method out of the macro into each
//! version module, which then says how the versions differ.
//!
//! The macro's paths resolve at the invocation site (`macro_rules!` hygiene covers local
//! variables only), so `wit`, `source`, `PluginState`, `guest_call!` … are the invoking
//! version's; it expects the imports every version module has (`sdk`, `CallError`,
//! `guest_call`, `PluginState`, `InstancePre`, `ResourceAny`, `Store`).

/// Generates a version's bindings and its version-independent wrapper code: the bindgen
/// modules (`wit_dir` is the version's `wit/vX.Y.Z` directory, relative to `engine/`), the
/// `host` interface's linker registration, the calls shared by every version, the whole
/// `ApprovalPolicy` wrapper, and the conversions between the version's types and the SDK's.
macro_rules! contract_version {
    ($wit_dir:literal) => {
        mod generated {
            pub mod base {
                wasmtime::component::bindgen!({
                    path: $wit_dir,
                    world: "plugin-base",
                    imports: { default: async },
                    exports: { default: async },
                });
            }

            // The kind worlds reuse `base`'s `types` and `host`, so one host implementation serves all.
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

        /// Adds this version's `host` interface to the linker.
        pub fn add_to_linker(
            linker: &mut wasmtime::component::Linker<PluginState>,
        ) -> wasmtime::Result<()> {
            wit_host::add_to_linker::<PluginState, wasmtime::component::HasSelf<PluginState>>(linker, |s| s)
        }

        impl wit::Host for PluginState {}

        fn host_err(e: impl std::fmt::Display) -> CallError {
            CallError::Host(e.to_string())
        }

        fn plugin_result<T>(r: Result<T, wit::PluginError>) -> Result<T, CallError> {
            r.map_err(|e| CallError::Plugin(e.into()))
        }

        impl Base {
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

        impl Source {
            /// Opens a reader over `query`.
            pub async fn open(
                &self,
                store: &mut Store<PluginState>,
                config_json: &str,
                query: &str,
            ) -> Result<ResourceAny, CallError> {
                plugin_result(guest_call!(
                    store,
                    self.0
                        .backflow_plugin_source()
                        .reader()
                        .call_open(&mut *store, config_json, query)
                )?)
            }
        }

        impl Source {
            /// The reader's columns.
            pub async fn columns(
                &self,
                store: &mut Store<PluginState>,
                reader: ResourceAny,
            ) -> Result<Vec<sdk::Column>, CallError> {
                let columns = guest_call!(
                    store,
                    self.0
                        .backflow_plugin_source()
                        .reader()
                        .call_columns(&mut *store, reader)
                )?;
                Ok(columns.into_iter().map(Into::into).collect())
            }
        }

        impl Destination {
            /// Opens a writer for one run of a sync.
            pub async fn open(
                &self,
                store: &mut Store<PluginState>,
                config_json: &str,
                context: &sdk::SyncContext,
            ) -> Result<ResourceAny, CallError> {
                let context = destination::exports::backflow::plugin::destination::SyncContext {
                    sync_name: context.sync_name.clone(),
                    primary_key: context.primary_key.clone(),
                    run_id: context.run_id.clone(),
                };
                plugin_result(guest_call!(
                    store,
                    self.0.backflow_plugin_destination().writer().call_open(
                        &mut *store,
                        config_json,
                        &context
                    )
                )?)
            }
        }

        impl Destination {
            /// Flushes the writer.
            pub async fn finish(
                &self,
                store: &mut Store<PluginState>,
                writer: ResourceAny,
            ) -> Result<(), CallError> {
                plugin_result(guest_call!(
                    store,
                    self.0
                        .backflow_plugin_destination()
                        .writer()
                        .call_finish(&mut *store, writer)
                )?)
            }
        }

        impl QualityCheck {
            /// Opens a checker for a run's plan.
            pub async fn open(
                &self,
                store: &mut Store<PluginState>,
                config_json: &str,
                plan: &sdk::PlanSummary,
            ) -> Result<ResourceAny, CallError> {
                use quality_check::exports::backflow::plugin::quality_check::PlanSummary;
                let plan = PlanSummary {
                    sync_name: plan.sync_name.clone(),
                    columns: plan.columns.iter().cloned().map(Into::into).collect(),
                    snapshot_rows: plan.snapshot_rows,
                    model_rows: plan.model_rows,
                    added: plan.added,
                    changed: plan.changed,
                    removed: plan.removed,
                };
                plugin_result(guest_call!(
                    store,
                    self.0.backflow_plugin_quality_check().checker().call_open(
                        &mut *store,
                        config_json,
                        &plan
                    )
                )?)
            }
        }

        impl QualityCheck {
            /// The checker's verdict.
            pub async fn finish(
                &self,
                store: &mut Store<PluginState>,
                checker: ResourceAny,
            ) -> Result<sdk::CheckResult, CallError> {
                use quality_check::exports::backflow::plugin::quality_check::Verdict as V;
                let r = plugin_result(guest_call!(
                    store,
                    self.0
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

            /// Asks the policy about a change or a run.
    pub async fn evaluate(
                &self,
                store: &mut Store<PluginState>,
                config_json: &str,
                request: &sdk::ApprovalRequest,
            ) -> Result<sdk::Decision, CallError> {
                use approval_policy::exports::backflow::plugin::approval_policy as w;
                let role_to_wit = |r: sdk::Role| match r {
                    sdk::Role::Admin => w::Role::Admin,
                    sdk::Role::Approver => w::Role::Approver,
                    sdk::Role::Contributor => w::Role::Contributor,
                    sdk::Role::Viewer => w::Role::Viewer,
                };
                let role_from_wit = |r: w::Role| match r {
                    w::Role::Admin => sdk::Role::Admin,
                    w::Role::Approver => sdk::Role::Approver,
                    w::Role::Contributor => sdk::Role::Contributor,
                    w::Role::Viewer => sdk::Role::Viewer,
                };
                let request = w::ApprovalRequest {
                    kind: match request.kind {
                        sdk::RequestKind::ConfigChange => w::RequestKind::ConfigChange,
                        sdk::RequestKind::Run => w::RequestKind::Run,
                    },
                    author: request.author.clone(),
                    author_role: role_to_wit(request.author_role),
                    description: request.description.clone(),
                    syncs: request
                        .syncs
                        .iter()
                        .map(|s| w::SyncImpact {
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
                let decision = guest_call!(
                    store,
                    self.0.backflow_plugin_approval_policy().call_evaluate(
                        &mut *store,
                        config_json,
                        &request
                    )
                )?;
                Ok(match plugin_result(decision)? {
                    w::Decision::Approve(reason) => sdk::Decision::Approve(reason),
                    w::Decision::Require(n) => sdk::Decision::Require {
                        count: n.count,
                        roles: n.roles.into_iter().map(role_from_wit).collect(),
                        allow_self_approval: n.allow_self_approval,
                        reason: n.reason,
                    },
                    w::Decision::Reject(reason) => sdk::Decision::Reject(reason),
                })
            }
        }

        // ---- Shared types ------------------------------------------------------------------------

        impl From<wit::ValueType> for sdk::ValueType {
            fn from(t: wit::ValueType) -> Self {
                match t {
                    wit::ValueType::Any => sdk::ValueType::Any,
                    wit::ValueType::Boolean => sdk::ValueType::Boolean,
                    wit::ValueType::Integer => sdk::ValueType::Integer,
                    wit::ValueType::Float => sdk::ValueType::Float,
                    wit::ValueType::Decimal => sdk::ValueType::Decimal,
                    wit::ValueType::Text => sdk::ValueType::Text,
                    wit::ValueType::Bytes => sdk::ValueType::Bytes,
                    wit::ValueType::Timestamp => sdk::ValueType::Timestamp,
                    wit::ValueType::Date => sdk::ValueType::Date,
                    wit::ValueType::Json => sdk::ValueType::Json,
                }
            }
        }

        impl From<sdk::ValueType> for wit::ValueType {
            fn from(t: sdk::ValueType) -> Self {
                match t {
                    sdk::ValueType::Any => wit::ValueType::Any,
                    sdk::ValueType::Boolean => wit::ValueType::Boolean,
                    sdk::ValueType::Integer => wit::ValueType::Integer,
                    sdk::ValueType::Float => wit::ValueType::Float,
                    sdk::ValueType::Decimal => wit::ValueType::Decimal,
                    sdk::ValueType::Text => wit::ValueType::Text,
                    sdk::ValueType::Bytes => wit::ValueType::Bytes,
                    sdk::ValueType::Timestamp => wit::ValueType::Timestamp,
                    sdk::ValueType::Date => wit::ValueType::Date,
                    sdk::ValueType::Json => wit::ValueType::Json,
                }
            }
        }

        impl From<wit::Column> for sdk::Column {
            fn from(c: wit::Column) -> Self {
                sdk::Column {
                    name: c.name,
                    value_type: c.value_type.into(),
                    nullable: c.nullable,
                }
            }
        }

        impl From<sdk::Column> for wit::Column {
            fn from(c: sdk::Column) -> Self {
                wit::Column {
                    name: c.name,
                    value_type: c.value_type.into(),
                    nullable: c.nullable,
                }
            }
        }

        impl From<wit::RowBatch> for sdk::Batch {
            fn from(b: wit::RowBatch) -> Self {
                sdk::Batch {
                    columns: b.columns.into_iter().map(Into::into).collect(),
                    row_count: b.row_count,
                    payload: b.payload,
                }
            }
        }

        impl From<sdk::Batch> for wit::RowBatch {
            fn from(b: sdk::Batch) -> Self {
                wit::RowBatch {
                    columns: b.columns.into_iter().map(Into::into).collect(),
                    row_count: b.row_count,
                    payload: b.payload,
                }
            }
        }

        impl From<wit::Operation> for sdk::Operation {
            fn from(op: wit::Operation) -> Self {
                match op {
                    wit::Operation::Insert => sdk::Operation::Insert,
                    wit::Operation::Update => sdk::Operation::Update,
                    wit::Operation::Delete => sdk::Operation::Delete,
                    wit::Operation::Append => sdk::Operation::Append,
                }
            }
        }

        impl From<sdk::Operation> for wit::Operation {
            fn from(op: sdk::Operation) -> Self {
                match op {
                    sdk::Operation::Insert => wit::Operation::Insert,
                    sdk::Operation::Update => wit::Operation::Update,
                    sdk::Operation::Delete => wit::Operation::Delete,
                    sdk::Operation::Append => wit::Operation::Append,
                }
            }
        }

        impl From<wit::PluginSpec> for sdk::PluginSpec {
            fn from(s: wit::PluginSpec) -> Self {
                sdk::PluginSpec {
                    name: s.name,
                    version: s.version,
                    kind: match s.kind {
                        wit::PluginKind::Source => sdk::PluginKind::Source,
                        wit::PluginKind::Destination => sdk::PluginKind::Destination,
                        wit::PluginKind::QualityCheck => sdk::PluginKind::QualityCheck,
                        wit::PluginKind::ApprovalPolicy => sdk::PluginKind::ApprovalPolicy,
                    },
                    description: s.description,
                    config_schema: s.config_schema,
                    operations: s.operations.into_iter().map(Into::into).collect(),
                    max_batch_size: s.max_batch_size,
                    default_rate_limit: s.default_rate_limit.map(|r| sdk::RateLimitSpec {
                        requests_per_second: r.requests_per_second,
                        rows_per_second: r.rows_per_second,
                    }),
                }
            }
        }

        impl From<wit::PluginError> for sdk::PluginError {
            fn from(e: wit::PluginError) -> Self {
                match e {
                    wit::PluginError::Retryable(message) => sdk::PluginError::Retryable { message },
                    wit::PluginError::RateLimited(r) => sdk::PluginError::RateLimited {
                        message: r.message,
                        retry_after_ms: r.retry_after_ms,
                    },
                    wit::PluginError::BadConfig(c) => sdk::PluginError::BadConfig(sdk::ConfigError {
                        field: c.field,
                        message: c.message,
                    }),
                    wit::PluginError::BadRow(r) => sdk::PluginError::BadRow(sdk::RowError {
                        row_index: r.row_index,
                        key: r.key,
                        message: r.message,
                    }),
                    wit::PluginError::Fatal(message) => sdk::PluginError::Fatal { message },
                }
            }
        }
        impl From<sdk::ChangeKind> for quality_check::exports::backflow::plugin::quality_check::ChangeKind {
            fn from(kind: sdk::ChangeKind) -> Self {
                match kind {
                    sdk::ChangeKind::Added => Self::Added,
                    sdk::ChangeKind::Changed => Self::Changed,
                    sdk::ChangeKind::Removed => Self::Removed,
                    sdk::ChangeKind::Unchanged => Self::Unchanged,
                }
            }
        }

        impl From<destination::exports::backflow::plugin::destination::RowOutcome> for sdk::RowOutcome {
            fn from(outcome: destination::exports::backflow::plugin::destination::RowOutcome) -> Self {
                use destination::exports::backflow::plugin::destination::RowOutcome as W;
                match outcome {
                    W::Accepted => sdk::RowOutcome::Accepted,
                    W::Rejected(m) => sdk::RowOutcome::Rejected(m),
                    W::Retryable(m) => sdk::RowOutcome::Retryable(m),
                }
            }
        }
    };
}
pub(super) use contract_version;
