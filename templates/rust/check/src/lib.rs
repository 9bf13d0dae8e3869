//! {{name}}: a backflow quality check that fails a run sending too many nulls in one field.
//!
//! Config: `{"column": "email", "max_null_percent": 0}`. Counts the rows the run would send
//! (added and changed) whose `column` is null; fails when their share is above the limit.

use backflow_plugin_sdk::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The destination field to look at (after the sync's mapping).
    column: String,
    /// The largest share of null values allowed, in percent (0: none).
    #[serde(default)]
    max_null_percent: f64,
}

fn parse(config: &str) -> Result<Config, ConfigError> {
    let cfg: Config = parse_config(config)?;
    if !(0.0..=100.0).contains(&cfg.max_null_percent) {
        return Err(ConfigError::new("max_null_percent", "must be between 0 and 100"));
    }
    Ok(cfg)
}

struct Plugin;

struct NullCounter {
    cfg: Config,
    /// Position of the column in each batch (the same in every batch of a run).
    column: Option<usize>,
    seen: u64,
    nulls: u64,
    samples: Vec<String>,
}

impl QualityCheckPlugin for Plugin {
    type Checker = NullCounter;

    fn spec() -> PluginSpec {
        PluginSpec {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::QualityCheck,
            description: "Fails when too many rows the run would send have a null field.".into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"required":["column"],"properties":{"column":{"type":"string"},"max_null_percent":{"type":"number","minimum":0,"maximum":100,"default":0}}}"#.into(),
            operations: vec![],
            max_batch_size: 0,
            default_rate_limit: None,
        }
    }

    fn check_config(config: &str) -> Vec<ConfigError> {
        parse(config).err().into_iter().collect()
    }

    fn open(config: &str, plan: PlanSummary) -> Result<NullCounter, PluginError> {
        let cfg = parse(config).map_err(PluginError::BadConfig)?;
        if !plan.columns.iter().any(|c| c.name == cfg.column) {
            return Err(PluginError::bad_config("column", format!("sync {} sends no field {:?}", plan.sync_name, cfg.column)));
        }
        Ok(NullCounter { cfg, column: None, seen: 0, nulls: 0, samples: Vec::new() })
    }
}

impl Checker for NullCounter {
    fn observe(&mut self, change: ChangeKind, after: Batch, _before: Option<Batch>) -> Result<(), PluginError> {
        // Only rows the run would send; removed rows carry only their key.
        if !matches!(change, ChangeKind::Added | ChangeKind::Changed) {
            return Ok(());
        }
        let Some(column) = self.column.or_else(|| after.column_index(&self.cfg.column)) else { return Ok(()) };
        self.column = Some(column);
        for (i, value) in after.column_values(column).enumerate() {
            let value = value.map_err(|e| PluginError::fatal(e.to_string()))?;
            self.seen += 1;
            if value.is_null() {
                self.nulls += 1;
                if self.samples.len() < 5 {
                    let row = after.rows().nth(i).and_then(Result::ok).unwrap_or_default();
                    let object: serde_json::Map<String, serde_json::Value> = after.columns.iter().zip(&row).map(|(c, v)| (c.name.clone(), v.to_json())).collect();
                    self.samples.push(serde_json::Value::Object(object).to_string());
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<CheckResult, PluginError> {
        let percent = if self.seen == 0 { 0.0 } else { self.nulls as f64 * 100.0 / self.seen as f64 };
        let message = format!("{} of {} rows to send have no {} ({percent:.1}%, at most {}% allowed)", self.nulls, self.seen, self.cfg.column, self.cfg.max_null_percent);
        let verdict = if percent > self.cfg.max_null_percent { Verdict::Fail } else { Verdict::Pass };
        Ok(CheckResult { verdict, message, samples: std::mem::take(&mut self.samples) })
    }
}

export_quality_check!(Plugin);
