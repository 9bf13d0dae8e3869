//! `backflow serve`'s listener as a real process (issue 34): idle connections and slow
//! headers do not keep runs from starting, SIGHUP keeps it serving, JSON logs, HTTPS with a
//! certificate made here, `/metrics` on its own address, `/` to the UI and HTML 404 pages,
//! the per-token limit on state-changing requests, and one plugin entry per file with a
//! relative workspace (and `refused` while an older build serves).

use crate::serve_support::*;
use crate::support::*;
use serde_json::Value as J;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

/// A `backflow serve` started with extra flags; killed when dropped.
struct Served {
    child: Child,
    /// The stdout lines printed at start (listening, web UI, metrics).
    lines: Vec<String>,
    base: String,
    log: PathBuf,
}

impl Served {
    /// Starts `serve` on a free port with `extra` flags, from `cwd`, with `workspace` as given,
    /// and reads its first `lines` stdout lines.
    fn start(
        ws: &TestWorkspace,
        cwd: &Path,
        workspace: &str,
        extra: &[&str],
        lines: usize,
    ) -> Served {
        let log = ws.path().join(format!("serve-{}.log", ulid::Ulid::new()));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--shutdown-grace-s",
                "20",
            ])
            .args(extra)
            .args(["--workspace", workspace])
            .current_dir(cwd)
            .env("RUST_LOG", "backflow=info")
            .env_remove("BACKFLOW_USER")
            .env_remove("BACKFLOW_WORKSPACE")
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
        let mut got = Vec::new();
        while got.len() < lines {
            match rx.recv_timeout(Duration::from_secs(180)) {
                Ok(line) => got.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the service did not print {lines} lines ({got:?}): {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        let base = got[0]
            .split("listening on ")
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected first line {:?}", got[0]))
            .trim()
            .to_string();
        Served {
            child,
            lines: got,
            base,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn addr(&self) -> String {
        self.base.split("://").nth(1).unwrap().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then waits for the process to end.
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.child.wait().unwrap()
    }

    /// Whether the process is still running.
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sync_workspace(receiver: &backflow::toolkit::receiver::Receiver) -> TestWorkspace {
    service_workspace(
        3,
        &format!(
            "{}\n[syncs.crm]\nmodel = \"people\"\ndestination = \"crm\"\n",
            hook("crm", receiver, "/crm", "")
        ),
    )
}

/// Waits until a run of `crm` succeeded, triggering it over the API.
async fn trigger_and_wait(api: &Api, base: &str) -> J {
    let (status, body) = api
        .post(format!("{base}/api/v1/syncs/crm/runs"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    eventually("a finished run of crm", async || {
        let (_, body) = api.get(format!("{base}/api/v1/runs?sync=crm")).await;
        body["runs"]
            .as_array()
            .and_then(|runs| runs.iter().find(|r| r["status"] != "running").cloned())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_and_slow_headers_do_not_keep_runs_from_starting() {
    let receiver = receiver().await;
    let ws = sync_workspace(&receiver);
    let svc = Served::start(
        &ws,
        ws.path(),
        ws.path().to_str().unwrap(),
        &["--max-connections", "50", "--header-read-timeout-s", "2"],
        1,
    );
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    let addr = svc.addr();

    // 500 connections that say nothing, and 20 that send half a request and stall.
    let mut idle: Vec<std::net::TcpStream> = (0..500)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let mut slow: Vec<std::net::TcpStream> = (0..20)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();

    // A run still starts from the API, and the service answers.
    let run = trigger_and_wait(&api, &svc.base).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (status, health) = api.get(svc.url("/healthz")).await;
    assert_eq!(status, 200, "{health}");

    // The silent connections were closed by the service (end of stream or reset), not kept.
    for stream in idle.iter_mut().take(5).chain(slow.iter_mut().take(5)) {
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(n) => assert!(
                n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
                "an idle connection got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) => assert!(
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut,
                "an idle connection was still open after two minutes: {e}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_json_logs_metrics_address_redirect_and_html_404() {
    let receiver = receiver().await;
    let ws = sync_workspace(&receiver);
    let mut svc = Served::start(
        &ws,
        ws.path(),
        ws.path().to_str().unwrap(),
        &["--log-format", "json", "--metrics-listen", "127.0.0.1:0"],
        3,
    );
    assert_eq!(
        svc.lines[1],
        format!("backflow serve: web UI at {}/ui", svc.base)
    );
    let probes = svc.lines[2]
        .split(" on ")
        .nth(1)
        .unwrap_or_else(|| panic!("no metrics line: {:?}", svc.lines))
        .trim()
        .to_string();
    let api = Api::new(Some(&token(&ws, "tester", "tester")));

    // SIGHUP: logged, and the service keeps serving (runs too).
    svc.signal("HUP");
    eventually("the SIGHUP log line", async || {
        svc.log().contains("SIGHUP").then_some(())
    })
    .await;
    assert!(svc.alive(), "SIGHUP ended the service: {}", svc.log());
    let run = trigger_and_wait(&api, &svc.base).await;
    assert_eq!(run["status"], "succeeded", "{run}");

    // /metrics and /healthz are on their own address, and only there.
    let (status, _) = api.get(format!("{probes}/healthz")).await;
    assert_eq!(status, 200);
    let (status, metrics) = api.get(format!("{probes}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        metrics.as_str().unwrap().contains("backflow_runs_total"),
        "{metrics}"
    );
    let (status, _) = api.get(svc.url("/metrics")).await;
    assert_eq!(status, 404, "/metrics left the main address");

    // `/` leads to the UI; an unknown UI page is an HTML page, an unknown API path JSON.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = no_redirects.get(svc.url("/")).send().await.unwrap();
    assert!(root.status().is_redirection(), "{}", root.status());
    assert_eq!(root.headers()["location"], "/ui");
    let page = no_redirects
        .get(svc.url("/ui/no-such-page"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("/ui/no-such-page"));
    let (status, body) = api.get(svc.url("/nothing-here")).await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string(), "{body}");

    // Every log line is one JSON object; the run's lines carry their spans' fields.
    assert!(svc.terminate().success());
    let log = svc.log();
    let lines: Vec<J> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["fields"].is_object()));
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("SIGHUP"))),
        "{log}"
    );
    let finished = lines
        .iter()
        .find(|l| l["fields"]["message"] == "run finished")
        .unwrap_or_else(|| panic!("no run line: {log}"));
    assert_eq!(finished["fields"]["sync"], "crm", "{finished}");
    assert!(finished["fields"]["run_id"].is_string(), "{finished}");
}

#[tokio::test(flavor = "multi_thread")]
async fn state_changing_requests_past_the_per_token_limit_get_429_with_retry_after() {
    let receiver = receiver().await;
    let ws = sync_workspace(&receiver);
    let svc = Served::start(
        &ws,
        ws.path(),
        ws.path().to_str().unwrap(),
        &["--write-requests-per-minute", "2"],
        1,
    );
    let token = token(&ws, "tester", "tester");
    let http = reqwest::Client::new();
    let trigger = || {
        http.post(svc.url("/api/v1/syncs/crm/runs"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(trigger().await.unwrap().status(), 202);
    assert_eq!(trigger().await.unwrap().status(), 202);
    let refused = trigger().await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    let body: J = serde_json::from_str(&refused.text().await.unwrap()).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("try again"),
        "{body}"
    );
    // Reads are not limited; the accepted triggers ran.
    let api = Api::new(Some(&token));
    for _ in 0..5 {
        let (status, _) = api.get(svc.url("/api/v1/syncs")).await;
        assert_eq!(status, 200);
    }
    let runs = finished_runs_at(&api, &svc.base, 1).await;
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:?}");
}

async fn finished_runs_at(api: &Api, base: &str, n: usize) -> Vec<J> {
    eventually("finished runs", async || {
        let (_, body) = api.get(format!("{base}/api/v1/runs?sync=crm")).await;
        let done: Vec<J> = body["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["status"] != "running")
            .collect();
        (done.len() >= n).then_some(done)
    })
    .await
}

/// A self-signed certificate for localhost and 127.0.0.1, made with `openssl` (an end-entity
/// certificate: rustls refuses a CA certificate as a server's).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_https_to_a_client_trusting_the_certificate() {
    let receiver = receiver().await;
    let ws = sync_workspace(&receiver);
    let (cert, key) = self_signed(ws.path());
    let mut svc = Served::start(
        &ws,
        ws.path(),
        ws.path().to_str().unwrap(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        1,
    );
    assert!(svc.base.starts_with("https://127.0.0.1:"), "{}", svc.base);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let health = trusting.get(svc.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // A client that does not trust it, or speaks clear text, gets nothing.
    assert!(reqwest::Client::new()
        .get(svc.url("/healthz"))
        .send()
        .await
        .is_err());
    let plain = format!("http://{}/healthz", svc.addr());
    assert!(reqwest::Client::new().get(plain).send().await.is_err());
    // SIGHUP re-reads the certificate; the service keeps serving HTTPS.
    svc.signal("HUP");
    eventually("the TLS reload", async || {
        svc.log().contains("TLS certificate reloaded").then_some(())
    })
    .await;
    let health = trusting.get(svc.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(svc.alive());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relative_workspace_lists_each_plugin_once_and_a_refused_build_says_so() {
    let receiver = receiver().await;
    let ws = sync_workspace(&receiver);
    // The process runs inside the workspace, given as `.`.
    let svc = Served::start(&ws, ws.path(), ".", &[], 1);
    let api = Api::new(Some(&token(&ws, "tester", "tester")));
    let listed = async || {
        let (status, body) = api.get(svc.url("/api/v1/plugins")).await;
        assert_eq!(status, 200, "{body}");
        body.as_array().unwrap().clone()
    };
    let webhook = |plugins: &[J]| -> Vec<J> {
        plugins
            .iter()
            .filter(|p| p["file"].as_str().unwrap().ends_with("webhook.wasm"))
            .cloned()
            .collect()
    };
    let before = listed().await;
    assert_eq!(before.len(), 2, "{before:?}");
    let serving_hash = webhook(&before)[0]["sha256"].clone();

    // A broken build replaces the file (written aside, then renamed, as a deploy does).
    let dir = ws.path().join("plugins");
    std::fs::write(dir.join(".webhook.tmp"), b"not a component").unwrap();
    std::fs::rename(dir.join(".webhook.tmp"), dir.join("webhook.wasm")).unwrap();
    let refused = eventually("the broken build to be refused", async || {
        let now = listed().await;
        let entries = webhook(&now);
        (entries.iter().any(|p| p["status"] == "refused")).then_some(now)
    })
    .await;
    assert_eq!(refused.len(), 2, "one entry per file: {refused:?}");
    let entry = &webhook(&refused)[0];
    assert!(entry["error"].is_string(), "{entry}");
    assert_eq!(
        entry["sha256"], serving_hash,
        "the previous build keeps serving: {entry}"
    );
    let (_, health) = api.get(svc.url("/healthz")).await;
    assert_eq!(health["plugins_refused"], 1, "{health}");
    // The previous build still runs the sync.
    let run = trigger_and_wait(&api, &svc.base).await;
    assert_eq!(run["status"], "succeeded", "{run}");

    // The good build back: serving again, still one entry per file.
    std::fs::copy(plugin("webhook.wasm"), dir.join(".webhook.tmp")).unwrap();
    std::fs::rename(dir.join(".webhook.tmp"), dir.join("webhook.wasm")).unwrap();
    let back = eventually("the good build to serve again", async || {
        let now = listed().await;
        webhook(&now)
            .iter()
            .all(|p| p["status"] == "serving")
            .then_some(now)
    })
    .await;
    assert_eq!(back.len(), 2, "{back:?}");
    let (_, health) = api.get(svc.url("/healthz")).await;
    assert_eq!(health["plugins_refused"], 0, "{health}");
}
