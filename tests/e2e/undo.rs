//! Undoing a run and reading a row's history, against a receiver whose stored records are
//! rebuilt from every request it accepted.

use crate::support::*;
use backflow::toolkit::receiver::{Receiver, ReceiverOptions};
use serde_json::Value as J;
use std::collections::BTreeMap;
use std::process::{Command, Output};

fn backflow(ws: &TestWorkspace, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(args)
        .arg("--workspace")
        .arg(ws.path())
        .env("RUST_LOG", "warn")
        .env("BACKFLOW_USER", "olga")
        .output()
        .unwrap()
}

fn json(out: Output, what: &str) -> J {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The receiver's records as a CRM would hold them: every accepted request replayed in order
/// (each row carries its operation in `_op`), keyed by `id`.
fn records(receiver: &Receiver) -> BTreeMap<i64, J> {
    let mut out = BTreeMap::new();
    for request in receiver
        .received()
        .into_iter()
        .filter(|r| (200..300).contains(&r.status))
    {
        let rows = match request.body {
            J::Array(rows) => rows,
            other => vec![other],
        };
        for mut row in rows {
            let op = row["_op"].as_str().unwrap().to_string();
            let id = row["id"].as_i64().unwrap();
            row.as_object_mut().unwrap().remove("_op");
            match op.as_str() {
                "insert" | "update" => {
                    out.insert(id, row);
                }
                "delete" => {
                    out.remove(&id);
                }
                other => panic!("unexpected operation {other}"),
            }
        }
    }
    out
}

fn csv(rows: impl Iterator<Item = (i64, String)>) -> String {
    let mut s = String::from("id,email,plan\n");
    for (id, plan) in rows {
        s.push_str(&format!("{id},u{id}@example.com,{plan}\n"));
    }
    s
}

/// 1,000 customers synced in mirror mode to a receiver that is told each row's operation.
fn workspace(receiver: &Receiver, sync_extra: &str) -> TestWorkspace {
    let ws = file_workspace(
        "customers",
        "customers.csv",
        &format!(
            "[destinations.crm]\nplugin = \"webhook\"\nconfig.url = \"{url}\"\nconfig.operation_field = \"_op\"\ngrants.network = [\"{addr}\"]\n\n[syncs.to_crm]\nmodel = \"customers\"\ndestination = \"crm\"\nmode = \"mirror\"\n{sync_extra}\n",
            url = receiver.url("/contacts"),
            addr = receiver.addr,
        ),
    );
    ws.write(
        "data/customers.csv",
        &csv((1..=1000).map(|i| (i, "pro".to_string()))),
    );
    ws
}

/// The bad run: a wrong plan on 500 rows, 20 rows deleted, 30 added.
fn bad_data() -> String {
    csv((1..=1030).filter(|i| !(981..=1000).contains(i)).map(|i| {
        (
            i,
            if i <= 500 {
                "WRONG".to_string()
            } else {
                "pro".to_string()
            },
        )
    }))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undone_run_leaves_the_destination_as_it_was_and_an_undo_can_be_undone() {
    let receiver = backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverOptions::default(),
    )
    .await
    .unwrap();
    let ws = workspace(&receiver, "");
    json(
        backflow(&ws, &["sync", "run", "to_crm", "--json"]),
        "first run",
    );
    let before = records(&receiver);
    assert_eq!(before.len(), 1000);

    ws.write("data/customers.csv", &bad_data());
    let bad = json(
        backflow(&ws, &["sync", "run", "to_crm", "--json"]),
        "bad run",
    );
    assert_eq!(
        (
            bad["delivered"]["changed"].as_u64(),
            bad["delivered"]["removed"].as_u64(),
            bad["delivered"]["added"].as_u64()
        ),
        (Some(500), Some(20), Some(30))
    );
    let after_bad = records(&receiver);
    let bad_id = bad["run_id"].as_str().unwrap().to_string();

    // Without --yes: the inverse plan, nothing sent.
    let sent_so_far = receiver.received().len();
    let preview = json(
        backflow(&ws, &["runs", "undo", &bad_id, "--json"]),
        "undo preview",
    );
    assert_eq!(
        preview["planned"],
        serde_json::json!({"added": 20, "changed": 500, "removed": 30}),
        "{preview}"
    );
    assert_eq!(preview["conflicts"], 0);
    let sample = &preview["samples"]["changed"][0];
    assert_eq!(
        (
            sample["before"]["plan"].as_str(),
            sample["after"]["plan"].as_str()
        ),
        (Some("WRONG"), Some("pro")),
        "{sample}"
    );
    assert_eq!(
        receiver.received().len(),
        sent_so_far,
        "a preview sends nothing"
    );

    // The undo: the receiver's records are what they were before the bad run.
    let undo = json(
        backflow(&ws, &["runs", "undo", &bad_id, "--yes", "--json"]),
        "undo",
    );
    assert_eq!(undo["status"], "succeeded", "{undo}");
    assert_eq!(undo["undo"]["run_id"], bad_id.as_str());
    assert_eq!(undo["user"], "olga");
    assert_eq!(records(&receiver), before);

    // Undoing the undo restores the bad run's result.
    let undo_id = undo["run_id"].as_str().unwrap().to_string();
    json(
        backflow(&ws, &["runs", "undo", &undo_id, "--yes", "--json"]),
        "undo of the undo",
    );
    assert_eq!(records(&receiver), after_bad);

    // A row's history: inserted by the first run, set WRONG by the bad run, back, then WRONG again.
    let history = json(
        backflow(&ws, &["rows", "history", "to_crm", "7", "--json"]),
        "row history",
    );
    let ops: Vec<(&str, &str)> = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap(),
                e["sent"]["plan"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("updated", "WRONG"),
            ("updated", "pro"),
            ("updated", "WRONG"),
            ("inserted", "pro")
        ],
        "{history}"
    );
    assert_eq!(history["runs"][1]["before"]["plan"], "WRONG");
    assert_eq!(history["current"]["plan"], "WRONG");
    let deleted = json(
        backflow(&ws, &["rows", "history", "to_crm", "990", "--json"]),
        "history of a deleted row",
    );
    let ops: Vec<&str> = deleted["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        ["deleted", "inserted", "deleted", "inserted"],
        "{deleted}"
    );
    assert!(deleted["current"].is_null());

    // The audit log names the undo and who ran it.
    let audit = json(backflow(&ws, &["audit", "--json"]), "audit");
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "run.start"
                && e["user"] == "olga"
                && e["detail"]["undo"]["run_id"] == bad_id.as_str()),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_a_later_run_changed_are_conflicts_left_alone_unless_forced() {
    let receiver = backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverOptions::default(),
    )
    .await
    .unwrap();
    let ws = workspace(&receiver, "");
    json(
        backflow(&ws, &["sync", "run", "to_crm", "--json"]),
        "first run",
    );
    let before = records(&receiver);
    ws.write("data/customers.csv", &bad_data());
    let bad = json(
        backflow(&ws, &["sync", "run", "to_crm", "--json"]),
        "bad run",
    );
    let bad_id = bad["run_id"].as_str().unwrap().to_string();
    // A later run fixes 5 of the rows by hand-picked values.
    let later = bad_data()
        .replace("1,u1@example.com,WRONG", "1,u1@example.com,later")
        .replace("2,u2@example.com,WRONG", "2,u2@example.com,later");
    let later = (3..=5).fold(later, |s, i| {
        s.replace(
            &format!("\n{i},u{i}@example.com,WRONG"),
            &format!("\n{i},u{i}@example.com,later"),
        )
    });
    ws.write("data/customers.csv", &later);
    let fix = json(
        backflow(&ws, &["sync", "run", "to_crm", "--json"]),
        "later run",
    );
    assert_eq!(fix["delivered"]["changed"], 5);

    let preview = json(
        backflow(&ws, &["runs", "undo", &bad_id, "--json"]),
        "undo preview",
    );
    assert_eq!(preview["conflicts"], 5, "{preview}");
    assert_eq!(preview["planned"]["changed"], 495);
    let undo = json(
        backflow(&ws, &["runs", "undo", &bad_id, "--yes", "--json"]),
        "undo",
    );
    assert_eq!(undo["undo"]["conflicts"], 5);
    let now = records(&receiver);
    for id in 1..=5 {
        assert_eq!(
            now[&id]["plan"], "later",
            "row {id} was changed by a later run and is left alone"
        );
    }
    let mut expected = before.clone();
    for id in 1..=5 {
        expected.insert(id, now[&id].clone());
    }
    assert_eq!(now, expected, "every other row is back");

    // Forced: the 5 rows go back too (the rest is already back, so nothing else is sent).
    let forced = json(
        backflow(
            &ws,
            &["runs", "undo", &bad_id, "--yes", "--force", "--json"],
        ),
        "forced undo",
    );
    assert_eq!(forced["delivered"]["changed"], 5, "{forced}");
    assert_eq!(records(&receiver), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undo_killed_midway_is_finished_by_running_it_again() {
    let receiver = backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverOptions {
            latency_ms: 30,
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let ws = workspace(&receiver, "batch_size = 20\nmax_in_flight = 1");
    json(
        backflow(&ws, &["sync", "run", "to_crm", "--json"]),
        "first run",
    );
    let before = records(&receiver);
    ws.write("data/customers.csv", &bad_data());
    let bad = json(
        backflow(&ws, &["sync", "run", "to_crm", "--json"]),
        "bad run",
    );
    let bad_id = bad["run_id"].as_str().unwrap().to_string();

    let requests = receiver.received().len();
    let mut child = Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["runs", "undo", &bad_id, "--yes", "--workspace"])
        .arg(ws.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill -9 once a few batches of the undo were accepted.
    while receiver.received().len() < requests + 5 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the undo finished before it could be killed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_ne!(records(&receiver), before, "the undo was killed midway");

    let again = json(
        backflow(&ws, &["runs", "undo", &bad_id, "--yes", "--json"]),
        "undo again",
    );
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(
        again["undo"]["conflicts"], 0,
        "rows the killed undo already set back are not conflicts"
    );
    assert_eq!(records(&receiver), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_append_run_or_an_unknown_run_cannot_be_undone() {
    let receiver = backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverOptions::default(),
    )
    .await
    .unwrap();
    let ws = workspace(&receiver, "");
    edit(&ws, "mode = \"mirror\"", "mode = \"append\"");
    let run = json(
        backflow(&ws, &["sync", "run", "to_crm", "--json"]),
        "append run",
    );
    let out = backflow(&ws, &["runs", "undo", run["run_id"].as_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("an event cannot be taken back"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = backflow(&ws, &["runs", "undo", "01NOSUCHRUN", "--yes"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no run with id 01NOSUCHRUN"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
