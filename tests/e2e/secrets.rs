//! Secrets never leave through errors: a destination that echoes the request's headers in
//! its answers (401 for the whole run, 422 per row) must not get the credential into any
//! output, log line, run record or the state directory.

use crate::support::*;
use backflow::toolkit::receiver::ReceiverOptions;
use std::process::Command;

const SECRET: &str = "SECRET_VALUE_7f3a9c2e51";
const KEY_SECRET: &str = "SECRET_KEY_VALUE_0b8d44";

/// Every file under `dir`, as bytes.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_echoed_by_a_destination_appear_in_no_output_record_or_state_file() {
    for status in [401u16, 422] {
        let receiver = backflow::toolkit::receiver::start(
            "127.0.0.1:0".parse().unwrap(),
            ReceiverOptions {
                echo_headers_status: Some(status),
                ..ReceiverOptions::default()
            },
        )
        .await
        .unwrap();
        let ws = csv_to_webhook(
            &receiver,
            "config.headers = { Authorization = \"Bearer ${env.CRM_TOKEN}\", X-Api-Key = \"${env.CRM_KEY}\" }\ngrants.env = [\"CRM_TOKEN\", \"CRM_KEY\"]",
            "",
        );
        let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
        for args in [
            vec!["sync", "run", "to_hook", "--json"],
            vec!["sync", "run", "to_hook"],
            vec!["runs", "--json"],
            vec!["runs"],
            vec!["audit", "--json"],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_backflow"))
                .args(&args)
                .arg("--workspace")
                .arg(ws.path())
                .env("CRM_TOKEN", SECRET)
                .env("CRM_KEY", KEY_SECRET)
                .env("RUST_LOG", "debug")
                .output()
                .unwrap();
            outputs.push((format!("{args:?} stdout"), out.stdout));
            outputs.push((format!("{args:?} stderr"), out.stderr));
        }
        let runs: serde_json::Value = serde_json::from_slice(
            &outputs
                .iter()
                .find(|(n, _)| n.starts_with("[\"runs\", \"--json\"] stdout"))
                .unwrap()
                .1,
        )
        .unwrap();
        let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
        let show = Command::new(env!("CARGO_BIN_EXE_backflow"))
            .args(["runs", "show", &run_id, "--json", "--workspace"])
            .arg(ws.path())
            .output()
            .unwrap();
        outputs.push(("runs show stdout".into(), show.stdout.clone()));

        // The destination really did get (and echo) the credential...
        assert!(receiver.received().iter().any(|r| r
            .headers
            .get("authorization")
            .is_some_and(|v| v.contains(SECRET))));
        // ...and the run says what happened without it.
        let shown = String::from_utf8_lossy(&show.stdout);
        if status == 401 {
            assert!(
                shown.contains("HTTP 401") && shown.contains("check the credentials"),
                "{shown}"
            );
        } else {
            assert!(
                shown.contains("HTTP 422") && shown.contains("\"rejected\""),
                "{shown}"
            );
        }
        assert!(
            shown.contains("[redacted]"),
            "the echoed headers are cut, not dropped: {shown}"
        );
        for (name, bytes) in outputs.iter().chain(
            files(ws.path())
                .iter()
                .map(|(p, b)| (p.display().to_string(), b.clone()))
                .collect::<Vec<_>>()
                .iter(),
        ) {
            for secret in [SECRET, KEY_SECRET] {
                assert!(
                    !contains(bytes, secret),
                    "HTTP {status}: {secret} leaked into {name}: {}",
                    String::from_utf8_lossy(bytes)
                );
            }
        }
    }
}
