//! `backflow serve` (issue 12): plugin instantiation, hot reload latency, and API latency
//! with 10,000 runs in history while a sync delivers.
//!
//!     scripts/build-plugins && cargo bench -p backflow --bench serve
//!
//! 1. Instantiation: `DestinationInstance::open` of the webhook plugin (a fresh store and
//!    instance from the component pre-linked at load, then the plugin's `open`), 1,000 times.
//! 2. Hot reload: a rebuilt webhook (new hash) renamed into the plugins directory of a
//!    running service; time until `GET /api/v1/plugins` serves it, the compile time the
//!    service reports, and time until a run triggered then is recorded with the new hash.
//!    Then the original file back (already compiled: the cached code is loaded).
//! 3. API: `GET /api/v1/runs` (a page of 50) 1,000 times, one after another, with 10,000 runs
//!    in history while a 100,000-row sync delivers.
//! 4. Web UI: a sync's history page (50 of its 10,000 runs), 200 times, signed in.

use backflow::domain::{Grants, Limits};
use backflow::host::{DestinationInstance, PluginHost};
use serde_json::{json, Value as J};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn rebuilt(component: &Path, marker: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(component).unwrap();
    let name = b"backflow-bench";
    let len = 1 + name.len() + marker.len();
    assert!(len < 128);
    bytes.extend_from_slice(&[0, len as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(marker.as_bytes());
    bytes
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = env!("CARGO_BIN_EXE_backflow");
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .canonicalize()
        .expect("run scripts/build-plugins first");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();

    // 1. Instantiation.
    {
        let host = PluginHost::new(Some(ws.join("bench-cache"))).unwrap();
        let plugin = host.load(&plugins.join("webhook.wasm")).await.unwrap();
        let context = backflow_plugin_sdk::SyncContext {
            sync_name: "s".into(),
            primary_key: vec!["id".into()],
            run_id: "r".into(),
        };
        let grants = Grants {
            network: vec!["127.0.0.1:9".parse().unwrap()],
            ..Default::default()
        };
        let config = json!({"url": "http://127.0.0.1:9/x"}).to_string();
        let mut times = Vec::new();
        for _ in 0..1000 {
            let started = Instant::now();
            let instance = DestinationInstance::open(
                &host,
                &plugin,
                &grants,
                Limits::default(),
                &config,
                &context,
            )
            .await
            .unwrap();
            times.push(started.elapsed());
            drop(instance);
        }
        times.sort();
        println!("instantiate webhook destination (store + instance + open), 1000 times: p50 {} p99 {} max {}", ms(percentile(&times, 0.5)), ms(percentile(&times, 0.99)), ms(*times.last().unwrap()));
    }

    // A workspace with its own plugins directory, 100,000 rows and 10,000 runs in history.
    std::fs::create_dir_all(ws.join("plugins")).unwrap();
    std::fs::create_dir_all(ws.join("data")).unwrap();
    for f in ["file_source.wasm", "webhook.wasm"] {
        std::fs::copy(plugins.join(f), ws.join("plugins").join(f)).unwrap();
    }
    let mut csv = String::from("id,email\n");
    for i in 1..=100_000 {
        csv.push_str(&format!("{i},user{i}@example.com\n"));
    }
    std::fs::write(ws.join("data/people.csv"), csv).unwrap();
    std::fs::write(ws.join("data/one.csv"), "id,email\n1,a@example.com\n").unwrap();
    let receiver = backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        backflow::toolkit::receiver::ReceiverOptions {
            latency_ms: 20,
            discard: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    std::fs::write(
        ws.join("backflow.toml"),
        format!(
            "[workspace]\nplugins_dir = \"plugins\"\n[state]\nkeep_runs = 20000\n[sources.files]\nplugin = \"file-source\"\ngrants.files = [\"data\"]\n\
             [models.people]\nsource = \"files\"\nquery = \"data/people.csv\"\nprimary_key = \"id\"\n[models.one]\nsource = \"files\"\nquery = \"data/one.csv\"\nprimary_key = \"id\"\n\
             [destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"{}\"\ngrants.network = [\"{}\"]\n\
             [syncs.big]\nmodel = \"people\"\ndestination = \"hook\"\nbatch_size = 500\n[syncs.small]\nmodel = \"one\"\ndestination = \"hook\"\n",
            receiver.url("/in"),
            receiver.addr
        ),
    )
    .unwrap();
    {
        let state = backflow::state::StateStore::open(&ws.join(".backflow")).unwrap();
        let template = json!({
            "run_id": "", "sync": "small", "trigger": "bench", "user": "bench", "started_at": "2026-11-27T00:00:00Z", "finished_at": "2026-11-27T00:00:01Z",
            "duration_ms": 1000, "status": "succeeded", "planned": {"added": 1, "changed": 0, "removed": 0}, "delivered": {"added": 1, "changed": 0, "removed": 0},
            "failed": {"added": 0, "changed": 0, "removed": 0}, "plugins": {"source": "x", "destination": "y"}, "config_hash": "z", "error": null, "rejected": []
        });
        for _ in 0..10_000 {
            let mut record = template.clone();
            record["run_id"] = J::String(ulid::Ulid::new().to_string());
            state
                .record_run(&serde_json::from_value(record).unwrap(), 20_000)
                .unwrap();
        }
    }
    let token = {
        let out = Command::new(bin)
            .args(["token", "create", "--as", "bench", "--json", "--workspace"])
            .arg(ws)
            .output()
            .unwrap();
        let v: J = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        v["token"].as_str().unwrap().to_string()
    };
    /// Kills the service when the benchmark ends, even by a panic.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut service = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--workspace"])
        .arg(ws)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let line = std::io::BufReader::new(service.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let service = Killed(service);
    let base = line
        .split("listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).bearer_auth(&token).send();
    let post = |path: &str| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
    };

    // 2. Hot reload.
    let webhook = ws.join("plugins/webhook.wasm");
    for (label, bytes) in [
        (
            "rebuilt webhook (new hash, compiled on arrival)",
            rebuilt(&plugins.join("webhook.wasm"), "v2"),
        ),
        (
            "original webhook back (compiled before: cached)",
            std::fs::read(plugins.join("webhook.wasm")).unwrap(),
        ),
    ] {
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let tmp = ws.join("plugins/.incoming");
        std::fs::write(&tmp, &bytes).unwrap();
        let landed = Instant::now();
        std::fs::rename(&tmp, &webhook).unwrap();
        let compile_ms = loop {
            let plugins: J = get("/api/v1/plugins")
                .await
                .unwrap()
                .bytes()
                .await
                .map(|b| serde_json::from_slice(&b).unwrap())
                .unwrap();
            if let Some(p) = plugins
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["sha256"] == hash.as_str())
            {
                break p["compile_ms"].as_u64().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let serving = landed.elapsed();
        post("/api/v1/syncs/small/runs").await.unwrap();
        let first_run = loop {
            let runs: J = get("/api/v1/runs?sync=small&limit=1")
                .await
                .unwrap()
                .bytes()
                .await
                .map(|b| serde_json::from_slice(&b).unwrap())
                .unwrap();
            if runs["runs"][0]["trigger"] == "api"
                && runs["runs"][0]["plugins"]["destination"] == hash.as_str()
            {
                break landed.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        println!("hot reload, {label}: serving after {} (load + compile reported {compile_ms} ms, settle window 250 ms), first run recorded on it after {}", ms(serving), ms(first_run));
        // The next reload must not land while this one's run is still going.
        loop {
            let runs: J = get("/api/v1/runs?sync=small&limit=1")
                .await
                .unwrap()
                .bytes()
                .await
                .map(|b| serde_json::from_slice(&b).unwrap())
                .unwrap();
            if runs["runs"][0]["status"] != "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // 3. API latency while delivering.
    post("/api/v1/syncs/big/runs").await.unwrap();
    while receiver.rows() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut times = Vec::new();
    for _ in 0..1000 {
        let started = Instant::now();
        let resp = get("/api/v1/runs").await.unwrap();
        assert_eq!(resp.status(), 200);
        let _body = resp.bytes().await.unwrap();
        times.push(started.elapsed());
    }
    let rows_during = receiver.rows();
    times.sort();
    println!(
        "GET /api/v1/runs (50 of 10,000+ runs), 1000 requests while `big` delivers ({rows_during} rows delivered by the end): p50 {} p99 {} max {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap())
    );
    // The web UI: a sync's history page (50 of 10,000 runs) for a signed-in session.
    // Not following the redirect: the cookie is on the sign-in answer itself.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = no_redirect
        .post(format!("{base}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    let cookie = login
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let mut times = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let resp = http
            .get(format!("{base}/ui/syncs/small"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let _page = resp.bytes().await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "GET /ui/syncs/small (a page of 50 of 10,000 runs), 200 requests: p50 {} p99 {} max {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap())
    );
    drop(service);
}
