//! The file-source plugin: CSV (RFC 4180) and JSON Lines, types inferred or declared.

use crate::support::*;
use backflow::host::{Grants, Limits, SourceInstance};
use backflow_plugin_sdk::{Value, ValueType};

/// Reads `query` from a fresh workspace holding `files`, returning (columns, rows).
async fn read(
    files: &[(&str, &[u8])],
    config: &str,
    query: &str,
) -> Result<(Vec<(String, ValueType)>, Vec<Vec<Value>>), String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join("data").join(name), content).unwrap();
    }
    let host = host();
    let plugin = host.load(&plugin("file_source.wasm")).await.unwrap();
    let grants = Grants {
        files: vec![(dir.path().join("data"), "data".into())],
        ..Grants::default()
    };
    let mut source =
        SourceInstance::open(&host, &plugin, &grants, Limits::default(), config, query)
            .await
            .map_err(|e| e.to_string())?;
    let columns = source
        .columns()
        .iter()
        .map(|c| (c.name.clone(), c.value_type))
        .collect();
    let mut rows = Vec::new();
    while let Some(batch) = source.next_batch(2).await.map_err(|e| e.to_string())? {
        rows.extend(batch.decode().unwrap());
    }
    source.close().await;
    Ok((columns, rows))
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_follows_rfc4180_quoting_crlf_and_utf8() {
    let csv = "\u{feff}id,name,note\r\n1,\"Doe, Jane\",\"said \"\"hi\"\"\"\r\n2,Zoë,\"two\r\nlines\"\r\n3,東京,\r\n";
    let (columns, rows) = read(&[("t.csv", csv.as_bytes())], "{}", "data/t.csv")
        .await
        .unwrap();
    assert_eq!(
        columns.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["id", "name", "note"]
    );
    assert_eq!(
        rows[0],
        vec![Value::Int(1), text("Doe, Jane"), text("said \"hi\"")]
    );
    assert_eq!(
        rows[1],
        vec![Value::Int(2), text("Zoë"), text("two\r\nlines")]
    );
    assert_eq!(rows[2], vec![Value::Int(3), text("東京"), Value::Null]);
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_types_are_inferred_and_can_be_declared() {
    let csv = "id,price,active,day,at,ratio,zip\n1,19.99,true,2024-01-31,2024-01-31T10:00:00Z,1e3,01234\n2,,false,1969-07-20,1969-07-20T20:17:40Z,2.5,99999\n";
    let (columns, rows) = read(
        &[("t.csv", csv.as_bytes())],
        r#"{"columns": {"zip": "text"}}"#,
        "data/t.csv",
    )
    .await
    .unwrap();
    let types: Vec<ValueType> = columns.iter().map(|c| c.1).collect();
    use ValueType::*;
    assert_eq!(
        types,
        [Integer, Decimal, Boolean, Date, Timestamp, Float, Text]
    );
    assert_eq!(rows[0][1], Value::Decimal("19.99".into()));
    assert_eq!(rows[1][1], Value::Null);
    assert_eq!(
        rows[1][3],
        Value::Date(backflow_plugin_sdk::value::parse_date("1969-07-20").unwrap())
    );
    assert!(
        matches!(rows[1][4], Value::Timestamp(t) if t < 0),
        "timestamps before 1970 are negative"
    );
    assert_eq!(
        rows[0][6],
        text("01234"),
        "declared text keeps leading zeros"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_that_does_not_fit_its_type_names_the_file_line_and_column() {
    let csv = "id,age\n1,30\n2,N/A\n";
    let e = read(
        &[("t.csv", csv.as_bytes())],
        r#"{"columns": {"age": "integer"}}"#,
        "data/t.csv",
    )
    .await
    .unwrap_err();
    assert!(
        e.contains("data/t.csv line 3, column \"age\": \"N/A\" is not an integer"),
        "{e}"
    );

    let e = read(&[("t.csv", b"id,age\n1,30\n2\n")], "{}", "data/t.csv")
        .await
        .unwrap_err();
    assert!(e.contains("line 3"), "{e}");

    let e = read(&[("t.csv", b"id,name\n1,\xff\xfe\n")], "{}", "data/t.csv")
        .await
        .unwrap_err();
    assert!(
        e.contains("data/t.csv") && e.to_lowercase().contains("utf-8"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_lines_are_read_with_a_schema_from_the_first_rows() {
    let jsonl = "{\"id\": 1, \"email\": \"a@x.com\", \"tags\": [\"vip\"], \"score\": 1}\n\n{\"id\": 2, \"email\": null, \"score\": 2.5}\n";
    let (columns, rows) = read(&[("t.jsonl", jsonl.as_bytes())], "{}", "data/t.jsonl")
        .await
        .unwrap();
    assert_eq!(
        columns,
        vec![
            ("id".into(), ValueType::Integer),
            ("email".into(), ValueType::Text),
            ("tags".into(), ValueType::Json),
            ("score".into(), ValueType::Float)
        ]
    );
    assert_eq!(
        rows[0],
        vec![
            Value::Int(1),
            text("a@x.com"),
            Value::Json("[\"vip\"]".into()),
            Value::Float(1.0)
        ]
    );
    assert_eq!(
        rows[1],
        vec![Value::Int(2), Value::Null, Value::Null, Value::Float(2.5)]
    );

    let e = read(
        &[("t.jsonl", b"{\"id\": 1}\nnot json\n")],
        "{}",
        "data/t.jsonl",
    )
    .await
    .unwrap_err();
    assert!(e.contains("data/t.jsonl line 2: invalid JSON"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_file_streams_in_batches() {
    let mut csv = String::from("id,name\n");
    for i in 0..5000 {
        csv.push_str(&format!("{i},name {i}\n"));
    }
    let (_, rows) = read(
        &[("big.csv", csv.as_bytes())],
        r#"{"infer_rows": 10}"#,
        "data/big.csv",
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 5000);
    assert_eq!(rows[4999], vec![Value::Int(4999), text("name 4999")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_padded_codes_stay_text() {
    let csv = "id,zip,account\n1,01234,+49\n2,94107,+1\n";
    let (columns, rows) = read(&[("t.csv", csv.as_bytes())], "{}", "data/t.csv")
        .await
        .unwrap();
    assert_eq!(columns[1], ("zip".into(), ValueType::Text));
    assert_eq!(columns[2], ("account".into(), ValueType::Text));
    assert_eq!(rows[0][1], text("01234"));
}
