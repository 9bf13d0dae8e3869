//! The plugin from the README's guide, built by scripts/build-plugins so the guide stays true.

use backflow_plugin_sdk::*;

struct Printer;

impl DestinationPlugin for Printer {
    type Writer = Printer;
    fn spec() -> PluginSpec {
        PluginSpec {
            name: "printer".into(),
            version: "0.1.0".into(),
            kind: PluginKind::Destination,
            description: "Logs every row.".into(),
            config_schema: r#"{"type":"object"}"#.into(),
            operations: vec![Operation::Insert, Operation::Update],
            max_batch_size: 0,
            default_rate_limit: None,
        }
    }
    fn check_config(_config: &str) -> Vec<ConfigError> {
        vec![]
    }
    fn open(_config: &str, _sync: SyncContext) -> Result<Printer, PluginError> {
        Ok(Printer)
    }
}

impl DestinationWriter for Printer {
    fn write(&mut self, op: Operation, batch: Batch) -> Result<Vec<RowOutcome>, PluginError> {
        for row in batch.rows() {
            let row = row.map_err(|e| PluginError::fatal(e.to_string()))?;
            host::info(&format!("{op}: {row:?}"));
        }
        Ok(vec![RowOutcome::Accepted; batch.row_count as usize])
    }
}

export_destination!(Printer);
