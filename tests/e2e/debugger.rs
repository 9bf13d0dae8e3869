//! The delivery debugger (issue 36): the requests a run's destination made, kept by the host
//! with secrets redacted, shown by `runs requests`, the API, and `sync test`; retention.

use crate::serve_support::*;
use crate::support::*;
use backflow::toolkit::receiver::ReceiverOptions;

const SECRET: &str = "SECRET_DEBUG_TOKEN_5c1e9a";

fn backflow_env(ws: &TestWorkspace, args: &[&str]) -> Out {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(args)
        .arg("--workspace")
        .arg(ws.path())
        .env("CRM_TOKEN", SECRET)
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A destination that answers 422 and echoes the request's headers (the granted token among
/// them): `runs requests --failed` lists the failed requests, `runs request` shows the 422
/// and its body, the Authorization header and the echoed token redacted, and the rows the
/// batch carried.
#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_batch_shows_its_request_and_answer_with_the_secret_redacted() {
    let receiver = backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverOptions {
            echo_headers_status: Some(422),
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let ws = csv_to_webhook(
        &receiver,
        "config.headers = { Authorization = \"Bearer ${env.CRM_TOKEN}\" }\ngrants.env = [\"CRM_TOKEN\"]",
        "batch_size = 4\n\n[debug]\ncapture = \"failed\"",
    );
    let run = backflow_env(&ws, &["sync", "run", "to_hook", "--json"]);
    let run_id = run.json()["run_id"].as_str().unwrap().to_string();
    assert!(
        receiver.received().iter().any(|r| r
            .headers
            .get("authorization")
            .is_some_and(|v| v.contains(SECRET))),
        "the destination got the token"
    );

    let listed = ok(
        backflow_env(&ws, &["runs", "requests", &run_id, "--failed", "--json"]),
        "runs requests --failed",
    )
    .json();
    let requests = listed["requests"].as_array().unwrap();
    assert!(!requests.is_empty(), "{listed}");
    assert!(requests.iter().all(|r| r["status"] == 422), "{listed}");
    let first = requests[0]["seq"].as_u64().unwrap().to_string();

    let text = ok(
        backflow_env(&ws, &["runs", "requests", &run_id, "--failed"]),
        "runs requests",
    )
    .stdout;
    assert!(text.contains("→ 422") && text.contains("FAILED"), "{text}");

    let shown = ok(
        backflow_env(&ws, &["runs", "request", &run_id, &first]),
        "runs request",
    )
    .stdout;
    assert!(shown.contains("answer: 422"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.eq_ignore_ascii_case("authorization: [redacted]")),
        "{shown}"
    );
    assert!(
        shown.contains("[redacted]") && !shown.contains(SECRET),
        "{shown}"
    );
    assert!(shown.contains("batch 1: "), "{shown}");

    let detail = ok(
        backflow_env(&ws, &["runs", "request", &run_id, &first, "--json"]),
        "runs request --json",
    )
    .json();
    assert_eq!(detail["status"], 422);
    let body = detail["response_body"].as_str().unwrap();
    assert!(
        body.to_ascii_lowercase().contains("authorization") && !body.contains(SECRET),
        "the echo is there, the token is not: {body}"
    );
    let keys: Vec<&str> = detail["batch"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(keys.len() as u64, detail["batch"]["rows"].as_u64().unwrap());
    assert!(keys.contains(&"1"), "{keys:?}");

    // A request the run did not keep is a clear error.
    let missing = backflow_env(&ws, &["runs", "request", &run_id, "9999"]);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("kept no request number 9999"),
        "{}",
        missing.stderr
    );
}

/// `keep_debug_runs = 1`: once a second run kept requests, the first run's are gone.
#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_the_newest_runs_requests() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(
        &receiver,
        "",
        "\n[debug]\ncapture = \"all\"\nkeep_debug_runs = 1",
    );
    let first = ws.run("to_hook").await;
    let listed = ok(
        backflow_env(&ws, &["runs", "requests", &first.run_id, "--json"]),
        "runs requests",
    )
    .json();
    assert!(
        !listed["requests"].as_array().unwrap().is_empty(),
        "{listed}"
    );
    assert_eq!(listed["requests"][0]["status"], 200);

    ws.write(
        "data/customers.csv",
        &CUSTOMERS_CSV.replace("ada@example.com", "ada@new.example.com"),
    );
    let second = ws.run("to_hook").await;
    let old = ok(
        backflow_env(&ws, &["runs", "requests", &first.run_id, "--json"]),
        "runs requests (pruned run)",
    )
    .json();
    assert!(old["requests"].as_array().unwrap().is_empty(), "{old}");
    let new = ok(
        backflow_env(&ws, &["runs", "requests", &second.run_id, "--json"]),
        "runs requests (second run)",
    )
    .json();
    assert_eq!(new["requests"].as_array().unwrap().len(), 1, "{new}");
}

/// `sync test` sends one row for real and prints the request and the answer in full; the
/// receiver gets exactly that row; the test is audited.
#[tokio::test(flavor = "multi_thread")]
async fn sync_test_sends_one_row_and_prints_the_request_and_answer() {
    let receiver = receiver().await;
    let ws = csv_to_webhook(
        &receiver,
        "config.headers = { Authorization = \"Bearer ${env.CRM_TOKEN}\" }\ngrants.env = [\"CRM_TOKEN\"]",
        "\n[debug]\ncapture = \"off\"",
    );
    let out = ok(
        backflow_env(&ws, &["sync", "test", "to_hook", "--row", "3"]),
        "sync test",
    );
    let text = out.stdout;
    assert!(text.contains("accepted"), "{text}");
    assert!(
        text.contains(&format!("POST {}", receiver.url("/contacts"))),
        "{text}"
    );
    assert!(text.contains("answer: 200"), "{text}");
    assert!(text.contains("alan@example.com"), "the body sent: {text}");
    assert!(!text.contains(SECRET), "{text}");
    assert_eq!(receiver.rows(), 1);
    let audit = ok(backflow_env(&ws, &["audit", "--json"]), "audit").stdout;
    assert!(audit.contains("sync.test"), "{audit}");

    // Without --row: the model's first row.
    let out = ok(
        backflow_env(&ws, &["sync", "test", "to_hook", "--json"]),
        "sync test --json",
    )
    .json();
    assert_eq!(out["key"], "1");
    assert_eq!(out["requests"][0]["status"], 200);
    assert_eq!(receiver.rows(), 2);
}

const USERS: &str = "[users]\nann = { role = \"admin\" }\nval = { role = \"viewer\" }\ncory = { role = \"contributor\" }\ngone = { role = \"viewer\" }\n";

/// Through the API: a viewer reads a run's requests and one in full; no token, the token of
/// a user no longer declared, an unknown run or request number are refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_shows_a_runs_requests_to_those_who_may_read_the_run() {
    let receiver = receiver().await;
    let ws = service_workspace(
        3,
        &format!(
            "{}[syncs.people_hook]\nmodel = \"people\"\ndestination = \"hook\"\n[debug]\ncapture = \"all\"\n{USERS}",
            hook("hook", &receiver, "/people", "")
        ),
    );
    let run = ws.run("people_hook").await;
    let val = token(&ws, "ann", "val");
    let cory = token(&ws, "ann", "cory");
    let gone = token(&ws, "ann", "gone");
    edit(&ws, "gone = { role = \"viewer\" }\n", "");
    // Published (cory submits, ann approves, cory publishes): test rows use what is in force.
    ok(
        backflow_as(&ws, "cory", &["change", "submit", "-m", "first"]),
        "submit",
    );
    ok(
        backflow_as(&ws, "ann", &["change", "approve", "1"]),
        "approve",
    );
    ok(
        backflow_as(&ws, "cory", &["change", "publish", "1"]),
        "publish",
    );
    let svc = Service::start(&ws);
    let url = |path: &str| svc.url(&format!("/api/v1/runs/{}{path}", run.run_id));

    let (status, body) = Api::new(Some(&val)).get(url("/requests")).await;
    assert_eq!(status, 200, "{body}");
    let requests = body["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 1, "{body}");
    assert_eq!(requests[0]["status"], 200);
    let (status, one) = Api::new(Some(&val)).get(url("/requests/1")).await;
    assert_eq!(status, 200, "{one}");
    assert!(
        one["request_body"]
            .as_str()
            .unwrap()
            .contains("user2@example.com"),
        "{one}"
    );
    assert_eq!(one["batch"]["keys"].as_array().unwrap().len(), 3, "{one}");

    assert_eq!(Api::new(None).get(url("/requests")).await.0, 401);
    assert_eq!(Api::new(Some(&gone)).get(url("/requests")).await.0, 401);
    let (status, body) = Api::new(Some(&val))
        .get(svc.url("/api/v1/runs/NO_SUCH_RUN/requests"))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(Api::new(Some(&val)).get(url("/requests/7")).await.0, 404);
    assert_eq!(Api::new(Some(&val)).get(url("/requests/x")).await.0, 400);

    // The UI: the run page links to its requests, a request's page shows its rows; only a
    // contributor gets the "Send one row" form, and it shows the request and the answer.
    let page = |path: String, cookie: String| {
        let url = svc.url(&path);
        async move {
            let r = ui_client()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let val_cookie = sign_in(&svc, &val).await;
    let (status, html) = page(format!("/ui/runs/{}", run.run_id), val_cookie.clone()).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(&format!("/ui/runs/{}/requests", run.run_id)),
        "{html}"
    );
    let (status, html) = page(
        format!("/ui/runs/{}/requests", run.run_id),
        val_cookie.clone(),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("/people") && html.contains("200"), "{html}");
    let (status, html) = page(
        format!("/ui/runs/{}/requests/1", run.run_id),
        val_cookie.clone(),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("user2@example.com"), "{html}");
    let (_, html) = page("/ui/syncs/people_hook".into(), val_cookie).await;
    assert!(
        !html.contains("test-row"),
        "a viewer gets no test form: {html}"
    );

    let cory_cookie = sign_in(&svc, &cory).await;
    let (_, html) = page("/ui/syncs/people_hook".into(), cory_cookie.clone()).await;
    assert!(html.contains("test-row"), "{html}");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let before = receiver.rows();
    let r = ui_client()
        .post(svc.url("/ui/syncs/people_hook/test"))
        .header("cookie", cory_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}&key=2", form_value(&csrf)))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let html = r.text().await.unwrap();
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("accepted") && html.contains("user2@example.com"),
        "{html}"
    );
    assert_eq!(receiver.rows(), before + 1);
}

fn ui_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in to the UI with `token`; the session cookie (`name=value`).
async fn sign_in(svc: &Service, token: &str) -> String {
    let r = ui_client()
        .post(svc.url("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", form_value(token)))
        .send()
        .await
        .unwrap();
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("backflow_session="))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {:?}", r.headers()))
        .to_string()
}

fn form_value(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
