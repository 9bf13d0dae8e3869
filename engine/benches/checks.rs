//! What five built-in checks add to a 1,000,000-row initial sync (file-source → native
//! no-op destination). Each run is a fresh process on a fresh state directory; the runs
//! alternate plain / checked to spread machine noise evenly.
//!
//!     scripts/build-plugins && cargo bench -p backflow --bench checks [-- --rows 1000000 --repeat 3]

mod common;

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
        let sync = arg("--sync").unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let workspace = backflow::workspace::Workspace::load(Path::new(&ws)).unwrap();
            let host = backflow::plugins::Registry::new(
                backflow::host::PluginHost::new(Some(workspace.root.join("cache"))).unwrap(),
            );
            let state = backflow::state::StateStore::open(&workspace.state_dir).unwrap();
            let run = backflow::app::run_sync(
                &host,
                &workspace,
                &state,
                &sync,
                &backflow::sync::RunOptions::default(),
            )
            .await
            .unwrap();
            assert_eq!(run.status, backflow::state::RunStatus::Succeeded, "{run:?}");
            println!("{}", run.checks.len());
        });
        return;
    }
    let rows: u64 = arg("--rows")
        .map(|r| r.parse().unwrap())
        .unwrap_or(1_000_000);
    let repeat: usize = arg("--repeat").map(|r| r.parse().unwrap()).unwrap_or(3);
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .canonicalize()
        .expect("run scripts/build-plugins first");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    std::fs::create_dir_all(ws.join("data")).unwrap();
    let mut toml = format!(
        r#"
[workspace]
plugins_dir = "{}"
[sources.files]
plugin = "file-source"
grants.files = ["data"]
[destinations.sink]
plugin = "builtin:noop"
[models.m]
source = "files"
query = "data/m.csv"
primary_key = "id"
[syncs.plain]
model = "m"
destination = "sink"
batch_size = 5000
[syncs.checked]
model = "m"
destination = "sink"
batch_size = 5000
"#,
        plugins.display()
    );
    for config in [
        r#"{ check = "not_null", columns = ["email"] }"#,
        r#"{ check = "unique", columns = ["email"] }"#,
        r#"{ check = "accepted_values", column = "plan", values = ["free", "pro", "enterprise"] }"#,
        r#"{ check = "regex", column = "email", pattern = "^[^@ ]+@[^@ ]+$" }"#,
        r#"{ check = "range", column = "mrr", min = 0, max = 10000 }"#,
    ] {
        toml.push_str(&format!(
            "[[syncs.checked.checks]]\nplugin = \"checks\"\nconfig = {config}\n"
        ));
    }
    std::fs::write(ws.join("backflow.toml"), toml).unwrap();
    common::write_customers(&ws.join("data/m.csv"), rows);
    let time = |sync: &str| {
        let _ = std::fs::remove_dir_all(ws.join(".backflow"));
        let t = Instant::now();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--run", ws.to_str().unwrap(), "--sync", sync])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed().as_secs_f64()
    };
    time("checked"); // compile and cache the plugins once
    let (mut plain, mut checked) = (Vec::new(), Vec::new());
    for _ in 0..repeat {
        plain.push(time("plain"));
        checked.push(time("checked"));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (p, c) = (median(&mut plain), median(&mut checked));
    println!("{rows} rows, initial sync, median of {repeat}: without checks {p:.2} s, with 5 checks {c:.2} s: +{:.1}%", (c / p - 1.0) * 100.0);
}
