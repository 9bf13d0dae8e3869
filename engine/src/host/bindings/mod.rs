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
pub mod v0_3_0;

/// The newest version's `host` interface: the one `host::imports` implements; every version's
/// bindings convert their `host` records to its types.
pub use v0_3_0::wit_host as newest_host;

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
    /// One minor version for round 3: capabilities, absent cells, `operations-for`,
    /// read-back, plan purpose, explicit waivers and the source's `warehouse` interface.
    V0_3_0,
}

impl ContractVersion {
    /// Every version hosted, newest first.
    pub const ALL: [ContractVersion; 3] = [
        ContractVersion::V0_3_0,
        ContractVersion::V0_2_0,
        ContractVersion::V0_1_0,
    ];

    /// The version number, `0.1.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContractVersion::V0_1_0 => "0.1.0",
            ContractVersion::V0_2_0 => "0.2.0",
            ContractVersion::V0_3_0 => "0.3.0",
        }
    }

    /// The `plugin` interface a component of this version exports.
    fn plugin_export(self) -> &'static str {
        match self {
            ContractVersion::V0_1_0 => v0_1_0::PLUGIN_EXPORT,
            ContractVersion::V0_2_0 => v0_2_0::PLUGIN_EXPORT,
            ContractVersion::V0_3_0 => v0_3_0::PLUGIN_EXPORT,
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
    v0_2_0::add_to_linker(linker)?;
    v0_3_0::add_to_linker(linker)
}

/// Checks the capabilities a plugin declares against its kind and its exports: a capability
/// of another kind, or one whose interface the component does not export, is refused at
/// load. `exports` are the component's export names (`backflow:plugin/warehouse@0.3.0`).
pub fn check_capabilities(
    kind: backflow_plugin_sdk::PluginKind,
    capabilities: &[backflow_plugin_sdk::Capability],
    exports: &[String],
) -> Result<(), CapabilityError> {
    use backflow_plugin_sdk::{Capability as C, PluginKind as K};
    for &capability in capabilities {
        let (of_kind, export) = match capability {
            C::WarehouseDiff | C::CursorRead | C::WarehouseLogs => {
                (K::Source, v0_3_0::WAREHOUSE_EXPORT)
            }
            C::ReadBack | C::FieldPresence => (K::Destination, v0_3_0::DESTINATION_EXPORT),
        };
        if kind != of_kind {
            return Err(CapabilityError::OtherKind {
                capability,
                of_kind,
                kind,
            });
        }
        if !exports.iter().any(|e| e == export) {
            return Err(CapabilityError::NotExported { capability, export });
        }
    }
    Ok(())
}

/// A declared capability the plugin cannot have.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    /// The capability belongs to another kind of plugin.
    #[error("its spec declares capability {capability}, which only a {} plugin can have, but it is a {} plugin", of_kind.as_str(), kind.as_str())]
    OtherKind {
        /// The capability declared.
        capability: backflow_plugin_sdk::Capability,
        /// The kind the capability belongs to.
        of_kind: backflow_plugin_sdk::PluginKind,
        /// The plugin's kind.
        kind: backflow_plugin_sdk::PluginKind,
    },
    /// The component does not export the interface the capability is called through.
    #[error(
        "its spec declares capability {capability}, but the component does not export {export}"
    )]
    NotExported {
        /// The capability declared.
        capability: backflow_plugin_sdk::Capability,
        /// The interface it needs.
        export: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use backflow_plugin_sdk::{Capability, PluginKind};

    #[test]
    fn declared_capabilities_must_fit_the_kind_and_the_exports() {
        let source_exports = vec![
            "backflow:plugin/plugin@0.3.0".to_string(),
            "backflow:plugin/source@0.3.0".to_string(),
            v0_3_0::WAREHOUSE_EXPORT.to_string(),
        ];
        assert!(check_capabilities(
            PluginKind::Source,
            &[Capability::WarehouseDiff, Capability::CursorRead],
            &source_exports
        )
        .is_ok());
        let e = check_capabilities(PluginKind::Destination, &[Capability::CursorRead], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("only a source plugin"), "{e}");
        let e = check_capabilities(
            PluginKind::Source,
            &[Capability::WarehouseDiff],
            &source_exports[..2],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("does not export backflow:plugin/warehouse@0.3.0"),
            "{e}"
        );
        assert!(check_capabilities(PluginKind::Destination, &[], &[]).is_ok());
    }
}
