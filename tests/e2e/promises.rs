//! README promises that had no test of their own (issue 42): each test here fails when the
//! feature it names is removed. `tests/README.md` maps every promise to its test.

use crate::pg::Pg;
use crate::serve_support::*;
use crate::support::*;
use backflow::toolkit::receiver::{Receiver, ReceiverOptions};
use serde_json::{json, Value as J};

/// `backflow sync run SYNC --json` as a child process (no `--as`: without `[users]` every
/// name is an admin).
fn cli_run(ws: &TestWorkspace, sync: &str) -> Out {
    tokio::task::block_in_place(|| {
        backflow_with_env(ws, None, &["sync", "run", sync, "--json"], &[])
    })
}

fn cli(ws: &TestWorkspace, args: &[&str]) -> Out {
    tokio::task::block_in_place(|| backflow_with_env(ws, None, args, &[]))
}

async fn receiver_with(options: ReceiverOptions) -> Receiver {
    backflow::toolkit::receiver::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// The audit log's hash chain detects an entry edited or removed outside backflow.

/// The audit table as `state/audit.rs` stores it (sequence number → JSON entry).
const AUDIT: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit");

/// Runs `edit` on the audit table of the workspace's state file (no backflow process may
/// have it open).
fn edit_audit_table<T>(
    ws: &TestWorkspace,
    edit: impl FnOnce(&mut redb::Table<'_, u64, &'static [u8]>) -> T,
) -> T {
    let db = redb::Database::open(ws.path().join(".backflow/state.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    let out = {
        let mut table = txn.open_table(AUDIT).unwrap();
        edit(&mut table)
    };
    txn.commit().unwrap();
    out
}

fn audit_entry(table: &redb::Table<'_, u64, &'static [u8]>, seq: u64) -> Vec<u8> {
    use redb::ReadableTable;
    table
        .get(seq)
        .unwrap()
        .unwrap_or_else(|| panic!("no audit entry {seq}"))
        .value()
        .to_vec()
}

fn verify(ws: &TestWorkspace) -> Out {
    cli(ws, &["audit", "--verify"])
}

#[tokio::test(flavor = "multi_thread")]
async fn an_audit_entry_edited_or_removed_outside_backflow_fails_verification_naming_it() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(&receiver, "", "");
    // Three runs by a person: three `run.start` entries, chained.
    for _ in 0..3 {
        assert_eq!(cli_run(&ws, "to_hook").code, 0);
    }
    let verified = ok(verify(&ws), "verify an untouched log");
    assert!(
        verified.stdout.contains("audit log verified: 3 entries"),
        "{}",
        verified.stdout
    );

    // Someone rewrites who started run 2, keeping its hash.
    let original = edit_audit_table(&ws, |t| {
        let original = audit_entry(t, 2);
        let mut entry: J = serde_json::from_slice(&original).unwrap();
        assert_ne!(entry["user"], "mallory");
        entry["user"] = json!("mallory");
        t.insert(2, serde_json::to_vec(&entry).unwrap().as_slice())
            .unwrap();
        original
    });
    let broken = verify(&ws);
    assert_eq!(broken.code, 1, "{}{}", broken.stdout, broken.stderr);
    assert!(
        broken
            .stdout
            .contains("audit log entry 2 does not match its hash chain"),
        "{}",
        broken.stdout
    );
    // The API says the same, naming the entry.
    let svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    let (status, body) = api.get(svc.url("/api/v1/audit/verify")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chain_verified"], false, "{body}");
    assert_eq!(body["broken_at"], 2, "{body}");
    drop(svc);

    // Put back, the log verifies again; an entry removed breaks the chain at the next one.
    edit_audit_table(&ws, |t| {
        t.insert(2, original.as_slice()).map(|_| ()).unwrap()
    });
    // `token create` appended an entry: 4 now.
    let verified = ok(verify(&ws), "verify the restored log");
    assert!(verified.stdout.contains("verified"), "{}", verified.stdout);
    edit_audit_table(&ws, |t| t.remove(2).map(|_| ()).unwrap());
    let broken = verify(&ws);
    assert_eq!(broken.code, 1, "{}{}", broken.stdout, broken.stderr);
    assert!(
        broken.stdout.contains("audit log entry 3 does not match"),
        "{}",
        broken.stdout
    );
}

// ---------------------------------------------------------------------------------------
// The web UI's session cookie and CSRF check, without a browser.

/// A client that does not follow redirects (a sign-in answers one, with the cookie).
fn ui_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

const FORM: &str = "application/x-www-form-urlencoded";

/// A form's body, as a browser sends it.
fn form(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// Signs in with `token`; the `Set-Cookie` header of the answer.
async fn sign_in(http: &reqwest::Client, svc: &Service, token: &str) -> String {
    let resp = http
        .post(svc.url("/ui/login"))
        .header("content-type", FORM)
        .body(form(&[("token", token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303, "sign-in redirects");
    resp.headers()
        .get(reqwest::header::SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string()
}

/// The session's CSRF token, as the syncs page's forms carry it.
async fn csrf_of(http: &reqwest::Client, svc: &Service, cookie: &str) -> String {
    let page = http
        .get(svc.url("/ui"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field on the page: {page}"));
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

async fn post_run(
    http: &reqwest::Client,
    svc: &Service,
    cookie: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let resp = http
        .post(svc.url("/ui/syncs/s/runs"))
        .header("cookie", cookie)
        .header("content-type", FORM)
        .body(form(fields))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_session_cookie_is_httponly_strict_for_eight_hours_and_ends_at_sign_out() {
    let receiver = receiver().await;
    let ws = service_workspace(
        2,
        &format!(
            "{}\n[syncs.s]\nmodel = \"people\"\ndestination = \"a\"\n",
            hook("a", &receiver, "/a", "")
        ),
    );
    let svc = Service::start(&ws);
    let http = ui_client();
    let set_cookie = sign_in(&http, &svc, &token(&ws, "tester", "tester")).await;
    let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
    assert!(attributes[0].starts_with("backflow_session=") && attributes[0].len() > 40);
    for wanted in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
        assert!(attributes.contains(&wanted), "{wanted} in {set_cookie}");
    }
    let cookie = attributes[0].to_string();
    let page = http
        .get(svc.url("/ui"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);

    // Signing out ends the session on the server, not only in the browser.
    let csrf = csrf_of(&http, &svc, &cookie).await;
    let out = http
        .post(svc.url("/ui/logout"))
        .header("cookie", &cookie)
        .header("content-type", FORM)
        .body(form(&[("csrf", csrf.as_str())]))
        .send()
        .await
        .unwrap();
    let cleared = out.headers()[reqwest::header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let after = http
        .get(svc.url("/ui"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_ne!(after.status().as_u16(), 200, "the old cookie is dead");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_form_without_the_sessions_csrf_token_is_refused_for_a_user_who_may_run() {
    let receiver = receiver().await;
    let ws = service_workspace(
        2,
        &format!(
            "{}\n[syncs.s]\nmodel = \"people\"\ndestination = \"a\"\n",
            hook("a", &receiver, "/a", "")
        ),
    );
    let svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    let http = ui_client();
    // Without [users] the tester is an admin: the role would allow the run.
    let set_cookie = sign_in(&http, &svc, &token(&ws, "tester", "tester")).await;
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let csrf = csrf_of(&http, &svc, &cookie).await;

    for (what, fields) in [
        ("no token", vec![("full_resync", "false")]),
        (
            "an empty token",
            vec![("csrf", ""), ("full_resync", "false")],
        ),
        (
            "another token",
            vec![("csrf", "0123456789abcdef"), ("full_resync", "false")],
        ),
    ] {
        let (status, body) = post_run(&http, &svc, &cookie, &fields).await;
        assert_eq!(status, 403, "{what}: {body}");
        assert!(
            body.contains("missing or wrong CSRF token"),
            "{what}: {body}"
        );
    }
    assert!(runs_of(&api, &svc, "s").await.is_empty(), "nothing ran");
    assert_eq!(receiver.rows(), 0);

    // The same form with the session's token runs the sync: the refusals were the CSRF check.
    let (status, body) = post_run(
        &http,
        &svc,
        &cookie,
        &[("csrf", csrf.as_str()), ("full_resync", "false")],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let runs = finished_runs(&api, &svc, "s", 1).await;
    assert_eq!(runs[0]["status"], "succeeded", "{runs:?}");
    assert_eq!(receiver.rows(), 2);
}

// ---------------------------------------------------------------------------------------
// One service per state directory, even after a SIGKILL.

#[tokio::test(flavor = "multi_thread")]
async fn serve_lock_refuses_a_second_service_and_is_released_by_sigkill() {
    let receiver = receiver().await;
    let ws = service_workspace(1, &hook("a", &receiver, "/a", ""));
    let first = Service::start(&ws);
    let refused = Service::try_start(&ws)
        .err()
        .expect("a second service is refused");
    assert!(
        refused.contains("another `backflow serve` already serves the state"),
        "{refused}"
    );
    // Dropping a Service kills it with SIGKILL (`Child::kill`): no clean-up code runs.
    drop(first);
    assert!(
        ws.path().join(".backflow/serve.lock").is_file(),
        "the lock file stays; only the OS lock is gone"
    );
    let second = Service::try_start(&ws);
    assert!(second.is_ok(), "{:?}", second.err());
}

// ---------------------------------------------------------------------------------------
// Exit codes and run outcomes.

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_sync_run_exits_3_and_sends_nothing() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(
        &receiver,
        "",
        "[[syncs.to_hook.checks]]\nplugin = \"checks\"\nconfig = { check = \"max_changes\", change = \"added\", max_rows = 1 }\n",
    );
    let out = cli_run(&ws, "to_hook");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["status"], "blocked", "{}", out.stdout);
    assert_eq!(receiver.rows(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn event_id_field_renames_the_append_event_id() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(
        &receiver,
        "",
        "mode = \"append\"\nevent_id_field = \"evt\"\n",
    );
    let out = cli_run(&ws, "to_hook");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let rows: Vec<J> = receiver
        .received()
        .iter()
        .flat_map(|r| {
            r.body
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![r.body.clone()])
        })
        .collect();
    assert_eq!(rows.len(), 8);
    for row in &rows {
        assert!(
            row["evt"].as_str().is_some_and(|id| !id.is_empty()),
            "{row}"
        );
        assert!(row.get("event_id").is_none(), "renamed, not added: {row}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_changelog_runs_prunes_older_changelogs_so_they_cannot_be_undone() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(
        &receiver,
        "config.methods = { delete = \"DELETE\" }",
        "\n[state]\nkeep_changelog_runs = 1\n",
    );
    let first = cli_run(&ws, "to_hook").json();
    assert_eq!(first["status"], "succeeded", "{first}");
    ws.write(
        "data/customers.csv",
        &CUSTOMERS_CSV.replace("Ada Lovelace", "Ada King"),
    );
    let second = cli_run(&ws, "to_hook").json();
    assert_eq!(second["delivered"]["changed"], 1, "{second}");

    let first_id = first["run_id"].as_str().unwrap();
    let pruned = cli(&ws, &["runs", "undo", first_id]);
    assert_ne!(pruned.code, 0, "{}", pruned.stdout);
    let said = format!("{}{}", pruned.stdout, pruned.stderr);
    assert!(
        said.contains("has no changelog") && said.contains("keep_changelog_runs"),
        "{said}"
    );
    // The newest run's changelog is kept: its undo is planned.
    let kept = cli(&ws, &["runs", "undo", second["run_id"].as_str().unwrap()]);
    assert_eq!(kept.code, 0, "{}{}", kept.stdout, kept.stderr);
}

// ---------------------------------------------------------------------------------------
// Alerts.

#[tokio::test(flavor = "multi_thread")]
async fn partial_min_rejected_holds_back_a_partial_alert_below_its_count() {
    let receiver = receiver_with(ReceiverOptions {
        reject: Some(("email".into(), "ada@example.com".into())),
        ..Default::default()
    })
    .await;
    let alerts = crate::support::receiver().await;
    let ws = csv_to_webhook(
        &receiver,
        "config.batch_mode = \"row\"",
        &format!(
            "\n[[alerts]]\nurl = \"{}\"\non = [\"partial\"]\npartial_min_rejected = 2\n\n[[alerts]]\nurl = \"{}\"\non = [\"partial\"]\n",
            alerts.url("/from-two"),
            alerts.url("/from-one")
        ),
    );
    let run = cli_run(&ws, "to_hook").json();
    assert_eq!(run["status"], "partial", "{run}");
    assert_eq!(run["failed"]["added"], 1, "{run}");
    let paths: Vec<String> = alerts.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        ["/from-one"],
        "one rejected row: only the default alerts"
    );
    assert_eq!(alerts.received()[0].body["outcome"], "partial");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_alert_webhook_never_fails_the_run() {
    let receiver = receiver().await;
    let alerts = receiver_with(ReceiverOptions {
        status_for_method: Some(("POST".into(), 500)),
        ..Default::default()
    })
    .await;
    let ws = csv_to_webhook(
        &receiver,
        "",
        &format!("\n[[alerts]]\nurl = \"{}\"\n", alerts.url("/owner")),
    );
    // A failed run (its model's file is missing), then a successful one: each alerts (firing,
    // recovered), and the alert webhook answers 500 to both.
    std::fs::remove_file(ws.path().join("data/customers.csv")).unwrap();
    let failed = cli_run(&ws, "to_hook").json();
    assert_eq!(failed["status"], "failed", "{failed}");
    ws.write("data/customers.csv", CUSTOMERS_CSV);
    let out = cli_run(&ws, "to_hook");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["status"], "succeeded");
    assert_eq!(receiver.rows(), 8);
    let states: Vec<J> = alerts
        .received()
        .iter()
        .map(|r| {
            assert_eq!(r.status, 500);
            r.body["state"].clone()
        })
        .collect();
    assert!(
        states.contains(&json!("firing")) && states.contains(&json!("recovered")),
        "both alerts were posted (and refused): {states:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Host HTTP caps: a plugin's timeout, and 16 MiB of response body.

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_request_timeout_cuts_a_request_that_never_answers() {
    // The receiver answers after ten minutes; the webhook's timeout is half a second, so each
    // of the run's attempts (retries with backoff) ends at the timeout, and the run fails.
    let receiver = receiver_with(ReceiverOptions {
        latency_ms: 600_000,
        ..Default::default()
    })
    .await;
    let ws = csv_to_webhook(&receiver, "config.timeout_ms = 500", "batch_size = 100\n");
    let out = cli_run(&ws, "to_hook");
    let run = out.json();
    assert_eq!(run["delivered"]["added"], 0, "{run}");
    assert_eq!(run["failed"]["added"], 8, "{run}");
    let rejected = run["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 8, "{run}");
    for row in rejected {
        let error = row["error"].as_str().unwrap();
        assert!(error.contains("timed out"), "{row}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_body_over_16_mib_is_cut_at_16_mib_and_the_run_goes_on() {
    // Every request is answered with 20 MiB of JSON whitespace.
    let addr = raw_http_server(|| async { (200, vec![b' '; 20 << 20]) }).await;
    let ws = file_workspace(
        "customers",
        "customers.csv",
        &format!(
            "[destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"http://{addr}/in\"\ngrants.network = [\"{addr}\"]\n[syncs.to_hook]\nmodel = \"customers\"\ndestination = \"hook\"\nbatch_size = 100\n"
        ),
    );
    ws.write("data/customers.csv", CUSTOMERS_CSV);
    let out = tokio::task::block_in_place(|| {
        backflow_with_env(
            &ws,
            None,
            &["sync", "run", "to_hook", "--json"],
            &[("RUST_LOG", "backflow=warn")],
        )
    });
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("response body truncated to 16777216 bytes"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------
// Rate limits in a real sync. Pacing is proven by counting, not by a stopwatch: the
// receiver answers 429 to any request past N in the last second, and a paced sync never
// gets one (a slow machine only spaces requests further apart).

fn rate_limited_receiver_options(per_second: u32) -> ReceiverOptions {
    ReceiverOptions {
        rate_limit: Some(per_second),
        ..Default::default()
    }
}

fn too_many(receiver: &Receiver) -> usize {
    receiver
        .received()
        .iter()
        .filter(|r| r.status == 429)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_per_second_is_never_exceeded() {
    // 2 requests per second, against a receiver refusing a 4th within one second.
    let receiver = receiver_with(rate_limited_receiver_options(3)).await;
    let ws = csv_to_webhook(
        &receiver,
        "",
        "batch_size = 1\nrate_limit = { requests_per_second = 2 }\n",
    );
    let out = cli_run(&ws, "to_hook");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(receiver.rows(), 8);
    assert_eq!(too_many(&receiver), 0, "no request past the limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_per_second_is_never_exceeded() {
    // 4 rows per second in batches of 2: 2 requests per second, however many may be in flight.
    let receiver = receiver_with(rate_limited_receiver_options(3)).await;
    let ws = csv_to_webhook(
        &receiver,
        "",
        "batch_size = 2\nmax_in_flight = 4\nrate_limit = { rows_per_second = 4 }\n",
    );
    let out = cli_run(&ws, "to_hook");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(receiver.rows(), 8);
    assert_eq!(too_many(&receiver), 0, "no request past the limit");
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: the model's query runs in a read-only transaction.

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_model_query_cannot_write_even_as_a_role_that_may() {
    let pg = Pg::any();
    let table = format!("ro_{}", ulid::Ulid::new().to_string().to_lowercase());
    pg.sql(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY); GRANT ALL ON {table} TO reader"
    ));
    // The role may write: outside backflow's transaction, its insert lands.
    let grants = pg.sql(&format!(
        "SELECT has_table_privilege('reader', '{table}', 'INSERT')"
    ));
    assert_eq!(grants, "t");
    let ws = TestWorkspace::new(&format!(
        "[workspace]\nplugins_dir = \"{{plugins}}\"\n{}\n[models.m]\nsource = \"pg\"\nquery = '''WITH w AS (INSERT INTO {table} VALUES (1) RETURNING id) SELECT id FROM w'''\nprimary_key = \"id\"\n",
        pg.source_toml("reader", Some("reader-secret"))
    ));
    let out = cli(&ws, &["model", "preview", "m", "--limit", "1"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("read-only transaction"), "{said}");
    assert_eq!(pg.sql(&format!("SELECT count(*) FROM {table}")), "0");
}

// ---------------------------------------------------------------------------------------
// Hot reload: a plugin file added to or removed from the plugins directory while serving.

/// The hash `/api/v1/plugins` says the service runs for `file`, if it serves one.
async fn served(api: &Api, svc: &Service, file: &str) -> Option<String> {
    let (status, plugins) = api.get(svc.url("/api/v1/plugins")).await;
    assert_eq!(status, 200, "{plugins}");
    plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["file"].as_str().is_some_and(|f| f.ends_with(file)))
        .filter(|p| p["status"] == "serving")
        .and_then(|p| p["sha256"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_added_or_removed_while_serving_is_picked_up_without_a_restart() {
    let receiver = receiver().await;
    let ws = service_workspace(
        3,
        &format!(
            "{}\n[syncs.s]\nmodel = \"people\"\ndestination = \"a\"\n",
            hook("a", &receiver, "/a", "")
        ),
    );
    let svc = Service::start(&ws);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    let plugins = ws.path().join("plugins");
    assert_eq!(served(&api, &svc, "noop_destination.wasm").await, None);

    // Added: served from now on.
    std::fs::copy(
        plugin("noop_destination.wasm"),
        plugins.join("noop_destination.wasm"),
    )
    .unwrap();
    eventually("the added plugin to serve", async || {
        served(&api, &svc, "noop_destination.wasm").await
    })
    .await;

    // Removed: no longer served, and a run needing it cannot start (a recorded failed run).
    let webhook = std::fs::read(plugins.join("webhook.wasm")).unwrap();
    std::fs::remove_file(plugins.join("webhook.wasm")).unwrap();
    eventually("the removed plugin to stop serving", async || {
        served(&api, &svc, "webhook.wasm")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    api.post(svc.url("/api/v1/syncs/s/runs"), None).await;
    let failed = finished_runs(&api, &svc, "s", 1).await.remove(0);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(receiver.rows(), 0);

    // Put back: the next run delivers.
    std::fs::write(plugins.join("webhook.wasm"), webhook).unwrap();
    eventually("the restored plugin to serve", async || {
        served(&api, &svc, "webhook.wasm").await
    })
    .await;
    api.post(svc.url("/api/v1/syncs/s/runs"), None).await;
    let run = finished_runs(&api, &svc, "s", 2).await.remove(0);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(receiver.rows(), 3);
}

// ---------------------------------------------------------------------------------------
// The sandbox: no UDP and no listening socket, even for a plugin with a network grant.

/// A workspace whose sync `bad` writes through the misbehave fixture in `mode`, granted one
/// TCP address (so WASI TCP is on, and only the sandbox's address check decides).
fn socket_workspace(mode: &str) -> TestWorkspace {
    let ws = file_workspace(
        "m",
        "rows.csv",
        &format!(
            "[destinations.bad]\nplugin = \"misbehave\"\nconfig = {{ on_write = \"{mode}\" }}\ngrants.network = [\"127.0.0.1:9\"]\n[syncs.bad]\nmodel = \"m\"\ndestination = \"bad\"\n"
        ),
    );
    ws.write("data/rows.csv", "id,name\n1,a\n");
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_may_open_no_udp_socket_and_listen_on_no_port() {
    for (mode, refused) in [("udp", "udp refused"), ("listen", "listen refused")] {
        let run = socket_workspace(mode).run("bad").await;
        let error = run.error.unwrap_or_default();
        assert!(
            error.contains(refused) && error.contains("access-denied"),
            "{mode}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugins_declared_default_rate_limit_paces_a_sync() {
    // The misbehave fixture declares 4 requests per second and sets none in the workspace;
    // in `http` mode each batch is one request to the receiver, which refuses a 7th within
    // one second (and the fixture fails the run on any answer but 2xx).
    let receiver = receiver_with(rate_limited_receiver_options(6)).await;
    let ws = file_workspace(
        "m",
        "rows.csv",
        &format!(
            "[destinations.paced]\nplugin = \"misbehave\"\nconfig = {{ on_write = \"http\", url = \"{}\" }}\ngrants.network = [\"{}\"]\n[syncs.paced]\nmodel = \"m\"\ndestination = \"paced\"\nbatch_size = 1\n",
            receiver.url("/in"),
            receiver.addr
        ),
    );
    let mut csv = String::from("id,name\n");
    for i in 1..=16 {
        csv.push_str(&format!("{i},n{i}\n"));
    }
    ws.write("data/rows.csv", &csv);
    let out = cli_run(&ws, "paced");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(receiver.received().len(), 16);
    assert_eq!(too_many(&receiver), 0, "no request past the declared limit");
}
