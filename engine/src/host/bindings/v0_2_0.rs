//! Contract version 0.2.0 (`wit/v0.2.0/plugin.wit`, frozen): its generated bindings and
//! wrappers ([`super::common::contract_version!`]), and its delta from 0.1.0.
//!
//! 0.2.0 adds the plugin's `row-encoding`: a `json` plugin gets and gives row batches as JSON
//! text. The engine keeps MessagePack everywhere else, so the wrappers convert at the call
//! ([`sdk::json_rows`]): batches going in (`write`, `observe`) and coming out (`next-batch`).
//! And a destination's `write` may answer an empty list for "every row accepted".

/// The export every plugin of this version has.
pub const PLUGIN_EXPORT: &str = "backflow:plugin/plugin@0.2.0";

// The newest version's `host` records, which the macro's `host` impl converts to.
use super::newest_host as newest;

super::common::contract_version!("../wit/v0.2.0");

/// The encoding the plugin's spec asks for.
fn row_encoding(spec: &wit::PluginSpec) -> sdk::RowEncoding {
    match spec.row_encoding {
        wit::RowEncoding::Msgpack => sdk::RowEncoding::Msgpack,
        wit::RowEncoding::Json => sdk::RowEncoding::Json,
    }
}

/// An empty outcome list for a non-empty batch means every row was accepted.
const EMPTY_OUTCOMES_ACCEPT_ALL: bool = true;

// Seen from the engine, a plugin of this version is a 0.3.0 plugin that uses none of 0.3.0's
// additions: the one conversion layer for versions before 0.3.0.
super::common::before_0_3_0!();
