//! Process-wide counters for `GET /metrics` (Prometheus text format): runs by status, rows by
//! operation and outcome, delivery request latency, retries, plugin call durations and
//! traps, plugin reloads; runs in flight and each sync's last success. Rows are counted as
//! each batch is recorded, so they move while a long run goes on.
//!
//! Counting is cheap (atomics) and always on, so a CLI run counts too; only the service
//! exposes them. Labels are sync and plugin names: bounded by the configuration.

use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    runs_in_flight: Gauge,
    last_success: Family<Labels, Gauge>,
    drift_rows: Family<Labels, Gauge>,
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
            runs_in_flight: Gauge::default(),
            last_success: Family::default(),
            drift_rows: Family::default(),
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
        registry.register(
            "runs_in_flight",
            "Runs going on in this process",
            m.runs_in_flight.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When each sync's last succeeded run finished (Unix seconds)",
            m.last_success.clone(),
        );
        registry.register(
            "drift_rows",
            "Rows drifted at each sync's destination by kind (missing, differing, deleted_present), as last measured (drift report or reconcile)",
            m.drift_rows.clone(),
        );
        Metrics { registry, ..m }
    })
}

/// Counts a finished run (its rows were counted as they were recorded, by [`record_rows`]).
pub fn record_run(run: &crate::domain::RunRecord) {
    let m = metrics();
    m.runs
        .get_or_create(&vec![
            ("sync", run.sync.clone()),
            ("status", run.status.as_str().to_string()),
        ])
        .inc();
    if run.status == crate::domain::RunStatus::Succeeded && !run.draft {
        m.last_success
            .get_or_create(&vec![("sync", run.sync.clone())])
            .set(jiff::Timestamp::now().as_second());
    }
}

/// Sets a sync's drift gauges as last measured: rows `missing`, `differing` and
/// `deleted_present` (a sample's counts are the sample's).
pub fn record_drift(sync: &str, missing: u64, differing: u64, deleted_present: u64) {
    let m = metrics();
    for (kind, rows) in [
        ("missing", missing),
        ("differing", differing),
        ("deleted_present", deleted_present),
    ] {
        m.drift_rows
            .get_or_create(&vec![
                ("sync", sync.to_string()),
                ("kind", kind.to_string()),
            ])
            .set(i64::try_from(rows).unwrap_or(i64::MAX));
    }
}

/// Counts the rows a batch added to a run's delivered and failed counts (`before` → `after`).
pub fn record_rows(
    sync: &str,
    before: (crate::domain::OpCounts, crate::domain::OpCounts),
    after: (crate::domain::OpCounts, crate::domain::OpCounts),
) {
    let m = metrics();
    for (outcome, was, now) in [
        ("delivered", before.0, after.0),
        ("failed", before.1, after.1),
    ] {
        for (op, n) in [
            ("added", now.added.saturating_sub(was.added)),
            ("changed", now.changed.saturating_sub(was.changed)),
            ("removed", now.removed.saturating_sub(was.removed)),
        ] {
            if n > 0 {
                m.rows
                    .get_or_create(&vec![
                        ("sync", sync.to_string()),
                        ("operation", op.to_string()),
                        ("outcome", outcome.to_string()),
                    ])
                    .inc_by(n);
            }
        }
    }
}

/// A run started in this process: counted in flight until the guard is dropped.
pub fn run_in_flight() -> InFlight {
    metrics().runs_in_flight.inc();
    InFlight(())
}

/// Counts one run in flight while it lives (see [`run_in_flight`]).
pub struct InFlight(());

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics().runs_in_flight.dec();
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

/// Every family, as exposed, and its type: a labelled family nothing counted into yet is
/// still announced (the encoder leaves empty families out, so a scrape would not see it).
const FAMILIES: &[(&str, &str)] = &[
    ("backflow_runs_total", "counter"),
    ("backflow_rows_total", "counter"),
    ("backflow_delivery_request_seconds", "histogram"),
    ("backflow_delivery_retries_total", "counter"),
    ("backflow_plugin_call_seconds", "histogram"),
    ("backflow_plugin_traps_total", "counter"),
    ("backflow_plugin_reloads_total", "counter"),
    ("backflow_runs_in_flight", "gauge"),
    ("backflow_last_success_timestamp_seconds", "gauge"),
    ("backflow_drift_rows", "gauge"),
];

/// Everything, in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &metrics().registry);
    let mut empty = String::new();
    for (name, kind) in FAMILIES {
        if !out.contains(&format!("# TYPE {name} ")) {
            empty.push_str(&format!("# TYPE {name} {kind}\n"));
        }
    }
    match out.rfind("# EOF") {
        Some(at) => out.insert_str(at, &empty),
        None => out.push_str(&empty),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_the_readme_lists_is_exposed() {
        let readme = include_str!("../../README.md");
        let line = readme
            .lines()
            .find(|l| l.contains("`GET /metrics`") && l.contains("backflow_runs_total"))
            .expect("the README's API table lists the metrics");
        let text = render();
        let listed: Vec<&str> = line
            .split('`')
            .filter(|w| w.starts_with("backflow_"))
            .map(|w| w.split('{').next().unwrap_or(w))
            .collect();
        assert!(listed.len() >= 9, "{listed:?}");
        for name in listed {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} is listed in the README but not exposed:\n{text}"
            );
        }
    }

    #[test]
    fn rows_count_as_batches_are_recorded_and_runs_in_flight_go_back_down() {
        use crate::domain::OpCounts;
        let none = OpCounts::default();
        let two = OpCounts { added: 2, ..none };
        record_rows("unit_live_sync", (none, none), (two, none));
        record_rows("unit_live_sync", (two, none), (two, two));
        let text = render();
        assert!(
            text.contains("backflow_rows_total{sync=\"unit_live_sync\",operation=\"added\",outcome=\"delivered\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("backflow_rows_total{sync=\"unit_live_sync\",operation=\"added\",outcome=\"failed\"} 2"),
            "{text}"
        );
        drop(run_in_flight());
        assert!(
            render().contains("backflow_runs_in_flight "),
            "{}",
            render()
        );
    }

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
