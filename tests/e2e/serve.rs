//! `backflow serve` as a real process: schedules, sequences, coalesced triggers, the HTTP API
//! with tokens and roles, alerts, graceful shutdown and restart, plugin hot reload, and one
//! instance per state directory.

use crate::serve_support::*;
use crate::support::*;
use backflow::toolkit::receiver::ReceiverOptions;
use serde_json::{json, Value as J};
use std::path::Path;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn schedules_fire_sequences_run_in_order_a_failure_stops_its_chain_and_alerts_reach_their_owner(
) {
    let receiver = receiver().await;
    let alerts = crate::support::receiver().await;
    let ws = service_workspace(
        5,
        &format!(
            r#"{hook_a}{hook_b}
[syncs.ticking]
model = "people"
destination = "a"
schedule = "* * * * * *"

[syncs.upstream_ok]
model = "people"
destination = "b"

[syncs.downstream]
model = "people"
destination = "b"
mapping = {{ id = "id", email = "contact" }}
after = ["upstream_ok"]

[syncs.upstream_bad]
model = "broken"
destination = "b"

[syncs.after_bad]
model = "people"
destination = "a"
mapping = {{ id = "id", email = "mail" }}
after = ["upstream_bad"]

[[alerts]]
url = "{alert_url}"
on = ["failed"]
destinations = ["b"]

[[alerts]]
url = "{other_url}"
syncs = ["ticking"]
"#,
            hook_a = hook("a", &receiver, "/a", ""),
            hook_b = hook("b", &receiver, "/b", ""),
            alert_url = alerts.url("/owner-of-b"),
            other_url = alerts.url("/owner-of-ticking"),
        ),
    );
    let svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));

    // The every-second schedule fires again and again, by itself.
    let ticks = finished_runs(&api, &svc, "ticking", 2).await;
    assert!(
        ticks.iter().all(|r| r["trigger"] == "schedule"
            && r["status"] == "succeeded"
            && r["user"] == "backflow-serve"),
        "{ticks:?}"
    );

    // A sequence: downstream runs after upstream_ok succeeded.
    let (status, body) = api
        .post(svc.url("/api/v1/syncs/upstream_ok/runs"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let down = finished_runs(&api, &svc, "downstream", 1).await;
    assert_eq!(down[0]["trigger"], "after upstream_ok");
    assert_eq!(down[0]["status"], "succeeded");
    let up = &runs_of(&api, &svc, "upstream_ok").await[0];
    assert!(
        down[0]["run_id"].as_str() > up["run_id"].as_str(),
        "downstream started after upstream"
    );
    let down_id = down[0]["run_id"].as_str().unwrap().to_string();

    // A failing upstream stops its chain; its destination's owner is told; the rest go on.
    api.post(svc.url("/api/v1/syncs/upstream_bad/runs"), Some(json!({})))
        .await;
    let bad = finished_runs(&api, &svc, "upstream_bad", 1).await;
    assert_eq!(bad[0]["status"], "failed", "{bad:?}");
    // A finished run is logged once, with its trigger (the service used to log it again).
    // Read once a later run has finished: both lines of the downstream run were long written.
    let log = svc.log();
    let finished: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("run finished") && l.contains(&down_id))
        .collect();
    assert_eq!(finished.len(), 1, "{log}");
    assert!(finished[0].contains("after upstream_ok"), "{}", finished[0]);
    let alert = eventually("the alert for upstream_bad", async || {
        alerts
            .received()
            .into_iter()
            .find(|r| r.path == "/owner-of-b")
    })
    .await;
    assert!(
        alert.body["text"]
            .as_str()
            .unwrap()
            .contains("sync upstream_bad → b"),
        "{:?}",
        alert.body
    );
    assert_eq!(alert.body["outcome"], "failed");
    let ticks_before = runs_of(&api, &svc, "ticking").await.len();
    finished_runs(&api, &svc, "ticking", ticks_before + 2).await;
    assert!(
        runs_of(&api, &svc, "after_bad").await.is_empty(),
        "a failed upstream stops the chain"
    );
    // Succeeding runs alert nobody; the ticking sync's owner heard nothing.
    assert!(
        alerts.received().iter().all(|r| r.path == "/owner-of-b"),
        "only the failure was reported"
    );

    // `sync list` shows the schedule and when it runs next.
    let list = ok(
        backflow_as(&ws, "tester", &["sync", "list", "--json"]),
        "sync list",
    )
    .json();
    let ticking = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ticking")
        .unwrap()
        .clone();
    assert_eq!(ticking["schedule"], "* * * * * *");
    assert!(
        ticking["next_run"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{ticking}"
    );
    let downstream = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "downstream")
        .unwrap()
        .clone();
    assert_eq!(downstream["after"], json!(["upstream_ok"]));

    // A second service on the same state refuses to start, naming the first.
    let second = Service::try_start(&ws)
        .err()
        .expect("a second service must refuse");
    assert!(
        second.contains("another `backflow serve` already serves the state"),
        "{second}"
    );
    drop(svc);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missed_schedule_runs_once_at_start_unless_catch_up_is_off() {
    let receiver = receiver().await;
    let ws = service_workspace(
        3,
        &format!(
            "{}\n[syncs.yearly]\nmodel = \"people\"\ndestination = \"a\"\nschedule = \"0 0 1 1 *\"\n\n[syncs.yearly_no_catch_up]\nmodel = \"people\"\ndestination = \"a\"\nmapping = {{ id = \"id\", email = \"mail\" }}\nschedule = \"0 0 1 1 *\"\ncatch_up = false\n",
            hook("a", &receiver, "/a", "")
        ),
    );
    {
        // The service last looked at these schedules in December 2025: January 1st was missed.
        let state = backflow::state::StateStore::open(&ws.path().join(".backflow")).unwrap();
        let december: i64 = "2025-12-31T12:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second();
        state.set_schedule_mark("yearly", december).unwrap();
        state
            .set_schedule_mark("yearly_no_catch_up", december)
            .unwrap();
    }
    let svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    let runs = finished_runs(&api, &svc, "yearly", 1).await;
    assert_eq!(runs.len(), 1);
    assert!(
        runs[0]["trigger"]
            .as_str()
            .unwrap()
            .starts_with("schedule (missed at 20"),
        "{}",
        runs[0]["trigger"]
    );
    eventually("the skipped catch-up to be logged", async || {
        svc.log()
            .contains("catch_up = false skips it")
            .then_some(())
    })
    .await;
    assert!(runs_of(&api, &svc, "yearly_no_catch_up").await.is_empty());
}

const TEAM: &str = "[users]\nalice = { role = \"admin\" }\ncarol = { role = \"contributor\" }\nvictor = { role = \"viewer\" }\n";

#[tokio::test(flavor = "multi_thread")]
async fn the_api_authenticates_authorizes_audits_coalesces_and_answers_bad_input_with_4xx() {
    // A slow destination: a run of 6 rows, one per request, takes a few seconds.
    let receiver = backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverOptions {
            latency_ms: 400,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ws = service_workspace(
        6,
        &format!(
            "{}\n[syncs.crm]\nmodel = \"people\"\ndestination = \"a\"\nbatch_size = 1\n{TEAM}",
            hook("a", &receiver, "/a", "")
        ),
    );
    ok(
        backflow_as(&ws, "carol", &["change", "submit", "-m", "first"]),
        "submit",
    );
    ok(
        backflow_as(&ws, "alice", &["change", "approve", "1"]),
        "approve",
    );
    ok(
        backflow_as(&ws, "carol", &["change", "publish", "1"]),
        "publish",
    );
    let (alice, carol, victor) = (
        token(&ws, "alice", "alice"),
        token(&ws, "alice", "carol"),
        token(&ws, "alice", "victor"),
    );
    let revoked = token(&ws, "carol", "carol");
    let revoked_id = revoked.split('_').nth(1).unwrap().to_string();
    ok(
        backflow_as(&ws, "carol", &["token", "revoke", &revoked_id]),
        "revoke",
    );
    // A viewer may not make tokens for others.
    let refused = backflow_as(&ws, "victor", &["token", "create", "--for", "carol"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("victor is a viewer and may not manage other users' API tokens"),
        "{}",
        refused.stderr
    );

    let svc = Service::start(&ws);
    let trigger = svc.url("/api/v1/syncs/crm/runs");

    // No token, a revoked token, a malformed one: 401 with a JSON error; nothing done.
    let (status, body) = Api::new(None).post(trigger.clone(), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no API token"),
        "{body}"
    );
    let (status, body) = Api::new(Some(&revoked)).post(trigger.clone(), None).await;
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    assert_eq!(
        Api::new(Some("bft_nonsense"))
            .get(svc.url("/api/v1/syncs"))
            .await
            .0,
        401
    );
    // A viewer reads but may not run: 403 naming the rule.
    let viewer = Api::new(Some(&victor));
    assert_eq!(viewer.get(svc.url("/api/v1/syncs")).await.0, 200);
    let (status, body) = viewer.post(trigger.clone(), None).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["error"],
        "victor is a viewer and may not run syncs (needs contributor or above)"
    );
    assert!(
        runs_of(&viewer, &svc, "crm").await.is_empty(),
        "nothing ran"
    );

    // Three triggers while the first run goes: one run now, one follow-up for the other two.
    let contributor = Api::new(Some(&carol));
    let (s1, b1) = contributor.post(trigger.clone(), None).await;
    let (s2, b2) = contributor
        .post(trigger.clone(), Some(json!({"full_resync": true})))
        .await;
    let (s3, b3) = contributor.post(trigger.clone(), None).await;
    assert_eq!((s1, s2, s3), (202, 202, 202));
    assert_eq!(
        (
            b1["accepted"].as_str(),
            b2["accepted"].as_str(),
            b3["accepted"].as_str()
        ),
        (Some("started"), Some("coalesced"), Some("coalesced"))
    );
    let runs = finished_runs(&contributor, &svc, "crm", 2).await;
    // A fourth trigger, once both runs are over, is a marker: runs of a sync go in order, so
    // a (wrong) third run of the three triggers would have started before it or taken it in
    // (answered `coalesced`). Its run is then the third, not the fourth, and was started.
    let (s4, b4) = contributor.post(trigger.clone(), None).await;
    assert_eq!(
        (s4, b4["accepted"].as_str()),
        (202, Some("started")),
        "{b4}"
    );
    let marker = finished_run(&contributor, &svc, b4["run_id"].as_str().unwrap()).await;
    let runs_now = runs_of(&contributor, &svc, "crm").await;
    assert_eq!(
        runs_now.len(),
        3,
        "three triggers made two runs, then the marker's: {runs_now:?}"
    );
    assert_eq!(runs_now[0]["run_id"], marker["run_id"]);
    assert_eq!(marker["trigger"], "api");
    let (follow_up, first) = (&runs[0], &runs[1]);
    assert_eq!(first["user"], "carol");
    assert_eq!(first["trigger"], "api");
    assert_eq!(follow_up["trigger"], "api (coalesced)");
    assert_eq!(
        follow_up["full_resync"], true,
        "a folded full resync is kept"
    );
    assert_eq!(first["status"], "succeeded");
    assert_eq!(follow_up["status"], "succeeded");

    // Every state-changing request is in the audit log with its user.
    let (_, audit) = viewer
        .get(svc.url("/api/v1/audit?action=run.trigger"))
        .await;
    let triggers = audit["entries"].as_array().unwrap();
    assert_eq!(triggers.len(), 4, "three triggers and the marker: {audit}");
    assert!(triggers.iter().all(|e| e["user"] == "carol"));
    let (_, verified) = viewer.get(svc.url("/api/v1/audit/verify")).await;
    assert_eq!(verified["chain_verified"], true, "{verified}");
    let (_, tokens_audit) = viewer
        .get(svc.url("/api/v1/audit?action=token.revoke"))
        .await;
    assert_eq!(tokens_audit["entries"][0]["user"], "carol");

    // Run detail, filters, pagination.
    let (status, detail) = viewer
        .get(svc.url(&format!(
            "/api/v1/runs/{}",
            first["run_id"].as_str().unwrap()
        )))
        .await;
    assert_eq!(status, 200);
    assert_eq!(detail["delivered"]["added"], 6);
    let (_, page) = viewer.get(svc.url("/api/v1/runs?sync=crm&limit=2")).await;
    let next = page["next_before"].as_str().unwrap().to_string();
    let (_, page2) = viewer
        .get(svc.url(&format!("/api/v1/runs?sync=crm&limit=1&before={next}")))
        .await;
    assert_eq!(page2["runs"][0]["run_id"], first["run_id"]);
    let (_, failed_only) = viewer.get(svc.url("/api/v1/runs?status=failed")).await;
    assert!(failed_only["runs"].as_array().unwrap().is_empty());

    // Change requests through the API: carol's change, approved by alice over HTTP.
    edit(&ws, "batch_size = 1", "batch_size = 2");
    ok(
        backflow_as(&ws, "carol", &["change", "submit", "-m", "bigger batches"]),
        "submit 2",
    );
    let (status, body) = contributor
        .post(svc.url("/api/v1/changes/2/approve"), None)
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        "carol is a contributor and may not approve changes (needs approver or above)"
    );
    let admin = Api::new(Some(&alice));
    let (status, change) = admin
        .post(
            svc.url("/api/v1/changes/2/approve"),
            Some(json!({"comment": "ok"})),
        )
        .await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(change["status"], "approved");
    let (status, published) = contributor
        .post(svc.url("/api/v1/changes/2/publish"), None)
        .await;
    assert_eq!(status, 200, "{published}");
    let (_, list) = viewer.get(svc.url("/api/v1/changes")).await;
    assert_eq!(list[0]["status"], "published");

    // Bad input: 4xx with the parameter named, never a 500.
    for (method, path, body, expect, says) in [
        (
            "POST",
            "/api/v1/syncs/nope/runs",
            None,
            404,
            "no sync named \"nope\"",
        ),
        (
            "POST",
            "/api/v1/syncs/crm/runs",
            Some("{not json"),
            400,
            "request body",
        ),
        (
            "POST",
            "/api/v1/syncs/crm/runs",
            Some("{\"full_resync\": \"yes\"}"),
            400,
            "request body",
        ),
        (
            "POST",
            "/api/v1/syncs/crm/runs",
            Some("{\"fast\": true}"),
            400,
            "unknown field `fast`",
        ),
        ("GET", "/api/v1/runs?limit=abc", None, 400, "query string"),
        ("GET", "/api/v1/runs?limit=0", None, 400, "limit"),
        (
            "GET",
            "/api/v1/runs?status=great",
            None,
            400,
            "status: unknown run status \"great\"",
        ),
        ("GET", "/api/v1/runs/nope", None, 404, "no run with id nope"),
        (
            "GET",
            "/api/v1/changes/abc",
            None,
            400,
            "change id: \"abc\" is not a number",
        ),
        ("GET", "/api/v1/changes/99", None, 404, "99"),
        (
            "GET",
            "/api/v1/nothing-here",
            None,
            404,
            "no such API endpoint",
        ),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (status, answer) = admin
            .send(method, svc.url(path), body.map(str::to_string))
            .await;
        assert_eq!(status, expect, "{path}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(says)),
            "{path}: {answer}"
        );
    }
    let huge = format!("{{\"comment\": \"{}\"}}", "x".repeat(200_000));
    let (status, answer) = admin
        .send(
            reqwest::Method::POST,
            svc.url("/api/v1/runs/x/approve"),
            Some(huge),
        )
        .await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].is_string());

    // Health and metrics need no token.
    let (status, health) = Api::new(None).get(svc.url("/healthz")).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let metrics = reqwest::get(svc.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("backflow_runs_total{sync=\"crm\",status=\"succeeded\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "backflow_rows_total{sync=\"crm\",operation=\"added\",outcome=\"delivered\"} 6"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("backflow_delivery_request_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("backflow_plugin_call_seconds_count{plugin=\"webhook\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_run_stops_after_the_batch_in_flight_and_a_restart_loses_nothing() {
    use std::sync::{Arc, Mutex};
    let seen = Arc::new(Mutex::new(Vec::<i64>::new()));
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |body: String| {
        let s = s.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            let rows: Vec<J> = serde_json::from_str(&body).unwrap();
            s.lock()
                .unwrap()
                .extend(rows.iter().map(|row| row["id"].as_i64().unwrap()));
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let ws = service_workspace(
        1000,
        &format!("[destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"http://{addr}/in\"\ngrants.network = [\"{addr}\"]\n[syncs.s]\nmodel = \"people\"\ndestination = \"hook\"\nbatch_size = 20\n"),
    );
    let mut svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    api.post(svc.url("/api/v1/syncs/s/runs"), None).await;
    eventually("a good part delivered", async || {
        (seen.lock().unwrap().len() >= 200).then_some(())
    })
    .await;
    let status = svc.terminate();
    assert!(
        status.success(),
        "a graceful stop exits 0: {status:?}\n{}",
        svc.log()
    );
    let delivered_before = seen.lock().unwrap().len();
    assert!(
        delivered_before < 1000,
        "the run was stopped before it finished"
    );

    let state = backflow::state::StateStore::open(&ws.path().join(".backflow")).unwrap();
    let stopped = state.runs(Some("s"), 1).unwrap().remove(0);
    assert_eq!(
        stopped.status,
        backflow::state::RunStatus::Interrupted,
        "{stopped:?}"
    );
    assert!(
        stopped
            .error
            .as_deref()
            .unwrap()
            .contains("the service is shutting down"),
        "{:?}",
        stopped.error
    );
    assert_eq!(
        stopped.delivered.added as usize, delivered_before,
        "every batch sent was recorded"
    );
    drop(state);

    let svc = Service::start(&ws);
    api.post(svc.url("/api/v1/syncs/s/runs"), None).await;
    let runs = finished_runs(&api, &svc, "s", 2).await;
    assert_eq!(runs[0]["status"], "succeeded", "{:?}", runs[0]);
    let seen = seen.lock().unwrap().clone();
    let unique: std::collections::HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), 1000, "every row delivered");
    assert!(
        seen.len() - unique.len() <= 20,
        "at most the batch in flight re-sent, got {} duplicates",
        seen.len() - unique.len()
    );
}

/// A copy of a component with a custom section appended: the same plugin, another hash.
fn rebuilt(component: &Path, marker: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(component).unwrap();
    let name = b"backflow-test";
    let payload_len = 1 + name.len() + marker.len();
    bytes.push(0); // custom section
    let mut n = payload_len;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        bytes.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            break;
        }
    }
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(marker.as_bytes());
    bytes
}

/// Replaces a file the way deploys do: write beside it, then rename over it.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn serving_hash(api: &Api, svc: &Service, file: &str) -> (Option<String>, Option<String>) {
    let (_, plugins) = api.get(svc.url("/api/v1/plugins")).await;
    let p = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["file"].as_str().unwrap().ends_with(file))
        .cloned()
        .unwrap_or(J::Null);
    (
        p["sha256"].as_str().map(str::to_string),
        p["error"].as_str().map(str::to_string),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_replaced_mid_run_serves_the_next_run_and_a_broken_one_is_refused() {
    // A destination that holds every request until the test opens the gate: the first run is
    // provably still in flight when the new build takes over.
    let (gate, gate_open) = tokio::sync::watch::channel(false);
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = {
        let arrived = arrived.clone();
        raw_http_server(move || {
            let (mut gate_open, arrived) = (gate_open.clone(), arrived.clone());
            async move {
                arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = gate_open.wait_for(|open| *open).await;
                (200, b"{\"ok\":true}".to_vec())
            }
        })
        .await
    };
    let ws = service_workspace(
        2_000,
        &format!(
            "[destinations.a]\nplugin = \"webhook\"\nconfig.url = \"http://{addr}/a\"\ngrants.network = [\"{addr}\"]\n\n[syncs.big]\nmodel = \"people\"\ndestination = \"a\"\nbatch_size = 500\n"
        ),
    );
    let svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    let webhook = ws.path().join("plugins/webhook.wasm");
    let (old_hash, _) = serving_hash(&api, &svc, "webhook.wasm").await;
    let old_hash = old_hash.expect("webhook served at start");

    let (_, started) = api.post(svc.url("/api/v1/syncs/big/runs"), None).await;
    let first_id = started["run_id"].as_str().unwrap().to_string();
    eventually("the run's first request to be held", async || {
        (arrived.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let new_bytes = rebuilt(&plugin("webhook.wasm"), "v2");
    replace(&webhook, &new_bytes);
    let new_hash = eventually("the new webhook to serve", async || {
        let (hash, _) = serving_hash(&api, &svc, "webhook.wasm").await;
        hash.filter(|h| *h != old_hash)
    })
    .await;
    // The new build serves while the first run is still going (its request is held).
    let (_, in_flight) = api.get(svc.url(&format!("/api/v1/runs/{first_id}"))).await;
    assert_eq!(
        in_flight["status"], "running",
        "the new build took over mid-run: {in_flight}"
    );
    gate.send(true).unwrap();
    let first = finished_run(&api, &svc, &first_id).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["delivered"]["added"], 2_000);
    assert_eq!(
        first["plugins"]["destination"],
        old_hash.as_str(),
        "the run in flight finished on the version it started with"
    );

    api.post(
        svc.url("/api/v1/syncs/big/runs"),
        Some(json!({"full_resync": false})),
    )
    .await;
    let second = finished_runs(&api, &svc, "big", 2).await.remove(0);
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(
        second["plugins"]["destination"],
        new_hash.as_str(),
        "the next run uses the new file"
    );

    // A broken replacement is refused; the working version keeps serving.
    replace(&webhook, b"\0asm this is not a component");
    let error = eventually("the broken file to be refused", async || {
        serving_hash(&api, &svc, "webhook.wasm").await.1
    })
    .await;
    assert!(!error.is_empty());
    assert!(svc.log().contains("plugin file refused"), "{}", svc.log());
    api.post(svc.url("/api/v1/syncs/big/runs"), None).await;
    let third = finished_runs(&api, &svc, "big", 3).await.remove(0);
    assert_eq!(third["status"], "succeeded", "{third}");
    assert_eq!(third["plugins"]["destination"], new_hash.as_str());
    let metrics = reqwest::get(svc.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("outcome=\"refused\"} 1"), "{metrics}");
    let all = runs_of(&api, &svc, "big").await;
    assert!(
        all.iter().all(|r| r["status"] == "succeeded"),
        "no failed runs: {all:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_reviews_a_new_plugin_build_serves_only_once_a_change_publishes_its_hash() {
    let receiver = receiver().await;
    let ws = service_workspace(
        3,
        &format!(
            "{}\n[syncs.crm]\nmodel = \"people\"\ndestination = \"a\"\n{TEAM}",
            hook("a", &receiver, "/a", "")
        ),
    );
    ok(
        backflow_as(&ws, "carol", &["change", "submit", "-m", "first"]),
        "submit",
    );
    ok(
        backflow_as(&ws, "alice", &["change", "approve", "1"]),
        "approve",
    );
    ok(
        backflow_as(&ws, "carol", &["change", "publish", "1"]),
        "publish",
    );
    let svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "alice", "carol")));
    let (old_hash, _) = serving_hash(&api, &svc, "webhook.wasm").await;
    let old_hash = old_hash.unwrap();

    replace(
        &ws.path().join("plugins/webhook.wasm"),
        &rebuilt(&plugin("webhook.wasm"), "reviewed-later"),
    );
    let status = eventually("the new build to be loaded", async || {
        let (_, plugins) = api.get(svc.url("/api/v1/plugins")).await;
        plugins
            .as_array()
            .unwrap()
            .iter()
            .find(|p| {
                p["file"].as_str().unwrap().ends_with("webhook.wasm")
                    && p["sha256"] != old_hash.as_str()
            })
            .cloned()
    })
    .await;
    let new_hash = status["sha256"].as_str().unwrap().to_string();
    assert_eq!(
        status["awaiting_publish"],
        new_hash.as_str(),
        "the reload reports the new hash awaiting a publish: {status}"
    );
    assert_eq!(
        status["published_pin"],
        old_hash.as_str(),
        "and the published pin runs keep: {status}"
    );

    // Runs keep the reviewed build.
    api.post(svc.url("/api/v1/syncs/crm/runs"), None).await;
    let run = finished_runs(&api, &svc, "crm", 1).await.remove(0);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["plugins"]["destination"], old_hash.as_str());

    // A change with no config edit publishes the new build; the next run uses it.
    let change = ok(
        backflow_as(
            &ws,
            "carol",
            &["change", "submit", "-m", "webhook build", "--json"],
        ),
        "submit the new build",
    )
    .json();
    assert!(change["diff"].is_object(), "{change}");
    ok(
        backflow_as(&ws, "alice", &["change", "approve", "2"]),
        "approve 2",
    );
    ok(
        backflow_as(&ws, "carol", &["change", "publish", "2"]),
        "publish 2",
    );
    api.post(svc.url("/api/v1/syncs/crm/runs"), None).await;
    let run = finished_runs(&api, &svc, "crm", 2).await.remove(0);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["plugins"]["destination"], new_hash.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_held_by_a_policy_alerts_its_owner_and_an_approval_over_the_api_delivers_it() {
    let receiver = receiver().await;
    let alerts = crate::support::receiver().await;
    let ws = service_workspace(
        6,
        &format!(
            "{}\n[syncs.crm]\nmodel = \"people\"\ndestination = \"a\"\n{TEAM}\n[[policies]]\nplugin = \"policies\"\nconfig = {{ run_approval_above_rows = 2 }}\n\n[[alerts]]\nurl = \"{}\"\non = [\"awaiting_approval\"]\nsyncs = [\"crm\"]\n",
            hook("a", &receiver, "/a", ""),
            alerts.url("/crm-owner")
        ),
    );
    std::fs::copy(
        plugin("policies.wasm"),
        ws.path().join("plugins/policies.wasm"),
    )
    .unwrap();
    ok(
        backflow_as(&ws, "carol", &["change", "submit", "-m", "first"]),
        "submit",
    );
    ok(
        backflow_as(&ws, "alice", &["change", "approve", "1"]),
        "approve",
    );
    ok(
        backflow_as(&ws, "carol", &["change", "publish", "1"]),
        "publish",
    );
    let svc = Service::start(&ws);
    let (carol, alice) = (
        Api::new(Some(&token(&ws, "alice", "carol"))),
        Api::new(Some(&token(&ws, "alice", "alice"))),
    );

    carol.post(svc.url("/api/v1/syncs/crm/runs"), None).await;
    let held = finished_runs(&carol, &svc, "crm", 1).await.remove(0);
    assert_eq!(held["status"], "awaiting_approval", "{held}");
    assert_eq!(receiver.rows(), 0, "nothing sent before approval");
    let alert = eventually("the held-run alert", async || {
        alerts.received().into_iter().next()
    })
    .await;
    assert_eq!(alert.body["outcome"], "awaiting_approval");
    let run_id = held["run_id"].as_str().unwrap();
    let (_, detail) = carol.get(svc.url(&format!("/api/v1/runs/{run_id}"))).await;
    assert_eq!(detail["approval"]["status"], "waiting", "{detail}");

    // The requester may not approve; an approver may, and the held plan is delivered.
    let (status, body) = carol
        .post(svc.url(&format!("/api/v1/runs/{run_id}/approve")), None)
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = alice
        .post(
            svc.url(&format!("/api/v1/runs/{run_id}/approve")),
            Some(json!({"comment": "expected"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "released", "{body}");
    // The release went on the sync's queue: the answer names its run at once.
    let release = finished_run(&carol, &svc, body["run_id"].as_str().unwrap()).await;
    assert_eq!(release["status"], "succeeded", "{release}");
    assert_eq!(
        release["user"], "carol",
        "the run is recorded for who asked for it"
    );
    assert_eq!(receiver.rows(), 6);
    let (_, audit) = carol.get(svc.url("/api/v1/audit?action=run.approve")).await;
    assert_eq!(audit["entries"][0]["user"], "alice", "{audit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_is_undone_and_a_row_traced_through_the_api() {
    let receiver = receiver().await;
    let ws = service_workspace(
        3,
        &format!(
            "{}\n[syncs.crm]\nmodel = \"people\"\ndestination = \"a\"\n",
            // An undo deletes what the run inserted: the webhook needs a route for deletes.
            hook(
                "a",
                &receiver,
                "/a",
                "config.methods = { delete = \"DELETE\" }"
            )
        ),
    );
    let svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    api.post(svc.url("/api/v1/syncs/crm/runs"), None).await;
    let run = finished_runs(&api, &svc, "crm", 1).await.remove(0);
    let run_id = run["run_id"].as_str().unwrap();

    let (status, history) = api.get(svc.url("/api/v1/syncs/crm/rows/2")).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["runs"][0]["operation"], "inserted");
    assert_eq!(
        history["current"]["email"], "user2@example.com",
        "{history}"
    );

    let (status, plan) = api
        .get(svc.url(&format!("/api/v1/runs/{run_id}/undo")))
        .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["planned"]["removed"], 3, "{plan}");
    let (status, undo) = api
        .post(svc.url(&format!("/api/v1/runs/{run_id}/undo")), None)
        .await;
    assert_eq!(status, 200, "{undo}");
    let undo = finished_run(&api, &svc, undo["run_id"].as_str().unwrap()).await;
    assert_eq!(undo["status"], "succeeded", "{undo}");
    assert_eq!(undo["undo"]["run_id"], run_id);
    assert_eq!(undo["delivered"]["removed"], 3);

    let (_, history) = api.get(svc.url("/api/v1/syncs/crm/rows/2")).await;
    assert_eq!(history["runs"][0]["operation"], "deleted", "{history}");
    assert!(history["current"].is_null(), "{history}");
    let (status, missing) = api.get(svc.url("/api/v1/syncs/nope/rows/2")).await;
    assert_eq!(status, 404, "{missing}");
}
