//! Loading a workspace: the main file parsed, then each kind of definition in turn
//! (connectors, models, syncs, their sequences, alerts, governance), each step checking
//! references to the steps before it. Every error found is reported, not only the first.

use super::alerts::alerts;
use super::connectors::connector;
use super::definitions::{Connector, Model, Origin};
use super::errors::{unknown, ConfigError, ConfigErrors};
use super::files::{definitions, toml_error, ConfigFiles, WORKSPACE_FILE};
use super::governance::governance;
use super::schema::{
    ConnectorFile, ModelFile, WorkspaceFile, DEFAULT_KEEP_AUDIT_DAYS, DEFAULT_KEEP_CHANGELOG_RUNS,
    DEFAULT_KEEP_RUNS,
};
use super::sequences::check_sequences;
use super::syncs::syncs;
use super::Workspace;
use indexmap::IndexMap;
use std::collections::BTreeMap;
use std::path::Path;

impl Workspace {
    /// Loads and checks the workspace in `root` from its files. Reports every error found.
    pub fn load(root: &Path) -> Result<Workspace, ConfigErrors> {
        Workspace::load_files(root, &ConfigFiles::read(root)?)
    }

    /// Loads and checks a workspace whose configuration is `files` (the working copy's or a
    /// published one) and whose data and plugins are under `root`.
    pub fn load_files(root: &Path, files: &ConfigFiles) -> Result<Workspace, ConfigErrors> {
        let main_file = root.join(WORKSPACE_FILE);
        let text = files.0.get(WORKSPACE_FILE).ok_or_else(|| {
            ConfigErrors(vec![ConfigError {
                file: main_file.clone(),
                key: String::new(),
                message: "missing from the configuration".into(),
            }])
        })?;
        let parsed: WorkspaceFile =
            toml::from_str(text).map_err(|e| ConfigErrors(vec![toml_error(&main_file, e)]))?;

        let mut errors = Vec::new();
        let plugins_dir = root.join(parsed.workspace.plugins_dir.as_deref().unwrap_or("plugins"));
        let state_dir = root.join(parsed.workspace.state_dir.as_deref().unwrap_or(".backflow"));
        let keep_runs = parsed.state.keep_runs.unwrap_or(DEFAULT_KEEP_RUNS);
        let keep_changelog_runs = parsed
            .state
            .keep_changelog_runs
            .unwrap_or(DEFAULT_KEEP_CHANGELOG_RUNS);
        let keep_audit_days = parsed
            .state
            .keep_audit_days
            .unwrap_or(DEFAULT_KEEP_AUDIT_DAYS);
        if keep_runs == 0 {
            errors.push(ConfigError {
                file: main_file.clone(),
                key: "state.keep_runs".into(),
                message: "must be at least 1".into(),
            });
        }

        let debug = super::debug::debug_settings(&main_file, parsed.debug, &mut errors);
        let sources = connectors(root, &main_file, "sources", parsed.sources, &mut errors);
        let destinations = connectors(
            root,
            &main_file,
            "destinations",
            parsed.destinations,
            &mut errors,
        );
        let model_files = definitions(parsed.models, "models", root, files, &mut errors);
        let models = models(model_files, &sources, &mut errors);
        let sync_files = definitions(parsed.syncs, "syncs", root, files, &mut errors);
        let syncs = syncs(root, sync_files, &models, &destinations, &mut errors);
        check_sequences(&syncs, &mut errors);
        let alerts = alerts(
            &main_file,
            parsed.alerts,
            &syncs,
            &destinations,
            &mut errors,
        );
        let governance = governance(
            root,
            &main_file,
            parsed.users,
            parsed.policies,
            parsed.approvals,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Workspace {
            root: root.to_path_buf(),
            plugins_dir,
            state_dir,
            keep_runs,
            keep_changelog_runs,
            keep_audit_days,
            sources,
            destinations,
            models,
            syncs,
            governance,
            plugin_pins: BTreeMap::new(),
            alerts,
            debug,
        })
    }
}

/// The `[KIND.NAME]` connectors of the main file (`sources` or `destinations`), by name.
fn connectors(
    root: &Path,
    main_file: &Path,
    kind: &str,
    files: IndexMap<String, ConnectorFile>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Connector> {
    let mut out = BTreeMap::new();
    for (name, c) in files {
        let origin = Origin {
            file: main_file.to_path_buf(),
            key: format!("{kind}.{name}"),
        };
        match connector(root, &name, c, origin) {
            Ok(c) => {
                out.insert(name, c);
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    out
}

/// The models, by name, each reading from a known source; a name defined twice is an error
/// naming the other file.
fn models(
    definitions: Vec<(String, ModelFile, Origin)>,
    sources: &BTreeMap<String, Connector>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Model> {
    let mut models = BTreeMap::new();
    for (name, m, origin) in definitions {
        if let Some(prev) = models.get(&name).map(|m: &Model| m.origin.clone()) {
            errors.push(origin.error(
                "",
                format!("model {name:?} is also defined in {}", prev.file.display()),
            ));
            continue;
        }
        let primary_key = m.primary_key.into_vec();
        if primary_key.is_empty() || primary_key.iter().any(|k| k.trim().is_empty()) {
            errors.push(origin.error("primary_key", "needs at least one column name"));
        }
        if !sources.contains_key(&m.source) {
            errors.push(origin.error("source", unknown("source", &m.source, sources.keys())));
        }
        if m.query.trim().is_empty() {
            errors.push(origin.error("query", "is empty"));
        }
        let diff = match m.diff.as_deref() {
            None | Some("local") => super::DiffLocation::Local,
            Some("warehouse") => super::DiffLocation::Warehouse,
            Some(other) => {
                errors.push(origin.error(
                    "diff",
                    format!("unknown value {other:?}; use \"local\" or \"warehouse\""),
                ));
                super::DiffLocation::Local
            }
        };
        let diff_schema = m.diff_schema.unwrap_or_else(|| "backflow".into());
        if diff_schema.is_empty() || diff_schema.len() > 63 || diff_schema.contains('\0') {
            errors.push(origin.error("diff_schema", "must be a schema name of 1 to 63 bytes"));
        }
        models.insert(
            name.clone(),
            Model {
                name,
                source: m.source,
                query: m.query,
                primary_key,
                description: m.description,
                labels: m.labels,
                diff,
                diff_schema,
                origin,
            },
        );
    }
    models
}
