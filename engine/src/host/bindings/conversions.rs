//! The conversions between a contract version's generated types and the SDK's plain ones,
//! written once: [`contract_conversions!`], which [`super::common::contract_version!`] invokes
//! inside each version's module (so `wit`, `wit_destination` … are that version's types).
//! A version whose type changed shape converts it in its own module instead.

/// `From` impls between the invoking version's WIT types and the SDK's, both ways where
/// values cross the boundary both ways.
macro_rules! contract_conversions {
    () => {
        // ---- Shared types ------------------------------------------------------------------

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
                wit_batch(
                    b.columns.into_iter().map(Into::into).collect(),
                    b.row_count,
                    b.payload,
                )
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
                    wit::PluginError::BadConfig(c) => {
                        sdk::PluginError::BadConfig(sdk::ConfigError {
                            field: c.field,
                            message: c.message,
                        })
                    }
                    wit::PluginError::BadRow(r) => sdk::PluginError::BadRow(sdk::RowError {
                        row_index: r.row_index,
                        key: r.key,
                        message: r.message,
                    }),
                    wit::PluginError::Fatal(message) => sdk::PluginError::Fatal { message },
                }
            }
        }

        impl From<sdk::ChangeKind> for wit_quality_check::ChangeKind {
            fn from(kind: sdk::ChangeKind) -> Self {
                match kind {
                    sdk::ChangeKind::Added => Self::Added,
                    sdk::ChangeKind::Changed => Self::Changed,
                    sdk::ChangeKind::Removed => Self::Removed,
                    sdk::ChangeKind::Unchanged => Self::Unchanged,
                }
            }
        }

        impl From<wit_destination::RowOutcome> for sdk::RowOutcome {
            fn from(outcome: wit_destination::RowOutcome) -> Self {
                use wit_destination::RowOutcome as W;
                match outcome {
                    W::Accepted => sdk::RowOutcome::Accepted,
                    W::Rejected(m) => sdk::RowOutcome::Rejected(m),
                    W::Retryable(m) => sdk::RowOutcome::Retryable(m),
                }
            }
        }
    };
}
pub(super) use contract_conversions;
