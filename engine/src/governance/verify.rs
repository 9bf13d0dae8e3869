//! `backflow change verify`: whether the working copy (configuration files and plugin
//! builds) is exactly an approved change request, or with `--published` exactly the
//! published configuration. A CI step runs it to fail a pull request whose configuration
//! was never approved; when nothing matches it says which files and plugins differ from the
//! closest candidate.

use super::change::{short, ChangeRequest, ChangeStatus};
use super::plugin_changes::{plugin_builds, PluginUnavailable};
use super::published::Published;
use crate::state::{StateError, StateStore};
use crate::workspace::{ConfigErrors, ConfigFiles, Workspace};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Change requests searched for an approved one.
const CHANGES_SEARCHED: usize = 1000;

/// Why the working copy cannot be verified at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The working copy's files cannot be read or do not load.
    #[error("the working copy cannot be verified: {0}")]
    WorkingCopy(ConfigErrors),
    /// A plugin the working copy names cannot be resolved.
    #[error("the working copy cannot be verified: {0}")]
    Plugin(PluginUnavailable),
}

/// What `change verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Whether the working copy is exactly an approved (or the published) change.
    pub verified: bool,
    /// What it was compared with: `change #N (approved)`, `the published configuration
    /// (change #N)`, or `nothing` when there is nothing to compare with.
    pub against: String,
    /// The working copy's configuration hash.
    pub working_hash: String,
    /// What differs from `against` (`modified backflow.toml`, `plugin webhook sha256 A → B`);
    /// empty when verified.
    pub differences: Vec<String>,
}

impl Verification {
    /// One line (or a few) for people.
    pub fn describe(&self) -> String {
        if self.verified {
            return format!(
                "the working copy ({}) is exactly {}",
                short(&self.working_hash),
                self.against
            );
        }
        let mut text = format!(
            "the working copy ({}) is not an approved change; it differs from {}:",
            short(&self.working_hash),
            self.against
        );
        for d in &self.differences {
            text.push_str("\n  ");
            text.push_str(d);
        }
        text
    }
}

/// A configuration that may be what the working copy is.
struct Candidate {
    label: String,
    files: ConfigFiles,
    plugin_hashes: BTreeMap<String, String>,
}

impl Candidate {
    fn of_change(c: &ChangeRequest) -> Candidate {
        Candidate {
            label: format!("change #{} ({})", c.id, c.status),
            files: c.files.clone(),
            plugin_hashes: c.plugin_hashes.clone(),
        }
    }
}

/// What differs between the working copy and `candidate`.
fn differences(
    files: &ConfigFiles,
    plugins: &BTreeMap<String, String>,
    candidate: &Candidate,
) -> Vec<String> {
    let mut out = Vec::new();
    let paths: BTreeSet<&String> = files.0.keys().chain(candidate.files.0.keys()).collect();
    for path in paths {
        match (candidate.files.0.get(path), files.0.get(path)) {
            (Some(a), Some(b)) if a != b => out.push(format!("modified {path}")),
            (None, Some(_)) => out.push(format!("added {path}")),
            (Some(_), None) => out.push(format!("removed {path}")),
            _ => {}
        }
    }
    let refs: BTreeSet<&String> = plugins
        .keys()
        .chain(candidate.plugin_hashes.keys())
        .collect();
    for reference in refs {
        let (was, now) = (
            candidate.plugin_hashes.get(reference),
            plugins.get(reference),
        );
        if was != now {
            out.push(format!(
                "plugin {reference} sha256 {} → {}",
                was.map(|h| short(h)).unwrap_or("(not used)"),
                now.map(|h| short(h)).unwrap_or("(not used)")
            ));
        }
    }
    out
}

/// Whether the working copy at `root` is exactly an approved change (or, with
/// `published_only`, the published configuration). The caller has authorized reading
/// change requests.
pub(crate) async fn verify(
    host: &crate::plugins::Registry,
    root: &Path,
    state: &StateStore,
    published_only: bool,
) -> Result<Verification, VerifyError> {
    let files = ConfigFiles::read(root).map_err(VerifyError::WorkingCopy)?;
    let working = Workspace::load_files(root, &files).map_err(VerifyError::WorkingCopy)?;
    let plugins: BTreeMap<String, String> = plugin_builds(host, &working)
        .await
        .map_err(VerifyError::Plugin)?
        .into_iter()
        .map(|(reference, build)| (reference, build.hash))
        .collect();
    let published = state.published::<Published>()?;
    // Newest first: the closest candidate reported is the latest approved change, then the
    // published configuration.
    let mut candidates: Vec<Candidate> = if published_only {
        Vec::new()
    } else {
        state
            .changes::<ChangeRequest>(CHANGES_SEARCHED)?
            .iter()
            .filter(|c| c.status == ChangeStatus::Approved)
            .map(Candidate::of_change)
            .collect()
    };
    if let Some(p) = &published {
        candidates.push(Candidate {
            label: format!("the published configuration (change #{})", p.change_id),
            files: p.files.clone(),
            plugin_hashes: p.plugin_hashes.clone(),
        });
    }
    let working_hash = files.hash();
    if let Some(found) = candidates
        .iter()
        .find(|c| c.files.hash() == working_hash && c.plugin_hashes == plugins)
    {
        return Ok(Verification {
            verified: true,
            against: found.label.clone(),
            working_hash,
            differences: Vec::new(),
        });
    }
    let (against, differences) = match candidates.first() {
        Some(c) => (c.label.clone(), differences(&files, &plugins, c)),
        None => (
            "nothing".to_string(),
            vec![if published_only {
                "nothing is published yet".to_string()
            } else {
                "no change request is approved and nothing is published".to_string()
            }],
        ),
    };
    Ok(Verification {
        verified: false,
        against,
        working_hash,
        differences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_file_and_plugin() {
        let candidate = Candidate {
            label: "change #1 (approved)".into(),
            files: ConfigFiles(BTreeMap::from([
                ("backflow.toml".to_string(), "a = 1\n".to_string()),
                ("syncs/old.toml".to_string(), "x = 1\n".to_string()),
            ])),
            plugin_hashes: BTreeMap::from([("webhook".to_string(), "1111111111111111".into())]),
        };
        let files = ConfigFiles(BTreeMap::from([
            ("backflow.toml".to_string(), "a = 2\n".to_string()),
            ("models/new.toml".to_string(), "y = 1\n".to_string()),
        ]));
        let plugins = BTreeMap::from([("webhook".to_string(), "2222222222222222".into())]);
        assert_eq!(
            differences(&files, &plugins, &candidate),
            vec![
                "modified backflow.toml",
                "added models/new.toml",
                "removed syncs/old.toml",
                "plugin webhook sha256 111111111111 → 222222222222",
            ]
        );
        assert!(differences(&candidate.files, &candidate.plugin_hashes, &candidate).is_empty());
    }
}
