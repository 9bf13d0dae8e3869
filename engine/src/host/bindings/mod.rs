//! The versioned plugin contract, host side: one module per WIT version the engine hosts
//! (`wit/vX.Y.Z/`, frozen), and the dispatch point that picks one for each component.
//!
//! A plugin is loaded once: [`ContractVersion::of`] reads which `backflow:plugin/plugin@X`
//! the component exports, and every later call goes through the per-kind enums in
//! `host::instance` (`SourceApi::V0_1_0(…)`), which match on the version.
//!
//! Everything the versions share (bindgen invocations, world wrappers, conversions to the
//! SDK's plain types, the `host` interface) is written once, in the `contract_version!` macro
//! of `common.rs`; a version module invokes it and holds only its delta. The `host` interface
//! is implemented once (`host::imports`) against the newest version's types, [`newest_host`];
//! every version's bindings convert their records to those.
//!
//! Adding a version:
//! 1. copy the newest `wit/vX.Y.Z` to a new directory, make the change there, never touch the
//!    old directory;
//! 2. add a module beside `v0_2_0.rs` that invokes `contract_version!` with that directory and
//!    defines the delta items the macro expects (`row_encoding`, `EMPTY_OUTCOMES_ACCEPT_ALL`;
//!    see `common.rs`). A change the macro cannot express that way becomes a new delta item in
//!    every version module (older ones give the old behaviour), or, when a method's shape
//!    changes, that method moves out of the macro into each version module. Extend the SDK's
//!    plain types if the new version carries more; older versions fill in defaults;
//! 3. add a variant to [`ContractVersion`] (and to [`ContractVersion::ALL`],
//!    `as_str`, `plugin_export`), point [`newest_host`] at the new module, and register its
//!    `host` interface in [`add_to_linker`];
//! 4. build: the compiler then lists every `match` in `host::instance` and `host` that must
//!    call the new version's wrapper. Old plugins keep loading through their own module.

mod common;
mod conversions;
pub mod v0_1_0;
pub mod v0_2_0;

/// The newest version's `host` interface: the one `host::imports` implements; every version's
/// bindings convert their `host` records to its types.
pub use v0_2_0::wit_host as newest_host;

use crate::host::PluginState;
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

/// A contract version this engine hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContractVersion {
    /// The first released contract.
    V0_1_0,
    /// Adds the plugin's `row-encoding` (JSON rows for interpreted languages).
    V0_2_0,
}

impl ContractVersion {
    /// Every version hosted, newest first.
    pub const ALL: [ContractVersion; 2] = [ContractVersion::V0_2_0, ContractVersion::V0_1_0];

    /// The version number, `0.1.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContractVersion::V0_1_0 => "0.1.0",
            ContractVersion::V0_2_0 => "0.2.0",
        }
    }

    /// The `plugin` interface a component of this version exports.
    fn plugin_export(self) -> &'static str {
        match self {
            ContractVersion::V0_1_0 => v0_1_0::PLUGIN_EXPORT,
            ContractVersion::V0_2_0 => v0_2_0::PLUGIN_EXPORT,
        }
    }

    /// Which hosted version a component implements, or why it implements none.
    pub fn of(engine: &Engine, component: &Component) -> Result<ContractVersion, NotHosted> {
        let exports: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        if let Some(v) = ContractVersion::ALL
            .into_iter()
            .find(|v| exports.iter().any(|e| e == v.plugin_export()))
        {
            return Ok(v);
        }
        let hosted = ContractVersion::ALL
            .iter()
            .map(|v| format!("backflow:plugin@{}", v.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(other) = exports
            .iter()
            .find(|e| e.starts_with("backflow:plugin/plugin@"))
        {
            return Err(NotHosted::OtherVersion {
                implemented: other.clone(),
                hosted,
            });
        }
        Err(NotHosted::NotAPlugin {
            expected: ContractVersion::ALL[0].plugin_export(),
            exports: if exports.is_empty() {
                "none".to_string()
            } else {
                exports.join(", ")
            },
        })
    }
}

/// Why a component implements no contract version this engine hosts.
#[derive(Debug, thiserror::Error)]
pub enum NotHosted {
    /// It implements a version of the contract this engine does not host.
    #[error("the plugin implements {implemented}, but this engine hosts {hosted}; rebuild it against a hosted version of the contract")]
    OtherVersion {
        /// The `plugin` interface it exports.
        implemented: String,
        /// The versions hosted, as `backflow:plugin@X` names.
        hosted: String,
    },
    /// It exports no `plugin` interface at all.
    #[error("not a backflow plugin: it does not export {expected} (exports: {exports})")]
    NotAPlugin {
        /// The newest version's `plugin` export.
        expected: &'static str,
        /// What it exports, or `none`.
        exports: String,
    },
}

impl std::fmt::Display for ContractVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Registers the `host` interface of every hosted version (they are distinct instances,
/// `backflow:plugin/host@X`, so they coexist in one linker).
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    v0_1_0::add_to_linker(linker)?;
    v0_2_0::add_to_linker(linker)
}
