//! Quality gates: check plugins judge the plan; a failing check stops the run before the
//! first write.

use crate::support::*;
use backflow::state::{RunStatus, StateStore};

const PEOPLE: &str = "id,email,plan,mrr,updated_at\n1,a@acme.com,pro,10.5,2026-01-01T00:00:00Z\n2,b@acme.com,free,0,2026-01-02T00:00:00Z\n3,c@acme.com,pro,99,2026-01-03T00:00:00Z\n";

/// A mirror sync from data/people.csv to `receiver` with the given `[[syncs.s.checks]]` tables.
fn with_checks(receiver: &backflow::toolkit::receiver::Receiver, checks: &str) -> TestWorkspace {
    let ws = file_workspace(
        "people",
        "people.csv",
        &format!(
            r#"
[destinations.hook]
plugin = "webhook"
config.url = "{url}"
config.methods = {{ delete = "DELETE" }}
grants.network = ["{addr}"]
[syncs.s]
model = "people"
destination = "hook"
mode = "mirror"
{checks}
"#,
            url = receiver.url("/in"),
            addr = receiver.addr
        ),
    );
    ws.write("data/people.csv", PEOPLE);
    ws
}

fn check(config: &str) -> String {
    format!("[[syncs.s.checks]]\nplugin = \"checks\"\nconfig = {config}\n")
}

/// Runs a single built-in check on `data` and returns (status, verdict, message).
async fn judge(config: &str, data: &str) -> (RunStatus, String, String) {
    let receiver = receiver().await;
    let ws = with_checks(&receiver, &check(config));
    ws.write("data/people.csv", data);
    let run = ws.run("s").await;
    assert_eq!(run.checks.len(), 1, "{run:?}");
    if run.status == RunStatus::Blocked {
        assert_eq!(receiver.received().len(), 0, "a blocked run sends nothing");
    }
    (
        run.status,
        run.checks[0].verdict.to_string(),
        run.checks[0].message.clone(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn each_built_in_check_passes_and_fails() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{ check = "not_null", columns = ["email"] }"#,
            PEOPLE,
            "id,email\n1,a@x.com\n2,\n",
        ),
        (
            r#"{ check = "unique", columns = ["email"] }"#,
            PEOPLE,
            "id,email\n1,a@x.com\n2,a@x.com\n3,\n4,\n",
        ),
        (
            r#"{ check = "accepted_values", column = "plan", values = ["free", "pro"] }"#,
            PEOPLE,
            "id,plan\n1,pro\n2,gold\n",
        ),
        (
            r#"{ check = "regex", column = "email", pattern = "^[^@]+@acme\\.com$" }"#,
            PEOPLE,
            "id,email\n1,a@acme.com\n2,b@gmail.com\n",
        ),
        (
            r#"{ check = "range", column = "mrr", min = 0, max = 100 }"#,
            PEOPLE,
            "id,mrr\n1,50\n2,-1\n3,101\n",
        ),
        (
            r#"{ check = "min_model_rows", min = 2 }"#,
            PEOPLE,
            "id,email\n1,a@x.com\n",
        ),
        (
            r#"{ check = "freshness", column = "updated_at", max_age = "3650d" }"#,
            PEOPLE,
            "id,updated_at\n1,2001-01-01T00:00:00Z\n",
        ),
        (
            r#"{ check = "max_changes", change = "added", max_rows = 3 }"#,
            PEOPLE,
            "id,email\n1,a\n2,b\n3,c\n4,d\n",
        ),
    ];
    for (config, good, bad) in cases {
        let (status, verdict, message) = judge(config, good).await;
        assert_eq!(
            (status, verdict.as_str()),
            (RunStatus::Succeeded, "pass"),
            "{config} on good data: {message}"
        );
        let (status, verdict, message) = judge(config, bad).await;
        assert_eq!(
            (status, verdict.as_str()),
            (RunStatus::Blocked, "fail"),
            "{config} on bad data: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_name_the_rows_and_the_rule() {
    let receiver = receiver().await;
    let ws = with_checks(
        &receiver,
        &check(r#"{ check = "range", column = "mrr", min = 0, max = 100 }"#),
    );
    ws.write(
        "data/people.csv",
        "id,email,mrr\n1,a@x.com,50\n2,b@x.com,-1\n3,c@x.com,101\n",
    );
    let run = ws.run("s").await;
    let c = &run.checks[0];
    assert_eq!(c.message, "2 rows with mrr outside [0, 100]");
    assert_eq!(c.samples.len(), 2);
    assert!(
        c.samples[0].contains("\"mrr\":-1") || c.samples[0].contains("\"mrr\":101"),
        "{:?}",
        c.samples
    );
    assert!(run
        .error
        .unwrap()
        .contains("blocked by check \"checks:range\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_blast_radius_guard_blocks_a_run_that_would_delete_everything() {
    let receiver = receiver().await;
    let ws = with_checks(
        &receiver,
        &check(r#"{ check = "max_changes", change = "removed", max_percent = 10 }"#),
    );
    let first = ws.run("s").await;
    assert_eq!(first.status, RunStatus::Succeeded, "{first:?}");
    let requests_before = receiver.received().len();

    // The source table was emptied upstream.
    ws.write("data/people.csv", "id,email,plan,mrr,updated_at\n");
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Blocked, "{run:?}");
    assert_eq!(
        run.checks[0].message,
        "3 rows removed (100.0% of the 3 delivered rows); allowed: at most 10%"
    );
    assert_eq!(run.delivered.total(), 0);
    assert_eq!(
        receiver.received().len(),
        requests_before,
        "zero requests reached the receiver"
    );
    let state = StateStore::open(&ws.load().state_dir).unwrap();
    assert_eq!(state.snapshot_len("s").unwrap(), 3, "state untouched");
    let stored = state.run(&run.run_id).unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Blocked);
    assert_eq!(stored.checks, run.checks, "the report is in run history");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warn_check_is_recorded_and_the_run_proceeds() {
    let receiver = receiver().await;
    let checks = format!(
        "{}[[syncs.s.checks]]\nname = \"tier\"\nplugin = \"checks\"\nseverity = \"warn\"\nconfig = {{ check = \"accepted_values\", column = \"plan\", values = [\"free\"] }}\n",
        check(r#"{ check = "not_null", columns = ["email"] }"#)
    );
    let ws = with_checks(&receiver, &checks);
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.checks[0].verdict, "pass");
    assert_eq!(
        (run.checks[1].name.as_str(), run.checks[1].verdict.as_str()),
        ("tier", "fail")
    );
    assert_eq!(receiver.rows(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_or_hanging_check_fails_closed() {
    for (config, limits, expected) in [
        (r#"{ trap_on_open = true }"#, "", "crashed"),
        (
            r#"{ spin = true }"#,
            "limits.call_timeout_ms = 300\n",
            "CPU time limit",
        ),
    ] {
        let receiver = receiver().await;
        let ws = with_checks(
            &receiver,
            &format!("[[syncs.s.checks]]\nplugin = \"fixture-check\"\nconfig = {config}\n{limits}"),
        );
        let run = ws.run("s").await;
        assert_eq!(run.status, RunStatus::Blocked, "{run:?}");
        assert_eq!(run.checks[0].verdict, "error");
        assert!(
            run.checks[0].message.contains(expected),
            "{}",
            run.checks[0].message
        );
        assert_eq!(receiver.received().len(), 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_check_written_with_the_sdk_blocks_personal_emails() {
    let receiver = receiver().await;
    let ws = with_checks(
        &receiver,
        "[[syncs.s.checks]]\nplugin = \"b2b-email-check\"\nconfig = { column = \"email\" }\n",
    );
    ws.write(
        "data/people.csv",
        "id,email\n1,ceo@acme.com\n2,someone@gmail.com\n",
    );
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Blocked);
    assert_eq!(
        run.checks[0].message,
        "1 rows with a personal e-mail address"
    );
    assert!(run.checks[0].samples[0].contains("someone@gmail.com"));
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_check_results_without_sending() {
    let receiver = receiver().await;
    let ws = with_checks(
        &receiver,
        &check(r#"{ check = "not_null", columns = ["email"] }"#),
    );
    ws.write("data/people.csv", "id,email\n1,\n");
    let loaded = ws.load();
    let state = StateStore::open(&loaded.state_dir).unwrap();
    let report = backflow::sync::plan_sync(&host(), &loaded, &state, "s", Default::default(), 3)
        .await
        .unwrap();
    assert!(report.blocked);
    assert_eq!(report.checks[0].verdict, "fail");
    assert_eq!(receiver.received().len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_check_naming_a_missing_field_or_bad_config_is_reported() {
    let receiver = receiver().await;
    let ws = with_checks(
        &receiver,
        &check(r#"{ check = "not_null", columns = ["emial"] }"#),
    );
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Blocked);
    assert!(
        run.checks[0].message.contains("sends no field \"emial\""),
        "{}",
        run.checks[0].message
    );

    let ws = with_checks(
        &receiver,
        &check(r#"{ check = "regex", column = "email", pattern = "(" }"#),
    );
    let e = ws.try_run("s").await.unwrap_err();
    assert!(
        e.contains("syncs.s.checks[0].config.pattern: invalid regular expression"),
        "{e}"
    );
}
