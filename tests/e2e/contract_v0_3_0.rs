//! Contract 0.3.0 end to end: a destination says what its config can express
//! (`operations-for`), so a webhook without a delete route is never asked to delete (a
//! mirror sync is refused at load, an undo of inserts before anything is sent), whole-model
//! checks let an undo pass (`plan-summary.purpose`), and a 0.1.0 component still loads and
//! runs beside 0.3.0 ones.

use crate::support::*;
use backflow::domain::CheckVerdict;
use backflow::host::{destination_operations, ContractVersion, Limits};
use backflow::state::{RunRecord, RunStatus, StateStore};
use backflow::sync::{RunOptions, UndoTarget};
use backflow_plugin_sdk::Operation;
use serde_json::Value as J;

/// The three config options that let the webhook express a delete.
const DELETE_OPTIONS: [&str; 3] = ["operation_field", "methods.delete", "endpoints.delete"];

fn assert_names_delete_options(error: &str) {
    for option in DELETE_OPTIONS {
        assert!(error.contains(option), "{option} not named in: {error}");
    }
}

/// Runs `sync`, or undoes run `undo` of it, in-process as `tester`.
async fn run(ws: &TestWorkspace, sync: &str, undo: Option<&str>) -> Result<RunRecord, String> {
    let workspace = ws.load();
    let state = StateStore::open(&workspace.state_dir).unwrap();
    backflow::app::run_sync(
        &host(),
        &workspace,
        &state,
        sync,
        &RunOptions {
            trigger: "test".into(),
            user: "tester".into(),
            approved_run: None,
            run_id: None,
            full_resync: false,
            draft: false,
            undo: undo.map(|run_id| UndoTarget {
                run_id: run_id.to_string(),
                force: false,
            }),
            stop: None,
        },
    )
    .await
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_sync_to_a_webhook_that_cannot_delete_is_refused_naming_the_options() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(&receiver, "", "mode = \"mirror\"");
    let error = run(&ws, "to_hook", None).await.unwrap_err();
    assert!(
        error.contains("syncs.to_hook.mode: mode mirror needs the destination to delete, which hook does not support with its config"),
        "{error}"
    );
    assert_names_delete_options(&error);
    // `sync plan` (a dry run) is refused alike, and nothing was sent.
    let plan = backflow_as(&ws, "tester", &["sync", "plan", "to_hook"]);
    assert_ne!(plan.code, 0, "{}", plan.stdout);
    assert_names_delete_options(&plan.stderr);
    assert!(receiver.received().is_empty());

    // What the plugin says, through the host's typed call.
    let host = host();
    let webhook = host.load(&plugin("webhook.wasm")).await.unwrap();
    assert_eq!(webhook.contract, ContractVersion::V0_3_0);
    let support = destination_operations(
        &host,
        &webhook,
        Limits::default(),
        r#"{"url": "http://127.0.0.1:1/"}"#,
    )
    .await
    .unwrap();
    assert!(!support.supports(Operation::Delete), "{support:?}");
    assert!(support.supports(Operation::Insert), "{support:?}");
    assert_names_delete_options(support.hint(Operation::Delete).unwrap());
    for config in [
        r#"{"url": "http://127.0.0.1:1/", "operation_field": "_op"}"#,
        r#"{"url": "http://127.0.0.1:1/", "methods": {"delete": "DELETE"}}"#,
        r#"{"url": "http://127.0.0.1:1/", "endpoints": {"delete": "http://127.0.0.1:1/del"}}"#,
    ] {
        let support = destination_operations(&host, &webhook, Limits::default(), config)
            .await
            .unwrap();
        assert!(support.supports(Operation::Delete), "{config}: {support:?}");
        assert!(support.hints.is_empty(), "{config}: {support:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_an_operation_field_a_mirror_sync_runs_and_the_receiver_sees_the_deletes_marked() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(
        &receiver,
        "config.operation_field = \"_op\"",
        "mode = \"mirror\"",
    );
    let first = run(&ws, "to_hook", None).await.unwrap();
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.error);
    assert_eq!(first.delivered.added, 8);
    // Customers 7 and 8 leave the model.
    let kept: Vec<&str> = CUSTOMERS_CSV.lines().take(7).collect();
    ws.write("data/customers.csv", &(kept.join("\n") + "\n"));
    let second = run(&ws, "to_hook", None).await.unwrap();
    assert_eq!(second.status, RunStatus::Succeeded, "{:?}", second.error);
    assert_eq!(second.delivered.removed, 2, "{second:?}");
    let mut deleted: Vec<String> = receiver
        .received()
        .into_iter()
        .flat_map(|r| match r.body {
            J::Array(rows) => rows,
            other => vec![other],
        })
        .filter(|row| row["_op"] == "delete")
        .map(|row| row["id"].to_string())
        .collect();
    deleted.sort();
    assert_eq!(deleted, ["7", "8"], "the deletes carry _op = delete");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undo_of_inserts_to_a_webhook_that_cannot_delete_fails_before_sending() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(&receiver, "", "");
    let inserted = run(&ws, "to_hook", None).await.unwrap();
    assert_eq!(
        inserted.status,
        RunStatus::Succeeded,
        "{:?}",
        inserted.error
    );
    let sent = receiver.received().len();
    let undo = run(&ws, "to_hook", Some(&inserted.run_id)).await.unwrap();
    assert_eq!(undo.status, RunStatus::Failed, "{undo:?}");
    let error = undo.error.clone().unwrap_or_default();
    assert!(
        error.contains("syncs.to_hook: this undo would send 8 deletes to destination hook, whose config cannot express deletes; nothing was sent"),
        "{error}"
    );
    assert_names_delete_options(&error);
    assert_eq!(receiver.received().len(), sent, "nothing was sent");
    assert_eq!(undo.delivered.total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undo_passes_min_model_rows_and_the_rows_it_sends_are_still_checked() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(
        &receiver,
        "config.operation_field = \"_op\"",
        "[[syncs.to_hook.checks]]\nplugin = \"checks\"\nconfig = { check = \"min_model_rows\", min = 1 }\n[[syncs.to_hook.checks]]\nplugin = \"checks\"\nconfig = { check = \"not_null\", columns = [\"id\"] }",
    );
    let inserted = run(&ws, "to_hook", None).await.unwrap();
    assert_eq!(
        inserted.status,
        RunStatus::Succeeded,
        "{:?}",
        inserted.error
    );
    let undo = run(&ws, "to_hook", Some(&inserted.run_id)).await.unwrap();
    assert_eq!(undo.status, RunStatus::Succeeded, "{undo:?}");
    assert_eq!(undo.delivered.removed, 8, "{undo:?}");
    assert_eq!(undo.checks.len(), 2, "{:?}", undo.checks);
    let min_rows = &undo.checks[0];
    assert_eq!(min_rows.verdict, CheckVerdict::Pass, "{min_rows:?}");
    assert!(
        min_rows.message.contains("does not apply to an undo")
            && min_rows.message.contains("min_model_rows"),
        "{min_rows:?}"
    );
    let not_null = &undo.checks[1];
    assert_eq!(not_null.verdict, CheckVerdict::Pass, "{not_null:?}");
    assert!(
        !not_null.message.contains("undo"),
        "a row rule judges the undo's rows: {not_null:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_built_against_contract_0_1_0_still_loads_and_runs() {
    let host = host();
    let old = host.load(&plugin("v010_destination.wasm")).await.unwrap();
    assert_eq!(old.contract, ContractVersion::V0_1_0);
    assert!(old.capabilities.is_empty());
    // An old plugin can express every operation of its spec.
    let support = destination_operations(&host, &old, Limits::default(), "{}")
        .await
        .unwrap();
    assert_eq!(support.operations, old.spec.operations);

    let ws = file_workspace(
        "customers",
        "customers.csv",
        "[destinations.old]\nplugin = \"v010-destination\"\n[syncs.to_old]\nmodel = \"customers\"\ndestination = \"old\"\nmode = \"mirror\"\n",
    );
    ws.write("data/customers.csv", CUSTOMERS_CSV);
    let first = run(&ws, "to_old", None).await.unwrap();
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.error);
    assert_eq!(first.delivered.added, 8);
    let undo = run(&ws, "to_old", Some(&first.run_id)).await.unwrap();
    assert_eq!(undo.status, RunStatus::Succeeded, "{:?}", undo.error);
    assert_eq!(undo.delivered.removed, 8);

    let file = plugin("v010_destination.wasm");
    let inspect = ok(
        backflow_as(
            &ws,
            "tester",
            &["plugin", "inspect", file.to_str().unwrap(), "--json"],
        ),
        "plugin inspect",
    );
    assert_eq!(inspect.json()["wit"], "backflow:plugin@0.1.0");
    let list = ok(
        backflow_as(&ws, "tester", &["plugin", "list"]),
        "plugin list",
    );
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with("v010-destination") && l.contains("0.1.0"))
            && list
                .stdout
                .lines()
                .any(|l| l.starts_with("webhook") && l.contains("0.3.0")),
        "{}",
        list.stdout
    );
}
