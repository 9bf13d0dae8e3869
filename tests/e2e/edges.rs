//! Issue 35 items 3 to 5: alert secrets only by grant and alert requests through the
//! address checks; identity (tokens bound to a stable user id, expiry, 401s that list no
//! users, approvals that need declared users); the compiled-code cache authenticated.

use crate::serve_support::*;
use crate::support::*;
use backflow::host::PluginHost;

/// A workspace whose only sync fails (its model's file is missing), so every run alerts.
fn failing_workspace(alerts: &str) -> TestWorkspace {
    file_workspace(
        "people",
        "missing.csv",
        &format!(
            "[destinations.noop]\nplugin = \"noop-destination\"\n[syncs.broken]\nmodel = \"people\"\ndestination = \"noop\"\n{alerts}"
        ),
    )
}

#[test]
fn an_alert_url_naming_an_ungranted_env_var_is_refused_at_load_with_the_key_named() {
    let ws =
        failing_workspace("[[alerts]]\nurl = \"https://hooks.example.test/${env.CRM_TOKEN}\"\n");
    let errors = backflow::workspace::Workspace::load(ws.path())
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("alerts[0].url")
            && errors.contains("${env.CRM_TOKEN}")
            && errors.contains("alerts[0].grants.env"),
        "{errors}"
    );
    // Granted, it loads; an alert reads no files.
    let ws = failing_workspace(
        "[[alerts]]\nurl = \"https://hooks.example.test/${env.CRM_TOKEN}\"\ngrants.env = [\"CRM_TOKEN\"]\n",
    );
    ws.load();
    let ws = failing_workspace(
        "[[alerts]]\nurl = \"https://hooks.example.test/\"\ngrants.files = [\"data\"]\n",
    );
    let errors = backflow::workspace::Workspace::load(ws.path())
        .unwrap_err()
        .to_string();
    assert!(errors.contains("alerts[0].grants.files"), "{errors}");
}

/// An alert configured with a loopback address is sent there, with its granted variable
/// expanded, and never through the proxy the environment names.
#[tokio::test(flavor = "multi_thread")]
async fn an_alert_expands_granted_variables_and_ignores_proxies() {
    let hooks = receiver().await;
    let proxy = receiver().await;
    let ws = failing_workspace(&format!(
        "[[alerts]]\nurl = \"{}/${{env.HOOK_PATH}}\"\ngrants.env = [\"HOOK_PATH\"]\n",
        hooks.url("/hooks")
    ));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["sync", "run", "broken", "--workspace"])
        .arg(ws.path())
        .env("RUST_LOG", "warn")
        .env("HOOK_PATH", "secret-path")
        .env("HTTP_PROXY", proxy.url(""))
        .env("http_proxy", proxy.url(""))
        .env("ALL_PROXY", proxy.url(""))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "the run fails");
    let alert = eventually("the alert", async || hooks.received().into_iter().next()).await;
    assert_eq!(alert.path, "/hooks/secret-path");
    assert_eq!(alert.body["outcome"], "failed");
    assert!(
        proxy.received().is_empty(),
        "nothing went through the proxy"
    );
}

const USERS: &str = "[users]\nann = { role = \"admin\" }\nvic = { role = \"contributor\" }\n";

/// Removing `vic` and declaring a new `vic` does not revive the old tokens; a 401 lists no
/// users; an expired token gets 401 "expired"; `token list` shows expiry and last use.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_bound_to_the_user_not_the_name_and_expire() {
    let ws = service_workspace(2, USERS);
    let old_vic = token(&ws, "ann", "vic");
    let brief = ok(
        backflow_as(
            &ws,
            "ann",
            &[
                "token",
                "create",
                "--for",
                "ann",
                "--name",
                "brief",
                "--expires-in",
                "1s",
                "--json",
            ],
        ),
        "token create --expires-in",
    )
    .json();
    let brief = brief["token"].as_str().unwrap().to_string();

    // vic is removed (anyone acting sees it), then declared again.
    edit(&ws, "vic = { role = \"contributor\" }\n", "");
    ok(backflow_as(&ws, "ann", &["token", "list"]), "token list");
    {
        let svc = Service::start(&ws);
        let (status, body) = Api::new(Some(&old_vic))
            .get(svc.url("/api/v1/whoami"))
            .await;
        assert_eq!(status, 401, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(!error.contains("ann"), "a 401 lists no users: {error}");
    }
    edit(
        &ws,
        "[users]\n",
        "[users]\nvic = { role = \"contributor\" }\n",
    );
    let new_vic = token(&ws, "ann", "vic");
    let svc = Service::start(&ws);
    let (status, body) = Api::new(Some(&old_vic))
        .get(svc.url("/api/v1/whoami"))
        .await;
    assert_eq!(
        status, 401,
        "the old vic's token does not act as the new vic: {body}"
    );
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("no longer declared") && !error.contains("ann"),
        "{error}"
    );
    let (status, body) = Api::new(Some(&new_vic))
        .get(svc.url("/api/v1/whoami"))
        .await;
    assert_eq!(status, 200, "{body}");

    let body = eventually("the brief token to expire", async || {
        let (status, body) = Api::new(Some(&brief)).get(svc.url("/api/v1/whoami")).await;
        (status == 401).then_some(body)
    })
    .await;
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    let list = ok(backflow_as(&ws, "ann", &["token", "list"]), "token list");
    assert!(
        list.stdout.contains("EXPIRES") && list.stdout.contains("LAST USED"),
        "{}",
        list.stdout
    );
    let tokens = ok(
        backflow_as(&ws, "ann", &["token", "list", "--json"]),
        "token list",
    )
    .json();
    let new_id = new_vic.split('_').nth(1).unwrap();
    let listed = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == new_id)
        .unwrap();
    assert!(listed["expires_at"].is_string(), "{listed}");
    assert!(listed["last_used_at"].is_string(), "used once: {listed}");
    let bad = backflow_as(&ws, "ann", &["token", "create", "--expires-in", "soon"]);
    assert!(
        bad.stderr.contains("--expires-in \"soon\""),
        "{}",
        bad.stderr
    );
}

/// Without `[users]`, `--as` names anyone: a held run's "needs an approver" cannot be met by
/// such a name, and the refusal says how to declare users.
#[tokio::test(flavor = "multi_thread")]
async fn without_users_a_role_requirement_cannot_be_met_by_an_asserted_name() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(
        &receiver,
        "",
        "[[policies]]\nplugin = \"policies\"\nconfig = { run_approval_above_rows = 1 }\n",
    );
    let held = backflow_as(&ws, "carol", &["sync", "run", "to_hook", "--json"]);
    assert_eq!(held.code, 4, "{}", held.stderr);
    let run_id = held.json()["run_id"].as_str().unwrap().to_string();
    let refused = backflow_as(&ws, "bob", &["runs", "approve", &run_id]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("declares no [users]") && refused.stderr.contains("[users]"),
        "{}",
        refused.stderr
    );
    assert_eq!(receiver.rows(), 0);
}

/// A `.cwasm` whose bytes changed is compiled again (and its entry rewritten), never
/// loaded; so is one copied from another cache (another secret).
#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_or_foreign_compiled_entry_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let plugin = plugin("noop_destination.wasm");
    let first = PluginHost::new(Some(cache.path().to_path_buf()))
        .unwrap()
        .load(&plugin)
        .await
        .unwrap();
    assert!(first.compiled_ms.is_some(), "compiled on first use");
    let entry = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a cache entry");
    let good = std::fs::read(&entry).unwrap();
    let reread = PluginHost::new(Some(cache.path().to_path_buf()))
        .unwrap()
        .load(&plugin)
        .await
        .unwrap();
    assert_eq!(reread.compiled_ms, None, "read from the cache");

    let mut tampered = good.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    std::fs::write(&entry, &tampered).unwrap();
    let again = PluginHost::new(Some(cache.path().to_path_buf()))
        .unwrap()
        .load(&plugin)
        .await
        .unwrap();
    assert!(
        again.compiled_ms.is_some(),
        "a tampered entry is not loaded"
    );
    assert_ne!(
        std::fs::read(&entry).unwrap(),
        tampered,
        "the entry was rewritten"
    );

    // The same (valid) entry in another cache, under that cache's own secret.
    let other = tempfile::tempdir().unwrap();
    PluginHost::new(Some(other.path().to_path_buf())).unwrap();
    let foreign = other.path().join(entry.file_name().unwrap());
    std::fs::copy(&entry, &foreign).unwrap();
    let copied = std::fs::read(&foreign).unwrap();
    let loaded = PluginHost::new(Some(other.path().to_path_buf()))
        .unwrap()
        .load(&plugin)
        .await
        .unwrap();
    assert!(
        loaded.compiled_ms.is_some(),
        "a foreign entry is not loaded"
    );
    assert_ne!(
        std::fs::read(&foreign).unwrap(),
        copied,
        "the entry was rewritten"
    );
}
