//! Issue 34, items 3 and 4, against a real `backflow serve`: scheduled run-approval holds at
//! most one run per sync (the same plan is folded into it, a newer one supersedes it), held
//! runs are rejected and cancelled over the API and the web UI (audited, authorized), a
//! trigger answers with its run id, and a running run shows its phase and live counts (and
//! `/metrics` moves while it goes on).

use crate::serve_support::*;
use crate::support::*;
use backflow::toolkit::receiver::ReceiverOptions;
use serde_json::{json, Value as J};

const PEOPLE: &str =
    "[users]\nalice = { role = \"admin\" }\nbob = { role = \"approver\" }\ncarol = { role = \"contributor\" }\n";

/// Submits, approves and publishes the working copy (carol, alice, carol).
fn publish(ws: &TestWorkspace) {
    ok(
        backflow_as(ws, "carol", &["change", "submit", "-m", "first"]),
        "submit",
    );
    ok(
        backflow_as(ws, "alice", &["change", "approve", "1"]),
        "approve",
    );
    ok(
        backflow_as(ws, "carol", &["change", "publish", "1"]),
        "publish",
    );
}

fn with_status<'a>(runs: &'a [J], status: &str) -> Vec<&'a J> {
    runs.iter().filter(|r| r["status"] == status).collect()
}

/// The one held run of `sync` once there is one (and never more than one).
async fn the_held_run(api: &Api, svc: &Service, sync: &str, not: &[&str]) -> String {
    eventually("a held run", async || {
        let runs = runs_of(api, svc, sync).await;
        let held = with_status(&runs, "awaiting_approval");
        assert!(held.len() <= 1, "more than one held run: {runs:?}");
        held.first()
            .and_then(|r| r["run_id"].as_str())
            .filter(|id| !not.contains(id))
            .map(str::to_string)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_run_approval_holds_one_run_that_is_superseded_rejected_and_cancelled() {
    let receiver = receiver().await;
    let ws = service_workspace(
        3,
        &format!(
            "{}\n[syncs.crm]\nmodel = \"people\"\ndestination = \"a\"\nschedule = \"* * * * * *\"\n{PEOPLE}\n[[policies]]\nplugin = \"policies\"\nconfig = {{ run_approval_above_rows = 2 }}\n",
            hook("a", &receiver, "/a", "")
        ),
    );
    std::fs::copy(
        plugin("policies.wasm"),
        ws.path().join("plugins/policies.wasm"),
    )
    .unwrap();
    publish(&ws);
    let svc = Service::start(&ws);
    let (alice, bob, carol) = (
        Api::new(Some(&token(&ws, "alice", "alice"))),
        Api::new(Some(&token(&ws, "alice", "bob"))),
        Api::new(Some(&token(&ws, "alice", "carol"))),
    );

    // The schedule fires every second; the same plan is folded into the one held run.
    let first = the_held_run(&bob, &svc, "crm", &[]).await;
    eventually("a scheduled trigger folded into the held run", async || {
        svc.log().contains("folded into the held run").then_some(())
    })
    .await;
    let runs = runs_of(&bob, &svc, "crm").await;
    assert_eq!(runs.len(), 1, "one run for the same plan: {runs:?}");
    assert_eq!(receiver.rows(), 0, "nothing sent before approval");

    // A trigger while it is held is answered with the held run's id once it is folded.
    let (status, body) = carol.post(svc.url("/api/v1/syncs/crm/runs"), None).await;
    assert_eq!(status, 202, "{body}");
    let asked = body["run_id"].as_str().expect("a run id").to_string();
    let folded = eventually("the trigger folded", async || {
        let (_, run) = carol.get(svc.url(&format!("/api/v1/runs/{asked}"))).await;
        (run["status"] == "awaiting_approval").then_some(run)
    })
    .await;
    assert_eq!(folded["run_id"], first.as_str(), "{folded}");

    // The data changes: the newer plan is held and supersedes the older one.
    ws.write(
        "data/people.csv",
        "id,email\n1,user1@example.com\n2,user2@example.com\n3,user3@example.com\n4,user4@example.com\n",
    );
    let second = the_held_run(&bob, &svc, "crm", &[&first]).await;
    let (_, old) = bob.get(svc.url(&format!("/api/v1/runs/{first}"))).await;
    assert_eq!(old["status"], "superseded", "{old}");
    assert_eq!(old["approval"]["status"], "superseded", "{old}");
    assert!(old["error"].as_str().unwrap().contains(&second), "{old}");
    let (status, body) = bob
        .post(svc.url(&format!("/api/v1/runs/{first}/approve")), None)
        .await;
    assert_eq!(
        status, 409,
        "a superseded approval is no longer valid: {body}"
    );

    // A contributor may not reject; an approver may, with a comment.
    let (status, body) = carol
        .post(svc.url(&format!("/api/v1/runs/{second}/reject")), None)
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, rejected) = bob
        .post(
            svc.url(&format!("/api/v1/runs/{second}/reject")),
            Some(json!({"comment": "not before Monday"})),
        )
        .await;
    assert_eq!(status, 200, "{rejected}");
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains("not before Monday"),
        "{rejected}"
    );
    let (status, body) = alice
        .post(svc.url(&format!("/api/v1/runs/{second}/cancel")), None)
        .await;
    assert_eq!(status, 409, "decided already: {body}");

    // The schedule holds the plan again; the service started it, so only an admin cancels.
    let third = the_held_run(&bob, &svc, "crm", &[&first, &second]).await;
    let (status, body) = carol
        .post(svc.url(&format!("/api/v1/runs/{third}/cancel")), None)
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, cancelled) = alice
        .post(svc.url(&format!("/api/v1/runs/{third}/cancel")), None)
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");

    for (action, user, run) in [
        ("run.reject", "bob", &second),
        ("run.cancel", "alice", &third),
        ("run.superseded", "backflow-serve", &first),
    ] {
        let (_, audit) = bob
            .get(svc.url(&format!("/api/v1/audit?action={action}")))
            .await;
        let entries = audit["entries"].as_array().unwrap();
        assert!(
            entries
                .iter()
                .any(|e| e["user"] == user && e["target"].as_str().unwrap().ends_with(run.as_str())),
            "{action} by {user}: {audit}"
        );
    }
    // The approver releases the plan held next: the held run moves on to `approved`.
    let fourth = the_held_run(&bob, &svc, "crm", &[&first, &second, &third]).await;
    let (status, body) = bob
        .post(svc.url(&format!("/api/v1/runs/{fourth}/approve")), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let release = finished_run(&bob, &svc, body["run_id"].as_str().unwrap()).await;
    assert_eq!(release["status"], "succeeded", "{release}");
    assert_eq!(receiver.rows(), 4);
    let (_, held) = bob.get(svc.url(&format!("/api/v1/runs/{fourth}"))).await;
    assert_eq!(held["status"], "approved", "{held}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_answers_with_its_run_id_and_a_running_run_shows_its_progress() {
    // A slow destination: one row per request, each taking a while.
    let receiver = backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverOptions {
            latency_ms: 300,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ws = service_workspace(
        12,
        &format!(
            "{}\n[syncs.crm]\nmodel = \"people\"\ndestination = \"a\"\nbatch_size = 1\n",
            hook("a", &receiver, "/a", "")
        ),
    );
    let svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    let (status, body) = api.post(svc.url("/api/v1/syncs/crm/runs"), None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], "started", "{body}");
    let run_id = body["run_id"].as_str().expect("a run id").to_string();

    // While it delivers: its phase and live counts, and the metrics move.
    let live = eventually("live delivery counts", async || {
        let (_, run) = api.get(svc.url(&format!("/api/v1/runs/{run_id}"))).await;
        (run["status"] == "running"
            && run["phase"] == "deliver"
            && run["progress"]["delivered"]
                .as_u64()
                .is_some_and(|n| n >= 2))
        .then_some(run)
    })
    .await;
    assert_eq!(live["progress"]["read"], 12, "{live}");
    assert_eq!(live["progress"]["planned"], 12, "{live}");
    assert!(live["progress"]["rate"].as_f64().is_some(), "{live}");
    let metrics = eventually("metrics of the run going on", async || {
        let text = reqwest::get(svc.url("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let (_, run) = api.get(svc.url(&format!("/api/v1/runs/{run_id}"))).await;
        (run["status"] == "running"
            && text.contains("backflow_runs_in_flight 1")
            && text.contains(
                "backflow_rows_total{sync=\"crm\",operation=\"added\",outcome=\"delivered\"}",
            ))
        .then_some(text)
    })
    .await;
    assert!(!metrics.contains("backflow_last_success_timestamp_seconds{sync=\"crm\"}"));

    // Triggers meanwhile fold into one follow-up, and each is answered with its id.
    let (_, second) = api.post(svc.url("/api/v1/syncs/crm/runs"), None).await;
    let (_, third) = api.post(svc.url("/api/v1/syncs/crm/runs"), None).await;
    assert_eq!(second["accepted"], "coalesced", "{second}");
    assert_ne!(second["run_id"], body["run_id"]);
    assert_eq!(second["run_id"], third["run_id"], "{second} {third}");
    let (_, queued) = api
        .get(svc.url(&format!(
            "/api/v1/runs/{}",
            second["run_id"].as_str().unwrap()
        )))
        .await;
    assert_eq!(queued["status"], "queued", "{queued}");

    let first = finished_run(&api, &svc, &run_id).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert!(first.get("progress").is_none(), "{first}");
    let follow_up = finished_run(&api, &svc, second["run_id"].as_str().unwrap()).await;
    assert_eq!(follow_up["status"], "succeeded", "{follow_up}");
    assert_eq!(follow_up["trigger"], "api (coalesced)", "{follow_up}");
    let text = reqwest::get(svc.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("backflow_last_success_timestamp_seconds{sync=\"crm\"}"),
        "{text}"
    );
    assert!(text.contains("backflow_runs_in_flight 0"), "{text}");
}
