//! `noop-destination`: accepts every row and sends it nowhere. Used to measure the cost of
//! the Wasm boundary, and as the smallest possible example of a destination.

use backflow_plugin_sdk::*;

struct Noop;

impl DestinationPlugin for Noop {
    type Writer = Noop;

    fn spec() -> PluginSpec {
        PluginSpec {
            name: "noop-destination".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::Destination,
            description: "Accepts every row and discards it.".into(),
            config_schema: r#"{"type":"object","additionalProperties":false}"#.into(),
            operations: vec![
                Operation::Insert,
                Operation::Update,
                Operation::Delete,
                Operation::Append,
            ],
            max_batch_size: 0,
            default_rate_limit: None,
        }
    }

    fn check_config(config: &str) -> Vec<ConfigError> {
        match serde_json::from_str::<serde_json::Value>(config) {
            Ok(serde_json::Value::Object(m)) if m.is_empty() => vec![],
            Ok(serde_json::Value::Object(m)) => m
                .keys()
                .map(|k| ConfigError::new(k.clone(), "unknown field; this plugin takes no config"))
                .collect(),
            _ => vec![ConfigError::new("", "expected a table")],
        }
    }

    fn open(_config: &str, _context: SyncContext) -> Result<Noop, PluginError> {
        Ok(Noop)
    }
}

impl DestinationWriter for Noop {
    fn write(&mut self, _op: Operation, batch: Batch) -> Result<Vec<RowOutcome>, PluginError> {
        Ok(vec![RowOutcome::Accepted; batch.row_count as usize])
    }
}

export_destination!(Noop);
