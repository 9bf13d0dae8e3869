//! The sandbox: traps, timeouts, memory exhaustion and ungranted access become errors for
//! the run, never a crash of the engine.

use crate::support::*;
use backflow::state::RunStatus;

/// A workspace whose destination is the `misbehave` fixture configured with `config`.
fn misbehaving(config: &str, extra: &str) -> TestWorkspace {
    let ws = file_workspace(
        "m",
        "rows.csv",
        &format!(
            r#"
[destinations.bad]
plugin = "misbehave"
config = {config}
{extra}
[destinations.fine]
plugin = "noop-destination"
[syncs.bad]
model = "m"
destination = "bad"
[syncs.fine]
model = "m"
destination = "fine"
"#
        ),
    );
    ws.write("data/rows.csv", "id,name\n1,a\n2,b\n");
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_plugin_fails_its_run_and_the_engine_carries_on() {
    let ws = misbehaving(r#"{ on_write = "trap" }"#, "");
    let ws_loaded = ws.load();
    let host = host();
    let state = backflow::state::StateStore::open(&ws_loaded.state_dir).unwrap();
    let options = backflow::sync::RunOptions::default();
    let bad = backflow::app::run_sync(&host, &ws_loaded, &state, "bad", &options)
        .await
        .unwrap();
    assert_eq!(bad.status, RunStatus::Failed);
    let error = bad.error.unwrap();
    assert!(error.contains("plugin misbehave crashed"), "{error}");
    assert!(
        error.contains("deliberate panic in write"),
        "the panic message should be in the error: {error}"
    );
    assert_eq!(bad.delivered.added, 0);
    // Same process, same host: another sync still runs.
    let fine = backflow::app::run_sync(&host, &ws_loaded, &state, "fine", &options)
        .await
        .unwrap();
    assert_eq!(fine.status, RunStatus::Succeeded, "{fine:?}");
    assert_eq!(fine.delivered.added, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_spins_is_stopped_at_its_cpu_limit() {
    let ws = misbehaving(r#"{ on_write = "spin" }"#, "limits.call_timeout_ms = 300");
    let run = ws.run("bad").await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains("exceeded its CPU time limit of 300 ms"),
        "{error}"
    );
}

/// The CPU budget counts the CPU time the call used, not the wall time it took: here the
/// runtime's only thread is taken away from the plugin for 50 ms at every epoch tick where
/// it yields, as a busy machine's scheduler would, so the call takes about three times its
/// 400 ms of running, well over its 1,000 ms budget, without using more than 400 ms of it.
#[tokio::test(flavor = "current_thread")]
async fn time_a_plugin_spends_descheduled_is_not_charged_to_its_cpu_budget() {
    let ws = misbehaving(
        r#"{ on_write = "busy", busy_ms = 400 }"#,
        "limits.call_timeout_ms = 1000",
    );
    let done = std::sync::atomic::AtomicBool::new(false);
    let run = async {
        let run = ws.run("bad").await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        run
    };
    let descheduler = async {
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::task::yield_now().await;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let (run, ()) = tokio::join!(run, descheduler);
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.delivered.added, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_hoards_memory_is_stopped_at_its_memory_limit() {
    let ws = misbehaving(r#"{ on_write = "oom" }"#, "limits.memory_mb = 32");
    let run = ws.run("bad").await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap();
    assert!(error.contains("exceeded its memory limit"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_leaks_host_resources_is_stopped_at_a_limit_set_by_its_memory_budget() {
    // 32 MiB of budget allows 2,048 host resources (64 per MiB); wasmtime's own cap is a
    // million, hundreds of MiB of host memory the memory limit never saw.
    let ws = misbehaving(r#"{ on_write = "leak_handles" }"#, "limits.memory_mb = 32");
    let run = ws.run("bad").await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap();
    assert!(error.contains("plugin misbehave held more than 2048 host resources (streams, pollables, sockets) at once and was stopped"), "{error}");
    // The engine carries on.
    assert_eq!(ws.run("fine").await.status, RunStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_plugin_prints_reaches_the_debug_log_with_its_name_and_without_secrets() {
    let ws = misbehaving(
        r#"{ on_write = "print", name = "BACKFLOW_E2E_PRINTED_SECRET" }"#,
        r#"grants.env = ["BACKFLOW_E2E_PRINTED_SECRET"]"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["sync", "run", "bad", "--workspace"])
        .arg(ws.path())
        .env("RUST_LOG", "backflow=debug")
        .env("NO_COLOR", "1")
        .env("BACKFLOW_E2E_PRINTED_SECRET", "tok-printed-9931")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let line = |text: &str| {
        log.lines()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no log line with {text:?} in:\n{log}"))
            .to_string()
    };
    let stdout = line("misbehave says hello on stdout (2 rows)");
    assert!(
        stdout.contains("DEBUG")
            && stdout.contains("plugin=misbehave")
            && stdout.contains("stream=\"stdout\""),
        "{stdout}"
    );
    let stderr = line("misbehave warns on stderr");
    assert!(
        stderr.contains("stream=\"stderr\"") && stderr.contains("token=[redacted]"),
        "{stderr}"
    );
    line("an unfinished line");
    assert!(
        !log.contains("tok-printed-9931"),
        "the granted secret never reaches the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_to_an_ungranted_host_is_denied_with_a_clear_error() {
    let receiver = receiver().await;
    // Granted a different port than the one it calls.
    let ws = misbehaving(
        &format!(r#"{{ on_write = "http", url = "{}" }}"#, receiver.url("/x")),
        r#"grants.network = ["127.0.0.1:1"]"#,
    );
    let run = ws.run("bad").await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains(&format!(
            "{} is not granted to plugin misbehave",
            receiver.addr
        )),
        "{error}"
    );
    assert!(error.contains("grants.network"), "{error}");
    assert_eq!(receiver.received().len(), 0);

    // Granted: the same call goes through.
    let ws = misbehaving(
        &format!(r#"{{ on_write = "http", url = "{}" }}"#, receiver.url("/x")),
        &format!(r#"grants.network = ["{}"]"#, receiver.addr),
    );
    let run = ws.run("bad").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_and_environment_are_invisible_unless_granted() {
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    let ws = misbehaving(
        &format!(
            r#"{{ on_write = "read_file", path = "{}" }}"#,
            secret_file.path().display()
        ),
        "",
    );
    let run = ws.run("bad").await;
    let error = run.error.unwrap();
    assert!(error.contains("read_file denied"), "{error}");

    // Set in the environment of the process running the sync, but not granted.
    let ws = misbehaving(r#"{ on_write = "env", name = "BACKFLOW_E2E_HIDDEN" }"#, "");
    let out = tokio::task::block_in_place(|| {
        backflow_with_env(
            &ws,
            None,
            &["sync", "run", "bad", "--json"],
            &[("BACKFLOW_E2E_HIDDEN", "visible?")],
        )
    });
    let error = out.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("env: not visible"),
        "{error}\n{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_without_a_file_grant_cannot_read_the_file() {
    let ws = misbehaving(r#"{}"#, "");
    let toml = std::fs::read_to_string(ws.path().join("backflow.toml"))
        .unwrap()
        .replace("grants.files = [\"data\"]", "");
    std::fs::write(ws.path().join("backflow.toml"), toml).unwrap();
    let run = ws.run("fine").await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains("cannot open data/rows.csv") && error.contains("grants.files"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_waits_forever_is_stopped_at_its_wall_clock_limit() {
    let ws = misbehaving(r#"{ on_write = "sleep" }"#, "limits.wall_timeout_ms = 500");
    let run = ws.run("bad").await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains("plugin misbehave did not return within 500 ms (its wall-clock limit"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_cannot_override_the_host_header() {
    let receiver = receiver().await;
    let ws = misbehaving(
        &format!(
            r#"{{ on_write = "http", url = "{}", host_header = "admin.internal" }}"#,
            receiver.url("/x")
        ),
        &format!(r#"grants.network = ["{}"]"#, receiver.addr),
    );
    let error = ws.run("bad").await.error.unwrap();
    assert!(
        error.contains("header \"Host\" is set by the host"),
        "{error}"
    );
    assert_eq!(receiver.received().len(), 0);
}
