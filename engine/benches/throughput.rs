//! Throughput of file-source → engine → no-op destination, through the Wasm boundary
//! (`noop-destination` plugin) and beside it a native no-op (`builtin:noop`), plus peak RSS as
//! the file grows 10×. Each measurement runs in its own process so peak RSS is its own.
//!
//!     scripts/build-plugins && cargo bench -p backflow --bench throughput
//!
//! Options: `-- --rows 1000000` (largest size; the smaller one is a tenth of it).

mod common;

use common::peak_rss_mb;
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(dest) = arg("--one") {
        let rows: u64 = arg("--rows").unwrap().parse().unwrap();
        let dir = arg("--dir").unwrap();
        one(Path::new(&dir), &dest, rows);
        return;
    }
    let max_rows: u64 = arg("--rows")
        .map(|r| r.parse().unwrap())
        .unwrap_or(1_000_000);
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .canonicalize()
        .expect("run scripts/build-plugins first");
    let dir = tempfile::tempdir().unwrap();
    println!(
        "{:>10} {:<22} {:>8} {:>10} {:>9} {:>12} {:>12}",
        "rows", "destination", "seconds", "rows/s", "plan ms", "deliver ms", "peak RSS MB"
    );
    for rows in [max_rows / 10, max_rows] {
        let ws = dir.path().join(format!("ws{rows}"));
        write_workspace(&ws, &plugins, rows);
        for dest in ["wasm", "native"] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--one",
                    dest,
                    "--rows",
                    &rows.to_string(),
                    "--dir",
                    ws.to_str().unwrap(),
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}

fn write_workspace(ws: &Path, plugins: &Path, rows: u64) {
    std::fs::create_dir_all(ws.join("data")).unwrap();
    std::fs::write(
        ws.join("backflow.toml"),
        format!(
            r#"
[workspace]
plugins_dir = "{plugins}"
[sources.files]
plugin = "file-source"
grants.files = ["data"]
[destinations.wasm]
plugin = "noop-destination"
[destinations.native]
plugin = "builtin:noop"
[models.customers]
source = "files"
query = "data/customers.csv"
primary_key = "id"
[syncs.wasm]
model = "customers"
destination = "wasm"
batch_size = 5000
[syncs.native]
model = "customers"
destination = "native"
batch_size = 5000
"#,
            plugins = plugins.display()
        ),
    )
    .unwrap();
    common::write_customers(&ws.join("data/customers.csv"), rows);
}

fn one(ws: &Path, dest: &str, rows: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let workspace = backflow::workspace::Workspace::load(ws).unwrap();
        let host = backflow::plugins::Registry::new(
            backflow::host::PluginHost::new(Some(workspace.state_dir.join("cache"))).unwrap(),
        );
        let state = backflow::state::StateStore::open(&workspace.state_dir).unwrap();
        // Warm the compiled-component cache so compilation is not timed.
        backflow::sync::prepare::prepare(&host, &workspace, dest)
            .await
            .unwrap();
        let started = Instant::now();
        let run = backflow::app::run_sync(
            &host,
            &workspace,
            &state,
            dest,
            &backflow::sync::RunOptions::default(),
        )
        .await
        .unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(run.delivered.added, rows, "{run:?}");
        let label = if dest == "wasm" {
            "noop-destination.wasm"
        } else {
            "builtin:noop (native)"
        };
        println!(
            "{rows:>10} {label:<22} {secs:>8.2} {:>10.0} {:>9} {:>12} {:>12.1}",
            rows as f64 / secs,
            run.timings.plan_ms,
            run.timings.deliver_ms,
            peak_rss_mb()
        );
    });
}
