//! Delivery against a receiver that behaves like a real API: signatures, idempotency keys,
//! templates, 429 with Retry-After, server errors, refused rows.

use crate::support::*;
use backflow::state::RunStatus;
use backflow::toolkit::receiver::{Receiver, ReceiverOptions};
use std::collections::HashSet;

async fn receiver_with(options: ReceiverOptions) -> Receiver {
    backflow::toolkit::receiver::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap()
}

const PEOPLE: &str = "id,email\n1,a@x.com\n2,b@x.com\n3,c@x.com\n4,d@x.com\n";

/// A people CSV of `n` rows with ids 1..=n.
fn people(n: usize) -> String {
    let mut csv = String::from("id,email\n");
    for i in 1..=n {
        csv.push_str(&format!("{i},u{i}@x.com\n"));
    }
    csv
}

fn to(receiver: &Receiver, destination: &str, sync: &str) -> TestWorkspace {
    let ws = file_workspace(
        "people",
        "people.csv",
        &format!(
            "[destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"{url}\"\ngrants.network = [\"{addr}\"]\n{destination}\n[syncs.s]\nmodel = \"people\"\ndestination = \"hook\"\n{sync}\n",
            url = receiver.url("/in"),
            addr = receiver.addr
        ),
    );
    ws.write("data/people.csv", PEOPLE);
    ws
}

/// `sync run s --json` in a process whose environment holds the signing secret.
fn run_signed(ws: &TestWorkspace) -> serde_json::Value {
    let out = tokio::task::block_in_place(|| {
        backflow_with_env(
            ws,
            None,
            &["sync", "run", "s", "--json"],
            &[("BACKFLOW_E2E_SIGNING", "whsec-test-123")],
        )
    });
    out.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_signed_and_a_wrong_secret_stops_the_run() {
    let receiver = receiver_with(ReceiverOptions {
        hmac_secret: Some("whsec-test-123".into()),
        ..Default::default()
    })
    .await;
    let ws = to(&receiver, "config.signing_secret = \"${env.BACKFLOW_E2E_SIGNING}\"\ngrants.env = [\"BACKFLOW_E2E_SIGNING\"]", "");
    let run = run_signed(&ws);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(receiver
        .received()
        .iter()
        .all(|r| r.status == 200 && r.headers["x-backflow-signature"].starts_with("t=")));

    let strict = receiver_with(ReceiverOptions {
        hmac_secret: Some("another-secret".into()),
        ..Default::default()
    })
    .await;
    let ws = to(&strict, "config.signing_secret = \"${env.BACKFLOW_E2E_SIGNING}\"\ngrants.env = [\"BACKFLOW_E2E_SIGNING\"]", "");
    let run = run_signed(&ws);
    assert_eq!(run["status"], "failed", "{run}");
    let e = run["error"].as_str().unwrap_or_default();
    assert!(
        e.contains("HTTP 401")
            && e.contains("check the credentials")
            && e.contains("config.signing_secret"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_storm_is_ridden_out_and_replays_reuse_their_idempotency_key() {
    let receiver = receiver_with(ReceiverOptions {
        rate_limit: Some(2),
        ..Default::default()
    })
    .await;
    let ws = to(&receiver, "config.batch_mode = \"row\"", "batch_size = 1");
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.delivered.added, 4);
    let received = receiver.received();
    let accepted: Vec<_> = received.iter().filter(|r| r.status == 200).collect();
    let throttled: Vec<_> = received.iter().filter(|r| r.status == 429).collect();
    assert_eq!(accepted.len(), 4, "every row delivered once");
    assert!(
        !throttled.is_empty(),
        "the receiver throttled some requests"
    );
    let keys: HashSet<&String> = accepted
        .iter()
        .map(|r| &r.headers["idempotency-key"])
        .collect();
    assert_eq!(keys.len(), 4);
    for r in &throttled {
        assert!(
            keys.contains(&r.headers["idempotency-key"]),
            "a replay carries the same key as its accepted twin"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_retried_until_every_row_is_delivered() {
    let receiver = receiver_with(ReceiverOptions {
        error_rate: 0.5,
        ..Default::default()
    })
    .await;
    let ws = to(&receiver, "", "batch_size = 1");
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(receiver.rows(), 4);
    assert!(receiver.received().iter().any(|r| r.status == 500));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_row_is_isolated_and_the_rest_delivered() {
    let receiver = receiver_with(ReceiverOptions {
        reject: Some(("email".into(), "c@x.com".into())),
        ..Default::default()
    })
    .await;
    let ws = to(&receiver, "", "");
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Partial);
    assert_eq!((run.delivered.added, run.failed.added), (3, 1));
    assert_eq!(run.rejected[0].key, "3");
    assert!(run.rejected[0]
        .error
        .contains("rows with email = c@x.com are refused"));
    assert_eq!(receiver.rows(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn templates_wrappers_and_per_operation_endpoints_shape_the_requests() {
    let receiver = receiver().await;
    let base = receiver.url("");
    let ws = to(
        &receiver,
        &format!(
            r#"config.batch_mode = "row"
config.endpoints = {{ insert = "{base}/contacts/{{{{ row.id }}}}", delete = "{base}/contacts/{{{{ row.id }}}}/delete" }}
config.methods = {{ delete = "DELETE" }}
config.body_template = '{{"contact": {{"email": {{{{ row.email | tojson }}}}, "source": {{{{ sync | tojson }}}}}}}}'"#
        ),
        "mode = \"mirror\"",
    );
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    let first = &receiver.received()[0];
    assert_eq!(first.path, "/contacts/1");
    assert_eq!(
        first.body,
        serde_json::json!({"contact": {"email": "a@x.com", "source": "s"}})
    );

    ws.write(
        "data/people.csv",
        "id,email\n1,a@x.com\n2,b@x.com\n3,c@x.com\n",
    );
    let before = receiver.received().len();
    let run = ws.run("s").await;
    assert_eq!(run.delivered.removed, 1, "{run:?}");
    let delete = &receiver.received()[before];
    assert_eq!(
        (delete.method.as_str(), delete.path.as_str()),
        ("DELETE", "/contacts/4/delete")
    );

    // Array mode with a wrapper.
    let receiver = crate::support::receiver().await;
    let ws = to(&receiver, "config.wrapper = \"records\"", "");
    ws.run("s").await;
    let body = &receiver.received()[0].body;
    assert_eq!(body["records"].as_array().unwrap().len(), 4);
    assert_eq!(receiver.rows(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_below_the_receivers_limit_is_never_throttled() {
    // The receiver allows 6 requests a second; the sync sends at most 5.
    let receiver = receiver_with(ReceiverOptions {
        rate_limit: Some(6),
        ..Default::default()
    })
    .await;
    let ws = to(
        &receiver,
        "config.batch_mode = \"row\"",
        "batch_size = 1\nrate_limit = { requests_per_second = 5 }",
    );
    let csv = people(12);
    ws.write("data/people.csv", &csv);
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    let received = receiver.received();
    assert_eq!(received.len(), 12);
    assert!(
        received.iter().all(|r| r.status == 200),
        "no 429: {:?}",
        received.iter().map(|r| r.status).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_time_budget_stops_delivery_and_the_next_run_sends_the_rest() {
    let receiver = receiver_with(ReceiverOptions {
        latency_ms: 300,
        ..Default::default()
    })
    .await;
    let ws = to(&receiver, "", "batch_size = 1\ntime_budget_s = 1");
    let csv = people(20);
    ws.write("data/people.csv", &csv);
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert!(
        run.error
            .as_deref()
            .unwrap()
            .contains("time budget of 1 s (syncs.s.time_budget_s)"),
        "{:?}",
        run.error
    );
    let sent = run.delivered.added;
    assert!(sent < 20, "{run:?}");
    // What the run counts as delivered the destination has (a request in flight when the
    // budget ran out may have arrived too, and is sent again).
    let arrived_first = receiver.rows() as u64;
    assert!(
        arrived_first >= sent && arrived_first <= sent + 1,
        "{run:?}"
    );
    let mut next = ws.run("s").await;
    assert_eq!(next.diff.added, 20 - sent, "the rest is planned again");
    // Each run within its budget sends some more (the budget bounds the runs, not the number
    // of rows): a few more runs get the rest there.
    for _ in 0..20 {
        if next.status == RunStatus::Succeeded {
            break;
        }
        assert!(next.delivered.added > 0, "{next:?}");
        next = ws.run("s").await;
    }
    assert_eq!(next.status, RunStatus::Succeeded, "{next:?}");
    // Between them, the runs got every row to the destination.
    let ids: HashSet<i64> = receiver
        .received()
        .iter()
        .flat_map(|r| r.body.as_array().cloned().unwrap())
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=20).collect::<HashSet<i64>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn max_in_flight_sends_batches_concurrently_and_every_row_once() {
    let receiver = receiver_with(ReceiverOptions {
        latency_ms: 150,
        ..Default::default()
    })
    .await;
    let ws = to(&receiver, "", "batch_size = 2\nmax_in_flight = 4");
    let csv = people(40);
    ws.write("data/people.csv", &csv);
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.delivered.added, 40);
    assert_eq!(receiver.rows(), 40);
    let ids: HashSet<i64> = receiver
        .received()
        .iter()
        .flat_map(|r| r.body.as_array().cloned().unwrap())
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 40, "every row exactly once");
    let c = receiver.max_concurrency();
    assert!((2..=4).contains(&c), "requests in flight at once: {c}");
    let state = backflow::state::StateStore::open(&ws.load().state_dir).unwrap();
    assert_eq!(state.snapshot_len("s").unwrap(), 40);
}

/// With one request in flight, a second writer builds the next batch meanwhile (see
/// `host::request_gate`), yet the destination never sees two requests at once. (Usually in
/// the plan's order, but not always: a writer may ask for its turn after the next one.)
#[tokio::test(flavor = "multi_thread")]
async fn one_request_in_flight_means_one_at_a_time() {
    let receiver = receiver_with(ReceiverOptions {
        latency_ms: 40,
        ..Default::default()
    })
    .await;
    let ws = to(&receiver, "", "batch_size = 2\nmax_in_flight = 1");
    let csv = people(40);
    ws.write("data/people.csv", &csv);
    let run = ws.run("s").await;
    assert_eq!(
        (run.status, run.delivered.added),
        (RunStatus::Succeeded, 40),
        "{run:?}"
    );
    assert_eq!(receiver.max_concurrency(), 1, "requests in flight at once");
    let mut ids: Vec<i64> = receiver
        .received()
        .iter()
        .flat_map(|r| r.body.as_array().cloned().unwrap())
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=40).collect::<Vec<_>>(), "every row once");

    // Three in flight: the destination holds every request until three are waiting at once
    // (a run sending fewer at a time would never get an answer), then answers them all.
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let (in_flight, most, requests) = (
        std::sync::Arc::new(AtomicUsize::new(0)),
        std::sync::Arc::new(AtomicUsize::new(0)),
        std::sync::Arc::new(AtomicUsize::new(0)),
    );
    let (open, opened) = tokio::sync::watch::channel(false);
    let open = std::sync::Arc::new(open);
    let addr = {
        let (in_flight, most, requests) = (in_flight.clone(), most.clone(), requests.clone());
        raw_http_server(move || {
            let (in_flight, most, requests) = (in_flight.clone(), most.clone(), requests.clone());
            let (open, mut opened) = (open.clone(), opened.clone());
            async move {
                requests.fetch_add(1, SeqCst);
                let now = in_flight.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                if now >= 3 {
                    open.send_replace(true);
                }
                let _ = opened.wait_for(|o| *o).await;
                in_flight.fetch_sub(1, SeqCst);
                (200, b"{\"ok\":true}".to_vec())
            }
        })
        .await
    };
    let ws = file_workspace(
        "people",
        "people.csv",
        &format!(
            "[destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"http://{addr}/in\"\ngrants.network = [\"{addr}\"]\n[syncs.s]\nmodel = \"people\"\ndestination = \"hook\"\nbatch_size = 2\nmax_in_flight = 3\n"
        ),
    );
    ws.write("data/people.csv", &csv);
    let run = ws.run("s").await;
    assert_eq!(
        (run.status, run.delivered.added),
        (RunStatus::Succeeded, 40),
        "{run:?}"
    );
    assert_eq!(most.load(SeqCst), 3, "requests in flight at once");
    assert_eq!(requests.load(SeqCst), 20, "40 rows in batches of 2");
}

/// A writer waiting for its turn while another batch is retried is not stopped by its
/// wall-clock limit: the wait is the destination's time, not the plugin's.
#[tokio::test(flavor = "multi_thread")]
async fn a_writer_waiting_behind_a_retried_batch_is_not_timed_out() {
    // Requests 1 to 3 fail: the batch that goes first is retried with backoff (0.4, 0.8 and
    // 1.6 s) and keeps its turn for about 3 s; the other writer waits that long, twice its
    // wall-clock limit, then sends in a moment.
    let receiver = receiver_with(ReceiverOptions {
        fail_requests: Some((1, 3)),
        ..Default::default()
    })
    .await;
    let ws = to(
        &receiver,
        "limits = { wall_timeout_ms = 1500 }",
        "batch_size = 2\nmax_in_flight = 1",
    );
    let run = ws.run("s").await;
    assert_eq!(
        (run.status, run.delivered.added),
        (RunStatus::Succeeded, 4),
        "{run:?}"
    );
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|r| r.status == 500)
            .count(),
        3
    );
    assert_eq!(receiver.max_concurrency(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_down_for_its_first_seconds_gets_every_row_once_it_is_up() {
    let receiver = receiver_with(ReceiverOptions {
        down_for_ms: 1500,
        ..Default::default()
    })
    .await;
    let ws = to(&receiver, "", "");
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(receiver.rows(), 4);
    assert!(
        receiver.received().iter().any(|r| r.status == 503),
        "it was down at first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn row_values_in_url_templates_stay_inside_their_path_segment() {
    let receiver = receiver().await;
    let base = receiver.url("");
    let ws = to(&receiver, &format!("config.batch_mode = \"row\"\nconfig.endpoints = {{ insert = \"{base}/contacts/{{{{ row.id }}}}\" }}"), "");
    ws.write(
        "data/people.csv",
        "id,email\n../admin?x=,a@x.com\n..,b@x.com\nok,c@x.com\n",
    );
    let run = ws.run("s").await;
    let paths: Vec<String> = receiver.received().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.contains(&"/contacts/..%2Fadmin%3Fx%3D".to_string()),
        "{paths:?}"
    );
    assert!(paths.contains(&"/contacts/ok".to_string()), "{paths:?}");
    assert!(
        paths.iter().all(|p| p.starts_with("/contacts/")),
        "no value escapes its segment: {paths:?}"
    );
    // `..` would be resolved by any URL parser: that row is refused, naming why.
    assert_eq!((run.delivered.added, run.failed.added), (2, 1), "{run:?}");
    assert!(
        run.rejected[0]
            .error
            .contains("cannot be a URL path segment"),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_answered_not_found_counts_as_done_and_is_not_retried_forever() {
    let receiver = backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverOptions {
            status_for_method: Some(("DELETE".into(), 404)),
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let ws = to(
        &receiver,
        "config.batch_mode = \"row\"\nconfig.methods = { delete = \"DELETE\" }",
        "mode = \"mirror\"",
    );
    ws.run("s").await;
    ws.write("data/people.csv", "id,email\n1,a@x.com\n");
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(
        (run.delivered.removed, run.failed.removed),
        (3, 0),
        "{run:?}"
    );
    let again = ws.run("s").await;
    assert_eq!(
        again.planned.total(),
        0,
        "the deletes are done, not pending: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_resync_drops_deletes_the_destination_keeps_refusing() {
    let receiver = backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverOptions {
            status_for_method: Some(("DELETE".into(), 409)),
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let ws = to(
        &receiver,
        "config.batch_mode = \"row\"\nconfig.methods = { delete = \"DELETE\" }",
        "mode = \"mirror\"",
    );
    ws.run("s").await;
    ws.write("data/people.csv", "id,email\n1,a@x.com\n");
    let refused = ws.run("s").await;
    assert_eq!(
        (refused.delivered.removed, refused.failed.removed),
        (0, 3),
        "{refused:?}"
    );
    // Every later run tries again, and is refused again.
    let again = ws.run("s").await;
    assert_eq!(
        (again.planned.removed, again.failed.removed),
        (3, 3),
        "{again:?}"
    );
    let deletes_before = receiver
        .received()
        .iter()
        .filter(|r| r.method == "DELETE")
        .count();

    let loaded = ws.load();
    let state = backflow::state::StateStore::open(&loaded.state_dir).unwrap();
    let resync = backflow::app::run_sync(
        &host(),
        &loaded,
        &state,
        "s",
        &backflow::sync::RunOptions {
            full_resync: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(resync.status, RunStatus::Succeeded, "{resync:?}");
    assert_eq!(
        (
            resync.diff.removed,
            resync.diff.cleared_deletes,
            resync.planned.removed
        ),
        (0, 3, 0),
        "{resync:?}"
    );
    assert_eq!(
        resync.delivered.changed, 1,
        "the model's row is sent again: {resync:?}"
    );
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|r| r.method == "DELETE")
            .count(),
        deletes_before,
        "no delete is sent for the dropped rows"
    );
    assert!(
        state.pending("s", 10).unwrap().is_empty(),
        "nothing is pending any more"
    );
    assert_eq!(state.snapshot_len("s").unwrap(), 1);
    drop(state);
    let after = ws.run("s").await;
    assert_eq!(
        after.planned.total(),
        0,
        "the refused deletes are not tried again: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_errors_in_a_healthy_destination_does_not_fail_rows_by_bad_luck() {
    // Requests 3 to 8 fail: the third batch fails six times in a row. Other batches were
    // accepted moments before, so it is a storm, not an outage: it keeps retrying.
    let receiver = backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverOptions {
            fail_requests: Some((3, 6)),
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let ws = to(&receiver, "", "batch_size = 1\nmax_in_flight = 1");
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!((run.delivered.added, run.failed.added), (4, 0), "{run:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_are_bounded_in_bytes_and_a_row_too_large_for_one_is_named() {
    let receiver = receiver().await;
    let ws = to(&receiver, "", "batch_size = 500");
    // 40 rows of 1 MiB each: batch_size alone would send them in one 40 MiB request.
    let big = "x".repeat(1 << 20);
    let csv: String = std::iter::once("id,email\n".to_string())
        .chain((1..=40).map(|i| format!("{i},{big}\n")))
        .collect();
    ws.write("data/people.csv", &csv);
    let run = ws.run("s").await;
    assert_eq!(
        (run.status, run.delivered.added),
        (RunStatus::Succeeded, 40),
        "{run:?}"
    );
    let requests = receiver.received();
    assert!(
        requests.len() >= 3,
        "split by bytes: {} requests",
        requests.len()
    );
    assert!(
        requests.iter().all(|r| r.rows <= 17),
        "at most 16 MiB of rows per batch: {:?}",
        requests.iter().map(|r| r.rows).collect::<Vec<_>>()
    );

    // A single row larger than a batch may carry: a clear error naming it, the rest delivered.
    let huge = "y".repeat(17 << 20);
    ws.write("data/people.csv", &format!("{csv}41,{huge}\n"));
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.unwrap();
    assert!(
        error.contains("row 41 is 17 MiB") && error.contains("16 MiB"),
        "{error}"
    );
}
