//! The `postgres` source plugin against a real PostgreSQL on 127.0.0.1: types, streaming a
//! large model, authentication methods, errors, and the server going away mid-run.

use crate::pg::Pg;
use crate::support::*;
use backflow::state::RunStatus;
use std::collections::HashSet;
use std::io::Write;

/// A workspace reading `query` from `pg` (as `reader`) into model `m`, primary key `id`;
/// `rest` adds destinations and syncs.
fn pg_workspace(pg: &Pg, query: &str, rest: &str) -> TestWorkspace {
    pg_workspace_as(pg, "reader", Some("reader-secret"), query, rest)
}

fn pg_workspace_as(
    pg: &Pg,
    user: &str,
    password: Option<&str>,
    query: &str,
    rest: &str,
) -> TestWorkspace {
    TestWorkspace::new(&format!(
        "[workspace]\nplugins_dir = \"{{plugins}}\"\n{}\n[models.m]\nsource = \"pg\"\nquery = '''{query}'''\nprimary_key = \"id\"\n{rest}",
        pg.source_toml(user, password)
    ))
}

fn webhook_sync(receiver: &backflow::toolkit::receiver::Receiver) -> String {
    format!(
        "[destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"{}\"\nconfig.batch_mode = \"array\"\ngrants.network = [\"{}\"]\n[syncs.s]\nmodel = \"m\"\ndestination = \"hook\"\nbatch_size = 500\n",
        receiver.url("/rows"),
        receiver.addr
    )
}

async fn preview(
    ws: &TestWorkspace,
    limit: u32,
) -> Result<backflow::preview::ModelPreview, String> {
    backflow::preview::preview_model(&host(), &ws.load(), "m", limit)
        .await
        .map_err(|e| e.to_string())
}

const TYPES_TABLE: &str = r#"
CREATE TABLE typed (
  id int PRIMARY KEY, s smallint, i integer, b bigint, n numeric, r real, d double precision,
  flag boolean, t text, v varchar(20), c char(3), u uuid, dt date, ts timestamp, tstz timestamptz,
  j json, jb jsonb, by bytea, ai int[], at text[], an numeric[], ats timestamptz[], ab boolean[],
  money_col money, iv interval
);
INSERT INTO typed VALUES
 (1, -32768, -2147483648, -9223372036854775808, -123456789012345678901234567890.123456789, 1.5, -0.1,
  true, 'héllo 世界 🚀 "quoted"', 'varchar', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1969-07-20',
  '1955-11-05 06:15:00.5', '1900-01-01 00:00:00+00', '{"a": [1, 2]}', '{"b": null}', '\x00ff10',
  '{}', '{"a b",NULL,"c\"d",""}', '{1.10,2}', '{"1969-12-31 23:59:59+00"}', '{{t,f},{f,NULL}}', 12.34, '1 day 2 hours'),
 (2, 32767, 2147483647, 9223372036854775807, 0.000000000000000000000000000001, 'NaN', 'Infinity',
  false, '', '', '', '00000000-0000-0000-0000-000000000000', '0044-03-15 BC', '2262-04-11 23:47:16.854775',
  '1960-01-01 00:00:00.000001+00', 'null', '[]', '\x', '{1,NULL,3}', '{}', '{}', '{}', '{}', 0, '0'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

#[tokio::test(flavor = "multi_thread")]
async fn every_type_with_nulls_and_edge_values() {
    let pg = Pg::any();
    pg.sql(TYPES_TABLE);
    let ws = pg_workspace(&pg, "SELECT * FROM typed ORDER BY id", "");
    let p = preview(&ws, 10).await.unwrap();
    let types: Vec<(String, String)> = p
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.value_type.clone()))
        .collect();
    let expected_types = [
        ("id", "integer"),
        ("s", "integer"),
        ("i", "integer"),
        ("b", "integer"),
        ("n", "decimal"),
        ("r", "float"),
        ("d", "float"),
        ("flag", "boolean"),
        ("t", "text"),
        ("v", "text"),
        ("c", "text"),
        ("u", "text"),
        ("dt", "date"),
        ("ts", "timestamp"),
        ("tstz", "timestamp"),
        ("j", "json"),
        ("jb", "json"),
        ("by", "bytes"),
        ("ai", "json"),
        ("at", "json"),
        ("an", "json"),
        ("ats", "json"),
        ("ab", "json"),
        ("money_col", "text"),
        ("iv", "text"),
    ];
    assert_eq!(
        types,
        expected_types
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    );
    assert_eq!(p.rows.len(), 3);
    let row1 = serde_json::Value::Object(p.rows[0].clone());
    assert_eq!(
        row1,
        serde_json::json!({
            "id": 1, "s": -32768, "i": -2147483648i64, "b": i64::MIN, "n": "-123456789012345678901234567890.123456789",
            "r": 1.5, "d": -0.1, "flag": true, "t": "héllo 世界 🚀 \"quoted\"", "v": "varchar", "c": "ab ",
            "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "dt": "1969-07-20", "ts": "1955-11-05T06:15:00.500Z",
            "tstz": "1900-01-01T00:00:00Z", "j": {"a": [1, 2]}, "jb": {"b": null}, "by": "AP8Q",
            "ai": [], "at": ["a b", null, "c\"d", ""], "an": ["1.10", "2"], "ats": ["1969-12-31T23:59:59Z"],
            "ab": [[true, false], [false, null]], "money_col": "$12.34", "iv": "P1DT2H"
        })
    );
    let row2 = &p.rows[1];
    assert_eq!(row2["b"], serde_json::json!(i64::MAX));
    assert_eq!(row2["n"], "0.000000000000000000000000000001");
    // NaN and infinities have no JSON number: the preview shows null, the value itself is a float.
    assert_eq!(row2["dt"], "-0043-03-15", "44 BC is astronomical year -43");
    assert_eq!(row2["ts"], "2262-04-11T23:47:16.854775Z");
    assert_eq!(row2["tstz"], "1960-01-01T00:00:00.000001Z");
    assert_eq!(row2["by"], "");
    assert_eq!(row2["ai"], serde_json::json!([1, null, 3]));
    assert_eq!(row2["t"], "");
    assert!(
        p.rows[2]
            .iter()
            .filter(|(k, _)| *k != "id")
            .all(|(_, v)| v.is_null()),
        "row 3 is NULL in every column: {:?}",
        p.rows[2]
    );
}

/// Edge values of the types read in the binary format.
const EDGE_TABLE: &str = r#"
CREATE TABLE edge (id int PRIMARY KEY, n numeric, n2 numeric(12,4), d date, ts timestamp, tstz timestamptz, f float8, s smallint);
INSERT INTO edge VALUES
 (1, 'NaN', 0, '4713-01-01 BC', '4713-01-01 00:00:00 BC', '4713-01-01 00:00:00+00 BC', 'NaN', 0),
 (2, 'Infinity', -0.5, '10000-01-01', '10000-01-01 00:00:00', '99999-12-31 23:59:59.999999+00', '-Infinity', -1),
 (3, '-Infinity', 10000, '2000-01-01', '2000-01-01 00:00:00', '2000-01-01 00:00:00+00', 1e308, 1),
 (4, -0.5, 123.45, '1999-12-31', '1999-12-31 23:59:59.999999', '1999-12-31 23:59:59.999999+00', '-0', 2),
 (5, 10000, 0.0001, '0001-01-01', '0001-01-01 00:00:00', '0001-01-01 00:00:00+00', 5e-324, 3),
 (6, 123.4500, 99999999.9999, '9999-12-31', '9999-12-31 23:59:59', '9999-12-31 23:59:59+00', 0.1, 4),
 (7, 1e20, -99999999.9999, '0001-12-31 BC', '0044-03-15 12:00:00 BC', '1970-01-01 00:00:00.000001+00', 2, 5),
 (8, 0.00001, NULL, '1970-01-01', '1969-12-31 23:59:59.5', '1969-12-31 23:59:59.5+00', 3, 6),
 (9, 0, 1, '2024-02-29', '2024-02-29 12:34:56.789', '2024-02-29 12:34:56.789+00', 4, 7);
"#;

/// Integers, booleans, float8, numeric, dates, timestamps and bytea come in PostgreSQL's binary
/// format unless `binary_results = false`: either way the values are the same (compared on
/// every type and on edge values), and a sync delivered from text results finds nothing
/// changed once it reads binary ones, so turning it on (or upgrading) re-sends nothing.
#[tokio::test(flavor = "multi_thread")]
async fn binary_and_text_results_read_the_same_values() {
    let pg = Pg::any();
    pg.sql(TYPES_TABLE);
    pg.sql(EDGE_TABLE);
    let sync = "[destinations.null]\nplugin = \"noop-destination\"\n[syncs.s]\nmodel = \"m\"\ndestination = \"null\"\n";
    let as_text = |ws: &TestWorkspace| {
        edit(
            ws,
            " }\ngrants.network",
            ", binary_results = false }\ngrants.network",
        )
    };
    for query in [
        "SELECT * FROM typed ORDER BY id",
        "SELECT * FROM edge ORDER BY id",
    ] {
        let binary = pg_workspace(&pg, query, sync);
        let text = pg_workspace(&pg, query, sync);
        as_text(&text);
        let (from_binary, from_text) = (
            preview(&binary, 20).await.unwrap(),
            preview(&text, 20).await.unwrap(),
        );
        assert_eq!(
            serde_json::to_value(&from_binary.columns).unwrap(),
            serde_json::to_value(&from_text.columns).unwrap(),
            "{query}"
        );
        assert_eq!(from_binary.rows, from_text.rows, "{query}");
        assert!(from_text.rows.len() >= 3, "{query}");

        let first = text.run("s").await;
        assert_eq!(
            (first.status, first.delivered.added as usize),
            (RunStatus::Succeeded, from_text.rows.len()),
            "{first:?}"
        );
        edit(&text, ", binary_results = false }", " }");
        let again = text.run("s").await;
        assert_eq!(
            (again.status, again.planned.total()),
            (RunStatus::Succeeded, 0),
            "{query}: reading binary results changed rows: {again:?}"
        );
    }
    let edge = preview(&pg_workspace(&pg, "SELECT * FROM edge ORDER BY id", ""), 20)
        .await
        .unwrap();
    let column = |name: &str| {
        edge.rows
            .iter()
            .map(|r| r[name].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        column("n"),
        serde_json::json!([
            "NaN",
            "Infinity",
            "-Infinity",
            "-0.5",
            "10000",
            "123.4500",
            "100000000000000000000",
            "0.00001",
            "0"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    assert_eq!(
        column("n2")[..3],
        serde_json::json!(["0.0000", "-0.5000", "10000.0000"])
            .as_array()
            .unwrap()[..]
    );
    assert_eq!(
        column("d")[..2],
        serde_json::json!(["-4712-01-01", "+10000-01-01"])
            .as_array()
            .unwrap()[..]
    );
    assert_eq!(column("tstz")[1], "+99999-12-31T23:59:59.999999Z");
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_timestamps_fail_naming_row_and_column() {
    let pg = Pg::any();
    pg.sql(
        "CREATE TABLE t (id int, at timestamptz); INSERT INTO t VALUES (1, now()), (2, 'infinity')",
    );
    let ws = pg_workspace(&pg, "SELECT * FROM t ORDER BY id", "");
    let e = preview(&ws, 10).await.unwrap_err();
    assert!(
        e.contains("row 2 column \"at\"") && e.contains("infinity") && e.contains("NULLIF"),
        "{e}"
    );
    // The same from the text format.
    edit(
        &ws,
        " }\ngrants.network",
        ", binary_results = false }\ngrants.network",
    );
    let e = preview(&ws, 10).await.unwrap_err();
    assert!(
        e.contains("row 2 column \"at\"") && e.contains("infinity") && e.contains("NULLIF"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_million_rows_stream_to_a_webhook_exactly_once() {
    let pg = Pg::any();
    pg.sql(
        "CREATE TABLE big AS SELECT g AS id, 'user' || g || '@example.com' AS email FROM generate_series(1, 1000000) g;
         ALTER TABLE big ADD PRIMARY KEY (id)",
    );
    let receiver = receiver().await;
    let ws = pg_workspace(&pg, "SELECT id, email FROM big", &webhook_sync(&receiver));
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.model_rows, 1_000_000);
    assert_eq!(run.delivered.added, 1_000_000);
    let mut ids = HashSet::with_capacity(1_000_000);
    for r in receiver.received() {
        for row in r.body.as_array().unwrap() {
            assert!(
                ids.insert(row["id"].as_i64().unwrap()),
                "row {} delivered twice",
                row["id"]
            );
        }
    }
    assert_eq!(ids.len(), 1_000_000);
    // Nothing changed: a second run reads the model again and sends nothing.
    let again = ws.run("s").await;
    assert_eq!(
        (again.status, again.planned.total()),
        (RunStatus::Succeeded, 0),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sql_error_names_the_model_query_and_the_position() {
    let pg = Pg::any();
    pg.sql("CREATE TABLE people (id int, name text)");
    let receiver = receiver().await;
    let ws = pg_workspace(
        &pg,
        "SELECT id,\n       nmae FROM people",
        &webhook_sync(&receiver),
    );
    let run = ws.run("s").await;
    assert_eq!(run.status, RunStatus::Failed);
    let e = run.error.unwrap();
    assert!(e.contains("backflow.toml: models.m.query"), "{e}");
    assert!(
        e.contains("column \"nmae\" does not exist")
            && e.contains("42703")
            && e.contains("line 2, column 8"),
        "{e}"
    );
    assert_eq!(receiver.rows(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_a_config_error() {
    let pg = Pg::any();
    let ws = pg_workspace_as(
        &pg,
        "reader",
        Some("not-the-password"),
        "SELECT 1 AS id",
        "",
    );
    let e = preview(&ws, 1).await.unwrap_err();
    assert!(
        e.contains("sources.pg.config.password")
            && e.contains("password authentication failed")
            && e.contains("28P01"),
        "{e}"
    );
    let ws = pg_workspace_as(&pg, "reader", None, "SELECT 1 AS id", "");
    let e = preview(&ws, 1).await.unwrap_err();
    assert!(
        e.contains("sources.pg.config.password") && e.contains("none is configured"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_authentication_method() {
    let pg = Pg::throwaway();
    for (user, password, method) in [
        ("trust_user", None, "trust"),
        ("password_user", Some("plain-secret"), "password"),
        ("md5_user", Some("md5-secret"), "md5"),
        ("reader", Some("reader-secret"), "scram-sha-256"),
    ] {
        let ws = pg_workspace_as(
            &pg,
            user,
            password,
            "SELECT 1 AS id, current_user AS who",
            "",
        );
        let p = preview(&ws, 5)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(p.rows[0]["who"], user, "{method}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_password_may_come_from_a_granted_environment_variable() {
    let pg = Pg::any();
    let ws = pg_workspace_as(
        &pg,
        "reader",
        Some("${env.BACKFLOW_TEST_PG_READER_PASSWORD}"),
        "SELECT 7 AS id",
        "",
    );
    // Not granted yet: the workspace does not load, naming the key.
    let e = backflow::workspace::Workspace::load(ws.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("config.password: variable BACKFLOW_TEST_PG_READER_PASSWORD is not granted")
            && e.contains("grants.env"),
        "not granted yet: {e}"
    );
    let toml = std::fs::read_to_string(ws.path().join("backflow.toml")).unwrap();
    ws.write(
        "backflow.toml",
        &toml.replace(
            "grants.network",
            "grants.env = [\"BACKFLOW_TEST_PG_READER_PASSWORD\"]\ngrants.network",
        ),
    );
    // The password reaches the source through the environment of the process reading it.
    let out = tokio::task::block_in_place(|| {
        backflow_with_env(
            &ws,
            None,
            &["model", "preview", "m", "--limit", "1", "--json"],
            &[("BACKFLOW_TEST_PG_READER_PASSWORD", "reader-secret")],
        )
    });
    assert_eq!(ok(out, "model preview").json()["rows"][0]["id"], 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_outside_the_grant_are_refused_by_the_sandbox() {
    let pg = Pg::any();
    // The config points at the server, but the grant names another port.
    let ws = pg_workspace(&pg, "SELECT 1 AS id", "");
    let toml = std::fs::read_to_string(ws.path().join("backflow.toml")).unwrap();
    ws.write(
        "backflow.toml",
        &toml.replace(
            &format!("grants.network = [\"127.0.0.1:{}\"]", pg.port),
            "grants.network = [\"127.0.0.1:1\"]",
        ),
    );
    let e = preview(&ws, 1).await.unwrap_err();
    assert!(
        e.contains(&format!(
            "the sandbox refused a connection to 127.0.0.1:{}",
            pg.port
        )) && e.contains("grants.network"),
        "{e}"
    );

    // Granted, but nothing listens there: unreachable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ws = TestWorkspace::new(&format!(
        "[workspace]\nplugins_dir = \"{{plugins}}\"\n[sources.pg]\nplugin = \"postgres\"\nconfig = {{ host = \"127.0.0.1\", port = {closed}, user = \"reader\" }}\ngrants.network = [\"127.0.0.1:{closed}\"]\n[models.m]\nsource = \"pg\"\nquery = \"SELECT 1 AS id\"\nprimary_key = \"id\"\n"
    ));
    let e = preview(&ws, 1).await.unwrap_err();
    assert!(
        e.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{closed}"
        )),
        "{e}"
    );
}

/// A workspace reading from `pg` as `tls_user` with `extra` config (sslmode, sslrootcert),
/// the CA certificate in `certs/` granted.
fn tls_workspace(pg: &Pg, ca: &str, extra: &str) -> TestWorkspace {
    let ws = TestWorkspace::new(&format!(
        "[workspace]\nplugins_dir = \"{{plugins}}\"\n[sources.pg]\nplugin = \"postgres\"\nconfig = {{ host = \"127.0.0.1\", port = {port}, user = \"tls_user\", password = \"tls-secret\", database = \"postgres\"{extra} }}\ngrants.network = [\"127.0.0.1:{port}\"]\ngrants.files = [\"certs\"]\n[models.m]\nsource = \"pg\"\nquery = \"SELECT 1 AS id, ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()\"\nprimary_key = \"id\"\n",
        port = pg.port
    ));
    ws.write("certs/ca.crt", ca);
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_require_verify_ca_and_verify_full() {
    let (pg, ca) = Pg::throwaway_tls();
    for mode in [
        ", sslmode = \"require\"",
        ", sslmode = \"require\", ssl_ciphers = \"any\"",
        ", sslmode = \"verify-ca\", sslrootcert = \"certs/ca.crt\"",
        ", sslmode = \"verify-full\", sslrootcert = \"certs/ca.crt\"",
    ] {
        let p = preview(&tls_workspace(&pg, &ca, mode), 1)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(p.rows[0]["ssl"], true, "{mode}");
        assert!(
            p.rows[0]["version"].as_str().unwrap().starts_with("TLSv1."),
            "{mode}: {:?}",
            p.rows[0]
        );
        // ChaCha20 unless every suite is allowed (then this server picks AES-GCM).
        let cipher = p.rows[0]["cipher"].as_str().unwrap();
        assert_eq!(
            cipher.contains("CHACHA20"),
            !mode.contains("any"),
            "{mode}: {cipher}"
        );
    }
    // The server only lets tls_user in over TLS: without it the server refuses.
    let e = preview(&tls_workspace(&pg, &ca, ""), 1).await.unwrap_err();
    assert!(
        e.contains("no encryption") || e.contains("pg_hba.conf rejects"),
        "{e}"
    );
    // verify-full against the public roots: our throwaway CA is unknown.
    let e = preview(&tls_workspace(&pg, &ca, ", sslmode = \"verify-full\""), 1)
        .await
        .unwrap_err();
    assert!(
        e.contains("sources.pg.config.sslrootcert")
            && e.contains("TLS handshake")
            && e.contains("UnknownIssuer"),
        "{e}"
    );
    // A CA file that is not granted cannot be read.
    let ws = tls_workspace(
        &pg,
        &ca,
        ", sslmode = \"verify-ca\", sslrootcert = \"/etc/ssl/certs/ca-certificates.crt\"",
    );
    let e = preview(&ws, 1).await.unwrap_err();
    assert!(
        e.contains("sslrootcert") && e.contains("grants.files"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn passwords_go_only_to_a_verified_server_and_verify_ca_needs_its_ca() {
    let (pg, ca) = Pg::throwaway_tls();
    let as_user = |user: &str, password: &str, extra: &str| {
        let ws = tls_workspace(&pg, &ca, extra);
        let toml = std::fs::read_to_string(ws.path().join("backflow.toml")).unwrap();
        ws.write(
            "backflow.toml",
            &toml.replace(
                "user = \"tls_user\", password = \"tls-secret\"",
                &format!("user = \"{user}\", password = \"{password}\""),
            ),
        );
        ws
    };
    // Over `require` (encrypted, server not authenticated) a cleartext or MD5 password is not sent.
    for (user, password, what) in [
        ("password_user", "plain-secret", "cleartext"),
        ("md5_user", "md5-secret", "MD5"),
    ] {
        let e = preview(&as_user(user, password, ", sslmode = \"require\""), 1)
            .await
            .unwrap_err();
        assert!(
            e.contains("sources.pg.config.sslmode")
                && e.contains(&format!("asks for a {what} password"))
                && e.contains("password_over_unverified_tls"),
            "{e}"
        );
        // Accepted explicitly, or to a verified server, it is.
        let ok = preview(
            &as_user(
                user,
                password,
                ", sslmode = \"require\", password_over_unverified_tls = true",
            ),
            1,
        )
        .await
        .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(ok.rows[0]["ssl"], true);
        preview(
            &as_user(
                user,
                password,
                ", sslmode = \"verify-full\", sslrootcert = \"certs/ca.crt\"",
            ),
            1,
        )
        .await
        .unwrap_or_else(|e| panic!("{user}: {e}"));
    }
    // SCRAM never reveals the password: fine over `require` (the test above, tls_user).
    // verify-ca without a CA of its own would trust any public certificate for any name.
    let ws = tls_workspace(&pg, &ca, ", sslmode = \"verify-ca\"");
    let e = preview(&ws, 1).await.unwrap_err();
    assert!(
        e.contains("sources.pg.config.sslrootcert") && e.contains("verify-ca\" needs sslrootcert"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_host_name_is_resolved_in_the_sandbox() {
    let pg = Pg::any();
    let ws = pg_workspace(&pg, "SELECT 1 AS id", "");
    let toml = std::fs::read_to_string(ws.path().join("backflow.toml")).unwrap();
    // Named in the config but only its IP granted: no DNS in the sandbox, and the error says what to do.
    ws.write(
        "backflow.toml",
        &toml.replace("host = \"127.0.0.1\"", "host = \"localhost\""),
    );
    let e = preview(&ws, 1).await.unwrap_err();
    assert!(
        e.contains("cannot resolve localhost")
            && e.contains(&format!("grants.network = [\"localhost:{}\"]", pg.port)),
        "{e}"
    );
    // Granted by name: resolved, and connected to the address it resolves to.
    let named = toml
        .replace("host = \"127.0.0.1\"", "host = \"localhost\"")
        .replace(
            &format!("grants.network = [\"127.0.0.1:{}\"]", pg.port),
            &format!("grants.network = [\"localhost:{}\"]", pg.port),
        );
    ws.write("backflow.toml", &named);
    assert_eq!(preview(&ws, 1).await.unwrap().rows[0]["id"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_is_never_downgraded() {
    // A server without TLS: require fails, it does not carry on in the clear.
    let pg = Pg::throwaway();
    let ws = pg_workspace(&pg, "SELECT 1 AS id", "");
    let toml = std::fs::read_to_string(ws.path().join("backflow.toml")).unwrap();
    ws.write(
        "backflow.toml",
        &toml.replace("database = ", "sslmode = \"require\", database = "),
    );
    let e = preview(&ws, 1).await.unwrap_err();
    assert!(
        e.contains("sources.pg.config.sslmode") && e.contains("does not accept TLS"),
        "{e}"
    );
    // prefer (which may fall back) is not offered.
    ws.write(
        "backflow.toml",
        &toml.replace("database = ", "sslmode = \"prefer\", database = "),
    );
    let e = preview(&ws, 1).await.unwrap_err();
    assert!(
        e.contains("sources.pg.config.sslmode") && e.contains("fall back"),
        "{e}"
    );
}

/// The server stops while the query streams: the run fails with nothing delivered and the
/// snapshot untouched; once the server is back, a rerun delivers every row exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_stopping_mid_stream_loses_nothing() {
    let pg = Pg::throwaway();
    const ROWS: i64 = 200_000;
    pg.sql(&format!(
        "CREATE TABLE customers AS SELECT g AS id, 'c' || g AS name FROM generate_series(1, {ROWS}) g;
         -- Blocks on advisory lock 42 when it reaches row 100001, after 100000 rows have streamed.
         CREATE FUNCTION gate(id int) RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN
           IF id = 100001 THEN PERFORM pg_advisory_lock(42); PERFORM pg_advisory_unlock(42); END IF;
           RETURN true;
         END $$;"
    ));
    let receiver = receiver().await;
    let sync = webhook_sync(&receiver);
    let ws = pg_workspace(
        &pg,
        "SELECT id, name FROM customers WHERE gate(id)",
        &format!("{sync}\n"),
    );
    let ws_toml = std::fs::read_to_string(ws.path().join("backflow.toml")).unwrap();
    // Small fetches so rows stream before the gate, not in one go after it.
    ws.write(
        "backflow.toml",
        &ws_toml.replace("database = ", "fetch_rows = 1000, database = "),
    );

    let mut holder = pg.session();
    holder
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"SELECT pg_advisory_lock(42);\n")
        .unwrap();
    holder.stdin.as_mut().unwrap().flush().unwrap();
    wait_for(
        &pg,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
    )
    .await;

    let path = ws.path().to_path_buf();
    let run = tokio::spawn(async move { run_in(&path, "s").await });
    // The query is streaming and now waits on the lock: stop the server under it.
    wait_for(&pg, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'backflow' AND wait_event_type = 'Lock'").await;
    pg.stop();
    let failed = run.await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed, "{failed:?}");
    let e = failed.error.clone().unwrap();
    assert!(e.contains("lost") || e.contains("closed"), "{e}");
    assert_eq!(
        receiver.rows(),
        0,
        "nothing is delivered from a model that was not read whole"
    );
    let _ = holder.kill();
    let _ = holder.wait();

    pg.restart();
    let rerun = ws.run("s").await;
    assert_eq!(rerun.status, RunStatus::Succeeded, "{rerun:?}");
    assert_eq!(rerun.delivered.added, ROWS as u64);
    let mut ids = HashSet::new();
    for r in receiver.received() {
        for row in r.body.as_array().unwrap() {
            assert!(
                ids.insert(row["id"].as_i64().unwrap()),
                "row {} delivered twice",
                row["id"]
            );
        }
    }
    assert_eq!(ids.len() as i64, ROWS);
    let third = ws.run("s").await;
    assert_eq!(third.planned.total(), 0, "{third:?}");
}

/// Runs a sync of the workspace at `path` (a fresh load, as another process would).
async fn run_in(path: &std::path::Path, sync: &str) -> backflow::state::RunRecord {
    let ws = backflow::workspace::Workspace::load(path).unwrap();
    let state = backflow::state::StateStore::open(&ws.state_dir).unwrap();
    backflow::app::run_sync(
        &host(),
        &ws,
        &state,
        sync,
        &backflow::sync::RunOptions {
            trigger: "test".into(),
            user: "tester".into(),
            approved_run: None,
            full_resync: false,
            draft: false,
            undo: None,
            stop: None,
            run_id: None,
        },
    )
    .await
    .unwrap()
}

/// Polls `count_sql` until it returns a positive count (the condition is about the server's
/// state, not about time; the bound only keeps a broken test from hanging).
async fn wait_for(pg: &Pg, count_sql: &str) {
    for _ in 0..1200 {
        let n: i64 = pg.sql(count_sql).parse().unwrap_or(0);
        if n > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {count_sql:?}");
}

#[test]
fn model_preview_on_the_command_line() {
    let pg = Pg::any();
    pg.sql("CREATE TABLE people (id int PRIMARY KEY, name text, born date); INSERT INTO people VALUES (1, 'Ada', '1815-12-10'), (2, 'Grace', '1906-12-09'), (3, 'Alan', '1912-06-23')");
    let ws = pg_workspace(&pg, "SELECT * FROM people ORDER BY id", "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args([
            "model",
            "preview",
            "m",
            "--limit",
            "2",
            "--json",
            "--workspace",
        ])
        .arg(ws.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["columns"],
        serde_json::json!([{"name": "id", "type": "integer"}, {"name": "name", "type": "text"}, {"name": "born", "type": "date"}])
    );
    assert_eq!(
        json["rows"],
        serde_json::json!([{"id": 1, "name": "Ada", "born": "1815-12-10"}, {"id": 2, "name": "Grace", "born": "1906-12-09"}])
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backflow"))
        .args(["model", "preview", "m", "--workspace"])
        .arg(ws.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("born")
            && text.contains("date")
            && text.contains("3 row(s)")
            && text.contains("(key)"),
        "{text}"
    );
}
