//! A custom quality check: no personal e-mail addresses into the B2B CRM.
//!
//! Config: `{ "column": "email", "extra_domains": ["example.org"] }`. Fails when a row the
//! run would send has an address at a free-mail domain (gmail.com, yahoo.com, ...).

use backflow_plugin_sdk::*;
use serde::Deserialize;

const PERSONAL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "aol.com",
    "icloud.com",
    "me.com",
    "gmx.de",
    "web.de",
    "proton.me",
    "protonmail.com",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_column")]
    column: String,
    #[serde(default)]
    extra_domains: Vec<String>,
}

fn default_column() -> String {
    "email".into()
}

struct B2bEmails;

struct Judge {
    column: usize,
    domains: Vec<String>,
    offending: u64,
    samples: Vec<String>,
}

impl QualityCheckPlugin for B2bEmails {
    type Checker = Judge;

    fn spec() -> PluginSpec {
        PluginSpec {
            name: "b2b-email-check".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::QualityCheck,
            description: "Fails when a row would send a personal (free-mail) e-mail address.".into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"properties":{"column":{"type":"string","default":"email"},"extra_domains":{"type":"array","items":{"type":"string"}}}}"#.into(),
            operations: vec![],
            max_batch_size: 0,
            default_rate_limit: None,
        }
    }

    fn check_config(config: &str) -> Vec<ConfigError> {
        parse_config::<Config>(config).err().into_iter().collect()
    }

    fn open(config: &str, plan: PlanSummary) -> Result<Judge, PluginError> {
        let cfg: Config = parse_config(config).map_err(PluginError::BadConfig)?;
        let column = plan
            .columns
            .iter()
            .position(|c| c.name == cfg.column)
            .ok_or_else(|| {
                PluginError::bad_config(
                    "column",
                    format!("sync {} sends no field {:?}", plan.sync_name, cfg.column),
                )
            })?;
        let mut domains: Vec<String> = PERSONAL_DOMAINS.iter().map(|d| d.to_string()).collect();
        domains.extend(cfg.extra_domains.iter().map(|d| d.to_ascii_lowercase()));
        Ok(Judge {
            column,
            domains,
            offending: 0,
            samples: Vec::new(),
        })
    }
}

impl Checker for Judge {
    fn observe(
        &mut self,
        change: ChangeKind,
        after: Batch,
        _before: Option<Batch>,
    ) -> Result<(), PluginError> {
        // Only rows that would be sent matter.
        if !matches!(change, ChangeKind::Added | ChangeKind::Changed) {
            return Ok(());
        }
        for value in after.column_values(self.column) {
            let value = value.map_err(|e| PluginError::fatal(e.to_string()))?;
            let Value::Text(email) = value else { continue };
            let domain = email.rsplit('@').next().unwrap_or("").to_ascii_lowercase();
            if self.domains.contains(&domain) {
                self.offending += 1;
                if self.samples.len() < 5 {
                    self.samples
                        .push(serde_json::json!({ "email": email }).to_string());
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<CheckResult, PluginError> {
        Ok(if self.offending == 0 {
            CheckResult {
                verdict: Verdict::Pass,
                message: "no personal e-mail addresses".into(),
                samples: vec![],
            }
        } else {
            CheckResult {
                verdict: Verdict::Fail,
                message: format!("{} rows with a personal e-mail address", self.offending),
                samples: std::mem::take(&mut self.samples),
            }
        })
    }
}

export_quality_check!(B2bEmails);
