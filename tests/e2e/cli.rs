//! The `backflow` binary as a user runs it.

use crate::support::*;
use std::process::Command;

fn backflow(args: &[&str], workspace: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(args)
        .arg("--workspace")
        .arg(workspace)
        .env("RUST_LOG", "warn")
        .env_remove("BACKFLOW_WORKSPACE")
        // The workspace's own compile cache, so a test can see what a run compiled.
        .env("BACKFLOW_CACHE_DIR", workspace.join(".backflow/cache"))
        .output()
        .expect("running backflow")
}

/// Every file under `dir` with its inode: a file written again (by a rename) gets a new one.
fn cache_entries(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                out.push((entry.path(), meta.ino()));
            }
        }
    }
    out.sort();
    out
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_run_json_prints_one_object_with_counts() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(&receiver, "", "");
    let path = ws.path().to_path_buf();
    let out =
        tokio::task::spawn_blocking(move || backflow(&["sync", "run", "to_hook", "--json"], &path))
            .await
            .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.trim().lines().count(),
        1,
        "exactly one JSON line: {text}"
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert!(v["run_id"].as_str().is_some_and(|s| s.len() == 26));
    assert_eq!(v["sync"], "to_hook");
    assert_eq!(v["status"], "succeeded");
    for key in ["planned", "delivered", "failed"] {
        for op in ["added", "changed", "removed"] {
            assert!(v[key][op].is_u64(), "{key}.{op} missing in {v}");
        }
    }
    assert_eq!(v["planned"]["added"], 8);
    assert_eq!(v["delivered"]["added"], 8);
    assert_eq!(receiver.rows(), 8);
    // Timings of every stage; this fresh workspace compiled its plugins (the next run reads
    // them from its cache).
    for stage in [
        "prepare_ms",
        "compile_ms",
        "plan_ms",
        "check_ms",
        "approval_ms",
        "deliver_ms",
    ] {
        assert!(
            v["timings"][stage].is_u64(),
            "timings.{stage} missing in {v}"
        );
    }
    // The run compiled its plugins into the workspace's cache; the next run reads them from
    // there: it writes no entry (an entry is written by a rename, so a recompiled one would
    // be a new file). Not `compile_ms`: a duration is no proof of what happened.
    let cached = cache_entries(&ws.path().join(".backflow/cache"));
    assert!(
        cached.len() >= 2,
        "source and destination compiled: {cached:?}"
    );
    let path = ws.path().to_path_buf();
    let again =
        tokio::task::spawn_blocking(move || backflow(&["sync", "run", "to_hook", "--json"], &path))
            .await
            .unwrap();
    let again: serde_json::Value = serde_json::from_str(stdout(&again).trim()).unwrap();
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(
        cache_entries(&ws.path().join(".backflow/cache")),
        cached,
        "the second run compiled nothing"
    );

    // The run shows up in history.
    let path = ws.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || backflow(&["runs", "--json"], &path))
        .await
        .unwrap();
    let runs: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(runs[0]["run_id"], again["run_id"], "newest first");
    assert_eq!(runs[1]["run_id"], v["run_id"]);
}

#[test]
fn config_errors_exit_non_zero_with_the_file_and_key() {
    let ws = TestWorkspace::new("[sources.x]\nplugin = \"file-source\"\nbogus = 1\n");
    let out = backflow(&["sync", "list"], ws.path());
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("backflow.toml") && e.contains("unknown field `bogus`"),
        "{e}"
    );

    let empty = tempfile::tempdir().unwrap();
    let out = backflow(&["sync", "list"], empty.path());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no workspace here"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn plugin_list_skips_files_that_are_not_plugins_and_says_why() {
    let ws = TestWorkspace::new("[workspace]\nplugins_dir = \"plugins\"\n");
    std::fs::create_dir_all(ws.path().join("plugins")).unwrap();
    std::fs::copy(
        plugin("webhook.wasm"),
        ws.path().join("plugins/webhook.wasm"),
    )
    .unwrap();
    std::fs::write(ws.path().join("plugins/notes.txt"), "not wasm").unwrap();
    std::fs::write(ws.path().join("plugins/fake.wasm"), "definitely not wasm").unwrap();
    let out = backflow(&["plugin", "list"], ws.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("webhook") && stdout(&out).contains("destination"),
        "{}",
        stdout(&out)
    );
    let e = stderr(&out);
    assert!(e.contains("notes.txt: not a plugin"), "{e}");
    assert!(
        e.contains("fake.wasm") && e.contains("not a WebAssembly file"),
        "{e}"
    );

    let out = backflow(&["plugin", "list", "--json"], ws.path());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["plugins"].as_array().unwrap().len(), 1);
    assert_eq!(v["plugins"][0]["contract"], "0.3.0", "{v}");
    assert_eq!(v["plugins"][0]["row_encoding"], "msgpack", "{v}");
    assert_eq!(v["problems"].as_array().unwrap().len(), 2);
}

#[test]
fn plugin_inspect_shows_kind_spec_schema_and_contract() {
    let dir = tempfile::tempdir().unwrap();
    let webhook = plugin("webhook.wasm");
    let out = backflow(
        &["plugin", "inspect", webhook.to_str().unwrap(), "--json"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["name"], "webhook");
    assert_eq!(v["kind"], "destination");
    assert_eq!(v["wit"], "backflow:plugin@0.3.0");
    assert_eq!(v["config_schema"]["required"][0], "url");

    let text = dir.path().join("x.wasm");
    std::fs::write(&text, "hello").unwrap();
    let out = backflow(&["plugin", "inspect", text.to_str().unwrap()], dir.path());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a WebAssembly file"),
        "{}",
        stderr(&out)
    );

    // A core module is not a component.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let out = backflow(&["plugin", "inspect", core.to_str().unwrap()], dir.path());
    assert!(
        stderr(&out).contains("core WebAssembly module, not a component"),
        "{}",
        stderr(&out)
    );
}

/// componentize-js with its default features builds components that import wasi:http,
/// which the engine does not provide: the error names the import and what to do instead.
#[test]
fn a_plugin_importing_what_the_engine_lacks_is_refused_naming_the_import() {
    let dir = tempfile::tempdir().unwrap();
    let refused = plugins_dir().join("../plugins-refused/imports_http.wasm");
    let out = backflow(
        &["plugin", "inspect", refused.to_str().unwrap()],
        dir.path(),
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("it imports `wasi:http/"), "{e}");
    assert!(
        e.contains("which backflow does not provide")
            && e.contains("http-send")
            && e.contains("--disable http --disable fetch-event"),
        "{e}"
    );
}

#[test]
fn init_creates_a_workspace_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("ws");
    let out = Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args([
            "init",
            target.to_str().unwrap(),
            "--plugins",
            plugins_dir().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = backflow(&["sync", "list"], &target);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("customers_to_crm"),
        "{}",
        stdout(&out)
    );
    // A second init refuses to overwrite.
    let out = Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args([
            "init",
            target.to_str().unwrap(),
            "--plugins",
            plugins_dir().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn every_plugin_kind_builds_with_the_sdk_and_inspects() {
    let dir = tempfile::tempdir().unwrap();
    for (file, kind) in [
        ("file_source.wasm", "source"),
        ("webhook.wasm", "destination"),
        ("fixture_check.wasm", "quality-check"),
        ("fixture_policy.wasm", "approval-policy"),
    ] {
        let path = plugins_dir().join(file);
        let out = backflow(
            &["plugin", "inspect", path.to_str().unwrap(), "--json"],
            dir.path(),
        );
        assert!(out.status.success(), "{file}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(v["kind"], kind, "{file}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_plan_and_sync_test_from_the_command_line() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(&receiver, "", "");
    let path = ws.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        backflow(
            &["sync", "plan", "to_hook", "--json", "--samples", "2"],
            &path,
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["diff"]["added"], 8);
    assert_eq!(v["planned"]["added"], 8);
    assert_eq!(v["samples"]["added"].as_array().unwrap().len(), 2);
    assert_eq!(receiver.received().len(), 0, "a plan sends nothing");

    let path = ws.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        backflow(&["sync", "test", "to_hook", "--row", "3", "--json"], &path)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["outcome"], "accepted");
    assert_eq!(receiver.rows(), 1);
    assert_eq!(receiver.received()[0].body[0]["email"], "alan@example.com");
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_run_all_runs_syncs_in_parallel_and_a_dead_destination_does_not_stop_the_others() {
    let receiver = receiver().await;
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ws = file_workspace(
        "customers",
        "customers.csv",
        &format!(
            r#"
[destinations.live]
plugin = "webhook"
config.url = "{url}"
grants.network = ["{addr}"]
[destinations.dead]
plugin = "webhook"
config.url = "http://127.0.0.1:{dead_port}/in"
grants.network = ["127.0.0.1:{dead_port}"]
[syncs.to_live]
model = "customers"
destination = "live"
[syncs.to_dead]
model = "customers"
destination = "dead"
"#,
            url = receiver.url("/in"),
            addr = receiver.addr
        ),
    );
    ws.write("data/customers.csv", CUSTOMERS_CSV);
    let path = ws.path().to_path_buf();
    let out =
        tokio::task::spawn_blocking(move || backflow(&["sync", "run", "--all", "--json"], &path))
            .await
            .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "one sync partial: {}",
        stderr(&out)
    );
    let runs: Vec<serde_json::Value> = serde_json::from_str(stdout(&out).trim()).unwrap();
    let by_name = |n: &str| runs.iter().find(|r| r["sync"] == n).unwrap().clone();
    assert_eq!(by_name("to_live")["status"], "succeeded");
    assert_eq!(by_name("to_live")["delivered"]["added"], 8);
    assert_eq!(by_name("to_dead")["status"], "partial");
    assert_eq!(by_name("to_dead")["failed"]["added"], 8);
    assert_eq!(receiver.rows(), 8);
}

#[test]
fn a_destination_declares_its_default_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = plugins_dir().join("misbehave.wasm");
    let out = backflow(
        &["plugin", "inspect", path.to_str().unwrap(), "--json"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["default_rate_limit"]["requests_per_second"], 4.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn destination_answers_cannot_drive_the_terminal() {
    // A row whose value carries escape sequences (clear screen, set the window title), echoed
    // back by the destination in its refusal.
    let evil = "\u{1b}[2J\u{1b}]0;pwned\u{7}bad@x.com";
    let receiver = backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        backflow::toolkit::receiver::ReceiverOptions {
            reject: Some(("email".into(), evil.into())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ws = csv_to_webhook(&receiver, "config.batch_mode = \"row\"", "");
    ws.write("data/customers.csv", &format!("id,email,name,plan,mrr,signed_up\n1,{evil},Eve,pro,1.00,2024-01-01\n2,ok@x.com,Ok,pro,1.00,2024-01-01\n"));
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["sync", "run", "to_hook", "--json", "--workspace"])
        .arg(ws.path())
        .output()
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(record["failed"]["added"], 1, "{record}");
    let show = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args([
            "runs",
            "show",
            record["run_id"].as_str().unwrap(),
            "--workspace",
        ])
        .arg(ws.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("rejected 1") && text.contains("\\u{1b}[2J"),
        "shown escaped: {text}"
    );
    assert!(
        !show.stdout.iter().any(|&b| b == 0x1b || b == 0x07),
        "no raw control bytes: {text:?}"
    );
}

#[test]
fn plugin_inspect_compiles_a_plugin_once() {
    // Outside any workspace: the user's cache directory.
    let cache = tempfile::tempdir().unwrap();
    let nowhere = tempfile::tempdir().unwrap();
    let inspect = || {
        Command::new(env!("CARGO_BIN_EXE_backflow"))
            .args(["plugin", "inspect"])
            .arg(plugin("webhook.wasm"))
            .arg("--workspace")
            .arg(nowhere.path())
            .env("XDG_CACHE_HOME", cache.path())
            .env_remove("BACKFLOW_CACHE_DIR")
            .env("RUST_LOG", "info")
            .output()
            .unwrap()
    };
    let first = inspect();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("compiling plugin"),
        "the first inspect compiles"
    );
    let compiled = cache_entries(&cache.path().join("backflow/compiled"));
    assert!(!compiled.is_empty());
    let second = inspect();
    assert!(second.status.success());
    assert!(
        !String::from_utf8_lossy(&second.stderr).contains("compiling plugin"),
        "the second reads the cache: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    // Not written again either (a recompiled entry is renamed into place: a new inode).
    assert_eq!(
        cache_entries(&cache.path().join("backflow/compiled")),
        compiled
    );
}
