//! Connector authors (issue 41): conformance on the author's own rows (`--rows`), and the
//! Python standard library's lazily imported modules inside a component.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_backflow")
}

/// Runs `backflow plugin conformance ARGS --json` with a compile cache of its own; the
/// report and whether the command succeeded.
fn conformance(cache: &Path, args: &[String]) -> (bool, serde_json::Value, String) {
    let out = Command::new(bin())
        .args(["plugin", "conformance"])
        .args(args)
        .arg("--json")
        .env("BACKFLOW_CACHE_DIR", cache)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running backflow plugin conformance");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let report = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), report, text)
}

/// The checks of a report whose name starts with `prefix`: (name, outcome, detail).
fn checks(report: &serde_json::Value, prefix: &str) -> Vec<(String, String, String)> {
    report["checks"]
        .as_array()
        .map(|checks| {
            checks
                .iter()
                .filter(|c| c["name"].as_str().unwrap_or("").starts_with(prefix))
                .map(|c| {
                    let field = |f: &str| c[f].as_str().unwrap_or("").to_string();
                    (field("name"), field("outcome"), field("detail"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A destination keyed on e-mail addresses: the webhook rendering each row through a
/// template that prints `row.email` (strict: printing a missing field fails, and the row is
/// refused).
fn email_keyed_webhook(url: &str) -> String {
    serde_json::json!({
        "url": url,
        "body_template": "{\"email\": \"{{ row.email }}\"}",
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_with_the_authors_rows_passes_an_email_keyed_destination() {
    let receiver = receiver().await;
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rows = dir.path().join("people.csv");
    std::fs::write(
        &rows,
        "email,name,seats\nada@example.com,Ada,3\ngrace@example.com,\"Hopper, Grace\",\n",
    )
    .unwrap();
    let webhook: PathBuf = plugin("webhook.wasm");
    let base = vec![
        webhook.display().to_string(),
        "--config".into(),
        email_keyed_webhook(&receiver.url("/people")),
        "--grant-network".into(),
        receiver.addr.to_string(),
        "--offline-config".into(),
        email_keyed_webhook("http://127.0.0.1:1/people"),
        "--grant-network".into(),
        "127.0.0.1:1".into(),
    ];

    // The built-in sample has no e-mail: no write of a row gets through (here the template
    // cannot render, an error the destination reports as bad config), and the suite fails.
    let (ok, report, text) = conformance(cache.path(), &base);
    let writes = checks(&report, "write ");
    assert!(!ok && !writes.is_empty(), "{text}");
    assert!(
        writes
            .iter()
            .filter(|(name, ..)| !name.contains("× 0 rows"))
            .all(|(_, outcome, _)| outcome != "pass"),
        "{writes:?}"
    );

    // With the author's rows every write is accepted and the suite passes.
    let mut with_rows = base.clone();
    with_rows.extend(["--rows".to_string(), rows.display().to_string()]);
    let (ok, report, text) = conformance(cache.path(), &with_rows);
    assert!(ok, "{text}");
    let writes = checks(&report, "write ");
    assert!(
        writes.len() >= 3 && writes.iter().all(|(_, outcome, _)| outcome == "pass"),
        "{writes:?}"
    );
    assert!(
        writes
            .iter()
            .any(|(name, _, detail)| name.ends_with("× 2 rows") && detail == "2 accepted"),
        "{writes:?}"
    );
    let offline = checks(&report, "an unreachable remote is retryable");
    assert_eq!(offline.len(), 1, "{text}");
    assert_eq!(offline[0].1, "pass", "{offline:?}");
    let emails: Vec<String> = receiver
        .received()
        .iter()
        .flat_map(|r| r.body.as_array().cloned().unwrap_or_default())
        .filter_map(|row| row["email"].as_str().map(str::to_string))
        .collect();
    assert!(
        emails.contains(&"grace@example.com".to_string()),
        "{emails:?}"
    );

    // A rows file that cannot be read is named with its line.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "email,name\nada@example.com\n").unwrap();
    let mut with_bad = base.clone();
    with_bad.extend(["--rows".to_string(), bad.display().to_string()]);
    let (ok, _, text) = conformance(cache.path(), &with_bad);
    assert!(
        !ok && text.contains("bad.csv:2: 1 fields, the header has 2"),
        "{text}"
    );
}

/// `collections.Counter.most_common` imports `heapq` only when called, after
/// componentize-py built the component: the SDK preloads it (scripts/build-python-plugins
/// builds tests/fixtures/python-counter-check).
#[tokio::test(flavor = "multi_thread")]
async fn a_python_check_using_counter_most_common_works() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins-python/fixture-python-counter-check.wasm");
    assert!(
        file.is_file(),
        "{} is missing: run scripts/build-python-plugins",
        file.display()
    );
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The check sees the author's rows too (JSON Lines): rows 0 and 2 are DE; the suite
    // observes row 0 in each of its four added/changed batches, the others in two.
    let rows = dir.path().join("people.jsonl");
    std::fs::write(
        &rows,
        "{\"email\": \"a@x.com\", \"country\": \"DE\"}\n\
         {\"email\": \"b@x.com\", \"country\": \"FR\"}\n\
         {\"email\": \"c@x.com\", \"country\": \"DE\"}\n",
    )
    .unwrap();
    let (ok, report, text) = conformance(
        cache.path(),
        &[
            file.display().to_string(),
            "--config".into(),
            r#"{"column": "country"}"#.into(),
            "--rows".into(),
            rows.display().to_string(),
        ],
    );
    let finish = checks(&report, "finish gives a verdict");
    assert!(ok, "{text}");
    assert_eq!(finish.len(), 1, "{text}");
    assert_eq!(
        finish[0].2, "pass: most common country: DE (6 rows)",
        "{finish:?}"
    );
}

/// The fault checks: the built-in webhook keeps its idempotency key through 429s, 5xx
/// storms, a slow answer and a lost acknowledgement; a destination that sends a new key on
/// every attempt fails them.
#[tokio::test(flavor = "multi_thread")]
async fn fault_injection_passes_the_webhook_and_fails_a_new_key_on_every_retry() {
    let receiver = receiver().await;
    let cache = tempfile::tempdir().unwrap();
    let webhook = plugin("webhook.wasm");
    let (ok, report, text) = conformance(
        cache.path(),
        &[
            webhook.display().to_string(),
            "--config".into(),
            serde_json::json!({ "url": receiver.url("/hook") }).to_string(),
            "--grant-network".into(),
            receiver.addr.to_string(),
            "--fault-config".into(),
            r#"{"url": "${faults.url}/hook"}"#.into(),
        ],
    );
    let faults = checks(&report, "faults: ");
    assert!(ok, "{text}");
    assert_eq!(faults.len(), 4, "{text}");
    assert!(
        faults.iter().all(|(_, outcome, _)| outcome == "pass"),
        "{faults:?}"
    );

    let misbehave = plugin("misbehave.wasm");
    let (ok, report, text) = conformance(
        cache.path(),
        &[
            misbehave.display().to_string(),
            "--fault-config".into(),
            r#"{"on_write": "new_key_each_attempt", "url": "${faults.url}/x"}"#.into(),
        ],
    );
    let faults = checks(&report, "faults: ");
    assert!(!ok, "{text}");
    let storm = faults
        .iter()
        .find(|(name, ..)| name.contains("5xx"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(storm.1, "fail", "{faults:?}");
    assert!(
        storm
            .2
            .contains("a retry carried a new idempotency key (attempt-"),
        "{faults:?}"
    );
}

/// The `.cwasm` entries of a cache directory, with their inode (a compile writes a new file
/// and renames it over the entry: a new inode).
fn cache_entries(cache: &Path) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let mut entries: Vec<(String, u64)> = std::fs::read_dir(cache)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().unwrap().ino(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    entries
}

/// One compile cache per user (issue 41): a second workspace and the conformance suite load
/// the component the first workspace compiled (the same cache entry, never rewritten), and
/// no workspace keeps a cache of its own.
#[test]
fn workspaces_and_conformance_share_one_compile() {
    let cache = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(plugin("webhook.wasm"), plugins.path().join("webhook.wasm")).unwrap();
    let toml = format!(
        "[workspace]\nplugins_dir = \"{}\"\n",
        plugins.path().display()
    );
    let first = TestWorkspace::new(&toml);
    let second = TestWorkspace::new(&toml);
    let list = |ws: &TestWorkspace| {
        let out = Command::new(bin())
            .arg("--workspace")
            .arg(ws.dir.path())
            .args(["plugin", "list"])
            .env("BACKFLOW_CACHE_DIR", cache.path())
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && text.contains("webhook"), "{text}");
        text
    };
    let text = list(&first);
    assert!(
        text.contains("compiling plugin"),
        "the first use compiles: {text}"
    );
    let compiled = cache_entries(cache.path());
    assert_eq!(compiled.len(), 1, "{compiled:?}");

    let text = list(&second);
    assert!(!text.contains("compiling plugin"), "{text}");
    assert_eq!(
        cache_entries(cache.path()),
        compiled,
        "the same entry, not rewritten"
    );

    let (_, report, text) = conformance(
        cache.path(),
        &[
            plugins.path().join("webhook.wasm").display().to_string(),
            "--config".into(),
            r#"{"url": "http://127.0.0.1:9/"}"#.into(),
        ],
    );
    assert_eq!(report["plugin"], "webhook", "{text}");
    assert_eq!(
        cache_entries(cache.path()),
        compiled,
        "conformance reused it: {text}"
    );
    for ws in [&first, &second] {
        assert!(
            cache_entries(&ws.dir.path().join(".backflow/cache")).is_empty(),
            "no per-workspace cache"
        );
    }
}
