//! # backflow plugin SDK
//!
//! Everything a Rust author needs to write a backflow plugin: typed [`Value`]s and
//! [`Column`]s, the MessagePack batch [`codec`] (the same one the engine uses), and — with one
//! of the world features enabled — a trait per plugin kind plus an export macro, so a plugin
//! never touches generated bindings.
//!
//! ```ignore
//! // Cargo.toml: backflow-plugin-sdk = { ..., features = ["destination"] }
//! use backflow_plugin_sdk::*;
//!
//! struct Printer;
//! impl DestinationPlugin for Printer { /* spec, check_config, open */ }
//! export_destination!(Printer);
//! ```
//!
//! The engine depends on this crate without any world feature, for the shared types: the
//! contract's records are defined once, here ([`spec`], [`check`], [`policy`], [`value`],
//! [`codec`]), and each side of the boundary converts them to and from its generated WIT
//! bindings in one place (the engine's `host::bindings`, this crate's `guest`).

pub mod check;
pub mod codec;
pub mod json_rows;
pub mod policy;
pub mod spec;
pub mod value;
pub mod warehouse;

pub use check::{ChangeKind, CheckResult, PlanPurpose, PlanSummary, Verdict};
pub use codec::{Batch, BatchBuilder, CodecError};
pub use policy::{
    ApprovalRequest, BuiltInRequirement, Decision, PluginChange, PolicyDecision, RequestKind,
    ReviewContext, Role, SyncImpact, WaivableRule,
};
pub use spec::{
    expand_secrets, parse_config, Capability, ConfigError, Operation, OperationSupport,
    PluginError, PluginKind, PluginSpec, RateLimitSpec, RowEncoding, RowError, RowOutcome,
    SyncContext,
};
pub use value::{Column, Value, ValueType};

/// The WIT package version this SDK implements.
pub const WIT_VERSION: &str = "0.3.0";

#[cfg(any(
    feature = "source",
    feature = "destination",
    feature = "quality-check",
    feature = "approval-policy"
))]
pub mod guest;

#[cfg(any(
    feature = "source",
    feature = "destination",
    feature = "quality-check",
    feature = "approval-policy"
))]
pub use guest::{
    host, not_supported, ApprovalPolicyPlugin, Checker, DestinationPlugin, DestinationWriter,
    QualityCheckPlugin, SourcePlugin, SourceReader, WarehouseDiffer,
};
