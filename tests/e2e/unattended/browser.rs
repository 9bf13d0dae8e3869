//! The web UI in a real headless Chromium (as tests/e2e/ui.rs drives it) for what issue 34
//! left: each plugin's status (`refused` with why, `awaiting_publish` with the new hash), the
//! held-run reject and cancel buttons, and the audit log's next-page link.

use crate::serve_support::*;
use crate::support::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// A chromedriver process (in its own process group) and a headless Chromium session.
struct Browser {
    driver: std::process::Child,
    client: Client,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/test installs it)");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": "/usr/bin/chromium", "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1366,900"] }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Browser { driver, client }
    }

    async fn go(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn source(&self) -> String {
        self.client.source().await.unwrap_or_default()
    }

    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap(),
            Err(e) => panic!("{css}: {e}\n{}", self.source().await),
        }
    }

    async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .send_keys(text)
            .await
            .unwrap();
    }

    /// Clicks what loads another page and waits until that page has loaded.
    async fn click_to_navigate(&self, css: &str) {
        let old = self.client.find(Locator::Css("html")).await.unwrap();
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.click().await.unwrap(),
            Err(e) => panic!("{css}: {e}\n{}", self.source().await),
        }
        for _ in 0..600 {
            if old.tag_name().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..600 {
            let state = self
                .client
                .execute("return document.readyState", vec![])
                .await
                .ok();
            if state == Some(json!("complete")) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("clicking {css} did not load a page");
    }

    async fn sign_in(&self, svc: &Service, token: &str) {
        self.go(&svc.url("/ui/login")).await;
        self.type_into("#token", token).await;
        self.click_to_navigate("#signin").await;
    }

    async fn sign_out(&self) {
        self.click_to_navigate("header form button").await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver's own process group (it and the Chromium it started); `pkill -g`, as
        // tests/e2e/ui.rs does.
        let group = self.driver.id();
        if group > 1 {
            let _ = std::process::Command::new("pkill")
                .args(["-KILL", "-g", &group.to_string()])
                .status();
        }
        let _ = self.driver.wait();
    }
}

/// `component` with a custom section appended: another build (another hash) of the same plugin.
fn rebuilt(component: &std::path::Path, marker: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(component).unwrap();
    let name = b"backflow-test";
    bytes.push(0);
    let mut n = 1 + name.len() + marker.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        bytes.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            break;
        }
    }
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(marker.as_bytes());
    bytes
}

/// Writes `bytes` beside `path`, then renames over it (as deploys do).
fn replace(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The held run a trigger by `api` ends in.
async fn held_run(api: &Api, svc: &Service) -> String {
    let (status, body) = api.post(svc.url("/api/v1/syncs/crm/runs"), None).await;
    assert_eq!(status, 202, "{body}");
    let run = finished_run(api, svc, body["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    run["run_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ui_shows_plugin_statuses_rejects_and_cancels_held_runs_and_pages_the_audit_log() {
    let receiver = receiver().await;
    let ws = service_workspace(
        3,
        &format!(
            "{}\n[syncs.crm]\nmodel = \"people\"\ndestination = \"a\"\n{}\n[[policies]]\nplugin = \"policies\"\nconfig = {{ run_approval_above_rows = 2 }}\n",
            hook("a", &receiver, "/a", ""),
            super::TEAM
        ),
    );
    std::fs::copy(
        plugin("policies.wasm"),
        ws.path().join("plugins/policies.wasm"),
    )
    .unwrap();
    for (user, args) in [
        ("carol", &["change", "submit", "-m", "first"][..]),
        ("alice", &["change", "approve", "1"][..]),
        ("carol", &["change", "publish", "1"][..]),
    ] {
        ok(backflow_as(&ws, user, args), "publish");
    }
    // More audit entries than one page holds (500), through the state's own API.
    {
        let state = backflow::state::StateStore::open(&ws.path().join(".backflow")).unwrap();
        let events = (0..510)
            .map(|i| backflow::state::AuditEvent {
                user: "filler".into(),
                action: "test.fill".into(),
                target: format!("entry {i}"),
                config_hash: None,
                detail: json!({}),
            })
            .collect();
        state.write_governance(Vec::new(), events).unwrap();
    }
    let svc = Service::start(&ws);
    let (bob_token, carol_token) = (token(&ws, "alice", "bob"), token(&ws, "alice", "carol"));
    let (bob, carol) = (Api::new(Some(&bob_token)), Api::new(Some(&carol_token)));
    let browser = Browser::start().await;

    // An approver rejects a held run with its button, with a comment.
    let first = held_run(&carol, &svc).await;
    browser.sign_in(&svc, &bob_token).await;
    browser.go(&svc.url(&format!("/ui/runs/{first}"))).await;
    browser
        .type_into(
            "form[action$='/reject'] input[name=comment]",
            "not before Monday",
        )
        .await;
    browser.click_to_navigate("#reject-run").await;
    let (_, rejected) = bob.get(svc.url(&format!("/api/v1/runs/{first}"))).await;
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    assert!(
        browser.source().await.contains("not before Monday"),
        "the page shows the rejection's comment"
    );
    browser.sign_out().await;

    // Whoever started a held run cancels it with its button.
    let second = held_run(&carol, &svc).await;
    assert_ne!(first, second);
    browser.sign_in(&svc, &carol_token).await;
    browser.go(&svc.url(&format!("/ui/runs/{second}"))).await;
    assert_eq!(
        browser.count("#reject-run").await,
        0,
        "a contributor cannot reject"
    );
    browser.click_to_navigate("#cancel-run").await;
    let (_, cancelled) = carol.get(svc.url(&format!("/api/v1/runs/{second}"))).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(receiver.rows(), 0, "nothing was sent");

    // The audit log pages: 500 entries, then the link to the older ones.
    browser.go(&svc.url("/ui/audit")).await;
    assert_eq!(
        browser.count("#audit tr").await,
        501,
        "a header and 500 entries"
    );
    let last_seq: u64 = browser
        .text("#audit tr:last-child td")
        .await
        .parse()
        .unwrap();
    browser.click_to_navigate("#older").await;
    let first_seq: u64 = browser
        .text("#audit tr:nth-child(2) td")
        .await
        .parse()
        .unwrap();
    assert_eq!(
        first_seq + 1,
        last_seq,
        "the next page goes on where the first ended"
    );
    assert!(browser.count("#audit tr").await > 1);

    // Plugin statuses: a refused file with why, a new build awaiting a publish.
    let dir = ws.path().join("plugins");
    replace(&dir.join("junk.wasm"), b"not a component");
    replace(
        &dir.join("webhook.wasm"),
        &rebuilt(&plugin("webhook.wasm"), "unreviewed"),
    );
    let new_hash = eventually("the junk refused and the new build loaded", async || {
        let (_, plugins) = carol.get(svc.url("/api/v1/plugins")).await;
        let plugins = plugins.as_array().cloned().unwrap_or_default();
        let of = |file: &str| {
            plugins
                .iter()
                .find(|p| p["file"].as_str().unwrap().ends_with(file))
                .cloned()
        };
        let refused = of("junk.wasm").is_some_and(|p| p["status"] == "refused");
        let awaiting =
            of("webhook.wasm").and_then(|p| p["awaiting_publish"].as_str().map(str::to_string));
        awaiting.filter(|_| refused)
    })
    .await;
    browser.go(&svc.url("/ui/plugins")).await;
    let junk = "tr[data-file='junk.wasm']";
    assert_eq!(
        browser
            .count(&format!("{junk}[data-status='refused']"))
            .await,
        1,
        "{}",
        browser.source().await
    );
    assert!(!browser.text(&format!("{junk} .refusal")).await.is_empty());
    assert!(browser
        .text(&format!("{junk} td.state"))
        .await
        .contains("refused"));
    let hook = "tr[data-file='webhook.wasm'][data-status='awaiting_publish']";
    assert!(
        browser
            .text(&format!("{hook} .awaiting"))
            .await
            .contains(&new_hash[..12]),
        "{}",
        browser.source().await
    );
    assert_eq!(
        browser
            .count("tr[data-file='file_source.wasm'][data-status='serving']")
            .await,
        1
    );
    browser.client.clone().close().await.unwrap();
}
