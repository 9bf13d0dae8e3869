//! Destinations against a fault-injecting endpoint (`--fault-config`, issue 41): the suite
//! plays an API that answers 429 with `Retry-After`, storms of 5xx, slow answers and a lost
//! acknowledgement (the request was applied, the answer was a 500), and retries the same
//! batch as a run would. A destination passes when every failure is retryable, every retry
//! of a batch carries the same idempotency key as its first attempt, and no batch is applied
//! twice.
//!
//! The endpoint is an HTTP server on 127.0.0.1 (a free port, granted to the plugin for these
//! checks); `${faults.url}` in the fault config is replaced by its base URL
//! (`http://127.0.0.1:PORT`). The idempotency key is read from any request header whose name
//! contains `idempotency` (`Idempotency-Key`, `X-Idempotency-Key`). The endpoint applies a
//! request once per key: a replay with a key already applied is answered 200 without applying
//! it again, as APIs with idempotency keys do; the same body applied under a second key (or
//! twice without a key) is a row acknowledged twice.

use super::options::Options;
use super::report::{describe_error, Outcome, Report};
use super::samples::SampleRows;
use crate::domain::NetworkGrant;
use crate::host::{DestinationInstance, Plugin, PluginHost};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use backflow_plugin_sdk::{Operation, RowOutcome, SyncContext};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The text of the fault config that names the endpoint.
pub const FAULTS_URL: &str = "${faults.url}";

/// How the endpoint answers one request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// This status without applying the request (`Retry-After` seconds with a 429).
    Refuse(u16, Option<u32>),
    /// Apply the request, then answer 500: the acknowledgement is lost.
    ApplyThenFail,
    /// Apply the request and answer 200 after this long.
    Slow(Duration),
}

/// One request the endpoint saw.
#[derive(Debug, Clone)]
struct Seen {
    key: Option<String>,
    body: Vec<u8>,
}

#[derive(Default)]
struct EndpointState {
    script: VecDeque<Answer>,
    seen: Vec<Seen>,
    /// Keys already applied (a replay with one of them is not applied again).
    applied_keys: Vec<String>,
    /// Bodies applied, with how many times.
    applied_bodies: HashMap<Vec<u8>, usize>,
}

/// The fault-injecting endpoint; stops when dropped.
struct Endpoint {
    url: String,
    grant: NetworkGrant,
    state: Arc<Mutex<EndpointState>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .iter()
        .find(|(name, _)| name.as_str().to_ascii_lowercase().contains("idempotency"))
        .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Applies a request: once per idempotency key; counts what each body was applied.
fn apply(state: &mut EndpointState, key: &Option<String>, body: &[u8]) {
    if let Some(k) = key {
        if state.applied_keys.contains(k) {
            return;
        }
        state.applied_keys.push(k.clone());
    }
    *state.applied_bodies.entry(body.to_vec()).or_default() += 1;
}

async fn answer(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<EndpointState>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let key = idempotency_key(&headers);
    let next = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.seen.push(Seen {
            key: key.clone(),
            body: body.to_vec(),
        });
        s.script.pop_front()
    };
    let ok = || (StatusCode::OK, "{\"ok\":true}").into_response();
    let apply_now = || {
        apply(
            &mut state.lock().unwrap_or_else(|e| e.into_inner()),
            &key,
            &body,
        )
    };
    match next {
        Some(Answer::Refuse(status, retry_after)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut response = (status, "{\"error\":\"injected fault\"}").into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.to_string().parse().expect("digits"));
            }
            response
        }
        Some(Answer::ApplyThenFail) => {
            apply_now();
            (StatusCode::INTERNAL_SERVER_ERROR, "{\"error\":\"lost\"}").into_response()
        }
        Some(Answer::Slow(wait)) => {
            tokio::time::sleep(wait).await;
            apply_now();
            ok()
        }
        None => {
            apply_now();
            ok()
        }
    }
}

impl Endpoint {
    async fn start() -> std::io::Result<Endpoint> {
        let state = Arc::new(Mutex::new(EndpointState::default()));
        let app = axum::Router::new()
            .fallback(answer)
            .layer(axum::extract::DefaultBodyLimit::max(32 << 20))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        let grant = addr
            .to_string()
            .parse::<NetworkGrant>()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Endpoint {
            url: format!("http://{addr}"),
            grant,
            state,
            _stop: stop,
        })
    }

    /// Starts a scenario: the next requests are answered by `script`, then 200.
    fn script(&self, script: &[Answer]) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.script = script.iter().copied().collect();
        s.seen.clear();
        s.applied_bodies.clear();
    }

    fn seen(&self) -> Vec<Seen> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .clone()
    }

    fn most_applied(&self) -> usize {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.applied_bodies.values().copied().max().unwrap_or(0)
    }
}

/// A scenario: its check's name and how the endpoint answers the first attempts.
fn scenarios() -> Vec<(&'static str, Vec<Answer>)> {
    vec![
        (
            "429 with Retry-After, then accepted",
            vec![Answer::Refuse(429, Some(1))],
        ),
        (
            "a storm of 5xx (503, 500, 502), then accepted",
            vec![
                Answer::Refuse(503, None),
                Answer::Refuse(500, None),
                Answer::Refuse(502, None),
            ],
        ),
        (
            "a slow answer (2 s) is accepted",
            vec![Answer::Slow(Duration::from_secs(2))],
        ),
        (
            "a lost acknowledgement (applied, answered 500) is replayed with the same key",
            vec![Answer::ApplyThenFail],
        ),
    ]
}

/// Runs the fault scenarios when `options.fault_config` is given (a skip otherwise).
pub(super) async fn check_faults(
    report: &mut Report,
    host: &PluginHost,
    plugin: &Plugin,
    options: &Options,
    context: &SyncContext,
    samples: &SampleRows,
) {
    let Some(config) = &options.fault_config else {
        report.record("fault injection", Outcome::Skip, "no --fault-config given");
        return;
    };
    let Some(&op) = plugin
        .spec
        .operations
        .iter()
        .find(|o| **o != Operation::Delete)
        .or(plugin.spec.operations.first())
    else {
        report.record("fault injection", Outcome::Skip, "no operation declared");
        return;
    };
    let endpoint = match Endpoint::start().await {
        Ok(e) => e,
        Err(e) => {
            report.record("fault injection", Outcome::Fail, format!("endpoint: {e}"));
            return;
        }
    };
    let mut grants = options.grants.clone();
    grants.network.push(endpoint.grant.clone());
    let config = config.replace(FAULTS_URL, &endpoint.url);
    let mut writer =
        match DestinationInstance::open(host, plugin, &grants, options.limits, &config, context)
            .await
        {
            Ok(w) => w,
            Err(e) => {
                report.record("fault injection: open", Outcome::Fail, describe_error(&e));
                return;
            }
        };
    let width = if op == Operation::Delete {
        1
    } else {
        samples.columns.len()
    };
    let rows = samples.many().min(3);
    for (i, (name, script)) in scenarios().into_iter().enumerate() {
        endpoint.script(&script);
        // Each scenario writes other rows, so that no two batches are the same.
        let first = u32::try_from(i).unwrap_or(0) * rows;
        let batch = BatchRows {
            samples,
            width,
            rows: (first..first + rows).collect(),
        };
        let (outcome, detail) =
            run_scenario(&mut writer, op, &batch, &endpoint, script.len()).await;
        let trapped = detail.contains("trapped");
        report.record(format!("faults: {name}"), outcome, detail);
        if trapped {
            return;
        }
    }
    let _ = writer.finish().await;
}

/// Writes one batch until every row is accepted (at most once per scripted fault, plus
/// one), re-sending only the rows not yet accepted, as a run does; then judges the keys the
/// endpoint saw and what it applied.
async fn run_scenario(
    writer: &mut DestinationInstance,
    op: Operation,
    batch: &BatchRows<'_>,
    endpoint: &Endpoint,
    faults: usize,
) -> (Outcome, String) {
    let mut pending: Vec<u32> = batch.rows.clone();
    for _ in 0..=faults {
        if pending.is_empty() {
            break;
        }
        let result = writer
            .write(op, batch.samples.batch_of(batch.width, &pending))
            .await;
        match result {
            Ok(outcomes) if outcomes.len() == pending.len() => {
                let mut still = Vec::new();
                for (row, outcome) in pending.iter().zip(&outcomes) {
                    match outcome {
                        RowOutcome::Accepted => {}
                        RowOutcome::Retryable(_) => still.push(*row),
                        other => {
                            return (
                                Outcome::Fail,
                                format!("row {row} answered {other:?} (expected retryable)"),
                            )
                        }
                    }
                }
                pending = still;
            }
            Ok(outcomes) => {
                return (
                    Outcome::Fail,
                    format!("{} outcomes for {} rows", outcomes.len(), pending.len()),
                )
            }
            Err(e) if e.is_retryable() => {}
            Err(e) => {
                return (
                    Outcome::Fail,
                    format!("{} (expected retryable)", describe_error(&e)),
                )
            }
        }
    }
    if !pending.is_empty() {
        return (
            Outcome::Fail,
            format!(
                "{} rows still not accepted after {} attempts",
                pending.len(),
                faults + 1
            ),
        );
    }
    judge(&endpoint.seen(), endpoint.most_applied())
}

/// The rows of one scenario's batch.
struct BatchRows<'a> {
    samples: &'a SampleRows,
    width: usize,
    rows: Vec<u32>,
}

/// The verdict on what the endpoint saw: every body sent more than once carried one and the
/// same idempotency key, and no body was applied twice.
fn judge(seen: &[Seen], most_applied: usize) -> (Outcome, String) {
    if seen.is_empty() {
        return (
            Outcome::Fail,
            format!("sent no request to the endpoint ({FAULTS_URL})"),
        );
    }
    let mut keys_by_body: HashMap<&[u8], Vec<&Option<String>>> = HashMap::new();
    for s in seen {
        keys_by_body.entry(&s.body).or_default().push(&s.key);
    }
    for keys in keys_by_body.values().filter(|k| k.len() > 1) {
        if keys.iter().any(|k| k.is_none()) {
            return (
                Outcome::Fail,
                "a retried request carried no idempotency key header: a retry after a lost \
                 answer would apply the rows twice"
                    .into(),
            );
        }
        if keys.windows(2).any(|w| w[0] != w[1]) {
            let shown: Vec<&str> = keys.iter().filter_map(|k| k.as_deref()).collect();
            return (
                Outcome::Fail,
                format!(
                    "a retry carried a new idempotency key ({}): the API would apply the rows \
                     again",
                    shown.join(" then ")
                ),
            );
        }
    }
    if most_applied > 1 {
        return (
            Outcome::Fail,
            "the same rows were applied twice (acknowledged twice)".into(),
        );
    }
    (
        Outcome::Pass,
        format!(
            "{} request(s), the same idempotency key on every retry",
            seen.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(key: Option<&str>, body: &str) -> Seen {
        Seen {
            key: key.map(str::to_string),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn retries_must_keep_their_key_and_nothing_is_applied_twice() {
        let same = [
            seen(Some("k1"), "a"),
            seen(Some("k1"), "a"),
            seen(Some("k2"), "b"),
        ];
        assert_eq!(judge(&same, 1).0, Outcome::Pass);
        let (outcome, why) = judge(&[seen(Some("k1"), "a"), seen(Some("k9"), "a")], 1);
        assert_eq!(outcome, Outcome::Fail);
        assert!(why.contains("new idempotency key (k1 then k9)"), "{why}");
        let (outcome, why) = judge(&[seen(None, "a"), seen(None, "a")], 1);
        assert_eq!(outcome, Outcome::Fail);
        assert!(why.contains("no idempotency key"), "{why}");
        assert_eq!(judge(&[seen(Some("k1"), "a")], 2).0, Outcome::Fail);
        assert_eq!(judge(&[], 0).0, Outcome::Fail);
    }

    #[test]
    fn a_key_is_applied_once() {
        let mut state = EndpointState::default();
        let key = Some("k".to_string());
        apply(&mut state, &key, b"rows");
        apply(&mut state, &key, b"rows");
        assert_eq!(state.applied_bodies[&b"rows".to_vec()], 1);
        apply(&mut state, &Some("other".into()), b"rows");
        assert_eq!(state.applied_bodies[&b"rows".to_vec()], 2);
    }
}
