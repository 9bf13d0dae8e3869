//! Helpers for tests that drive a real `backflow serve` process: starting it, calling its API
//! with a token, waiting for runs.

use crate::support::*;
use backflow::toolkit::receiver::Receiver;
use serde_json::Value as J;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

/// A running `backflow serve`; killed when dropped.
pub struct Service {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Service {
    pub fn start(ws: &TestWorkspace) -> Service {
        Service::try_start(ws).unwrap_or_else(|e| panic!("the service did not start: {e}"))
    }

    /// Starts a service on a free port and waits for its "listening" line.
    pub fn try_start(ws: &TestWorkspace) -> Result<Service, String> {
        let log = ws.path().join(format!("serve-{}.log", ulid::Ulid::new()));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--shutdown-grace-s",
                "20",
                "--workspace",
            ])
            .arg(ws.path())
            .env("RUST_LOG", "backflow=info")
            .env_remove("BACKFLOW_USER")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(180));
        match line {
            Ok(line) => match line.split("listening on ").nth(1) {
                Some(base) => Ok(Service {
                    child,
                    base: base.trim().to_string(),
                    log,
                }),
                // Not a service we can talk to: stop it rather than leave it running.
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(format!("unexpected first line {line:?}"))
                }
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::fs::read_to_string(&log).unwrap_or_default())
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the process to end.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client acting with `token` (or none).
pub struct Api {
    http: reqwest::Client,
    token: Option<String>,
}

impl Api {
    pub fn new(token: Option<&str>) -> Api {
        // The engine builds reqwest without a bundled crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Api {
            http: reqwest::Client::new(),
            token: token.map(str::to_string),
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<String>,
    ) -> (u16, J) {
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(J::String(text)),
        )
    }

    pub async fn get(&self, url: String) -> (u16, J) {
        self.send(reqwest::Method::GET, url, None).await
    }

    pub async fn post(&self, url: String, body: Option<J>) -> (u16, J) {
        self.send(reqwest::Method::POST, url, body.map(|b| b.to_string()))
            .await
    }
}

/// Polls `check` every 100 ms until it returns something; panics after two minutes (a hang,
/// not a speed assertion).
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..1200 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A workspace with its own copy of the plugins (hot reload changes them), a CSV source of
/// `rows` people, and `rest` (destinations, syncs, alerts, users).
pub fn service_workspace(rows: usize, rest: &str) -> TestWorkspace {
    let ws = TestWorkspace::new(&format!(
        "[workspace]\nplugins_dir = \"plugins\"\n[sources.files]\nplugin = \"file-source\"\ngrants.files = [\"data\"]\n[models.people]\nsource = \"files\"\nquery = \"data/people.csv\"\nprimary_key = \"id\"\n[models.broken]\nsource = \"files\"\nquery = \"data/missing.csv\"\nprimary_key = \"id\"\n{rest}"
    ));
    std::fs::create_dir_all(ws.path().join("plugins")).unwrap();
    for name in ["file_source.wasm", "webhook.wasm"] {
        std::fs::copy(plugin(name), ws.path().join("plugins").join(name)).unwrap();
    }
    let mut csv = String::from("id,email\n");
    for i in 1..=rows {
        csv.push_str(&format!("{i},user{i}@example.com\n"));
    }
    ws.write("data/people.csv", &csv);
    ws
}

pub fn hook(name: &str, receiver: &Receiver, path: &str, extra: &str) -> String {
    format!("[destinations.{name}]\nplugin = \"webhook\"\nconfig.url = \"{}\"\ngrants.network = [\"{}\"]\n{extra}\n", receiver.url(path), receiver.addr)
}

pub fn token(ws: &TestWorkspace, admin: &str, for_user: &str) -> String {
    let out = ok(
        backflow_as(
            ws,
            admin,
            &[
                "token", "create", "--for", for_user, "--name", "test", "--json",
            ],
        ),
        "token create",
    );
    out.json()["token"].as_str().unwrap().to_string()
}

pub async fn runs_of(api: &Api, svc: &Service, sync: &str) -> Vec<J> {
    let (status, body) = api
        .get(svc.url(&format!("/api/v1/runs?sync={sync}&limit=100")))
        .await;
    assert_eq!(status, 200, "{body}");
    body["runs"].as_array().cloned().unwrap_or_default()
}

/// Run `id` (as a trigger answered it) once it has finished.
pub async fn finished_run(api: &Api, svc: &Service, id: &str) -> J {
    eventually(&format!("run {id} finished"), async || {
        let (status, run) = api.get(svc.url(&format!("/api/v1/runs/{id}"))).await;
        (status == 200 && run["status"] != "running" && run["status"] != "queued").then_some(run)
    })
    .await
}

/// The finished runs of `sync` once there are at least `n`.
pub async fn finished_runs(api: &Api, svc: &Service, sync: &str, n: usize) -> Vec<J> {
    eventually(&format!("{n} finished runs of {sync}"), async || {
        let runs = runs_of(api, svc, sync).await;
        let done: Vec<J> = runs
            .into_iter()
            .filter(|r| r["status"] != "running")
            .collect();
        (done.len() >= n).then_some(done)
    })
    .await
}
