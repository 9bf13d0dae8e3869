//! Warehouse-side diff (`diff = "warehouse"`, issue 39) against a real PostgreSQL: the same
//! plans and the same receiver contents as local mode over a sequence of edits; a dry run
//! and a draft leave the published snapshot table untouched; a run killed between the
//! destination's acknowledgement and the write-back loses nothing.

use crate::pg::Pg;
use crate::support::*;
use backflow::state::{RunRecord, RunStatus};
use backflow::sync::RunOptions;
use backflow::toolkit::receiver::Receiver;
use serde_json::Value as J;
use std::collections::BTreeMap;

const TABLE: &str = "CREATE TABLE people (id int PRIMARY KEY, name text, score numeric, seen timestamptz, tags text[]);
INSERT INTO people VALUES
 (1, 'Ada', 12.50, '2024-01-01 10:00:00+00', '{a,b}'),
 (2, 'Grace', NULL, NULL, NULL),
 (3, 'Alan', 0, '1970-01-01 00:00:00+00', '{}'),
 (4, '', -1.5, '2024-02-29 12:34:56.789+00', '{NULL}'),
 (5, 'Edsger', 7, NULL, '{x}');
GRANT CREATE ON DATABASE %DB% TO reader;";

/// The edits applied one after the other; after each, both modes run once.
const EDITS: &[&str] = &[
    "",
    "UPDATE people SET name = 'Ada L.' WHERE id = 1; UPDATE people SET score = NULL WHERE id = 3",
    "DELETE FROM people WHERE id = 2",
    "INSERT INTO people VALUES (6, 'Barbara', 1800.50, now(), '{p}'), (7, NULL, NULL, NULL, NULL)",
    "",
    "UPDATE people SET name = 'Grace' WHERE id = 7; UPDATE people SET tags = NULL WHERE id = 4",
    "DELETE FROM people WHERE id IN (1, 6); INSERT INTO people VALUES (2, 'Grace again', 1, NULL, NULL)",
];

/// A mirror sync of `people` into `receiver` (each row marked with its operation), its
/// model diffed `diff` (local or warehouse).
fn workspace(pg: &Pg, receiver: &Receiver, diff: &str) -> TestWorkspace {
    TestWorkspace::new(&format!(
        "[workspace]\nplugins_dir = \"{{plugins}}\"\n{source}\n[models.m]\nsource = \"pg\"\nquery = 'SELECT * FROM people'\nprimary_key = \"id\"\ndiff = \"{diff}\"\n\
         [destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"{url}\"\nconfig.batch_mode = \"array\"\nconfig.operation_field = \"_op\"\ngrants.network = [\"{addr}\"]\n\
         [syncs.s]\nmodel = \"m\"\ndestination = \"hook\"\nmode = \"mirror\"\nbatch_size = 2\n",
        source = pg.source_toml("reader", Some("reader-secret")),
        url = receiver.url("/rows"),
        addr = receiver.addr,
    ))
}

/// The rows the receiver got since `from` requests, each as JSON text, sorted.
fn rows_since(receiver: &Receiver, from: usize) -> Vec<String> {
    let mut rows: Vec<String> = receiver
        .received()
        .into_iter()
        .skip(from)
        .flat_map(|r| match r.body {
            J::Array(rows) => rows,
            other => vec![other],
        })
        .map(|row| row.to_string())
        .collect();
    rows.sort();
    rows
}

/// What the receiver holds after applying every row it got (upsert, or delete by `_op`).
fn contents(receiver: &Receiver) -> BTreeMap<String, J> {
    let mut held = BTreeMap::new();
    for r in receiver.received() {
        let rows = match r.body {
            J::Array(rows) => rows,
            other => vec![other],
        };
        for mut row in rows {
            let id = row["id"].to_string();
            if row["_op"] == "delete" {
                held.remove(&id);
            } else {
                row.as_object_mut().unwrap().remove("_op");
                held.insert(id, row);
            }
        }
    }
    held
}

/// What a run planned and delivered, for comparing two modes.
fn summary(r: &RunRecord) -> String {
    format!(
        "{:?} diff {:?} planned {:?} delivered {:?} error {:?}",
        r.status, r.diff, r.planned, r.delivered, r.error
    )
}

/// The snapshot table's rows (key, fingerprint, row) in key order, or `None` if missing.
fn snapshot(pg: &Pg) -> Option<String> {
    let table = pg.sql("SELECT string_agg(c.relname, ',') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'backflow' AND c.relkind = 'r'");
    if table.is_empty() {
        return None;
    }
    Some(pg.sql(&format!(
        "SELECT string_agg(t::text, E'\\n' ORDER BY t.id) FROM backflow.\"{table}\" t"
    )))
}

fn setup_pg() -> Pg {
    let pg = Pg::any();
    pg.sql(&TABLE.replace("%DB%", &format!("\"{}\"", pg.database)));
    pg
}

#[tokio::test(flavor = "multi_thread")]
async fn warehouse_and_local_modes_plan_and_deliver_the_same_over_edits() {
    let pg = setup_pg();
    let (local_rx, warehouse_rx) = (receiver().await, receiver().await);
    let local = workspace(&pg, &local_rx, "local");
    let warehouse = workspace(&pg, &warehouse_rx, "warehouse");
    for (step, edit) in EDITS.iter().enumerate() {
        if !edit.is_empty() {
            pg.sql(edit);
        }
        let (l_from, w_from) = (local_rx.received().len(), warehouse_rx.received().len());
        let l = local.run("s").await;
        let w = warehouse.run("s").await;
        assert_eq!(l.status, RunStatus::Succeeded, "step {step}: {l:?}");
        assert_eq!(summary(&w), summary(&l), "step {step} ({edit})");
        assert_eq!(w.model_rows, l.model_rows, "step {step}");
        assert_eq!(w.snapshot_rows, l.snapshot_rows, "step {step}");
        assert_eq!(
            rows_since(&warehouse_rx, w_from),
            rows_since(&local_rx, l_from),
            "step {step} ({edit}): the same rows sent"
        );
        assert_eq!(contents(&warehouse_rx), contents(&local_rx), "step {step}");
    }
    // The engine keeps no snapshot of its own in this mode: its state does not grow with
    // the model.
    let state = backflow::state::StateStore::open(&warehouse.load().state_dir).unwrap();
    assert_eq!(state.snapshot_len("s").unwrap(), 0);
    let rows = snapshot(&pg).expect("the snapshot table exists");
    assert_eq!(rows.lines().count(), 5, "{rows}");

    // --full-resync sends every model row again, as locally.
    let full = |ws: &TestWorkspace| {
        let out = backflow_as(
            ws,
            "tester",
            &["sync", "run", "s", "--full-resync", "--json"],
        );
        ok(out, "full resync").json()
    };
    let (l, w) = (full(&local), full(&warehouse));
    assert_eq!(w["planned"], l["planned"], "{w}");
    assert_eq!(w["planned"]["changed"], 5, "{w}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_plan_and_a_draft_run_leave_the_published_snapshot_table_untouched() {
    let pg = setup_pg();
    let rx = receiver().await;
    let ws = workspace(&pg, &rx, "warehouse");
    let host = host();
    let plan = |ws: &TestWorkspace| {
        let (ws, host) = (ws.load(), &host);
        async move {
            let state = backflow::state::StateStore::open(&ws.state_dir).unwrap();
            backflow::sync::plan_sync(host, &ws, &state, "s", Default::default(), 3)
                .await
                .unwrap()
        }
    };
    // A first dry run plans every row and creates nothing in the database.
    let first = plan(&ws).await;
    assert_eq!(first.diff.added, 5, "{:?}", first.diff);
    assert_eq!(snapshot(&pg), None, "a dry run creates no snapshot table");
    assert_eq!(ws.run("s").await.status, RunStatus::Succeeded);
    let published = snapshot(&pg).unwrap();

    pg.sql("UPDATE people SET name = 'changed' WHERE id = 1; DELETE FROM people WHERE id = 2");
    let planned = plan(&ws).await;
    assert_eq!(
        (planned.diff.changed, planned.diff.removed),
        (1, 1),
        "{:?}",
        planned.diff
    );
    assert_eq!(snapshot(&pg).unwrap(), published, "sync plan wrote nothing");

    // A draft run diffs against a table of its own.
    let loaded = ws.load();
    let state = backflow::state::StateStore::open(&loaded.state_dir).unwrap();
    let draft = backflow::app::run_sync(
        &host,
        &loaded,
        &state,
        "s",
        &RunOptions {
            user: "tester".into(),
            draft: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(draft.status, RunStatus::Succeeded, "{draft:?}");
    assert_eq!(
        draft.diff.added, 4,
        "the draft's own table started empty: {draft:?}"
    );
    let published_table = pg.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'backflow'");
    assert_eq!(published_table, "2", "the draft has a table of its own");
    let published_rows = pg.sql(&format!(
        "SELECT string_agg(t::text, E'\\n' ORDER BY t.id) FROM backflow.\"{}\" t",
        pg.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'backflow' AND tablename NOT LIKE 'draft%'")
    ));
    assert_eq!(
        published_rows, published,
        "the draft left the published table alone"
    );
    drop(state);
    let again = ws.run("s").await;
    assert_eq!(
        (again.diff.changed, again.diff.removed),
        (1, 1),
        "the published sync still sees its own changes: {again:?}"
    );
    // Drift and reconcile compare the destination with the engine's snapshot, which this
    // mode does not keep: refused, not an empty "no drift" report.
    for what in ["drift", "reconcile"] {
        let out = backflow_as(&ws, "tester", &["sync", what, "s"]);
        assert_ne!(out.code, 0, "{what}: {} {}", out.stdout, out.stderr);
        // (a reconcile is a run: its failure is a run record, on stdout)
        assert!(
            format!("{}{}", out.stdout, out.stderr).contains("diff = \"warehouse\""),
            "{what}: {} {}",
            out.stdout,
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_before_the_write_back_loses_nothing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let pg = Pg::any();
    pg.sql(&format!(
        "CREATE TABLE people AS SELECT g AS id, 'user' || g AS email FROM generate_series(1, 400) g; ALTER TABLE people ADD PRIMARY KEY (id); GRANT CREATE ON DATABASE \"{}\" TO reader",
        pg.database
    ));
    // A slow endpoint recording every id it receives.
    let seen = Arc::new(Mutex::new(Vec::<i64>::new()));
    let requests = Arc::new(AtomicUsize::new(0));
    let (s, r) = (seen.clone(), requests.clone());
    let app = axum::Router::new().fallback(move |body: String| {
        let (s, r) = (s.clone(), r.clone());
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(40)).await;
            let rows: Vec<J> = serde_json::from_str(&body).unwrap();
            s.lock()
                .unwrap()
                .extend(rows.iter().map(|row| row["id"].as_i64().unwrap()));
            r.fetch_add(1, Ordering::SeqCst);
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let ws = TestWorkspace::new(&format!(
        "[workspace]\nplugins_dir = \"{{plugins}}\"\n{}\n[models.m]\nsource = \"pg\"\nquery = 'SELECT * FROM people'\nprimary_key = \"id\"\ndiff = \"warehouse\"\n\
         [destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"http://{addr}/in\"\nconfig.batch_mode = \"array\"\ngrants.network = [\"{addr}\"]\n\
         [syncs.s]\nmodel = \"m\"\ndestination = \"hook\"\nbatch_size = 10\n",
        pg.source_toml("reader", Some("reader-secret"))
    ));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["sync", "run", "s", "--workspace"])
        .arg(ws.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Acknowledged rows are journaled, and written back only after delivery: kill -9 the
    // run mid-delivery, between the two.
    while requests.load(Ordering::SeqCst) < 10 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before it could be killed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before_kill = seen.lock().unwrap().len();
    assert!(before_kill < 400);
    assert_eq!(
        snapshot(&pg).map(|rows| rows.lines().count()).unwrap_or(0),
        0,
        "nothing was written back before the kill"
    );

    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    let seen = seen.lock().unwrap().clone();
    let unique: std::collections::HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), 400, "every row delivered");
    let duplicates = seen.len() - unique.len();
    assert!(
        duplicates <= 10,
        "at most the batch in flight is re-sent, got {duplicates} duplicates"
    );
    assert_eq!(snapshot(&pg).unwrap().lines().count(), 400);
    let again = ws.run("s").await;
    assert_eq!(again.planned.total(), 0, "{again:?}");
}
