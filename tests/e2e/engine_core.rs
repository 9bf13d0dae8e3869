//! The engine core's guarantees for concurrent use: per-sync leases (one run of a sync at a
//! time, in one process or several), reads that never wait for a run, drafts kept apart from
//! production state, and bounded history. Driven through the `backflow` binary.

use crate::support::*;
use backflow::toolkit::receiver::ReceiverOptions;
use std::process::{Command, Output};

fn backflow(ws: &TestWorkspace, user: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backflow"));
    cmd.args(args)
        .arg("--workspace")
        .arg(ws.path())
        .env("RUST_LOG", "warn")
        .env_remove("BACKFLOW_USER");
    if let Some(user) = user {
        cmd.args(["--as", user]);
    }
    cmd.output().expect("running backflow")
}

fn ok(out: Output, what: &str) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draft_run_to_staging_leaves_the_published_sync_state_alone() {
    let production = receiver().await;
    let staging = receiver().await;
    let ws = csv_to_webhook(
        &production,
        "",
        &format!(
            "[destinations.stage]\nplugin = \"webhook\"\nstaging = true\nconfig.url = \"{}\"\ngrants.network = [\"{}\"]\n\n[users]\nalice = {{ role = \"admin\" }}\ncarol = {{ role = \"contributor\" }}\n",
            staging.url("/contacts"),
            staging.addr
        ),
    );
    // Publish: carol submits, alice approves, carol publishes.
    let change = ok(
        backflow(
            &ws,
            Some("carol"),
            &["change", "submit", "-m", "setup", "--json"],
        ),
        "submit",
    );
    let id = change["id"].to_string();
    ok(
        backflow(&ws, Some("alice"), &["change", "approve", &id]),
        "approve",
    );
    ok(
        backflow(&ws, Some("carol"), &["change", "publish", &id]),
        "publish",
    );

    let first = ok(
        backflow(&ws, Some("carol"), &["sync", "run", "to_hook", "--json"]),
        "published run",
    );
    assert_eq!(first["planned"]["added"], 8, "{first}");
    assert_eq!(production.rows(), 8);

    // The working copy points the sync at the staging destination; a draft run goes there.
    edit(&ws, "destination = \"hook\"", "destination = \"stage\"");
    let draft = ok(
        backflow(
            &ws,
            Some("carol"),
            &["sync", "run", "to_hook", "--draft", "--json"],
        ),
        "draft run",
    );
    assert_eq!(draft["status"], "succeeded", "{draft}");
    assert_eq!(draft["draft"], true, "{draft}");
    assert_eq!(
        draft["planned"]["added"], 8,
        "the draft has a snapshot of its own: {draft}"
    );
    assert_eq!(staging.rows(), 8);

    // The published sync's snapshot is untouched: nothing to send, nothing re-sent.
    let again = ok(
        backflow(&ws, Some("carol"), &["sync", "run", "to_hook", "--json"]),
        "published run again",
    );
    assert_eq!(
        again["planned"]["added"].as_u64().unwrap()
            + again["planned"]["changed"].as_u64().unwrap()
            + again["planned"]["removed"].as_u64().unwrap(),
        0,
        "{again}"
    );
    assert_eq!(production.rows(), 8);

    // History keeps the draft run apart from the sync's own.
    let runs = ok(
        backflow(&ws, Some("carol"), &["runs", "--sync", "to_hook", "--json"]),
        "runs",
    );
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            again["run_id"].as_str().unwrap(),
            first["run_id"].as_str().unwrap()
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_named_twice_runs_once() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(&receiver, "", "");
    let run = ok(
        backflow(&ws, None, &["sync", "run", "to_hook", "to_hook", "--json"]),
        "run",
    );
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(receiver.rows(), 8, "each row is sent once");
    let runs = ok(backflow(&ws, None, &["runs", "--json"]), "runs");
    assert_eq!(runs.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn while_a_run_delivers_a_second_run_is_refused_and_reads_answer_from_other_processes() {
    // A slow receiver: 100,000 rows in 200 batches of 500, one at a time, each answered
    // after 50 ms (about 10 s of delivery).
    let slow = backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverOptions {
            latency_ms: 50,
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let ws = csv_to_webhook(&slow, "", "batch_size = 500\nmax_in_flight = 1");
    let mut csv = String::from("id,email,name,plan,mrr,signed_up\n");
    for i in 1..=100_000 {
        csv.push_str(&format!(
            "{i},u{i}@example.com,User {i},pro,9.00,2024-01-01\n"
        ));
    }
    ws.write("data/customers.csv", &csv);

    let mut first = Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["sync", "run", "to_hook", "--json", "--workspace"])
        .arg(ws.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until the first run is delivering.
    let mut delivering = false;
    for _ in 0..600 {
        if slow.rows() > 0 {
            delivering = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(delivering, "the first run never started delivering");

    // Reads answer from other processes while it delivers.
    let runs = ok(
        backflow(&ws, None, &["runs", "--json"]),
        "runs during a run",
    );
    assert_eq!(runs[0]["status"], "running", "{runs}");
    let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
    // Each answer is what the state holds right now, not merely an exit code 0.
    let audit = ok(
        backflow(&ws, None, &["audit", "--json"]),
        "audit during a run",
    );
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "run.start" && e["target"].as_str().unwrap().contains(&run_id)),
        "the run's start is in the audit log: {audit}"
    );
    let changes = ok(
        backflow(&ws, None, &["change", "list", "--json"]),
        "change list during a run",
    );
    assert_eq!(changes, serde_json::json!([]), "no change requests here");
    let syncs = ok(
        backflow(&ws, None, &["sync", "list", "--json"]),
        "sync list during a run",
    );
    let names: Vec<&str> = syncs
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["to_hook"], "{syncs}");

    // A second run of the same sync is refused, naming the run in progress.
    let second = backflow(&ws, None, &["sync", "run", "to_hook"]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        stderr.contains("sync to_hook is already running since")
            && stderr.contains(&format!("run ID {run_id}")),
        "{stderr}"
    );
    // With --json the refusal is one JSON object on stdout.
    let second_json = backflow(&ws, None, &["sync", "run", "to_hook", "--json"]);
    let error: serde_json::Value =
        serde_json::from_slice(&second_json.stdout).expect("a JSON error object");
    assert!(
        error["error"].as_str().unwrap().contains("already running"),
        "{error}"
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run was still delivering during the reads"
    );

    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["delivered"]["added"], 100_000);
    assert_eq!(
        slow.rows(),
        100_000,
        "every row once: the refused runs sent nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_keeps_the_configured_number_of_runs_per_sync() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(&receiver, "", "");
    let toml = std::fs::read_to_string(ws.path().join("backflow.toml")).unwrap();
    ws.write("backflow.toml", &format!("[state]\nkeep_runs = 2\n{toml}"));
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(ws.run("to_hook").await.run_id);
    }
    let runs = ok(
        backflow(&ws, None, &["runs", "--sync", "to_hook", "--json"]),
        "runs",
    );
    let kept: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, [ids[3].as_str(), ids[2].as_str()]);
    let bad = backflow(&ws, None, &["runs"]);
    assert!(bad.status.success());
    ws.write("backflow.toml", &format!("[state]\nkeep_runs = 0\n{toml}"));
    let refused = backflow(&ws, None, &["runs"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("state.keep_runs: must be at least 1"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
