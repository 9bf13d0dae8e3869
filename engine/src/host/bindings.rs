//! Host-side bindings to the WIT contract, one module per world. The shared `types` and
//! `host` interfaces are generated once (in `base`) and reused by the kind worlds.

pub mod base {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "plugin-base",
        imports: { default: async },
        exports: { default: async },
    });
}

pub mod source {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "source-plugin",
        imports: { default: async },
        exports: { default: async },
        with: {
            "backflow:plugin/types": crate::host::bindings::base::backflow::plugin::types,
            "backflow:plugin/host": crate::host::bindings::base::backflow::plugin::host,
        },
    });
}

pub mod destination {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "destination-plugin",
        imports: { default: async },
        exports: { default: async },
        with: {
            "backflow:plugin/types": crate::host::bindings::base::backflow::plugin::types,
            "backflow:plugin/host": crate::host::bindings::base::backflow::plugin::host,
        },
    });
}

pub mod quality_check {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "quality-check-plugin",
        imports: { default: async },
        exports: { default: async },
        with: {
            "backflow:plugin/types": crate::host::bindings::base::backflow::plugin::types,
            "backflow:plugin/host": crate::host::bindings::base::backflow::plugin::host,
        },
    });
}

pub mod approval_policy {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "approval-policy-plugin",
        imports: { default: async },
        exports: { default: async },
        with: {
            "backflow:plugin/types": crate::host::bindings::base::backflow::plugin::types,
            "backflow:plugin/host": crate::host::bindings::base::backflow::plugin::host,
        },
    });
}

pub use base::backflow::plugin::host as wit_host;
pub use base::backflow::plugin::types as wit;

use backflow_plugin_sdk as sdk;

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

pub fn column_from_wit(c: wit::Column) -> sdk::Column {
    sdk::Column { name: c.name, value_type: c.value_type.into(), nullable: c.nullable }
}

pub fn column_to_wit(c: &sdk::Column) -> wit::Column {
    wit::Column { name: c.name.clone(), value_type: c.value_type.into(), nullable: c.nullable }
}

pub fn operation_from_wit(op: wit::Operation) -> sdk::Operation {
    match op {
        wit::Operation::Insert => sdk::Operation::Insert,
        wit::Operation::Update => sdk::Operation::Update,
        wit::Operation::Delete => sdk::Operation::Delete,
        wit::Operation::Append => sdk::Operation::Append,
    }
}

pub fn operation_to_wit(op: sdk::Operation) -> wit::Operation {
    match op {
        sdk::Operation::Insert => wit::Operation::Insert,
        sdk::Operation::Update => wit::Operation::Update,
        sdk::Operation::Delete => wit::Operation::Delete,
        sdk::Operation::Append => wit::Operation::Append,
    }
}

pub fn spec_from_wit(s: wit::PluginSpec) -> sdk::PluginSpec {
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
        operations: s.operations.into_iter().map(operation_from_wit).collect(),
        max_batch_size: s.max_batch_size,
        default_rate_limit: s.default_rate_limit.map(|r| sdk::RateLimitSpec { requests_per_second: r.requests_per_second, rows_per_second: r.rows_per_second }),
    }
}

pub fn error_from_wit(e: wit::PluginError) -> sdk::PluginError {
    match e {
        wit::PluginError::Retryable(message) => sdk::PluginError::Retryable { message },
        wit::PluginError::RateLimited(r) => {
            sdk::PluginError::RateLimited { message: r.message, retry_after_ms: r.retry_after_ms }
        }
        wit::PluginError::BadConfig(c) => sdk::PluginError::BadConfig(sdk::ConfigError { field: c.field, message: c.message }),
        wit::PluginError::BadRow(r) => {
            sdk::PluginError::BadRow(sdk::RowError { row_index: r.row_index, key: r.key, message: r.message })
        }
        wit::PluginError::Fatal(message) => sdk::PluginError::Fatal { message },
    }
}
