//! `backflow model preview`: the first rows and the schema of a model, read through its
//! source plugin, so a user checks a query before any sync uses it. Nothing is recorded.

use crate::workspace::Workspace;
use crate::host::{PluginHost, SourceInstance};
use crate::sync::prepare::{connector_error, load_checked};
use backflow_plugin_sdk::{Column, PluginKind};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ModelPreview {
    pub model: String,
    pub source: String,
    pub primary_key: Vec<String>,
    pub columns: Vec<PreviewColumn>,
    /// One JSON object per row, in the source's order.
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Primary key columns the query does not return (a sync would refuse the model).
    pub missing_key_columns: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PreviewColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub value_type: String,
}

/// Reads at most `limit` rows of model `name`.
pub async fn preview_model(
    host: &PluginHost,
    ws: &Workspace,
    name: &str,
    limit: u32,
) -> Result<ModelPreview, String> {
    let model = ws.models.get(name).ok_or_else(|| {
        format!(
            "no model named {name:?} (models: {})",
            ws.models.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let source = &ws.sources[&model.source];
    let plugin = load_checked(host, ws, source, PluginKind::Source)
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = SourceInstance::open(
        host,
        &plugin,
        &source.grants,
        source.limits,
        &source.config_json,
        &model.query,
    )
    .await
    .map_err(|e| connector_error(model, source, true, &e))?;
    let columns: Vec<Column> = reader.columns().to_vec();
    let mut rows = Vec::new();
    let result = async {
        while (rows.len() as u32) < limit {
            let Some(batch) = reader.next_batch(limit - rows.len() as u32).await? else {
                break;
            };
            for row in batch.rows() {
                let values = row.map_err(|e| {
                    crate::host::CallError::Host(format!("the source sent a malformed batch: {e}"))
                })?;
                let object: serde_json::Map<_, _> = columns
                    .iter()
                    .zip(values)
                    .map(|(c, v)| (c.name.clone(), v.to_json()))
                    .collect();
                rows.push(object);
            }
        }
        Ok::<_, crate::host::CallError>(())
    }
    .await;
    reader.close().await;
    result.map_err(|e| format!("source {} failed reading model {name}: {e}", source.name))?;
    Ok(ModelPreview {
        model: name.to_string(),
        source: source.name.clone(),
        primary_key: model.primary_key.clone(),
        missing_key_columns: model
            .primary_key
            .iter()
            .filter(|k| !columns.iter().any(|c| &c.name == *k))
            .cloned()
            .collect(),
        columns: columns
            .iter()
            .map(|c| PreviewColumn {
                name: c.name.clone(),
                value_type: c.value_type.as_str().to_string(),
            })
            .collect(),
        rows,
    })
}
