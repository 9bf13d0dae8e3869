//! `webhook`: delivers rows as JSON over HTTP, one request per row or one per batch.
//!
//! All traffic goes through the host's HTTP import, so the operator's `grants.network`
//! decides where it may go. Header values may reference secrets as `${env.NAME}`; the
//! variable must be granted with `grants.env` and its value is never logged.
//!
//! Each request carries an idempotency key (BLAKE3, in hex, of the sync, the operation and
//! the rows sent: the body, or in array mode the encoded batch with its field names; a
//! replay of the same rows has the same key, and rows crafted by whoever can write to the
//! warehouse cannot make another batch's key) and, with
//! `signing_secret`, an
//! HMAC-SHA256 signature: header `X-Backflow-Signature: t=UNIX_SECONDS,v1=HEX` where HEX is
//! `HMAC_SHA256(secret, "UNIX_SECONDS." + body)`. A receiver recomputes it over the raw
//! body, compares in constant time and rejects old timestamps to stop replays.
//!
//! Answers: 2xx accepts the rows; a `207 Multi-Status` rejects the rows its per-row errors
//! name, read as `multi_status` says (without it, a 207 stops the run: its failures are
//! never taken for success); 401/403 stop the run naming the credentials (or their absence);
//! 429 and 5xx are retried; other 4xx reject the rows.

mod lookup;

use backflow_plugin_sdk::host::{self, HttpHeader, HttpRequest};
use backflow_plugin_sdk::*;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::collections::BTreeMap;
mod present;

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
    "endpoints": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Per-operation URLs (insert, update, delete, append), overriding url." },
    "methods": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Per-operation HTTP methods, e.g. {delete = \"DELETE\"}." },
    "body_template": { "type": "string", "description": "MiniJinja template rendering one row's JSON; sees row, op, sync." },
    "wrapper": { "type": "string", "description": "Array mode: send {WRAPPER: [rows]} instead of a bare array." },
    "signing_secret": { "type": "string", "description": "HMAC-SHA256 key (use ${env.NAME}); adds X-Backflow-Signature." },
    "idempotency_header": { "type": "string", "default": "Idempotency-Key", "description": "Header carrying the idempotency key; empty to omit." },
    "timeout_ms": { "type": "integer", "minimum": 1, "default": 30000 },
    "lookup": {
      "type": "object",
      "additionalProperties": false,
      "required": ["url"],
      "description": "Read back what the destination holds (drift, reconcile, write = \"if_empty\"): a GET URL with {key}, or a POST of keys answered with the records.",
      "properties": {
        "url": { "type": "string", "description": "GET: a URL with {key} (or {FIELD} per key field); POST: the lookup endpoint." },
        "method": { "enum": ["GET", "POST", "get", "post"], "default": "GET" },
        "keys_field": { "type": "string", "default": "keys", "description": "POST: the body field carrying the keys." },
        "response_path": { "type": "string", "description": "Where the record (GET) or the array of records (POST) is in the answer: a JSON pointer or a dotted path." }
      }
    },
    "multi_status": {
      "type": "object",
      "additionalProperties": false,
      "description": "How to read a 207 Multi-Status answer's per-row errors. Without it a 207 stops the run.",
      "properties": {
        "errors": { "type": "string", "default": "/errors", "description": "JSON pointer to the array of error objects in the 207 body." },
        "index": { "type": "string", "description": "Field of an error object holding the row's position in the request (0-based)." },
        "key": { "type": "string", "description": "Field of an error object holding the row's primary key value." },
        "message": { "type": "string", "default": "message", "description": "Field of an error object holding its message." }
      }
    }
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
    #[serde(default)]
    endpoints: BTreeMap<String, String>,
    #[serde(default)]
    methods: BTreeMap<String, String>,
    #[serde(default)]
    body_template: Option<String>,
    #[serde(default)]
    wrapper: Option<String>,
    #[serde(default)]
    signing_secret: Option<String>,
    #[serde(default = "default_idempotency_header")]
    idempotency_header: String,
    #[serde(default)]
    multi_status: Option<MultiStatus>,
    #[serde(default)]
    lookup: Option<lookup::Lookup>,
}

/// How to read the per-row results of a `207 Multi-Status` answer: `errors` points (JSON
/// pointer) at an array of error objects; each names its row by `index` (its position in the
/// request, from 0) or by `key` (the row's primary key value, compared as text), and
/// carries its text in `message`. Those rows are rejected, the others accepted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MultiStatus {
    #[serde(default = "default_errors_pointer")]
    errors: String,
    #[serde(default)]
    index: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default = "default_message_field")]
    message: String,
}

fn default_errors_pointer() -> String {
    "/errors".into()
}

fn default_message_field() -> String {
    "message".into()
}

/// Header names whose value is a credential (compared case-insensitively, as substrings).
const CREDENTIAL_HEADERS: &[&str] = &["auth", "key", "token", "secret", "cookie", "session"];

fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}

const OPERATIONS: [&str; 4] = ["insert", "update", "delete", "append"];

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

fn check(config: &str) -> Result<Config, Vec<ConfigError>> {
    let cfg: Config = parse_config(config).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    if !(cfg.url.starts_with("http://") || cfg.url.starts_with("https://")) {
        errors.push(ConfigError::new(
            "url",
            format!("{:?} is not an http:// or https:// URL", cfg.url),
        ));
    }
    for (name, value) in &cfg.headers {
        if value.contains("${env.") && !value[value.find("${env.").unwrap()..].contains('}') {
            errors.push(ConfigError::new(
                format!("headers.{name}"),
                "unterminated ${env.NAME} reference",
            ));
        }
    }
    if let Some(m) = &cfg.multi_status {
        if !m.errors.is_empty() && !m.errors.starts_with('/') {
            errors.push(ConfigError::new(
                "multi_status.errors",
                format!(
                    "{:?} is not a JSON pointer (\"/errors\", or \"\" for the whole body)",
                    m.errors
                ),
            ));
        }
        if m.index.is_none() && m.key.is_none() {
            errors.push(ConfigError::new(
                "multi_status",
                "name how an error object points at its row: index = \"FIELD\" (its position in the request, from 0) or key = \"FIELD\" (its primary key value)",
            ));
        }
    }
    for (field, message) in cfg.lookup.iter().flat_map(lookup::check_lookup) {
        errors.push(ConfigError::new(field, message));
    }
    if cfg.method.trim().is_empty() {
        errors.push(ConfigError::new("method", "is empty"));
    }
    for (map, name) in [(&cfg.endpoints, "endpoints"), (&cfg.methods, "methods")] {
        for op in map.keys() {
            if !OPERATIONS.contains(&op.as_str()) {
                errors.push(ConfigError::new(
                    format!("{name}.{op}"),
                    "not an operation (insert, update, delete, append)",
                ));
            }
        }
    }
    for (op, url) in &cfg.endpoints {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            errors.push(ConfigError::new(
                format!("endpoints.{op}"),
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
    }
    let mut env = minijinja::Environment::new();
    let templates = [
        ("url", Some(&cfg.url)),
        ("body_template", cfg.body_template.as_ref()),
    ];
    for (field, source) in templates
        .into_iter()
        .chain(cfg.endpoints.iter().map(|(_, u)| ("endpoints", Some(u))))
    {
        if let Some(source) = source {
            if let Err(e) = env.add_template_owned(field.to_string(), source.clone()) {
                errors.push(ConfigError::new(field, format!("invalid template: {e}")));
            }
        }
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

/// `Retry-After` as seconds or as an HTTP date, in milliseconds from now.
fn retry_after_ms(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs * 1000);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64;
    Some(at_ms.saturating_sub(host::now_ms()))
}

/// How to make the webhook send deletes, for the engine's error when a sync needs them.
const DELETE_HINT: &str = "without a delete route the webhook would POST key-only rows to the same URL, which a receiver takes as an upsert; set operation_field (each object then says \"delete\"), methods.delete (e.g. \"DELETE\") or endpoints.delete (a URL for deletes) in the destination's config";

/// Whether this config tells a receiver a delete apart from an insert or update.
fn can_delete(cfg: &Config) -> bool {
    cfg.operation_field.is_some()
        || cfg.methods.contains_key("delete")
        || cfg.endpoints.contains_key("delete")
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
            operations: vec![
                Operation::Insert,
                Operation::Update,
                Operation::Delete,
                Operation::Append,
            ],
            max_batch_size: 500,
            default_rate_limit: None,
        }
    }

    /// Field presence, and reading back (`read` needs `config.lookup`; without it `read`
    /// says so).
    fn capabilities() -> Vec<Capability> {
        let mut capabilities = present::CAPABILITIES.to_vec();
        capabilities.push(Capability::ReadBack);
        capabilities
    }

    fn check_config(config: &str) -> Vec<ConfigError> {
        check(config).err().unwrap_or_default()
    }

    /// A delete can be told apart from an upsert only with a delete route (`methods.delete`,
    /// `endpoints.delete`) or an operation field in each object: without one, a key-only
    /// POST to the same URL would read as an upsert at most receivers.
    fn operations_for(config: &str) -> Result<OperationSupport, PluginError> {
        let cfg = check(config).map_err(|mut e| PluginError::BadConfig(e.remove(0)))?;
        let mut support = OperationSupport::all_of(&Self::spec());
        if !can_delete(&cfg) {
            support.operations.retain(|op| *op != Operation::Delete);
            support
                .hints
                .push((Operation::Delete, DELETE_HINT.to_string()));
        }
        Ok(support)
    }

    fn open(config: &str, context: SyncContext) -> Result<WebhookWriter, PluginError> {
        let cfg = check(config).map_err(|mut e| PluginError::BadConfig(e.remove(0)))?;
        let mut headers = vec![HttpHeader {
            name: "content-type".into(),
            value: "application/json".into(),
        }];
        for (name, value) in &cfg.headers {
            let value = expand_secrets(value, "destination")
                .map_err(|m| PluginError::bad_config(format!("headers.{name}"), m))?;
            headers.push(HttpHeader {
                name: name.clone(),
                value,
            });
        }
        let signing_key = match &cfg.signing_secret {
            Some(s) => Some(
                expand_secrets(s, "destination")
                    .map_err(|m| PluginError::bad_config("signing_secret", m))?
                    .into_bytes(),
            ),
            None => None,
        };
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        url_escaping(&mut env);
        env.add_template_owned("url", cfg.url.clone())
            .map_err(|e| PluginError::bad_config("url", e.to_string()))?;
        for (op, url) in &cfg.endpoints {
            env.add_template_owned(format!("endpoint:{op}"), url.clone())
                .map_err(|e| PluginError::bad_config(format!("endpoints.{op}"), e.to_string()))?;
        }
        if let Some(body) = &cfg.body_template {
            env.add_template_owned("body", body.clone())
                .map_err(|e| PluginError::bad_config("body_template", e.to_string()))?;
        }
        Ok(WebhookWriter {
            cfg,
            headers,
            env,
            signing_key,
            sync: context.sync_name,
            primary_key: context.primary_key,
            present: None,
        })
    }
}

/// Values rendered into URL templates are percent-encoded as one path segment (a key
/// `../admin?x=` stays inside its segment), and a value that is `.` or `..` (which URL
/// parsers resolve, even percent-encoded) is refused. `|safe` opts a value out. Body
/// templates are JSON and are not touched.
fn url_escaping(env: &mut minijinja::Environment<'static>) {
    use minijinja::AutoEscape;
    env.set_auto_escape_callback(|name| {
        if name == "url" || name.starts_with("endpoint:") {
            AutoEscape::Custom("url")
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(|out, state, value| {
        if state.auto_escape() != AutoEscape::Custom("url") || value.is_safe() {
            return minijinja::escape_formatter(out, state, value);
        }
        let text = value
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        if text == "." || text == ".." {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("the value {text:?} cannot be a URL path segment"),
            ));
        }
        out.write_str(&percent_encode_segment(&text)).map_err(|_| {
            minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "writing the URL")
        })
    });
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct WebhookWriter {
    cfg: Config,
    headers: Vec<HttpHeader>,
    env: minijinja::Environment<'static>,
    signing_key: Option<Vec<u8>>,
    sync: String,
    primary_key: Vec<String>,
    /// The `row-batch.present` bitmap of the batch being written (see `present.rs`).
    present: Option<Vec<u8>>,
}

/// One per-row error of a 207 answer: the row it names and its message.
struct RowError {
    index: Option<serde_json::Value>,
    key: Option<serde_json::Value>,
    message: String,
}

/// What one HTTP exchange meant for the rows it carried.
enum Verdict {
    Accepted,
    Rejected(String),
    /// A 207 read with `multi_status`: these rows were refused, the others accepted.
    Partial(Vec<RowError>),
    Retry(PluginError),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl WebhookWriter {
    /// The URL for an operation (a per-operation endpoint, else `url`), rendered with the
    /// row (row mode) or without one (array mode).
    fn url(&self, op: Operation, row: Option<&serde_json::Value>) -> Result<String, PluginError> {
        let name = if self.cfg.endpoints.contains_key(op.as_str()) {
            format!("endpoint:{}", op.as_str())
        } else {
            "url".to_string()
        };
        let field = if name == "url" {
            "url".to_string()
        } else {
            format!("endpoints.{}", op.as_str())
        };
        let template = self
            .env
            .get_template(&name)
            .map_err(|e| PluginError::bad_config(field.clone(), e.to_string()))?;
        template
            .render(minijinja::context! { row => row, op => op.as_str(), sync => &self.sync })
            .map_err(|e| PluginError::bad_config(field, format!("cannot render the URL: {e}")))
    }

    /// One row's JSON: the mapped fields, or the body template's output.
    fn row_body(
        &self,
        op: Operation,
        object: serde_json::Value,
    ) -> Result<serde_json::Value, PluginError> {
        let Some(template) = self
            .cfg
            .body_template
            .as_ref()
            .and(self.env.get_template("body").ok())
        else {
            return Ok(object);
        };
        let text = template
            .render(minijinja::context! { row => object, op => op.as_str(), sync => &self.sync })
            .map_err(|e| PluginError::bad_config("body_template", format!("cannot render: {e}")))?;
        serde_json::from_str(&text).map_err(|e| {
            PluginError::bad_config(
                "body_template",
                format!("did not render valid JSON ({e}): {text}"),
            )
        })
    }

    /// The idempotency key of a request: BLAKE3 of the sync, the operation and `content`
    /// (the body, or for the fast path the batch it is written from, half its size).
    fn idempotency_key(&self, op: Operation, content: &[&[u8]]) -> String {
        let mut h = blake3::Hasher::new();
        h.update(self.sync.as_bytes());
        h.update(&[0]);
        h.update(op.as_str().as_bytes());
        for part in content {
            h.update(&[0]);
            h.update(part);
        }
        h.finalize().to_hex().to_string()
    }

    fn send(&self, op: Operation, url: String, body: Vec<u8>) -> Verdict {
        let key =
            (!self.cfg.idempotency_header.is_empty()).then(|| self.idempotency_key(op, &[&body]));
        self.send_keyed(op, url, body, key)
    }

    fn send_keyed(
        &self,
        op: Operation,
        url: String,
        body: Vec<u8>,
        idempotency_key: Option<String>,
    ) -> Verdict {
        let mut headers = self.headers.clone();
        if let Some(key) = idempotency_key {
            headers.push(HttpHeader {
                name: self.cfg.idempotency_header.clone(),
                value: key,
            });
        }
        if let Some(key) = &self.signing_key {
            let t = host::now_ms() / 1000;
            let mut mac =
                Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(t.to_string().as_bytes());
            mac.update(b".");
            mac.update(&body);
            headers.push(HttpHeader {
                name: "X-Backflow-Signature".into(),
                value: format!("t={t},v1={}", hex(&mac.finalize().into_bytes())),
            });
        }
        let method = self
            .cfg
            .methods
            .get(op.as_str())
            .unwrap_or(&self.cfg.method)
            .clone();
        let request = HttpRequest {
            method,
            url,
            headers,
            body,
            timeout_ms: self.cfg.timeout_ms,
        };
        let response = match host::http_send(&request) {
            Ok(r) => r,
            Err(host::HttpError::Denied(m)) => {
                return Verdict::Retry(PluginError::bad_config("url", m))
            }
            Err(host::HttpError::InvalidRequest(m)) => {
                return Verdict::Retry(PluginError::fatal(format!("{}: {m}", self.cfg.url)))
            }
            Err(host::HttpError::Connection(m)) => {
                return Verdict::Retry(PluginError::retryable(format!("{}: {m}", self.cfg.url)))
            }
            Err(host::HttpError::Timeout(m)) => {
                return Verdict::Retry(PluginError::retryable(format!(
                    "{}: timed out: {m}",
                    self.cfg.url
                )))
            }
        };
        let mut body = String::from_utf8_lossy(&response.body).into_owned();
        // Some APIs echo the request (headers included) in their errors: never copy our own
        // credentials into an error message.
        for h in self.headers.iter().filter(|h| h.value.len() >= 4) {
            if body.contains(h.value.as_str()) {
                body = body.replace(h.value.as_str(), "[redacted]");
            }
        }
        if response.status == 207 {
            return self.multi_status(&body);
        }
        let body: String = body.chars().take(500).collect();
        match response.status {
            200..=299 => Verdict::Accepted,
            429 | 503 => {
                let retry_after_ms = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
                    .and_then(|h| retry_after_ms(&h.value));
                Verdict::Retry(PluginError::RateLimited {
                    message: format!("HTTP {}: {body}", response.status),
                    retry_after_ms,
                })
            }
            500..=599 => Verdict::Retry(PluginError::retryable(format!(
                "HTTP {}: {body}",
                response.status
            ))),
            // Credentials are wrong for every row alike: stop the run instead of failing rows.
            401 | 403 => Verdict::Retry(self.refused_credentials(response.status, &body)),
            // Deleting what the destination no longer has leaves it as wanted: done. Without
            // this rule such a row would be refused, stay pending and be retried forever.
            404 | 410 if op == Operation::Delete => Verdict::Accepted,
            status => Verdict::Rejected(format!("HTTP {status}: {body}")),
        }
    }
}

impl WebhookWriter {
    /// A 401 or 403, blaming what the destination sends as credentials: the headers, the
    /// signing secret, or (when it sends none) nothing yet, with how to add some.
    fn refused_credentials(&self, status: u16, body: &str) -> PluginError {
        let url = &self.cfg.url;
        let credential_header = self.cfg.headers.iter().any(|(name, value)| {
            let name = name.to_ascii_lowercase();
            value.contains("${env.") || CREDENTIAL_HEADERS.iter().any(|c| name.contains(c))
        });
        if credential_header {
            return PluginError::bad_config(
                "headers",
                format!("HTTP {status} from {url}: check the credentials: {body}"),
            );
        }
        if self.cfg.signing_secret.is_some() {
            return PluginError::bad_config(
                "signing_secret",
                format!(
                    "HTTP {status} from {url}: check the credentials: the signature made with \
                     signing_secret is the only one this destination sends: {body}"
                ),
            );
        }
        let field = if self.cfg.headers.is_empty() {
            ""
        } else {
            "headers"
        };
        PluginError::bad_config(
            field,
            format!(
                "HTTP {status} from {url}: the destination refused the request and this sync \
                 sends no credentials: add a header such as config.headers = {{ Authorization \
                 = \"Bearer ${{env.NAME}}\" }}, with NAME granted in grants.env: {body}"
            ),
        )
    }

    /// A 207 Multi-Status: its per-row errors, read as `multi_status` says. Without that
    /// setting, or when the body does not read that way, the run stops: a 207 means some
    /// rows failed, and accepting them all would lose those failures.
    fn multi_status(&self, body: &str) -> Verdict {
        let url = &self.cfg.url;
        let shown: String = body.chars().take(500).collect();
        let Some(m) = &self.cfg.multi_status else {
            return Verdict::Retry(PluginError::bad_config(
                "multi_status",
                format!(
                    "HTTP 207 Multi-Status from {url}: the destination answered per-row results \
                     and this destination does not know how to read them; set config.multi_status \
                     (e.g. {{ errors = \"/errors\", index = \"index\", message = \"message\" }}) \
                     so the rows it refused are rejected and the others delivered: {shown}"
                ),
            ));
        };
        let unreadable = |why: String| {
            Verdict::Retry(PluginError::bad_config(
                "multi_status",
                format!("HTTP 207 Multi-Status from {url}: {why}: {shown}"),
            ))
        };
        let value: serde_json::Value = match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => return unreadable(format!("the body is not JSON ({e})")),
        };
        let Some(list) = value.pointer(&m.errors).and_then(|v| v.as_array()) else {
            return unreadable(format!(
                "the body has no array at {:?} (multi_status.errors)",
                m.errors
            ));
        };
        let mut errors = Vec::with_capacity(list.len());
        for item in list {
            let Some(object) = item.as_object() else {
                return unreadable(format!("the error {item} is not an object"));
            };
            let field = |name: &Option<String>| {
                name.as_ref()
                    .and_then(|f| object.get(f))
                    .filter(|v| !v.is_null())
                    .cloned()
            };
            let message = match object.get(&m.message) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) if !v.is_null() => v.to_string(),
                _ => item.to_string(),
            };
            errors.push(RowError {
                index: field(&m.index),
                key: field(&m.key),
                message,
            });
        }
        Verdict::Partial(errors)
    }

    /// The outcome of each of `n` rows of a 207 whose `errors` name rows by index or by
    /// primary key (`keys`, decoded only when an error needs them). An error that names no
    /// row of the request stops the run: the answer is not read the way it was written.
    fn partial_outcomes(
        &self,
        n: usize,
        errors: Vec<RowError>,
        keys: impl FnOnce() -> Result<Vec<Vec<serde_json::Value>>, PluginError>,
    ) -> Result<Vec<RowOutcome>, PluginError> {
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let mut keys = Some(keys);
        let mut decoded: Option<Vec<Vec<serde_json::Value>>> = None;
        let mut messages: Vec<Vec<String>> = vec![Vec::new(); n];
        for e in errors {
            let row = if let Some(index) = &e.index {
                let i = index
                    .as_u64()
                    .or_else(|| index.as_str().and_then(|s| s.trim().parse().ok()));
                i.map(|i| i as usize).filter(|i| *i < n)
            } else if let Some(key) = &e.key {
                if decoded.is_none() {
                    decoded = Some((keys.take().expect("decoded once"))()?);
                }
                let rows = decoded.as_ref().expect("decoded");
                rows.iter().position(|k| match (k.as_slice(), key) {
                    ([one], key) => text(one) == text(key),
                    (many, serde_json::Value::Array(parts)) => {
                        many.len() == parts.len()
                            && many.iter().zip(parts).all(|(a, b)| text(a) == text(b))
                    }
                    _ => false,
                })
            } else {
                None
            };
            let Some(row) = row else {
                let named = e
                    .index
                    .map(|i| format!("index {i}"))
                    .or(e.key.map(|k| format!("key {k}")))
                    .unwrap_or_else(|| "no row".into());
                return Err(PluginError::bad_config(
                    "multi_status",
                    format!(
                        "HTTP 207 Multi-Status from {}: an error names {named}, which is not a \
                         row of the request ({n} rows; index counts from 0, key is the primary \
                         key): {}",
                        self.cfg.url, e.message
                    ),
                ));
            };
            messages[row].push(e.message);
        }
        Ok(messages
            .into_iter()
            .map(|m| {
                if m.is_empty() {
                    RowOutcome::Accepted
                } else {
                    RowOutcome::Rejected(format!("HTTP 207: {}", m.join("; ")))
                }
            })
            .collect())
    }

    /// The primary key values of each row of `batch`, as JSON.
    fn batch_keys(&self, batch: &Batch) -> Result<Vec<Vec<serde_json::Value>>, PluginError> {
        let columns: Vec<usize> = self
            .primary_key
            .iter()
            .map(|k| {
                batch.column_index(k).ok_or_else(|| {
                    PluginError::bad_config(
                        "multi_status.key",
                        format!("the primary key column {k:?} is not among the fields sent"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        batch
            .rows()
            .map(|row| {
                let row = row.map_err(|e| PluginError::fatal(format!("undecodable batch: {e}")))?;
                Ok(columns.iter().map(|c| row[*c].to_json()).collect())
            })
            .collect()
    }

    /// The common case, fast: one JSON array per batch of the mapped fields as they are,
    /// written straight from the batch (no JSON value per row).
    fn fast_array_body(
        &self,
        op: Operation,
        batch: &Batch,
    ) -> Option<Result<Vec<u8>, PluginError>> {
        if self.cfg.batch_mode != BatchMode::Array
            || self.cfg.body_template.is_some()
            || self.present.is_some()
        {
            return None;
        }
        // An operation field named like a column replaces that column's value: the general path.
        let extra: Vec<(&str, &str)> = self
            .cfg
            .operation_field
            .as_deref()
            .map(|f| (f, op.as_str()))
            .into_iter()
            .collect();
        if extra.iter().any(|(f, _)| batch.column_index(f).is_some()) {
            return None;
        }
        // Two columns of one name (a query without aliases) make one field, the last value.
        let names = &batch.columns;
        if names
            .iter()
            .enumerate()
            .any(|(i, c)| names[..i].iter().any(|d| d.name == c.name))
        {
            return None;
        }
        let mut body = Vec::with_capacity(batch.payload.len() * 2 + 64);
        if let Some(key) = &self.cfg.wrapper {
            body.push(b'{');
            body.extend_from_slice(serde_json::to_string(key).unwrap_or_default().as_bytes());
            body.push(b':');
        }
        if let Err(e) = batch.write_json_array(&mut body, &extra) {
            return Some(Err(PluginError::fatal(format!("undecodable batch: {e}"))));
        }
        if self.cfg.wrapper.is_some() {
            body.push(b'}');
        }
        Some(Ok(body))
    }
}

impl DestinationWriter for WebhookWriter {
    /// What the destination holds for `keys`, through `config.lookup` (see `lookup.rs`).
    fn read(
        &mut self,
        keys: Batch,
    ) -> Result<backflow_plugin_sdk::warehouse::ReadResult, PluginError> {
        let Some(lookup) = &self.cfg.lookup else {
            return Err(PluginError::bad_config(
                "lookup",
                "the webhook reads back what the destination holds only through a lookup endpoint: set config.lookup = { url = \"https://…/records/{key}\" } (a GET per key, 404 = absent) or { url = \"…\", method = \"POST\", keys_field = \"keys\", response_path = \"records\" }",
            ));
        };
        lookup::read(lookup, &self.headers, self.cfg.timeout_ms, &keys)
    }

    fn write_present(
        &mut self,
        op: Operation,
        batch: Batch,
        present: Option<Vec<u8>>,
    ) -> Result<Vec<RowOutcome>, PluginError> {
        present::write_present(self, op, batch, present)
    }

    fn write(&mut self, op: Operation, batch: Batch) -> Result<Vec<RowOutcome>, PluginError> {
        if let Some(body) = self.fast_array_body(op, &batch) {
            let body = body?;
            let url = self.url(op, None)?;
            let n = batch.row_count as usize;
            // The body follows from the field names, the batch and the options: hashing
            // those (the payload is about half the body's size) gives a key as stable.
            let key = (!self.cfg.idempotency_header.is_empty()).then(|| {
                let names: Vec<u8> = batch
                    .columns
                    .iter()
                    .flat_map(|c| c.name.bytes().chain([0]))
                    .collect();
                let options = format!("{:?}|{:?}", self.cfg.wrapper, self.cfg.operation_field);
                self.idempotency_key(op, &[&names, options.as_bytes(), &batch.payload])
            });
            return match self.send_keyed(op, url, body, key) {
                Verdict::Accepted => Ok(vec![RowOutcome::Accepted; n]),
                Verdict::Rejected(m) => Ok(vec![RowOutcome::Rejected(m); n]),
                Verdict::Partial(errors) => {
                    self.partial_outcomes(n, errors, || self.batch_keys(&batch))
                }
                Verdict::Retry(e) => Err(e),
            };
        }
        let mut objects = Vec::with_capacity(batch.row_count as usize);
        let mut raw = Vec::with_capacity(batch.row_count as usize);
        for (r, row) in batch.rows().enumerate() {
            let row = row.map_err(|e| PluginError::fatal(format!("undecodable batch: {e}")))?;
            let mut object = serde_json::Map::with_capacity(row.len() + 1);
            for (c, (col, value)) in batch.columns.iter().zip(&row).enumerate() {
                if !present::is_present(&self.present, batch.columns.len(), r, c) {
                    continue;
                }
                object.insert(col.name.clone(), value.to_json());
            }
            if let Some(field) = &self.cfg.operation_field {
                object.insert(field.clone(), serde_json::Value::String(op.as_str().into()));
            }
            let object = serde_json::Value::Object(object);
            objects.push(self.row_body(op, object.clone())?);
            raw.push(object);
        }
        match self.cfg.batch_mode {
            BatchMode::Array => {
                let body = match &self.cfg.wrapper {
                    Some(key) => serde_json::to_vec(&serde_json::json!({ key.as_str(): objects })),
                    None => serde_json::to_vec(&objects),
                }
                .expect("JSON values serialize");
                let url = self.url(op, None)?;
                match self.send(op, url, body) {
                    Verdict::Accepted => Ok(vec![RowOutcome::Accepted; objects.len()]),
                    Verdict::Rejected(m) => Ok(vec![RowOutcome::Rejected(m); objects.len()]),
                    Verdict::Partial(errors) => {
                        self.partial_outcomes(objects.len(), errors, || self.batch_keys(&batch))
                    }
                    Verdict::Retry(e) => Err(e),
                }
            }
            BatchMode::Row => {
                let mut outcomes = Vec::with_capacity(objects.len());
                for (object, row) in objects.iter().zip(&raw) {
                    let body = serde_json::to_vec(object).expect("JSON values serialize");
                    // A row whose values cannot form a URL (`..`) is refused alone; any other
                    // rendering error is the template's and stops the run.
                    let url = match self.url(op, Some(row)) {
                        Ok(url) => url,
                        Err(e) if e.to_string().contains("cannot be a URL path segment") => {
                            outcomes.push(RowOutcome::Rejected(e.to_string()));
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    outcomes.push(match self.send(op, url, body) {
                        Verdict::Accepted => RowOutcome::Accepted,
                        Verdict::Rejected(m) => RowOutcome::Rejected(m),
                        // A request of one row: its errors name it (index 0, or its key).
                        Verdict::Partial(errors) => {
                            let key = || {
                                Ok(vec![self
                                    .primary_key
                                    .iter()
                                    .map(|k| row.get(k).cloned().unwrap_or_default())
                                    .collect()])
                            };
                            match self.partial_outcomes(1, errors, key) {
                                Ok(mut one) => one.remove(0),
                                Err(e) if outcomes.is_empty() => return Err(e),
                                Err(e) => RowOutcome::Retryable(e.to_string()),
                            }
                        }
                        // Rows already sent stay accepted; the rest are retried by the engine.
                        Verdict::Retry(PluginError::BadConfig(c)) if outcomes.is_empty() => {
                            return Err(PluginError::BadConfig(c))
                        }
                        Verdict::Retry(e) => RowOutcome::Retryable(e.to_string()),
                    });
                }
                Ok(outcomes)
            }
        }
    }
}

export_destination!(Webhook);
