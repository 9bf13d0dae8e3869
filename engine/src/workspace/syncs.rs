//! The syncs step of loading: each `[syncs.NAME]` (or `syncs/NAME.toml`) checked against the
//! models and destinations already loaded, its values against their bounds, its quality
//! checks and its schedule parsed.

use super::connectors::connector;
use super::definitions::{Check, Connector, Model, Origin, SyncConfig};
use super::errors::{unknown, ConfigError};
use super::field_rules::{self, FieldRules};
use super::schema::{
    CheckFile, ConnectorFile, SyncFile, MAX_BATCH_SIZE, MAX_TIME_BUDGET_S, MIN_RATE,
};
use crate::domain::{RateLimit, Severity, SyncMode};
use crate::schedule::{Schedule, ScheduleError};
use std::collections::BTreeMap;
use std::path::Path;

/// The syncs, by name; a name defined twice is an error naming the other file.
pub(super) fn syncs(
    root: &Path,
    definitions: Vec<(String, SyncFile, Origin)>,
    models: &BTreeMap<String, Model>,
    destinations: &BTreeMap<String, Connector>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, SyncConfig> {
    let mut syncs = BTreeMap::new();
    for (name, s, origin) in definitions {
        if let Some(prev) = syncs.get(&name).map(|s: &SyncConfig| s.origin.clone()) {
            errors.push(origin.error(
                "",
                format!("sync {name:?} is also defined in {}", prev.file.display()),
            ));
            continue;
        }
        let sync = sync(root, name.clone(), s, origin, models, destinations, errors);
        syncs.insert(name, sync);
    }
    syncs
}

/// One sync, with its problems added to `errors` (what is wrong falls back to a default,
/// so later checks still run and report theirs).
fn sync(
    root: &Path,
    name: String,
    s: SyncFile,
    origin: Origin,
    models: &BTreeMap<String, Model>,
    destinations: &BTreeMap<String, Connector>,
    errors: &mut Vec<ConfigError>,
) -> SyncConfig {
    if !models.contains_key(&s.model) {
        errors.push(origin.error("model", unknown("model", &s.model, models.keys())));
    }
    if !destinations.contains_key(&s.destination) {
        errors.push(origin.error(
            "destination",
            unknown("destination", &s.destination, destinations.keys()),
        ));
    }
    let mode = match s.mode.as_deref() {
        None => SyncMode::Upsert,
        Some(m) => SyncMode::parse(m).unwrap_or_else(|| {
            errors.push(origin.error(
                "mode",
                format!("unknown mode {m:?}; use upsert, update, insert, mirror or append"),
            ));
            SyncMode::Upsert
        }),
    };
    let (mapping, field_rules) = mapping(&s, mode, models.get(&s.model), &origin, errors);
    let rate_limit = check_delivery_bounds(&s, &origin, errors);
    let checks = checks(root, s.checks, &origin, errors);
    let schedule = schedule(
        s.schedule.as_deref(),
        s.timezone.as_deref(),
        &origin,
        errors,
    );
    SyncConfig {
        name,
        model: s.model,
        destination: s.destination,
        mode,
        mapping,
        field_rules,
        batch_size: s.batch_size,
        event_id_field: s.event_id_field.unwrap_or_else(|| "event_id".into()),
        checks,
        rate_limit,
        time_budget_s: s.time_budget_s,
        max_in_flight: s.max_in_flight.unwrap_or(1).clamp(1, 64),
        description: s.description,
        schedule,
        after: s.after,
        catch_up: s.catch_up.unwrap_or(true),
        origin,
    }
}

/// The mapping (model column → destination field) and its field rules. Every mapped
/// destination field is named, and named once; rules that cannot apply to the mode or the
/// primary key are errors naming the key.
fn mapping(
    s: &SyncFile,
    mode: SyncMode,
    model: Option<&Model>,
    origin: &Origin,
    errors: &mut Vec<ConfigError>,
) -> (Vec<(String, String)>, FieldRules) {
    let mut seen_fields = std::collections::HashSet::new();
    let mut mapping = Vec::new();
    let mut problems = Vec::new();
    let mut rules = FieldRules {
        update: field_rules::update_rule(s.update.as_deref(), &mut problems),
        ..Default::default()
    };
    for (column, value) in &s.mapping {
        let (field, rule) = field_rules::mapping_entry(column, value, &mut problems);
        if field.trim().is_empty() {
            if matches!(value, toml::Value::String(_)) {
                errors.push(origin.error(
                    &format!("mapping.{column}"),
                    "destination field name is empty",
                ));
            } else if value.get("to").is_some() {
                errors.push(origin.error(
                    &format!("mapping.{column}.to"),
                    "destination field name is empty",
                ));
            }
        } else if !seen_fields.insert(field.clone()) {
            errors.push(origin.error(
                &format!("mapping.{column}"),
                format!("destination field {field:?} is mapped twice"),
            ));
        }
        if let Some(rule) = rule {
            rules.fields.insert(field.clone(), rule);
        }
        mapping.push((column.clone(), field));
    }
    let primary_key = model.map(|m| m.primary_key.as_slice()).unwrap_or_default();
    field_rules::check_rules(&rules, mode, primary_key, &mut problems);
    errors.extend(
        problems
            .iter()
            .map(|(key, message)| origin.error(key, message.clone())),
    );
    (mapping, rules)
}

/// `batch_size`, `rate_limit`, `max_in_flight` and `time_budget_s` within their bounds;
/// returns the rate limit (none set: unlimited).
fn check_delivery_bounds(
    s: &SyncFile,
    origin: &Origin,
    errors: &mut Vec<ConfigError>,
) -> RateLimit {
    if s.batch_size == Some(0) {
        errors.push(origin.error("batch_size", "must be at least 1"));
    } else if s.batch_size.is_some_and(|b| b > MAX_BATCH_SIZE) {
        errors.push(origin.error("batch_size", format!("must be at most {MAX_BATCH_SIZE}")));
    }
    let rate_limit = s.rate_limit.unwrap_or_default();
    for (field, value) in [
        ("requests_per_second", rate_limit.requests_per_second),
        ("rows_per_second", rate_limit.rows_per_second),
    ] {
        if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
            errors.push(origin.error(&format!("rate_limit.{field}"), "must be a positive number"));
        } else if value.is_some_and(|v| v < MIN_RATE) {
            errors.push(origin.error(
                &format!("rate_limit.{field}"),
                format!("must be at least {MIN_RATE} (one per {} s)", 1.0 / MIN_RATE),
            ));
        }
    }
    if s.max_in_flight.is_some_and(|n| n == 0 || n > 64) {
        errors.push(origin.error("max_in_flight", "must be between 1 and 64"));
    }
    if s.time_budget_s == Some(0) {
        errors.push(origin.error("time_budget_s", "must be at least 1"));
    } else if s.time_budget_s.is_some_and(|t| t > MAX_TIME_BUDGET_S) {
        errors.push(origin.error(
            "time_budget_s",
            format!("must be at most {MAX_TIME_BUDGET_S} (30 days)"),
        ));
    }
    rate_limit
}

/// The sync's quality checks, each a connector whose origin is `syncs.NAME.checks[i]`.
fn checks(
    root: &Path,
    files: Vec<CheckFile>,
    origin: &Origin,
    errors: &mut Vec<ConfigError>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for (i, c) in files.into_iter().enumerate() {
        let check_origin = Origin {
            file: origin.file.clone(),
            key: origin.key(&format!("checks[{i}]")),
        };
        let severity = match c.severity.as_deref() {
            None | Some("fail") => Severity::Fail,
            Some("warn") => Severity::Warn,
            Some(other) => {
                errors.push(check_origin.error(
                    "severity",
                    format!("unknown severity {other:?}; use fail or warn"),
                ));
                Severity::Fail
            }
        };
        let default_name = match c
            .config
            .as_ref()
            .and_then(|t| t.get("check"))
            .and_then(|v| v.as_str())
        {
            Some(kind) => format!("{}:{kind}", c.plugin),
            None => c.plugin.clone(),
        };
        let name = c.name.clone().unwrap_or(default_name);
        let file = ConnectorFile {
            plugin: c.plugin,
            config: c.config,
            grants: c.grants,
            limits: c.limits,
            staging: false,
        };
        match connector(root, &name, file, check_origin) {
            Ok(connector) => checks.push(Check {
                name,
                severity,
                connector,
            }),
            Err(mut e) => errors.append(&mut e),
        }
    }
    checks
}

/// The sync's schedule, read in `timezone`; a time zone without a schedule is an error.
fn schedule(
    pattern: Option<&str>,
    timezone: Option<&str>,
    origin: &Origin,
    errors: &mut Vec<ConfigError>,
) -> Option<Schedule> {
    let Some(pattern) = pattern else {
        if timezone.is_some() {
            errors.push(origin.error("timezone", "applies to a schedule, and this sync has none"));
        }
        return None;
    };
    match Schedule::parse(pattern, timezone) {
        Ok(schedule) => Some(schedule),
        Err(e @ ScheduleError::TimeZone(_)) => {
            errors.push(origin.error("timezone", e.to_string()));
            None
        }
        Err(e) => {
            errors.push(origin.error("schedule", e.to_string()));
            None
        }
    }
}
