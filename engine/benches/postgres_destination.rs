//! Rows → `postgres-destination` plugin → an indexed PostgreSQL table, beside `psql \copy`
//! of the same rows into the same table, in the same run: 1,000,000 rows of the 7-column
//! customers model (`id, email, name, plan, mrr, signed_up, active`, primary key `id`) in a
//! throwaway cluster (issue 40's target: the upsert within 2.5× of `\copy`).
//!
//!     scripts/build-plugins && cargo bench -p backflow --bench postgres_destination
//!
//! Options: `-- --rows N`, `-- --repeat N` (best of N, default 3), `-- --batch N` (rows per
//! write, default 10000). Rates, each into the emptied table:
//! - `\copy`: psql loading the rows from a CSV file (the server's own floor);
//! - plugin upsert: the plugin's writer on the host given the rows in batches (encoded
//!   beforehand), each batch one `insert` (COPY into a stage, `INSERT … ON CONFLICT`);
//! - plugin upsert over the rows already there (every row conflicts and is updated);
//! - sync: an initial sync end to end from the `postgres` source (read, diff, deliver, state).

#[allow(dead_code)]
#[path = "../../tests/e2e/pg.rs"]
mod pg;

use backflow::domain::{Grants, NetworkGrant};
use backflow::host::{DestinationInstance, Limits};
use backflow_plugin_sdk::{Batch, BatchBuilder, Column, Operation, SyncContext, Value, ValueType};
use std::time::Instant;

const TABLE: &str = "CREATE TABLE target (id bigint PRIMARY KEY, email text, name text, plan text,
  mrr numeric(10,2), signed_up date, active boolean)";

fn batches(rows: u64, batch: u64) -> Vec<Batch> {
    let columns = vec![
        Column::new("id", ValueType::Integer),
        Column::new("email", ValueType::Text),
        Column::new("name", ValueType::Text),
        Column::new("plan", ValueType::Text),
        Column::new("mrr", ValueType::Decimal),
        Column::new("signed_up", ValueType::Date),
        Column::new("active", ValueType::Boolean),
    ];
    let mut out = Vec::new();
    let mut builder = BatchBuilder::new(columns.clone());
    for g in 0..rows {
        builder.push_row(&[
            Value::Int(g as i64),
            Value::Text(format!("user{g}@example.com")),
            Value::Text(format!("User {g}")),
            Value::Text(["free", "pro", "enterprise"][(g % 3) as usize].into()),
            Value::Decimal(format!("{}.{:02}", g % 2000, g % 100)),
            Value::Date(19_358 + (g % 365) as i32),
            Value::Bool(g % 2 == 0),
        ]);
        if u64::from(builder.len()) == batch {
            out.push(std::mem::replace(&mut builder, BatchBuilder::new(columns.clone())).finish());
        }
    }
    if !builder.is_empty() {
        out.push(builder.finish());
    }
    out
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
    let repeat: usize = arg("--repeat").map(|r| r.parse().unwrap()).unwrap_or(3);
    let batch: u64 = arg("--batch").map(|r| r.parse().unwrap()).unwrap_or(10_000);
    let plugins = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .canonicalize()
        .expect("run scripts/build-plugins first");

    let pg = pg::Pg::throwaway();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("customers.csv");
    pg.sql(&format!(
        "CREATE TABLE customers AS SELECT g::bigint AS id, 'user' || g || '@example.com' AS email, 'User ' || g AS name,
           (ARRAY['free','pro','enterprise'])[1 + g % 3] AS plan, ((g % 2000) || '.' || lpad((g % 100)::text, 2, '0'))::numeric(10,2) AS mrr,
           DATE '2023-01-01' + (g % 365)::int AS signed_up, g % 2 = 0 AS active
         FROM generate_series(0, {rows} - 1) g;
         ALTER TABLE customers ADD PRIMARY KEY (id);
         {TABLE};"
    ));
    pg.sql(&format!("\\copy customers to '{}' csv", csv.display()));
    pg.sql("VACUUM ANALYZE customers");

    let copy_secs = best_of(repeat, || {
        pg.sql("TRUNCATE target");
        let started = Instant::now();
        pg.sql(&format!("\\copy target from '{}' csv", csv.display()));
        started.elapsed().as_secs_f64()
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let encoded = batches(rows, batch);
    let (upsert_secs, update_secs, sync_secs) = runtime.block_on(async {
        let host = backflow::plugins::Registry::new(
            backflow::host::PluginHost::new(Some(dir.path().join("cache"))).unwrap(),
        );
        let plugin = host
            .load(&plugins.join("postgres_destination.wasm"))
            .await
            .unwrap();
        let grants = Grants {
            network: vec![NetworkGrant::for_address(
                pg.host.parse().unwrap(),
                Some(pg.port),
            )],
            ..Grants::default()
        };
        let config = format!(
            r#"{{"host": "{}", "port": {}, "user": "postgres", "database": "{}", "table": "target"}}"#,
            pg.host, pg.port, pg.database
        );
        let context = SyncContext {
            sync_name: "bench".into(),
            primary_key: vec!["id".into()],
            run_id: "bench".into(),
        };
        let write_all = |truncate: bool| {
            let (host, plugin, grants, config, context, encoded, pg) =
                (&host, &plugin, &grants, &config, &context, &encoded, &pg);
            async move {
                if truncate {
                    pg.sql("TRUNCATE target");
                }
                let started = Instant::now();
                let mut writer =
                    DestinationInstance::open(host, plugin, grants, Limits::default(), config, context)
                        .await
                        .unwrap();
                for b in encoded {
                    let outcomes = writer.write(Operation::Insert, b.clone()).await.unwrap();
                    assert!(outcomes.iter().all(|o| matches!(o, backflow_plugin_sdk::RowOutcome::Accepted)));
                }
                writer.finish().await.unwrap();
                started.elapsed().as_secs_f64()
            }
        };
        let mut upsert = f64::MAX;
        let mut update = f64::MAX;
        for _ in 0..repeat {
            upsert = upsert.min(write_all(true).await);
            update = update.min(write_all(false).await);
        }
        assert_eq!(pg.sql("SELECT count(*) FROM target"), rows.to_string());

        let ws_dir = dir.path().join("ws");
        std::fs::create_dir_all(&ws_dir).unwrap();
        std::fs::write(
            ws_dir.join("backflow.toml"),
            format!(
                "[workspace]\nplugins_dir = \"{}\"\n{}\n[destinations.db]\nplugin = \"postgres-destination\"\nconfig = {{ host = \"{}\", port = {}, user = \"postgres\", database = \"{}\", table = \"target\" }}\ngrants.network = [\"{}:{}\"]\n[models.customers]\nsource = \"pg\"\nquery = \"SELECT * FROM customers ORDER BY id\"\nprimary_key = \"id\"\n[syncs.bench]\nmodel = \"customers\"\ndestination = \"db\"\nbatch_size = {batch}\n",
                plugins.display(),
                pg.source_toml("reader", Some("reader-secret")),
                pg.host, pg.port, pg.database, pg.host, pg.port
            ),
        )
        .unwrap();
        let ws = backflow::workspace::Workspace::load(&ws_dir).unwrap();
        let mut sync = f64::MAX;
        for _ in 0..repeat {
            pg.sql("TRUNCATE target");
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
        }
        (upsert, update, sync)
    });
    let rate = |secs: f64| rows as f64 / secs;
    println!("{rows} rows, 7 columns, into an indexed table (primary key id), best of {repeat}, {batch} rows per write");
    println!(
        "{:<52} {:>8} {:>11} {:>9}",
        "", "seconds", "rows/s", "× \\copy"
    );
    let line = |what: &str, secs: f64| {
        println!(
            "{what:<52} {secs:>8.2} {:>11.0} {:>8.2}×",
            rate(secs),
            secs / copy_secs
        )
    };
    line("psql \\copy into the table", copy_secs);
    line("plugin upsert into the empty table", upsert_secs);
    line(
        "plugin upsert over the same rows (all updated)",
        update_secs,
    );
    line("initial sync from the postgres source", sync_secs);
}

fn best_of(n: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..n).map(|_| f()).fold(f64::MAX, f64::min)
}
