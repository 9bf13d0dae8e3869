//! The governance step of loading: `[users]` and their roles, `[[policies]]` (approval-policy
//! plugins) and `[approvals]` (how long a run request stays open, and where to notify,
//! checked against the notification grants).

use super::connectors::connector;
use super::definitions::{Governance, Origin};
use super::errors::ConfigError;
use super::grants::notification_network;
use super::schema::{
    env_references, ApprovalsFile, ConnectorFile, GrantsFile, PolicyFile, UserFile,
};
use crate::domain::{Grants, Role, MAX_TTL_MINUTES};
use indexmap::IndexMap;
use std::collections::BTreeMap;
use std::path::Path;

/// Who may do what and which policies decide, from the main file's tables.
pub(super) fn governance(
    root: &Path,
    main_file: &Path,
    users: IndexMap<String, UserFile>,
    policies: Vec<PolicyFile>,
    approvals: ApprovalsFile,
    errors: &mut Vec<ConfigError>,
) -> Governance {
    let origin = |key: String| Origin {
        file: main_file.to_path_buf(),
        key,
    };
    let mut out = Governance {
        run_request_ttl_minutes: approvals.run_request_ttl_minutes.unwrap_or(24 * 60),
        users: roles(users, &origin, errors),
        ..Default::default()
    };
    for (i, p) in policies.into_iter().enumerate() {
        let name = p.name.clone().unwrap_or_else(|| p.plugin.clone());
        let file = ConnectorFile {
            plugin: p.plugin,
            config: p.config,
            grants: GrantsFile::default(),
            limits: p.limits,
            staging: false,
        };
        match connector(root, &name, file, origin(format!("policies[{i}]"))) {
            Ok(c) => out.policies.push(c),
            Err(mut e) => errors.append(&mut e),
        }
    }
    let approvals_origin = origin("approvals".into());
    if out.run_request_ttl_minutes > MAX_TTL_MINUTES {
        errors.push(approvals_origin.error(
            "run_request_ttl_minutes",
            format!("must be at most {MAX_TTL_MINUTES} (one year)"),
        ));
    }
    if let Some(template) = &approvals.notify_url {
        check_notify_url(template, &approvals.grants, &approvals_origin, errors);
    }
    if !approvals.grants.files.is_empty() {
        errors.push(approvals_origin.error(
            "grants",
            "only network grants (and env, for notify_url) apply to notifications",
        ));
    }
    out.notify_url = approvals.notify_url;
    out.origin = Some(approvals_origin);
    out
}

/// Each user's role; an unknown role is an error naming `users.NAME.role`.
fn roles(
    users: IndexMap<String, UserFile>,
    origin: &impl Fn(String) -> Origin,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Role> {
    let mut roles = BTreeMap::new();
    for (name, user) in users {
        match Role::parse(&user.role) {
            Some(role) => {
                roles.insert(name, role);
            }
            None => errors.push(origin(format!("users.{name}")).error(
                "role",
                format!(
                    "unknown role {:?}; use admin, approver, contributor or viewer",
                    user.role
                ),
            )),
        }
    }
    roles
}

/// `notify_url` uses only granted variables and expands to an http(s) URL whose host:port
/// is granted.
fn check_notify_url(
    template: &str,
    grants: &GrantsFile,
    approvals_origin: &Origin,
    errors: &mut Vec<ConfigError>,
) {
    // A Slack webhook URL is a secret: it may come from a granted variable
    // (`${env.SLACK_WEBHOOK_URL}`), and messages name the template, never the URL.
    let names = env_references(template);
    let ungranted: Vec<&String> = names.iter().filter(|n| !grants.env.contains(n)).collect();
    if !ungranted.is_empty() {
        errors.push(approvals_origin.error(
            "notify_url",
            format!(
                "uses ${{env.{}}}, which is not in approvals.grants.env",
                ungranted[0]
            ),
        ));
        return;
    }
    match backflow_plugin_sdk::expand_secrets(template, "notification")
        .map(|url| reqwest::Url::parse(&url))
    {
        Err(e) => errors.push(approvals_origin.error("notify_url", e)),
        Ok(Ok(u)) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            let host = u
                .host_str()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = u.port_or_known_default().unwrap_or(80);
            let grants = Grants {
                files: vec![],
                network: notification_network(&grants.network),
                env: vec![],
            };
            if !grants.allows_host(&host, port) {
                errors.push(approvals_origin.error(
                    "notify_url",
                    format!("{host}:{port} is not granted: add it to approvals.grants.network"),
                ));
            }
        }
        Ok(_) => errors.push(approvals_origin.error(
            "notify_url",
            if names.is_empty() {
                format!("{template:?} is not an http(s) URL")
            } else {
                format!("{template:?} does not expand to an http(s) URL")
            },
        )),
    }
}
