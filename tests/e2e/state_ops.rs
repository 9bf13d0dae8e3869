//! The state under unattended operation (issue 34, items 5, 7, 8): a run killed with
//! SIGKILL is marked `interrupted` with its true delivered count as soon as any process
//! starts (no run of the sync needed), however many processes died one after another; a full
//! disk fails the run with the disk's message while the service keeps answering; a backup
//! taken during a run restores to a state that re-sends only what it had not recorded.

use crate::serve_support::*;
use crate::support::*;
use backflow::state::StateStore;
use backflow::toolkit::receiver::{Receiver, ReceiverOptions};
use serde_json::Value as J;
use std::path::Path;
use std::process::{Child, Command, Stdio};

async fn slow_receiver(latency_ms: u64) -> Receiver {
    backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverOptions {
            latency_ms,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// `backflow sync run SYNC` in the background.
fn spawn_run(ws: &TestWorkspace, sync: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["sync", "run", sync, "--as", "tester", "--workspace"])
        .arg(ws.path())
        .env("RUST_LOG", "warn")
        .env_remove("BACKFLOW_USER")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `check` holds, while `child` runs (it must not finish first).
async fn while_running(child: &mut Child, what: &str, check: impl Fn() -> bool) {
    eventually(what, async || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before: {what}"
        );
        check().then_some(())
    })
    .await;
}

/// The lease file of sync `s` (one sync in these workspaces).
fn lease_text(ws: &TestWorkspace) -> String {
    let dir = ws.path().join(".backflow/leases");
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

fn runs_json(ws: &TestWorkspace) -> Vec<J> {
    let out = ok(
        backflow_as(ws, "tester", &["runs", "--sync", "s", "--json"]),
        "runs",
    );
    out.json().as_array().cloned().unwrap_or_default()
}

fn delivered(run: &J) -> u64 {
    ["added", "changed", "removed"]
        .iter()
        .map(|k| run["delivered"][*k].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_run_is_interrupted_with_its_true_count_before_any_run_and_none_is_forgotten() {
    let receiver = slow_receiver(30).await;
    let ws = service_workspace(
        2000,
        &format!(
            "{}\n[syncs.s]\nmodel = \"people\"\ndestination = \"a\"\nbatch_size = 20\n",
            hook("a", &receiver, "/a", "")
        ),
    );
    // Run A, killed mid-delivery.
    let mut a = spawn_run(&ws, "s");
    while_running(&mut a, "run A delivering", || receiver.rows() >= 300).await;
    a.kill().unwrap();
    a.wait().unwrap();
    let received_from_a = receiver.rows() as u64;

    // Run B, killed the moment the lease file names it: it may die before it marks A.
    let mut b = spawn_run(&ws, "s");
    let b_pid = b.id();
    while_running(&mut b, "run B holding the lease", || {
        lease_text(&ws).contains(&format!("\"pid\":{b_pid}"))
    })
    .await;
    b.kill().unwrap();
    b.wait().unwrap();

    // No sync runs: a CLI process starting is enough to mark every dead run, with the counts
    // of what each had committed (its journal included).
    let runs = runs_json(&ws);
    assert!(
        runs.iter().all(|r| r["status"] != "running"),
        "no run left running: {runs:#?}"
    );
    let run_a = runs.last().unwrap();
    assert_eq!(run_a["status"], "interrupted", "{run_a:#}");
    let a_delivered = delivered(run_a);
    let b_delivered: u64 = runs[..runs.len() - 1].iter().map(delivered).sum();
    assert!(
        a_delivered > 0 && a_delivered <= received_from_a,
        "A delivered {a_delivered}, the receiver got {received_from_a}"
    );

    // The true count: the next run sends exactly what the killed ones had not recorded.
    let c = ok(
        backflow_as(&ws, "tester", &["sync", "run", "s", "--json"]),
        "run C",
    );
    let c = c.json();
    let c = c.as_array().map(|a| a[0].clone()).unwrap_or(c);
    assert_eq!(c["status"], "succeeded", "{c:#}");
    assert_eq!(
        a_delivered + b_delivered + delivered(&c),
        2000,
        "A and B's recorded counts are what they delivered: C sends the rest"
    );
    let state = StateStore::open(&ws.path().join(".backflow")).unwrap();
    assert_eq!(state.snapshot_len("s").unwrap(), 2000);
    assert!(state.running_runs().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_killed_mid_run_shows_the_run_interrupted_with_its_count_after_restart() {
    let receiver = slow_receiver(30).await;
    let ws = service_workspace(
        2000,
        &format!(
            "{}\n[syncs.s]\nmodel = \"people\"\ndestination = \"a\"\nbatch_size = 20\n",
            hook("a", &receiver, "/a", "")
        ),
    );
    let svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    api.post(svc.url("/api/v1/syncs/s/runs"), None).await;
    eventually("a good part delivered", async || {
        (receiver.rows() >= 300).then_some(())
    })
    .await;
    drop(svc); // SIGKILL
    let received = receiver.rows() as u64;

    let svc = Service::start(&ws);
    let runs = runs_of(&api, &svc, "s").await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "interrupted", "{:#}", runs[0]);
    let first = delivered(&runs[0]);
    assert!(first > 0 && first <= received, "{first} of {received}");

    api.post(svc.url("/api/v1/syncs/s/runs"), None).await;
    let runs = finished_runs(&api, &svc, "s", 2).await;
    assert_eq!(runs[0]["status"], "succeeded", "{:#}", runs[0]);
    assert_eq!(first + delivered(&runs[0]), 2000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_during_a_run_restores_to_a_state_that_resends_only_what_it_had_not_recorded() {
    let receiver = slow_receiver(20).await;
    let ws = service_workspace(
        100_000,
        &format!(
            "{}\n[syncs.s]\nmodel = \"people\"\ndestination = \"a\"\nbatch_size = 500\n",
            hook("a", &receiver, "/a", "")
        ),
    );
    let mut run = spawn_run(&ws, "s");
    // Once the run has committed part of its deliveries to the state (every few seconds).
    let state_dir = ws.path().join(".backflow");
    while_running(&mut run, "a part committed", || {
        StateStore::open(&state_dir)
            .ok()
            .and_then(|s| s.snapshot_len("s").ok())
            .is_some_and(|n| n > 0)
    })
    .await;
    let backup = ws.path().join("backup.redb");
    let out = ok(
        backflow_as(
            &ws,
            "tester",
            &["state", "backup", backup.to_str().unwrap(), "--json"],
        ),
        "state backup",
    );
    assert!(out.json()["entries"].as_u64().unwrap() > 0);
    assert!(
        run.try_wait().unwrap().is_none(),
        "the backup was taken while the run went on"
    );
    let status = run.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(receiver.rows(), 100_000);
    // A second backup never overwrites the first.
    let again = backflow_as(
        &ws,
        "tester",
        &["state", "backup", backup.to_str().unwrap()],
    );
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("exists"), "{}", again.stderr);

    // What the copy recorded as delivered.
    let copy_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&backup, copy_dir.path().join("state.redb")).unwrap();
    let recorded = StateStore::open(copy_dir.path())
        .unwrap()
        .snapshot_len("s")
        .unwrap();
    assert!(
        recorded > 0 && recorded < 100_000,
        "taken mid-run: {recorded}"
    );

    // Restore (the service is stopped: nothing runs) and continue.
    std::fs::copy(&backup, ws.path().join(".backflow/state.redb")).unwrap();
    let out = ok(
        backflow_as(&ws, "tester", &["sync", "run", "s", "--json"]),
        "run after restore",
    );
    let out = out.json();
    let next = out.as_array().map(|a| a[0].clone()).unwrap_or(out);
    assert_eq!(next["status"], "succeeded", "{next:#}");
    assert_eq!(
        receiver.rows() as u64,
        100_000 + (100_000 - recorded),
        "only what the copy had not recorded is sent again"
    );
    let runs = runs_json(&ws);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(
        runs[1]["status"], "interrupted",
        "the run the copy caught mid-way"
    );
}

/// A small tmpfs mounted for the test (needs root); unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` up to its last `room` bytes.
fn fill(dir: &Path, room: u64) -> std::path::PathBuf {
    let filler = dir.join("filler");
    let free = {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let size = free.saturating_sub(room);
    std::fs::write(&filler, vec![0u8; size as usize]).unwrap();
    filler
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_the_run_with_its_message_and_the_next_run_after_space_is_back_loses_nothing(
) {
    let receiver = slow_receiver(0).await;
    let ws = service_workspace(
        100,
        &format!(
            "{}\n[syncs.s]\nmodel = \"people\"\ndestination = \"a\"\nbatch_size = 200\n",
            hook("a", &receiver, "/a", "")
        ),
    );
    let disk = ws.path().join("disk");
    let Some(_mounted) = Tmpfs::mount(&disk, "256m") else {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        if !root {
            missing_prerequisite("mounting a tmpfs needs root");
        } else {
            // Root in a container that forbids mounts: not something the test command can
            // install, so this skips under CI too, saying so (sync::recover's unit tests
            // cover the disk-full repair).
            eprintln!("skipped: this host does not allow mounting a tmpfs, even as root");
        }
        return;
    };
    // The state on the small disk.
    edit(
        &ws,
        "[workspace]\n",
        "[workspace]\nstate_dir = \"disk/state\"\n",
    );
    let svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    api.post(svc.url("/api/v1/syncs/s/runs"), None).await;
    let runs = finished_runs(&api, &svc, "s", 1).await;
    assert_eq!(runs[0]["status"], "succeeded", "{:#}", runs[0]);

    // Many more rows, and a disk with no room for them.
    let mut csv = String::from("id,email\n");
    for i in 1..=60_000 {
        csv.push_str(&format!("{i},user{i}-{}@example.com\n", "x".repeat(60)));
    }
    ws.write("data/people.csv", &csv);
    let filler = fill(&disk, 256 * 1024);
    api.post(svc.url("/api/v1/syncs/s/runs"), None).await;
    let runs = finished_runs(&api, &svc, "s", 2).await;
    assert_eq!(runs[0]["status"], "failed", "{:#}\n{}", runs[0], svc.log());
    let error = runs[0]["error"].as_str().unwrap();
    assert!(
        error.contains("No space left on device") && error.contains(disk.to_str().unwrap()),
        "the disk's message and the path: {error}"
    );
    // The service still answers.
    let (status, _) = api.get(svc.url("/api/v1/syncs")).await;
    assert_eq!(status, 200);

    // Space is back: the next run delivers the rest, nothing lost.
    std::fs::remove_file(&filler).unwrap();
    api.post(svc.url("/api/v1/syncs/s/runs"), None).await;
    let runs = finished_runs(&api, &svc, "s", 3).await;
    assert_eq!(
        runs[0]["status"],
        "succeeded",
        "{:#}\n{}",
        runs[0],
        svc.log()
    );
    let ids: std::collections::HashSet<String> = receiver
        .received()
        .iter()
        .filter(|r| r.status < 300)
        .flat_map(|r| r.body.as_array().cloned().unwrap_or_default())
        .map(|row| row["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 60_000, "every row reached the destination");
    drop(svc);
    let state = StateStore::open(&disk.join("state")).unwrap();
    assert_eq!(state.snapshot_len("s").unwrap(), 60_000);
    assert!(state.running_runs().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_runs_leave_the_audit_log_alone_and_the_audit_api_pages() {
    let receiver = slow_receiver(0).await;
    let ws = service_workspace(
        3,
        &format!(
            "{}\n[syncs.s]\nmodel = \"people\"\ndestination = \"a\"\nschedule = \"* * * * * *\"\n",
            hook("a", &receiver, "/a", "")
        ),
    );
    let svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    finished_runs(&api, &svc, "s", 3).await;
    let (_, starts) = api.get(svc.url("/api/v1/audit?action=run.start")).await;
    assert_eq!(
        starts["entries"].as_array().unwrap().len(),
        0,
        "scheduled starts are in the run history only: {starts}"
    );

    // People's actions are audited, a page at a time.
    for _ in 0..2 {
        ok(
            backflow_as(&ws, "tester", &["token", "create", "--name", "x"]),
            "token create",
        );
    }
    let (_, page) = api.get(svc.url("/api/v1/audit?limit=1")).await;
    let first = page["entries"][0]["seq"].as_u64().unwrap();
    let before = page["next_before"].as_u64().expect("a next page");
    assert_eq!(before, first);
    let (_, next) = api
        .get(svc.url(&format!("/api/v1/audit?limit=1&before={before}")))
        .await;
    assert!(
        next["entries"][0]["seq"].as_u64().unwrap() < first,
        "{next}"
    );
    let (_, verified) = api.get(svc.url("/api/v1/audit/verify")).await;
    assert_eq!(verified["chain_verified"], true, "{verified}");
}
