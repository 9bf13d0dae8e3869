//! Diff throughput and peak RSS on a large model with a small change, and the end-to-end time
//! of a no-change rerun. Each measured run is its own process, so peak RSS is its own.
//!
//!     scripts/build-plugins && cargo bench -p backflow --bench diff [-- --rows 10000000]
//!
//! The model's second version changes 1% of rows, removes 0.1% and adds 0.5%.

mod common;

use common::peak_rss_mb;
use std::io::Write;
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
    if let Some(ws) = arg("--run") {
        run_once(Path::new(&ws), arg("--sync").as_deref().unwrap_or("bench"));
        return;
    }
    let rows: u64 = arg("--rows")
        .map(|r| r.parse().unwrap())
        .unwrap_or(10_000_000);
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .canonicalize()
        .expect("run scripts/build-plugins first");
    let dir =
        tempfile::tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")).unwrap();

    // 1. The diff on a large model.
    let ws = dir.path().join("large");
    workspace(&ws, &plugins);
    let t = Instant::now();
    write_model(&ws.join("data/model.csv"), rows, false);
    eprintln!("wrote {rows} rows in {:.1} s", t.elapsed().as_secs_f64());
    println!("initial sync (fills the snapshot): {}", child(&ws, "bench"));
    write_model(&ws.join("data/model.csv"), rows, true);
    println!(
        "diff run (1% changed, 0.1% removed, 0.5% added): {}",
        child(&ws, "bench")
    );

    // 2. A no-change rerun of a 1,000,000-row sync, end to end (process start to exit).
    let small = dir.path().join("small");
    workspace(&small, &plugins);
    write_model(&small.join("data/model.csv"), 1_000_000, false);
    child(&small, "bench");
    let t = Instant::now();
    let result = child(&small, "bench");
    println!(
        "no-change rerun of 1,000,000 rows: {:.2} s wall, process start to exit ({result})",
        t.elapsed().as_secs_f64()
    );
}

fn child(ws: &Path, sync: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--run", ws.to_str().unwrap(), "--sync", sync])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn workspace(ws: &Path, plugins: &Path) {
    std::fs::create_dir_all(ws.join("data")).unwrap();
    std::fs::write(
        ws.join("backflow.toml"),
        format!(
            r#"
[workspace]
plugins_dir = "{}"
[sources.files]
plugin = "file-source"
grants.files = ["data"]
[destinations.sink]
plugin = "builtin:noop"
[models.model]
source = "files"
query = "data/model.csv"
primary_key = "id"
[syncs.bench]
model = "model"
destination = "sink"
mode = "mirror"
batch_size = 5000
"#,
            plugins.display()
        ),
    )
    .unwrap();
}

/// Rows `0..rows`; with `changed`, 1% of rows get a new value, 0.1% are dropped and 0.5%
/// new rows are appended.
fn write_model(path: &Path, rows: u64, changed: bool) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    writeln!(f, "id,email,name,plan,mrr,signed_up,active").unwrap();
    let plans = ["free", "pro", "enterprise"];
    for i in 0..rows {
        if changed && i % 1000 == 7 {
            continue; // removed
        }
        let plan = if changed && i % 100 == 3 {
            "churned"
        } else {
            plans[(i % 3) as usize]
        };
        writeln!(
            f,
            "{i},user{i}@example.com,User {i},{plan},{}.{:02},2023-{:02}-{:02},{}",
            i % 2000,
            i % 100,
            1 + i % 12,
            1 + i % 28,
            i % 2 == 0
        )
        .unwrap();
    }
    if changed {
        for i in rows..rows + rows / 200 {
            writeln!(
                f,
                "{i},new{i}@example.com,New {i},pro,10.00,2024-01-01,true"
            )
            .unwrap();
        }
    }
}

fn run_once(ws: &Path, sync: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let workspace = backflow::workspace::Workspace::load(ws).unwrap();
        let host = backflow::plugins::Registry::new(backflow::host::PluginHost::new(Some(workspace.state_dir.join("cache"))).unwrap());
        let state = backflow::state::StateStore::open(&workspace.state_dir).unwrap();
        let run = backflow::app::run_sync(&host, &workspace, &state, sync, &backflow::sync::RunOptions::default()).await.unwrap();
        assert_eq!(run.status, backflow::state::RunStatus::Succeeded, "{run:?}");
        let diff_rate = run.model_rows as f64 / (run.timings.plan_ms.max(1) as f64 / 1000.0);
        println!(
            "model {} rows, diff +{} ~{} -{} ={}; plan {} ms ({:.0} rows/s), deliver+commit {} ms, total {} ms, peak RSS {:.0} MB",
            run.model_rows,
            run.diff.added,
            run.diff.changed,
            run.diff.removed,
            run.diff.unchanged,
            run.timings.plan_ms,
            diff_rate,
            run.timings.deliver_ms,
            run.duration_ms,
            peak_rss_mb()
        );
    });
}
