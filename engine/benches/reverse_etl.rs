//! The reverse-ETL workload of issue 15, end to end through the real binary: a PostgreSQL 15
//! table of 1,000,000 rows (`id bigint, email text, name text, plan text, mrr numeric(10,2),
//! country text, updated_at timestamptz`) read by the `postgres` plugin and delivered by the
//! `webhook` plugin as JSON arrays of 500 rows over one HTTP/1.1 connection to
//! `backflow receiver --discard` in its own process (it parses every body). Three jobs, each
//! `backflow sync run` under `/usr/bin/time`: the initial sync, a no-change rerun (a full
//! diff, deletes included), and a run after 10,000 updates, 1,000 deletes and 5,000 inserts.
//!
//!     scripts/build-plugins && cargo bench -p backflow --bench reverse_etl
//!
//! Options: `-- --rows N` (default 1000000), `-- --keep-changelog N` (`[state]
//! keep_changelog_runs`, default 50; 0 measures without the undo changelog), `-- --hold`
//! (set everything up, print the workspace, and wait to be killed: for profiling runs by
//! hand, e.g. `perf record -g backflow sync run s --workspace DIR` after `rm -rf DIR/.backflow`).

#[allow(dead_code)]
#[path = "../../tests/e2e/pg.rs"]
mod pg;

use std::process::{Command, Stdio};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let rows: u64 = arg("--rows").map(|r| r.parse().unwrap()).unwrap_or(1_000_000);
    let keep_changelog: u64 = arg("--keep-changelog").map(|r| r.parse().unwrap()).unwrap_or(50);
    let bin = env!("CARGO_BIN_EXE_backflow");
    let plugins = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins").canonicalize().expect("run scripts/build-plugins first");

    let pg = pg::Pg::throwaway();
    pg.sql(&format!(
        "CREATE TABLE customers AS SELECT g::bigint AS id, 'user' || g || '@example.com' AS email, 'User ' || g AS name,
           (ARRAY['free','pro','enterprise'])[1 + g % 3] AS plan, ((g % 2000) || '.' || lpad((g % 100)::text, 2, '0'))::numeric(10,2) AS mrr,
           (ARRAY['DE','FR','US','JP','BR'])[1 + g % 5] AS country, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' AS updated_at
         FROM generate_series(1, {rows}) g;
         ALTER TABLE customers ADD PRIMARY KEY (id);"
    ));
    pg.sql("VACUUM ANALYZE customers");

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut receiver = Command::new(bin).args(["receiver", "--discard", "--port", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Wait until it listens.
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    std::fs::write(
        ws.join("backflow.toml"),
        format!(
            "[workspace]\nplugins_dir = \"{plugins}\"\n[state]\nkeep_changelog_runs = {keep_changelog}\n{source}\n[destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"http://127.0.0.1:{port}/contacts\"\ngrants.network = [\"127.0.0.1:{port}\"]\n[models.customers]\nsource = \"pg\"\nquery = \"SELECT id, email, name, plan, mrr, country, updated_at FROM customers\"\nprimary_key = \"id\"\n[syncs.s]\nmodel = \"customers\"\ndestination = \"hook\"\nmode = \"mirror\"\nbatch_size = 500\n",
            plugins = plugins.display(),
            source = pg.source_toml("reader", Some("reader-secret")),
        ),
    )
    .unwrap();

    if args.iter().any(|a| a == "--hold") {
        println!("workspace {} (receiver on 127.0.0.1:{port}); waiting to be killed", ws.display());
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    println!("{rows} rows, keep_changelog_runs = {keep_changelog}");
    println!("{:<34} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10}", "job", "wall s", "CPU s", "RSS MB", "plan ms", "deliver", "delivered");
    let job = |name: &str| {
        let out = Command::new("/usr/bin/time").args(["-f", "%e %U %S %M", bin, "sync", "run", "s", "--json", "--workspace"]).arg(ws).env("RUST_LOG", "warn").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stats: Vec<f64> = stderr.lines().last().unwrap_or("").split_whitespace().filter_map(|v| v.parse().ok()).collect();
        let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name}: {e}: {stderr}"));
        assert!(record["status"] == "succeeded", "{name}: {record}");
        let delivered = record["delivered"]["added"].as_u64().unwrap() + record["delivered"]["changed"].as_u64().unwrap() + record["delivered"]["removed"].as_u64().unwrap();
        println!(
            "{name:<34} {:>8.2} {:>8.2} {:>9.0} {:>9} {:>9} {:>10}",
            stats[0],
            stats[1] + stats[2],
            stats[3] / 1024.0,
            record["timings"]["plan_ms"],
            record["timings"]["deliver_ms"],
            delivered
        );
    };
    // Plugins are compiled once per file and cached; that first-use cost is its own line,
    // not part of the initial sync (a service compiles them when it loads them).
    let started = std::time::Instant::now();
    let out = Command::new(bin).args(["plugin", "list", "--workspace"]).arg(ws).env("RUST_LOG", "warn").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!("{:<34} {:>8.2}", "compile plugins (first use only)", started.elapsed().as_secs_f64());
    job("initial");
    job("no-change rerun (full diff)");
    pg.sql(&format!(
        "UPDATE customers SET plan = 'changed', updated_at = now() WHERE id % 97 = 0 AND id <= 970000;
         DELETE FROM customers WHERE id % 991 = 1 AND id <= 991000;
         INSERT INTO customers SELECT g, 'new' || g || '@example.com', 'New ' || g, 'free', 0, 'DE', now() FROM generate_series({rows} + 1, {rows} + 5000) g;"
    ));
    job("10k updates, 1k deletes, 5k inserts");
    let _ = receiver.kill();
    let _ = receiver.wait();
}
