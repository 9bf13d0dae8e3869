//! Rows per second through the plugin boundary (issue 14, item 3): the same destination and
//! quality check written in Rust (SDK, contract 0.1.0, MessagePack rows), JavaScript and
//! Python (thin SDKs, contract 0.2.0, JSON rows), each doing nothing, or decoding every row and
//! reading one field: through a row view of each row (`field/row`), or as the field's column
//! (`field/col`, config `"via": "column"`). Batches of 500 rows of the throughput workload's table (`id`, `email`,
//! `name`, `plan`, `mrr` decimal, `country`, `updated_at` timestamp) go through the engine's
//! own host code (`DestinationInstance::write`, `CheckInstance::observe`), including the
//! conversion to JSON rows for the JSON plugins. Also: component size, compile time, load time
//! from the compiled-code cache, and instantiation (instance + `open`).
//!
//!     scripts/build-plugins && scripts/build-js-plugins && scripts/build-python-plugins
//!     cargo bench -p backflow --bench plugin_boundary [-- --rows N] [--repeat N] [--only TEXT]
//!
//! Each rate is the median of `--repeat` measurements (default 5) of `--rows` rows each
//! (default 100,000), each through a fresh instance; the range is printed below each line.
//! The interpreted plugins vary by ±25% from one measurement to the next (garbage
//! collections of their engines' heaps fall inside a measurement or not), so one
//! measurement is not enough. `--only` measures the plugins whose label contains TEXT (for
//! a profile of one of them). A plugin file that was not built is reported as missing and
//! skipped.

use backflow::domain::{Grants, Limits};
use backflow::host::{CheckInstance, DestinationInstance, PluginHost};
use backflow_plugin_sdk::{
    Batch, BatchBuilder, ChangeKind, Column, Operation, PlanSummary, SyncContext, Value, ValueType,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

const BATCH_ROWS: u32 = 500;

fn columns() -> Vec<Column> {
    [
        ("id", ValueType::Integer),
        ("email", ValueType::Text),
        ("name", ValueType::Text),
        ("plan", ValueType::Text),
        ("mrr", ValueType::Decimal),
        ("country", ValueType::Text),
        ("updated_at", ValueType::Timestamp),
    ]
    .into_iter()
    .map(|(n, t)| Column::new(n, t))
    .collect()
}

fn batch(first: u32) -> Batch {
    let mut builder = BatchBuilder::new(columns());
    for g in first..first + BATCH_ROWS {
        let g = i64::from(g);
        builder.push_row(&[
            Value::Int(g),
            Value::Text(format!("user{g}@example.com")),
            Value::Text(format!("User {g}")),
            Value::Text(["free", "pro", "enterprise"][(g % 3) as usize].into()),
            Value::Decimal(format!("{}.{:02}", g % 2000, g % 100)),
            Value::Text(["DE", "FR", "US", "JP", "BR"][(g % 5) as usize].into()),
            Value::Timestamp(1_704_067_200_000_000 + g * 1_000_000),
        ]);
    }
    builder.finish()
}

struct Subject {
    label: &'static str,
    file: PathBuf,
    check: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rows: u32 = flag("--rows")
        .map(|r| r.parse().expect("--rows N"))
        .unwrap_or(100_000);
    let repeat: usize = flag("--repeat")
        .map(|r| r.parse().expect("--repeat N"))
        .unwrap_or(5)
        .max(1);
    let only = flag("--only");
    let batches = rows.div_ceil(BATCH_ROWS);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let subjects = [
        Subject {
            label: "Rust destination",
            file: target.join("plugins-bench/bench_rust_destination.wasm"),
            check: false,
        },
        Subject {
            label: "JS destination",
            file: target.join("plugins-js/bench-js-destination.wasm"),
            check: false,
        },
        Subject {
            label: "Python destination",
            file: target.join("plugins-python/bench-python-destination.wasm"),
            check: false,
        },
        Subject {
            label: "Rust check",
            file: target.join("plugins-bench/bench_rust_check.wasm"),
            check: true,
        },
        Subject {
            label: "JS check",
            file: target.join("plugins-js/bench-js-check.wasm"),
            check: true,
        },
        Subject {
            label: "Python check",
            file: target.join("plugins-python/bench-python-check.wasm"),
            check: true,
        },
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let input: Vec<Batch> = (0..batches.min(20))
        .map(|b| batch(b * BATCH_ROWS))
        .collect();
    println!(
        "{} rows per measurement, batches of {BATCH_ROWS}; rates: median of {repeat} measurements",
        batches * BATCH_ROWS
    );
    println!(
        "{:<20} {:>8} {:>10} {:>10} {:>12} {:>14} {:>14} {:>14}",
        "plugin",
        "size MB",
        "compile s",
        "cached ms",
        "instance ms",
        "nothing rows/s",
        "field/row r/s",
        "field/col r/s"
    );
    for subject in &subjects {
        if only
            .as_ref()
            .is_some_and(|only| !subject.label.contains(only.as_str()))
        {
            continue;
        }
        if !subject.file.exists() {
            println!(
                "{:<20} missing: {} (see the build commands above)",
                subject.label,
                subject.file.display()
            );
            continue;
        }
        runtime.block_on(measure(subject, &input, batches, repeat));
    }
}

async fn measure(subject: &Subject, input: &[Batch], batches: u32, repeat: usize) {
    let size_mb = std::fs::metadata(&subject.file)
        .map(|m| m.len() as f64 / 1e6)
        .unwrap_or(0.0);
    let cache = tempfile::tempdir().expect("a temporary directory");
    let started = Instant::now();
    let host = PluginHost::new(Some(cache.path().to_path_buf())).expect("a plugin host");
    if let Err(e) = host.load(&subject.file).await {
        println!("{:<20} does not load: {e:#}", subject.label);
        return;
    }
    let compile_s = started.elapsed().as_secs_f64();
    // A second host: the code comes from the cache, as in every run after the first.
    let started = Instant::now();
    let host = PluginHost::new(Some(cache.path().to_path_buf())).expect("a plugin host");
    let plugin = host
        .load(&subject.file)
        .await
        .expect("loads from the cache");
    let cached_ms = started.elapsed().as_secs_f64() * 1e3;

    let grants = Grants::default();
    let limits = Limits {
        memory_mb: 512,
        ..Limits::default()
    };
    let context = SyncContext {
        sync_name: "bench".into(),
        primary_key: vec!["id".into()],
        run_id: "bench".into(),
    };
    let plan = PlanSummary {
        sync_name: "bench".into(),
        purpose: backflow_plugin_sdk::PlanPurpose::Run,
        columns: columns(),
        snapshot_rows: 0,
        model_rows: Some(0),
        added: 0,
        changed: 0,
        removed: 0,
    };
    const INSTANCES: u32 = 10;
    let started = Instant::now();
    for _ in 0..INSTANCES {
        if subject.check {
            let c = CheckInstance::open(&host, &plugin, &grants, limits, "{}", &plan)
                .await
                .expect("opens");
            c.finish().await.expect("finishes");
        } else {
            let w = DestinationInstance::open(&host, &plugin, &grants, limits, "{}", &context)
                .await
                .expect("opens");
            w.finish().await.expect("finishes");
        }
    }
    let instance_ms = started.elapsed().as_secs_f64() * 1e3 / f64::from(INSTANCES);

    // Per configuration: the median rate and the lowest and highest.
    let mut rates: Vec<(f64, f64, f64)> = Vec::new();
    for config in [
        "{}",
        r#"{"read": "email"}"#,
        r#"{"read": "email", "via": "column"}"#,
    ] {
        let rows = u64::from(batches) * u64::from(BATCH_ROWS);
        let mut measured = Vec::with_capacity(repeat);
        for _ in 0..repeat {
            let started = Instant::now();
            if subject.check {
                let mut c = CheckInstance::open(&host, &plugin, &grants, limits, config, &plan)
                    .await
                    .expect("opens");
                for b in 0..batches as usize {
                    c.observe(ChangeKind::Added, input[b % input.len()].clone(), None)
                        .await
                        .unwrap_or_else(|e| panic!("{}: {e}", subject.label));
                }
                c.finish().await.expect("finishes");
            } else {
                let mut w =
                    DestinationInstance::open(&host, &plugin, &grants, limits, config, &context)
                        .await
                        .expect("opens");
                for b in 0..batches as usize {
                    w.write(Operation::Insert, input[b % input.len()].clone())
                        .await
                        .unwrap_or_else(|e| panic!("{}: {e}", subject.label));
                }
                w.finish().await.expect("finishes");
            }
            measured.push(rows as f64 / started.elapsed().as_secs_f64());
        }
        measured.sort_by(f64::total_cmp);
        rates.push((
            measured[measured.len() / 2],
            measured[0],
            measured[measured.len() - 1],
        ));
    }
    println!(
        "{:<20} {:>8.1} {:>10.2} {:>10.1} {:>12.1} {:>14.0} {:>14.0} {:>14.0}",
        subject.label,
        size_mb,
        compile_s,
        cached_ms,
        instance_ms,
        rates[0].0,
        rates[1].0,
        rates[2].0
    );
    let range = |(_, low, high): (f64, f64, f64)| format!("{:.0}k-{:.0}k", low / 1e3, high / 1e3);
    println!(
        "{:<20} {:>43} {:>14} {:>14} {:>14}",
        "",
        "range:",
        range(rates[0]),
        range(rates[1]),
        range(rates[2])
    );
}
