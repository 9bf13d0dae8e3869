//! What every plugin must do, whatever its kind: a well-formed spec, and `check-config`
//! answering malformed and incomplete configs with errors that name the field.

use super::options::Options;
use super::report::{describe_error, Outcome, Report};
use crate::host::{Plugin, PluginHost};
use backflow_plugin_sdk::PluginKind;

/// The spec: a name, a semver version, a config schema that is a JSON object, and (for a
/// destination) at least one operation.
pub(super) fn check_spec(report: &mut Report, plugin: &Plugin) {
    let spec = &plugin.spec;
    let mut problems = Vec::new();
    if spec.name.trim().is_empty() {
        problems.push("the name is empty".to_string());
    }
    if spec.version.split('.').count() < 3
        || !spec
            .version
            .split('.')
            .take(3)
            .all(|p| p.chars().next().is_some_and(|c| c.is_ascii_digit()))
    {
        problems.push(format!(
            "the version {:?} is not semver (MAJOR.MINOR.PATCH)",
            spec.version
        ));
    }
    match serde_json::from_str::<serde_json::Value>(&spec.config_schema) {
        Ok(serde_json::Value::Object(_)) => {}
        Ok(_) => problems.push("the config schema is not a JSON object".into()),
        Err(e) => problems.push(format!("the config schema is not JSON: {e}")),
    }
    if spec.kind == PluginKind::Destination && spec.operations.is_empty() {
        problems.push("a destination must declare at least one operation".into());
    }
    if problems.is_empty() {
        report.record(
            "spec",
            Outcome::Pass,
            format!(
                "{} {} ({}, contract {}, {} rows)",
                spec.name,
                spec.version,
                spec.kind.as_str(),
                plugin.contract,
                plugin.row_encoding.as_str()
            ),
        );
    } else {
        report.record("spec", Outcome::Fail, problems.join("; "));
    }
}

/// `check-config`: malformed JSON refused, the given config accepted, and a required field
/// taken out named in the errors.
pub(super) async fn check_config(
    report: &mut Report,
    host: &PluginHost,
    plugin: &Plugin,
    options: &Options,
) {
    match host.check_config(plugin, "{not json", options.limits).await {
        Ok(errors) if errors.is_empty() => report.record(
            "check-config refuses malformed JSON",
            Outcome::Fail,
            "no error for the config text `{not json`",
        ),
        Ok(errors) => report.record(
            "check-config refuses malformed JSON",
            Outcome::Pass,
            errors[0].message.clone(),
        ),
        Err(e) => report.record(
            "check-config refuses malformed JSON",
            Outcome::Fail,
            describe_error(&e),
        ),
    }
    match host
        .check_config(plugin, &options.config, options.limits)
        .await
    {
        Ok(errors) if errors.is_empty() => {
            report.record("check-config accepts the given config", Outcome::Pass, "")
        }
        Ok(errors) => report.record(
            "check-config accepts the given config",
            Outcome::Fail,
            errors
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        if e.field.is_empty() {
                            "(config)"
                        } else {
                            &e.field
                        },
                        e.message
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Err(e) => report.record(
            "check-config accepts the given config",
            Outcome::Fail,
            describe_error(&e),
        ),
    }
    // A field the schema requires, taken out of the working config, must be named.
    let schema: serde_json::Value =
        serde_json::from_str(&plugin.spec.config_schema).unwrap_or_default();
    let config: serde_json::Value = serde_json::from_str(&options.config).unwrap_or_default();
    let required = schema
        .get("required")
        .and_then(|r| r.as_array())
        .and_then(|r| {
            r.iter()
                .filter_map(|f| f.as_str())
                .find(|f| config.get(*f).is_some())
        });
    match (required, config) {
        (Some(field), serde_json::Value::Object(mut object)) => {
            object.remove(field);
            let without = serde_json::Value::Object(object).to_string();
            let name = format!("check-config names a missing required field ({field})");
            match host.check_config(plugin, &without, options.limits).await {
                Ok(errors)
                    if errors
                        .iter()
                        .any(|e| e.field == field || e.field.starts_with(&format!("{field}."))) =>
                {
                    report.record(name, Outcome::Pass, "")
                }
                Ok(errors) if errors.is_empty() => report.record(
                    name,
                    Outcome::Fail,
                    format!("no error for a config without {field:?}"),
                ),
                Ok(errors) => report.record(
                    name,
                    Outcome::Fail,
                    format!(
                        "the errors do not name {field:?}: {}",
                        errors
                            .iter()
                            .map(|e| format!("{:?}: {}", e.field, e.message))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                ),
                Err(e) => report.record(name, Outcome::Fail, describe_error(&e)),
            }
        }
        _ => report.record(
            "check-config names a missing required field",
            Outcome::Skip,
            "the schema requires no field the given config has",
        ),
    }
}
