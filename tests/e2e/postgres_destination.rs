//! The `postgres-destination` plugin against a real PostgreSQL on 127.0.0.1 (throwaway
//! clusters): every sync mode and value type round-trips from the postgres source into
//! tables, a constraint violation rejects one row and delivers the rest, a run killed with
//! SIGKILL loses nothing and duplicates nothing on the next run, read-back answers what the
//! table holds, the source's TLS and password rules hold, and the conformance suite passes.

use crate::pg::Pg;
use crate::support::*;
use backflow::domain::{Grants, NetworkGrant};
use backflow::host::{DestinationInstance, Limits};
use backflow::state::RunStatus;
use backflow_plugin_sdk::warehouse::Held;
use backflow_plugin_sdk::{BatchBuilder, Column, SyncContext, Value, ValueType};

/// `[destinations.NAME]` writing `table` as the superuser; `extra` adds config keys
/// (`, create_table = true`).
fn destination(pg: &Pg, name: &str, table: &str, extra: &str) -> String {
    format!(
        "[destinations.{name}]\nplugin = \"postgres-destination\"\nconfig = {{ host = \"{}\", port = {}, user = \"postgres\", database = \"{}\", table = \"{table}\"{extra} }}\ngrants.network = [\"{}:{}\"]\n",
        pg.host, pg.port, pg.database, pg.host, pg.port
    )
}

fn sync(name: &str, model: &str, dest: &str, mode: &str, extra: &str) -> String {
    format!("[syncs.{name}]\nmodel = \"{model}\"\ndestination = \"{dest}\"\nmode = \"{mode}\"\n{extra}\n")
}

/// A workspace reading `query` from `pg` (as `reader`) into model `m` (key `id`).
fn pg_workspace(pg: &Pg, query: &str, rest: &str) -> TestWorkspace {
    TestWorkspace::new(&format!(
        "[workspace]\nplugins_dir = \"{{plugins}}\"\n{}\n[models.m]\nsource = \"pg\"\nquery = '''{query}'''\nprimary_key = \"id\"\n{rest}",
        pg.source_toml("reader", Some("reader-secret"))
    ))
}

const SOURCE_TABLE: &str = r#"
CREATE TABLE src (id bigint PRIMARY KEY, flag boolean, n bigint, f double precision, d numeric,
  t text, b bytea, ts timestamptz, dt date, j jsonb);
INSERT INTO src VALUES
 (1, true, -9223372036854775808, 1e300, '12345678901234567890.123456789',
  E'tab\there\nnewline \\ backslash "q" é 🙂', '\x00ff0a', '1969-12-31 23:59:59.999999+00',
  '0044-03-15', '{"a": [1, null, "x"]}'),
 (2, false, 9223372036854775807, -0.25, '-0.01', '', '\x', '2024-05-01 12:00:00.5+00',
  '1970-01-01', '[]'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE d_app (LIKE src, event_id text UNIQUE);
CREATE TABLE d_upd (LIKE src INCLUDING ALL);
INSERT INTO d_upd (id) VALUES (1), (2);
"#;

/// Runs `sync` re-sending every model row (`--full-resync`).
async fn full_resync(ws: &TestWorkspace, sync: &str) -> backflow::state::RunRecord {
    let ws_loaded = ws.load();
    let state = backflow::state::StateStore::open(&ws_loaded.state_dir).unwrap();
    let options = backflow::sync::RunOptions {
        trigger: "test".into(),
        user: "tester".into(),
        approved_run: None,
        full_resync: true,
        draft: false,
        undo: None,
        stop: None,
        run_id: None,
    };
    backflow::app::run_sync(&host(), &ws_loaded, &state, sync, &options)
        .await
        .unwrap_or_else(|e| panic!("{sync}: {e}"))
}

fn rows(pg: &Pg, table: &str) -> String {
    pg.sql(&format!("SELECT * FROM {table} ORDER BY id"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_mode_and_value_type_round_trips() {
    let pg = Pg::any();
    pg.sql(SOURCE_TABLE);
    let mut rest = String::new();
    for (mode, table, extra) in [
        ("upsert", "d_up", ", create_table = true"),
        ("mirror", "d_mir", ", create_table = true"),
        ("insert", "d_ins", ", create_table = true"),
        ("append", "d_app", ""),
        ("update", "d_upd", ""),
    ] {
        rest.push_str(&destination(&pg, table, table, extra));
        rest.push_str(&sync(mode, "m", table, mode, "batch_size = 2"));
    }
    let ws = pg_workspace(&pg, "SELECT * FROM src ORDER BY id", &rest);
    for mode in ["upsert", "mirror", "insert", "append"] {
        let run = ws.run(mode).await;
        assert_eq!(run.status, RunStatus::Succeeded, "{mode}: {run:?}");
        assert_eq!(run.delivered.added, 3, "{mode}: {run:?}");
    }
    let src = rows(&pg, "src");
    for table in ["d_up", "d_mir", "d_ins"] {
        assert_eq!(rows(&pg, table), src, "{table} holds what the model holds");
    }
    // An append carries each event's stable event_id besides the model's columns.
    assert_eq!(
        pg.sql("SELECT id, flag, n, f, d, t, b, ts, dt, j FROM d_app ORDER BY id"),
        src
    );
    assert_eq!(pg.sql("SELECT count(DISTINCT event_id) FROM d_app"), "3");
    // update never creates: the row the table lacks is rejected, naming its key.
    let run = ws.run("update").await;
    assert_eq!(run.status, RunStatus::Partial, "{run:?}");
    assert_eq!(run.rejected.len(), 1, "{run:?}");
    assert_eq!(run.rejected[0].key, "3");
    assert!(
        run.rejected[0].error.contains("no row with id=3"),
        "{run:?}"
    );
    assert_eq!(
        pg.sql("SELECT * FROM d_upd WHERE id < 3 ORDER BY id"),
        pg.sql("SELECT * FROM src WHERE id < 3 ORDER BY id")
    );

    // Change, remove and add rows in the model; each mode does its part.
    pg.sql(
        "UPDATE src SET t = 'changed' WHERE id = 2; DELETE FROM src WHERE id = 1;
            INSERT INTO src (id, t) VALUES (4, 'new');",
    );
    for mode in ["upsert", "mirror", "insert", "append", "update"] {
        let run = ws.run(mode).await;
        assert_ne!(run.status, RunStatus::Failed, "{mode}: {run:?}");
    }
    assert_eq!(rows(&pg, "d_mir"), rows(&pg, "src"), "mirror deletes");
    assert_eq!(pg.sql("SELECT t FROM d_up WHERE id = 2"), "changed");
    assert_eq!(
        pg.sql("SELECT count(*) FROM d_up"),
        "4",
        "upsert keeps row 1"
    );
    assert_eq!(
        pg.sql("SELECT t FROM d_ins WHERE id = 2"),
        "",
        "insert sends no updates"
    );
    assert_eq!(pg.sql("SELECT count(*) FROM d_ins"), "4");
    assert_eq!(
        pg.sql("SELECT count(*) FROM d_app"),
        "4",
        "append adds the new row once"
    );
    assert_eq!(pg.sql("SELECT t FROM d_upd WHERE id = 2"), "changed");

    // A full resync replays every row: the key makes it change nothing.
    let before = rows(&pg, "d_up");
    let run = full_resync(&ws, "upsert").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(rows(&pg, "d_up"), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_constraint_violation_rejects_one_row_and_delivers_the_rest() {
    let pg = Pg::any();
    pg.sql(
        "CREATE TABLE people (id int PRIMARY KEY, email text, age int);
         INSERT INTO people VALUES (1, 'a@x', 30), (2, 'taken@x', 40), (3, 'c@x', -5),
           (4, 'd@x', 50), (5, 'e@x', 60);
         CREATE TABLE contacts (id bigint PRIMARY KEY, email text CONSTRAINT contacts_email_key UNIQUE,
           age int CONSTRAINT contacts_age_check CHECK (age >= 0));
         INSERT INTO contacts VALUES (100, 'taken@x', 1);",
    );
    let rest = format!(
        "{}{}",
        destination(&pg, "db", "contacts", ""),
        sync("s", "m", "db", "upsert", "batch_size = 10")
    );
    let ws = pg_workspace(&pg, "SELECT * FROM people ORDER BY id", &rest);
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Partial, "{run:?}");
    assert_eq!(run.delivered.added, 3, "{run:?}");
    let mut rejected: Vec<(String, String)> = run
        .rejected
        .iter()
        .map(|r| (r.key.clone(), r.error.clone()))
        .collect();
    rejected.sort();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert_eq!(rejected[0].0, "2");
    assert!(
        rejected[0].1.contains("id=2") && rejected[0].1.contains("contacts_email_key"),
        "{rejected:?}"
    );
    assert_eq!(rejected[1].0, "3");
    assert!(
        rejected[1].1.contains("id=3") && rejected[1].1.contains("contacts_age_check"),
        "{rejected:?}"
    );
    assert_eq!(
        pg.sql("SELECT id FROM contacts ORDER BY id"),
        "1\n4\n5\n100",
        "the rest of the batch went through"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_mid_delivery_then_rerun_loses_nothing_and_duplicates_nothing() {
    let pg = Pg::throwaway();
    pg.sql(
        "CREATE TABLE big AS SELECT i::bigint AS id, 'value ' || i AS v FROM generate_series(1, 20000) i;
         ALTER TABLE big ADD PRIMARY KEY (id);
         CREATE TABLE d (id bigint, v text);
         CREATE UNIQUE INDEX d_id ON d (id);",
    );
    let rest = format!(
        "{}{}",
        destination(&pg, "db", "d", ""),
        sync(
            "s",
            "m",
            "db",
            "upsert",
            "batch_size = 200\nrate_limit = { rows_per_second = 4000 }"
        )
    );
    let ws = pg_workspace(&pg, "SELECT * FROM big ORDER BY id", &rest);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["sync", "run", "s", "--workspace"])
        .arg(ws.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let count: u64 = pg.sql("SELECT count(*) FROM d").parse().unwrap();
        if count >= 2000 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before it could be killed"
        );
        assert!(std::time::Instant::now() < deadline, "no rows arrived");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let landed: u64 = pg.sql("SELECT count(*) FROM d").parse().unwrap();
    assert!(landed < 20000, "killed mid-run");

    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(
        pg.sql("SELECT count(*), count(DISTINCT id) FROM d"),
        "20000|20000"
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM big FULL JOIN d USING (id) WHERE big.v IS DISTINCT FROM d.v"),
        "0",
        "every row landed with its value"
    );
}

/// A typed call of `writer.read` on a writer for `table` (key `id`).
async fn read_back(
    pg: &Pg,
    table: &str,
    keys: &[i64],
) -> backflow_plugin_sdk::warehouse::ReadResult {
    let host = host();
    let plugin = host
        .load(&plugin("postgres_destination.wasm"))
        .await
        .unwrap();
    let grants = Grants {
        network: vec![NetworkGrant::for_address(
            pg.host.parse().unwrap(),
            Some(pg.port),
        )],
        ..Grants::default()
    };
    let config = format!(
        r#"{{"host": "{}", "port": {}, "user": "postgres", "database": "{}", "table": "{table}"}}"#,
        pg.host, pg.port, pg.database
    );
    let context = SyncContext {
        sync_name: "s".into(),
        primary_key: vec!["id".into()],
        run_id: "r".into(),
    };
    let mut writer = DestinationInstance::open(
        &host,
        &plugin,
        &grants,
        Limits::default(),
        &config,
        &context,
    )
    .await
    .unwrap();
    let mut batch = BatchBuilder::new(vec![Column::new("id", ValueType::Integer)]);
    for k in keys {
        batch.push_row(&[Value::Int(*k)]);
    }
    let result = writer.read(batch.finish()).await.unwrap();
    let _ = writer.finish().await;
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn read_back_returns_what_was_written() {
    let pg = Pg::any();
    pg.sql(SOURCE_TABLE);
    let rest = format!(
        "{}{}",
        destination(&pg, "db", "d_up", ", create_table = true"),
        sync("s", "m", "db", "upsert", "")
    );
    let ws = pg_workspace(&pg, "SELECT * FROM src ORDER BY id", &rest);
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");

    let result = read_back(&pg, "d_up", &[2, 99, 1, 3]).await;
    let names: Vec<&str> = result
        .rows
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["id", "flag", "n", "f", "d", "t", "b", "ts", "dt", "j"]
    );
    let read = result.rows.decode().unwrap();
    let row = |held: Held| match held {
        Held::Present(i) => read[i as usize].clone(),
        Held::Absent => panic!("expected a present row"),
    };
    assert_eq!(result.held[1], Held::Absent, "no row 99");
    let two = row(result.held[0]);
    assert_eq!(
        two,
        vec![
            Value::Int(2),
            Value::Bool(false),
            Value::Int(i64::MAX),
            Value::Float(-0.25),
            Value::Decimal("-0.01".into()),
            Value::Text(String::new()),
            Value::Bytes(vec![]),
            Value::Timestamp(1_714_564_800_500_000),
            Value::Date(0),
            Value::Json("[]".into()),
        ]
    );
    let one = row(result.held[2]);
    assert_eq!(one[0], Value::Int(1));
    assert_eq!(one[3], Value::Float(1e300));
    assert_eq!(one[6], Value::Bytes(vec![0, 255, 10]));
    assert_eq!(one[7], Value::Timestamp(-1));
    let three = row(result.held[3]);
    assert_eq!(three[0], Value::Int(3));
    assert!(three[1..].iter().all(|v| *v == Value::Null), "{three:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_password_rules_are_the_sources() {
    let (pg, ca) = Pg::throwaway_tls();
    pg.sql(
        "CREATE TABLE people (id int PRIMARY KEY, email text);
         INSERT INTO people VALUES (1, 'a@x'), (2, 'b@x');
         CREATE TABLE d (id bigint PRIMARY KEY, email text);
         GRANT ALL ON d TO password_user, tls_user;",
    );
    let tls_dest = |name: &str, user: &str, password: &str, tls: &str| {
        format!(
            "[destinations.{name}]\nplugin = \"postgres-destination\"\nconfig = {{ host = \"{}\", port = {}, user = \"{user}\", password = \"{password}\", database = \"{}\", table = \"d\", {tls} }}\ngrants.network = [\"{}:{}\"]\ngrants.files = [\"certs\"]\n",
            pg.host, pg.port, pg.database, pg.host, pg.port
        )
    };
    let rest = format!(
        "{}{}{}{}",
        tls_dest(
            "plain",
            "password_user",
            "plain-secret",
            "sslmode = \"require\""
        ),
        sync("to_plain", "m", "plain", "upsert", ""),
        tls_dest(
            "verified",
            "tls_user",
            "tls-secret",
            "sslmode = \"verify-full\", sslrootcert = \"certs/ca.crt\""
        ),
        sync("to_verified", "m", "verified", "upsert", ""),
    );
    let ws = pg_workspace(&pg, "SELECT * FROM people ORDER BY id", &rest);
    ws.write("certs/ca.crt", &ca);
    // A cleartext password is not sent to a server that was not authenticated.
    let run = ws.run("to_plain").await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.clone().unwrap_or_default();
    assert!(error.contains("password_over_unverified_tls"), "{error}");
    assert_eq!(pg.sql("SELECT count(*) FROM d"), "0");
    // Over verify-full, against the cluster's CA, it writes.
    let run = ws.run("to_verified").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(
        pg.sql("SELECT id, email FROM d ORDER BY id"),
        "1|a@x\n2|b@x"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_conformance_suite_passes() {
    let pg = Pg::any();
    let config = format!(
        r#"{{"host": "{}", "port": {}, "user": "postgres", "database": "{}", "table": "conformance", "create_table": true}}"#,
        pg.host, pg.port, pg.database
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["plugin", "conformance"])
        .arg(plugin("postgres_destination.wasm"))
        .args(["--config", &config, "--grant-network"])
        .arg(format!("{}:{}", pg.host, pg.port))
        .args([
            "--offline-config",
            r#"{"host": "127.0.0.1", "port": 9, "user": "postgres", "table": "t"}"#,
            "--grant-network",
            "127.0.0.1:9",
        ])
        .env("RUST_LOG", "warn")
        .env("XDG_CACHE_HOME", test_cache_home())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.lines().any(|l| l.trim_start().starts_with("warn")),
        "every row accepted: {stdout}"
    );
    assert!(pg.sql("SELECT count(*) FROM conformance") != "0");
}
