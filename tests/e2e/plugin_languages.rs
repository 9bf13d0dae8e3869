//! Plugins in any language (issue 14): the templates `backflow plugin new` writes build and
//! pass the conformance suite, in Rust (contract 0.3.0, MessagePack rows) and in JavaScript
//! and Python (contract 0.2.0, JSON rows); a JavaScript destination and a Python check work
//! in a sync beside plugins built against the old contract.
//!
//! The JavaScript and Python components are built before the tests by
//! `scripts/build-js-plugins` and `scripts/build-python-plugins` (`scripts/test` runs both),
//! from projects those scripts create with `backflow plugin new`. The Rust templates are
//! scaffolded and built here, by their own `test.sh`, exactly as an author would.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_backflow")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// A component built by `scripts/build-{js,python}-plugins`.
fn built(lang: &str, name: &str) -> PathBuf {
    let path = repo().join(format!("target/plugins-{lang}/{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-{lang}-plugins (scripts/test does)",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("running a command");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A static file server on 127.0.0.1 (Python's), standing in for a JSON API; killed on drop.
struct FileServer {
    child: Child,
    port: u16,
}

impl FileServer {
    fn serve(dir: &Path) -> FileServer {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        FileServer { child, port }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const API_ROWS: &str = r#"[
  {"id": 1, "email": "ada@example.com", "mrr": "12.50", "signed_up": "2024-05-01T12:00:00Z"},
  {"id": 2, "email": "grace@example.com", "mrr": "0.00", "signed_up": "2024-05-02T08:30:00.123Z"},
  {"id": 3, "email": null, "mrr": "99.99", "signed_up": "2024-05-03T00:00:00+02:00"}
]"#;

/// Runs the conformance suite on a template's component with the config its kind needs.
async fn conformance(file: &Path, kind: &str) -> (bool, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["plugin", "conformance"])
        .arg(file)
        .env("RUST_LOG", "warn")
        .env("XDG_CACHE_HOME", test_cache_home());
    let _keep = match kind {
        "destination" => {
            let receiver = receiver().await;
            cmd.args([
                "--config",
                &format!(r#"{{"url": "{}"}}"#, receiver.url("/rows")),
                "--grant-network",
                &receiver.addr.to_string(),
            ]);
            cmd.args([
                "--offline-config",
                r#"{"url": "http://127.0.0.1:9/rows"}"#,
                "--grant-network",
                "127.0.0.1:9",
            ]);
            let result = tokio::task::spawn_blocking(move || run(&mut cmd))
                .await
                .unwrap();
            assert!(
                receiver.rows() > 0,
                "the destination sent nothing: {}",
                result.1
            );
            // Every value type arrived as JSON a destination can use: the conformance batches'
            // edge values (exact decimals as strings, timestamps as RFC 3339, base64 bytes).
            let bodies = serde_json::to_string(
                &receiver
                    .received()
                    .iter()
                    .map(|r| r.body.clone())
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            for expected in [
                "\"12345678901234567890.123456789\"",
                "\"2023-11-14T22:13:20.123456Z\"",
                "\"AP8K\"",
                "9223372036854775807",
                "é 中文 🙂",
            ] {
                assert!(
                    bodies.contains(expected),
                    "{expected} not in what {} sent",
                    file.display()
                );
            }
            return result;
        }
        "source" => {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("rows.json"), API_ROWS).unwrap();
            let server = FileServer::serve(dir.path());
            cmd.args([
                "--query",
                "/rows.json",
                "--grant-network",
                &format!("127.0.0.1:{}", server.port),
            ]);
            cmd.args([
                "--config",
                &format!(
                    r#"{{"url": "http://127.0.0.1:{}", "columns": [{{"name": "id", "type": "integer"}}, {{"name": "email", "type": "text"}}, {{"name": "mrr", "type": "decimal"}}, {{"name": "signed_up", "type": "timestamp"}}]}}"#,
                    server.port
                ),
            ]);
            Some((server, dir))
        }
        "check" => {
            cmd.args([
                "--config",
                r#"{"column": "text_value", "max_null_percent": 20}"#,
            ]);
            None
        }
        _ => {
            cmd.args(["--config", r#"{"max_removed": 100}"#]);
            None
        }
    };
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn javascript_templates_pass_the_conformance_suite() {
    for kind in ["destination", "check", "source", "policy"] {
        let file = built("js", &format!("template-{kind}"));
        let (ok, out) = conformance(&file, kind).await;
        assert!(
            ok && out.contains("contract 0.2.0, json rows") && out.contains("conforms"),
            "JS {kind}:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_templates_pass_the_conformance_suite() {
    for kind in ["destination", "check", "source", "policy"] {
        let file = built("python", &format!("template-{kind}"));
        let (ok, out) = conformance(&file, kind).await;
        assert!(
            ok && out.contains("contract 0.2.0, json rows") && out.contains("conforms"),
            "Python {kind}:\n{out}"
        );
    }
}

/// What an author does: `backflow plugin new`, then the project's own `./test.sh`, which
/// builds it for wasm32-wasip2 and runs the conformance suite.
#[test]
fn rust_templates_build_and_pass_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    // One target directory for the four, kept between runs: the SDK compiles once.
    let target = repo().join("target/templates-rust");
    for kind in ["destination", "check", "source", "policy"] {
        let name = format!("rust-{kind}");
        let (ok, out) = run(Command::new(bin())
            .args(["plugin", "new", "--lang", "rust", "--kind", kind, "--dir"])
            .arg(dir.path())
            .arg(&name)
            .arg("--sdk")
            .arg(repo().join("plugin-sdk")));
        assert!(ok, "plugin new: {out}");
        let (ok, out) = run(Command::new(dir.path().join(&name).join("test.sh"))
            .env("BACKFLOW", bin())
            .env("CARGO_TARGET_DIR", &target)
            .env("RUST_LOG", "warn"));
        assert!(
            ok && out.contains("contract 0.3.0, msgpack rows") && out.contains("conforms"),
            "Rust {kind}:\n{out}"
        );
    }
}

/// A project's name must suit npm, Cargo and the plugin's own name; an existing directory is
/// never overwritten.
#[test]
fn plugin_new_refuses_bad_names_and_existing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run(Command::new(bin())
        .args([
            "plugin",
            "new",
            "--lang",
            "js",
            "--kind",
            "destination",
            "--dir",
        ])
        .arg(dir.path())
        .arg("My Plugin"));
    assert!(
        !ok && out.contains("lowercase letters, digits and '-'"),
        "{out}"
    );
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let (ok, out) = run(Command::new(bin())
        .args([
            "plugin", "new", "--lang", "python", "--kind", "check", "--dir",
        ])
        .arg(dir.path())
        .arg("taken"));
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = run(Command::new(bin())
        .args([
            "plugin", "new", "--lang", "python", "--kind", "check", "--dir",
        ])
        .arg(dir.path())
        .arg("fresh"));
    assert!(ok, "{out}");
    for file in ["README.md", "wit/plugin.wit", "backflow_sdk/__init__.py"] {
        assert!(
            dir.path().join("fresh").join(file).is_file(),
            "{file} missing"
        );
    }
}

/// A workspace syncing the customers CSV (mirror) to the JavaScript destination template
/// pointed at `receiver`, gated by the Python check template (no null e-mails); the
/// temporary plugins directory is returned to keep it alive.
async fn js_destination_python_check_workspace(
    receiver: &backflow::toolkit::receiver::Receiver,
) -> (TestWorkspace, tempfile::TempDir) {
    let plugins = tempfile::tempdir().unwrap();
    for (from, to) in [
        (plugins_dir().join("file_source.wasm"), "file_source.wasm"),
        (built("js", "template-destination"), "js_destination.wasm"),
        (built("python", "template-check"), "py_check.wasm"),
    ] {
        std::fs::copy(from, plugins.path().join(to)).unwrap();
    }
    let js_name = host()
        .load(&plugins.path().join("js_destination.wasm"))
        .await
        .unwrap()
        .spec
        .name;
    let py_name = host()
        .load(&plugins.path().join("py_check.wasm"))
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
plugin = "{js_name}"
config.url = "{url}"
grants.network = ["{addr}"]
[syncs.to_crm]
model = "customers"
destination = "crm"
mode = "mirror"
[[syncs.to_crm.checks]]
plugin = "{py_name}"
config = {{ column = "email", max_null_percent = 0 }}
"#,
        plugins = plugins.path().display(),
        url = receiver.url("/contacts"),
        addr = receiver.addr,
    ));
    (ws, plugins)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_javascript_destination_template_takes_401_for_bad_credentials_not_bad_rows() {
    let options = backflow::toolkit::receiver::ReceiverOptions {
        echo_headers_status: Some(401),
        ..Default::default()
    };
    let receiver = backflow::toolkit::receiver::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let (ws, _plugins) = js_destination_python_check_workspace(&receiver).await;
    ws.write("data/customers.csv", CUSTOMERS_CSV);
    let record = ws.run("to_crm").await;
    assert_eq!(record.status.as_str(), "failed", "{record:?}");
    let error = record.error.clone().unwrap_or_default();
    assert!(
        error.contains("config.headers") && error.contains("401"),
        "the error should name the config field: {error}"
    );
    assert!(
        record.rejected.is_empty(),
        "credentials are not the rows' fault: {record:?}"
    );
    assert_eq!(record.delivered.total(), 0, "{record:?}");
}

/// The acceptance of issue 14: a JavaScript destination and a Python quality check, built
/// from the templates, in one sync with the Rust file source (contract 0.3.0).
#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_destination_and_a_python_check_work_in_a_sync() {
    let receiver = receiver().await;
    let (ws, _plugins) = js_destination_python_check_workspace(&receiver).await;
    ws.write("data/customers.csv", CUSTOMERS_CSV);
    let record = ws.run("to_crm").await;
    assert_eq!(record.status.as_str(), "succeeded", "{record:?}");
    assert_eq!(receiver.rows(), 8);
    let first = receiver.received()[0].body.clone();
    assert_eq!(first["operation"], "insert", "{first}");
    let ada = first["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == 1)
        .unwrap_or_else(|| panic!("{first}"));
    assert_eq!(ada["email"], "ada@example.com");
    assert_eq!(ada["name"], "Ada Lovelace");

    // A row without an e-mail: the Python check fails the run before anything is sent.
    ws.write(
        "data/customers.csv",
        &format!("{CUSTOMERS_CSV}9,,Nobody,free,0.00,2024-07-01\n"),
    );
    let record = ws.run("to_crm").await;
    assert_eq!(record.status.as_str(), "blocked", "{record:?}");
    assert_eq!(
        receiver.rows(),
        8,
        "nothing may be sent after a failed check"
    );
    // Deleting a row goes through the JS destination's delete.
    ws.write(
        "data/customers.csv",
        &CUSTOMERS_CSV.lines().take(8).collect::<Vec<_>>().join("\n"),
    );
    let record = ws.run("to_crm").await;
    assert_eq!(record.status.as_str(), "succeeded", "{record:?}");
    let last = receiver.received().last().unwrap().body.clone();
    assert_eq!(last["operation"], "delete", "{last}");
    assert_eq!(last["rows"][0]["id"], 8, "{last}");
}
