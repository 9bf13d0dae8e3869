//! CSV → webhook syncs into a real HTTP server on 127.0.0.1.

use crate::support::*;
use backflow::state::RunStatus;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn csv_rows_arrive_with_mapped_fields_and_secret_headers() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(
        &receiver,
        r#"config.headers = { Authorization = "Bearer ${env.BACKFLOW_E2E_TOKEN}", X-Source = "backflow" }
grants.env = ["BACKFLOW_E2E_TOKEN"]"#,
        r#"batch_size = 3
[syncs.to_hook.mapping]
id = "external_id"
email = "email"
name = "full_name"
mrr = "monthly_revenue"
signed_up = "signup_date""#,
    );
    // The secret reaches the run through the environment of the process running it.
    let run = tokio::task::spawn_blocking(move || {
        let out = backflow_with_env(
            &ws,
            None,
            &["sync", "run", "to_hook", "--json"],
            &[("BACKFLOW_E2E_TOKEN", "s3cr3t-token")],
        );
        ok(out, "sync run").json()
    })
    .await
    .unwrap();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        (
            &run["planned"]["added"],
            &run["delivered"]["added"],
            &run["failed"]["added"]
        ),
        (&json!(8), &json!(8), &json!(0))
    );

    let received = receiver.received();
    assert_eq!(received.len(), 3, "8 rows in batches of 3");
    for r in &received {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/contacts");
        assert_eq!(r.headers["authorization"], "Bearer s3cr3t-token");
        assert_eq!(r.headers["x-source"], "backflow");
        assert_eq!(r.headers["content-type"], "application/json");
    }
    let rows: Vec<serde_json::Value> = received
        .iter()
        .flat_map(|r| r.body.as_array().unwrap().clone())
        .collect();
    assert_eq!(rows.len(), 8);
    assert_eq!(
        rows[0],
        json!({"external_id": 1, "email": "ada@example.com", "full_name": "Ada Lovelace", "monthly_revenue": "1250.00", "signup_date": "2021-03-04"})
    );
    assert_eq!(rows[4]["full_name"], "Liskov, Barbara");
    let ids: Vec<i64> = rows
        .iter()
        .map(|r| r["external_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=8).collect::<Vec<_>>());
    // Unmapped columns are not sent.
    assert!(rows.iter().all(|r| r.get("plan").is_none()));
}

#[tokio::test(flavor = "multi_thread")]
async fn row_mode_sends_one_request_per_row_with_the_operation() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(
        &receiver,
        r#"config.batch_mode = "row"
config.operation_field = "_op""#,
        "",
    );
    let run = ws.run("to_hook").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    let received = receiver.received();
    assert_eq!(received.len(), 8);
    assert!(received
        .iter()
        .all(|r| r.body.is_object() && r.body["_op"] == "insert"));
    // Without a mapping every column goes under its own name.
    assert_eq!(received[0].body["plan"], "enterprise");
    assert_eq!(received[0].body["id"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn null_primary_keys_stop_the_run_before_any_write() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(&receiver, "", "");
    ws.write(
        "data/customers.csv",
        "id,email\n1,a@x.com\n,b@x.com\n3,c@x.com\n",
    );
    let run = ws.run("to_hook").await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains("NULL primary key") && error.contains("rows 2"),
        "{error}"
    );
    assert_eq!(receiver.received().len(), 0, "nothing may be sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_the_destination_rejects_are_recorded_and_the_rest_delivered() {
    // A server that refuses any request whose body mentions "grace".
    let app = axum::Router::new().fallback(|body: String| async move {
        if body.contains("grace") {
            (
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "email domain blocked".to_string(),
            )
        } else {
            (axum::http::StatusCode::OK, "{}".to_string())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let ws = file_workspace(
        "customers",
        "customers.csv",
        &format!(
            r#"
[destinations.strict]
plugin = "webhook"
config.url = "http://{addr}/in"
config.batch_mode = "row"
grants.network = ["{addr}"]
[syncs.s]
model = "customers"
destination = "strict"
"#
        ),
    );
    ws.write("data/customers.csv", CUSTOMERS_CSV);
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Partial, "{run:?}");
    assert_eq!((run.delivered.added, run.failed.added), (7, 1));
    assert_eq!(run.rejected.len(), 1);
    assert_eq!(run.rejected[0].key, "2");
    assert!(
        run.rejected[0].error.contains("422")
            && run.rejected[0].error.contains("email domain blocked"),
        "{:?}",
        run.rejected
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_that_is_down_fails_the_run_with_the_reason() {
    // Bind then drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ws = file_workspace(
        "customers",
        "customers.csv",
        &format!(
            r#"
[destinations.down]
plugin = "webhook"
config.url = "http://127.0.0.1:{port}/in"
grants.network = ["127.0.0.1:{port}"]
[syncs.s]
model = "customers"
destination = "down"
"#
        ),
    );
    ws.write("data/customers.csv", "id,email\n1,a@x.com\n");
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Partial, "{run:?}");
    assert_eq!(run.failed.added, 1);
    assert!(
        run.rejected[0].error.contains("gave up after 5 attempts"),
        "{:?}",
        run.rejected
    );
    assert!(
        run.rejected[0].error.to_lowercase().contains("connect"),
        "{:?}",
        run.rejected
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_are_recorded_in_history() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(&receiver, "", "");
    let first = ws.run("to_hook").await;
    let second = ws.run("to_hook").await;
    let state = backflow::state::StateStore::open(&ws.load().state_dir).unwrap();
    let runs = state.runs(Some("to_hook"), 10).unwrap();
    assert_eq!(
        runs.iter().map(|r| r.run_id.clone()).collect::<Vec<_>>(),
        vec![second.run_id.clone(), first.run_id.clone()]
    );
    let stored = state.run(&first.run_id).unwrap().unwrap();
    assert_eq!(stored, first);
    assert_eq!(stored.user, "tester");
    assert_eq!(stored.plugins.source.len(), 64);
}
