//! Contract version 0.1.0 (`wit/v0.1.0/plugin.wit`, frozen): its generated bindings and
//! wrappers ([`super::common::contract_version!`]), and what sets it apart from later
//! versions: no `row-encoding` (batches are always MessagePack), and a `write` must answer one
//! outcome per row.

/// The export every plugin of this version has.
pub const PLUGIN_EXPORT: &str = "backflow:plugin/plugin@0.1.0";

// The newest version's `host` records, which the macro's `host` impl converts to.
use super::newest_host as newest;

super::common::contract_version!("../wit/v0.1.0");

/// A 0.1.0 plugin's batches are always MessagePack.
fn row_encoding(_spec: &wit::PluginSpec) -> sdk::RowEncoding {
    sdk::RowEncoding::Msgpack
}

/// An empty outcome list for a non-empty batch is a wrong count, like any other.
const EMPTY_OUTCOMES_ACCEPT_ALL: bool = false;

// Seen from the engine, a plugin of this version is a 0.3.0 plugin that uses none of 0.3.0's
// additions: the one conversion layer for versions before 0.3.0.
super::common::before_0_3_0!();
