//! Unattended operation (issue 34, items 1 and 2): a run that cannot start is a recorded,
//! alerted failed run and makes `/readyz` answer 503; alerts follow a sync's health in
//! episodes (one `firing`, reminders only past `repeat_after`, one `recovered`), kept across
//! restarts; a row count far from its recent median alerts.

use crate::serve_support::*;
use crate::support::*;
use backflow::toolkit::receiver::Received;
use serde_json::Value as J;

/// The alerts received about `sync` on `path`, in order.
fn alerts_about(alerts: &backflow::toolkit::receiver::Receiver, path: &str, sync: &str) -> Vec<J> {
    alerts
        .received()
        .into_iter()
        .filter(|r: &Received| r.path == path && r.body["sync"] == sync)
        .map(|r| r.body)
        .collect()
}

fn in_state<'a>(alerts: &'a [J], state: &str) -> Vec<&'a J> {
    alerts.iter().filter(|a| a["state"] == state).collect()
}

async fn readyz(svc: &Service) -> (u16, J) {
    Api::new(None).get(svc.url("/readyz")).await
}

async fn health(api: &Api, svc: &Service, sync: &str) -> J {
    let (status, syncs) = api.get(svc.url("/api/v1/syncs")).await;
    assert_eq!(status, 200, "{syncs}");
    syncs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == sync)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_plugin_makes_a_recorded_failed_run_one_alert_and_readyz_503_until_restored() {
    let receiver = receiver().await;
    let alerts = crate::support::receiver().await;
    let ws = service_workspace(
        3,
        &format!(
            "{}\n[syncs.ticking]\nmodel = \"people\"\ndestination = \"a\"\nschedule = \"* * * * * *\"\n\n[[alerts]]\nurl = \"{}\"\non = [\"failed\"]\n",
            hook("a", &receiver, "/a", ""),
            alerts.url("/owner")
        ),
    );
    let svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    let first = finished_runs(&api, &svc, "ticking", 1).await;
    assert_eq!(first[0]["status"], "succeeded", "{first:?}");
    assert_eq!(readyz(&svc).await.0, 200);

    let webhook = ws.path().join("plugins/webhook.wasm");
    std::fs::remove_file(&webhook).unwrap();
    // Every tick that cannot start a run records a failed run, in phase prepare.
    let failed = eventually("three runs that could not start", async || {
        let runs = runs_of(&api, &svc, "ticking").await;
        let failed: Vec<J> = runs
            .into_iter()
            .filter(|r| r["phase"] == "prepare")
            .collect();
        (failed.len() >= 3).then_some(failed)
    })
    .await;
    for r in &failed {
        assert_eq!(r["status"], "failed", "{r}");
        assert_eq!(r["trigger"], "schedule", "{r}");
        assert_eq!(r["user"], "backflow-serve", "{r}");
        assert!(
            r["error"].as_str().unwrap().contains("could not start"),
            "{r}"
        );
    }
    let (status, ready) = readyz(&svc).await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("sync ticking")),
        "{ready}"
    );
    assert_eq!(
        Api::new(None).get(svc.url("/healthz")).await.0,
        200,
        "liveness unchanged"
    );
    let h = health(&api, &svc, "ticking").await;
    assert_eq!(h["health"], "failing", "{h}");
    assert!(h["health_since"].is_string(), "{h}");
    let fired = eventually("the failing alert", async || {
        let got = alerts_about(&alerts, "/owner", "ticking");
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(fired[0]["state"], "firing", "{fired:?}");
    assert_eq!(fired[0]["outcome"], "failed");
    assert_eq!(fired[0]["alert_id"], "ticking/failed/1");

    // Restored: a successful run, one recovered alert, ready again.
    let tmp = ws.path().join("webhook.wasm.tmp");
    std::fs::copy(plugin("webhook.wasm"), &tmp).unwrap();
    std::fs::rename(&tmp, &webhook).unwrap();
    let recovered = eventually("the recovered alert", async || {
        let got = alerts_about(&alerts, "/owner", "ticking");
        (!in_state(&got, "recovered").is_empty()).then_some(got)
    })
    .await;
    let runs = runs_of(&api, &svc, "ticking").await;
    assert_eq!(
        runs.iter().find(|r| r["status"] != "running").unwrap()["status"],
        "succeeded"
    );
    assert_eq!(in_state(&recovered, "firing").len(), 1, "{recovered:?}");
    assert_eq!(
        in_state(&recovered, "recovered")[0]["alert_id"],
        "ticking/failed/1"
    );
    eventually("ready again", async || {
        (readyz(&svc).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(health(&api, &svc, "ticking").await["health"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_failing_every_second_alerts_once_across_a_restart_reminds_past_repeat_after_and_recovers_once(
) {
    let receiver = receiver().await;
    let alerts = crate::support::receiver().await;
    let ws = service_workspace(
        3,
        &format!(
            "{}\n[syncs.flaky]\nmodel = \"broken\"\ndestination = \"a\"\nschedule = \"* * * * * *\"\n\n[[alerts]]\nurl = \"{}\"\n\n[[alerts]]\nurl = \"{}\"\non = [\"failed\"]\nrepeat_after = \"3s\"\n",
            hook("a", &receiver, "/a", ""),
            alerts.url("/hourly"),
            alerts.url("/often"),
        ),
    );
    let mut svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    let failed_runs = async |api: &Api, svc: &Service, n: usize| {
        eventually(&format!("{n} failed runs"), async || {
            let runs = runs_of(api, svc, "flaky").await;
            (runs.iter().filter(|r| r["status"] == "failed").count() >= n).then_some(())
        })
        .await
    };
    failed_runs(&api, &svc, 8).await;
    // A restart in the middle of the episode neither fires it again nor forgets it.
    svc.terminate();
    let svc = Service::start(&ws);
    failed_runs(&api, &svc, 16).await;
    let hourly = alerts_about(&alerts, "/hourly", "flaky");
    assert_eq!(
        hourly.len(),
        1,
        "one alert for a lasting failure: {hourly:?}"
    );
    assert_eq!(hourly[0]["state"], "firing");
    assert_eq!(hourly[0]["alert_id"], "flaky/failed/1");
    let often = alerts_about(&alerts, "/often", "flaky");
    assert_eq!(in_state(&often, "firing").len(), 1, "{often:?}");
    assert!(
        !in_state(&often, "reminder").is_empty(),
        "a route with repeat_after = 3s is reminded: {often:?}"
    );
    assert!(
        often.iter().all(|a| a["alert_id"] == "flaky/failed/1"),
        "{often:?}"
    );

    // It works again: exactly one recovered alert per route.
    ws.write("data/missing.csv", "id,email\n1,a@example.com\n");
    eventually("a successful run", async || {
        let runs = runs_of(&api, &svc, "flaky").await;
        runs.iter()
            .any(|r| r["status"] == "succeeded")
            .then_some(())
    })
    .await;
    let ok_before = runs_of(&api, &svc, "flaky")
        .await
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .count();
    eventually("two more successful runs", async || {
        let runs = runs_of(&api, &svc, "flaky").await;
        (runs.iter().filter(|r| r["status"] == "succeeded").count() >= ok_before + 2).then_some(())
    })
    .await;
    for path in ["/hourly", "/often"] {
        let got = alerts_about(&alerts, path, "flaky");
        let recovered = in_state(&got, "recovered");
        assert_eq!(recovered.len(), 1, "{path}: {got:?}");
        assert_eq!(recovered[0]["alert_id"], "flaky/failed/1");
        assert_eq!(in_state(&got, "firing").len(), 1, "{path}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_row_count_far_from_the_median_of_recent_successful_runs_alerts_once() {
    let receiver = receiver().await;
    let alerts = crate::support::receiver().await;
    let ws = service_workspace(
        5,
        &format!(
            "{}\n[syncs.s]\nmodel = \"people\"\ndestination = \"a\"\n\n[[alerts]]\nurl = \"{}\"\non = []\nrow_count_deviation_percent = 50\nrow_count_baseline_runs = 2\n",
            hook("a", &receiver, "/a", ""),
            alerts.url("/volume"),
        ),
    );
    let run = || {
        ok(
            backflow_as(&ws, "tester", &["sync", "run", "s"]),
            "sync run",
        )
    };
    for _ in 0..3 {
        run();
    }
    assert!(alerts.received().is_empty(), "steady counts alert nobody");
    let mut csv = String::from("id,email\n");
    for i in 1..=50 {
        csv.push_str(&format!("{i},user{i}@example.com\n"));
    }
    ws.write("data/people.csv", &csv);
    run();
    let got = alerts_about(&alerts, "/volume", "s");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["state"], "firing");
    assert_eq!(got[0]["outcome"], "row_count_deviation");
    assert_eq!(got[0]["alert_id"], "s/row_count_deviation/1");
    assert!(
        got[0]["text"].as_str().unwrap().contains("model_rows = 50"),
        "{got:?}"
    );
    run();
    assert_eq!(
        alerts_about(&alerts, "/volume", "s").len(),
        1,
        "still firing: no new alert"
    );
}

#[test]
fn alert_keys_are_checked_at_load_naming_the_key() {
    let ws = service_workspace(
        1,
        "[destinations.n]\nplugin = \"webhook\"\nconfig.url = \"http://127.0.0.1:9/\"\ngrants.network = [\"127.0.0.1:9\"]\n[syncs.s]\nmodel = \"people\"\ndestination = \"n\"\n\n[[alerts]]\nurl = \"http://127.0.0.1:9/\"\nrepeat_after = \"soon\"\nrow_count_baseline_runs = 3\n",
    );
    let out = backflow_as(&ws, "tester", &["sync", "list"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("alerts[0].repeat_after"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("alerts[0].row_count_baseline_runs"),
        "{}",
        out.stderr
    );
}
