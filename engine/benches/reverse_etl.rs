//! The reverse-ETL workload of issue 15, end to end through the real binary: a PostgreSQL 15
//! table of 1,000,000 rows (`id bigint, email text, name text, plan text, mrr numeric(10,2),
//! country text, updated_at timestamptz`) read by the `postgres` plugin and delivered by the
//! `webhook` plugin as JSON arrays of 500 rows over one HTTP/1.1 connection to
//! `backflow receiver --discard` in its own process (it parses every body). Three jobs, each
//! `backflow sync run` under `/usr/bin/time`, with the whole machine's CPU time and the
//! receiver's beside it (from /proc): the initial sync, a no-change rerun (a full diff,
//! deletes included), and a run after 10,000 updates, 1,000 deletes and 5,000 inserts.
//!
//!     scripts/build-plugins && cargo bench -p backflow --bench reverse_etl
//!
//! Options: `-- --rows N` (default 1000000), `-- --keep-changelog N` (`[state]
//! keep_changelog_runs`, default 50; 0 measures without the undo changelog), `-- --source csv`
//! (the same rows from a CSV file through the `file-source` plugin: initial and no-change
//! jobs only), `-- --latency-ms L --max-in-flight 1,2,4,8,16` (a receiver answering after L
//! ms; one initial sync per `max_in_flight`, from an empty state each time), `-- --hold`
//! (set everything up, print the workspace, and wait to be killed: for profiling runs by
//! hand, e.g. `perf record -g backflow sync run s --workspace DIR` after `rm -rf DIR/.backflow`).
//!
//! `-- --capture off|failed|sample|all` sets the delivery debugger's `[debug] capture`
//! (default: the engine's default, `sample`; issue 36 compares `sample` and `all` with `off`).
//!
//! The model is `SELECT … FROM customers ORDER BY id`: rows in key order are diffed while
//! they are read. `-- --unordered` leaves out the `ORDER BY` (the plan then sorts the rows,
//! spilling past 64 MB, before the diff): the model of the figures recorded before it existed.
//! `-- --text-results` reads every column in PostgreSQL's text format (the `postgres`
//! plugin's `binary_results = false`), as the plugin did before binary results.
//! `-- --diff warehouse` makes the model `diff = "warehouse"` (issue 39): PostgreSQL diffs it
//! against a snapshot table in schema `backflow` and only changed rows are read.

#[allow(dead_code)]
#[path = "../../tests/e2e/pg.rs"]
mod pg;

use std::process::{Command, Stdio};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rows: u64 = arg("--rows")
        .map(|r| r.parse().unwrap())
        .unwrap_or(1_000_000);
    let keep_changelog: u64 = arg("--keep-changelog")
        .map(|r| r.parse().unwrap())
        .unwrap_or(50);
    let csv = arg("--source").is_some_and(|s| s == "csv");
    let debug = arg("--capture")
        .map(|c| format!("[debug]\ncapture = \"{c}\"\n"))
        .unwrap_or_default();
    let unordered = args.iter().any(|a| a == "--unordered");
    let text_results = args.iter().any(|a| a == "--text-results");
    let warehouse_diff = arg("--diff").is_some_and(|d| d == "warehouse");
    let latency_ms: u64 = arg("--latency-ms").map(|r| r.parse().unwrap()).unwrap_or(0);
    let in_flight: Vec<u32> = arg("--max-in-flight")
        .map(|r| r.split(',').map(|n| n.parse().unwrap()).collect())
        .unwrap_or_default();
    let bin = env!("CARGO_BIN_EXE_backflow");
    let plugins = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .canonicalize()
        .expect("run scripts/build-plugins first");

    let pg = pg::Pg::throwaway();
    pg.sql(&format!(
        "CREATE TABLE customers AS SELECT g::bigint AS id, 'user' || g || '@example.com' AS email, 'User ' || g AS name,
           (ARRAY['free','pro','enterprise'])[1 + g % 3] AS plan, ((g % 2000) || '.' || lpad((g % 100)::text, 2, '0'))::numeric(10,2) AS mrr,
           (ARRAY['DE','FR','US','JP','BR'])[1 + g % 5] AS country, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' AS updated_at
         FROM generate_series(1, {rows}) g;
         ALTER TABLE customers ADD PRIMARY KEY (id);"
    ));
    pg.sql("VACUUM ANALYZE customers");
    if warehouse_diff {
        // The snapshot schema is created on first use.
        pg.sql(&format!(
            "GRANT CREATE ON DATABASE \"{}\" TO reader",
            pg.database
        ));
    }

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut receiver = Command::new(bin)
        .args([
            "receiver",
            "--discard",
            "--port",
            &port.to_string(),
            "--latency-ms",
            &latency_ms.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it listens.
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    let (source, model) = if csv {
        // The same rows as the table, written the way `COPY … CSV HEADER` would.
        std::fs::create_dir_all(ws.join("data")).unwrap();
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(ws.join("data/customers.csv")).unwrap());
        use std::io::Write as _;
        writeln!(out, "id,email,name,plan,mrr,country,updated_at").unwrap();
        for g in 1..=rows {
            let ts = 1_704_067_200 + g;
            let (days, secs) = (ts / 86_400, ts % 86_400);
            let (y, m, d) = civil(days as i64);
            writeln!(
                out,
                "{g},user{g}@example.com,User {g},{},{}.{:02},{},{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}+00",
                ["free", "pro", "enterprise"][(1 + g % 3) as usize - 1],
                g % 2000,
                g % 100,
                ["DE", "FR", "US", "JP", "BR"][(1 + g % 5) as usize - 1],
                secs / 3600,
                secs % 3600 / 60,
                secs % 60
            )
            .unwrap();
        }
        out.flush().unwrap();
        (
            "[sources.files]\nplugin = \"file-source\"\ngrants.files = [\"data\"]\n".to_string(),
            "source = \"files\"\nquery = \"data/customers.csv\"".to_string(),
        )
    } else {
        let mut source = pg.source_toml("reader", Some("reader-secret"));
        if text_results {
            source = source.replacen(
                " }\ngrants.network",
                ", binary_results = false }\ngrants.network",
                1,
            );
            assert!(
                source.contains("binary_results"),
                "the source's config changed shape: {source}"
            );
        }
        (source, format!("source = \"pg\"\nquery = \"SELECT id, email, name, plan, mrr, country, updated_at FROM customers{}\"", if unordered { "" } else { " ORDER BY id" }))
    };
    let model = if warehouse_diff {
        format!("{model}\ndiff = \"warehouse\"")
    } else {
        model
    };
    let write_toml = |max_in_flight: u32| {
        std::fs::write(
            ws.join("backflow.toml"),
            format!(
                "[workspace]\nplugins_dir = \"{plugins}\"\n[state]\nkeep_changelog_runs = {keep_changelog}\n{source}\n[destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"http://127.0.0.1:{port}/contacts\"\nconfig.endpoints.delete = \"http://127.0.0.1:{port}/contacts/delete\"\ngrants.network = [\"127.0.0.1:{port}\"]\n[models.customers]\n{model}\nprimary_key = \"id\"\n[syncs.s]\nmodel = \"customers\"\ndestination = \"hook\"\nmode = \"mirror\"\nbatch_size = 500\nmax_in_flight = {max_in_flight}\n{debug}",
                plugins = plugins.display(),
            ),
        )
        .unwrap();
    };
    write_toml(1);

    if args.iter().any(|a| a == "--hold") {
        println!(
            "workspace {} (receiver on 127.0.0.1:{port}); waiting to be killed",
            ws.display()
        );
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    println!("{rows} rows, keep_changelog_runs = {keep_changelog}");
    // `all CPU s` is every process's CPU time during the job, read from /proc/stat: backflow,
    // PostgreSQL and the receiver share this machine's cores, so that sum over the number of
    // cores is the least wall time the job could take without doing less work. `recv CPU` is
    // the receiver's part of it; `steal s` is time the hypervisor gave this VM's cores to
    // others (a slow phase of the VM would show there).
    println!(
        "{:<34} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>8}",
        "job",
        "wall s",
        "CPU s",
        "RSS MB",
        "plan ms",
        "deliver",
        "delivered",
        "all CPU s",
        "recv CPU",
        "steal s"
    );
    let receiver_pid = receiver.id();
    let job = |name: &str| {
        let before = SystemCpu::read();
        let receiver_before = process_cpu_s(receiver_pid);
        let out = Command::new("/usr/bin/time")
            .args([
                "-f",
                "%e %U %S %M",
                bin,
                "sync",
                "run",
                "s",
                "--json",
                "--workspace",
            ])
            .arg(ws)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let system = SystemCpu::read().since(&before);
        let receiver_cpu = process_cpu_s(receiver_pid) - receiver_before;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stats: Vec<f64> = stderr
            .lines()
            .last()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let record: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name}: {e}: {stderr}"));
        assert!(record["status"] == "succeeded", "{name}: {record}");
        let delivered = record["delivered"]["added"].as_u64().unwrap()
            + record["delivered"]["changed"].as_u64().unwrap()
            + record["delivered"]["removed"].as_u64().unwrap();
        println!(
            "{name:<34} {:>8.2} {:>8.2} {:>9.0} {:>9} {:>9} {:>10} {:>10.2} {:>9.2} {:>8.2}",
            stats[0],
            stats[1] + stats[2],
            stats[3] / 1024.0,
            record["timings"]["plan_ms"].as_u64().unwrap_or(0),
            record["timings"]["deliver_ms"].as_u64().unwrap_or(0),
            delivered,
            system.busy_s,
            receiver_cpu,
            system.steal_s
        );
    };
    // Plugins are compiled once per file and cached; that first-use cost is its own line,
    // not part of the initial sync (a service compiles them when it loads them).
    let started = std::time::Instant::now();
    let out = Command::new(bin)
        .args(["plugin", "list", "--workspace"])
        .arg(ws)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{:<34} {:>8.2}",
        "compile plugins (first use only)",
        started.elapsed().as_secs_f64()
    );
    if !in_flight.is_empty() {
        println!("receiver answers after {latency_ms} ms");
        for n in in_flight {
            // From an empty state each time; the compiled plugins stay cached.
            for entry in std::fs::read_dir(ws.join(".backflow")).unwrap().flatten() {
                if entry.file_name() != "cache" {
                    let path = entry.path();
                    if path.is_dir() {
                        std::fs::remove_dir_all(path).unwrap();
                    } else {
                        std::fs::remove_file(path).unwrap();
                    }
                }
            }
            write_toml(n);
            job(&format!("initial, max_in_flight {n}"));
        }
        let _ = receiver.kill();
        let _ = receiver.wait();
        return;
    }
    job("initial");
    job("no-change rerun (full diff)");
    if csv {
        let _ = receiver.kill();
        let _ = receiver.wait();
        return;
    }
    pg.sql(&format!(
        "UPDATE customers SET plan = 'changed', updated_at = now() WHERE id % 97 = 0 AND id <= 970000;
         DELETE FROM customers WHERE id % 991 = 1 AND id <= 991000;
         INSERT INTO customers SELECT g, 'new' || g || '@example.com', 'New ' || g, 'free', 0, 'DE', now() FROM generate_series({rows} + 1, {rows} + 5000) g;"
    ));
    job("10k updates, 1k deletes, 5k inserts");
    let _ = receiver.kill();
    let _ = receiver.wait();
}

/// The whole machine's CPU time from the first line of /proc/stat, in seconds (its unit is
/// USER_HZ, 100 per second on Linux for every architecture this runs on).
struct SystemCpu {
    busy_s: f64,
    steal_s: f64,
}

impl SystemCpu {
    fn read() -> SystemCpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // cpu user nice system idle iowait irq softirq steal guest guest_nice; guest time is
        // already counted in user.
        let ticks: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let at = |i: usize| ticks.get(i).copied().unwrap_or(0.0) / 100.0;
        SystemCpu {
            busy_s: at(0) + at(1) + at(2) + at(5) + at(6),
            steal_s: at(7),
        }
    }

    fn since(&self, before: &SystemCpu) -> SystemCpu {
        SystemCpu {
            busy_s: self.busy_s - before.busy_s,
            steal_s: self.steal_s - before.steal_s,
        }
    }
}

/// A process's user and system CPU time from /proc/PID/stat, in seconds (0 once it is gone).
fn process_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces:
    // state is the first of them; utime and stime are the 12th and 13th.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<f64> = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    fields.iter().sum::<f64>() / 100.0
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
