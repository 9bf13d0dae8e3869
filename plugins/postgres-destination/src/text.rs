//! backflow values as PostgreSQL's text input: for COPY's text format (escaped) and for
//! text-format statement parameters (as is). The server parses them by the target column's
//! type, so one text form per value type serves every compatible column type.

use backflow_plugin_sdk::value::{format_date, format_timestamp};
use backflow_plugin_sdk::{Value, ValueType};

/// The text PostgreSQL reads `value` from; `None` for NULL.
pub fn value_text(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => if *b { "t" } else { "f" }.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => float_text(*f),
        Value::Decimal(d) => d.clone(),
        Value::Text(t) => t.clone(),
        Value::Json(j) => j.clone(),
        Value::Bytes(b) => {
            let mut s = String::with_capacity(2 + 2 * b.len());
            s.push_str("\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s
        }
        Value::Timestamp(micros) => format_timestamp(*micros),
        Value::Date(days) => format_date(*days),
    })
}

/// A float as `float8in` reads it back exactly (Rust's shortest round-trip form).
fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{f:?}")
    }
}

/// Appends one COPY text-format field: `\N` for NULL, otherwise the text with backslash,
/// tab, newline and carriage return escaped.
pub fn push_copy_field(out: &mut Vec<u8>, value: &Value) {
    use std::io::Write as _;
    match value {
        // Nothing to escape in these; written without a String in between.
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Text(t) | Value::Decimal(t) | Value::Json(t) => push_copy_escaped(out, t),
        _ => match value_text(value) {
            None => out.extend_from_slice(b"\\N"),
            Some(text) => push_copy_escaped(out, &text),
        },
    }
}

/// Appends `text` escaped for COPY's text format.
pub fn push_copy_escaped(out: &mut Vec<u8>, text: &str) {
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// The column type `create_table` gives a value type.
pub fn column_type(t: ValueType) -> &'static str {
    match t {
        ValueType::Boolean => "boolean",
        ValueType::Integer => "bigint",
        ValueType::Float => "double precision",
        ValueType::Decimal => "numeric",
        ValueType::Text | ValueType::Any => "text",
        ValueType::Bytes => "bytea",
        ValueType::Timestamp => "timestamptz",
        ValueType::Date => "date",
        ValueType::Json => "jsonb",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(v: Value) -> String {
        let mut out = Vec::new();
        push_copy_field(&mut out, &v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_value_type_has_a_text_form() {
        assert_eq!(copy(Value::Null), "\\N");
        assert_eq!(copy(Value::Bool(true)), "t");
        assert_eq!(copy(Value::Int(-42)), "-42");
        assert_eq!(copy(Value::Float(0.1)), "0.1");
        assert_eq!(copy(Value::Float(1e300)), "1e300");
        assert_eq!(copy(Value::Float(f64::NEG_INFINITY)), "-Infinity");
        assert_eq!(copy(Value::Decimal("12.50".into())), "12.50");
        assert_eq!(copy(Value::Bytes(vec![0, 255])), "\\\\x00ff");
        assert_eq!(copy(Value::Date(0)), "1970-01-01");
        assert_eq!(
            copy(Value::Timestamp(1_500_000)),
            "1970-01-01T00:00:01.500Z"
        );
        assert_eq!(
            copy(Value::Json(r#"{"a":"b\\c"}"#.into())),
            r#"{"a":"b\\\\c"}"#
        );
    }

    #[test]
    fn copy_escapes_separators() {
        assert_eq!(
            copy(Value::Text("a\tb\nc\rd\\".into())),
            "a\\tb\\nc\\rd\\\\"
        );
        assert_eq!(value_text(&Value::Text("a\tb".into())).unwrap(), "a\tb");
    }
}
