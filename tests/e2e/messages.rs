//! What the webhook's failures say (issues 37 and 41): a 401/403 blames what the sync really
//! sends, a missing secret is named in readable text, and a 207 Multi-Status rejects exactly
//! the rows it names instead of passing for a success.

use crate::support::*;
use backflow::state::RunStatus;
use backflow::toolkit::receiver::{Receiver, ReceiverOptions};
use std::collections::BTreeSet;

async fn receiver_with(options: ReceiverOptions) -> Receiver {
    backflow::toolkit::receiver::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap()
}

/// Four people (ids 1..=4, emails a@x.com..d@x.com) synced to a webhook at `receiver`.
fn people_to(receiver: &Receiver, destination: &str, sync: &str) -> TestWorkspace {
    let ws = file_workspace(
        "people",
        "people.csv",
        &format!(
            "[destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"{url}\"\ngrants.network = [\"{addr}\"]\n{destination}\n[syncs.s]\nmodel = \"people\"\ndestination = \"hook\"\n{sync}\n",
            url = receiver.url("/in"),
            addr = receiver.addr
        ),
    );
    ws.write(
        "data/people.csv",
        "id,email\n1,a@x.com\n2,b@x.com\n3,c@x.com\n4,d@x.com\n",
    );
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_or_403_without_credentials_says_the_sync_sends_none() {
    for status in [401u16, 403] {
        let receiver = receiver_with(ReceiverOptions {
            status_for_method: Some(("POST".into(), status)),
            ..Default::default()
        })
        .await;
        let ws = people_to(&receiver, "", "");
        let run = ws.run("s").await;
        assert_eq!(run.status, RunStatus::Failed, "{run:?}");
        let e = run.error.unwrap();
        assert!(
            !e.contains("config.headers:"),
            "no headers are configured: they are not to blame: {e}"
        );
        assert!(
            e.contains("destinations.hook.config:")
                && e.contains(&format!("HTTP {status}"))
                && e.contains("sends no credentials")
                && e.contains("config.headers = { Authorization = \"Bearer ${env.NAME}\" }")
                && e.contains("grants.env"),
            "{e}"
        );
        assert!(!e.contains("[redacted]"), "nothing secret here: {e}");
    }

    // Headers, but none a credential: they are named, with the same advice.
    let receiver = receiver_with(ReceiverOptions {
        status_for_method: Some(("POST".into(), 401)),
        ..Default::default()
    })
    .await;
    let ws = people_to(
        &receiver,
        "config.headers = { X-Source = \"backflow\" }",
        "",
    );
    let e = ws.run("s").await.error.unwrap();
    assert!(
        e.contains("destinations.hook.config.headers: HTTP 401")
            && e.contains("sends no credentials"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_is_named_in_readable_text() {
    // No test sets it (tests pass variables to child processes, never to their own).
    const VAR: &str = "BACKFLOW_E2E_MESSAGES_NEVER_SET";
    let receiver = receiver_with(ReceiverOptions::default()).await;
    let ws = people_to(
        &receiver,
        &format!(
            "config.headers = {{ Authorization = \"Bearer ${{env.{VAR}}}\" }}\ngrants.env = [\"{VAR}\"]"
        ),
        "",
    );
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let e = run.error.unwrap();
    assert!(
        e.contains(&format!(
            "destinations.hook.config.headers.Authorization: environment variable {VAR} is not set"
        )),
        "{e}"
    );
    assert!(!e.contains("[redacted]"), "{e}");
    assert!(receiver.received().is_empty());

    // What the CLI shows reads the same.
    let out = backflow_as(&ws, "tester", &["runs", "--json"]);
    let shown = out.json().to_string();
    assert!(
        shown.contains(&format!("environment variable {VAR} is not set")),
        "{shown}"
    );
}

/// The rejected rows of a run: (key, error).
fn rejected(run: &backflow::state::RunRecord) -> BTreeSet<(String, String)> {
    run.rejected
        .iter()
        .map(|r| (r.key.clone(), r.error.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_207_rejects_exactly_the_rows_it_names_and_delivers_the_rest() {
    let refuse = || ReceiverOptions {
        multi_status: Some(("email".into(), vec!["b@x.com".into(), "d@x.com".into()])),
        ..Default::default()
    };
    let expected: BTreeSet<(String, String)> = [
        ("2", "HTTP 207: rows with email = b@x.com are refused"),
        ("4", "HTTP 207: rows with email = d@x.com are refused"),
    ]
    .into_iter()
    .map(|(k, m)| (k.to_string(), m.to_string()))
    .collect();
    // By index in the batch, by primary key, and one row per request.
    for (read, sync) in [
        (
            "{ errors = \"/errors\", index = \"index\", message = \"message\" }",
            "",
        ),
        ("{ errors = \"/errors\", key = \"id\" }", ""),
        ("{ key = \"id\" }", "batch_size = 1"),
    ] {
        let receiver = receiver_with(refuse()).await;
        let ws = people_to(&receiver, &format!("config.multi_status = {read}"), sync);
        let run = ws.run("s").await;
        assert_eq!(run.status, RunStatus::Partial, "{read}: {run:?}");
        assert_eq!(
            (run.delivered.added, run.failed.added),
            (2, 2),
            "{read}: {run:?}"
        );
        assert_eq!(rejected(&run), expected, "{read}");
        assert_eq!(receiver.rows(), 2, "{read}");
        assert!(receiver.received().iter().any(|r| r.status == 207));
    }

    // The CLI shows the same two rejected rows.
    let receiver = receiver_with(refuse()).await;
    let ws = people_to(&receiver, "config.multi_status = { index = \"index\" }", "");
    let run = ws.run("s").await;
    let out = ok(
        backflow_as(&ws, "tester", &["runs", "show", &run.run_id, "--json"]),
        "runs show",
    );
    let shown = out.json();
    let keys: BTreeSet<String> = shown["rejected"]
        .as_array()
        .unwrap_or_else(|| panic!("{shown}"))
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, BTreeSet::from(["2".to_string(), "4".to_string()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_207_that_cannot_be_read_stops_the_run_naming_the_setting() {
    // No multi_status: the per-row errors cannot be read, so nothing passes for delivered.
    let receiver = receiver_with(ReceiverOptions {
        multi_status: Some(("email".into(), vec!["b@x.com".into()])),
        ..Default::default()
    })
    .await;
    let ws = people_to(&receiver, "", "");
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_eq!(run.delivered.added, 0, "{run:?}");
    let e = run.error.unwrap();
    assert!(
        e.contains("destinations.hook.config.multi_status: HTTP 207 Multi-Status")
            && e.contains("set config.multi_status"),
        "{e}"
    );

    // A pointer that finds no array in the answer is not read as "no errors".
    let ws = people_to(
        &receiver,
        "config.multi_status = { errors = \"/failures\", index = \"index\" }",
        "",
    );
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let e = run.error.unwrap();
    assert!(
        e.contains("multi_status") && e.contains("no array at \"/failures\""),
        "{e}"
    );
}
