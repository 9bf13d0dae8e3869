//! Reviews that cannot be bypassed (issue 35): a swapped plugin build shows in every view of
//! a change and needs an admin; the built-in rules hold with a policy that approves; the
//! Markdown report a pull request carries; `change verify` for CI.

use crate::serve_support::{token, Api, Service};
use crate::support::*;
use backflow::toolkit::receiver::Receiver;

const TEAM: &str = r#"
[users]
alice = { role = "admin" }
bob = { role = "approver" }
carol = { role = "contributor" }
victor = { role = "viewer" }
"#;

const CHECKS: &str = r#"
[[syncs.to_hook.checks]]
name = "blast"
plugin = "checks"
config = { check = "max_changes", change = "removed", max_percent = 10 }
[[syncs.to_hook.checks]]
name = "emails"
plugin = "checks"
config = { check = "not_null", columns = ["email"] }
"#;

/// CSV → webhook (the webhook from a local copy, `local/webhook.wasm`) with the team, two
/// checks and `policies`.
fn workspace(receiver: &Receiver, policies: &str) -> TestWorkspace {
    let ws = csv_to_webhook(receiver, "", &format!("{CHECKS}\n{TEAM}\n{policies}"));
    std::fs::create_dir_all(ws.path().join("local")).unwrap();
    std::fs::copy(plugin("webhook.wasm"), ws.path().join("local/webhook.wasm")).unwrap();
    edit(
        &ws,
        "plugin = \"webhook\"",
        "plugin = \"local/webhook.wasm\"",
    );
    ws
}

/// Carol submits, Alice approves, Carol publishes; returns the change's id.
fn publish_as_team(ws: &TestWorkspace) -> String {
    let change = ok(
        backflow_as(ws, "carol", &["change", "submit", "-m", "setup", "--json"]),
        "submit",
    )
    .json();
    let id = change["id"].to_string();
    ok(
        backflow_as(ws, "alice", &["change", "approve", &id]),
        "approve",
    );
    ok(
        backflow_as(ws, "carol", &["change", "publish", &id]),
        "publish",
    );
    id
}

fn rules(change: &serde_json::Value) -> Vec<String> {
    change["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["rule"].as_str().map(str::to_string))
        .collect()
}

/// Signs in to the UI with `token`; returns the page at `path`.
async fn ui_page(svc: &Service, token: &str, path: &str) -> String {
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
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {}", login.status()))
        .to_string();
    let page = http
        .get(svc.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    page.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_swapped_plugin_build_shows_in_diff_change_api_and_ui_and_needs_an_admin() {
    let receiver = receiver().await;
    let ws = workspace(&receiver, "");
    publish_as_team(&ws);
    // Another build of a destination in place of the webhook, then an unrelated change.
    std::fs::copy(
        plugin("noop_destination.wasm"),
        ws.path().join("local/webhook.wasm"),
    )
    .unwrap();
    edit(
        &ws,
        "[syncs.to_hook]\n",
        "[syncs.to_hook]\nbatch_size = 2\n",
    );

    let diff = ok(backflow_as(&ws, "carol", &["diff"]), "diff");
    assert!(
        diff.stdout
            .contains("plugin build local/webhook.wasm sha256 "),
        "{}",
        diff.stdout
    );
    let diff_json = ok(backflow_as(&ws, "carol", &["diff", "--json"]), "diff").json();
    let swapped = &diff_json["plugins"][0];
    assert_eq!(swapped["reference"], "local/webhook.wasm", "{diff_json}");
    assert_ne!(swapped["old_hash"], swapped["new_hash"]);
    assert!(swapped["old_size"].as_u64().unwrap() > 0, "{swapped}");
    let spec = swapped["spec_changes"].to_string();
    assert!(spec.contains("name webhook → "), "{spec}");

    let change = ok(
        backflow_as(
            &ws,
            "carol",
            &["change", "submit", "-m", "bigger batches", "--json"],
        ),
        "submit",
    )
    .json();
    let id = change["id"].to_string();
    assert!(
        rules(&change).contains(&"plugin-code".to_string()),
        "{change}"
    );
    let show = ok(backflow_as(&ws, "victor", &["change", "show", &id]), "show");
    assert!(
        show.stdout
            .contains("plugin build local/webhook.wasm sha256")
            && show.stdout.contains("name webhook → "),
        "{}",
        show.stdout
    );
    let shown = ok(
        backflow_as(&ws, "victor", &["change", "show", &id, "--json"]),
        "show --json",
    )
    .json();
    assert_eq!(shown["diff"]["plugins"][0], *swapped);

    // An approver is not enough: plugin code needs an admin.
    let bob = ok(backflow_as(&ws, "bob", &["change", "approve", &id]), "bob");
    assert!(bob.stdout.contains("now pending"), "{}", bob.stdout);
    assert!(
        bob.stdout.contains("runs new plugin code"),
        "{}",
        bob.stdout
    );

    // The API and the UI show the old and new hash.
    let viewer_token = token(&ws, "alice", "victor");
    let svc = Service::start(&ws);
    let (status, api) = Api::new(Some(&viewer_token))
        .get(svc.url(&format!("/api/v1/changes/{id}")))
        .await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(api["diff"]["plugins"][0], *swapped);
    let page = ui_page(&svc, &viewer_token, &format!("/ui/changes/{id}")).await;
    let old = swapped["old_hash"].as_str().unwrap();
    let new = swapped["new_hash"].as_str().unwrap();
    assert!(
        page.contains("plugin-builds") && page.contains(&old[..12]) && page.contains(&new[..12]),
        "{page}"
    );
    drop(svc);

    let alice = ok(
        backflow_as(&ws, "alice", &["change", "approve", &id]),
        "alice",
    );
    assert!(alice.stdout.contains("now approved"), "{}", alice.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_freeze_only_workspace_still_needs_another_reviewer_for_removing_checks_and_mirror() {
    let receiver = receiver().await;
    // The README's change-freeze policy, freezing another destination: it approves.
    let ws = workspace(
        &receiver,
        "[[policies]]\nplugin = \"change-freeze-policy\"\nconfig = { frozen = [\"elsewhere\"], reason = \"quarter-end freeze\" }\n",
    );
    publish_as_team(&ws);
    let published = std::fs::read_to_string(ws.path().join("backflow.toml")).unwrap();
    ws.write(
        "backflow.toml",
        &published
            .replace(CHECKS, "")
            .replace("[syncs.to_hook]\n", "[syncs.to_hook]\nmode = \"mirror\"\n"),
    );
    let change = ok(
        backflow_as(
            &ws,
            "carol",
            &["change", "submit", "-m", "cleanup", "--json"],
        ),
        "submit",
    )
    .json();
    assert_eq!(change["status"], "pending", "{change}");
    assert_eq!(change["policies"][0]["decision"], "approve", "{change}");
    let rules = rules(&change);
    for rule in ["another-reviewer", "checks", "deletes"] {
        assert!(rules.contains(&rule.to_string()), "{rule}: {change}");
    }
    let reasons = change["requirements"].to_string();
    assert!(
        reasons.contains("removes check blast of sync to_hook")
            && reasons.contains("switches sync to_hook from upsert to mirror"),
        "{reasons}"
    );
    let id = change["id"].to_string();
    let selfish = backflow_as(&ws, "carol", &["change", "approve", &id]);
    assert_ne!(selfish.code, 0, "{}", selfish.stdout);
    let publish = backflow_as(&ws, "carol", &["change", "publish", &id]);
    assert!(
        publish.stderr.contains("is not approved yet"),
        "{}",
        publish.stderr
    );
    ok(backflow_as(&ws, "bob", &["change", "approve", &id]), "bob");
    ok(
        backflow_as(&ws, "alice", &["change", "approve", &id]),
        "alice",
    );
    ok(
        backflow_as(&ws, "carol", &["change", "publish", &id]),
        "publish once reviewed",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_markdown_report_holds_counts_samples_checks_and_open_requirements() {
    let receiver = receiver().await;
    let ws = workspace(&receiver, "");
    publish_as_team(&ws);
    ok(
        backflow_as(&ws, "alice", &["sync", "run", "to_hook"]),
        "run",
    );
    // Change Ada's plan and add a customer: one added and one changed row.
    let csv = CUSTOMERS_CSV
        .replace("Ada Lovelace,enterprise", "Ada Lovelace,pro")
        .to_string()
        + "9,new@example.com,New Person,free,0.00,2024-07-01\n";
    ws.write("data/customers.csv", &csv);
    edit(
        &ws,
        "[syncs.to_hook]\n",
        "[syncs.to_hook]\nbatch_size = 3\n",
    );
    let diff = ok(
        backflow_as(&ws, "carol", &["diff", "--format", "markdown"]),
        "diff markdown",
    );
    assert!(
        diff.stdout
            .contains("| to_hook | upsert | hook | 1 | 1 | 0 |"),
        "{}",
        diff.stdout
    );
    let change = ok(
        backflow_as(
            &ws,
            "carol",
            &["change", "submit", "-m", "batches", "--json"],
        ),
        "submit",
    )
    .json();
    let md = ok(
        backflow_as(
            &ws,
            "victor",
            &[
                "change",
                "show",
                &change["id"].to_string(),
                "--format",
                "markdown",
            ],
        ),
        "show markdown",
    )
    .stdout;
    for expected in [
        "## backflow change #2: batches",
        "| to_hook | upsert | hook | 1 | 1 | 0 |",
        "added: {",
        "new@example.com",
        "\"before\":{",
        "Ada Lovelace",
        "| blast | fail | pass |",
        "- [ ] 1 approval(s) from approver or admin (built-in: every change is reviewed",
        "```diff\n--- published/backflow.toml",
        "+batch_size = 3",
    ] {
        assert!(md.contains(expected), "{expected:?} not in:\n{md}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn change_verify_passes_only_on_the_approved_or_published_working_copy() {
    let receiver = receiver().await;
    let ws = workspace(&receiver, "");
    let nothing = backflow_as(&ws, "victor", &["change", "verify"]);
    assert_eq!(nothing.code, 1, "{}", nothing.stderr);
    publish_as_team(&ws);
    ok(
        backflow_as(&ws, "victor", &["change", "verify", "--published"]),
        "verify published",
    );

    edit(
        &ws,
        "[syncs.to_hook]\n",
        "[syncs.to_hook]\nbatch_size = 2\n",
    );
    let change = ok(
        backflow_as(
            &ws,
            "carol",
            &["change", "submit", "-m", "batches", "--json"],
        ),
        "submit",
    )
    .json();
    let id = change["id"].to_string();
    let pending = backflow_as(&ws, "victor", &["change", "verify"]);
    assert_eq!(pending.code, 1, "a pending change is not approved");
    assert!(
        pending.stderr.contains("modified backflow.toml"),
        "{}",
        pending.stderr
    );
    ok(
        backflow_as(&ws, "bob", &["change", "approve", &id]),
        "approve",
    );
    let verified = ok(backflow_as(&ws, "victor", &["change", "verify"]), "verify");
    assert!(
        verified
            .stdout
            .contains(&format!("change #{id} (approved)")),
        "{}",
        verified.stdout
    );
    let published = backflow_as(&ws, "victor", &["change", "verify", "--published"]);
    assert_eq!(published.code, 1, "not published yet");

    // An edit after approval, or a swapped plugin build: refused, naming what differs.
    edit(&ws, "batch_size = 2", "batch_size = 3");
    let edited = backflow_as(&ws, "victor", &["change", "verify", "--json"]);
    assert_eq!(edited.code, 1);
    let json = edited.json();
    assert_eq!(json["verified"], false);
    assert_eq!(
        json["differences"],
        serde_json::json!(["modified backflow.toml"])
    );
    edit(&ws, "batch_size = 3", "batch_size = 2");
    std::fs::copy(
        plugin("noop_destination.wasm"),
        ws.path().join("local/webhook.wasm"),
    )
    .unwrap();
    let swapped = backflow_as(&ws, "victor", &["change", "verify"]);
    assert_eq!(swapped.code, 1);
    assert!(
        swapped.stderr.contains("plugin local/webhook.wasm sha256"),
        "{}",
        swapped.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_waives_another_reviewer_explicitly_only_once_an_admin_published_it() {
    let receiver = receiver().await;
    let ws = workspace(
        &receiver,
        "[[policies]]\nplugin = \"policies\"\nconfig = { waive_another_reviewer_up_to_rows = 100 }\n",
    );
    // Nothing is published: nobody vouched for the policy, so its waiver does not count.
    let setup = ok(
        backflow_as(&ws, "carol", &["change", "submit", "-m", "setup", "--json"]),
        "submit",
    )
    .json();
    assert_eq!(
        setup["policies"][0]["waive"][0], "another-reviewer",
        "{setup}"
    );
    assert_eq!(setup["status"], "pending", "{setup}");
    let id = setup["id"].to_string();
    ok(
        backflow_as(&ws, "alice", &["change", "approve", &id]),
        "approve",
    );
    ok(
        backflow_as(&ws, "alice", &["change", "publish", &id]),
        "alice publishes",
    );

    // Published by an admin: a small change by carol needs nobody else.
    edit(
        &ws,
        "[syncs.to_hook]\n",
        "[syncs.to_hook]\nbatch_size = 3\n",
    );
    let change = ok(
        backflow_as(
            &ws,
            "carol",
            &["change", "submit", "-m", "smaller batches", "--json"],
        ),
        "submit",
    )
    .json();
    assert_eq!(change["status"], "approved", "{change}");
    let waived = change["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "another-reviewer")
        .unwrap_or_else(|| panic!("the rule stays listed: {change}"));
    assert_eq!(waived["count"], 0, "{waived}");
    assert!(
        waived["reason"]
            .as_str()
            .unwrap()
            .starts_with("waived by policy"),
        "{waived}"
    );
    let id = change["id"].to_string();
    ok(
        backflow_as(&ws, "carol", &["change", "publish", &id]),
        "carol publishes alone",
    );

    // The policy sees the plugin builds a change brings (contract 0.3.0): with a swapped
    // webhook build it waives nothing, whatever the size.
    std::fs::copy(
        plugin("noop_destination.wasm"),
        ws.path().join("local/webhook.wasm"),
    )
    .unwrap();
    edit(&ws, "batch_size = 3\n", "batch_size = 4\n");
    let change = ok(
        backflow_as(
            &ws,
            "carol",
            &["change", "submit", "-m", "new build", "--json"],
        ),
        "submit",
    )
    .json();
    assert_eq!(change["status"], "pending", "{change}");
    assert!(change["policies"][0].get("waive").is_none(), "{change}");
}
