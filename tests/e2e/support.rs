//! Helpers shared by the end-to-end tests.

use backflow::host::PluginHost;
use backflow::state::{RunRecord, StateStore};
use backflow::sync::RunOptions;
use backflow::toolkit::receiver::{Receiver, ReceiverOptions};
use backflow::workspace::Workspace;
use std::path::{Path, PathBuf};

/// Where `scripts/build-plugins` puts the compiled components.
pub fn plugins_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    for name in [
        "file_source.wasm",
        "webhook.wasm",
        "noop_destination.wasm",
        "misbehave.wasm",
    ] {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: run scripts/build-plugins (or scripts/test) first",
            dir.join(name).display()
        );
    }
    dir.canonicalize().unwrap()
}

pub fn plugin(name: &str) -> PathBuf {
    plugins_dir().join(name)
}

/// A host sharing one compiled-component cache across tests (writes are atomic renames), in
/// a plugin registry (which resolves plugin references; it dereferences to the host).
pub fn host() -> backflow::plugins::Registry {
    PluginHost::new(Some(test_cache_home().join("backflow/compiled")))
        .expect("plugin host")
        .into()
}

/// The `XDG_CACHE_HOME` of `backflow` commands run by tests: their compiled-code cache
/// (`$XDG_CACHE_HOME/backflow/compiled`, used outside a workspace) is then the one
/// [`host`] uses, so a large component (an interpreter inside) compiles once per test run.
pub fn test_cache_home() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-cache")
}

pub struct TestWorkspace {
    pub dir: tempfile::TempDir,
}

impl TestWorkspace {
    /// A workspace whose backflow.toml is `toml` with `{plugins}` replaced by the plugins
    /// directory.
    pub fn new(toml: &str) -> TestWorkspace {
        let dir = tempfile::tempdir().unwrap();
        let toml = toml.replace("{plugins}", plugins_dir().to_str().unwrap());
        std::fs::write(dir.path().join("backflow.toml"), toml).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        TestWorkspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, content: &str) {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub fn load(&self) -> Workspace {
        Workspace::load(self.path()).unwrap_or_else(|e| panic!("workspace should load: {e}"))
    }

    /// Runs a sync in-process; panics if it cannot start.
    pub async fn run(&self, sync: &str) -> RunRecord {
        self.try_run(sync)
            .await
            .unwrap_or_else(|e| panic!("sync {sync} could not start: {e}"))
    }

    pub async fn try_run(&self, sync: &str) -> Result<RunRecord, String> {
        let ws = self.load();
        let host = host();
        let state = StateStore::open(&ws.state_dir).unwrap();
        backflow::app::run_sync(
            &host,
            &ws,
            &state,
            sync,
            &RunOptions {
                trigger: "test".into(),
                user: "tester".into(),
                approved_run: None,
                full_resync: false,
                draft: false,
                undo: None,
                stop: None,
                run_id: None,
            },
        )
        .await
        .map_err(|e| e.to_string())
    }
}

pub async fn receiver() -> Receiver {
    backflow::toolkit::receiver::start("127.0.0.1:0".parse().unwrap(), ReceiverOptions::default())
        .await
        .unwrap()
}

pub const CUSTOMERS_CSV: &str = "\
id,email,name,plan,mrr,signed_up
1,ada@example.com,Ada Lovelace,enterprise,1250.00,2021-03-04
2,grace@example.com,Grace Hopper,pro,99.00,2022-07-19
3,alan@example.com,Alan Turing,pro,99.00,2022-11-02
4,edsger@example.com,Edsger Dijkstra,free,0.00,2023-01-15
5,barbara@example.com,\"Liskov, Barbara\",enterprise,1800.50,2023-05-30
6,donald@example.com,Donald Knuth,pro,99.00,2023-09-12
7,frances@example.com,Frances Allen,free,0.00,2024-02-01
8,ken@example.com,Ken Thompson,pro,149.00,2024-06-21
";

/// A workspace whose `files` source (file-source, granted `data/`) feeds model `model` from
/// `data/FILE` (primary key `id`); `rest` adds destinations and syncs.
pub fn file_workspace(model: &str, file: &str, rest: &str) -> TestWorkspace {
    TestWorkspace::new(&format!(
        "[workspace]\nplugins_dir = \"{{plugins}}\"\n[sources.files]\nplugin = \"file-source\"\ngrants.files = [\"data\"]\n[models.{model}]\nsource = \"files\"\nquery = \"data/{file}\"\nprimary_key = \"id\"\n{rest}"
    ))
}

/// A workspace with a CSV source and a webhook destination pointed at `receiver`.
pub fn csv_to_webhook(
    receiver: &Receiver,
    destination_extra: &str,
    sync_extra: &str,
) -> TestWorkspace {
    let ws = file_workspace(
        "customers",
        "customers.csv",
        &format!(
            "[destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"{url}\"\ngrants.network = [\"{addr}\"]\n{destination_extra}\n\n[syncs.to_hook]\nmodel = \"customers\"\ndestination = \"hook\"\n{sync_extra}\n",
            url = receiver.url("/contacts"),
            addr = receiver.addr,
        ),
    );
    ws.write("data/customers.csv", CUSTOMERS_CSV);
    ws
}

/// Replaces the first `from` in the workspace's backflow.toml with `to` (which must be there).
pub fn edit(ws: &TestWorkspace, from: &str, to: &str) {
    let toml = std::fs::read_to_string(ws.path().join("backflow.toml")).unwrap();
    assert!(toml.contains(from), "{from:?} not in backflow.toml");
    ws.write("backflow.toml", &toml.replacen(from, to, 1));
}

/// What a `backflow` command printed, and its exit code.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Runs the `backflow` binary on the workspace as `user`.
pub fn backflow_as(ws: &TestWorkspace, user: &str, args: &[&str]) -> Out {
    backflow_with_env(ws, Some(user), args, &[])
}

/// Runs the `backflow` binary on the workspace (as `user`, if given) with extra environment
/// variables. Tests never change their own environment (`std::env::set_var`): other tests of
/// this binary spawn processes at the same time, and would inherit (or race) the change.
pub fn backflow_with_env(
    ws: &TestWorkspace,
    user: Option<&str>,
    args: &[&str],
    env: &[(&str, &str)],
) -> Out {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"));
    cmd.args(args).arg("--workspace").arg(ws.path());
    if let Some(user) = user {
        cmd.args(["--as", user]);
    }
    let out = cmd
        .env("RUST_LOG", "warn")
        .env_remove("BACKFLOW_USER")
        .envs(env.iter().copied())
        .output()
        .expect("running backflow");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// Asserts the command succeeded.
pub fn ok(out: Out, what: &str) -> Out {
    assert_eq!(
        out.code, 0,
        "{what} failed:\nstdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    out
}

/// A prerequisite of a test (root for a tmpfs, a program, a built component) is missing.
/// Under CI (`CI=true`) that fails the test: a runner that lacks it must be fixed, not
/// silently pass. Elsewhere the test is skipped with a note, and the caller returns.
pub fn missing_prerequisite(what: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "CI=true and a test prerequisite is missing: {what}");
    eprintln!("skipped (not under CI=true): {what}");
}

/// An HTTP/1.1 server on 127.0.0.1 for what the receiver cannot do (hold a request until a
/// test says so, answer with a huge body): each request is read whole, then answered with
/// what `respond` gives (status, body), one request per connection.
pub async fn raw_http_server<F, Fut>(respond: F) -> std::net::SocketAddr
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = (u16, Vec<u8>)> + Send,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let respond = respond.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    request.extend_from_slice(&buf[..n]);
                    let Some(head_end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= head_end + 4 + length {
                        break;
                    }
                }
                let (status, body) = respond().await;
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}
