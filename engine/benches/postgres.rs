//! PostgreSQL → `postgres` plugin → no-op destination, beside `psql \copy (query) to
//! '/dev/null'` on the same server in the same run: 1,000,000 rows of the 7-column customers
//! model (`id, email, name, plan, mrr, signed_up, active`) in a throwaway cluster.
//!
//!     scripts/build-plugins && cargo bench -p backflow --bench postgres
//!
//! Options: `-- --rows N`, `-- --repeat N` (best of N, default 3), `-- --fetch-rows N` (the
//! plugin's `fetch_rows`, default its own default 20000), `-- --tls` (the plugin connects with
//! `sslmode = require`), `-- --text-results` (every column in PostgreSQL's text format, the
//! plugin's `binary_results = false`, as it read them before binary results). Three rates:
//! - COPY: psql streaming the query's text to /dev/null (the server's own floor);
//! - plugin read: the plugin streaming the query into batches on the host, nothing else;
//! - sync: an initial sync end to end (read, diff into a fresh snapshot, deliver to
//!   `noop-destination.wasm`, record state).

#[allow(dead_code)]
#[path = "../../tests/e2e/pg.rs"]
mod pg;

use std::time::Instant;

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
    let repeat: usize = arg("--repeat").map(|r| r.parse().unwrap()).unwrap_or(3);
    let fetch_rows: u32 = arg("--fetch-rows")
        .map(|r| r.parse().unwrap())
        .unwrap_or(20_000);
    let plugins = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .canonicalize()
        .expect("run scripts/build-plugins first");

    // `--tls`: the same over TLS (sslmode = require) to a cluster with ssl = on.
    let tls = args.iter().any(|a| a == "--tls");
    let text_results = args.iter().any(|a| a == "--text-results");
    let pg = if tls {
        pg::Pg::throwaway_tls().0
    } else {
        pg::Pg::throwaway()
    };
    pg.sql(&format!(
        "CREATE TABLE customers AS SELECT g::bigint AS id, 'user' || g || '@example.com' AS email, 'User ' || g AS name,
           (ARRAY['free','pro','enterprise'])[1 + g % 3] AS plan, ((g % 2000) || '.' || lpad((g % 100)::text, 2, '0'))::numeric(10,2) AS mrr,
           make_date(2023, 1 + (g % 12)::int, 1 + (g % 28)::int) AS signed_up, g % 2 = 0 AS active
         FROM generate_series(0, {rows} - 1) g;
         ALTER TABLE customers ADD PRIMARY KEY (id);"
    ));
    pg.sql("VACUUM ANALYZE customers");
    const QUERY: &str = "SELECT id, email, name, plan, mrr, signed_up, active FROM customers";

    let copy_secs = best_of(repeat, || {
        let started = Instant::now();
        pg.sql(&format!("\\copy ({QUERY}) to '/dev/null'"));
        started.elapsed().as_secs_f64()
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    std::fs::create_dir_all(&ws_dir).unwrap();
    std::fs::write(
        ws_dir.join("backflow.toml"),
        format!(
            "[workspace]\nplugins_dir = \"{}\"\n{}\n[destinations.noop]\nplugin = \"noop-destination\"\n[models.customers]\nsource = \"pg\"\nquery = \"{QUERY}\"\nprimary_key = \"id\"\n[syncs.bench]\nmodel = \"customers\"\ndestination = \"noop\"\nbatch_size = 5000\n",
            plugins.display(),
            pg.source_toml("reader", Some("reader-secret")).replace("database =", &format!("fetch_rows = {fetch_rows}, {}{}database =", if tls { "sslmode = \"require\", " } else { "" }, if text_results { "binary_results = false, " } else { "" }))
        ),
    )
    .unwrap();
    let (read_secs, sync_secs) = runtime.block_on(async {
        let ws = backflow::workspace::Workspace::load(&ws_dir).unwrap();
        let host = backflow::plugins::Registry::new(
            backflow::host::PluginHost::new(Some(ws.state_dir.join("cache"))).unwrap(),
        );
        let prepared = backflow::sync::prepare::prepare(&host, &ws, "bench")
            .await
            .unwrap();
        let mut read = f64::MAX;
        for _ in 0..repeat {
            let started = Instant::now();
            let source = &prepared.source;
            let mut reader = backflow::host::SourceInstance::open(
                &host,
                &prepared.source_plugin,
                &source.grants,
                source.limits,
                &source.config_json,
                QUERY,
            )
            .await
            .unwrap();
            let mut n = 0u64;
            while let Some(batch) = reader.next_batch(5000).await.unwrap() {
                n += u64::from(batch.row_count);
            }
            reader.close().await;
            assert_eq!(n, rows);
            read = read.min(started.elapsed().as_secs_f64());
        }
        let mut sync = f64::MAX;
        for _ in 0..repeat {
            let state_dir = tempfile::tempdir().unwrap();
            let mut fresh = ws.clone();
            fresh.state_dir = state_dir.path().to_path_buf();
            let state = backflow::state::StateStore::open(&fresh.state_dir).unwrap();
            let started = Instant::now();
            let run = backflow::app::run_sync(
                &host,
                &fresh,
                &state,
                "bench",
                &backflow::sync::RunOptions::default(),
            )
            .await
            .unwrap();
            assert_eq!(run.delivered.added, rows, "{run:?}");
            sync = sync.min(started.elapsed().as_secs_f64());
            if std::env::var_os("BENCH_VERBOSE").is_some() {
                eprintln!(
                    "sync: plan {} ms, deliver {} ms, total {:.2} s",
                    run.timings.plan_ms,
                    run.timings.deliver_ms,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        (read, sync)
    });
    let rate = |secs: f64| rows as f64 / secs;
    println!(
        "{rows} rows, 7 columns, best of {repeat}{}",
        if tls {
            ", over TLS (the plugin with sslmode = require; psql negotiates TLS too, libpq's default prefer)"
        } else {
            ""
        }
    );
    println!(
        "{:<44} {:>8} {:>11} {:>9}",
        "", "seconds", "rows/s", "of COPY"
    );
    println!(
        "{:<44} {:>8.2} {:>11.0} {:>8.0}%",
        "psql \\copy (query) to /dev/null",
        copy_secs,
        rate(copy_secs),
        100.0
    );
    println!(
        "{:<44} {:>8.2} {:>11.0} {:>8.0}%",
        "postgres plugin read (batches on the host)",
        read_secs,
        rate(read_secs),
        100.0 * copy_secs / read_secs
    );
    println!(
        "{:<44} {:>8.2} {:>11.0} {:>8.0}%",
        "initial sync to noop-destination.wasm",
        sync_secs,
        rate(sync_secs),
        100.0 * copy_secs / sync_secs
    );
}

fn best_of(n: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..n).map(|_| f()).fold(f64::MAX, f64::min)
}
