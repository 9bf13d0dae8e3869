//! Reading back what landed (issue 40): the test receiver's record store, the webhook's
//! lookup read, drift reports and reconcile.

use crate::serve_support::Api;
use crate::support::*;
use backflow::toolkit::receiver::{Receiver, ReceiverOptions};
use serde_json::{json, Value as J};

/// A receiver keeping records keyed by `id`.
pub async fn record_receiver() -> Receiver {
    backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverOptions {
            records: Some("id".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_receiver_keeps_records_merged_by_key_and_lets_tests_edit_them() {
    let receiver = record_receiver().await;
    let ws = csv_to_webhook(
        &receiver,
        "config.methods.delete = \"DELETE\"",
        "mode = \"mirror\"",
    );
    let record = ws.run("to_hook").await;
    assert_eq!(record.status.as_str(), "succeeded", "{record:?}");
    assert_eq!(receiver.records().len(), 8);
    assert_eq!(receiver.record("2").unwrap()["email"], "grace@example.com");
    // Row 3 leaves the model: mirror deletes it with DELETE.
    let csv = CUSTOMERS_CSV.replace("3,alan@example.com,Alan Turing,pro,99.00,2022-11-02\n", "");
    ws.write("data/customers.csv", &csv);
    let record = ws.run("to_hook").await;
    assert_eq!(record.status.as_str(), "succeeded", "{record:?}");
    assert!(receiver.record("3").is_none());
    assert_eq!(receiver.records().len(), 7);

    let api = Api::new(None);
    let (status, all) = api.get(receiver.url("/_records")).await;
    assert_eq!((status, all.as_object().unwrap().len()), (200, 7), "{all}");
    let (status, one) = api.get(receiver.url("/_records/1")).await;
    assert_eq!((status, &one["name"]), (200, &json!("Ada Lovelace")));
    let (status, _) = api.get(receiver.url("/_records/3")).await;
    assert_eq!(status, 404);
    let (status, found) = api
        .post(
            receiver.url("/_records/lookup"),
            Some(json!({"keys": [2, "3", "4"]})),
        )
        .await;
    assert_eq!(status, 200);
    let ids: Vec<&J> = found["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids.len(), 2, "{found}");
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            receiver.url("/_records/2"),
            Some(json!({"id": 2, "email": "edited@example.com"}).to_string()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        receiver.record("2").unwrap(),
        json!({"id": 2, "email": "edited@example.com"})
    );
    let (status, _) = api
        .send(reqwest::Method::DELETE, receiver.url("/_records/2"), None)
        .await;
    assert_eq!(status, 204);
    assert!(receiver.record("2").is_none());
    // Lookups and edits are not deliveries.
    assert!(receiver
        .received()
        .iter()
        .all(|r| !r.path.starts_with("/_records")));
}

/// A mirror sync into a record-keeping receiver whose records the webhook reads back with a
/// GET per key; row 8 was delivered, then deleted by a run.
async fn delivered_then_one_deleted(lookup: &str) -> (Receiver, TestWorkspace) {
    let receiver = record_receiver().await;
    let lookup = lookup.replace("{base}", &receiver.url(""));
    let ws = csv_to_webhook(
        &receiver,
        &format!("config.methods.delete = \"DELETE\"\n{lookup}"),
        "mode = \"mirror\"",
    );
    let record = ws.run("to_hook").await;
    assert_eq!(record.status.as_str(), "succeeded", "{record:?}");
    let without_8 =
        CUSTOMERS_CSV.replace("8,ken@example.com,Ken Thompson,pro,149.00,2024-06-21\n", "");
    ws.write("data/customers.csv", &without_8);
    let record = ws.run("to_hook").await;
    assert_eq!(record.status.as_str(), "succeeded", "{record:?}");
    assert_eq!(receiver.records().len(), 7);
    (receiver, ws)
}

/// Behind backflow's back: row 2's email edited, row 3 deleted, row 8 (deleted by backflow)
/// created again.
fn drift_behind_backflows_back(receiver: &Receiver) {
    let mut two = receiver.record("2").unwrap();
    two["email"] = json!("edited@example.com");
    receiver.put_record("2", two);
    assert!(receiver.remove_record("3"));
    receiver.put_record(
        "8",
        json!({"id": 8, "email": "ken@example.com", "name": "Ken Thompson"}),
    );
}

const GET_LOOKUP: &str = "config.lookup = { url = \"{base}/_records/{key}\" }";
const POST_LOOKUP: &str = "config.lookup = { url = \"{base}/_records/lookup\", method = \"POST\", keys_field = \"keys\", response_path = \"records\" }";

fn assert_drift_of_three(report: &J) {
    assert_eq!(report["snapshot_rows"], 7, "{report}");
    assert_eq!(report["checked"], 7, "{report}");
    assert_eq!(report["in_sync"], 5, "{report}");
    assert_eq!(report["missing"], 1, "{report}");
    assert_eq!(report["differing"], 1, "{report}");
    assert_eq!(report["deleted_present"], 1, "{report}");
    assert_eq!(report["deletes_checked"], 1, "{report}");
    assert_eq!(report["fields"], json!({"email": 1}), "{report}");
    assert_eq!(report["examples"]["missing"], json!(["3"]), "{report}");
    assert_eq!(
        report["examples"]["deleted_present"],
        json!(["8"]),
        "{report}"
    );
    let row = &report["examples"]["differing"][0];
    assert_eq!(row["key"], "2", "{report}");
    assert_eq!(row["fields"][0]["field"], "email", "{report}");
    assert_eq!(row["fields"][0]["sent"], "grace@example.com", "{report}");
    assert_eq!(row["fields"][0]["found"], "edited@example.com", "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_names_rows_edited_deleted_and_added_behind_backflows_back_and_reconcile_restores_them(
) {
    let (receiver, ws) = delivered_then_one_deleted(GET_LOOKUP).await;
    let clean = ok(
        backflow_as(&ws, "ann", &["sync", "drift", "to_hook", "--json"]),
        "drift",
    );
    assert_eq!(clean.json()["in_sync"], 7, "{}", clean.stdout);
    drift_behind_backflows_back(&receiver);
    let deliveries = receiver.received().len();

    let report = ok(
        backflow_as(&ws, "ann", &["sync", "drift", "to_hook", "--json"]),
        "drift",
    );
    assert_drift_of_three(&report.json());
    let text = ok(
        backflow_as(&ws, "ann", &["sync", "drift", "to_hook"]),
        "drift",
    )
    .stdout;
    // Each kind's line: its name, its count, its examples.
    let line = |kind: &str| {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind:?} line in:\n{text}"))
    };
    assert_eq!(line("missing"), "missing 1 e.g. 3");
    assert_eq!(line("differing"), "differing 1 e.g. 2");
    assert_eq!(line("field email"), "field email 1");
    assert_eq!(
        line("deleted, still present"),
        "deleted, still present 1 (1 deleted rows checked) e.g. 8"
    );
    assert_eq!(
        line("row 2"),
        "row 2: email: sent \"grace@example.com\", found \"edited@example.com\""
    );
    assert!(
        text.contains("7 delivered rows, 7 checked") && text.contains("3 rows drifted"),
        "{text}"
    );
    let sample = ok(
        backflow_as(
            &ws,
            "ann",
            &["sync", "drift", "to_hook", "--sample", "3", "--json"],
        ),
        "drift --sample",
    )
    .json();
    assert_eq!(sample["checked"], 3, "{sample}");
    // Reading is all a drift report does: nothing was sent.
    assert_eq!(receiver.received().len(), deliveries);

    let run = ok(
        backflow_as(&ws, "ann", &["sync", "reconcile", "to_hook", "--json"]),
        "reconcile",
    )
    .json();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "reconcile", "{run}");
    assert_eq!(
        run["delivered"],
        json!({"added": 1, "changed": 1, "removed": 1}),
        "{run}"
    );
    assert_eq!(receiver.record("2").unwrap()["email"], "grace@example.com");
    assert_eq!(receiver.record("3").unwrap()["name"], "Alan Turing");
    assert!(receiver.record("8").is_none());
    let after = ok(
        backflow_as(&ws, "ann", &["sync", "drift", "to_hook", "--json"]),
        "drift",
    )
    .json();
    assert_eq!(
        (
            &after["missing"],
            &after["differing"],
            &after["deleted_present"],
            &after["in_sync"]
        ),
        (&json!(0), &json!(0), &json!(0), &json!(7)),
        "{after}"
    );
    // A reconcile is a run: in the history and the audit log.
    let audit = ok(backflow_as(&ws, "ann", &["audit", "--json"]), "audit").stdout;
    assert!(audit.contains("run.start"), "{audit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_lookup_gives_the_same_report_and_a_policy_can_hold_a_reconcile() {
    let (receiver, ws) = delivered_then_one_deleted(POST_LOOKUP).await;
    drift_behind_backflows_back(&receiver);
    let report = ok(
        backflow_as(&ws, "ann", &["sync", "drift", "to_hook", "--json"]),
        "drift",
    );
    assert_drift_of_three(&report.json());

    let toml = std::fs::read_to_string(ws.path().join("backflow.toml")).unwrap();
    ws.write(
        "backflow.toml",
        &format!("{toml}\n[[policies]]\nplugin = \"policies\"\nconfig = {{ run_approval_above_rows = 1 }}\n"),
    );
    let deliveries = receiver.received().len();
    let held = backflow_as(&ws, "carol", &["sync", "reconcile", "to_hook", "--json"]);
    assert_eq!(held.code, 4, "held: {}\n{}", held.stdout, held.stderr);
    assert_eq!(
        held.json()["status"],
        "awaiting_approval",
        "{}",
        held.stdout
    );
    assert_eq!(
        receiver.received().len(),
        deliveries,
        "nothing sent while held"
    );
    assert_eq!(receiver.record("2").unwrap()["email"], "edited@example.com");
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_needs_a_destination_that_can_read_back() {
    let receiver = record_receiver().await;
    let ws = csv_to_webhook(&receiver, "", "");
    ws.run("to_hook").await;
    let out = backflow_as(&ws, "ann", &["sync", "drift", "to_hook"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("config.lookup"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn if_empty_never_overwrites_a_value_edited_at_the_destination() {
    let receiver = record_receiver().await;
    let lookup = GET_LOOKUP.replace("{base}", &receiver.url(""));
    let ws = csv_to_webhook(
        &receiver,
        &lookup,
        "[syncs.to_hook.mapping]\nid = \"id\"\nemail = \"email\"\nplan = { to = \"plan\", write = \"if_empty\" }",
    );
    let record = ws.run("to_hook").await;
    assert_eq!(record.status.as_str(), "succeeded", "{record:?}");
    assert_eq!(receiver.record("2").unwrap()["plan"], "pro");
    // A rep sets row 2's plan by hand; row 3's is cleared.
    let mut two = receiver.record("2").unwrap();
    two["plan"] = json!("custom");
    receiver.put_record("2", two);
    let mut three = receiver.record("3").unwrap();
    three["plan"] = J::Null;
    receiver.put_record("3", three);
    // The model moves rows 2 and 3 to another plan (and row 2's email).
    let csv = CUSTOMERS_CSV
        .replace(
            "2,grace@example.com,Grace Hopper,pro",
            "2,grace@new.example.com,Grace Hopper,enterprise",
        )
        .replace(
            "3,alan@example.com,Alan Turing,pro",
            "3,alan@example.com,Alan Turing,enterprise",
        );
    ws.write("data/customers.csv", &csv);
    let record = ws.run("to_hook").await;
    assert_eq!(record.status.as_str(), "succeeded", "{record:?}");
    assert_eq!(record.delivered.changed, 2, "{record:?}");
    let two = receiver.record("2").unwrap();
    assert_eq!(
        two["plan"], "custom",
        "if_empty kept the rep's value: {two}"
    );
    assert_eq!(two["email"], "grace@new.example.com", "{two}");
    assert_eq!(
        receiver.record("3").unwrap()["plan"],
        "enterprise",
        "an empty field is written"
    );
    // The destination's value wins: not drift.
    let report = ok(
        backflow_as(&ws, "ann", &["sync", "drift", "to_hook", "--json"]),
        "drift",
    )
    .json();
    assert_eq!(
        (&report["differing"], &report["in_sync"]),
        (&json!(0), &json!(8)),
        "{report}"
    );
}

/// In `mode = "update"` every row is an update of a record the destination already holds,
/// the first run's included: `if_empty` reads those back too, so a value set at the
/// destination before backflow ever ran is kept.
#[tokio::test(flavor = "multi_thread")]
async fn if_empty_keeps_values_the_destination_held_before_the_first_update() {
    let receiver = record_receiver().await;
    receiver.put_record(
        "2",
        json!({"id": 2, "email": "old@example.com", "plan": "custom"}),
    );
    receiver.put_record(
        "3",
        json!({"id": 3, "email": "old3@example.com", "plan": null}),
    );
    let lookup = GET_LOOKUP.replace("{base}", &receiver.url(""));
    let ws = csv_to_webhook(
        &receiver,
        &lookup,
        "mode = \"update\"\n[syncs.to_hook.mapping]\nid = \"id\"\nemail = \"email\"\nplan = { to = \"plan\", write = \"if_empty\" }",
    );
    let record = ws.run("to_hook").await;
    assert_eq!(record.status.as_str(), "succeeded", "{record:?}");
    let two = receiver.record("2").unwrap();
    assert_eq!(two["plan"], "custom", "the destination's value kept: {two}");
    assert_eq!(
        two["email"], "grace@example.com",
        "other fields updated: {two}"
    );
    assert_eq!(
        receiver.record("3").unwrap()["plan"],
        "pro",
        "an empty field is written"
    );
}

/// `write = "on_insert"` fields are set once: a value edited at the destination afterwards is
/// what the rule means to keep, so drift does not report it (and reconcile leaves it).
#[tokio::test(flavor = "multi_thread")]
async fn drift_does_not_report_on_insert_fields_the_destination_changed() {
    let receiver = record_receiver().await;
    let lookup = GET_LOOKUP.replace("{base}", &receiver.url(""));
    let ws = csv_to_webhook(
        &receiver,
        &lookup,
        "[syncs.to_hook.mapping]\nid = \"id\"\nemail = \"email\"\nplan = { to = \"plan\", write = \"on_insert\" }",
    );
    let record = ws.run("to_hook").await;
    assert_eq!(record.status.as_str(), "succeeded", "{record:?}");
    let mut two = receiver.record("2").unwrap();
    two["plan"] = json!("custom");
    receiver.put_record("2", two);
    let report = ok(
        backflow_as(&ws, "ann", &["sync", "drift", "to_hook", "--json"]),
        "drift",
    )
    .json();
    assert_eq!(report["differing"], 0, "{report}");
    assert_eq!(report["in_sync"], 8, "{report}");
}
