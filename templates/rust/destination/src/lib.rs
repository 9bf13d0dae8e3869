//! {{name}}: a backflow destination that POSTs each batch of rows as JSON to an HTTP endpoint.
//!
//! Body: `{"operation": "insert", "rows": [{"field": value, ...}, ...]}`. Decimals arrive as
//! strings, timestamps as ISO 8601 (UTC), bytes as base64. The answer decides the outcome:
//! 2xx: every row accepted; 429: rate limited (honouring Retry-After); 5xx or no connection:
//! retryable; 401/403: bad config (the credentials); any other status: every row rejected,
//! with the status and the answer's text.

use backflow_plugin_sdk::host::{self, HttpError, HttpHeader, HttpRequest};
use backflow_plugin_sdk::*;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Where to POST, e.g. `https://api.example.com/v1/contacts`.
    url: String,
    /// Extra request headers (`Authorization = "Bearer ${env.TOKEN}"`).
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn parse(config: &str) -> Result<Config, ConfigError> {
    let cfg: Config = parse_config(config)?;
    if !(cfg.url.starts_with("http://") || cfg.url.starts_with("https://")) {
        return Err(ConfigError::new("url", format!("{:?} is not an http:// or https:// URL", cfg.url)));
    }
    Ok(cfg)
}

struct Plugin;

struct Writer {
    cfg: Config,
}

impl DestinationPlugin for Plugin {
    type Writer = Writer;

    fn spec() -> PluginSpec {
        PluginSpec {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::Destination,
            description: "POSTs each batch of rows as JSON to an HTTP endpoint.".into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"required":["url"],"properties":{"url":{"type":"string"},"headers":{"type":"object","additionalProperties":{"type":"string"}}}}"#.into(),
            operations: vec![Operation::Insert, Operation::Update, Operation::Delete],
            max_batch_size: 500,
            default_rate_limit: None,
        }
    }

    fn check_config(config: &str) -> Vec<ConfigError> {
        parse(config).err().into_iter().collect()
    }

    fn open(config: &str, _sync: SyncContext) -> Result<Writer, PluginError> {
        let mut cfg = parse(config).map_err(PluginError::BadConfig)?;
        // `${env.NAME}` in a header is a secret the operator granted with grants.env.
        for (name, value) in cfg.headers.iter_mut() {
            *value = expand_secrets(value, "destination").map_err(|m| PluginError::bad_config(format!("headers.{name}"), m))?;
        }
        Ok(Writer { cfg })
    }
}

impl DestinationWriter for Writer {
    fn write(&mut self, op: Operation, batch: Batch) -> Result<Vec<RowOutcome>, PluginError> {
        let rows = batch.row_count as usize;
        if rows == 0 {
            return Ok(vec![]);
        }
        let mut body = format!("{{\"operation\":\"{}\",\"rows\":", op.as_str()).into_bytes();
        batch.write_json_array(&mut body, &[]).map_err(|e| PluginError::fatal(e.to_string()))?;
        body.push(b'}');
        let mut headers = vec![HttpHeader { name: "Content-Type".into(), value: "application/json".into() }];
        headers.extend(self.cfg.headers.iter().map(|(n, v)| HttpHeader { name: n.clone(), value: v.clone() }));
        let request = HttpRequest { method: "POST".into(), url: self.cfg.url.clone(), headers, body, timeout_ms: Some(30_000) };
        let response = match host::http_send(&request) {
            Ok(r) => r,
            Err(HttpError::Denied(m)) => return Err(PluginError::bad_config("url", m)),
            Err(HttpError::InvalidRequest(m)) => return Err(PluginError::fatal(m)),
            Err(HttpError::Connection(m)) | Err(HttpError::Timeout(m)) => return Err(PluginError::retryable(format!("{}: {m}", self.cfg.url))),
        };
        let text = String::from_utf8_lossy(&response.body[..response.body.len().min(500)]).into_owned();
        match response.status {
            200..=299 => Ok(vec![RowOutcome::Accepted; rows]),
            429 => {
                let retry_after_ms = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
                    .and_then(|h| h.value.trim().parse::<u64>().ok())
                    .map(|s| s.saturating_mul(1000));
                Err(PluginError::RateLimited { message: format!("{} answered 429: {text}", self.cfg.url), retry_after_ms })
            }
            500..=599 => Err(PluginError::retryable(format!("{} answered {}: {text}", self.cfg.url, response.status))),
            // Credentials are config: nothing will work until a human fixes them.
            401 | 403 => Err(PluginError::bad_config("headers", format!("{} answered {}: {text}", self.cfg.url, response.status))),
            status => Ok(vec![RowOutcome::Rejected(format!("{} answered {status}: {text}", self.cfg.url)); rows]),
        }
    }
}

export_destination!(Plugin);
