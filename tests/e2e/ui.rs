//! The web UI in a real headless Chromium (Debian's `chromium` + `chromium-driver`), against a
//! real `backflow serve`: sign-in, what each role sees, reviews, approvals, self-service
//! runs, and a forged request refused by the server. Screenshots of each main page land in
//! `target/tmp/ui-screenshots/` for a person to look at.

use crate::serve_support::{eventually, runs_of, service_workspace, token, Api, Service};
use crate::support::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value as J};
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// A chromedriver process and a headless Chromium session through it.
struct Browser {
    driver: std::process::Child,
    client: Client,
    shots: std::path::PathBuf,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group: chromedriver starts Chromium, and killing the group on drop
        // takes the browser down too, even when a test panics.
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
        let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            driver,
            client,
            shots,
        }
    }

    async fn go(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap(),
            Err(e) => panic!("{css}: {e}\n{}", self.source().await),
        }
    }

    async fn exists(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Clicks something that loads another page (a link, a form's button) and waits until
    /// the new page has loaded: a click returns before a form's POST and its redirect land,
    /// and the next `go` must not race them.
    async fn click_to_navigate(&self, css: &str) {
        let old = self.client.find(Locator::Css("html")).await.unwrap();
        self.click(css).await;
        for _ in 0..600 {
            // The old page's root goes stale once the new page replaces it.
            if old.tag_name().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..600 {
            if self
                .client
                .execute("return document.readyState", vec![])
                .await
                .ok()
                == Some(json!("complete"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("clicking {css} did not load a page");
    }

    async fn source(&self) -> String {
        self.client.source().await.unwrap_or_default()
    }

    async fn sign_in(&self, svc: &Service, token: &str) {
        self.go(&svc.url("/ui/login")).await;
        self.client
            .find(Locator::Css("#token"))
            .await
            .unwrap()
            .send_keys(token)
            .await
            .unwrap();
        self.click_to_navigate("#signin").await;
    }

    async fn sign_out(&self) {
        self.click_to_navigate("header form button").await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// POSTs a form from inside the page (as a forged request would), returning the status
    /// and the answer's text.
    async fn forge_post(&self, path: &str, fields: J) -> (u64, String) {
        let script = "const [path, fields, done] = arguments; fetch(path, {method: 'POST', body: new URLSearchParams(fields)}).then(r => r.text().then(t => done([r.status, t])), e => done([0, String(e)]));";
        let answer = self
            .client
            .execute_async(script, vec![json!(path), fields])
            .await
            .unwrap();
        (
            answer[0].as_u64().unwrap_or(0),
            answer[1].as_str().unwrap_or_default().to_string(),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Everything in chromedriver's own process group (it and the Chromium it started).
        // `pkill -g`, not `kill -PGID`: a negative number is too easily read as "every process".
        let group = self.driver.id();
        if group > 1 {
            let _ = std::process::Command::new("pkill")
                .args(["-KILL", "-g", &group.to_string()])
                .status();
        }
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reviews_approvals_and_self_service_runs_in_a_real_browser() {
    let receiver = receiver().await;
    let ws = service_workspace(
        10,
        &format!(
            "[destinations.crm]\nplugin = \"webhook\"\nconfig.url = \"{url}\"\nconfig.methods = {{ delete = \"DELETE\" }}\ngrants.network = [\"{addr}\"]\n\
             [models.few]\nsource = \"files\"\nquery = \"data/few.csv\"\nprimary_key = \"id\"\n\
             [syncs.crm_contacts]\nmodel = \"people\"\ndestination = \"crm\"\n\
             [syncs.few_contacts]\nmodel = \"few\"\ndestination = \"crm\"\nmapping = {{ id = \"id\", email = \"mail\" }}\n\
             [users]\nalice = {{ role = \"admin\" }}\nbob = {{ role = \"approver\" }}\ncarol = {{ role = \"contributor\" }}\nvictor = {{ role = \"viewer\" }}\n\
             [[policies]]\nplugin = \"policies\"\nconfig = {{ run_approval_above_rows = 5 }}\n",
            url = receiver.url("/crm"),
            addr = receiver.addr
        ),
    );
    ws.write(
        "data/few.csv",
        "id,email\n1,a@example.com\n2,b@example.com\n3,c@example.com\n",
    );
    std::fs::copy(
        plugin("policies.wasm"),
        ws.path().join("plugins/policies.wasm"),
    )
    .unwrap();
    ok(
        backflow_as(&ws, "carol", &["change", "submit", "-m", "first"]),
        "submit",
    );
    ok(
        backflow_as(&ws, "alice", &["change", "approve", "1"]),
        "approve",
    );
    ok(
        backflow_as(&ws, "carol", &["change", "publish", "1"]),
        "publish",
    );
    // Carol's second change, for the reviewers.
    edit(
        &ws,
        "[syncs.crm_contacts]\nmodel = \"people\"\ndestination = \"crm\"\n",
        "[syncs.crm_contacts]\nmodel = \"people\"\ndestination = \"crm\"\nbatch_size = 5\n",
    );
    ok(
        backflow_as(
            &ws,
            "carol",
            &["change", "submit", "-m", "smaller batches for the CRM"],
        ),
        "submit 2",
    );
    let (carol, bob, victor) = (
        token(&ws, "alice", "carol"),
        token(&ws, "alice", "bob"),
        token(&ws, "alice", "victor"),
    );
    let svc = Service::start(&ws);
    let api = Api::new(Some(&bob));
    let browser = Browser::start().await;

    // A contributor sees their change but no Approve button on it.
    browser.sign_in(&svc, &carol).await;
    assert_eq!(browser.text("#whoami").await, "carol");
    browser.screenshot("syncs").await;
    browser.go(&svc.url("/ui/changes")).await;
    browser.screenshot("changes").await;
    browser.go(&svc.url("/ui/changes/2")).await;
    assert!(browser
        .source()
        .await
        .contains("smaller batches for the CRM"));
    assert!(
        !browser.exists("#approve-change").await,
        "no Approve button on one's own change"
    );
    assert!(browser.exists("#diff").await);

    // Carol asks for a run of the big sync: the dry-run counts first, then a held run.
    browser.go(&svc.url("/ui")).await;
    browser
        .click_to_navigate("#sync-crm_contacts a.run-now")
        .await;
    assert!(
        browser.text("#dry-run").await.contains("10 to add"),
        "{}",
        browser.source().await
    );
    browser.screenshot("confirm-run").await;
    browser.click_to_navigate("#confirm").await;
    let held = eventually_run(&api, &svc, "crm_contacts", "awaiting_approval").await;
    assert_eq!(held["user"], "carol");
    browser.sign_out().await;

    // An approver approves the change: the status changes and the audit log has it.
    browser.sign_in(&svc, &bob).await;
    browser.go(&svc.url("/ui/changes/2")).await;
    browser.screenshot("change-detail").await;
    browser.click_to_navigate("#approve-change").await;
    browser.go(&svc.url("/ui/changes/2")).await;
    assert!(
        browser.text("main p .status").await.contains("approved"),
        "{}",
        browser.source().await
    );
    assert!(
        !browser.exists("#approve-change").await,
        "nothing left to approve"
    );
    browser
        .go(&svc.url("/ui/audit?action=change.approve"))
        .await;
    assert!(
        browser.text("#audit").await.contains("bob"),
        "{}",
        browser.source().await
    );
    browser
        .go(&svc.url("/ui/audit?action=change.approve&verify=1"))
        .await;
    assert!(browser.text("#chain").await.contains("verified"));
    browser.screenshot("audit").await;

    // ... approves the held run, and the rows arrive at the receiver.
    browser.go(&svc.url("/ui/approvals")).await;
    browser.screenshot("approvals").await;
    browser.click_to_navigate("#approve-run").await;
    eventually("the approved rows at the receiver", async || {
        (receiver.rows() == 10).then_some(())
    })
    .await;
    browser.screenshot("run-detail").await;
    browser.sign_out().await;

    // Full resync of the small sync, pressed by carol: the run carries her name.
    browser.sign_in(&svc, &carol).await;
    browser.go(&svc.url("/ui/syncs/few_contacts")).await;
    browser.click_to_navigate("a.full-resync").await;
    browser.click_to_navigate("#confirm").await;
    let run = eventually_run(&api, &svc, "few_contacts", "succeeded").await;
    assert_eq!(run["user"], "carol");
    assert_eq!(run["full_resync"], true);
    assert_eq!(run["trigger"], "ui: full resync");
    browser.go(&svc.url("/ui/syncs/few_contacts")).await;
    assert!(browser.text("#runs td.user").await.contains("carol"));
    browser.screenshot("sync-history").await;
    browser.sign_out().await;

    // An approver undoes carol's run from its page, after seeing the inverse plan; the row
    // history shows both runs.
    browser.sign_in(&svc, &bob).await;
    browser
        .go(&svc.url(&format!("/ui/runs/{}", run["run_id"].as_str().unwrap())))
        .await;
    browser.click_to_navigate("#undo-run").await;
    assert!(
        browser.text("#undo-plan").await.contains("3 to delete"),
        "{}",
        browser.source().await
    );
    browser.screenshot("confirm-undo").await;
    browser.click_to_navigate("#confirm-undo").await;
    let undo = eventually("the undo run", async || {
        runs_of(&api, &svc, "few_contacts")
            .await
            .into_iter()
            .find(|r| {
                r["trigger"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("undo of run"))
                    && r["status"] != "running"
            })
    })
    .await;
    assert_eq!(undo["user"], "bob");
    assert_eq!(undo["status"], "succeeded", "{undo}");
    browser
        .go(&svc.url("/ui/syncs/few_contacts/rows?key=2"))
        .await;
    let events = browser.text("#row-events").await;
    assert!(
        events.contains("inserted") && events.contains("deleted"),
        "{events}"
    );
    browser.screenshot("row-history").await;
    browser.sign_out().await;

    // A viewer sees no buttons; a forged POST is refused by the server.
    browser.sign_in(&svc, &victor).await;
    browser.screenshot("syncs-as-viewer").await;
    assert!(
        !browser.exists("a.run-now").await && !browser.exists("a.full-resync").await,
        "a viewer sees no run buttons"
    );
    let csrf = browser
        .client
        .find(Locator::Css("header input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let before = runs_of(&api, &svc, "few_contacts").await.len();
    // With the session's CSRF token the form passes that check; the viewer's role refuses it.
    let (status, body) = browser
        .forge_post(
            "/ui/syncs/few_contacts/runs",
            json!({"csrf": csrf, "full_resync": "true"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("CSRF"), "refused for the role: {body}");
    browser.sign_out().await;

    // Someone whose role may run the sync: a form without the session's CSRF token (a forged
    // cross-site request rides on their cookie) is refused for that reason alone.
    browser.sign_in(&svc, &bob).await;
    for fields in [
        json!({"full_resync": "true"}),
        json!({"csrf": "not-the-session-token", "full_resync": "true"}),
    ] {
        let (status, body) = browser
            .forge_post("/ui/syncs/few_contacts/runs", fields.clone())
            .await;
        assert_eq!(status, 403, "{fields}: {body}");
        assert!(
            body.contains("missing or wrong CSRF token"),
            "{fields}: {body}"
        );
    }
    assert_eq!(
        runs_of(&api, &svc, "few_contacts").await.len(),
        before,
        "nothing ran"
    );
    // Ends the WebDriver session, which quits Chromium.
    browser.client.clone().close().await.unwrap();
}

/// The newest run of `sync` with `status`, once there is one.
async fn eventually_run(api: &Api, svc: &Service, sync: &str, status: &str) -> J {
    eventually(&format!("a {status} run of {sync}"), async || {
        runs_of(api, svc, sync)
            .await
            .into_iter()
            .find(|r| r["status"] == status)
    })
    .await
}
