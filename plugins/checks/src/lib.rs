//! `checks`: the built-in data-quality checks. One plugin, one check per configured instance,
//! chosen by `check`:
//!
//! | check | fails when |
//! |---|---|
//! | `not_null` (`columns`) | a row to be sent has NULL in one of the columns |
//! | `unique` (`columns`) | two model rows share the values of the columns |
//! | `accepted_values` (`column`, `values`, `allow_null`) | a row to be sent has another value |
//! | `regex` (`column`, `pattern`, `allow_null`) | a text value to be sent does not match |
//! | `range` (`column`, `min`, `max`) | a value to be sent is outside [min, max] |
//! | `max_changes` (`change`, `max_rows`, `max_percent`) | the run would send more rows of a change than allowed (percent of the snapshot) |
//! | `min_model_rows` (`min`) | the model has fewer rows (empty-model guard) |
//! | `freshness` (`column`, `max_age`) | the newest value in the model is older than `max_age` (`90s`, `30m`, `24h`, `7d`) |
//!
//! Row checks judge the rows a run would send (added and changed); `unique` and `freshness`
//! judge the whole model. Columns are the sync's destination fields (after mapping).

use backflow_plugin_sdk::codec::{raw_is_null, raw_str};
use backflow_plugin_sdk::*;
use serde::Deserialize;
use std::collections::HashSet;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "checks",
  "type": "object",
  "required": ["check"],
  "properties": {
    "check": { "enum": ["not_null", "unique", "accepted_values", "regex", "range", "max_changes", "min_model_rows", "freshness"] },
    "columns": { "type": "array", "items": { "type": "string" } },
    "column": { "type": "string" },
    "values": { "type": "array" },
    "allow_null": { "type": "boolean", "default": true },
    "pattern": { "type": "string" },
    "min": {}, "max": {},
    "change": { "enum": ["added", "changed", "removed", "total"] },
    "max_rows": { "type": "integer", "minimum": 0 },
    "max_percent": { "type": "number", "minimum": 0 },
    "max_age": { "type": "string", "description": "e.g. 90s, 30m, 24h, 7d" }
  }
}"#;

const MAX_SAMPLES: usize = 5;

#[derive(Deserialize, Debug)]
#[serde(tag = "check", rename_all = "snake_case", deny_unknown_fields)]
enum Config {
    NotNull {
        columns: Vec<String>,
    },
    Unique {
        columns: Vec<String>,
    },
    AcceptedValues {
        column: String,
        values: Vec<serde_json::Value>,
        #[serde(default = "yes")]
        allow_null: bool,
    },
    Regex {
        column: String,
        pattern: String,
        #[serde(default = "yes")]
        allow_null: bool,
    },
    Range {
        column: String,
        #[serde(default)]
        min: Option<serde_json::Value>,
        #[serde(default)]
        max: Option<serde_json::Value>,
    },
    MaxChanges {
        change: String,
        #[serde(default)]
        max_rows: Option<u64>,
        #[serde(default)]
        max_percent: Option<f64>,
    },
    MinModelRows {
        min: u64,
    },
    Freshness {
        column: String,
        max_age: String,
    },
}

impl Config {
    /// The rule's name, as written in `check = "…"`.
    fn name(&self) -> &'static str {
        match self {
            Config::NotNull { .. } => "not_null",
            Config::Unique { .. } => "unique",
            Config::AcceptedValues { .. } => "accepted_values",
            Config::Regex { .. } => "regex",
            Config::Range { .. } => "range",
            Config::MaxChanges { .. } => "max_changes",
            Config::MinModelRows { .. } => "min_model_rows",
            Config::Freshness { .. } => "freshness",
        }
    }

    /// Whether the rule judges the model as a whole (its size, its newest row) rather than
    /// the rows a plan sends: such a rule does not apply to an undo, which reads no model.
    fn judges_the_whole_model(&self) -> bool {
        matches!(self, Config::MinModelRows { .. } | Config::Freshness { .. })
    }
}

fn yes() -> bool {
    true
}

/// Parses `90s`, `30m`, `24h`, `7d` into milliseconds.
fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    Some(
        n * match unit.trim() {
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        },
    )
}

fn parse(config: &str) -> Result<Config, Vec<ConfigError>> {
    let cfg: Config = parse_config(config).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    match &cfg {
        Config::NotNull { columns } | Config::Unique { columns } if columns.is_empty() => {
            errors.push(ConfigError::new("columns", "name at least one column"))
        }
        Config::Regex { pattern, .. } => {
            if let Err(e) = regex::Regex::new(pattern) {
                errors.push(ConfigError::new(
                    "pattern",
                    format!("invalid regular expression: {e}"),
                ));
            }
        }
        Config::Range {
            min: None,
            max: None,
            ..
        } => errors.push(ConfigError::new("min", "set min, max or both")),
        Config::MaxChanges {
            change,
            max_rows,
            max_percent,
        } => {
            if !["added", "changed", "removed", "total"].contains(&change.as_str()) {
                errors.push(ConfigError::new(
                    "change",
                    format!("{change:?} is not added, changed, removed or total"),
                ));
            }
            if max_rows.is_none() && max_percent.is_none() {
                errors.push(ConfigError::new(
                    "max_rows",
                    "set max_rows, max_percent or both",
                ));
            }
        }
        Config::Freshness { max_age, .. } if parse_duration(max_age).is_none() => {
            errors.push(ConfigError::new(
                "max_age",
                format!("{max_age:?} is not a duration like 90s, 30m, 24h or 7d"),
            ))
        }
        _ => {}
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

struct Checks;

impl QualityCheckPlugin for Checks {
    type Checker = Judge;

    fn spec() -> PluginSpec {
        PluginSpec {
            name: "checks".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::QualityCheck,
            description: "Built-in data-quality checks: not_null, unique, accepted_values, regex, range, max_changes, min_model_rows, freshness.".into(),
            config_schema: SCHEMA.into(),
            operations: vec![],
            max_batch_size: 0,
            default_rate_limit: None,
        }
    }

    fn check_config(config: &str) -> Vec<ConfigError> {
        parse(config).err().unwrap_or_default()
    }

    fn open(config: &str, plan: PlanSummary) -> Result<Judge, PluginError> {
        let cfg = parse(config).map_err(|mut e| PluginError::BadConfig(e.remove(0)))?;
        let find = |name: &str, field: &str| -> Result<usize, PluginError> {
            plan.columns
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| {
                    let names: Vec<&str> = plan.columns.iter().map(|c| c.name.as_str()).collect();
                    PluginError::bad_config(
                        field,
                        format!(
                            "sync {} sends no field {name:?} (fields: {})",
                            plan.sync_name,
                            names.join(", ")
                        ),
                    )
                })
        };
        let columns: Vec<usize> = match &cfg {
            Config::NotNull { columns } | Config::Unique { columns } => columns
                .iter()
                .map(|c| find(c, "columns"))
                .collect::<Result<_, _>>()?,
            Config::AcceptedValues { column, .. }
            | Config::Regex { column, .. }
            | Config::Range { column, .. }
            | Config::Freshness { column, .. } => vec![find(column, "column")?],
            _ => vec![],
        };
        let regex = match &cfg {
            Config::Regex { pattern, .. } => Some(
                regex::Regex::new(pattern)
                    .map_err(|e| PluginError::bad_config("pattern", e.to_string()))?,
            ),
            _ => None,
        };
        Ok(Judge {
            cfg,
            plan,
            columns,
            regex,
            offending: 0,
            samples: Vec::new(),
            seen: HashSet::new(),
            newest: None,
            rows: 0,
        })
    }
}

struct Judge {
    cfg: Config,
    plan: PlanSummary,
    columns: Vec<usize>,
    regex: Option<regex::Regex>,
    offending: u64,
    samples: Vec<String>,
    /// `unique`: 128-bit hashes of the value combinations seen so far (a collision among a
    /// billion rows has a probability around 1e-21).
    seen: HashSet<u128>,
    /// `freshness`: the newest timestamp seen (microseconds).
    newest: Option<i64>,
    rows: u64,
}

fn row_json(batch: &Batch, index: usize) -> String {
    match batch.rows().nth(index) {
        Some(Ok(values)) => serde_json::Value::Object(
            batch
                .columns
                .iter()
                .zip(values)
                .map(|(c, v)| (c.name.clone(), v.to_json()))
                .collect(),
        )
        .to_string(),
        _ => format!("row {index}"),
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Decimal(d) => d.parse().ok(),
        _ => None,
    }
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Judge {
    fn offend(&mut self, batch: &Batch, index: usize) {
        self.offending += 1;
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(row_json(batch, index));
        }
    }

    fn column(&self, batch: &Batch, i: usize) -> Result<Vec<Value>, PluginError> {
        batch
            .column_values(self.columns[i])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PluginError::fatal(format!("undecodable batch: {e}")))
    }

    /// The encoded values of a column, undecoded.
    fn raw<'b>(&self, batch: &'b Batch, i: usize) -> Result<Vec<&'b [u8]>, PluginError> {
        batch
            .raw_column(self.columns[i])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PluginError::fatal(format!("undecodable batch: {e}")))
    }

    /// Checks that judge each row to be sent.
    fn judge_rows(&mut self, batch: &Batch) -> Result<(), PluginError> {
        match &self.cfg {
            Config::NotNull { .. } => {
                let mut bad = vec![false; batch.row_count as usize];
                for i in 0..self.columns.len() {
                    for (r, v) in self.raw(batch, i)?.into_iter().enumerate() {
                        bad[r] |= raw_is_null(v);
                    }
                }
                for (r, b) in bad.into_iter().enumerate() {
                    if b {
                        self.offend(batch, r);
                    }
                }
            }
            Config::AcceptedValues {
                values, allow_null, ..
            } => {
                let accepted: HashSet<String> = values.iter().map(json_text).collect();
                let allow_null = *allow_null;
                let mut bad = Vec::new();
                for (r, raw) in self.raw(batch, 0)?.into_iter().enumerate() {
                    let ok = if raw_is_null(raw) {
                        allow_null
                    } else if let Some(text) = raw_str(raw) {
                        accepted.contains(text)
                    } else {
                        let mut rest = raw;
                        codec::read_value(&mut rest)
                            .is_ok_and(|v| accepted.contains(&v.to_string()))
                    };
                    if !ok {
                        bad.push(r);
                    }
                }
                for r in bad {
                    self.offend(batch, r);
                }
            }
            Config::Regex { allow_null, .. } => {
                let allow_null = *allow_null;
                let regex = self.regex.take().expect("compiled at open");
                let mut bad = Vec::new();
                for (r, raw) in self.raw(batch, 0)?.into_iter().enumerate() {
                    let ok = if raw_is_null(raw) {
                        allow_null
                    } else if let Some(text) = raw_str(raw) {
                        regex.is_match(text)
                    } else {
                        let mut rest = raw;
                        codec::read_value(&mut rest).is_ok_and(|v| regex.is_match(&v.to_string()))
                    };
                    if !ok {
                        bad.push(r);
                    }
                }
                self.regex = Some(regex);
                for r in bad {
                    self.offend(batch, r);
                }
            }
            Config::Range { min, max, .. } => {
                let (min, max) = (min.clone(), max.clone());
                for (r, v) in self.column(batch, 0)?.iter().enumerate() {
                    if v.is_null() {
                        continue;
                    }
                    let below = |bound: &serde_json::Value| match (bound.as_f64(), as_number(v)) {
                        (Some(b), Some(x)) => x < b,
                        (Some(_), None) => true,
                        (None, _) => v.to_string() < json_text(bound),
                    };
                    let above = |bound: &serde_json::Value| match (bound.as_f64(), as_number(v)) {
                        (Some(b), Some(x)) => x > b,
                        (Some(_), None) => true,
                        (None, _) => v.to_string() > json_text(bound),
                    };
                    if min.as_ref().is_some_and(below) || max.as_ref().is_some_and(above) {
                        self.offend(batch, r);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks that judge the whole model.
    fn judge_model(&mut self, batch: &Batch) -> Result<(), PluginError> {
        match &self.cfg {
            Config::Unique { .. } => {
                let columns: Vec<Vec<&[u8]>> = (0..self.columns.len())
                    .map(|i| self.raw(batch, i))
                    .collect::<Result<_, _>>()?;
                let mut bad = Vec::new();
                for r in 0..batch.row_count as usize {
                    let mut h = xxhash_rust::xxh3::Xxh3::new();
                    let mut any_null = false;
                    for col in &columns {
                        any_null |= raw_is_null(col[r]);
                        h.update(col[r]);
                    }
                    // NULLs are not equal to each other (as in SQL).
                    if !any_null && !self.seen.insert(h.digest128()) {
                        bad.push(r);
                    }
                }
                for r in bad {
                    self.offend(batch, r);
                }
            }
            Config::Freshness { .. } => {
                for v in self.column(batch, 0)? {
                    let t = match v {
                        Value::Timestamp(us) => Some(us),
                        Value::Date(d) => Some(i64::from(d) * 86_400_000_000),
                        Value::Text(t) => value::parse_timestamp(&t),
                        _ => None,
                    };
                    if let Some(t) = t {
                        self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Checker for Judge {
    fn observe(
        &mut self,
        change: ChangeKind,
        after: Batch,
        _before: Option<Batch>,
    ) -> Result<(), PluginError> {
        self.rows += u64::from(after.row_count);
        match change {
            ChangeKind::Added | ChangeKind::Changed => {
                self.judge_rows(&after)?;
                self.judge_model(&after)
            }
            ChangeKind::Unchanged => self.judge_model(&after),
            ChangeKind::Removed => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<CheckResult, PluginError> {
        let p = &self.plan;
        if p.purpose == PlanPurpose::Undo && self.cfg.judges_the_whole_model() {
            return Ok(CheckResult {
                verdict: Verdict::Pass,
                message: format!(
                    "does not apply to an undo: {} judges the model as a whole, and an undo reads no model (the rows it sends are checked by the row rules)",
                    self.cfg.name()
                ),
                samples: Vec::new(),
            });
        }
        let (verdict, message) = match &self.cfg {
            Config::NotNull { columns } => verdict_rows(
                self.offending,
                format!("with NULL in {}", columns.join(", ")),
            ),
            Config::Unique { columns } => verdict_rows(
                self.offending,
                format!(
                    "repeating the values of {} of an earlier row",
                    columns.join(", ")
                ),
            ),
            Config::AcceptedValues { column, values, .. } => verdict_rows(
                self.offending,
                format!(
                    "with {column} outside [{}]",
                    values.iter().map(json_text).collect::<Vec<_>>().join(", ")
                ),
            ),
            Config::Regex {
                column, pattern, ..
            } => verdict_rows(
                self.offending,
                format!("with {column} not matching {pattern}"),
            ),
            Config::Range { column, min, max } => verdict_rows(
                self.offending,
                format!(
                    "with {column} outside [{}, {}]",
                    min.as_ref().map(json_text).unwrap_or("-inf".into()),
                    max.as_ref().map(json_text).unwrap_or("+inf".into())
                ),
            ),
            Config::MaxChanges {
                change,
                max_rows,
                max_percent,
            } => {
                let n = match change.as_str() {
                    "added" => p.added,
                    "changed" => p.changed,
                    "removed" => p.removed,
                    _ => p.added + p.changed + p.removed,
                };
                let percent = if p.snapshot_rows == 0 {
                    if n == 0 {
                        0.0
                    } else {
                        100.0
                    }
                } else {
                    n as f64 * 100.0 / p.snapshot_rows as f64
                };
                let over_rows = max_rows.is_some_and(|m| n > m);
                // A first sync (empty snapshot) is judged by max_rows only.
                let over_percent = p.snapshot_rows > 0 && max_percent.is_some_and(|m| percent > m);
                let message = format!(
                    "{n} row{} {change} ({percent:.1}% of the {} delivered rows)",
                    if n == 1 { "" } else { "s" },
                    p.snapshot_rows
                );
                if over_rows || over_percent {
                    let limits = [
                        max_rows.map(|m| format!("at most {m} rows")),
                        max_percent.map(|m| format!("at most {m}%")),
                    ];
                    (
                        Verdict::Fail,
                        format!(
                            "{message}; allowed: {}",
                            limits
                                .into_iter()
                                .flatten()
                                .collect::<Vec<_>>()
                                .join(" and ")
                        ),
                    )
                } else {
                    (Verdict::Pass, message)
                }
            }
            Config::MinModelRows { min } => match p.model_rows {
                None => (
                    Verdict::Warn,
                    format!("the model's row count is unknown for this plan (it did not read the whole model); at least {min} expected"),
                ),
                Some(rows) if rows < *min => (
                    Verdict::Fail,
                    format!("the model has {rows} rows; at least {min} expected"),
                ),
                Some(rows) => (Verdict::Pass, format!("the model has {rows} rows")),
            },
            Config::Freshness { column, max_age } => {
                let limit_ms = parse_duration(max_age).unwrap_or(0);
                let now_us = host::now_ms() as i64 * 1000;
                match self.newest {
                    None => (
                        Verdict::Fail,
                        format!("no {column} values in the model to judge freshness"),
                    ),
                    Some(t) if now_us - t > limit_ms as i64 * 1000 => (
                        Verdict::Fail,
                        format!(
                            "the newest {column} is {}, older than {max_age}",
                            value::format_timestamp(t)
                        ),
                    ),
                    Some(t) => (
                        Verdict::Pass,
                        format!("the newest {column} is {}", value::format_timestamp(t)),
                    ),
                }
            }
        };
        Ok(CheckResult {
            verdict,
            message,
            samples: std::mem::take(&mut self.samples),
        })
    }
}

fn verdict_rows(offending: u64, what: String) -> (Verdict, String) {
    if offending == 0 {
        (Verdict::Pass, format!("no rows {what}"))
    } else {
        (
            Verdict::Fail,
            format!(
                "{offending} row{} {what}",
                if offending == 1 { "" } else { "s" }
            ),
        )
    }
}

export_quality_check!(Checks);
