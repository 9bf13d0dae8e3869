//! The alerts step of loading: each `[[alerts]]` route, its URL checked (without expanding
//! its secrets), its outcomes, syncs and destinations known.

use super::definitions::{Alert, AlertOutcome, Connector, Origin, SyncConfig};
use super::errors::{unknown, ConfigError};
use super::schema::{env_references, AlertFile, GrantsFile};
use std::collections::BTreeMap;
use std::path::Path;

/// The alert routes, in order; each problem names `alerts[i]`.
pub(super) fn alerts(
    main_file: &Path,
    files: Vec<AlertFile>,
    syncs: &BTreeMap<String, SyncConfig>,
    destinations: &BTreeMap<String, Connector>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Alert> {
    let mut out = Vec::new();
    for (i, a) in files.into_iter().enumerate() {
        let origin = Origin {
            file: main_file.to_path_buf(),
            key: format!("alerts[{i}]"),
        };
        let conditions = super::alert_keys::alert_conditions(&a, &origin, errors);
        let grants = alert_grants(&a.url, a.grants, &origin, errors);
        // Secrets are expanded when an alert is sent, not here (the CLI need not have them):
        // check the URL with each `${env.NAME}` standing for a plain word.
        let without_secrets = env_references(&a.url)
            .iter()
            .fold(a.url.clone(), |url, name| {
                url.replace(&format!("${{env.{name}}}"), "x")
            });
        match url::Url::parse(&without_secrets) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ if a.url.starts_with("${env.") => {}
            _ => errors.push(origin.error("url", format!("{:?} is not an http(s) URL", a.url))),
        }
        let mut on = Vec::new();
        for (j, name) in
            a.on.clone()
                .unwrap_or_else(|| {
                    AlertOutcome::ALL
                        .iter()
                        .map(|o| o.as_str().to_string())
                        .collect()
                })
                .iter()
                .enumerate()
        {
            match AlertOutcome::ALL.iter().find(|o| o.as_str() == name) {
                Some(o) => on.push(*o),
                None => errors.push(origin.error(&format!("on[{j}]"), format!("unknown outcome {name:?}; use failed, partial, blocked or awaiting_approval"))),
            }
        }
        for (j, s) in a.syncs.iter().enumerate() {
            if !syncs.contains_key(s) {
                errors.push(origin.error(&format!("syncs[{j}]"), unknown("sync", s, syncs.keys())));
            }
        }
        for (j, d) in a.destinations.iter().enumerate() {
            if !destinations.contains_key(d) {
                errors.push(origin.error(
                    &format!("destinations[{j}]"),
                    unknown("destination", d, destinations.keys()),
                ));
            }
        }
        out.push(Alert {
            url: a.url,
            on,
            partial_min_rejected: a.partial_min_rejected.unwrap_or(1),
            syncs: a.syncs,
            destinations: a.destinations,
            grants,
            conditions,
            origin,
        });
    }
    out
}

/// An alert's grants: the `${env.NAME}` its URL names must be in `grants.env` (an alert URL
/// must not carry a destination's secret to wherever it points), `grants.network` entries
/// must be grants, and an alert reads no files. Errors name `alerts[i].url` and the key.
fn alert_grants(
    url: &str,
    file: GrantsFile,
    origin: &Origin,
    errors: &mut Vec<ConfigError>,
) -> crate::domain::Grants {
    for name in env_references(url) {
        if !file.env.contains(&name) {
            errors.push(origin.error(
                "url",
                format!(
                    "uses ${{env.{name}}}, which is not in {}.grants.env: add \"{name}\" there if this alert may read it",
                    origin.key
                ),
            ));
        }
    }
    if !file.files.is_empty() {
        errors.push(origin.error("grants.files", "an alert reads no files"));
    }
    let mut network = Vec::new();
    for (i, text) in file.network.iter().enumerate() {
        match text.parse::<crate::domain::NetworkGrant>() {
            Ok(grant) => network.push(grant),
            Err(e) => errors.push(origin.error(&format!("grants.network[{i}]"), e.to_string())),
        }
    }
    crate::domain::Grants {
        files: Vec::new(),
        network,
        env: file.env,
    }
}
