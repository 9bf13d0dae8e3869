//! Field-level write rules (issue 36): what a mapping entry written as a table says about
//! its field (`email = { to = "email", null = "skip" }`, `lead_source = { to = "source",
//! write = "on_insert" }`), and a sync's `update = "changed_fields"`. Parsed and checked
//! against the sync's mode and primary key here, at load; what they mean for a payload is
//! `sync::field_rules`'s. A mapping entry written as a plain string keeps every default:
//! the field is sent on every insert and update, a null as null.
//!
//! Problems are returned as (key inside the sync, message) pairs; the sync's loader turns
//! them into errors naming the file and the whole key.

use crate::domain::SyncMode;
use serde::Serialize;
use std::collections::BTreeMap;

/// What a null value of a field does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NullRule {
    /// Sent as null (the default).
    #[default]
    Send,
    /// Left out of the payload (absent, not null): the destination keeps what it has.
    Skip,
}

/// When a field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteRule {
    /// On every insert and update (the default).
    #[default]
    Always,
    /// When the record is created (a row added to the sync), never on later updates.
    OnInsert,
    /// Only when the destination's field is empty: needs a destination that can read back
    /// (contract 0.3.0 `writer.read`).
    IfEmpty,
}

/// What an update carries (`update` of a sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateRule {
    /// Every mapped field (the default).
    #[default]
    AllFields,
    /// The key and the fields whose value changed since the last delivery.
    ChangedFields,
}

/// The rules of one mapped field, from a mapping entry written as a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldRule {
    /// The model column.
    pub column: String,
    /// The destination field (`to`).
    pub to: String,
    /// What a null does (`null`).
    pub null: NullRule,
    /// When the field is written (`write`).
    pub write: WriteRule,
}

impl FieldRule {
    /// Whether the rule can leave the field out of a payload (so the destination must honour
    /// absent fields, `field-presence`).
    pub fn leaves_fields_out(&self) -> bool {
        self.null == NullRule::Skip || self.write != WriteRule::Always
    }
}

/// A sync's field rules: the rules of each field whose mapping entry is a table (by
/// destination field), and what an update carries.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct FieldRules {
    /// Destination field → its rule; fields mapped by a plain string are not here.
    pub fields: BTreeMap<String, FieldRule>,
    /// `update`: what an update carries.
    pub update: UpdateRule,
}

impl FieldRules {
    /// No rule differs from the defaults: every payload is the whole mapped row.
    pub fn is_default(&self) -> bool {
        self.update == UpdateRule::AllFields
            && self
                .fields
                .values()
                .all(|r| r.null == NullRule::Send && r.write == WriteRule::Always)
    }

    /// Whether some payload may leave a field out (the destination must then declare
    /// `field-presence`).
    pub fn leaves_fields_out(&self) -> bool {
        self.update == UpdateRule::ChangedFields
            || self.fields.values().any(FieldRule::leaves_fields_out)
    }

    /// The rule of a destination field (the defaults when it has none).
    pub fn rule(&self, field: &str) -> (NullRule, WriteRule) {
        self.fields
            .get(field)
            .map(|r| (r.null, r.write))
            .unwrap_or_default()
    }

    /// The fields written only if empty, with the key naming each (`mapping.COL.write`).
    pub fn if_empty_fields(&self) -> impl Iterator<Item = &FieldRule> {
        self.fields
            .values()
            .filter(|r| r.write == WriteRule::IfEmpty)
    }
}

/// A problem with a rule: the key inside the sync (`mapping.COL.write`), and the message.
pub(super) type Problem = (String, String);

/// One mapping entry as written: `COL = "field"` or `COL = { to = "field", null = …,
/// write = … }`. Returns the destination field and, for a table, its rule; errors name
/// `mapping.COL` (or `mapping.COL.KEY`).
pub(super) fn mapping_entry(
    column: &str,
    value: &toml::Value,
    errors: &mut Vec<Problem>,
) -> (String, Option<FieldRule>) {
    let key = |k: &str| {
        if k.is_empty() {
            format!("mapping.{column}")
        } else {
            format!("mapping.{column}.{k}")
        }
    };
    let table = match value {
        toml::Value::String(s) => return (s.clone(), None),
        toml::Value::Table(t) => t,
        other => {
            errors.push(problem(
                &key(""),
                format!(
                    "expected a destination field name or a table {{ to = \"field\", null = \"skip\", write = \"on_insert\" }}, found {}",
                    other.type_str()
                ),
            ));
            return (String::new(), None);
        }
    };
    let mut rule = FieldRule {
        column: column.to_string(),
        to: String::new(),
        null: NullRule::Send,
        write: WriteRule::Always,
    };
    let mut has_to = false;
    for (k, v) in table {
        let text = match v.as_str() {
            Some(t) => t,
            None if ["to", "null", "write"].contains(&k.as_str()) => {
                errors.push(problem(
                    &key(k),
                    format!("expected a string, found {}", v.type_str()),
                ));
                continue;
            }
            None => "",
        };
        match k.as_str() {
            "to" => {
                rule.to = text.to_string();
                has_to = true;
            }
            "null" => match text {
                "send" => rule.null = NullRule::Send,
                "skip" => rule.null = NullRule::Skip,
                other => errors.push(problem(
                    &key(k),
                    format!("unknown null rule {other:?}; use send (the default) or skip"),
                )),
            },
            "write" => match text {
                "always" => rule.write = WriteRule::Always,
                "on_insert" => rule.write = WriteRule::OnInsert,
                "if_empty" => rule.write = WriteRule::IfEmpty,
                other => errors.push(problem(
                    &key(k),
                    format!(
                        "unknown write rule {other:?}; use always (the default), on_insert or if_empty"
                    ),
                )),
            },
            other => errors.push(problem(
                &key(other),
                "unknown key; a mapping entry may have to, null and write",
            )),
        }
    }
    if !has_to {
        errors.push(problem(&key("to"), "missing: the destination field name"));
    }
    (rule.to.clone(), Some(rule))
}

/// A problem at `key` (inside the sync).
fn problem(key: &str, message: impl Into<String>) -> Problem {
    (key.to_string(), message.into())
}

/// The sync's `update` value (default `all_fields`).
pub(super) fn update_rule(value: Option<&str>, errors: &mut Vec<Problem>) -> UpdateRule {
    match value {
        None | Some("all_fields") => UpdateRule::AllFields,
        Some("changed_fields") => UpdateRule::ChangedFields,
        Some(other) => {
            errors.push(problem(
                "update",
                format!(
                    "unknown update rule {other:?}; use all_fields (the default) or changed_fields"
                ),
            ));
            UpdateRule::AllFields
        }
    }
}

/// Rules that cannot apply to the sync's mode or its primary key: errors naming the key.
/// `on_insert` and `if_empty` mean nothing where every row sent is new (`insert`, `append`)
/// and `on_insert` never applies where nothing is created (`update`); a primary key field is
/// always sent, whole; `changed_fields` needs updates.
pub(super) fn check_rules(
    rules: &FieldRules,
    mode: SyncMode,
    primary_key: &[String],
    errors: &mut Vec<Problem>,
) {
    for rule in rules.fields.values() {
        let key = |k: &str| format!("mapping.{}.{k}", rule.column);
        let is_key = primary_key.contains(&rule.column);
        if is_key && rule.write != WriteRule::Always {
            errors.push(problem(
                &key("write"),
                "a primary key field is sent with every row; it takes no write rule",
            ));
        }
        if is_key && rule.null == NullRule::Skip {
            errors.push(problem(
                &key("null"),
                "a primary key field is never null (rows with a null key are refused)",
            ));
        }
        match (rule.write, mode) {
            (WriteRule::OnInsert | WriteRule::IfEmpty, SyncMode::Insert | SyncMode::Append) => {
                errors.push(problem(
                    &key("write"),
                    format!(
                        "mode {} only creates records, so every field is written once; remove the write rule",
                        mode.as_str()
                    ),
                ))
            }
            (WriteRule::OnInsert, SyncMode::Update) => errors.push(problem(
                &key("write"),
                "mode update never creates a record, so an on_insert field would never be sent",
            )),
            _ => {}
        }
    }
    if rules.update == UpdateRule::ChangedFields
        && matches!(mode, SyncMode::Insert | SyncMode::Append)
    {
        errors.push(problem(
            "update",
            format!(
                "mode {} sends no updates; changed_fields applies to upsert, update and mirror",
                mode.as_str()
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> (String, Option<FieldRule>, Vec<String>) {
        let value: toml::Table = toml::from_str(&format!("v = {text}")).unwrap();
        let mut errors = Vec::new();
        let (to, rule) = mapping_entry("email", &value["v"], &mut errors);
        let errors = errors.iter().map(|(k, m)| format!("syncs.crm.{k}: {m}"));
        (to, rule, errors.collect())
    }

    #[test]
    fn a_string_or_a_table_maps_a_field() {
        assert_eq!(entry("\"Email\""), ("Email".into(), None, vec![]));
        let (to, rule, errors) =
            entry("{ to = \"Email\", null = \"skip\", write = \"on_insert\" }");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(to, "Email");
        let rule = rule.unwrap();
        assert_eq!(
            (rule.null, rule.write),
            (NullRule::Skip, WriteRule::OnInsert)
        );
        assert_eq!(rule.column, "email");
        let (_, rule, _) = entry("{ to = \"Email\", write = \"if_empty\" }");
        assert_eq!(rule.unwrap().write, WriteRule::IfEmpty);
    }

    #[test]
    fn bad_entries_name_their_key() {
        let (_, _, errors) = entry("{ to = \"Email\", null = \"drop\" }");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].contains("syncs.crm.mapping.email.null: unknown null rule \"drop\""),
            "{errors:?}"
        );
        let (_, _, errors) = entry("{ to = \"Email\", wirte = \"on_insert\" }");
        assert!(
            errors[0].contains("syncs.crm.mapping.email.wirte: unknown key"),
            "{errors:?}"
        );
        let (_, _, errors) = entry("{ null = \"skip\" }");
        assert!(
            errors[0].contains("syncs.crm.mapping.email.to: missing"),
            "{errors:?}"
        );
        let (_, _, errors) = entry("{ to = \"Email\", write = \"sometimes\" }");
        assert!(
            errors[0].contains("syncs.crm.mapping.email.write: unknown write rule"),
            "{errors:?}"
        );
        let (_, _, errors) = entry("3");
        assert!(
            errors[0].contains("syncs.crm.mapping.email: expected"),
            "{errors:?}"
        );
    }

    fn rules(write: WriteRule, null: NullRule, column: &str, update: UpdateRule) -> FieldRules {
        let mut fields = BTreeMap::new();
        fields.insert(
            column.to_string(),
            FieldRule {
                column: column.into(),
                to: column.into(),
                null,
                write,
            },
        );
        FieldRules { fields, update }
    }

    fn check(rules: &FieldRules, mode: SyncMode) -> Vec<String> {
        let mut errors = Vec::new();
        check_rules(rules, mode, &["id".to_string()], &mut errors);
        errors
            .iter()
            .map(|(k, _)| format!("syncs.crm.{k}"))
            .collect()
    }

    #[test]
    fn rules_that_cannot_apply_to_the_mode_or_the_key_are_refused() {
        let on_insert = rules(
            WriteRule::OnInsert,
            NullRule::Send,
            "src",
            UpdateRule::AllFields,
        );
        assert!(check(&on_insert, SyncMode::Upsert).is_empty());
        assert!(check(&on_insert, SyncMode::Mirror).is_empty());
        for mode in [SyncMode::Insert, SyncMode::Append, SyncMode::Update] {
            assert_eq!(
                check(&on_insert, mode),
                ["syncs.crm.mapping.src.write"],
                "{mode:?}"
            );
        }
        let key_rule = rules(
            WriteRule::OnInsert,
            NullRule::Skip,
            "id",
            UpdateRule::AllFields,
        );
        assert_eq!(
            check(&key_rule, SyncMode::Upsert),
            ["syncs.crm.mapping.id.write", "syncs.crm.mapping.id.null"]
        );
        let changed = rules(
            WriteRule::Always,
            NullRule::Skip,
            "a",
            UpdateRule::ChangedFields,
        );
        assert!(check(&changed, SyncMode::Update).is_empty());
        assert_eq!(check(&changed, SyncMode::Append), ["syncs.crm.update"]);
        assert!(changed.leaves_fields_out() && !changed.is_default());
        let plain = rules(
            WriteRule::Always,
            NullRule::Send,
            "a",
            UpdateRule::AllFields,
        );
        assert!(plain.is_default() && !plain.leaves_fields_out());
    }
}
