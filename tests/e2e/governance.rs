//! Drafts, change requests, approval policies (real plugins), the run-time gate and the
//! audit log, driven through the `backflow` binary as different users.

use crate::support::*;
use backflow::toolkit::receiver::Receiver;

const TEAM: &str = r#"
[users]
alice = { role = "admin" }
bob = { role = "approver" }
carol = { role = "contributor" }
victor = { role = "viewer" }
"#;

/// CSV → webhook with the team above, `policies` as given, and `email` labelled pii.
fn governed_workspace(
    receiver: &Receiver,
    notify: Option<&Receiver>,
    policies: &str,
) -> TestWorkspace {
    let notify = notify
        .map(|n| {
            format!(
                "[approvals]\nnotify_url = \"{}\"\ngrants.network = [\"{}\"]\n",
                n.url("/slack"),
                n.addr
            )
        })
        .unwrap_or_default();
    // Undos delete what a run inserted: the webhook needs a route for deletes.
    let ws = csv_to_webhook(
        receiver,
        "config.batch_mode = \"array\"\nconfig.methods = { delete = \"DELETE\" }",
        &format!("{TEAM}\n{notify}\n{policies}"),
    );
    // csv_to_webhook appends the team and policies after the sync table; the model gets labels.
    let toml = std::fs::read_to_string(ws.path().join("backflow.toml")).unwrap();
    ws.write(
        "backflow.toml",
        &toml.replace(
            "primary_key = \"id\"\n",
            "primary_key = \"id\"\nlabels = { email = [\"pii\"] }\n",
        ),
    );
    ws
}

const POLICIES: &str =
    "[[policies]]\nplugin = \"policies\"\nconfig = { two_approvers_above_rows = 1000 }\n";

#[tokio::test(flavor = "multi_thread")]
async fn contributor_policy_approver_publish_run_with_every_step_audited() {
    let receiver = receiver().await;
    let slack = crate::support::receiver().await;
    let ws = governed_workspace(&receiver, Some(&slack), POLICIES);

    // Nothing is published: runs refuse; drafts plan.
    let refused = backflow_as(&ws, "carol", &["sync", "run", "to_hook"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("nothing is published yet"),
        "{}",
        refused.stderr
    );
    let plan = ok(
        backflow_as(
            &ws,
            "carol",
            &["sync", "plan", "to_hook", "--draft", "--json"],
        ),
        "plan --draft",
    )
    .json();
    assert_eq!(plan["planned"]["added"], 8);
    // Who may do what.
    let unknown = backflow_as(&ws, "mallory", &["change", "submit"]);
    assert!(
        unknown.stderr.contains("unknown user \"mallory\""),
        "{}",
        unknown.stderr
    );
    let viewer = backflow_as(&ws, "victor", &["change", "submit", "-m", "x"]);
    assert!(
        viewer
            .stderr
            .contains("victor is a viewer and may not submit changes"),
        "{}",
        viewer.stderr
    );

    // The diff against nothing published: everything is added; the sync's dry run sends 8.
    let diff = ok(backflow_as(&ws, "carol", &["diff", "--json"]), "diff").json();
    assert!(
        diff["entities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "syncs" && e["name"] == "to_hook" && e["change"] == "added"),
        "{diff}"
    );
    assert_eq!(diff["syncs"][0]["added"], 8);
    assert_eq!(
        diff["syncs"][0]["column_labels"],
        serde_json::json!(["pii"])
    );

    // Carol submits; the policy sees the pii label and asks for an admin.
    let change = ok(
        backflow_as(
            &ws,
            "carol",
            &["change", "submit", "-m", "first sync to the CRM", "--json"],
        ),
        "submit",
    )
    .json();
    assert_eq!(change["id"], 1);
    assert_eq!(change["status"], "pending");
    assert_eq!(
        change["requirements"][0]["roles"],
        serde_json::json!(["admin"]),
        "{change}"
    );
    assert!(change["requirements"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("pii"));
    // The notification went out, Slack-shaped.
    let note = slack.received();
    assert_eq!(note.len(), 1);
    assert!(
        note[0].body["text"]
            .as_str()
            .unwrap()
            .contains("change #1 by carol needs approval"),
        "{:?}",
        note[0].body
    );

    // Carol cannot approve (her role), Bob can but is not an admin, Alice completes it.
    let own = backflow_as(&ws, "carol", &["change", "approve", "1"]);
    assert!(
        own.stderr
            .contains("carol is a contributor and may not approve changes"),
        "{}",
        own.stderr
    );
    let publish_early = backflow_as(&ws, "carol", &["change", "publish", "1"]);
    assert!(
        publish_early.stderr.contains("not approved yet") && publish_early.stderr.contains("admin"),
        "{}",
        publish_early.stderr
    );
    let bob = ok(
        backflow_as(
            &ws,
            "bob",
            &["change", "approve", "1", "--comment", "looks right"],
        ),
        "bob approves",
    );
    assert!(
        bob.stdout.contains("now pending")
            && bob.stdout.contains("still needs 1 approval(s) from admin"),
        "{}",
        bob.stdout
    );
    let alice = ok(
        backflow_as(&ws, "alice", &["change", "approve", "1"]),
        "alice approves",
    );
    assert!(alice.stdout.contains("now approved"), "{}", alice.stdout);
    ok(
        backflow_as(&ws, "carol", &["change", "publish", "1"]),
        "publish",
    );

    // Runs use the published configuration.
    let run = ok(
        backflow_as(&ws, "carol", &["sync", "run", "to_hook", "--json"]),
        "run",
    )
    .json();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(receiver.rows(), 8);
    // The record names the hash of every policy the gate asked, as it does for the other plugins.
    let policies = run["plugins"]["policies"]
        .as_object()
        .expect("policy hashes in the run record");
    assert!(
        !policies.is_empty()
            && policies
                .values()
                .all(|h| h.as_str().is_some_and(|h| h.len() == 64)),
        "{run}"
    );

    // Carol changes the mapping in her working copy: runs still use what was published.
    edit(
        &ws,
        "[syncs.to_hook]\n",
        "[syncs.to_hook]\nbatch_size = 3\n",
    );
    let diff = ok(backflow_as(&ws, "victor", &["diff"]), "diff");
    assert!(
        diff.stdout.contains("modified  syncs to_hook") && diff.stdout.contains("+batch_size = 3"),
        "{}",
        diff.stdout
    );

    // A stale approval: approved, then edited again before publishing.
    let change2 = ok(
        backflow_as(
            &ws,
            "carol",
            &["change", "submit", "-m", "smaller batches", "--json"],
        ),
        "submit 2",
    )
    .json();
    assert_eq!(change2["id"], 2);
    assert!(change2["diff"]["entities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "to_hook" && e["change"] == "modified"));
    ok(
        backflow_as(&ws, "alice", &["change", "approve", "2"]),
        "approve 2",
    );
    edit(&ws, "batch_size = 3\n", "batch_size = 4\n");
    let stale = backflow_as(&ws, "carol", &["change", "publish", "2"]);
    assert_ne!(stale.code, 0);
    assert!(
        stale
            .stderr
            .contains("the working copy changed after change #2 was reviewed")
            && stale.stderr.contains("submit it again"),
        "{}",
        stale.stderr
    );

    // Self-approval is refused: Alice submits and cannot approve her own change.
    let change3 = ok(
        backflow_as(
            &ws,
            "alice",
            &["change", "submit", "-m", "batch 4", "--json"],
        ),
        "submit 3",
    )
    .json();
    let selfish = backflow_as(
        &ws,
        "alice",
        &["change", "approve", &change3["id"].to_string()],
    );
    assert!(
        selfish
            .stderr
            .contains("alice cannot approve their own change #3"),
        "{}",
        selfish.stderr
    );
    // Rejection needs a comment and ends the request.
    let rejected = ok(
        backflow_as(
            &ws,
            "bob",
            &["change", "reject", "3", "--comment", "not now"],
        ),
        "reject",
    );
    assert!(rejected.stdout.contains("now rejected"));
    let list = ok(
        backflow_as(&ws, "victor", &["change", "list", "--json"]),
        "list",
    )
    .json();
    let statuses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["rejected", "approved", "published"]);

    // The audit log holds every step, in order, and its hash chain verifies.
    let audit = ok(backflow_as(&ws, "victor", &["audit", "--json"]), "audit").json();
    let steps: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["user"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("change.submit", "carol"),
        ("change.approve", "bob"),
        ("change.approve", "alice"),
        ("change.publish", "carol"),
        ("run.start", "carol"),
        ("change.submit", "carol"),
        ("change.approve", "alice"),
        ("change.submit", "alice"),
        ("change.reject", "bob"),
    ];
    assert_eq!(
        steps,
        expected
            .iter()
            .map(|(a, u)| (a.to_string(), u.to_string()))
            .collect::<Vec<_>>()
    );
    let seqs: Vec<u64> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
    let publish = &audit[3];
    assert_eq!(publish["config_hash"], change["config_hash"]);
    let verified = ok(backflow_as(&ws, "victor", &["audit", "--verify"]), "verify");
    assert!(verified.stdout.contains("verified: 9 entries"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_that_traps_rejects_the_change_fail_closed() {
    let receiver = receiver().await;
    let ws = governed_workspace(
        &receiver,
        None,
        "[[policies]]\nplugin = \"fixture-policy\"\nconfig = { trap = true }\n",
    );
    let change = ok(
        backflow_as(&ws, "carol", &["change", "submit", "-m", "x", "--json"]),
        "submit",
    )
    .json();
    assert_eq!(change["status"], "rejected", "{change}");
    let reason = change["policies"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("fail closed") && reason.contains("fixture-policy"),
        "{reason}"
    );
    let publish = backflow_as(&ws, "alice", &["change", "publish", "1"]);
    assert!(
        publish.stderr.contains("change #1 is rejected"),
        "{}",
        publish.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_policy_from_examples_rejects_changes_to_a_frozen_destination() {
    let receiver = receiver().await;
    let ws = governed_workspace(&receiver, None, "[[policies]]\nplugin = \"change-freeze-policy\"\nconfig = { frozen = [\"hook\"], reason = \"quarter-end freeze\" }\n");
    let change = ok(
        backflow_as(&ws, "alice", &["change", "submit", "--json"]),
        "submit",
    )
    .json();
    assert_eq!(change["status"], "rejected");
    assert!(
        change["policies"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("quarter-end freeze: to_hook → hook"),
        "{change}"
    );
}

/// Publishes the working copy: Carol submits, Alice approves, Carol publishes.
fn publish_as_team(ws: &TestWorkspace) {
    let change = ok(
        backflow_as(ws, "carol", &["change", "submit", "-m", "setup", "--json"]),
        "submit",
    )
    .json();
    let id = change["id"].to_string();
    if change["status"] == "pending" {
        ok(
            backflow_as(ws, "alice", &["change", "approve", &id]),
            "approve",
        );
    }
    ok(
        backflow_as(ws, "carol", &["change", "publish", &id]),
        "publish",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_gate_holds_a_large_plan_then_delivers_exactly_the_reviewed_plan() {
    let receiver = receiver().await;
    let ws = governed_workspace(
        &receiver,
        None,
        "[[policies]]\nplugin = \"policies\"\nconfig = { run_approval_above_rows = 5 }\n",
    );
    publish_as_team(&ws);

    // 8 rows > 5: held, nothing sent.
    let held = backflow_as(&ws, "carol", &["sync", "run", "to_hook", "--json"]);
    assert_eq!(held.code, 4, "{}", held.stderr);
    let held = held.json();
    assert_eq!(held["status"], "awaiting_approval");
    assert_eq!(receiver.rows(), 0);
    let run_id = held["run_id"].as_str().unwrap().to_string();

    // The data moves before anyone approves: the approval covers the old plan only, so the
    // run plans again and is held again.
    ws.write(
        "data/customers.csv",
        &format!("{CUSTOMERS_CSV}9,new@example.com,New Person,free,0.00,2024-07-01\n"),
    );
    let again = backflow_as(&ws, "bob", &["runs", "approve", &run_id, "--json"]);
    assert_eq!(again.code, 4, "{}\n{}", again.stdout, again.stderr);
    let again = again.json();
    assert_eq!(again["status"], "awaiting_approval");
    assert_eq!(receiver.rows(), 0);
    let second = again["run_id"].as_str().unwrap().to_string();
    let twice = backflow_as(&ws, "bob", &["runs", "approve", &run_id]);
    assert!(
        twice.stderr.contains("already approved"),
        "{}",
        twice.stderr
    );

    // Carol (a contributor) cannot approve; Bob approves the new plan and exactly it is sent.
    let own = backflow_as(&ws, "carol", &["runs", "approve", &second]);
    assert!(
        own.stderr
            .contains("carol is a contributor and may not approve runs"),
        "{}",
        own.stderr
    );
    let done = ok(
        backflow_as(&ws, "bob", &["runs", "approve", &second, "--json"]),
        "approve run",
    )
    .json();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["delivered"]["added"], 9);
    assert_eq!(receiver.rows(), 9);

    // Whoever started a held run cannot approve it, admin or not.
    let bigger: String = (10..20)
        .map(|i| format!("{i},p{i}@example.com,P {i},free,0.00,2024-07-01\n"))
        .collect();
    ws.write(
        "data/customers.csv",
        &format!("{CUSTOMERS_CSV}9,new@example.com,New Person,free,0.00,2024-07-01\n{bigger}"),
    );
    let held = backflow_as(&ws, "alice", &["sync", "run", "to_hook", "--json"]).json();
    assert_eq!(held["status"], "awaiting_approval");
    let third = held["run_id"].as_str().unwrap().to_string();
    let selfish = backflow_as(&ws, "alice", &["runs", "approve", &third]);
    assert!(
        selfish.stderr.contains("alice started run")
            && selfish.stderr.contains("cannot approve it"),
        "{}",
        selfish.stderr
    );
    ok(
        backflow_as(&ws, "bob", &["runs", "approve", &third]),
        "bob approves alice's run",
    );
    assert_eq!(receiver.rows(), 19);

    let audit = ok(backflow_as(&ws, "alice", &["audit", "--json"]), "audit").json();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions[3..],
        [
            "run.start",
            "run.awaiting_approval", // carol's run: held
            "run.approve",
            "run.start",
            "run.superseded", // bob approves; the data moved: the new plan supersedes it
            "run.awaiting_approval", // and is held again
            "run.approve",
            "run.start",
            "run.release", // bob approves the new plan: delivered
            "run.start",
            "run.awaiting_approval",
            "run.approve",
            "run.start",
            "run.release", // alice's run, bob's approval
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_approval_request_expires() {
    let receiver = receiver().await;
    let ws = governed_workspace(&receiver, None, "[approvals]\nrun_request_ttl_minutes = 0\n[[policies]]\nplugin = \"policies\"\nconfig = { run_approval_above_rows = 5 }\n");
    publish_as_team(&ws);
    let held = backflow_as(&ws, "carol", &["sync", "run", "to_hook", "--json"]).json();
    assert_eq!(held["status"], "awaiting_approval");
    let expired = backflow_as(
        &ws,
        "bob",
        &["runs", "approve", held["run_id"].as_str().unwrap()],
    );
    assert!(
        expired.stderr.contains("expired") && expired.stderr.contains("run the sync again"),
        "{}",
        expired.stderr
    );
    assert_eq!(receiver.rows(), 0);
    // Reading needs a known user too.
    let anonymous = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["runs", "--workspace"])
        .arg(ws.path())
        .env_remove("BACKFLOW_USER")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&anonymous.stderr)
        .contains("say who you are with --as USER or BACKFLOW_USER"));
}

#[tokio::test(flavor = "multi_thread")]
async fn working_copy_edits_cannot_grant_roles_or_staging() {
    let receiver = receiver().await;
    let ws = governed_workspace(&receiver, None, "[[policies]]\nplugin = \"policies\"\nconfig = { default_approvals = 0, sensitive_needs_admin = false }\n");
    publish_as_team(&ws);
    // Carol makes herself an admin in her working copy: she is still a contributor...
    edit(
        &ws,
        "carol = { role = \"contributor\" }",
        "carol = { role = \"admin\" }",
    );
    let approve = backflow_as(&ws, "carol", &["change", "approve", "1"]);
    assert!(
        approve.stderr.contains("carol is a contributor"),
        "{}",
        approve.stderr
    );
    // ...and the change request needs an admin other than her, whatever the policies say.
    let change = ok(
        backflow_as(
            &ws,
            "carol",
            &["change", "submit", "-m", "promote me", "--json"],
        ),
        "submit",
    )
    .json();
    assert_eq!(change["status"], "pending", "{change}");
    assert!(
        change["requirements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["policy"] == "built-in"
                && r["reason"]
                    .as_str()
                    .unwrap()
                    .contains("modified users carol")),
        "{change}"
    );
    let bob = ok(
        backflow_as(
            &ws,
            "bob",
            &["change", "approve", &change["id"].to_string()],
        ),
        "bob",
    );
    assert!(bob.stdout.contains("now pending"), "{}", bob.stdout);
    // Marking the production destination staging in the working copy does not make drafts run.
    edit(
        &ws,
        "[destinations.hook]\n",
        "[destinations.hook]\nstaging = true\n",
    );
    let draft = backflow_as(&ws, "carol", &["sync", "run", "to_hook", "--draft"]);
    assert!(
        draft
            .stderr
            .contains("not a (published) staging destination"),
        "{}",
        draft.stderr
    );
    let test = backflow_as(
        &ws,
        "carol",
        &["sync", "test", "to_hook", "--row", "1", "--draft"],
    );
    assert!(
        test.stderr
            .contains("not a (published) staging destination"),
        "{}",
        test.stderr
    );
    assert_eq!(receiver.rows(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_are_pinned_to_what_was_reviewed() {
    let receiver = receiver().await;
    let ws = governed_workspace(
        &receiver,
        None,
        "[[policies]]\nplugin = \"local/policies.wasm\"\n",
    );
    std::fs::create_dir_all(ws.path().join("local")).unwrap();
    let copy = |from: &str, to: &str| {
        std::fs::copy(plugin(from), ws.path().join("local").join(to)).unwrap()
    };
    copy("webhook.wasm", "webhook.wasm");
    copy("policies.wasm", "policies.wasm");
    edit(
        &ws,
        "plugin = \"webhook\"",
        "plugin = \"local/webhook.wasm\"",
    );

    // A plugin file replaced between review and publish: refused.
    let change = ok(
        backflow_as(&ws, "carol", &["change", "submit", "--json"]),
        "submit",
    )
    .json();
    ok(
        backflow_as(&ws, "alice", &["change", "approve", "1"]),
        "approve",
    );
    copy("noop_destination.wasm", "webhook.wasm");
    let publish = backflow_as(&ws, "carol", &["change", "publish", "1"]);
    assert!(
        publish
            .stderr
            .contains("plugin local/webhook.wasm changed after change #1 was reviewed"),
        "{}",
        publish.stderr
    );
    copy("webhook.wasm", "webhook.wasm");
    ok(
        backflow_as(&ws, "carol", &["change", "publish", "1"]),
        "publish",
    );
    let pinned: Vec<&String> = change["plugin_hashes"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        pinned,
        ["file-source", "local/policies.wasm", "local/webhook.wasm"]
    );

    // Replaced after publishing: runs refuse the unreviewed destination...
    copy("noop_destination.wasm", "webhook.wasm");
    let run = backflow_as(&ws, "carol", &["sync", "run", "to_hook"]);
    assert!(
        run.stderr.contains("plugin local/webhook.wasm")
            && run
                .stderr
                .contains("changed since the configuration was published"),
        "{}",
        run.stderr
    );
    assert_eq!(receiver.rows(), 0);
    // ...and a swapped policy fails closed.
    copy("webhook.wasm", "webhook.wasm");
    copy("fixture_policy.wasm", "policies.wasm");
    edit(
        &ws,
        "[syncs.to_hook]\n",
        "[syncs.to_hook]\nbatch_size = 2\n",
    );
    let change = ok(
        backflow_as(&ws, "carol", &["change", "submit", "--json"]),
        "submit 2",
    )
    .json();
    assert_eq!(change["status"], "rejected", "{change}");
    assert!(
        change["policies"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("changed since the configuration was published"),
        "{change}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drafts_run_only_against_staging_destinations() {
    let receiver = receiver().await;
    let ws = governed_workspace(&receiver, None, "");
    let refused = backflow_as(&ws, "carol", &["sync", "run", "to_hook", "--draft"]);
    assert!(
        refused
            .stderr
            .contains("is not a (published) staging destination"),
        "{}",
        refused.stderr
    );
    edit(
        &ws,
        "[destinations.hook]\n",
        "[destinations.hook]\nstaging = true\n",
    );
    let run = ok(
        backflow_as(
            &ws,
            "carol",
            &["sync", "run", "to_hook", "--draft", "--json"],
        ),
        "draft run",
    )
    .json();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(receiver.rows(), 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undo_is_a_run_like_any_other_held_by_a_policy_until_approved() {
    let receiver = receiver().await;
    let ws = governed_workspace(
        &receiver,
        None,
        "[[policies]]\nplugin = \"policies\"\nconfig = { run_approval_above_rows = 5 }\n",
    );
    publish_as_team(&ws);
    let held = backflow_as(&ws, "carol", &["sync", "run", "to_hook", "--json"]).json();
    ok(
        backflow_as(
            &ws,
            "bob",
            &["runs", "approve", held["run_id"].as_str().unwrap()],
        ),
        "approve the first run",
    );
    assert_eq!(receiver.rows(), 8);
    let first = backflow_as(&ws, "bob", &["runs", "--json"]).json()[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();

    // A contributor may not undo; an approver's undo of 8 inserts (8 deletes > 5) is held.
    let refused = backflow_as(&ws, "carol", &["runs", "undo", &first, "--yes"]);
    assert!(
        refused
            .stderr
            .contains("carol is a contributor and may not undo runs"),
        "{}",
        refused.stderr
    );
    let undo = backflow_as(&ws, "bob", &["runs", "undo", &first, "--yes", "--json"]);
    assert_eq!(undo.code, 4, "{}\n{}", undo.stdout, undo.stderr);
    let undo = undo.json();
    assert_eq!(undo["status"], "awaiting_approval");
    let requests = receiver.received().len();

    // Alice approves: exactly the undo is delivered (8 deletes), recorded as an undo of the first run.
    let done = ok(
        backflow_as(
            &ws,
            "alice",
            &[
                "runs",
                "approve",
                undo["run_id"].as_str().unwrap(),
                "--json",
            ],
        ),
        "approve the undo",
    )
    .json();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["delivered"]["removed"], 8);
    assert_eq!(done["undo"]["run_id"], first.as_str());
    // The receiver saw the 8 deletes: DELETE requests carrying exactly the keys of the rows
    // the first run inserted, and nothing else.
    let sent = &receiver.received()[requests..];
    assert!(!sent.is_empty());
    assert!(
        sent.iter().all(|r| r.method == "DELETE" && r.status == 200),
        "{sent:?}"
    );
    let mut deleted: Vec<i64> = sent
        .iter()
        .flat_map(|r| {
            r.body
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![r.body.clone()])
        })
        .map(|row| {
            row["id"]
                .as_i64()
                .or_else(|| row["id"].as_str().and_then(|s| s.parse().ok()))
                .unwrap_or_else(|| panic!("a delete without its key: {row}"))
        })
        .collect();
    deleted.sort();
    assert_eq!(deleted, (1..=8).collect::<Vec<_>>(), "{sent:?}");
}

/// Submits the working copy as carol; returns the built-in requirement reasons.
fn built_in_reasons(ws: &TestWorkspace, message: &str) -> (serde_json::Value, Vec<String>) {
    let change = ok(
        backflow_as(ws, "carol", &["change", "submit", "-m", message, "--json"]),
        "submit",
    )
    .json();
    let reasons = change["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["policy"] == "built-in" && r["roles"] == serde_json::json!(["admin"]))
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    (change, reasons)
}

#[tokio::test(flavor = "multi_thread")]
async fn renames_twin_policies_new_destinations_and_grants_need_an_admin_whatever_the_policies_say()
{
    let receiver = receiver().await;
    // Policies that would approve anything on their own; two entries of one plugin.
    let policies = "[[policies]]\nplugin = \"policies\"\nconfig = { default_approvals = 0, sensitive_needs_admin = false }\n[[policies]]\nplugin = \"policies\"\nconfig = { default_approvals = 0, sensitive_needs_admin = false, mirror_needs_admin = false }\n";
    let ws = governed_workspace(&receiver, None, policies);
    publish_as_team(&ws);
    let published = std::fs::read_to_string(ws.path().join("backflow.toml")).unwrap();
    let reset = || ws.write("backflow.toml", &published);

    // Renaming the sync while dropping the pii label.
    edit(&ws, "[syncs.to_hook]", "[syncs.to_crm]");
    edit(&ws, "labels = { email = [\"pii\"] }\n", "");
    let (change, reasons) = built_in_reasons(&ws, "rename");
    assert_eq!(change["status"], "pending", "{change}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("removes column labels (email:pii)")),
        "{reasons:?}"
    );
    let bob = ok(
        backflow_as(
            &ws,
            "bob",
            &["change", "approve", &change["id"].to_string()],
        ),
        "bob approves",
    );
    assert!(
        bob.stdout.contains("now pending"),
        "an approver is not enough: {}",
        bob.stdout
    );
    reset();

    // An edit to the second of two entries of the same policy plugin is a policy change.
    edit(
        &ws,
        "mirror_needs_admin = false",
        "mirror_needs_admin = true",
    );
    let (_, reasons) = built_in_reasons(&ws, "tighten the second policy");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("modified policies policies[1]")),
        "{reasons:?}"
    );
    reset();

    // A new destination, staging or not.
    ws.write("backflow.toml", &format!("{published}\n[destinations.other]\nplugin = \"webhook\"\nstaging = true\nconfig.url = \"{}\"\ngrants.network = [\"{}\"]\n", receiver.url("/other"), receiver.addr));
    let (_, reasons) = built_in_reasons(&ws, "a staging destination");
    assert!(
        reasons.iter().any(
            |r| r.contains("adds destination other") && r.contains("destinations.other.grants")
        ),
        "{reasons:?}"
    );
    reset();

    // Any grants change.
    edit(
        &ws,
        "grants.files = [\"data\"]",
        "grants.files = [\"data\", \"/etc\"]",
    );
    let (_, reasons) = built_in_reasons(&ws, "read more");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("changes sources.files.grants")),
        "{reasons:?}"
    );
    // And a draft does not run with working-copy grants (nor anywhere but staging).
    let draft = backflow_as(&ws, "carol", &["sync", "run", "to_hook", "--draft"]);
    assert!(
        draft
            .stderr
            .contains("not a (published) staging destination")
            || draft.stderr.contains("grants that are not published"),
        "{}",
        draft.stderr
    );
    assert_eq!(receiver.rows(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draft_runs_only_with_published_grants() {
    let receiver = receiver().await;
    let ws = governed_workspace(&receiver, None, "[[policies]]\nplugin = \"policies\"\nconfig = { default_approvals = 0, sensitive_needs_admin = false }\n");
    edit(
        &ws,
        "[destinations.hook]\n",
        "[destinations.hook]\nstaging = true\n",
    );
    publish_as_team(&ws);
    // Published as staging: a draft may run against it...
    ok(
        backflow_as(&ws, "carol", &["sync", "run", "to_hook", "--draft"]),
        "draft run",
    );
    // ...but not with a source granted more in the working copy.
    edit(
        &ws,
        "grants.files = [\"data\"]",
        "grants.files = [\"data\", \"/etc\"]",
    );
    let draft = backflow_as(&ws, "carol", &["sync", "run", "to_hook", "--draft"]);
    assert!(
        draft
            .stderr
            .contains("reads source files with grants that are not published"),
        "{}",
        draft.stderr
    );
}
