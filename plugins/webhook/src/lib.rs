//! `webhook`: delivers rows as JSON over HTTP, one request per row or one per batch.
//!
//! All traffic goes through the host's HTTP import, so the operator's `grants.network`
//! decides where it may go. Header values may reference secrets as `${env.NAME}`; the
//! variable must be granted with `grants.env` and its value is never logged.

use backflow_plugin_sdk::host::{self, HttpHeader, HttpRequest};
use backflow_plugin_sdk::*;
use serde::Deserialize;
use std::collections::BTreeMap;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "webhook",
  "type": "object",
  "additionalProperties": false,
  "required": ["url"],
  "properties": {
    "url": { "type": "string", "description": "http:// or https:// endpoint; its host:port must be granted." },
    "method": { "type": "string", "default": "POST" },
    "batch_mode": { "enum": ["row", "array"], "default": "array", "description": "One request per row, or one JSON array per batch." },
    "headers": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Extra headers; values may use ${env.NAME} secrets." },
    "operation_field": { "type": "string", "description": "If set, each JSON object carries the operation (insert/update/delete/append) under this field." },
    "timeout_ms": { "type": "integer", "minimum": 1, "default": 30000 }
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    batch_mode: BatchMode,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    operation_field: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u32>,
}

fn default_method() -> String {
    "POST".into()
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum BatchMode {
    Row,
    #[default]
    Array,
}

/// Replaces `${env.NAME}` references; `Err` names the missing variable.
fn expand_secrets(value: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${env.") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 6..];
        let end = after.find('}').ok_or_else(|| format!("unterminated ${{env.…}} in {value:?}"))?;
        let name = &after[..end];
        let secret = std::env::var(name).map_err(|_| {
            format!("environment variable {name} is not set or not granted to this destination (add it to grants.env)")
        })?;
        out.push_str(&secret);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn check(config: &str) -> Result<Config, Vec<ConfigError>> {
    let cfg: Config = parse_config(config).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    if !(cfg.url.starts_with("http://") || cfg.url.starts_with("https://")) {
        errors.push(ConfigError::new("url", format!("{:?} is not an http:// or https:// URL", cfg.url)));
    }
    for (name, value) in &cfg.headers {
        if value.contains("${env.") && !value[value.find("${env.").unwrap()..].contains('}') {
            errors.push(ConfigError::new(format!("headers.{name}"), "unterminated ${env.NAME} reference"));
        }
    }
    if cfg.method.trim().is_empty() {
        errors.push(ConfigError::new("method", "is empty"));
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

struct Webhook;

impl DestinationPlugin for Webhook {
    type Writer = WebhookWriter;

    fn spec() -> PluginSpec {
        PluginSpec {
            name: "webhook".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::Destination,
            description: "POSTs rows as JSON to an HTTP endpoint.".into(),
            config_schema: SCHEMA.into(),
            operations: vec![Operation::Insert, Operation::Update, Operation::Delete, Operation::Append],
            max_batch_size: 500,
        }
    }

    fn check_config(config: &str) -> Vec<ConfigError> {
        check(config).err().unwrap_or_default()
    }

    fn open(config: &str, _context: SyncContext) -> Result<WebhookWriter, PluginError> {
        let cfg = check(config).map_err(|mut e| PluginError::BadConfig(e.remove(0)))?;
        let mut headers = vec![HttpHeader { name: "content-type".into(), value: "application/json".into() }];
        for (name, value) in &cfg.headers {
            let value = expand_secrets(value).map_err(|m| PluginError::bad_config(format!("headers.{name}"), m))?;
            headers.push(HttpHeader { name: name.clone(), value });
        }
        Ok(WebhookWriter { cfg, headers })
    }
}

struct WebhookWriter {
    cfg: Config,
    headers: Vec<HttpHeader>,
}

/// What one HTTP exchange meant for the rows it carried.
enum Verdict {
    Accepted,
    Rejected(String),
    Retry(PluginError),
}

impl WebhookWriter {
    fn send(&self, body: Vec<u8>) -> Verdict {
        let request = HttpRequest {
            method: self.cfg.method.clone(),
            url: self.cfg.url.clone(),
            headers: self.headers.clone(),
            body,
            timeout_ms: self.cfg.timeout_ms,
        };
        let response = match host::http_send(&request) {
            Ok(r) => r,
            Err(host::HttpError::Denied(m)) => return Verdict::Retry(PluginError::bad_config("url", m)),
            Err(host::HttpError::InvalidRequest(m)) => return Verdict::Retry(PluginError::fatal(format!("{}: {m}", self.cfg.url))),
            Err(host::HttpError::Connection(m)) => return Verdict::Retry(PluginError::retryable(format!("{}: {m}", self.cfg.url))),
            Err(host::HttpError::Timeout(m)) => return Verdict::Retry(PluginError::retryable(format!("{}: timed out: {m}", self.cfg.url))),
        };
        let body = String::from_utf8_lossy(&response.body);
        let body: String = body.chars().take(500).collect();
        match response.status {
            200..=299 => Verdict::Accepted,
            429 | 503 => {
                let retry_after_ms = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
                    .and_then(|h| h.value.trim().parse::<u64>().ok())
                    .map(|s| s * 1000);
                Verdict::Retry(PluginError::RateLimited { message: format!("HTTP {}: {body}", response.status), retry_after_ms })
            }
            500..=599 => Verdict::Retry(PluginError::retryable(format!("HTTP {}: {body}", response.status))),
            // Credentials are wrong for every row alike: stop the run instead of failing rows.
            401 | 403 => Verdict::Retry(PluginError::bad_config("headers", format!("HTTP {} from {}: check the credentials: {body}", response.status, self.cfg.url))),
            status => Verdict::Rejected(format!("HTTP {status}: {body}")),
        }
    }
}

impl DestinationWriter for WebhookWriter {
    fn write(&mut self, op: Operation, batch: Batch) -> Result<Vec<RowOutcome>, PluginError> {
        let mut objects = Vec::with_capacity(batch.row_count as usize);
        for row in batch.rows() {
            let row = row.map_err(|e| PluginError::fatal(format!("undecodable batch: {e}")))?;
            let mut object = serde_json::Map::with_capacity(row.len() + 1);
            for (col, value) in batch.columns.iter().zip(&row) {
                object.insert(col.name.clone(), value.to_json());
            }
            if let Some(field) = &self.cfg.operation_field {
                object.insert(field.clone(), serde_json::Value::String(op.as_str().into()));
            }
            objects.push(serde_json::Value::Object(object));
        }
        match self.cfg.batch_mode {
            BatchMode::Array => {
                let body = serde_json::to_vec(&objects).expect("JSON values serialize");
                match self.send(body) {
                    Verdict::Accepted => Ok(vec![RowOutcome::Accepted; objects.len()]),
                    Verdict::Rejected(m) => Ok(vec![RowOutcome::Rejected(m); objects.len()]),
                    Verdict::Retry(e) => Err(e),
                }
            }
            BatchMode::Row => {
                let mut outcomes = Vec::with_capacity(objects.len());
                for object in &objects {
                    let body = serde_json::to_vec(object).expect("JSON values serialize");
                    outcomes.push(match self.send(body) {
                        Verdict::Accepted => RowOutcome::Accepted,
                        Verdict::Rejected(m) => RowOutcome::Rejected(m),
                        // Rows already sent stay accepted; the rest are retried by the engine.
                        Verdict::Retry(PluginError::BadConfig(c)) if outcomes.is_empty() => return Err(PluginError::BadConfig(c)),
                        Verdict::Retry(e) => RowOutcome::Retryable(e.to_string()),
                    });
                }
                Ok(outcomes)
            }
        }
    }
}

export_destination!(Webhook);
