//! Example of a team's own approval rule, as a plugin: a change freeze.
//!
//! Configuration changes that affect a sync delivering to a `frozen` destination are
//! rejected with the freeze's reason; runs of such syncs that would remove rows need an
//! admin. Everything else is left to the other policies (approved here).
//!
//! ```toml
//! [[policies]]
//! plugin = "change-freeze-policy"
//! config = { frozen = ["crm"], reason = "quarter-end freeze until Jan 5" }
//! ```

use backflow_plugin_sdk::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    frozen: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
}

struct ChangeFreeze;

impl ApprovalPolicyPlugin for ChangeFreeze {
    fn spec() -> PluginSpec {
        PluginSpec {
            name: "change-freeze-policy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::ApprovalPolicy,
            description: "Rejects changes to syncs delivering to frozen destinations.".into(),
            config_schema: r#"{"type":"object","required":["frozen"],"properties":{"frozen":{"type":"array","items":{"type":"string"}},"reason":{"type":"string"}},"additionalProperties":false}"#.into(),
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
        let reason = cfg.reason.as_deref().unwrap_or("change freeze");
        let frozen: Vec<&SyncImpact> = request
            .syncs
            .iter()
            .filter(|s| cfg.frozen.contains(&s.destination))
            .collect();
        if frozen.is_empty() {
            return Ok(Decision::Approve("no frozen destination affected".into()));
        }
        let names = frozen
            .iter()
            .map(|s| format!("{} → {}", s.sync_name, s.destination))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(match request.kind {
            RequestKind::ConfigChange => Decision::Reject(format!("{reason}: {names}")),
            RequestKind::Run if frozen.iter().any(|s| s.removed > 0) => Decision::Require {
                count: 1,
                roles: vec![Role::Admin],
                allow_self_approval: false,
                reason: format!("{reason}: this run removes rows from {names}"),
            },
            RequestKind::Run => Decision::Approve("no removals".into()),
        })
    }
}

export_approval_policy!(ChangeFreeze);
