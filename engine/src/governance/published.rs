//! The published configuration (what runs use once the workspace declares `[users]`) and
//! which workspace a run uses: the published one, or a draft of the working copy under the
//! draft rules (published staging destinations, published grants, published governance).

use crate::state::{StateError, StateStore};
use crate::workspace::{ConfigErrors, ConfigFiles, Workspace};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The configuration runs use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    /// SHA-256 of `files`.
    pub config_hash: String,
    /// The configuration files, as reviewed.
    pub files: ConfigFiles,
    /// Plugin reference → SHA-256 of the plugin reviewed with this configuration.
    #[serde(default)]
    pub plugin_hashes: BTreeMap<String, String>,
    /// What those plugin builds declared (spec, size, imports), to show what a later build
    /// changes. Empty for configurations published before builds were recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_builds: BTreeMap<String, super::plugin_changes::PluginBuild>,
    /// The change request that published it.
    pub change_id: u64,
    /// Who published it.
    pub published_by: String,
    /// When (RFC 3339).
    pub published_at: String,
}

/// Why the published configuration cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PublishedError {
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The published files no longer load (a plugin or data path moved, a newer rule).
    #[error("the published configuration (change #{change_id}) no longer loads: {errors}")]
    NoLongerLoads {
        /// The change request that published it.
        change_id: u64,
        /// What fails to load.
        errors: ConfigErrors,
    },
}

/// Why a run cannot use the workspace it asked for.
#[derive(Debug, thiserror::Error)]
pub enum RunWorkspaceError {
    /// The published configuration cannot be read.
    #[error(transparent)]
    Published(#[from] PublishedError),
    /// The working copy has no such sync.
    #[error("{0}")]
    UnknownSync(String),
    /// A draft asked to deliver to a destination not published as staging.
    #[error("sync {sync} delivers to {destination}, which is not a (published) staging destination: drafts run only against destinations published with staging = true (try `sync plan --draft`)")]
    NotStaging {
        /// The sync asked for.
        sync: String,
        /// Its destination.
        destination: String,
    },
    /// A draft's source has grants the published configuration does not have.
    #[error("sync {sync} reads source {source_name} with grants that are not published: a draft runs only with published grants (submit the change to have them reviewed)")]
    UnpublishedSourceGrants {
        /// The sync asked for.
        sync: String,
        /// Its model's source.
        source_name: String,
    },
    /// A draft's check has grants the published configuration does not have.
    #[error("sync {sync}: check {check} has grants that are not published: a draft runs only with published grants")]
    UnpublishedCheckGrants {
        /// The sync asked for.
        sync: String,
        /// The check.
        check: String,
    },
    /// Approvals are required and nothing is published: no run without a draft.
    #[error("this workspace requires approvals ([users] is set) and nothing is published yet: `backflow change submit`, have it approved, then `backflow change publish ID`")]
    NothingPublished,
}

/// The published configuration and the workspace it loads as, if anything is published.
pub fn published_workspace(
    root: &Path,
    state: &StateStore,
) -> Result<Option<(Published, Workspace)>, PublishedError> {
    let Some(published) = state.published::<Published>()? else {
        return Ok(None);
    };
    let mut ws = Workspace::load_files(root, &published.files).map_err(|errors| {
        PublishedError::NoLongerLoads {
            change_id: published.change_id,
            errors,
        }
    })?;
    ws.plugin_pins = published.plugin_hashes.clone();
    ws.governance.plugin_pins = published.plugin_hashes.clone();
    Ok(Some((published, ws)))
}

/// Which workspace a run uses: the working copy when approvals are off; otherwise the
/// published one, or with `draft` the working copy, but only towards staging destinations.
pub fn workspace_for_run(
    root: &Path,
    state: &StateStore,
    working: Workspace,
    draft: bool,
    syncs: &[String],
) -> Result<Workspace, RunWorkspaceError> {
    let published = published_workspace(root, state)?.map(|(_, ws)| ws);
    choose_run_workspace(working, published, draft, syncs)
}

/// [`workspace_for_run`] once the published workspace is read: the decision itself.
pub(crate) fn choose_run_workspace(
    working: Workspace,
    published: Option<Workspace>,
    draft: bool,
    syncs: &[String],
) -> Result<Workspace, RunWorkspaceError> {
    let governed = working.governance.enabled()
        || published.as_ref().is_some_and(|ws| ws.governance.enabled());
    if !governed {
        return Ok(working);
    }
    if draft {
        check_draft(&working, published.as_ref(), syncs)?;
        let mut working = working;
        // The draft's own [users]/[[policies]] do not decide anything: the published ones do.
        if let Some(ws) = published {
            working.governance = ws.governance;
        }
        return Ok(working);
    }
    published.ok_or(RunWorkspaceError::NothingPublished)
}

/// The draft rules: a draft of `syncs` delivers only to published staging destinations, and
/// runs its source and checks only with published grants.
pub(crate) fn check_draft(
    working: &Workspace,
    published: Option<&Workspace>,
    syncs: &[String],
) -> Result<(), RunWorkspaceError> {
    for name in syncs {
        let sync = working
            .sync(name)
            .map_err(|e| RunWorkspaceError::UnknownSync(e.to_string()))?;
        let destination = &working.destinations[&sync.destination];
        // Whether a destination is staging is itself reviewed: once something is
        // published, the published destination (same name, same plugin and config) must
        // be marked staging, so a working-copy edit cannot turn production into staging.
        let reviewed_staging = match published {
            Some(ws) => ws.destinations.get(&destination.name).is_some_and(|d| {
                d.staging
                    && d.plugin == destination.plugin
                    && d.config_json == destination.config_json
                    && d.grants == destination.grants
            }),
            None => destination.staging,
        };
        if !reviewed_staging {
            return Err(RunWorkspaceError::NotStaging {
                sync: name.clone(),
                destination: destination.name.clone(),
            });
        }
    }
    // What a draft may touch is reviewed too: its source (and checks) run with the
    // published grants, so a working-copy edit cannot grant a draft new files, hosts or
    // variables.
    if let Some(ws) = published {
        for name in syncs {
            check_draft_grants(working, ws, name)?;
        }
    }
    Ok(())
}

/// A draft of sync `name` runs its source and checks only with the grants `published` has.
fn check_draft_grants(
    working: &Workspace,
    published: &Workspace,
    name: &str,
) -> Result<(), RunWorkspaceError> {
    let sync = working
        .sync(name)
        .map_err(|e| RunWorkspaceError::UnknownSync(e.to_string()))?;
    let model = &working.models[&sync.model];
    let source = &working.sources[&model.source];
    let published_grants = published.sources.get(&source.name).map(|s| &s.grants);
    if published_grants != Some(&source.grants) {
        return Err(RunWorkspaceError::UnpublishedSourceGrants {
            sync: name.to_string(),
            source_name: source.name.clone(),
        });
    }
    let published_checks = published
        .syncs
        .get(name)
        .map(|s| {
            s.checks
                .iter()
                .map(|c| (&c.name, &c.connector.grants))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for check in &sync.checks {
        if check.connector.grants != crate::domain::Grants::default()
            && !published_checks.contains(&(&check.name, &check.connector.grants))
        {
            return Err(RunWorkspaceError::UnpublishedCheckGrants {
                sync: name.to_string(),
                check: check.name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[workspace]
plugins_dir = "p"
[sources.files]
plugin = "file-source"
grants.files = ["data"]
[destinations.hook]
plugin = "webhook"
staging = true
config.url = "http://127.0.0.1:9/x"
grants.network = ["127.0.0.1:9"]
[destinations.prod]
plugin = "webhook"
config.url = "http://127.0.0.1:9/prod"
grants.network = ["127.0.0.1:9"]
[models.m]
source = "files"
query = "data/x.csv"
primary_key = "id"
[syncs.s]
model = "m"
destination = "hook"
[syncs.p]
model = "m"
destination = "prod"
"#;

    const USERS: &str = "[users]\nann = { role = \"admin\" }\n";

    /// A workspace directory (with its `data` directory, so file grants load): workspaces
    /// compared with each other load from one root, as their grants resolve under it.
    struct Root(tempfile::TempDir);

    impl Root {
        fn new() -> Root {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("data")).unwrap();
            Root(dir)
        }

        /// The workspace whose `backflow.toml` is `text`.
        fn load(&self, text: &str) -> Workspace {
            let files = ConfigFiles(BTreeMap::from([(
                "backflow.toml".to_string(),
                text.to_string(),
            )]));
            Workspace::load_files(self.0.path(), &files).unwrap_or_else(|e| panic!("{e}"))
        }
    }

    fn governed() -> String {
        format!("{BASE}{USERS}")
    }

    fn names(syncs: &[&str]) -> Vec<String> {
        syncs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn without_users_runs_use_the_working_copy() {
        let root = Root::new();
        let ws = choose_run_workspace(root.load(BASE), None, false, &names(&["p"])).unwrap();
        assert!(!ws.governance.enabled());
    }

    #[test]
    fn with_users_and_nothing_published_only_drafts_run() {
        let root = Root::new();
        let err =
            choose_run_workspace(root.load(&governed()), None, false, &names(&["s"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this workspace requires approvals ([users] is set) and nothing is published yet: `backflow change submit`, have it approved, then `backflow change publish ID`"
        );
        // Nothing published: the working copy's own staging flag decides.
        assert!(choose_run_workspace(root.load(&governed()), None, true, &names(&["s"])).is_ok());
    }

    #[test]
    fn published_users_govern_even_when_the_working_copy_drops_them() {
        let root = Root::new();
        let published = root.load(&governed());
        let ws = choose_run_workspace(root.load(BASE), Some(published), false, &[]).unwrap();
        assert!(ws.governance.enabled(), "the published workspace is used");
    }

    #[test]
    fn drafts_deliver_only_to_staging_destinations() {
        let root = Root::new();
        let err = check_draft(&root.load(&governed()), None, &names(&["s", "p"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sync p delivers to prod, which is not a (published) staging destination: drafts run only against destinations published with staging = true (try `sync plan --draft`)"
        );
        let err = check_draft(&root.load(&governed()), None, &names(&["nope"])).unwrap_err();
        assert!(matches!(err, RunWorkspaceError::UnknownSync(_)), "{err}");
    }

    #[test]
    fn staging_is_what_was_published_not_what_the_working_copy_says() {
        let root = Root::new();
        let published = root.load(&governed());
        // The working copy marks prod as staging: the published prod is not.
        let working = root.load(&governed().replace(
            "[destinations.prod]\n",
            "[destinations.prod]\nstaging = true\n",
        ));
        assert!(matches!(
            check_draft(&working, Some(&published), &names(&["p"])),
            Err(RunWorkspaceError::NotStaging { .. })
        ));
        // The working copy points the staging destination elsewhere: no longer reviewed.
        let moved = root.load(&governed().replace("9/x", "9/elsewhere"));
        assert!(matches!(
            check_draft(&moved, Some(&published), &names(&["s"])),
            Err(RunWorkspaceError::NotStaging { .. })
        ));
        assert!(check_draft(&root.load(&governed()), Some(&published), &names(&["s"])).is_ok());
    }

    #[test]
    fn drafts_run_only_with_published_grants() {
        let root = Root::new();
        let published = root.load(&governed());
        let working = root.load(&governed().replace(
            "grants.files = [\"data\"]",
            "grants.files = [\"data\"]\ngrants.env = [\"HOME\"]",
        ));
        let err = check_draft(&working, Some(&published), &names(&["s"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sync s reads source files with grants that are not published: a draft runs only with published grants (submit the change to have them reviewed)"
        );
    }

    #[test]
    fn a_draft_is_governed_by_the_published_users() {
        let root = Root::new();
        let published = root.load(&governed());
        let working = root.load(&format!(
            "{BASE}[users]\nann = {{ role = \"admin\" }}\nbob = {{ role = \"admin\" }}\n"
        ));
        let ws = choose_run_workspace(working, Some(published), true, &names(&["s"])).unwrap();
        assert_eq!(ws.governance.users.keys().collect::<Vec<_>>(), vec!["ann"]);
    }
}
