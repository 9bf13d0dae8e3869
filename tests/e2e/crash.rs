//! Crash consistency: a run killed with SIGKILL mid-delivery loses nothing, re-sends at
//! most the batches in flight, and is marked interrupted by the next run.

use crate::support::*;
use backflow::state::{RunStatus, StateStore};
use serde_json::Value as J;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_mid_delivery_resumes_without_losing_rows() {
    // A slow endpoint that records every id it receives.
    let seen = Arc::new(Mutex::new(Vec::<i64>::new()));
    let requests = Arc::new(AtomicUsize::new(0));
    let (s, r) = (seen.clone(), requests.clone());
    let app = axum::Router::new().fallback(move |body: String| {
        let (s, r) = (s.clone(), r.clone());
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(40)).await;
            let rows: Vec<J> = serde_json::from_str(&body).unwrap();
            s.lock()
                .unwrap()
                .extend(rows.iter().map(|row| row["id"].as_i64().unwrap()));
            r.fetch_add(1, Ordering::SeqCst);
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let ws = file_workspace(
        "people",
        "people.csv",
        &format!(
            r#"
[destinations.hook]
plugin = "webhook"
config.url = "http://{addr}/in"
grants.network = ["{addr}"]
[syncs.s]
model = "people"
destination = "hook"
batch_size = 20
"#
        ),
    );
    let mut csv = String::from("id,email\n");
    for i in 1..=1000 {
        csv.push_str(&format!("{i},user{i}@x.com\n"));
    }
    ws.write("data/people.csv", &csv);

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["sync", "run", "s", "--workspace"])
        .arg(ws.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let it deliver a good part, then kill -9 it mid-delivery.
    while requests.load(Ordering::SeqCst) < 15 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before it could be killed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let delivered_before_kill = seen.lock().unwrap().len();
    assert!(delivered_before_kill < 1000);

    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    let seen = seen.lock().unwrap().clone();
    let unique: std::collections::HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), 1000, "every row delivered");
    let duplicates = seen.len() - unique.len();
    assert!(
        duplicates <= 20,
        "at most the batch in flight is re-sent, got {duplicates} duplicates"
    );
    assert!(run.delivered.added as usize <= 1000 - delivered_before_kill + 20);

    let state = StateStore::open(&ws.load().state_dir).unwrap();
    let runs = state.runs(Some("s"), 10).unwrap();
    assert_eq!(
        runs[1].status,
        RunStatus::Interrupted,
        "the killed run is marked interrupted"
    );
    assert_eq!(state.snapshot_len("s").unwrap(), 1000);
}
