//! {{name}}: a backflow approval policy: runs that remove many rows need an approver.
//!
//! Config: `{"max_removed": 100}`. A run whose syncs would remove more rows than that in all
//! needs one approval from an approver or admin other than its author; everything else
//! goes ahead.

use backflow_plugin_sdk::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_max_removed")]
    max_removed: u64,
}

fn default_max_removed() -> u64 {
    100
}

struct Plugin;

impl ApprovalPolicyPlugin for Plugin {
    fn spec() -> PluginSpec {
        PluginSpec {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::ApprovalPolicy,
            description: "Runs that remove more than max_removed rows need an approver.".into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"properties":{"max_removed":{"type":"integer","minimum":0,"default":100}}}"#.into(),
            operations: vec![],
            max_batch_size: 0,
            default_rate_limit: None,
        }
    }

    fn check_config(config: &str) -> Vec<ConfigError> {
        parse_config::<Config>(config).err().into_iter().collect()
    }

    fn evaluate(config: &str, request: ApprovalRequest) -> Result<Decision, PluginError> {
        let cfg: Config = parse_config(config).map_err(PluginError::BadConfig)?;
        let removed = request.syncs.iter().fold(0u64, |sum, s| sum.saturating_add(s.removed));
        Ok(if request.kind == RequestKind::Run && removed > cfg.max_removed {
            Decision::Require {
                count: 1,
                roles: vec![Role::Approver, Role::Admin],
                allow_self_approval: false,
                reason: format!("the run removes {removed} rows, more than {}", cfg.max_removed),
            }
        } else {
            Decision::Approve(format!("{removed} rows removed, at most {} without approval", cfg.max_removed))
        })
    }
}

export_approval_policy!(Plugin);
