//! The workspace: `backflow.toml` plus optional `models/*.toml` and `syncs/*.toml`, loaded
//! into a [`Workspace`].
//!
//! Parsing rejects unknown keys; every error names the file and the key. Cross-references
//! (a sync's model, a model's source, mapped columns) are checked in [`Workspace::load`], so
//! a loaded workspace is internally consistent. Whether a plugin accepts its `config` table is
//! the plugin's call, checked later through its `check-config` export.
//!
//! The files, by concern: [`files`] reads the configuration files, [`schema`] is the file
//! format (one serde struct per table), [`load`] runs the loading steps (with [`connectors`],
//! [`grants`], [`syncs`], [`sequences`], [`alerts`] with [`alert_keys`], and [`governance`]),
//! [`definitions`] holds what a loaded workspace is made of ([`alert_conditions`]: an alert
//! route's thresholds), and [`errors`] the errors. This module depends
//! on the domain's vocabulary and on nothing that runs plugins or syncs.

mod alert_conditions;
mod alert_keys;
mod alerts;
mod connectors;
mod definitions;
mod errors;
mod field_rules;
mod files;
mod governance;
mod grants;
mod load;
mod schema;
pub mod secrets;
mod sequences;
mod syncs;

pub use crate::domain::{RateLimit, Severity, SyncMode};
pub use alert_conditions::{
    parse_duration, AlertConditions, RowCountDeviation, RowCountMeasure, DEFAULT_BASELINE_RUNS,
    DEFAULT_REPEAT_AFTER_S,
};
pub use definitions::{
    Alert, AlertOutcome, Check, Connector, Governance, Model, Origin, SyncConfig,
};
pub use errors::{ConfigError, ConfigErrors, PluginChanged, UnknownSync};
pub use field_rules::{FieldRule, FieldRules, NullRule, UpdateRule, WriteRule};
pub use files::{ConfigFiles, WORKSPACE_FILE};
pub use schema::{
    env_references, DEFAULT_KEEP_CHANGELOG_RUNS, DEFAULT_KEEP_RUNS, MAX_BATCH_SIZE,
    MAX_TIME_BUDGET_S, MIN_RATE,
};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A loaded, cross-checked workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The workspace's directory: data, plugins and state paths are relative to it.
    pub root: PathBuf,
    /// Where plugins named by spec name are looked up (`[workspace] plugins_dir`).
    pub plugins_dir: PathBuf,
    /// Where state, run history and the compiled-plugin cache live (`[workspace] state_dir`).
    pub state_dir: PathBuf,
    /// Runs kept per sync in history (`[state] keep_runs`).
    pub keep_runs: u64,
    /// Runs per sync whose changelog is kept (`[state] keep_changelog_runs`; 0 keeps none).
    pub keep_changelog_runs: u64,
    /// Days of audit log kept (`[state] keep_audit_days`).
    pub keep_audit_days: u64,
    /// Sources, by name.
    pub sources: BTreeMap<String, Connector>,
    /// Destinations, by name.
    pub destinations: BTreeMap<String, Connector>,
    /// Models, by name.
    pub models: BTreeMap<String, Model>,
    /// Syncs, by name.
    pub syncs: BTreeMap<String, SyncConfig>,
    /// Users, policies and approval settings.
    pub governance: Governance,
    /// Plugin reference → SHA-256 the published configuration was reviewed with. Empty for a
    /// working copy; a run refuses a plugin whose file no longer matches.
    pub plugin_pins: BTreeMap<String, String>,
    /// Where run outcomes are reported (`[[alerts]]`).
    pub alerts: Vec<Alert>,
}

impl Workspace {
    /// Every plugin reference the workspace uses (sources, destinations, checks, policies),
    /// except the built-in no-op destination.
    pub fn plugin_refs(&self) -> std::collections::BTreeSet<String> {
        let mut refs = std::collections::BTreeSet::new();
        for c in self
            .sources
            .values()
            .chain(self.destinations.values())
            .chain(self.governance.policies.iter())
        {
            refs.insert(c.plugin.clone());
        }
        for s in self.syncs.values() {
            refs.extend(s.checks.iter().map(|c| c.connector.plugin.clone()));
        }
        refs.remove(crate::domain::BUILTIN_NOOP);
        refs
    }

    /// Refuses a plugin whose content (SHA-256 `hash`, of the file at `path`) is not the one
    /// pinned for `reference` in `pins`. A reference without a pin is accepted.
    pub fn check_pin(
        pins: &BTreeMap<String, String>,
        reference: &str,
        path: &Path,
        hash: &str,
    ) -> Result<(), PluginChanged> {
        match pins.get(reference) {
            Some(pin) if pin != hash => Err(PluginChanged {
                reference: reference.to_string(),
                path: path.to_path_buf(),
                pinned: pin.clone(),
                found: hash.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// The sync named `name`.
    pub fn sync(&self, name: &str) -> Result<&SyncConfig, UnknownSync> {
        self.syncs.get(name).ok_or_else(|| UnknownSync {
            name: name.to_string(),
            known: self.syncs.keys().cloned().collect(),
        })
    }
}

/// Fuzzing by property (issue 16): any `backflow.toml` loads or is refused with errors; the
/// loader never panics. Mutations of a valid workspace reach past the TOML parser.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const VALID: &str = "[workspace]\nplugins_dir = \"p\"\n[state]\nkeep_runs = 5\n[sources.files]\nplugin = \"file-source\"\ngrants.files = [\"data\"]\n[destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"http://127.0.0.1:9/x\"\ngrants.network = [\"127.0.0.1:9\"]\n[models.m]\nsource = \"files\"\nquery = \"data/x.csv\"\nprimary_key = \"id\"\n[syncs.s]\nmodel = \"m\"\ndestination = \"hook\"\nbatch_size = 10\nrate_limit = { rows_per_second = 5.0 }\n[users]\nann = { role = \"admin\" }\n";

    fn load(text: &str) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("backflow.toml"), text).unwrap();
        let _ = Workspace::load(dir.path());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        #[test]
        fn any_text(text in "\\PC{0,200}") {
            load(&text);
        }

        #[test]
        fn a_valid_workspace_with_one_value_replaced(line in 0usize..30, value in prop_oneof![
            Just("-1".to_string()), Just("1e400".to_string()), Just("nan".to_string()), Just("\"\"".to_string()), Just("[]".to_string()),
            Just("{}".to_string()), Just("18446744073709551615".to_string()), Just("\"${env.\"".to_string()), "\"\\\\PC{0,10}\"".prop_map(|s| s),
        ]) {
            let text: Vec<String> = VALID.lines().enumerate().map(|(i, l)| match (i == line, l.split_once(" = ")) {
                (true, Some((key, _))) => format!("{key} = {value}"),
                _ => l.to_string(),
            }).collect();
            load(&text.join("\n"));
        }
    }
}
