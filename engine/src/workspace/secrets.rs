//! `${env.NAME}` references: found, checked against a grant list and expanded from the
//! environment, each problem naming the key it is in. The host expands every plugin's config
//! with this (so a plugin in any language gets the secret without reading the environment),
//! and the workspace loader refuses a reference to a variable the plugin is not granted.
//! The text functions work on any config string (an alert URL, a notification URL) too.

/// Why a `${env.NAME}` reference cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretReason {
    /// The variable is not in the owner's `grants.env`.
    #[error("variable {name} is not granted to {owner} (add it to grants.env)")]
    NotGranted {
        /// The variable named.
        name: String,
        /// Who would read it, as a phrase: `plugin webhook`.
        owner: String,
    },
    /// The variable is granted but not set in backflow's environment.
    #[error("environment variable {name} is not set (granted to {owner}; set it in the environment backflow runs in)")]
    NotSet {
        /// The variable named.
        name: String,
        /// Who would read it, as a phrase: `plugin webhook`.
        owner: String,
    },
    /// `${env.` without its closing `}`.
    #[error("unterminated ${{env.NAME}} reference")]
    Unterminated,
}

/// A reference that cannot be expanded, at `field` (a dotted path inside the config:
/// `headers.Authorization`, `tags[2]`; empty for a bare string).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SecretError {
    /// Where the reference is, relative to the value checked.
    pub field: String,
    /// What is wrong with it.
    pub reason: SecretReason,
}

const OPEN: &str = "${env.";

/// Each `${env.NAME}` reference in `text`, in order; one that is not closed ends the list
/// as an `Err`. The one parser of references: load checks, expansion and redaction.
pub(crate) fn reference_names(text: &str) -> impl Iterator<Item = Result<&str, SecretReason>> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        let after = &text[text.find(OPEN)? + OPEN.len()..];
        Some(match after.find('}') {
            Some(end) => {
                rest = Some(&after[end + 1..]);
                Ok(&after[..end])
            }
            None => {
                rest = None;
                Err(SecretReason::Unterminated)
            }
        })
    })
}

/// The names of the `${env.NAME}` references in `text`, in order; `Err` when one is not
/// closed.
fn references(text: &str) -> Result<Vec<&str>, SecretReason> {
    reference_names(text).collect()
}

/// `text` with every `${env.NAME}` replaced by the variable's value from `lookup`; each name
/// must be in `granted`. `owner` words the errors (`plugin webhook`, `alert 1`).
pub fn expand_text(
    text: &str,
    granted: &[String],
    owner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SecretReason> {
    if !text.contains(OPEN) {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after.find('}').ok_or(SecretReason::Unterminated)?;
        let name = &after[..end];
        let owner = owner.to_string();
        if !granted.iter().any(|g| g == name) {
            return Err(SecretReason::NotGranted {
                name: name.into(),
                owner,
            });
        }
        let value = lookup(name).ok_or_else(|| SecretReason::NotSet {
            name: name.into(),
            owner,
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every reference in a config value (its strings, at any depth) to a variable not in
/// `granted`, and every unterminated one, each at its field.
pub fn ungranted(config: &serde_json::Value, granted: &[String], owner: &str) -> Vec<SecretError> {
    let mut problems = Vec::new();
    walk(
        config,
        String::new(),
        &mut |field, text| match references(text) {
            Ok(names) => problems.extend(
                names
                    .into_iter()
                    .filter(|n| !granted.iter().any(|g| g == n))
                    .map(|name| SecretError {
                        field: field.to_string(),
                        reason: SecretReason::NotGranted {
                            name: name.into(),
                            owner: owner.into(),
                        },
                    }),
            ),
            Err(reason) => problems.push(SecretError {
                field: field.to_string(),
                reason,
            }),
        },
    );
    problems
}

/// A plugin's config JSON with every `${env.NAME}` in its strings expanded (granted
/// variables only); the text is returned unchanged when it holds no reference. The first
/// problem found is the error, naming its field.
pub fn expand_config(
    config_json: &str,
    granted: &[String],
    owner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SecretError> {
    if !config_json.contains(OPEN) {
        return Ok(config_json.to_string());
    }
    let Ok(mut config) = serde_json::from_str::<serde_json::Value>(config_json) else {
        // Not JSON: the plugin's own config check says what is wrong with it.
        return Ok(config_json.to_string());
    };
    let mut first_error = None;
    walk_mut(&mut config, String::new(), &mut |field, text| {
        if first_error.is_some() || !text.contains(OPEN) {
            return;
        }
        match expand_text(text, granted, owner, lookup) {
            Ok(expanded) => *text = expanded,
            Err(reason) => {
                first_error = Some(SecretError {
                    field: field.to_string(),
                    reason,
                })
            }
        }
    });
    match first_error {
        Some(e) => Err(e),
        None => Ok(config.to_string()),
    }
}

/// The values of the variables `config_json` references that are granted and set: the
/// secrets to cut from what the plugin says about its config.
pub fn referenced_values(
    config_json: &str,
    granted: &[String],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut values = Vec::new();
    let mut rest = config_json;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if granted.iter().any(|g| g == name) {
            values.extend(lookup(name));
        }
        rest = &after[end + 1..];
    }
    values
}

/// The field path of a child: `a.b` for an object key, `a[2]` for an array index.
fn child(field: &str, key: &str) -> String {
    if field.is_empty() {
        key.to_string()
    } else {
        format!("{field}.{key}")
    }
}

fn walk(value: &serde_json::Value, field: String, visit: &mut dyn FnMut(&str, &str)) {
    match value {
        serde_json::Value::String(s) => visit(&field, s),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, format!("{field}[{i}]"), visit);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                walk(v, child(&field, k), visit);
            }
        }
        _ => {}
    }
}

fn walk_mut(
    value: &mut serde_json::Value,
    field: String,
    visit: &mut dyn FnMut(&str, &mut String),
) {
    match value {
        serde_json::Value::String(s) => visit(&field, s),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk_mut(item, format!("{field}[{i}]"), visit);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                walk_mut(v, child(&field, k), visit);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "CRM_TOKEN").then(|| "s3cret-value".to_string())
    }

    fn granted(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn granted_references_expand_at_any_depth() {
        let config = r#"{"url":"http://x","headers":{"Authorization":"Bearer ${env.CRM_TOKEN}"},"list":["${env.CRM_TOKEN}-${env.CRM_TOKEN}"]}"#;
        let out = expand_config(config, &granted(&["CRM_TOKEN"]), "plugin webhook", &env).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["headers"]["Authorization"], "Bearer s3cret-value");
        assert_eq!(v["list"][0], "s3cret-value-s3cret-value");
        assert!(!out.contains("${"), "{out}");
    }

    #[test]
    fn a_config_without_references_is_passed_unchanged() {
        let config = r#"{"b": 1,  "a": "x"}"#;
        assert_eq!(
            expand_config(config, &[], "plugin p", &env).unwrap(),
            config
        );
    }

    #[test]
    fn problems_name_the_field_and_the_variable() {
        let config = r#"{"headers":{"Authorization":"Bearer ${env.CRM_TOKEN}"}}"#;
        let e = expand_config(config, &[], "plugin webhook", &env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "headers.Authorization: variable CRM_TOKEN is not granted to plugin webhook (add it to grants.env)"
        );
        let e = expand_config(
            r#"{"tags":["${env.OTHER}"]}"#,
            &granted(&["OTHER"]),
            "plugin webhook",
            &env,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tags[0]: environment variable OTHER is not set"),
            "{e}"
        );
        let e = expand_config(r#"{"a":"${env.OPEN"}"#, &[], "plugin p", &env).unwrap_err();
        assert_eq!(e.reason, SecretReason::Unterminated);
    }

    #[test]
    fn the_lenient_list_stops_at_an_unclosed_reference() {
        let text = "a ${env.A} b ${env.B}${env.C";
        assert_eq!(super::super::env_references(text), ["A", "B"]);
        assert_eq!(references(text), Err(SecretReason::Unterminated));
    }

    #[test]
    fn ungranted_lists_every_reference_not_granted() {
        let config: serde_json::Value = serde_json::json!({
            "a": "${env.CRM_TOKEN}", "b": {"c": "x ${env.NOPE} ${env.CRM_TOKEN}"}
        });
        let problems = ungranted(&config, &granted(&["CRM_TOKEN"]), "plugin p");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "b.c");
        assert!(ungranted(&config, &granted(&["CRM_TOKEN", "NOPE"]), "plugin p").is_empty());
    }

    #[test]
    fn referenced_values_are_the_granted_and_set_ones() {
        let config = r#"{"a":"${env.CRM_TOKEN}","b":"${env.NOPE}"}"#;
        assert_eq!(
            referenced_values(config, &granted(&["CRM_TOKEN", "NOPE"]), &env),
            vec!["s3cret-value".to_string()]
        );
        assert!(referenced_values(config, &[], &env).is_empty());
    }
}
