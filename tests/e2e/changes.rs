//! Change detection and durable state: diffs in every mode, retries of rejected rows,
//! duplicate keys, dry runs and test rows.

use crate::support::*;
use backflow::state::{RunStatus, StateStore};
use backflow::sync::{self, plan::PlanOptions, RunOptions};
use serde_json::Value as J;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const V1: &str =
    "id,email,age\n1,a@x.com,30\n2,b@x.com,31\n3,c@x.com,32\n4,d@x.com,33\n5,e@x.com,34\n";
const V3: &str =
    "id,email,age\n1,a@x.com,30\n2,b2@x.com,31\n3,c@x.com,32\n4,d@x.com,33\n6,f@x.com,35\n";
const V4: &str = "id,email,age\n1,a@x.com,30\n2,b2@x.com,31\n3,c@x.com,32\n4,d@x.com,33\n5,e@x.com,34\n6,f@x.com,35\n";
const V5: &str = "id,email,age\n1,a@x.com,30\n2,b2@x.com,31\n3,c@x.com,thirty\n4,d@x.com,33\n5,e@x.com,34\n6,f@x.com,35\n";

fn workspace(receiver: &backflow::toolkit::receiver::Receiver, mode: &str) -> TestWorkspace {
    let ws = file_workspace(
        "people",
        "people.csv",
        &format!(
            r#"
[destinations.hook]
plugin = "webhook"
config.url = "{url}"
config.operation_field = "_op"
grants.network = ["{addr}"]
[syncs.s]
model = "people"
destination = "hook"
mode = "{mode}"
"#,
            url = receiver.url("/in"),
            addr = receiver.addr
        ),
    );
    ws.write("data/people.csv", V1);
    ws
}

/// Rows received since `from` requests, as (op, id) pairs.
fn received_since(
    receiver: &backflow::toolkit::receiver::Receiver,
    from: usize,
) -> Vec<(String, i64)> {
    receiver.received()[from..]
        .iter()
        .flat_map(|r| r.body.as_array().cloned().unwrap_or_default())
        .map(|row| {
            (
                row["_op"].as_str().unwrap_or("?").to_string(),
                row["id"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// (diff added, changed, removed, unchanged) and the sorted (op, id) pairs sent, per run.
type Step = ((u64, u64, u64, u64), Vec<(&'static str, i64)>);

async fn run_sequence(mode: &str, expected: [Step; 5]) {
    let receiver = receiver().await;
    let ws = workspace(&receiver, mode);
    for (i, (data, (diff, sent))) in [V1, V1, V3, V4, V5].into_iter().zip(expected).enumerate() {
        ws.write("data/people.csv", data);
        let before = receiver.received().len();
        let run = ws.run("s").await;
        assert_eq!(
            run.status,
            RunStatus::Succeeded,
            "{mode} run {}: {run:?}",
            i + 1
        );
        assert_eq!(
            (
                run.diff.added,
                run.diff.changed,
                run.diff.removed,
                run.diff.unchanged
            ),
            diff,
            "{mode} run {}: diff",
            i + 1
        );
        let mut got = received_since(&receiver, before);
        got.sort();
        let mut want: Vec<(String, i64)> =
            sent.iter().map(|(op, id)| (op.to_string(), *id)).collect();
        want.sort();
        assert_eq!(got, want, "{mode} run {}: rows sent", i + 1);
        assert_eq!(
            run.delivered.total(),
            want.len() as u64,
            "{mode} run {}",
            i + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_sends_added_and_changed_rows() {
    run_sequence(
        "upsert",
        [
            ((5, 0, 0, 0), (1..=5).map(|i| ("insert", i)).collect()),
            ((0, 0, 0, 5), vec![]),
            ((1, 1, 1, 3), vec![("insert", 6), ("update", 2)]),
            // Row 5 was never deleted downstream, so it is still in the snapshot, unchanged.
            ((0, 0, 0, 6), vec![]),
            // `age` became text for every row: every fingerprint changed.
            ((0, 6, 0, 0), (1..=6).map(|i| ("update", i)).collect()),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn update_sends_everything_as_updates() {
    run_sequence(
        "update",
        [
            ((5, 0, 0, 0), (1..=5).map(|i| ("update", i)).collect()),
            ((0, 0, 0, 5), vec![]),
            ((1, 1, 1, 3), vec![("update", 6), ("update", 2)]),
            ((0, 0, 0, 6), vec![]),
            ((0, 6, 0, 0), (1..=6).map(|i| ("update", i)).collect()),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn insert_sends_only_new_rows() {
    run_sequence(
        "insert",
        [
            ((5, 0, 0, 0), (1..=5).map(|i| ("insert", i)).collect()),
            ((0, 0, 0, 5), vec![]),
            ((1, 1, 1, 3), vec![("insert", 6)]),
            // Row 2's change was never sent, so it still differs from what was delivered.
            ((0, 1, 0, 5), vec![]),
            ((0, 6, 0, 0), vec![]),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_deletes_removed_rows_and_re_adds_them() {
    run_sequence(
        "mirror",
        [
            ((5, 0, 0, 0), (1..=5).map(|i| ("insert", i)).collect()),
            ((0, 0, 0, 5), vec![]),
            (
                (1, 1, 1, 3),
                vec![("insert", 6), ("update", 2), ("delete", 5)],
            ),
            ((1, 0, 0, 5), vec![("insert", 5)]),
            ((0, 6, 0, 0), (1..=6).map(|i| ("update", i)).collect()),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn append_sends_each_new_row_once_as_an_event_with_a_stable_id() {
    run_sequence(
        "append",
        [
            ((5, 0, 0, 0), (1..=5).map(|i| ("append", i)).collect()),
            ((0, 0, 0, 5), vec![]),
            ((1, 1, 1, 3), vec![("append", 6)]),
            ((0, 1, 0, 5), vec![]),
            ((0, 6, 0, 0), vec![]),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn append_event_ids_are_stable_and_distinct() {
    let receiver = receiver().await;
    let ws = workspace(&receiver, "append");
    ws.run("s").await;
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .flat_map(|r| r.body.as_array().cloned().unwrap())
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        5
    );
    // The same key in another workspace (same sync name) gets the same id.
    let other = crate::support::receiver().await;
    let ws2 = workspace(&other, "append");
    ws2.run("s").await;
    let first = other.received()[0].body[0]["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(first, ids[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_deletes_carry_the_primary_key_fields() {
    let receiver = receiver().await;
    let ws = workspace(&receiver, "mirror");
    ws.run("s").await;
    ws.write("data/people.csv", "id,email,age\n1,a@x.com,30\n");
    let before = receiver.received().len();
    let run = ws.run("s").await;
    assert_eq!(run.delivered.removed, 4);
    let deletes: Vec<J> = receiver.received()[before..]
        .iter()
        .flat_map(|r| r.body.as_array().cloned().unwrap())
        .collect();
    assert!(
        deletes
            .iter()
            .all(|d| d["_op"] == "delete" && d["id"].is_i64() && d.get("email").is_none()),
        "{deletes:?}"
    );
}

/// A webhook endpoint that refuses rows mentioning `refuse` while `strict` is set.
async fn picky_server(
    refuse: &'static str,
) -> (
    std::net::SocketAddr,
    Arc<AtomicBool>,
    Arc<Mutex<Vec<String>>>,
) {
    let strict = Arc::new(AtomicBool::new(true));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (s, b) = (strict.clone(), bodies.clone());
    let app = axum::Router::new().fallback(move |body: String| {
        let (s, b) = (s.clone(), b.clone());
        async move {
            b.lock().unwrap().push(body.clone());
            if s.load(Ordering::SeqCst) && body.contains(refuse) {
                (
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    format!("{refuse} is not allowed"),
                )
            } else {
                (axum::http::StatusCode::OK, "{}".to_string())
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, strict, bodies)
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_rows_are_retried_by_every_later_run_until_delivered() {
    let (addr, strict, bodies) = picky_server("c@x.com").await;
    let ws = file_workspace(
        "people",
        "people.csv",
        &format!(
            r#"
[destinations.hook]
plugin = "webhook"
config.url = "http://{addr}/in"
config.batch_mode = "row"
grants.network = ["{addr}"]
[syncs.s]
model = "people"
destination = "hook"
"#
        ),
    );
    ws.write("data/people.csv", V1);
    let first = ws.run("s").await;
    assert_eq!(first.status, RunStatus::Partial);
    assert_eq!((first.delivered.added, first.failed.added), (4, 1));
    assert_eq!(first.rejected[0].key, "3");
    assert!(
        first.rejected[0]
            .error
            .contains("HTTP 422: c@x.com is not allowed"),
        "{:?}",
        first.rejected
    );
    let state = StateStore::open(&ws.load().state_dir).unwrap();
    let pending = state.pending("s", 10).unwrap();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].1.error.contains("422"));
    drop(state);

    // The source did not change, yet the refused row is tried again (and refused again).
    let second = ws.run("s").await;
    assert_eq!((second.diff.added, second.diff.unchanged), (1, 4));
    assert_eq!((second.delivered.added, second.failed.added), (0, 1));

    // The destination relents: the row goes through, once.
    strict.store(false, Ordering::SeqCst);
    let third = ws.run("s").await;
    assert_eq!(third.status, RunStatus::Succeeded);
    assert_eq!(third.delivered.added, 1);
    let state = StateStore::open(&ws.load().state_dir).unwrap();
    assert!(state.pending("s", 10).unwrap().is_empty());
    assert_eq!(state.snapshot_len("s").unwrap(), 5);
    drop(state);
    let fourth = ws.run("s").await;
    assert_eq!(fourth.planned.total(), 0);
    assert_eq!(
        bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.contains("c@x.com"))
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_keys_stop_the_run_before_any_write() {
    let receiver = receiver().await;
    let ws = workspace(&receiver, "upsert");
    ws.write(
        "data/people.csv",
        "id,email,age\n1,a@x.com,30\n2,b@x.com,31\n1,again@x.com,32\n7,g@x.com,1\n7,h@x.com,2\n",
    );
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Failed);
    let e = run.error.unwrap();
    assert!(
        e.contains("2 duplicate primary keys") && e.contains("e.g. 1, 7"),
        "{e}"
    );
    assert_eq!(receiver.received().len(), 0);
    let state = StateStore::open(&ws.load().state_dir).unwrap();
    assert_eq!(state.snapshot_len("s").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_counts_and_samples_and_changes_nothing() {
    let receiver = receiver().await;
    let ws = workspace(&receiver, "mirror");
    ws.run("s").await;
    ws.write("data/people.csv", V3);
    let loaded = ws.load();
    let state = StateStore::open(&loaded.state_dir).unwrap();
    let runs_before = state.runs(None, 100).unwrap().len();
    let report = sync::plan_sync(&host(), &loaded, &state, "s", PlanOptions::default(), 5)
        .await
        .unwrap();
    assert_eq!(
        (
            report.diff.added,
            report.diff.changed,
            report.diff.removed,
            report.diff.unchanged
        ),
        (1, 1, 1, 3)
    );
    assert_eq!(
        (
            report.planned.added,
            report.planned.changed,
            report.planned.removed
        ),
        (1, 1, 1)
    );
    assert_eq!(report.samples["added"][0]["email"], "f@x.com");
    assert_eq!(report.samples["changed"][0]["before"]["email"], "b@x.com");
    assert_eq!(report.samples["changed"][0]["after"]["email"], "b2@x.com");
    assert_eq!(report.samples["removed"][0]["key"], "5");
    assert_eq!(report.operations["removed"], "delete");
    assert_eq!(
        state.runs(None, 100).unwrap().len(),
        runs_before,
        "a plan records no run"
    );
    assert_eq!(state.snapshot_len("s").unwrap(), 5);
    assert_eq!(receiver.received().len(), 1, "only the first run's request");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_row_sends_one_row_and_leaves_state_untouched() {
    let receiver = receiver().await;
    let ws = workspace(&receiver, "upsert");
    let loaded = ws.load();
    let report = sync::test_row(&host(), &loaded, "s", Some("4"))
        .await
        .unwrap();
    assert_eq!(report.outcome, "accepted");
    assert_eq!(report.row["email"], "d@x.com");
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body[0]["id"], 4);
    let state = StateStore::open(&loaded.state_dir).unwrap();
    assert_eq!(state.snapshot_len("s").unwrap(), 0);
    assert!(state.runs(None, 10).unwrap().is_empty());
    let e = sync::test_row(&host(), &loaded, "s", Some("99"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no row with id = 99"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn full_resync_resends_every_row() {
    let receiver = receiver().await;
    let ws = workspace(&receiver, "upsert");
    ws.run("s").await;
    let loaded = ws.load();
    let state = StateStore::open(&loaded.state_dir).unwrap();
    let run = backflow::app::run_sync(
        &host(),
        &loaded,
        &state,
        "s",
        &RunOptions {
            full_resync: true,
            ..RunOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(run.full_resync);
    assert_eq!((run.diff.changed, run.delivered.changed), (5, 5));
    assert_eq!(receiver.rows(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_mapping_resends_everything_and_a_new_key_starts_over() {
    let receiver = receiver().await;
    let ws = workspace(&receiver, "mirror");
    ws.run("s").await;
    // A field added to the mapping: every row changed.
    let toml = std::fs::read_to_string(ws.path().join("backflow.toml")).unwrap();
    std::fs::write(
        ws.path().join("backflow.toml"),
        format!("{toml}\n[syncs.s.mapping]\nid = \"id\"\nemail = \"email\"\n"),
    )
    .unwrap();
    let run = ws.run("s").await;
    assert_eq!((run.diff.changed, run.diff.unchanged), (5, 0));
    // A different primary key: the old snapshot says nothing; all rows are new, none removed.
    let toml = std::fs::read_to_string(ws.path().join("backflow.toml"))
        .unwrap()
        .replace("primary_key = \"id\"", "primary_key = \"email\"");
    std::fs::write(ws.path().join("backflow.toml"), toml).unwrap();
    let run = ws.run("s").await;
    assert_eq!(
        (run.diff.added, run.diff.removed, run.snapshot_rows),
        (5, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_refused_as_a_whole_is_split_to_isolate_the_bad_row() {
    // Array mode: the endpoint refuses any request containing c@x.com, without saying which row.
    let (addr, _strict, bodies) = picky_server("c@x.com").await;
    let ws = file_workspace(
        "people",
        "people.csv",
        &format!(
            r#"
[destinations.hook]
plugin = "webhook"
config.url = "http://{addr}/in"
grants.network = ["{addr}"]
[syncs.s]
model = "people"
destination = "hook"
batch_size = 5
"#
        ),
    );
    ws.write("data/people.csv", V1);
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Partial, "{run:?}");
    assert_eq!((run.delivered.added, run.failed.added), (4, 1));
    assert_eq!(run.rejected[0].key, "3");
    // Every good row arrived in an accepted request.
    let accepted: Vec<String> = bodies
        .lock()
        .unwrap()
        .iter()
        .filter(|b| !b.contains("c@x.com"))
        .cloned()
        .collect();
    for email in ["a@x.com", "b@x.com", "d@x.com", "e@x.com"] {
        assert!(
            accepted.iter().any(|b| b.contains(email)),
            "{email} was never accepted"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_whose_values_change_type_stops_the_run_instead_of_replacing_every_row() {
    let receiver = receiver().await;
    let ws = workspace(&receiver, "mirror");
    ws.write(
        "data/people.csv",
        "id,email\n1,a@x.com\n2,b@x.com\n3,c@x.com\n",
    );
    assert_eq!(ws.run("s").await.delivered.added, 3);
    // A row whose key is not a number appears first: the CSV column is now inferred as text,
    // and "1" is not 1. Without the check this run would delete 3 rows and add 4.
    let sent = receiver.received().len();
    ws.write(
        "data/people.csv",
        "id,email\nA3,z@x.com\n1,a@x.com\n2,b@x.com\n3,c@x.com\n",
    );
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.unwrap();
    assert!(
        error.contains("\"id\" held integer values")
            && error.contains("now holds text values")
            && error.contains("config.columns"),
        "{error}"
    );
    assert_eq!(receiver.received().len(), sent, "nothing was sent");

    // JSON Lines rows 1 and "1" in one model are refused outright.
    let receiver2 = crate::support::receiver().await;
    let ws2 = file_workspace("people", "people.jsonl", &format!(
        "[destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"{}\"\ngrants.network = [\"{}\"]\n[syncs.s]\nmodel = \"people\"\ndestination = \"hook\"\n",
        receiver2.url("/in"), receiver2.addr
    ));
    ws2.write(
        "data/people.jsonl",
        "{\"id\": 1, \"email\": \"a@x.com\"}\n{\"id\": \"1\", \"email\": \"b@x.com\"}\n",
    );
    let run = ws2.run("s").await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.unwrap();
    assert!(
        error.contains("holds integer values (first at row 1) and text values (row 2)"),
        "{error}"
    );
    assert!(receiver2.received().is_empty());
}

/// A model in key order is diffed while it is read; one out of order is sorted first, and
/// the next run sorts from the start. The plan is the same either way.
#[tokio::test(flavor = "multi_thread")]
async fn rows_out_of_key_order_plan_the_same_changes_and_the_next_run_sorts_first() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(
        &receiver,
        "config.methods = { delete = \"DELETE\" }",
        "mode = \"mirror\"",
    );
    let first = ws.run("to_hook").await;
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.error);
    assert!(!first.out_of_key_order, "the CSV is in id order");
    assert_eq!(first.diff.added, 8);

    // Row 9 first, row 3 changed, row 5 gone: out of key order from the second row.
    let shuffled = "id,email,name,plan,mrr,signed_up\n\
        9,new@example.com,New Person,free,0.00,2024-07-01\n\
        7,frances@example.com,Frances Allen,free,0.00,2024-02-01\n\
        1,ada@example.com,Ada Lovelace,enterprise,1250.00,2021-03-04\n\
        3,alan@example.com,Alan Turing,enterprise,999.00,2022-11-02\n\
        8,ken@example.com,Ken Thompson,pro,149.00,2024-06-21\n\
        2,grace@example.com,Grace Hopper,pro,99.00,2022-07-19\n\
        6,donald@example.com,Donald Knuth,pro,99.00,2023-09-12\n\
        4,edsger@example.com,Edsger Dijkstra,free,0.00,2023-01-15\n";
    ws.write("data/customers.csv", shuffled);
    let second = ws.run("to_hook").await;
    assert_eq!(second.status, RunStatus::Succeeded, "{:?}", second.error);
    assert!(second.out_of_key_order);
    assert_eq!(
        (
            second.diff.added,
            second.diff.changed,
            second.diff.removed,
            second.diff.unchanged
        ),
        (1, 1, 1, 6)
    );

    // Sorted from the start this time; nothing changed.
    let third = ws.run("to_hook").await;
    assert!(third.out_of_key_order);
    assert_eq!(
        (
            third.diff.added,
            third.diff.changed,
            third.diff.removed,
            third.diff.unchanged
        ),
        (0, 0, 0, 8)
    );

    // Back in key order: recorded as such, so the run after it diffs while reading again.
    let mut lines: Vec<&str> = shuffled.lines().skip(1).collect();
    lines.sort_by_key(|l| l.split(',').next().unwrap().parse::<u32>().unwrap());
    ws.write(
        "data/customers.csv",
        &format!("id,email,name,plan,mrr,signed_up\n{}\n", lines.join("\n")),
    );
    let fourth = ws.run("to_hook").await;
    assert!(!fourth.out_of_key_order);
    assert_eq!(
        (
            fourth.diff.added,
            fourth.diff.changed,
            fourth.diff.removed,
            fourth.diff.unchanged
        ),
        (0, 0, 0, 8)
    );
}
