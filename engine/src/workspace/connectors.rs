//! A plugin's definition, resolved: [`ConnectorFile`] (a source, a destination, or the
//! plugin part of a check or a policy) to [`Connector`], with its grants and limits checked.

use super::definitions::{Connector, Origin};
use super::errors::ConfigError;
use super::grants::grants;
use super::schema::ConnectorFile;
use super::secrets;
use crate::domain::Limits;
use std::path::Path;

/// The connector `name` defined at `origin`, or every problem with it.
pub(super) fn connector(
    root: &Path,
    name: &str,
    c: ConnectorFile,
    origin: Origin,
) -> Result<Connector, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let grants = grants(root, c.grants, &origin, &mut errors);
    if c.plugin.trim().is_empty() {
        errors.push(origin.error("plugin", "is empty"));
    }
    let config_json = serde_json::to_string(&c.config.unwrap_or_default())
        .expect("TOML tables serialize to JSON");
    // The host expands `${env.NAME}` from the plugin's granted variables only: a reference
    // to any other variable is an error now, naming its key, rather than a literal sent later.
    if config_json.contains("${env.") {
        let config: serde_json::Value =
            serde_json::from_str(&config_json).expect("serialized JSON parses");
        let owner = format!("plugin {}", c.plugin);
        for problem in secrets::ungranted(&config, &grants.env, &owner) {
            errors.push(origin.error(
                &format!("config.{}", problem.field),
                problem.reason.to_string(),
            ));
        }
    }
    let defaults = Limits::default();
    let limits = Limits {
        memory_mb: c.limits.memory_mb.unwrap_or(defaults.memory_mb),
        call_timeout_ms: c.limits.call_timeout_ms.unwrap_or(defaults.call_timeout_ms),
        wall_timeout_ms: c.limits.wall_timeout_ms.unwrap_or(defaults.wall_timeout_ms),
    };
    if limits.memory_mb == 0 {
        errors.push(origin.error("limits.memory_mb", "must be at least 1"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Connector {
        name: name.to_string(),
        plugin: c.plugin,
        config_json,
        grants,
        limits,
        staging: c.staging,
        origin,
    })
}
