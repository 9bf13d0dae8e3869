//! Calling into a guest: the plumbing every contract version's bindings and every instance
//! share. [`guest_call!`] runs one export with the instance's CPU clock and wall-clock limit,
//! and turns what wasmtime reports (a trap, an interrupt, a failed memory grow) into a
//! [`CallError`] that says what happened in words.
//!
//! It sits below both `bindings` (which make the calls) and `instance` (which dispatches to
//! them), so neither imports the other for it.

use super::PluginState;
use backflow_plugin_sdk::PluginError;
use std::fmt;
use wasmtime::Store;

/// Why a call into a plugin failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The plugin returned an error value; the instance is still usable.
    Plugin(PluginError),
    /// The plugin trapped, ran out of time or memory; the instance is unusable.
    Trap(String),
    /// The host could not set up the call (e.g. a granted directory is missing).
    Host(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Plugin(e) => write!(f, "{e}"),
            CallError::Trap(m) => write!(f, "{m}"),
            CallError::Host(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for CallError {}

impl CallError {
    /// Whether the plugin said the call may succeed if made again (a `retryable` error).
    pub fn is_retryable(&self) -> bool {
        matches!(self, CallError::Plugin(e) if e.is_retryable())
    }

    /// The same error with granted secrets and credential-shaped values cut from every
    /// message (see [`crate::redact`]).
    pub fn redacted(self, secrets: &[String]) -> CallError {
        let r = |m: String| crate::redact::redact(secrets, &m);
        match self {
            CallError::Plugin(e) => CallError::Plugin(match e {
                PluginError::Retryable { message } => PluginError::Retryable {
                    message: r(message),
                },
                PluginError::RateLimited {
                    message,
                    retry_after_ms,
                } => PluginError::RateLimited {
                    message: r(message),
                    retry_after_ms,
                },
                PluginError::BadConfig(mut c) => {
                    c.message = r(c.message);
                    PluginError::BadConfig(c)
                }
                PluginError::BadRow(mut row) => {
                    row.message = r(row.message);
                    row.key = row.key.map(r);
                    PluginError::BadRow(row)
                }
                PluginError::Fatal { message } => PluginError::Fatal {
                    message: r(message),
                },
            }),
            CallError::Trap(m) => CallError::Trap(r(m)),
            CallError::Host(m) => CallError::Host(r(m)),
        }
    }
}

/// Starts the per-call CPU clock. Pair with [`finish`]; see [`guest_call!`].
pub(crate) fn begin(
    store: &mut Store<PluginState>,
) -> (
    std::time::Duration,
    std::sync::Arc<super::cpu_clock::CpuMeter>,
) {
    store.data_mut().clock.start();
    store.data().stderr.clear();
    store.set_epoch_deadline(1);
    (store.data().clock.wall, store.data().clock.meter.clone())
}

/// The error for a call that outlived its wall-clock limit. The call's future was dropped,
/// which leaves the instance unusable, as a trap does.
pub(crate) fn wall_timeout(store: &mut Store<PluginState>) -> CallError {
    let state = store.data();
    CallError::Trap(format!(
        "plugin {} did not return within {} ms (its wall-clock limit, limits.wall_timeout_ms) and was stopped",
        state.plugin_name,
        state.clock.wall.as_millis()
    ))
}

/// Turns a wasmtime error (trap, interrupt, failed grow) into a [`CallError::Trap`] that says
/// what happened in words, including the tail of what the plugin wrote to stderr (a Rust
/// plugin's panic message lands there).
pub(crate) fn finish<R>(
    store: &mut Store<PluginState>,
    result: wasmtime::Result<R>,
) -> Result<R, CallError> {
    let error = match result {
        Ok(r) => return Ok(r),
        Err(e) => e,
    };
    let state = store.data();
    let name = &state.plugin_name;
    let detail = format!("{error:?}");
    let mut message = if state.clock.timed_out
        || matches!(
            error.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
        format!(
            "plugin {name} exceeded its CPU time limit of {} ms and was stopped",
            state.clock.budget.as_millis()
        )
    } else if detail.contains("forcing trap when growing memory")
        || detail.contains("memory allocation failed")
    {
        format!("plugin {name} exceeded its memory limit and was stopped")
    } else if detail.contains("resource table has no free keys") {
        format!(
            "plugin {name} held more than {} host resources (streams, pollables, sockets) at once and was stopped; the limit follows limits.memory_mb",
            state.table.max_capacity()
        )
    } else if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        format!("plugin {name} crashed ({trap})")
    } else {
        format!("plugin {name} failed: {}", error.root_cause())
    };
    let stderr = state.stderr.contents();
    let stderr = String::from_utf8_lossy(&stderr);
    let stderr = stderr.trim();
    if !stderr.is_empty() {
        let tail: String = stderr
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        message.push_str(": ");
        message.push_str(&tail.replace('\n', " "));
    }
    tracing::debug!(plugin = %name, "{}", crate::redact::redact(&state.secrets, &detail));
    Err(CallError::Trap(crate::redact::redact(
        &state.secrets,
        &message,
    )))
}

/// Calls into a guest with the CPU clock running: `guest_call!(store, future)`.
macro_rules! guest_call {
    ($store:expr, $call:expr) => {{
        let (wall, meter) = $crate::host::call::begin($store);
        let started = std::time::Instant::now();
        let result = match $crate::host::call::within_wall(
            wall,
            meter.clone(),
            $crate::host::call::charged(meter, $call),
        )
        .await
        {
            Some(result) => $crate::host::call::finish($store, result),
            None => Err($crate::host::call::wall_timeout($store)),
        };
        let trapped = matches!(result, Err($crate::host::CallError::Trap(_)));
        $crate::metrics::record_plugin_call(
            &$store.data().plugin_name,
            started.elapsed().as_secs_f64(),
            trapped,
        );
        result
    }};
}
pub(crate) use guest_call;

pub(crate) use super::cpu_clock::within_wall;

/// The call's future with its CPU time metered, for [`guest_call!`].
pub(crate) fn charged<F: std::future::Future>(
    meter: std::sync::Arc<super::cpu_clock::CpuMeter>,
    call: F,
) -> impl std::future::Future<Output = F::Output> {
    super::cpu_clock::Charged::new(meter, call)
}
