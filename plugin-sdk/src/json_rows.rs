//! The JSON row encoding of contract 0.2.0 (`row-encoding: json`), converted to and from the
//! MessagePack batches the engine works with.
//!
//! A plugin written in an interpreted language parses JSON with its runtime's native parser,
//! which is many times faster than a MessagePack decoder written in the language. The engine
//! keeps MessagePack inside (spill files, state, Rust plugins) and converts at the boundary:
//! [`to_json_rows`] for batches it passes to such a plugin, [`from_json_rows`] for batches the
//! plugin returns. `wit/README.md` ("JSON row encoding") is the definition for authors:
//!
//! - typed columns carry plain JSON; what JSON cannot hold exactly is a string: decimals,
//!   timestamps (RFC 3339 UTC), dates, base64 bytes, integers beyond ±(2^53−1), and the
//!   floats NaN/Infinity;
//! - `any` columns carry null, booleans, safe integers, finite floats and text plainly, and
//!   every other value as a one-key object naming its type (`{"decimal": "1.50"}`).

use crate::codec::{Batch, BatchBuilder, CodecError};
use crate::value::{
    format_date, format_timestamp, is_decimal_literal, parse_date, parse_timestamp, Column, Value,
    ValueType,
};
use serde_json::value::RawValue;
use serde_json::Value as J;

/// The largest integer JavaScript's numbers hold exactly (2^53 − 1).
pub const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// The largest JSON payload taken from a plugin. Parsing costs the host several times the
/// text's size in memory; a plugin that needs more returns smaller batches.
pub const MAX_JSON_PAYLOAD: usize = 32 * 1024 * 1024;

/// The batch's rows in the JSON row encoding. Errors name the row.
pub fn to_json_rows(batch: &Batch) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(batch.payload.len() * 3 / 2 + 2);
    out.push(b'[');
    for (i, row) in batch.rows().enumerate() {
        // The codec's errors name the row and column already.
        let row = row?;
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        for (c, (value, column)) in row.iter().zip(&batch.columns).enumerate() {
            if c > 0 {
                out.push(b',');
            }
            write_cell(&mut out, value, column.value_type == ValueType::Any);
        }
        out.push(b']');
    }
    out.push(b']');
    Ok(out)
}

fn write_cell(out: &mut Vec<u8>, value: &Value, tagged: bool) {
    // Writing to a Vec cannot fail.
    let tag = |out: &mut Vec<u8>, name: &str| {
        if tagged {
            out.extend_from_slice(b"{\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        }
    };
    let untag = |out: &mut Vec<u8>| {
        if tagged {
            out.push(b'}');
        }
    };
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(i) => {
            let _ = serde_json::to_writer(&mut *out, i);
        }
        Value::Int(i) => {
            tag(out, "integer");
            let _ = serde_json::to_writer(&mut *out, &i.to_string());
            untag(out);
        }
        Value::Float(f) if f.is_finite() => {
            // serde_json writes finite floats with a `.` or an exponent (`1.0`), never as an
            // integer literal, so an `any` column keeps integers and floats apart.
            let _ = serde_json::to_writer(&mut *out, f);
        }
        Value::Float(f) => {
            tag(out, "float");
            let text = if f.is_nan() {
                "NaN"
            } else if *f > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            };
            let _ = serde_json::to_writer(&mut *out, text);
            untag(out);
        }
        Value::Text(t) => {
            let _ = serde_json::to_writer(&mut *out, t);
        }
        Value::Decimal(d) => {
            tag(out, "decimal");
            let _ = serde_json::to_writer(&mut *out, d);
            untag(out);
        }
        Value::Bytes(b) => {
            tag(out, "bytes");
            let _ = serde_json::to_writer(&mut *out, &crate::value::base64_encode(b));
            untag(out);
        }
        Value::Timestamp(us) => {
            tag(out, "timestamp");
            let _ = serde_json::to_writer(&mut *out, &format_timestamp(*us));
            untag(out);
        }
        Value::Date(d) => {
            tag(out, "date");
            let _ = serde_json::to_writer(&mut *out, &format_date(*d));
            untag(out);
        }
        Value::Json(text) => {
            tag(out, "json");
            // The document itself, inline and byte for byte (no number rounded, no key
            // dropped); text that is not JSON (a 0.1.0 source may send it) travels as a JSON
            // string, as `wit/README.md` says.
            match serde_json::from_str::<&RawValue>(text) {
                Ok(doc) => out.extend_from_slice(doc.get().as_bytes()),
                Err(_) => {
                    let _ = serde_json::to_writer(&mut *out, text);
                }
            }
            untag(out);
        }
    }
}

/// A batch from rows in the JSON row encoding, checked against `columns`: `row_count` rows,
/// each with one value per column that fits the column's type. Errors name the row and
/// column.
pub fn from_json_rows(
    columns: Vec<Column>,
    row_count: u32,
    payload: &[u8],
) -> Result<Batch, CodecError> {
    if payload.len() > MAX_JSON_PAYLOAD {
        return Err(CodecError(format!(
            "payload of {} bytes is larger than {MAX_JSON_PAYLOAD}: return smaller batches",
            payload.len()
        )));
    }
    // Cells stay raw text until their column says how to read them: a `json` document is
    // kept exactly as written.
    let rows: Vec<Vec<&RawValue>> = serde_json::from_slice(payload).map_err(|e| {
        CodecError(format!(
            "payload is not a JSON array of rows (each an array of values): {e}"
        ))
    })?;
    if rows.len() != row_count as usize {
        return Err(CodecError(format!(
            "payload holds {} rows, the batch says {row_count}",
            rows.len()
        )));
    }
    let mut builder = BatchBuilder::with_capacity(columns.clone(), payload.len());
    let mut values = Vec::with_capacity(columns.len());
    for (i, row) in rows.iter().enumerate() {
        if row.len() != columns.len() {
            return Err(CodecError(format!(
                "row {i} has {} values for {} columns",
                row.len(),
                columns.len()
            )));
        }
        values.clear();
        for (cell, column) in row.iter().zip(&columns) {
            let value = read_raw_cell(cell, column.value_type).map_err(|e| {
                CodecError(format!(
                    "row {i}, column {:?} ({}): {e}",
                    column.name, column.value_type
                ))
            })?;
            values.push(value);
        }
        builder.push_row(&values);
    }
    Ok(builder.finish())
}

fn read_raw_cell(cell: &RawValue, value_type: ValueType) -> Result<Value, String> {
    let text = cell.get();
    match value_type {
        ValueType::Json if text != "null" => Ok(Value::Json(text.to_string())),
        ValueType::Any if text.starts_with('{') => {
            // `{"json": …}` keeps its document exactly too.
            if let Ok(tagged) =
                serde_json::from_str::<std::collections::BTreeMap<String, &RawValue>>(text)
            {
                if let Some(doc) = tagged.get("json").filter(|_| tagged.len() == 1) {
                    return Ok(Value::Json(doc.get().to_string()));
                }
            }
            read_cell(
                &serde_json::from_str(text).map_err(|e| e.to_string())?,
                value_type,
            )
        }
        _ => read_cell(
            &serde_json::from_str(text).map_err(|e| e.to_string())?,
            value_type,
        ),
    }
}

fn describe(cell: &J) -> String {
    let text = cell.to_string();
    if text.len() > 40 {
        let mut end = 40;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    } else {
        text
    }
}

fn read_cell(cell: &J, value_type: ValueType) -> Result<Value, String> {
    if cell.is_null() {
        return Ok(Value::Null);
    }
    let expected = |what: &str| Err(format!("expected {what}, got {}", describe(cell)));
    match value_type {
        ValueType::Any => read_any(cell),
        ValueType::Boolean => match cell {
            J::Bool(b) => Ok(Value::Bool(*b)),
            _ => expected("true or false"),
        },
        ValueType::Integer => match cell {
            J::Number(n) => match n.as_i64() {
                Some(i) => Ok(Value::Int(i)),
                None => expected("an integer in the signed 64-bit range"),
            },
            J::String(s) => match s.parse::<i64>() {
                Ok(i) => Ok(Value::Int(i)),
                Err(_) => expected("an integer (a number, or a string of digits)"),
            },
            _ => expected("an integer"),
        },
        ValueType::Float => match cell {
            J::Number(n) => n
                .as_f64()
                .map(Value::Float)
                .ok_or_else(|| format!("expected a float, got {}", describe(cell))),
            J::String(s) => match s.as_str() {
                "NaN" => Ok(Value::Float(f64::NAN)),
                "Infinity" => Ok(Value::Float(f64::INFINITY)),
                "-Infinity" => Ok(Value::Float(f64::NEG_INFINITY)),
                _ => expected("a float (a number, or \"NaN\", \"Infinity\", \"-Infinity\")"),
            },
            _ => expected("a float"),
        },
        ValueType::Decimal => match cell {
            J::String(s) if is_decimal_literal(s) => Ok(Value::Decimal(s.clone())),
            _ => expected("a decimal as a string (\"-12.50\"), so that no digit is lost"),
        },
        ValueType::Text => match cell {
            J::String(s) => Ok(Value::Text(s.clone())),
            _ => expected("a string"),
        },
        ValueType::Bytes => match cell {
            J::String(s) => crate::value::base64_decode(s)
                .map(Value::Bytes)
                .ok_or_else(|| format!("expected base64 bytes, got {}", describe(cell))),
            _ => expected("bytes as a base64 string"),
        },
        ValueType::Timestamp => match cell {
            J::String(s) => parse_timestamp(s)
                .map(Value::Timestamp)
                .ok_or_else(|| format!("expected an RFC 3339 timestamp, got {}", describe(cell))),
            _ => expected("a timestamp as an RFC 3339 string"),
        },
        ValueType::Date => match cell {
            J::String(s) => parse_date(s)
                .map(Value::Date)
                .ok_or_else(|| format!("expected a date YYYY-MM-DD, got {}", describe(cell))),
            _ => expected("a date as a string YYYY-MM-DD"),
        },
        ValueType::Json => Ok(Value::Json(cell.to_string())),
    }
}

fn read_any(cell: &J) -> Result<Value, String> {
    match cell {
        J::Null => Ok(Value::Null),
        J::Bool(b) => Ok(Value::Bool(*b)),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Value::Int(i))
            } else {
                n.as_f64().map(Value::Float).ok_or_else(|| format!("unreadable number {n}"))
            }
        }
        J::String(s) => Ok(Value::Text(s.clone())),
        J::Object(map) if map.len() == 1 => {
            let (tag, inner) = map.iter().next().ok_or("empty object")?;
            let value_type = match tag.as_str() {
                "integer" => ValueType::Integer,
                "float" => ValueType::Float,
                "decimal" => ValueType::Decimal,
                "bytes" => ValueType::Bytes,
                "timestamp" => ValueType::Timestamp,
                "date" => ValueType::Date,
                "json" => ValueType::Json,
                other => return Err(format!("an `any` column's object must name a type (integer, float, decimal, bytes, timestamp, date, json), not {other:?}")),
            };
            match value_type {
                // `{"json": null}` is the document `null`, not a missing value.
                ValueType::Json => Ok(Value::Json(inner.to_string())),
                _ if inner.is_null() => Err(format!("{{{tag:?}: null}}: write null itself")),
                _ => read_cell(inner, value_type),
            }
        }
        _ => Err(format!(
            "an `any` column holds null, booleans, numbers, strings, or a one-key object naming the type ({{\"json\": …}} for documents), got {}",
            describe(cell)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<Column> {
        [
            ("b", ValueType::Boolean),
            ("i", ValueType::Integer),
            ("f", ValueType::Float),
            ("d", ValueType::Decimal),
            ("t", ValueType::Text),
            ("y", ValueType::Bytes),
            ("ts", ValueType::Timestamp),
            ("dt", ValueType::Date),
            ("j", ValueType::Json),
        ]
        .into_iter()
        .map(|(n, t)| Column::new(n, t))
        .collect()
    }

    fn batch(columns: Vec<Column>, rows: &[Vec<Value>]) -> Batch {
        let mut b = BatchBuilder::new(columns);
        for r in rows {
            b.push_row(r);
        }
        b.finish()
    }

    fn typed_row(i: i64, f: f64) -> Vec<Value> {
        vec![
            Value::Bool(true),
            Value::Int(i),
            Value::Float(f),
            Value::Decimal("-12.50".into()),
            Value::Text("é \"q\"\n".into()),
            Value::Bytes(vec![0, 1, 255]),
            Value::Timestamp(1_700_000_000_123_456),
            Value::Date(-1),
            Value::Json(r#"{"a":[1,2]}"#.into()),
        ]
    }

    #[test]
    fn typed_columns_are_plain_json() {
        let b = batch(columns(), &[typed_row(7, 1.0), vec![Value::Null; 9]]);
        let json = String::from_utf8(to_json_rows(&b).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"[[true,7,1.0,"-12.50","é \"q\"\n","AAH/","2023-11-14T22:13:20.123456Z","1969-12-31",{"a":[1,2]}],[null,null,null,null,null,null,null,null,null]]"#
        );
    }

    #[test]
    fn what_json_cannot_hold_exactly_is_a_string() {
        let b = batch(
            columns(),
            &[
                typed_row(i64::MIN, f64::NAN),
                typed_row(MAX_SAFE_INTEGER + 2, f64::NEG_INFINITY),
            ],
        );
        let json = String::from_utf8(to_json_rows(&b).unwrap()).unwrap();
        assert!(
            json.starts_with(r#"[[true,"-9223372036854775808","NaN","#),
            "{json}"
        );
        assert!(
            json.contains(r#"[true,"9007199254740993","-Infinity","#),
            "{json}"
        );
    }

    #[test]
    fn typed_columns_round_trip() {
        let rows = vec![
            typed_row(7, 1.5),
            typed_row(i64::MAX, f64::INFINITY),
            typed_row(-MAX_SAFE_INTEGER, -0.0),
            vec![Value::Null; 9],
        ];
        let b = batch(columns(), &rows);
        let back = from_json_rows(columns(), b.row_count, &to_json_rows(&b).unwrap()).unwrap();
        assert_eq!(back.decode().unwrap(), rows);
    }

    #[test]
    fn any_columns_tag_what_json_lacks_and_round_trip() {
        let any = vec![Column::new("v", ValueType::Any)];
        let rows: Vec<Vec<Value>> = [
            Value::Null,
            Value::Bool(false),
            Value::Int(3),
            Value::Int(i64::MAX),
            Value::Float(3.0),
            Value::Float(f64::INFINITY),
            Value::Text("{\"decimal\": \"1\"}".into()),
            Value::Decimal("1.50".into()),
            Value::Bytes(vec![]),
            Value::Timestamp(0),
            Value::Date(0),
            Value::Json("[1]".into()),
            Value::Json("null".into()),
        ]
        .into_iter()
        .map(|v| vec![v])
        .collect();
        let b = batch(any.clone(), &rows);
        let json = String::from_utf8(to_json_rows(&b).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"[[null],[false],[3],[{"integer":"9223372036854775807"}],[3.0],[{"float":"Infinity"}],["{\"decimal\": \"1\"}"],[{"decimal":"1.50"}],[{"bytes":""}],[{"timestamp":"1970-01-01T00:00:00Z"}],[{"date":"1970-01-01"}],[{"json":[1]}],[{"json":null}]]"#
        );
        assert_eq!(
            from_json_rows(any, b.row_count, json.as_bytes())
                .unwrap()
                .decode()
                .unwrap(),
            rows
        );
    }

    #[test]
    fn a_value_that_does_not_fit_names_row_and_column() {
        let cols = vec![
            Column::new("id", ValueType::Integer),
            Column::new("mrr", ValueType::Decimal),
        ];
        let e = from_json_rows(cols.clone(), 2, br#"[[1,"1.5"],[2,1.5]]"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("row 1, column \"mrr\" (decimal)") && e.contains("as a string"),
            "{e}"
        );
        let e = from_json_rows(cols.clone(), 1, br#"[[1.5,"1"]]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 0, column \"id\" (integer)"), "{e}");
        let e = from_json_rows(cols.clone(), 1, br#"[[1]]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 0 has 1 values for 2 columns"), "{e}");
        let e = from_json_rows(cols.clone(), 3, br#"[[1,"1"]]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds 1 rows, the batch says 3"), "{e}");
        let e = from_json_rows(cols, 1, b"{").unwrap_err().to_string();
        assert!(e.contains("not a JSON array"), "{e}");
        let any = vec![Column::new("v", ValueType::Any)];
        let e = from_json_rows(any.clone(), 1, br#"[[{"a":1}]]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must name a type"), "{e}");
        let e = from_json_rows(any, 1, br#"[[[1]]]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("one-key object"), "{e}");
    }

    #[test]
    fn json_documents_cross_byte_for_byte() {
        let doc = r#"{"n": 123456789012345678901234567890, "d": 1.50, "k": 1, "k": 2}"#;
        for value_type in [ValueType::Json, ValueType::Any] {
            let cols = vec![Column::new("j", value_type)];
            let b = batch(cols.clone(), &[vec![Value::Json(doc.into())]]);
            let json = to_json_rows(&b).unwrap();
            assert!(String::from_utf8_lossy(&json).contains(doc));
            assert_eq!(
                from_json_rows(cols, 1, &json).unwrap().decode().unwrap(),
                vec![vec![Value::Json(doc.into())]]
            );
        }
        // Text that is not JSON travels as a string.
        let b = batch(
            vec![Column::new("j", ValueType::Json)],
            &[vec![Value::Json("{oops".into())]],
        );
        assert_eq!(to_json_rows(&b).unwrap(), br#"[["{oops"]]"#);
    }

    #[test]
    fn sources_may_write_offsets_and_digit_strings() {
        let cols = vec![
            Column::new("ts", ValueType::Timestamp),
            Column::new("i", ValueType::Integer),
            Column::new("f", ValueType::Float),
        ];
        let b = from_json_rows(
            cols,
            1,
            br#"[["2024-01-01T02:00:00.1234567+02:00","-42",3]]"#,
        )
        .unwrap();
        assert_eq!(
            b.decode().unwrap(),
            vec![vec![
                Value::Timestamp(1_704_067_200_123_456),
                Value::Int(-42),
                Value::Float(3.0)
            ]]
        );
    }
}
