//! A newcomer's first hour (issue 37) and secrets for plugins in every language (issue 41):
//! undo on the `init` workspace previews each check's verdict and names what blocks; a
//! governed service with nothing published says so rarely, with the commands to run; the
//! host expands `${env.NAME}` in any plugin's config from its granted variables.

use crate::serve_support::*;
use crate::support::*;
use backflow::toolkit::receiver::Receiver;
use serde_json::Value as J;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOKEN: &str = "t0ken-for-the-newcomer-tests";

/// Runs `backflow` on `workspace` with the token the `init` workspace reads.
fn backflow(workspace: &Path, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(args)
        .arg("--workspace")
        .arg(workspace)
        .env("RUST_LOG", "warn")
        .env("CRM_TOKEN", TOKEN)
        .env_remove("BACKFLOW_USER")
        .output()
        .expect("running backflow");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// `backflow init` into a temporary directory, its webhook pointed at `receiver`.
fn init_workspace(receiver: &Receiver) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("my-syncs");
    let out = Command::new(env!("CARGO_BIN_EXE_backflow"))
        .arg("init")
        .arg(&ws)
        .arg("--plugins")
        .arg(plugins_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = std::fs::read_to_string(ws.join("backflow.toml"))
        .unwrap()
        .replace("127.0.0.1:8085", &receiver.addr.to_string());
    std::fs::write(ws.join("backflow.toml"), toml).unwrap();
    (dir, ws)
}

/// The first run's id, after checking it delivered the quickstart's eight rows.
fn first_run(ws: &Path) -> String {
    let run = backflow(ws, &["sync", "run", "customers_to_crm", "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let run = run.json();
    assert_eq!(run["delivered"]["added"], 8, "{run}");
    run["run_id"].as_str().unwrap().to_string()
}

fn deletes(receiver: &Receiver) -> usize {
    receiver
        .received()
        .iter()
        .filter(|r| r.method == "DELETE" || r.body.to_string().contains("\"delete\""))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_of_the_first_run_on_the_init_workspace_shows_every_check_and_goes_through() {
    let receiver = receiver().await;
    let (_dir, ws) = init_workspace(&receiver);
    let run_id = first_run(&ws);

    let preview = backflow(&ws, &["runs", "undo", &run_id, "--json"]);
    assert_eq!(preview.code, 0, "{}\n{}", preview.stdout, preview.stderr);
    let preview = preview.json();
    assert_eq!(preview["planned"]["removed"], 8, "{preview}");
    let checks = preview["checks"]
        .as_array()
        .expect("the preview shows the checks");
    assert_eq!(checks.len(), 5, "every check of the sync: {preview}");
    let guard = checks
        .iter()
        .find(|c| c["message"].as_str().unwrap().contains("changed"))
        .unwrap_or_else(|| panic!("the max_changes guard: {preview}"));
    assert_eq!(
        guard["verdict"], "pass",
        "deleting what the run inserted is not an overwrite: {guard}"
    );
    // A check of the model as a whole passes an undo (contract 0.3.0's plan purpose: the undo
    // reads no model), and the quickstart webhook has a DELETE route: nothing blocks.
    assert_eq!(preview["blocked"], false, "{preview}");
    assert_eq!(preview["blocking"], serde_json::json!([]), "{preview}");
    let model_wide = checks
        .iter()
        .find(|c| c["message"].as_str().unwrap().contains("undo"))
        .unwrap_or_else(|| panic!("min_model_rows says it does not apply to an undo: {preview}"));
    assert_eq!(model_wide["verdict"], "pass", "{model_wide}");

    let text = backflow(&ws, &["runs", "undo", &run_id]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout.contains("check "),
        "each check's verdict: {}",
        text.stdout
    );
    assert!(!text.stdout.contains("BLOCKED by check"), "{}", text.stdout);

    let undo = backflow(&ws, &["runs", "undo", &run_id, "--yes", "--json"]);
    assert_eq!(undo.code, 0, "{}\n{}", undo.stdout, undo.stderr);
    assert_eq!(undo.json()["delivered"]["removed"], 8, "{}", undo.stdout);
    let deleted_rows: usize = receiver
        .received()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.body.as_array().map_or(1, Vec::len))
        .sum();
    assert_eq!(
        deleted_rows, 8,
        "the receiver got each inserted row's delete"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undo_preview_names_the_check_that_would_block_it_with_its_numbers() {
    let receiver = receiver().await;
    let (_dir, ws) = init_workspace(&receiver);
    let toml = std::fs::read_to_string(ws.join("backflow.toml")).unwrap();
    let guard = "check = \"max_changes\", change = \"changed\", max_percent = 50";
    assert!(toml.contains(guard));
    let toml = toml.replace(
        guard,
        "check = \"max_changes\", change = \"removed\", max_percent = 50",
    );
    std::fs::write(ws.join("backflow.toml"), toml).unwrap();
    let run_id = first_run(&ws);

    let preview = backflow(&ws, &["runs", "undo", &run_id, "--json"]).json();
    assert_eq!(preview["blocked"], true, "{preview}");
    let blocking = preview["blocking"].as_array().unwrap();
    let guard = blocking
        .iter()
        .find(|b| b["check"].as_str().unwrap().contains("max_changes"))
        .unwrap_or_else(|| panic!("{preview}"));
    assert!(
        guard["message"]
            .as_str()
            .unwrap()
            .contains("8 rows removed (100.0% of the 8 delivered rows); allowed: at most 50%"),
        "{guard}"
    );
    assert!(
        guard["configured_at"]
            .as_str()
            .unwrap()
            .ends_with("backflow.toml: syncs.customers_to_crm.checks[3]"),
        "{guard}"
    );
    assert!(
        guard["remedy"]
            .as_str()
            .unwrap()
            .contains("severity = \"warn\""),
        "{guard}"
    );

    let text = backflow(&ws, &["runs", "undo", &run_id]);
    assert!(
        text.stdout.contains("the undo would be BLOCKED by check"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("8 rows removed"), "{}", text.stdout);
    assert!(
        !text.stdout.contains("to send it"),
        "no invitation to send a blocked undo: {}",
        text.stdout
    );

    let undo = backflow(&ws, &["runs", "undo", &run_id, "--yes"]);
    assert_eq!(undo.code, 3, "{}\n{}", undo.stdout, undo.stderr);
    assert_eq!(deletes(&receiver), 0, "nothing is sent by a blocked undo");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_governed_service_with_nothing_published_says_so_at_start_and_then_rarely() {
    let receiver = receiver().await;
    let ws = service_workspace(
        3,
        &format!(
            "{}[syncs.people_to_hook]\nmodel = \"people\"\ndestination = \"hook\"\nschedule = \"* * * * * *\"\n[users]\nalice = {{ role = \"admin\" }}\ncarol = {{ role = \"contributor\" }}\n",
            hook("hook", &receiver, "/people", "")
        ),
    );
    let service = Service::start(&ws);
    // Forty ticks of the scheduler (one every 250 ms).
    std::thread::sleep(std::time::Duration::from_secs(10));
    let log = service.log();
    let hints = log.matches("nothing is published yet").count();
    assert!(
        (1..=2).contains(&hints),
        "said once at start, not every tick ({hints} times):\n{log}"
    );
    assert!(
        log.contains("backflow change submit"),
        "with the command to run:\n{log}"
    );
    assert!(log.contains("backflow change publish ID"), "{log}");
    assert_eq!(log.matches("ERROR").count(), 0, "{log}");
    assert!(
        receiver.received().is_empty(),
        "nothing runs before a publish"
    );
}

/// A workspace syncing the customers CSV to destination plugin file `plugin_file` (named
/// `name` in the workspace), its `Authorization` header read from `${env.CRM_TOKEN}`, which
/// is granted when `granted`.
async fn secret_workspace(
    receiver: &Receiver,
    plugin_file: &Path,
    granted: bool,
) -> (TestWorkspace, String) {
    let plugins = tempfile::tempdir().unwrap().keep();
    std::fs::copy(plugin("file_source.wasm"), plugins.join("file_source.wasm")).unwrap();
    std::fs::copy(plugin_file, plugins.join("destination.wasm")).unwrap();
    let name = host()
        .load(&plugins.join("destination.wasm"))
        .await
        .unwrap()
        .spec
        .name;
    let ws = TestWorkspace::new(&format!(
        r#"[workspace]
plugins_dir = "{plugins}"
[sources.files]
plugin = "file-source"
grants.files = ["data"]
[models.customers]
source = "files"
query = "data/customers.csv"
primary_key = "id"
[destinations.crm]
plugin = "{name}"
config.url = "{url}"
config.headers = {{ Authorization = "Bearer ${{env.CRM_TOKEN}}" }}
grants.network = ["{addr}"]
grants.env = [{grant}]
[syncs.to_crm]
model = "customers"
destination = "crm"
"#,
        plugins = plugins.display(),
        url = receiver.url("/contacts"),
        addr = receiver.addr,
        grant = if granted { "\"CRM_TOKEN\"" } else { "" },
    ));
    ws.write("data/customers.csv", CUSTOMERS_CSV);
    (ws, name)
}

/// The `Authorization` header of every request the receiver got.
fn authorizations(receiver: &Receiver) -> Vec<String> {
    receiver
        .received()
        .iter()
        .filter_map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.clone())
        })
        .collect()
}

/// The JavaScript destination template built by `scripts/build-js-plugins`.
fn js_destination() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins-js/template-destination.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-js-plugins (scripts/test does)",
        path.display()
    );
    path
}

async fn a_granted_secret_reaches_the_destination_and_an_ungranted_one_fails_at_load(
    plugin_file: PathBuf,
) {
    let receiver = receiver().await;
    let (ws, name) = secret_workspace(&receiver, &plugin_file, true).await;
    let run = backflow(ws.path(), &["sync", "run", "to_crm", "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let sent = authorizations(&receiver);
    assert!(!sent.is_empty(), "{:?}", receiver.received());
    assert!(
        sent.iter().all(|a| *a == format!("Bearer {TOKEN}")),
        "the host expanded the header before the plugin saw it: {sent:?}"
    );
    assert!(!run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN));

    let receiver = crate::support::receiver().await;
    let (ws, _) = secret_workspace(&receiver, &plugin_file, false).await;
    let run = backflow(ws.path(), &["sync", "run", "to_crm"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let expected = format!("destinations.crm.config.headers.Authorization: variable CRM_TOKEN is not granted to plugin {name} (add it to grants.env)");
    assert!(run.stderr.contains(&expected), "{expected}\n{}", run.stderr);
    assert!(receiver.received().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_destination_reads_a_granted_secret_through_its_config() {
    a_granted_secret_reaches_the_destination_and_an_ungranted_one_fails_at_load(js_destination())
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rust_webhook_still_reads_its_secret_after_the_host_expanded_it() {
    a_granted_secret_reaches_the_destination_and_an_ungranted_one_fails_at_load(plugin(
        "webhook.wasm",
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_variable_that_is_not_set_fails_the_run_naming_the_key() {
    let receiver = receiver().await;
    let (ws, _) = secret_workspace(&receiver, &js_destination(), true).await;
    let out = Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["sync", "run", "to_crm", "--json", "--workspace"])
        .arg(ws.path())
        .env("RUST_LOG", "warn")
        .env_remove("CRM_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let run: J = serde_json::from_str(&stdout).unwrap();
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("destinations.crm.config.headers.Authorization: environment variable CRM_TOKEN is not set"),
        "{error}"
    );
    assert!(receiver.received().is_empty());
}

/// Issue 37's messages, the one no other test holds: a CLI run logs `run finished` once.
#[tokio::test(flavor = "multi_thread")]
async fn a_cli_run_logs_run_finished_once() {
    let receiver = receiver().await;
    let (_dir, ws) = init_workspace(&receiver);
    let out = Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["sync", "run", "customers_to_crm", "--workspace"])
        .arg(&ws)
        .env("RUST_LOG", "backflow=info")
        .env("CRM_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("run finished").count(), 1, "{stderr}");
}
