//! Bad workspaces get errors naming the file and the key.

use crate::support::*;
use backflow::workspace::Workspace;

fn load_error(ws: &TestWorkspace) -> String {
    Workspace::load(ws.path())
        .expect_err("the workspace should be rejected")
        .to_string()
}

const VALID: &str = r#"
[workspace]
plugins_dir = "{plugins}"
[sources.files]
plugin = "file-source"
grants.files = ["data"]
[destinations.hook]
plugin = "webhook"
config.url = "http://127.0.0.1:9/x"
grants.network = ["127.0.0.1:9"]
[models.customers]
source = "files"
query = "data/customers.csv"
primary_key = "id"
[syncs.s]
model = "customers"
destination = "hook"
"#;

#[test]
fn the_valid_baseline_loads() {
    TestWorkspace::new(VALID).load();
}

#[test]
fn unknown_keys_are_rejected_with_file_line_and_key() {
    let ws =
        TestWorkspace::new(&VALID.replace("[sources.files]", "[sources.files]\nplugn = \"x\""));
    let e = load_error(&ws);
    assert!(e.contains("backflow.toml"), "{e}");
    assert!(e.contains("unknown field `plugn`"), "{e}");
    assert!(e.contains("line 5"), "{e}");

    let ws = TestWorkspace::new(&format!("{VALID}\n[sorces.x]\nplugin = \"y\"\n"));
    let e = load_error(&ws);
    assert!(e.contains("unknown field `sorces`"), "{e}");
}

#[test]
fn bad_toml_names_the_file_and_line() {
    let ws = TestWorkspace::new(&VALID.replace("primary_key = \"id\"", "primary_key = \"id"));
    let e = load_error(&ws);
    assert!(e.contains("backflow.toml") && e.contains("line 14"), "{e}");
}

#[test]
fn references_to_missing_things_name_the_key_and_what_exists() {
    let ws = TestWorkspace::new(&VALID.replace("model = \"customers\"", "model = \"custmers\""));
    let e = load_error(&ws);
    assert!(
        e.contains(
            "backflow.toml: syncs.s.model: no model named \"custmers\" (defined: customers)"
        ),
        "{e}"
    );

    let ws = TestWorkspace::new(&VALID.replace("source = \"files\"", "source = \"warehouse\""));
    let e = load_error(&ws);
    assert!(
        e.contains("models.customers.source: no source named \"warehouse\""),
        "{e}"
    );

    let ws = TestWorkspace::new(&VALID.replace(
        "destination = \"hook\"",
        "destination = \"hook\"\nmode = \"merge\"",
    ));
    let e = load_error(&ws);
    assert!(e.contains("syncs.s.mode: unknown mode \"merge\""), "{e}");

    let ws = TestWorkspace::new(
        &VALID.replace("grants.files = [\"data\"]", "grants.files = [\"nope\"]"),
    );
    let e = load_error(&ws);
    assert!(
        e.contains("sources.files.grants.files[0]") && e.contains("is not a directory"),
        "{e}"
    );
}

#[test]
fn models_and_syncs_may_live_in_their_own_files() {
    let base = VALID
        .split("[models.customers]")
        .next()
        .unwrap()
        .to_string();
    let ws = TestWorkspace::new(&base);
    ws.write(
        "models/customers.toml",
        "source = \"files\"\nquery = \"data/customers.csv\"\nprimary_key = [\"id\"]\n",
    );
    ws.write(
        "syncs/s.toml",
        "model = \"customers\"\ndestination = \"hook\"\n",
    );
    let loaded = ws.load();
    assert_eq!(loaded.syncs["s"].model, "customers");

    ws.write(
        "syncs/broken.toml",
        "model = \"customers\"\ndestinaton = \"hook\"\n",
    );
    let e = load_error(&ws);
    assert!(
        e.contains("syncs/broken.toml") && e.contains("unknown field `destinaton`"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_config_errors_name_the_config_key() {
    let ws = TestWorkspace::new(&VALID.replace(
        "config.url = \"http://127.0.0.1:9/x\"",
        "config.url = \"ftp://nope\"\nconfig.batch_mod = \"row\"",
    ));
    ws.write("data/customers.csv", CUSTOMERS_CSV);
    let e = ws.try_run("s").await.expect_err("prepare should fail");
    assert!(e.contains("backflow.toml: destinations.hook.config"), "{e}");
    assert!(e.contains("batch_mod"), "{e}");

    let ws = TestWorkspace::new(&VALID.replace(
        "config.url = \"http://127.0.0.1:9/x\"",
        "config.url = \"ftp://nope\"",
    ));
    let e = ws.try_run("s").await.expect_err("prepare should fail");
    assert!(
        e.contains(
            "destinations.hook.config.url: \"ftp://nope\" is not an http:// or https:// URL"
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mapping_a_column_the_model_lacks_names_the_mapping_key() {
    let ws = TestWorkspace::new(&format!(
        "{VALID}\n[syncs.s.mapping]\nid = \"external_id\"\nemial = \"email\"\n"
    ));
    ws.write("data/customers.csv", CUSTOMERS_CSV);
    let run = ws.run("s").await;
    let e = run.error.unwrap();
    assert!(
        e.contains("syncs.s.mapping.emial: model customers has no column \"emial\""),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_of_the_wrong_kind_is_refused() {
    let ws = TestWorkspace::new(&VALID.replace("plugin = \"webhook\"", "plugin = \"file-source\""));
    let e = ws.try_run("s").await.expect_err("prepare should fail");
    assert!(
        e.contains("destinations.hook.plugin: plugin file-source")
            && e.contains("is a source plugin, not a destination"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mode_the_destination_cannot_do_is_a_config_error() {
    // The printer example supports insert and update only.
    let ws = TestWorkspace::new(
        &VALID
            .replace("plugin = \"webhook\"", "plugin = \"printer\"")
            .replace("config.url = \"http://127.0.0.1:9/x\"\n", "")
            .replace(
                "destination = \"hook\"",
                "destination = \"hook\"\nmode = \"mirror\"",
            ),
    );
    let e = ws.try_run("s").await.expect_err("prepare should fail");
    assert!(e.contains("syncs.s.mode: mode mirror needs the destination to delete, which hook does not support (it supports: insert, update)"), "{e}");
}

#[test]
fn numbers_that_would_overflow_or_exhaust_memory_are_refused_by_name() {
    for (extra, key, says) in [
        (
            "rate_limit = { rows_per_second = 1e-20 }",
            "syncs.s.rate_limit.rows_per_second",
            "at least 0.001",
        ),
        (
            "rate_limit = { requests_per_second = 0.0 }",
            "syncs.s.rate_limit.requests_per_second",
            "positive number",
        ),
        (
            "time_budget_s = 9223372036854775807",
            "syncs.s.time_budget_s",
            "at most",
        ),
        (
            "batch_size = 4000000000",
            "syncs.s.batch_size",
            "at most 100000",
        ),
    ] {
        let ws = TestWorkspace::new(&format!("{VALID}{extra}\n"));
        let e = load_error(&ws);
        assert!(e.contains(key) && e.contains(says), "{extra}: {e}");
    }
}

#[test]
fn a_notify_url_may_come_from_a_granted_variable_and_errors_never_show_it() {
    // The variable is set for the `backflow` process only (never in this test process).
    const SLACK: (&str, &str) = (
        "BACKFLOW_TEST_SLACK_URL",
        "http://127.0.0.1:9/services/T000/B000/SLACKSECRET99",
    );
    let list = |ws: &TestWorkspace| backflow_with_env(ws, None, &["sync", "list"], &[SLACK]);
    let approvals = "\n[approvals]\nnotify_url = \"${env.BACKFLOW_TEST_SLACK_URL}\"\ngrants.network = [\"127.0.0.1:9\"]\n";
    let ws = TestWorkspace::new(&format!(
        "{VALID}{approvals}grants.env = [\"BACKFLOW_TEST_SLACK_URL\"]\n"
    ));
    let loaded = ok(list(&ws), "a granted notify_url loads");
    assert!(
        !loaded.stdout.contains("SLACKSECRET99"),
        "{}",
        loaded.stdout
    );
    let e = load_error(&TestWorkspace::new(&format!("{VALID}{approvals}")));
    assert!(
        e.contains("approvals.notify_url") && e.contains("not in approvals.grants.env"),
        "{e}"
    );
    let ungranted_host = approvals.replace(
        "grants.network = [\"127.0.0.1:9\"]",
        "grants.network = [\"127.0.0.1:10\"]",
    );
    let refused = list(&TestWorkspace::new(&format!(
        "{VALID}{ungranted_host}grants.env = [\"BACKFLOW_TEST_SLACK_URL\"]\n"
    )));
    let e = format!("{}{}", refused.stdout, refused.stderr);
    assert_ne!(refused.code, 0, "{e}");
    assert!(
        e.contains("127.0.0.1:9 is not granted") && !e.contains("SLACKSECRET99"),
        "{e}"
    );
}
