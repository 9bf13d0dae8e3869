//! The versioned plugin contract, host side: one module per WIT version the engine hosts
//! (`wit/vX.Y.Z/`, frozen), and the dispatch point that picks one for each component.
//!
//! A plugin is loaded once: [`ContractVersion::of`] reads which `backflow:plugin/plugin@X`
//! the component exports, and every later call goes through the per-kind enums in
//! `host::instance` (`SourceApi::V0_1_0(…)`), which match on the version.
//!
//! Adding a version (0.2.0 was added this way):
//! 1. copy the newest `wit/vX.Y.Z` to a new directory, make the change there, never touch the
//!    old directory;
//! 2. add a module beside `v0_1_0.rs` with the same wrappers (`Base`, `Source`, …) converting
//!    its generated types to the SDK's plain types (extend those types if the new version
//!    carries more; the old module fills the new fields with defaults);
//! 3. add a variant to [`ContractVersion`] and its export name to [`ContractVersion::of`], and
//!    register its `host` interface in [`add_to_linker`];
//! 4. build: the compiler then lists every `match` in `host::instance` that must call the new
//!    version's wrapper. Old plugins keep loading through their own module.

mod common;
pub mod v0_1_0;
pub mod v0_2_0;

use crate::host::PluginState;
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

/// A contract version this engine hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContractVersion {
    V0_1_0,
    /// Adds the plugin's `row-encoding` (JSON rows for interpreted languages).
    V0_2_0,
}

impl ContractVersion {
    /// Every version hosted, newest first.
    pub const ALL: [ContractVersion; 2] = [ContractVersion::V0_2_0, ContractVersion::V0_1_0];

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
