//! The plugin side: bindings to the WIT contract (0.3.0), the traits a plugin implements,
//! and the adapters that connect the two. Compiled only with one of the world features.
//!
//! What 0.3.0 added is optional for a plugin: every new trait function has a default
//! (`capabilities` none, `operations_for` the spec's operations, `read` and the warehouse
//! functions a fatal "not supported" error, a policy waives nothing), so a plugin written
//! for an earlier SDK rebuilds unchanged.

use crate::check::{ChangeKind, CheckResult, PlanSummary};
use crate::codec::Batch;
use crate::policy::{ApprovalRequest, Decision, PolicyDecision, ReviewContext};
use crate::spec::{
    Capability, ConfigError, Operation, OperationSupport, PluginError, PluginKind, PluginSpec,
    RowOutcome,
};
use crate::value::{Column, ValueType};
use crate::warehouse::{
    ChangeBatch, ChangeLog, DiffCounts, DiffRequest, ReadResult, RunLog, SnapshotTable, WriteBack,
};

/// Bindings for what every world shares: the `types` and `host` interfaces.
#[doc(hidden)]
pub mod host_bindings {
    wit_bindgen::generate!({
        path: "../wit/v0.3.0",
        inline: "
            package backflow:sdk;
            world host-only {
                import backflow:plugin/types@0.3.0;
                import backflow:plugin/host@0.3.0;
            }
        ",
        world: "backflow:sdk/host-only",
        generate_all,
    });
}

use host_bindings::backflow::plugin::types as wit;

macro_rules! world_bindings {
    ($feature:literal, $module:ident, $world:literal, $macro_name:literal) => {
        #[cfg(feature = $feature)]
        #[doc(hidden)]
        pub mod $module {
            wit_bindgen::generate!({
                path: "../wit/v0.3.0",
                world: $world,
                with: {
                    "backflow:plugin/types@0.3.0": crate::guest::host_bindings::backflow::plugin::types,
                    "backflow:plugin/host@0.3.0": crate::guest::host_bindings::backflow::plugin::host,
                },
                pub_export_macro: true,
                export_macro_name: $macro_name,
            });
        }
    };
}

world_bindings!(
    "source",
    source_bindings,
    "source-plugin",
    "__backflow_export_source_world"
);
world_bindings!(
    "destination",
    destination_bindings,
    "destination-plugin",
    "__backflow_export_destination_world"
);
world_bindings!(
    "quality-check",
    check_bindings,
    "quality-check-plugin",
    "__backflow_export_check_world"
);
world_bindings!(
    "approval-policy",
    policy_bindings,
    "approval-policy-plugin",
    "__backflow_export_policy_world"
);

/// Calls into the host: logging, the clock and HTTP. Every call is checked against the
/// operator's grants; a denied call returns an error.
pub mod host {
    use super::host_bindings::backflow::plugin::host as raw;
    pub use super::host_bindings::backflow::plugin::host::{
        HttpError, HttpHeader, HttpRequest, HttpResponse, LogLevel,
    };

    pub fn log(level: LogLevel, message: &str) {
        raw::log(level, message)
    }
    pub fn debug(message: &str) {
        raw::log(LogLevel::Debug, message)
    }
    pub fn info(message: &str) {
        raw::log(LogLevel::Info, message)
    }
    pub fn warn(message: &str) {
        raw::log(LogLevel::Warn, message)
    }
    pub fn now_ms() -> u64 {
        raw::now_ms()
    }
    /// Sends a request through the host; the URL's `host:port` must be granted.
    pub fn http_send(request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        raw::http_send(request)
    }
}

// ---- The traits plugin authors implement -------------------------------------------------

/// The error of a 0.3.0 function a plugin does not implement.
pub fn not_supported(what: &str) -> PluginError {
    PluginError::fatal(format!("{what} is not supported by this plugin"))
}

/// A source plugin: opens a reader for a query. The `warehouse_*` functions (contract
/// 0.3.0, capabilities `warehouse-diff`, `cursor-read`, `warehouse-logs`) are optional: the
/// engine calls them only when `capabilities()` declares them.
pub trait SourcePlugin: 'static {
    type Reader: SourceReader;
    fn spec() -> PluginSpec;
    /// Every problem with `config` (JSON text), without side effects.
    fn check_config(config: &str) -> Vec<ConfigError>;
    fn open(config: &str, query: &str) -> Result<Self::Reader, PluginError>;
    /// What the plugin implements beyond reading (none by default).
    fn capabilities() -> Vec<Capability> {
        Vec::new()
    }
    /// Creates the snapshot table if missing; the key columns it holds.
    fn warehouse_prepare(
        _config: &str,
        _snapshot: SnapshotTable,
        _key_columns: Vec<Column>,
    ) -> Result<Vec<Column>, PluginError> {
        Err(not_supported("warehouse diff"))
    }
    /// Opens a diff of the model against the snapshot table.
    fn warehouse_diff(
        _config: &str,
        _request: DiffRequest,
        _include_unchanged: bool,
    ) -> Result<Box<dyn WarehouseDiffer>, PluginError> {
        Err(not_supported("warehouse diff"))
    }
    /// Records what the destination acknowledged, idempotently.
    fn warehouse_write_back(_config: &str, _write_back: WriteBack) -> Result<(), PluginError> {
        Err(not_supported("warehouse write-back"))
    }
    /// Writes sync logs into `schema`, idempotently.
    fn warehouse_write_logs(
        _config: &str,
        _schema: &str,
        _runs: Vec<RunLog>,
        _changes: Vec<ChangeLog>,
    ) -> Result<(), PluginError> {
        Err(not_supported("warehouse logs"))
    }
}

/// A diff computed in the source database (contract 0.3.0).
pub trait WarehouseDiffer: 'static {
    fn columns(&self) -> Vec<Column>;
    fn counts(&mut self) -> Result<DiffCounts, PluginError>;
    fn next_batch(&mut self, max_rows: u32) -> Result<Option<ChangeBatch>, PluginError>;
    fn max_cursor(&self) -> Option<String> {
        None
    }
}

/// Reads one model in batches.
pub trait SourceReader: 'static {
    fn columns(&self) -> Vec<Column>;
    /// The next batch of at most `max_rows` rows; `None` when done.
    fn next_batch(&mut self, max_rows: u32) -> Result<Option<Batch>, PluginError>;
}

/// A destination plugin: opens a writer for a sync.
pub trait DestinationPlugin: 'static {
    type Writer: DestinationWriter;
    fn spec() -> PluginSpec;
    fn check_config(config: &str) -> Vec<ConfigError>;
    fn open(config: &str, context: crate::spec::SyncContext) -> Result<Self::Writer, PluginError>;
    /// What the plugin implements beyond writing (none by default).
    fn capabilities() -> Vec<Capability> {
        Vec::new()
    }
    /// The operations `config` can express, with a hint for each of the spec's it cannot
    /// (contract 0.3.0). By default every operation of the spec.
    fn operations_for(_config: &str) -> Result<OperationSupport, PluginError> {
        Ok(OperationSupport::all_of(&Self::spec()))
    }
}

/// Writes batches. `write` returns one outcome per row, or an error when nothing was written.
pub trait DestinationWriter: 'static {
    fn write(&mut self, op: Operation, batch: Batch) -> Result<Vec<RowOutcome>, PluginError>;
    /// A batch with absent cells (`present`, contract 0.3.0): only sent to plugins declaring
    /// `field-presence`, which override this. By default a batch with every cell present is
    /// written, and one with absent cells refused.
    fn write_present(
        &mut self,
        op: Operation,
        batch: Batch,
        present: Option<Vec<u8>>,
    ) -> Result<Vec<RowOutcome>, PluginError> {
        match present {
            None => self.write(op, batch),
            Some(_) => Err(not_supported("writing batches with absent fields")),
        }
    }
    fn finish(&mut self) -> Result<(), PluginError> {
        Ok(())
    }
    /// What the destination holds for these keys (capability `read-back`, contract 0.3.0).
    fn read(&mut self, _keys: Batch) -> Result<ReadResult, PluginError> {
        Err(not_supported("reading back"))
    }
}

/// A quality check: judges a run's plan before anything is written.
pub trait QualityCheckPlugin: 'static {
    type Checker: Checker;
    fn spec() -> PluginSpec;
    fn check_config(config: &str) -> Vec<ConfigError>;
    fn open(config: &str, plan: PlanSummary) -> Result<Self::Checker, PluginError>;
}

/// Sees the planned rows, then gives a verdict.
pub trait Checker: 'static {
    /// Planned rows of one kind of change; for `Changed`, `before` holds the last delivered values.
    fn observe(
        &mut self,
        change: ChangeKind,
        after: Batch,
        before: Option<Batch>,
    ) -> Result<(), PluginError>;
    fn finish(&mut self) -> Result<CheckResult, PluginError>;
}

/// An approval policy: decides whether a change or a run may go ahead.
pub trait ApprovalPolicyPlugin: 'static {
    fn spec() -> PluginSpec;
    fn check_config(config: &str) -> Vec<ConfigError>;
    fn evaluate(config: &str, request: ApprovalRequest) -> Result<Decision, PluginError>;
    /// The whole 0.3.0 evaluation: `review` holds plugin build changes and the built-in
    /// requirements, and the answer may waive a built-in rule. By default `evaluate`'s
    /// decision, waiving nothing.
    fn evaluate_with_review(
        config: &str,
        request: ApprovalRequest,
        _review: ReviewContext,
    ) -> Result<PolicyDecision, PluginError> {
        Self::evaluate(config, request).map(PolicyDecision::from)
    }
}

// ---- Conversions between the SDK's types and the generated ones -------------------------

impl From<ValueType> for wit::ValueType {
    fn from(t: ValueType) -> Self {
        match t {
            ValueType::Any => wit::ValueType::Any,
            ValueType::Boolean => wit::ValueType::Boolean,
            ValueType::Integer => wit::ValueType::Integer,
            ValueType::Float => wit::ValueType::Float,
            ValueType::Decimal => wit::ValueType::Decimal,
            ValueType::Text => wit::ValueType::Text,
            ValueType::Bytes => wit::ValueType::Bytes,
            ValueType::Timestamp => wit::ValueType::Timestamp,
            ValueType::Date => wit::ValueType::Date,
            ValueType::Json => wit::ValueType::Json,
        }
    }
}

impl From<wit::ValueType> for ValueType {
    fn from(t: wit::ValueType) -> Self {
        match t {
            wit::ValueType::Any => ValueType::Any,
            wit::ValueType::Boolean => ValueType::Boolean,
            wit::ValueType::Integer => ValueType::Integer,
            wit::ValueType::Float => ValueType::Float,
            wit::ValueType::Decimal => ValueType::Decimal,
            wit::ValueType::Text => ValueType::Text,
            wit::ValueType::Bytes => ValueType::Bytes,
            wit::ValueType::Timestamp => ValueType::Timestamp,
            wit::ValueType::Date => ValueType::Date,
            wit::ValueType::Json => ValueType::Json,
        }
    }
}

#[doc(hidden)]
pub fn column_to_wit(c: Column) -> wit::Column {
    wit::Column {
        name: c.name,
        value_type: c.value_type.into(),
        nullable: c.nullable,
    }
}

#[doc(hidden)]
pub fn batch_to_wit(b: Batch) -> wit::RowBatch {
    wit::RowBatch {
        columns: b.columns.into_iter().map(column_to_wit).collect(),
        row_count: b.row_count,
        payload: b.payload,
        present: None,
    }
}

#[doc(hidden)]
pub fn column_from_wit(c: wit::Column) -> Column {
    Column {
        name: c.name,
        value_type: c.value_type.into(),
        nullable: c.nullable,
    }
}

#[doc(hidden)]
pub fn batch_from_wit(b: wit::RowBatch) -> Batch {
    Batch {
        columns: b
            .columns
            .into_iter()
            .map(|c| Column {
                name: c.name,
                value_type: c.value_type.into(),
                nullable: c.nullable,
            })
            .collect(),
        row_count: b.row_count,
        payload: b.payload,
    }
}

#[doc(hidden)]
pub fn operation_to_wit(op: Operation) -> wit::Operation {
    match op {
        Operation::Insert => wit::Operation::Insert,
        Operation::Update => wit::Operation::Update,
        Operation::Delete => wit::Operation::Delete,
        Operation::Append => wit::Operation::Append,
    }
}

#[doc(hidden)]
pub fn operation_from_wit(op: wit::Operation) -> Operation {
    match op {
        wit::Operation::Insert => Operation::Insert,
        wit::Operation::Update => Operation::Update,
        wit::Operation::Delete => Operation::Delete,
        wit::Operation::Append => Operation::Append,
    }
}

#[doc(hidden)]
pub fn capability_to_wit(c: Capability) -> wit::Capability {
    match c {
        Capability::WarehouseDiff => wit::Capability::WarehouseDiff,
        Capability::CursorRead => wit::Capability::CursorRead,
        Capability::WarehouseLogs => wit::Capability::WarehouseLogs,
        Capability::ReadBack => wit::Capability::ReadBack,
        Capability::FieldPresence => wit::Capability::FieldPresence,
    }
}

#[doc(hidden)]
pub fn spec_to_wit(s: PluginSpec, capabilities: Vec<Capability>) -> wit::PluginSpec {
    wit::PluginSpec {
        name: s.name,
        version: s.version,
        kind: match s.kind {
            PluginKind::Source => wit::PluginKind::Source,
            PluginKind::Destination => wit::PluginKind::Destination,
            PluginKind::QualityCheck => wit::PluginKind::QualityCheck,
            PluginKind::ApprovalPolicy => wit::PluginKind::ApprovalPolicy,
        },
        description: s.description,
        config_schema: s.config_schema,
        operations: s.operations.into_iter().map(operation_to_wit).collect(),
        max_batch_size: s.max_batch_size,
        default_rate_limit: s.default_rate_limit.map(|r| wit::RateLimitSpec {
            requests_per_second: r.requests_per_second,
            rows_per_second: r.rows_per_second,
        }),
        row_encoding: wit::RowEncoding::Msgpack,
        capabilities: capabilities.into_iter().map(capability_to_wit).collect(),
    }
}

#[doc(hidden)]
pub fn config_errors_to_wit(errors: Vec<ConfigError>) -> Vec<wit::ConfigError> {
    errors
        .into_iter()
        .map(|e| wit::ConfigError {
            field: e.field,
            message: e.message,
        })
        .collect()
}

impl From<PluginError> for wit::PluginError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::Retryable { message } => wit::PluginError::Retryable(message),
            PluginError::RateLimited {
                message,
                retry_after_ms,
            } => wit::PluginError::RateLimited(wit::RateLimit {
                message,
                retry_after_ms,
            }),
            PluginError::BadConfig(c) => wit::PluginError::BadConfig(wit::ConfigError {
                field: c.field,
                message: c.message,
            }),
            PluginError::BadRow(r) => wit::PluginError::BadRow(wit::RowError {
                row_index: r.row_index,
                key: r.key,
                message: r.message,
            }),
            PluginError::Fatal { message } => wit::PluginError::Fatal(message),
        }
    }
}

// ---- Adapters: the generated Guest traits implemented on top of the SDK traits ----------

#[cfg(feature = "source")]
#[doc(hidden)]
pub mod source_adapter {
    use super::source_bindings::exports::backflow::plugin::source as gen;
    use super::*;
    use std::cell::RefCell;

    pub struct ReaderAdapter<P: SourcePlugin>(RefCell<P::Reader>);

    impl<P: SourcePlugin> gen::GuestReader for ReaderAdapter<P> {
        fn open(config: String, query: String) -> Result<gen::Reader, wit::PluginError> {
            let reader = P::open(&config, &query)?;
            Ok(gen::Reader::new(ReaderAdapter::<P>(RefCell::new(reader))))
        }
        fn columns(&self) -> Vec<wit::Column> {
            self.0
                .borrow()
                .columns()
                .into_iter()
                .map(column_to_wit)
                .collect()
        }
        fn next_batch(&self, max_rows: u32) -> Result<Option<wit::RowBatch>, wit::PluginError> {
            Ok(self.0.borrow_mut().next_batch(max_rows)?.map(batch_to_wit))
        }
    }
}

#[cfg(feature = "source")]
#[doc(hidden)]
pub mod warehouse_adapter {
    use super::source_bindings::exports::backflow::plugin::warehouse as gen;
    use super::*;
    use std::cell::RefCell;
    use std::marker::PhantomData;

    fn snapshot_from(t: gen::SnapshotTable) -> SnapshotTable {
        SnapshotTable {
            schema: t.schema,
            table: t.table,
        }
    }

    pub struct DifferAdapter<P: SourcePlugin>(RefCell<Box<dyn WarehouseDiffer>>, PhantomData<P>);

    impl<P: SourcePlugin> gen::GuestDiffer for DifferAdapter<P> {
        fn open(
            config: String,
            request: gen::DiffRequest,
            include_unchanged: bool,
        ) -> Result<gen::Differ, wit::PluginError> {
            let request = DiffRequest {
                query: request.query,
                key_columns: request.key_columns,
                snapshot: snapshot_from(request.snapshot),
                cursor: request.cursor.map(|c| crate::warehouse::CursorWindow {
                    column: c.column,
                    since: c.since,
                }),
                full_resync: request.full_resync,
            };
            let differ = P::warehouse_diff(&config, request, include_unchanged)?;
            Ok(gen::Differ::new(DifferAdapter::<P>(
                RefCell::new(differ),
                PhantomData,
            )))
        }
        fn columns(&self) -> Vec<wit::Column> {
            self.0
                .borrow()
                .columns()
                .into_iter()
                .map(column_to_wit)
                .collect()
        }
        fn counts(&self) -> Result<gen::DiffCounts, wit::PluginError> {
            let c = self.0.borrow_mut().counts()?;
            Ok(gen::DiffCounts {
                model_rows: c.model_rows,
                snapshot_rows: c.snapshot_rows,
                added: c.added,
                changed: c.changed,
                removed: c.removed,
            })
        }
        fn next_batch(&self, max_rows: u32) -> Result<Option<gen::ChangeBatch>, wit::PluginError> {
            let Some(b) = self.0.borrow_mut().next_batch(max_rows)? else {
                return Ok(None);
            };
            Ok(Some(gen::ChangeBatch {
                kind: match b.kind {
                    ChangeKind::Added => gen::ChangeKind::Added,
                    ChangeKind::Changed => gen::ChangeKind::Changed,
                    ChangeKind::Removed => gen::ChangeKind::Removed,
                    ChangeKind::Unchanged => gen::ChangeKind::Unchanged,
                },
                rows: batch_to_wit(b.rows),
                before: b.before.map(batch_to_wit),
                fingerprints: b.fingerprints,
            }))
        }
        fn max_cursor(&self) -> Option<String> {
            self.0.borrow().max_cursor()
        }
    }

    pub fn prepare<P: SourcePlugin>(
        config: String,
        snapshot: gen::SnapshotTable,
        key_columns: Vec<wit::Column>,
    ) -> Result<Vec<wit::Column>, wit::PluginError> {
        let keys = key_columns.into_iter().map(column_from_wit).collect();
        let held = P::warehouse_prepare(&config, snapshot_from(snapshot), keys)?;
        Ok(held.into_iter().map(column_to_wit).collect())
    }

    pub fn write_back<P: SourcePlugin>(
        config: String,
        snapshot: gen::SnapshotTable,
        delivered: wit::RowBatch,
        fingerprints: Vec<Option<String>>,
        removed: wit::RowBatch,
    ) -> Result<(), wit::PluginError> {
        let write_back = WriteBack {
            snapshot: snapshot_from(snapshot),
            delivered: batch_from_wit(delivered),
            fingerprints,
            removed: batch_from_wit(removed),
        };
        Ok(P::warehouse_write_back(&config, write_back)?)
    }

    pub fn write_logs<P: SourcePlugin>(
        config: String,
        schema: String,
        runs: Vec<gen::RunLog>,
        changes: Vec<gen::ChangeLog>,
    ) -> Result<(), wit::PluginError> {
        let runs = runs
            .into_iter()
            .map(|r| RunLog {
                run_id: r.run_id,
                sync_name: r.sync_name,
                status: r.status,
                trigger: r.trigger,
                user: r.user,
                started_at: r.started_at,
                finished_at: r.finished_at,
                planned: r.planned,
                delivered: r.delivered,
                failed: r.failed,
                error: r.error,
            })
            .collect();
        let changes = changes
            .into_iter()
            .map(|c| ChangeLog {
                run_id: c.run_id,
                key: c.key,
                operation: operation_from_wit(c.operation),
                status: c.status,
                error: c.error,
                at: c.at,
            })
            .collect();
        Ok(P::warehouse_write_logs(&config, &schema, runs, changes)?)
    }
}

#[cfg(feature = "destination")]
#[doc(hidden)]
pub mod destination_adapter {
    use super::destination_bindings::exports::backflow::plugin::destination as gen;
    use super::*;
    use std::cell::RefCell;

    pub struct WriterAdapter<P: DestinationPlugin>(RefCell<P::Writer>);

    impl<P: DestinationPlugin> gen::GuestWriter for WriterAdapter<P> {
        fn open(
            config: String,
            context: gen::SyncContext,
        ) -> Result<gen::Writer, wit::PluginError> {
            let context = crate::spec::SyncContext {
                sync_name: context.sync_name,
                primary_key: context.primary_key,
                run_id: context.run_id,
            };
            let writer = P::open(&config, context)?;
            Ok(gen::Writer::new(WriterAdapter::<P>(RefCell::new(writer))))
        }
        fn write(
            &self,
            op: wit::Operation,
            batch: wit::RowBatch,
        ) -> Result<Vec<gen::RowOutcome>, wit::PluginError> {
            let present = batch.present.clone();
            let outcomes = self.0.borrow_mut().write_present(
                operation_from_wit(op),
                batch_from_wit(batch),
                present,
            )?;
            Ok(outcomes
                .into_iter()
                .map(|o| match o {
                    RowOutcome::Accepted => gen::RowOutcome::Accepted,
                    RowOutcome::Rejected(m) => gen::RowOutcome::Rejected(m),
                    RowOutcome::Retryable(m) => gen::RowOutcome::Retryable(m),
                })
                .collect())
        }
        fn finish(&self) -> Result<(), wit::PluginError> {
            Ok(self.0.borrow_mut().finish()?)
        }
        fn read(&self, keys: wit::RowBatch) -> Result<gen::ReadResult, wit::PluginError> {
            let r = self.0.borrow_mut().read(batch_from_wit(keys))?;
            let mut rows = batch_to_wit(r.rows);
            rows.present = r.present;
            Ok(gen::ReadResult {
                rows,
                held: r
                    .held
                    .into_iter()
                    .map(|h| match h {
                        crate::warehouse::Held::Absent => gen::Held::Absent,
                        crate::warehouse::Held::Present(row) => gen::Held::Present(row),
                    })
                    .collect(),
            })
        }
    }

    pub fn operations_for<P: DestinationPlugin>(
        config: String,
    ) -> Result<gen::OperationSupport, wit::PluginError> {
        let support = P::operations_for(&config)?;
        Ok(gen::OperationSupport {
            operations: support
                .operations
                .into_iter()
                .map(operation_to_wit)
                .collect(),
            hints: support
                .hints
                .into_iter()
                .map(|(op, hint)| (operation_to_wit(op), hint))
                .collect(),
        })
    }
}

#[cfg(feature = "quality-check")]
#[doc(hidden)]
pub mod check_adapter {
    use super::check_bindings::exports::backflow::plugin::quality_check as gen;
    use super::*;
    use crate::check::Verdict;
    use std::cell::RefCell;

    pub struct CheckerAdapter<P: QualityCheckPlugin>(RefCell<P::Checker>);

    impl<P: QualityCheckPlugin> gen::GuestChecker for CheckerAdapter<P> {
        fn open(config: String, plan: gen::PlanSummary) -> Result<gen::Checker, wit::PluginError> {
            let summary = PlanSummary {
                sync_name: plan.sync_name,
                purpose: match plan.purpose {
                    gen::PlanPurpose::Run => crate::check::PlanPurpose::Run,
                    gen::PlanPurpose::Undo => crate::check::PlanPurpose::Undo,
                    gen::PlanPurpose::Reconcile => crate::check::PlanPurpose::Reconcile,
                },
                columns: plan
                    .columns
                    .into_iter()
                    .map(|c| Column {
                        name: c.name,
                        value_type: c.value_type.into(),
                        nullable: c.nullable,
                    })
                    .collect(),
                snapshot_rows: plan.snapshot_rows,
                model_rows: plan.model_rows,
                added: plan.added,
                changed: plan.changed,
                removed: plan.removed,
            };
            Ok(gen::Checker::new(CheckerAdapter::<P>(RefCell::new(
                P::open(&config, summary)?,
            ))))
        }
        fn observe(
            &self,
            kind: gen::ChangeKind,
            after: wit::RowBatch,
            before: Option<wit::RowBatch>,
        ) -> Result<(), wit::PluginError> {
            let kind = match kind {
                gen::ChangeKind::Added => ChangeKind::Added,
                gen::ChangeKind::Changed => ChangeKind::Changed,
                gen::ChangeKind::Removed => ChangeKind::Removed,
                gen::ChangeKind::Unchanged => ChangeKind::Unchanged,
            };
            Ok(self.0.borrow_mut().observe(
                kind,
                batch_from_wit(after),
                before.map(batch_from_wit),
            )?)
        }
        fn finish(&self) -> Result<gen::CheckResult, wit::PluginError> {
            let r = self.0.borrow_mut().finish()?;
            Ok(gen::CheckResult {
                verdict: match r.verdict {
                    Verdict::Pass => gen::Verdict::Pass,
                    Verdict::Warn => gen::Verdict::Warn,
                    Verdict::Fail => gen::Verdict::Fail,
                },
                message: r.message,
                samples: r.samples,
            })
        }
    }
}

#[cfg(feature = "approval-policy")]
#[doc(hidden)]
pub mod policy_adapter {
    use super::policy_bindings::exports::backflow::plugin::approval_policy as gen;
    use super::*;
    use crate::policy::{RequestKind, Role, SyncImpact};

    fn role_from(r: gen::Role) -> Role {
        match r {
            gen::Role::Admin => Role::Admin,
            gen::Role::Approver => Role::Approver,
            gen::Role::Contributor => Role::Contributor,
            gen::Role::Viewer => Role::Viewer,
        }
    }

    fn role_to(r: Role) -> gen::Role {
        match r {
            Role::Admin => gen::Role::Admin,
            Role::Approver => gen::Role::Approver,
            Role::Contributor => gen::Role::Contributor,
            Role::Viewer => gen::Role::Viewer,
        }
    }

    pub fn evaluate<P: ApprovalPolicyPlugin>(
        config: String,
        request: gen::ApprovalRequest,
    ) -> Result<gen::PolicyDecision, wit::PluginError> {
        let review = ReviewContext {
            plugin_changes: request
                .plugin_changes
                .iter()
                .map(|c| crate::policy::PluginChange {
                    name: c.name.clone(),
                    old_hash: c.old_hash.clone(),
                    new_hash: c.new_hash.clone(),
                    spec_changes: c.spec_changes.clone(),
                })
                .collect(),
            built_in: request
                .built_in
                .iter()
                .map(|r| crate::policy::BuiltInRequirement {
                    rule: r.rule.clone(),
                    reason: r.reason.clone(),
                    roles: r.roles.iter().copied().map(role_from).collect(),
                    count: r.count,
                })
                .collect(),
        };
        let request = ApprovalRequest {
            kind: match request.kind {
                gen::RequestKind::ConfigChange => RequestKind::ConfigChange,
                gen::RequestKind::Run => RequestKind::Run,
            },
            author: request.author,
            author_role: role_from(request.author_role),
            description: request.description,
            syncs: request
                .syncs
                .into_iter()
                .map(|s| SyncImpact {
                    sync_name: s.sync_name,
                    destination: s.destination,
                    mode: s.mode,
                    added: s.added,
                    changed: s.changed,
                    removed: s.removed,
                    column_labels: s.column_labels,
                })
                .collect(),
        };
        let answer = P::evaluate_with_review(&config, request, review)?;
        let decision = match answer.decision {
            Decision::Approve(m) => gen::Decision::Approve(m),
            Decision::Reject(m) => gen::Decision::Reject(m),
            Decision::Require {
                count,
                roles,
                allow_self_approval,
                reason,
            } => gen::Decision::Require(gen::ApprovalsNeeded {
                count,
                roles: roles.into_iter().map(role_to).collect(),
                allow_self_approval,
                reason,
            }),
        };
        Ok(gen::PolicyDecision {
            decision,
            waive: answer
                .waive
                .into_iter()
                .map(|w| match w {
                    crate::policy::WaivableRule::ApproverOtherThanAuthor => {
                        gen::WaivableRule::ApproverOtherThanAuthor
                    }
                })
                .collect(),
        })
    }
}

/// Exports a [`SourcePlugin`] as this component's implementation of the `source-plugin` world.
#[cfg(feature = "source")]
#[macro_export]
macro_rules! export_source {
    ($plugin:ty) => {
        #[doc(hidden)]
        struct __BackflowSourceExport;
        impl $crate::guest::source_bindings::exports::backflow::plugin::plugin::Guest for __BackflowSourceExport {
            fn spec() -> $crate::guest::host_bindings::backflow::plugin::types::PluginSpec {
                $crate::guest::spec_to_wit(<$plugin as $crate::SourcePlugin>::spec(), <$plugin as $crate::SourcePlugin>::capabilities())
            }
            fn check_config(config: String) -> Vec<$crate::guest::host_bindings::backflow::plugin::types::ConfigError> {
                $crate::guest::config_errors_to_wit(<$plugin as $crate::SourcePlugin>::check_config(&config))
            }
        }
        impl $crate::guest::source_bindings::exports::backflow::plugin::source::Guest for __BackflowSourceExport {
            type Reader = $crate::guest::source_adapter::ReaderAdapter<$plugin>;
        }
        impl $crate::guest::source_bindings::exports::backflow::plugin::warehouse::Guest for __BackflowSourceExport {
            type Differ = $crate::guest::warehouse_adapter::DifferAdapter<$plugin>;
            fn prepare(
                config: String,
                snapshot: $crate::guest::source_bindings::exports::backflow::plugin::warehouse::SnapshotTable,
                key_columns: Vec<$crate::guest::host_bindings::backflow::plugin::types::Column>,
            ) -> Result<Vec<$crate::guest::host_bindings::backflow::plugin::types::Column>, $crate::guest::host_bindings::backflow::plugin::types::PluginError> {
                $crate::guest::warehouse_adapter::prepare::<$plugin>(config, snapshot, key_columns)
            }
            fn write_back(
                config: String,
                snapshot: $crate::guest::source_bindings::exports::backflow::plugin::warehouse::SnapshotTable,
                delivered: $crate::guest::host_bindings::backflow::plugin::types::RowBatch,
                fingerprints: Vec<Option<String>>,
                removed: $crate::guest::host_bindings::backflow::plugin::types::RowBatch,
            ) -> Result<(), $crate::guest::host_bindings::backflow::plugin::types::PluginError> {
                $crate::guest::warehouse_adapter::write_back::<$plugin>(config, snapshot, delivered, fingerprints, removed)
            }
            fn write_logs(
                config: String,
                schema: String,
                runs: Vec<$crate::guest::source_bindings::exports::backflow::plugin::warehouse::RunLog>,
                changes: Vec<$crate::guest::source_bindings::exports::backflow::plugin::warehouse::ChangeLog>,
            ) -> Result<(), $crate::guest::host_bindings::backflow::plugin::types::PluginError> {
                $crate::guest::warehouse_adapter::write_logs::<$plugin>(config, schema, runs, changes)
            }
        }
        $crate::guest::source_bindings::__backflow_export_source_world!(__BackflowSourceExport with_types_in $crate::guest::source_bindings);
    };
}

/// Exports a [`DestinationPlugin`] as this component's `destination-plugin` world.
#[cfg(feature = "destination")]
#[macro_export]
macro_rules! export_destination {
    ($plugin:ty) => {
        #[doc(hidden)]
        struct __BackflowDestinationExport;
        impl $crate::guest::destination_bindings::exports::backflow::plugin::plugin::Guest for __BackflowDestinationExport {
            fn spec() -> $crate::guest::host_bindings::backflow::plugin::types::PluginSpec {
                $crate::guest::spec_to_wit(<$plugin as $crate::DestinationPlugin>::spec(), <$plugin as $crate::DestinationPlugin>::capabilities())
            }
            fn check_config(config: String) -> Vec<$crate::guest::host_bindings::backflow::plugin::types::ConfigError> {
                $crate::guest::config_errors_to_wit(<$plugin as $crate::DestinationPlugin>::check_config(&config))
            }
        }
        impl $crate::guest::destination_bindings::exports::backflow::plugin::destination::Guest for __BackflowDestinationExport {
            type Writer = $crate::guest::destination_adapter::WriterAdapter<$plugin>;
            fn operations_for(
                config: String,
            ) -> Result<
                $crate::guest::destination_bindings::exports::backflow::plugin::destination::OperationSupport,
                $crate::guest::host_bindings::backflow::plugin::types::PluginError,
            > {
                $crate::guest::destination_adapter::operations_for::<$plugin>(config)
            }
        }
        $crate::guest::destination_bindings::__backflow_export_destination_world!(__BackflowDestinationExport with_types_in $crate::guest::destination_bindings);
    };
}

/// Exports a [`QualityCheckPlugin`] as this component's `quality-check-plugin` world.
#[cfg(feature = "quality-check")]
#[macro_export]
macro_rules! export_quality_check {
    ($plugin:ty) => {
        struct __BackflowCheckExport;
        impl $crate::guest::check_bindings::exports::backflow::plugin::plugin::Guest for __BackflowCheckExport {
            fn spec() -> $crate::guest::host_bindings::backflow::plugin::types::PluginSpec {
                $crate::guest::spec_to_wit(<$plugin as $crate::QualityCheckPlugin>::spec(), ::std::vec::Vec::new())
            }
            fn check_config(config: String) -> Vec<$crate::guest::host_bindings::backflow::plugin::types::ConfigError> {
                $crate::guest::config_errors_to_wit(<$plugin as $crate::QualityCheckPlugin>::check_config(&config))
            }
        }
        impl $crate::guest::check_bindings::exports::backflow::plugin::quality_check::Guest for __BackflowCheckExport {
            type Checker = $crate::guest::check_adapter::CheckerAdapter<$plugin>;
        }
        $crate::guest::check_bindings::__backflow_export_check_world!(__BackflowCheckExport with_types_in $crate::guest::check_bindings);
    };
}

/// Exports an [`ApprovalPolicyPlugin`] as this component's `approval-policy-plugin` world.
#[cfg(feature = "approval-policy")]
#[macro_export]
macro_rules! export_approval_policy {
    ($plugin:ty) => {
        struct __BackflowPolicyExport;
        impl $crate::guest::policy_bindings::exports::backflow::plugin::plugin::Guest for __BackflowPolicyExport {
            fn spec() -> $crate::guest::host_bindings::backflow::plugin::types::PluginSpec {
                $crate::guest::spec_to_wit(<$plugin as $crate::ApprovalPolicyPlugin>::spec(), ::std::vec::Vec::new())
            }
            fn check_config(config: String) -> Vec<$crate::guest::host_bindings::backflow::plugin::types::ConfigError> {
                $crate::guest::config_errors_to_wit(<$plugin as $crate::ApprovalPolicyPlugin>::check_config(&config))
            }
        }
        impl $crate::guest::policy_bindings::exports::backflow::plugin::approval_policy::Guest for __BackflowPolicyExport {
            fn evaluate(
                config: String,
                request: $crate::guest::policy_bindings::exports::backflow::plugin::approval_policy::ApprovalRequest,
            ) -> Result<
                $crate::guest::policy_bindings::exports::backflow::plugin::approval_policy::PolicyDecision,
                $crate::guest::host_bindings::backflow::plugin::types::PluginError,
            > {
                $crate::guest::policy_adapter::evaluate::<$plugin>(config, request)
            }
        }
        $crate::guest::policy_bindings::__backflow_export_policy_world!(__BackflowPolicyExport with_types_in $crate::guest::policy_bindings);
    };
}
