//! Process-wide counters for `GET /metrics` (Prometheus text format): runs by status, rows by
//! operation and outcome, delivery request latency, retries, plugin call durations and
//! traps, plugin reloads.
//!
//! Counting is cheap (atomics) and always on, so a CLI run counts too; only the service
//! exposes them. Labels are sync and plugin names: bounded by the configuration.

use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// The process's one registry and its metric families (labelled by sync, plugin or file),
/// created on first use; the `record_*` functions count into it and [`render`] exposes it.
pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Counter>,
    rows: Family<Labels, Counter>,
    delivery_seconds: Histograms,
    retries: Family<Labels, Counter>,
    plugin_call_seconds: Histograms,
    plugin_traps: Family<Labels, Counter>,
    plugin_reloads: Family<Labels, Counter>,
}

fn seconds_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("backflow");
        let m = Metrics {
            runs: Family::default(),
            rows: Family::default(),
            delivery_seconds: Family::new_with_constructor(seconds_histogram),
            retries: Family::default(),
            plugin_call_seconds: Family::new_with_constructor(seconds_histogram),
            plugin_traps: Family::default(),
            plugin_reloads: Family::default(),
            registry: Registry::default(),
        };
        registry.register("runs", "Finished runs by sync and status", m.runs.clone());
        registry.register(
            "rows",
            "Rows by sync, operation (added, changed, removed) and outcome (delivered, failed)",
            m.rows.clone(),
        );
        registry.register(
            "delivery_request_seconds",
            "Duration of one destination write call, retries included separately",
            m.delivery_seconds.clone(),
        );
        registry.register(
            "delivery_retries",
            "Destination write calls retried after a retryable failure",
            m.retries.clone(),
        );
        registry.register(
            "plugin_call_seconds",
            "Duration of calls into plugins",
            m.plugin_call_seconds.clone(),
        );
        registry.register(
            "plugin_traps",
            "Plugin calls that trapped (crash, CPU or memory limit, timeout)",
            m.plugin_traps.clone(),
        );
        registry.register(
            "plugin_reloads",
            "Plugin files the service loaded (accepted) or refused",
            m.plugin_reloads.clone(),
        );
        Metrics { registry, ..m }
    })
}

/// Counts a finished run.
pub fn record_run(run: &crate::domain::RunRecord) {
    let m = metrics();
    m.runs
        .get_or_create(&vec![
            ("sync", run.sync.clone()),
            ("status", run.status.as_str().to_string()),
        ])
        .inc();
    for (outcome, counts) in [("delivered", &run.delivered), ("failed", &run.failed)] {
        for (op, n) in [
            ("added", counts.added),
            ("changed", counts.changed),
            ("removed", counts.removed),
        ] {
            if n > 0 {
                m.rows
                    .get_or_create(&vec![
                        ("sync", run.sync.clone()),
                        ("operation", op.to_string()),
                        ("outcome", outcome.to_string()),
                    ])
                    .inc_by(n);
            }
        }
    }
}

/// Times one destination write call of a sync's delivery (`seconds`), counting it as a
/// retry when it is not the batch's first attempt.
pub fn record_delivery(sync: &str, seconds: f64, retry: bool) {
    let m = metrics();
    m.delivery_seconds
        .get_or_create(&vec![("sync", sync.to_string())])
        .observe(seconds);
    if retry {
        m.retries
            .get_or_create(&vec![("sync", sync.to_string())])
            .inc();
    }
}

/// Times one call into a plugin (`seconds`), counting it as a trap when it crashed or hit
/// its CPU, memory or wall-clock limit.
pub fn record_plugin_call(plugin: &str, seconds: f64, trapped: bool) {
    let m = metrics();
    m.plugin_call_seconds
        .get_or_create(&vec![("plugin", plugin.to_string())])
        .observe(seconds);
    if trapped {
        m.plugin_traps
            .get_or_create(&vec![("plugin", plugin.to_string())])
            .inc();
    }
}

/// Counts a plugin file the service's hot reload loaded (`accepted`) or refused.
pub fn record_reload(plugin_file: &str, accepted: bool) {
    metrics()
        .plugin_reloads
        .get_or_create(&vec![
            ("file", plugin_file.to_string()),
            (
                "outcome",
                if accepted { "accepted" } else { "refused" }.to_string(),
            ),
        ])
        .inc();
}

/// Everything, in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &metrics().registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_with_their_labels() {
        record_plugin_call("unit-test-plugin", 0.002, true);
        record_delivery("unit_test_sync", 0.01, true);
        let text = render();
        assert!(
            text.contains("backflow_plugin_traps_total{plugin=\"unit-test-plugin\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("backflow_delivery_retries_total{sync=\"unit_test_sync\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("backflow_plugin_call_seconds_bucket"),
            "{text}"
        );
    }
}
