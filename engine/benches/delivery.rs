//! Delivery through the `webhook` plugin into a local receiver (a separate `backflow receiver`
//! process on 127.0.0.1): throughput in batches of 500, and rate-limit adherence.
//!
//!     scripts/build-plugins && cargo bench -p backflow --bench delivery [-- --rows 1000000 --seconds 20]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn receiver(args: &[&str]) -> (Child, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["receiver", "--port", &port.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

fn workspace(ws: &Path, plugins: &Path, port: u16, rows: u64, sync_extra: &str) {
    std::fs::create_dir_all(ws.join("data")).unwrap();
    std::fs::write(
        ws.join("backflow.toml"),
        format!(
            "[workspace]\nplugins_dir = \"{}\"\n[sources.files]\nplugin = \"file-source\"\ngrants.files = [\"data\"]\n[destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"http://127.0.0.1:{port}/in\"\ngrants.network = [\"127.0.0.1:{port}\"]\n[models.m]\nsource = \"files\"\nquery = \"data/m.csv\"\nprimary_key = \"id\"\n[syncs.s]\nmodel = \"m\"\ndestination = \"hook\"\n{sync_extra}\n",
            plugins.display()
        ),
    )
    .unwrap();
    common::write_customers(&ws.join("data/m.csv"), rows);
}

fn run(ws: &Path) -> backflow::state::RunRecord {
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
        backflow::app::run_sync(
            &host,
            &workspace,
            &state,
            "s",
            &backflow::sync::RunOptions::default(),
        )
        .await
        .unwrap()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rows: u64 = arg("--rows")
        .map(|r| r.parse().unwrap())
        .unwrap_or(1_000_000);
    let seconds: u64 = arg("--seconds").map(|r| r.parse().unwrap()).unwrap_or(20);
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .canonicalize()
        .expect("run scripts/build-plugins first");
    let dir = tempfile::tempdir().unwrap();

    // 1. Throughput: batches of 500 into a receiver that accepts everything.
    let (mut rx, port) = receiver(&[]);
    let ws = dir.path().join("throughput");
    workspace(
        &ws,
        &plugins,
        port,
        rows,
        "batch_size = 500\nmax_in_flight = 2",
    );
    let t = Instant::now();
    let r = run(&ws);
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(r.delivered.added, rows, "{r:?}");
    println!(
        "{rows} rows to a local receiver in batches of 500 (max_in_flight 2): {wall:.2} s, {:.0} rows/s end to end; delivery phase {} ms = {:.0} rows/s",
        rows as f64 / wall,
        r.timings.deliver_ms,
        rows as f64 / (r.timings.deliver_ms.max(1) as f64 / 1000.0)
    );
    let _ = rx.kill();

    // 2. Rate limit: the sync may send 50 requests/s; the receiver allows 55.
    let out = dir.path().join("received.jsonl");
    let (mut rx, port) = receiver(&["--rate-limit", "55", "--out", out.to_str().unwrap()]);
    let ws = dir.path().join("rate");
    workspace(
        &ws,
        &plugins,
        port,
        50 * seconds,
        "batch_size = 1\nrate_limit = { requests_per_second = 50 }",
    );
    let r = run(&ws);
    let _ = rx.kill();
    let lines = std::fs::read_to_string(&out).unwrap();
    let statuses: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["status"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    println!(
        "rate_limit = 50/s against a receiver allowing 55/s: {} requests in {:.2} s of delivery = {:.2} requests/s, {throttled} answered 429",
        statuses.len(),
        r.timings.deliver_ms as f64 / 1000.0,
        statuses.len() as f64 / (r.timings.deliver_ms as f64 / 1000.0)
    );
}
