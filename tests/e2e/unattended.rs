//! Unattended operation, what issue 34 left (session 20): a CLI run of a workspace that does
//! not load is a recorded failed run; a released approval that cannot start is a failed run;
//! a long run alerts while it goes on; a sync that never succeeded goes stale; `/readyz`
//! counts only refused plugins in use; the UI's 429; JSON log lines of a run carry its id.

mod browser;

use crate::serve_support::*;
use crate::support::*;
use serde_json::Value as J;

fn runs_json(ws: &TestWorkspace, sync: &str) -> Vec<J> {
    ok(
        backflow_as(ws, "ops", &["runs", "--sync", sync, "--json"]),
        "runs",
    )
    .json()
    .as_array()
    .cloned()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cli_run_that_cannot_load_its_workspace_or_plugin_is_a_recorded_failed_run() {
    let receiver = receiver().await;
    let ws = service_workspace(
        3,
        &format!(
            "{}\n[syncs.nightly]\nmodel = \"people\"\ndestination = \"a\"\n",
            hook("a", &receiver, "/a", "")
        ),
    );
    ok(
        backflow_as(&ws, "ops", &["sync", "run", "nightly"]),
        "first run",
    );

    // The plugin file is gone.
    let webhook = ws.path().join("plugins/webhook.wasm");
    std::fs::remove_file(&webhook).unwrap();
    let out = backflow_as(&ws, "ops", &["sync", "run", "nightly"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    std::fs::copy(plugin("webhook.wasm"), &webhook).unwrap();

    // The configuration does not load.
    edit(&ws, "model = \"people\"", "model = \"nobody\"");
    let out = backflow_as(&ws, "ops", &["sync", "run", "nightly"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("nobody"), "{}", out.stderr);
    assert!(
        out.stderr.contains("recorded as failed run"),
        "the CLI says the failure is recorded: {}",
        out.stderr
    );
    // A name the state never saw run is not recorded (a typo is not a sync).
    let out = backflow_as(&ws, "ops", &["sync", "run", "nightlyy"]);
    assert_ne!(out.code, 0);
    edit(&ws, "model = \"nobody\"", "model = \"people\"");

    let runs = runs_json(&ws, "nightly");
    assert_eq!(runs.len(), 3, "{runs:#?}");
    let (config, plugin_gone, first) = (&runs[0], &runs[1], &runs[2]);
    assert_eq!(first["status"], "succeeded");
    for r in [config, plugin_gone] {
        assert_eq!(r["status"], "failed", "{r}");
        assert_eq!(r["phase"], "prepare", "{r}");
        assert_eq!(r["user"], "ops", "{r}");
        assert_eq!(r["trigger"], "manual", "{r}");
    }
    assert!(
        config["error"].as_str().unwrap().contains("nobody"),
        "{config}"
    );
    assert!(
        plugin_gone["error"].as_str().unwrap().contains("webhook"),
        "{plugin_gone}"
    );
    let all = ok(backflow_as(&ws, "ops", &["runs", "--json"]), "runs").json();
    assert_eq!(all.as_array().unwrap().len(), 3, "{all:#}");
}

/// A `backflow serve` started with extra flags (`--log-format json`, limits); killed when
/// dropped.
struct Flagged {
    child: std::process::Child,
    base: String,
    log: std::path::PathBuf,
}

impl Flagged {
    fn start(ws: &TestWorkspace, extra: &[&str]) -> Flagged {
        use std::io::BufRead;
        let log = ws.path().join(format!("serve-{}.log", ulid::Ulid::new()));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
            .args(["serve", "--listen", "127.0.0.1:0", "--workspace"])
            .arg(ws.path())
            .args(extra)
            .env("RUST_LOG", "backflow=info")
            .env_remove("BACKFLOW_USER")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let first = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .next()
            .unwrap_or_default();
        let Some(base) = first.split("listening on ").nth(1) else {
            let _ = child.kill();
            panic!(
                "the service did not start: {first:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Flagged {
            base: base.trim().to_string(),
            child,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Flagged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The alerts received on `path`, in order.
fn alerts_on(alerts: &backflow::toolkit::receiver::Receiver, path: &str) -> Vec<J> {
    alerts
        .received()
        .into_iter()
        .filter(|r| r.path == path)
        .map(|r| r.body)
        .collect()
}

const TEAM: &str =
    "[users]\nalice = { role = \"admin\" }\nbob = { role = \"approver\" }\ncarol = { role = \"contributor\" }\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_released_approval_that_cannot_start_is_a_failed_run_and_alerts() {
    let receiver = receiver().await;
    let alerts = crate::support::receiver().await;
    let ws = service_workspace(
        3,
        &format!(
            "{}\n[syncs.crm]\nmodel = \"people\"\ndestination = \"a\"\n{TEAM}\n[[policies]]\nplugin = \"policies\"\nconfig = {{ run_approval_above_rows = 2 }}\n\n[[alerts]]\nurl = \"{}\"\non = [\"failed\"]\n",
            hook("a", &receiver, "/a", ""),
            alerts.url("/owner"),
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
    let (bob, carol) = (
        Api::new(Some(&token(&ws, "alice", "bob"))),
        Api::new(Some(&token(&ws, "alice", "carol"))),
    );
    let (status, body) = carol.post(svc.url("/api/v1/syncs/crm/runs"), None).await;
    assert_eq!(status, 202, "{body}");
    let held = finished_run(&carol, &svc, body["run_id"].as_str().unwrap()).await;
    assert_eq!(held["status"], "awaiting_approval", "{held}");
    let held = held["run_id"].as_str().unwrap().to_string();

    // The destination's plugin goes away before the approval releases the run.
    std::fs::remove_file(ws.path().join("plugins/webhook.wasm")).unwrap();
    eventually("the removal seen", async || {
        let (_, plugins) = bob.get(svc.url("/api/v1/plugins")).await;
        plugins
            .as_array()?
            .iter()
            .any(|p| {
                p["file"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("webhook.wasm"))
                    && p["status"] == "removed"
            })
            .then_some(())
    })
    .await;
    let (status, body) = bob
        .post(svc.url(&format!("/api/v1/runs/{held}/approve")), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let release = body["run_id"]
        .as_str()
        .expect("the release's id")
        .to_string();
    let failed = finished_run(&bob, &svc, &release).await;
    assert_eq!(failed["run_id"], release.as_str(), "{failed}");
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["phase"], "prepare", "{failed}");
    // The held run says so (written just after the release's record).
    let held_now = eventually("the held run to say its release failed", async || {
        let (_, run) = bob.get(svc.url(&format!("/api/v1/runs/{held}"))).await;
        (run["status"] != "approved").then_some(run)
    })
    .await;
    assert_eq!(held_now["status"], "failed", "{held_now}");
    assert!(
        held_now["error"].as_str().unwrap().contains(&release),
        "{held_now}"
    );
    let fired = eventually("the failed alert", async || {
        let got = alerts_on(&alerts, "/owner");
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["state"], "firing");
    assert_eq!(fired[0]["run_id"], release.as_str(), "{fired:?}");
    assert_eq!(receiver.rows(), 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_run_alerts_while_it_goes_on_and_a_sync_that_never_succeeded_goes_stale() {
    let slow = backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        backflow::toolkit::receiver::ReceiverOptions {
            latency_ms: 500,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let alerts = crate::support::receiver().await;
    let ws = service_workspace(
        30,
        &format!(
            "{}\n[syncs.slow]\nmodel = \"people\"\ndestination = \"a\"\nbatch_size = 1\n\n[syncs.never]\nmodel = \"broken\"\ndestination = \"a\"\nschedule = \"* * * * * *\"\n\n[[alerts]]\nurl = \"{}\"\nsyncs = [\"slow\"]\nrun_longer_than = \"1s\"\n\n[[alerts]]\nurl = \"{}\"\nsyncs = [\"never\"]\non = [\"blocked\"]\nstale_after = \"2s\"\n",
            hook("a", &slow, "/a", ""),
            alerts.url("/long"),
            alerts.url("/stale"),
        ),
    );
    let svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));

    // A sync failing from its first run is stale once stale_after has passed.
    let stale = eventually("the stale alert", async || {
        alerts_on(&alerts, "/stale")
            .into_iter()
            .find(|a| a["outcome"] == "stale")
    })
    .await;
    assert_eq!(stale["state"], "firing", "{stale}");
    assert_eq!(stale["alert_id"], "never/stale/1", "{stale}");
    assert!(
        stale["detail"]
            .as_str()
            .unwrap()
            .contains("no successful run"),
        "{stale}"
    );

    // A run longer than run_longer_than alerts while it still runs.
    let (status, body) = api.post(svc.url("/api/v1/syncs/slow/runs"), None).await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_str().unwrap().to_string();
    let long = eventually("the long-run alert", async || {
        alerts_on(&alerts, "/long")
            .into_iter()
            .find(|a| a["outcome"] == "long_run")
    })
    .await;
    assert_eq!(long["state"], "firing", "{long}");
    assert_eq!(long["status"], "running", "judged while it runs: {long}");
    assert_eq!(long["run_id"], run_id.as_str(), "{long}");
    let (_, run) = api.get(svc.url(&format!("/api/v1/runs/{run_id}"))).await;
    assert_eq!(run["status"], "running", "{run}");
    let done = finished_run(&api, &svc, &run_id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let episode = eventually("the long run's end", async || {
        let got: Vec<J> = alerts_on(&alerts, "/long")
            .into_iter()
            .filter(|a| a["outcome"] == "long_run")
            .collect();
        got.iter().any(|a| a["state"] == "recovered").then_some(got)
    })
    .await;
    assert_eq!(
        episode.iter().filter(|a| a["state"] == "firing").count(),
        1,
        "one alert per episode: {episode:?}"
    );
    assert!(
        episode.iter().all(|a| a["alert_id"] == "slow/long_run/1"),
        "{episode:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_ignores_unused_refused_plugins_ui_writes_get_429_and_json_logs_carry_the_run() {
    let receiver = receiver().await;
    let ws = service_workspace(
        3,
        &format!(
            "{}\n[syncs.crm]\nmodel = \"people\"\ndestination = \"a\"\n",
            hook("a", &receiver, "/a", "")
        ),
    );
    let svc = Flagged::start(
        &ws,
        &["--log-format", "json", "--write-requests-per-minute", "2"],
    );
    let token = token(&ws, "tester", "tester");
    let api = Api::new(Some(&token));
    let anyone = Api::new(None);

    // A refused file no sync uses: listed, counted by /healthz, not a reason for /readyz.
    let dir = ws.path().join("plugins");
    std::fs::write(dir.join(".junk.tmp"), b"not a component").unwrap();
    std::fs::rename(dir.join(".junk.tmp"), dir.join("junk.wasm")).unwrap();
    eventually("the junk file refused", async || {
        let (_, health) = anyone.get(svc.url("/healthz")).await;
        (health["plugins_refused"] == 1).then_some(())
    })
    .await;
    let (status, ready) = anyone.get(svc.url("/readyz")).await;
    assert_eq!(status, 200, "an unused refused file: {ready}");
    // A refused build of a plugin a sync uses: not ready.
    std::fs::write(dir.join(".webhook.tmp"), b"not a component").unwrap();
    std::fs::rename(dir.join(".webhook.tmp"), dir.join("webhook.wasm")).unwrap();
    let ready = eventually("not ready", async || {
        let (status, ready) = anyone.get(svc.url("/readyz")).await;
        (status == 503).then_some(ready)
    })
    .await;
    let reasons = ready["reasons"].to_string();
    assert!(reasons.contains("webhook.wasm"), "{ready}");
    assert!(!reasons.contains("junk.wasm"), "{ready}");
    let (_, health) = anyone.get(svc.url("/healthz")).await;
    assert_eq!(health["plugins_refused"], 2, "{health}");
    std::fs::copy(plugin("webhook.wasm"), dir.join(".webhook.tmp")).unwrap();
    std::fs::rename(dir.join(".webhook.tmp"), dir.join("webhook.wasm")).unwrap();
    eventually("ready again", async || {
        (anyone.get(svc.url("/readyz")).await.0 == 200).then_some(())
    })
    .await;

    // The web UI's state-changing forms: past the per-token limit, 429 with Retry-After.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .post(svc.url("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = http
        .get(svc.url("/ui"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token on the page: {page}"))
        .to_string();
    let run_now = || {
        http.post(svc.url("/ui/syncs/crm/runs"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}"))
            .send()
    };
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(run_now().await.unwrap());
    }
    let refused = answers.pop().unwrap();
    assert!(
        answers.iter().all(|a| a.status().as_u16() < 400),
        "{:?}",
        answers.iter().map(|a| a.status()).collect::<Vec<_>>()
    );
    assert_eq!(refused.status().as_u16(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    assert!(refused.text().await.unwrap().contains("try again"));

    // JSON log lines of a run carry its id and sync in their span, and its phase.
    let runs = eventually("the UI's runs finished", async || {
        let runs = runs_of_at(&api, &svc, "crm").await;
        (!runs.is_empty() && runs.iter().all(|r| r["status"] == "succeeded")).then_some(runs)
    })
    .await;
    let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
    // The record is written before the run's last line is logged.
    let log = eventually("the run's last line", async || {
        let log = svc.log();
        log.lines()
            .any(|l| l.contains("run finished") && l.contains(&run_id))
            .then_some(log)
    })
    .await;
    let lines: Vec<J> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    let of_run: Vec<&J> = lines
        .iter()
        .filter(|l| l["span"]["run_id"] == run_id.as_str())
        .collect();
    let messages: Vec<&str> = of_run
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert!(
        messages.contains(&"run started") && messages.contains(&"run finished"),
        "the run's lines carry its id: {messages:?}\n{log}"
    );
    for line in &of_run {
        assert_eq!(line["span"]["sync"], "crm", "{line}");
        assert_eq!(line["span"]["name"], "run", "{line}");
    }
    let finished = of_run
        .iter()
        .find(|l| l["fields"]["message"] == "run finished")
        .unwrap();
    assert!(finished["span"]["phase"].is_string(), "{finished}");
}

async fn runs_of_at(api: &Api, svc: &Flagged, sync: &str) -> Vec<J> {
    let (status, body) = api
        .get(svc.url(&format!("/api/v1/runs?sync={sync}&limit=100")))
        .await;
    assert_eq!(status, 200, "{body}");
    body["runs"].as_array().cloned().unwrap_or_default()
}
