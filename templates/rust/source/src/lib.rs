//! {{name}}: a backflow source that reads a JSON API: a GET answering an array of objects.
//!
//! Config: `{"url": "https://api.example.com", "columns": [{"name": "id", "type": "integer"}]}`;
//! the model's query is the path to GET (`/v1/customers`). Each object becomes a row with the
//! declared columns (types: the contract's value types, `wit/README.md`); missing fields are
//! null.

use backflow_plugin_sdk::host::{self, HttpError, HttpRequest};
use backflow_plugin_sdk::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    columns: Vec<ColumnConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnConfig {
    name: String,
    #[serde(rename = "type")]
    value_type: String,
}

fn parse(config: &str) -> Result<(Config, Vec<Column>), ConfigError> {
    let cfg: Config = parse_config(config)?;
    if !(cfg.url.starts_with("http://") || cfg.url.starts_with("https://")) {
        return Err(ConfigError::new("url", format!("{:?} is not an http:// or https:// URL", cfg.url)));
    }
    let mut columns = Vec::new();
    for (i, c) in cfg.columns.iter().enumerate() {
        let value_type = ValueType::parse(&c.value_type).ok_or_else(|| ConfigError::new(format!("columns[{i}].type"), format!("unknown type {:?}", c.value_type)))?;
        columns.push(Column::new(c.name.clone(), value_type));
    }
    if columns.is_empty() {
        return Err(ConfigError::new("columns", "declare at least one column"));
    }
    Ok((cfg, columns))
}

struct Plugin;

struct Reader {
    columns: Vec<Column>,
    /// The answer's objects, each already cut to the declared columns, not yet returned.
    rows: std::vec::IntoIter<Vec<serde_json::Value>>,
    /// Index of the next row, for error messages.
    next: usize,
}

impl SourcePlugin for Plugin {
    type Reader = Reader;

    fn spec() -> PluginSpec {
        PluginSpec {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::Source,
            description: "Reads a JSON API: the query is a path answering an array of objects.".into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"required":["url","columns"],"properties":{"url":{"type":"string"},"columns":{"type":"array","items":{"type":"object","required":["name","type"],"properties":{"name":{"type":"string"},"type":{"type":"string"}}}}}}"#.into(),
            operations: vec![],
            max_batch_size: 0,
            default_rate_limit: None,
        }
    }

    fn check_config(config: &str) -> Vec<ConfigError> {
        parse(config).err().into_iter().collect()
    }

    fn open(config: &str, query: &str) -> Result<Reader, PluginError> {
        let (cfg, columns) = parse(config).map_err(PluginError::BadConfig)?;
        let url = format!("{}/{}", cfg.url.trim_end_matches('/'), query.trim_start_matches('/'));
        let request = HttpRequest { method: "GET".into(), url: url.clone(), headers: vec![], body: vec![], timeout_ms: Some(30_000) };
        let response = match host::http_send(&request) {
            Ok(r) => r,
            Err(HttpError::Denied(m)) => return Err(PluginError::bad_config("url", m)),
            Err(HttpError::InvalidRequest(m)) => return Err(PluginError::fatal(m)),
            Err(HttpError::Connection(m)) | Err(HttpError::Timeout(m)) => return Err(PluginError::retryable(format!("{url}: {m}"))),
        };
        if !(200..300).contains(&response.status) {
            let text = String::from_utf8_lossy(&response.body[..response.body.len().min(500)]).into_owned();
            let error = format!("{url} answered {}: {text}", response.status);
            return Err(match response.status {
                429 => PluginError::RateLimited { message: error, retry_after_ms: None },
                500..=599 => PluginError::retryable(error),
                _ => PluginError::fatal(error),
            });
        }
        let objects: Vec<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_slice(&response.body).map_err(|e| PluginError::fatal(format!("{url} did not answer a JSON array of objects: {e}")))?;
        let rows: Vec<Vec<serde_json::Value>> = objects
            .into_iter()
            .map(|mut o| columns.iter().map(|c| api_value(o.remove(&c.name).unwrap_or(serde_json::Value::Null), c.value_type)).collect())
            .collect();
        Ok(Reader { columns, rows: rows.into_iter(), next: 0 })
    }
}

/// An API's value in the JSON row encoding of its column: what an API writes naturally
/// (numbers for decimals, objects and arrays in untyped columns) made explicit.
fn api_value(value: serde_json::Value, value_type: ValueType) -> serde_json::Value {
    use serde_json::Value as J;
    match (value_type, value) {
        (ValueType::Decimal, J::Number(n)) => J::String(n.to_string()),
        (ValueType::Any, v @ (J::Object(_) | J::Array(_))) => serde_json::json!({ "json": v }),
        (_, v) => v,
    }
}

impl SourceReader for Reader {
    fn columns(&self) -> Vec<Column> {
        self.columns.clone()
    }

    fn next_batch(&mut self, max_rows: u32) -> Result<Option<Batch>, PluginError> {
        let rows: Vec<Vec<serde_json::Value>> = self.rows.by_ref().take(max_rows.max(1) as usize).collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let first = self.next;
        self.next += rows.len();
        // The JSON row encoding's reader converts each value to its column's type and names
        // the row and column of one that does not fit.
        let payload = serde_json::to_vec(&rows).map_err(|e| PluginError::fatal(e.to_string()))?;
        json_rows::from_json_rows(self.columns.clone(), rows.len() as u32, &payload)
            .map(Some)
            .map_err(|e| PluginError::fatal(format!("in the rows from {first} on: {e}")))
    }
}

export_source!(Plugin);
