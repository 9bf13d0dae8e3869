//! `--rows FILE.csv|jsonl`: the author's own sample rows for the conformance suite (issue 41),
//! read into columns and values. A destination keyed on its own fields (`email`) refuses the
//! built-in sample; with its own rows the suite checks what a real run sends.
//!
//! The first column is the primary key (a delete or a removed row carries only it).
//! - CSV: a header line names the columns; a column whose values are all integers is an
//!   integer column, any other is text; an empty cell is null.
//! - JSON Lines: one object per line, columns in the order they first appear; a column's type
//!   is its values' (boolean, integer, float, text; objects and arrays are json; mixed: any);
//!   a missing field or `null` is null.

use super::samples::SampleRows;
use backflow_plugin_sdk::{Column, Value, ValueType};
use std::path::{Path, PathBuf};

/// Why a rows file cannot be used, naming the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum RowsFileError {
    /// The file cannot be read.
    #[error("--rows {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file name ends neither in `.csv` nor in `.jsonl`/`.ndjson`.
    #[error("--rows {path}: unknown format: name a .csv or a .jsonl file")]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// A line of the file is malformed.
    #[error("--rows {path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line (from 1).
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The file has no column or no row.
    #[error("--rows {path}: {message}")]
    Empty {
        /// The file.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
}

/// Reads `path` (CSV or JSON Lines, by its extension) as sample rows.
pub fn read_rows(path: &Path) -> Result<SampleRows, RowsFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| RowsFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let rows = match ext.as_str() {
        "csv" => parse_csv(&text),
        "jsonl" | "ndjson" => parse_jsonl(&text),
        _ => {
            return Err(RowsFileError::Format {
                path: path.to_path_buf(),
            })
        }
    };
    let rows = rows.map_err(|(line, message)| RowsFileError::Line {
        path: path.to_path_buf(),
        line,
        message,
    })?;
    if rows.columns.is_empty() || rows.rows.is_empty() {
        return Err(RowsFileError::Empty {
            path: path.to_path_buf(),
            message: "no rows (a header and at least one row are needed)".into(),
        });
    }
    Ok(rows)
}

/// A line's problem: its number (from 1) and what is wrong.
type LineError = (usize, String);

/// CSV records (RFC 4180: quoted fields with `""`, line breaks inside quotes), each with the
/// line it starts on.
fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, LineError> {
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let (mut line, mut start_line) = (1, 1);
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                if !(record.len() == 1 && record[0].is_empty()) {
                    records.push((start_line, std::mem::take(&mut record)));
                }
                record.clear();
                line += 1;
                start_line = line;
                any = false;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err((start_line, "a quoted field is not closed".into()));
    }
    if any {
        record.push(field);
        if !(record.len() == 1 && record[0].is_empty()) {
            records.push((start_line, record));
        }
    }
    Ok(records)
}

fn parse_csv(text: &str) -> Result<SampleRows, LineError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = csv_records(text)?.into_iter();
    let Some((_, header)) = records.next() else {
        return Ok(SampleRows::default());
    };
    let mut cells: Vec<Vec<String>> = Vec::new();
    for (line, record) in records {
        if record.len() != header.len() {
            return Err((
                line,
                format!("{} fields, the header has {}", record.len(), header.len()),
            ));
        }
        cells.push(record);
    }
    let integer: Vec<bool> = (0..header.len())
        .map(|c| {
            cells
                .iter()
                .all(|r| r[c].is_empty() || r[c].parse::<i64>().is_ok())
        })
        .collect();
    let columns = header
        .iter()
        .zip(&integer)
        .map(|(name, &int)| Column {
            name: name.trim().to_string(),
            value_type: if int {
                ValueType::Integer
            } else {
                ValueType::Text
            },
            nullable: true,
        })
        .collect();
    let rows = cells
        .into_iter()
        .map(|r| {
            r.into_iter()
                .zip(&integer)
                .map(|(cell, &int)| match (cell.is_empty(), int) {
                    (true, _) => Value::Null,
                    (false, true) => Value::Int(cell.parse().unwrap_or_default()),
                    (false, false) => Value::Text(cell),
                })
                .collect()
        })
        .collect();
    Ok(SampleRows { columns, rows })
}

/// The value type of one JSON value (`None` for null).
fn json_type(v: &serde_json::Value) -> Option<ValueType> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::Bool(_) => Some(ValueType::Boolean),
        serde_json::Value::Number(n) if n.as_i64().is_some() => Some(ValueType::Integer),
        serde_json::Value::Number(_) => Some(ValueType::Float),
        serde_json::Value::String(_) => Some(ValueType::Text),
        _ => Some(ValueType::Json),
    }
}

/// A JSON value as a value of a column of type `t`.
fn json_value(v: &serde_json::Value, t: ValueType) -> Value {
    match (v, t) {
        (serde_json::Value::Null, _) => Value::Null,
        (serde_json::Value::Bool(b), _) => Value::Bool(*b),
        (serde_json::Value::Number(n), ValueType::Float) => Value::Float(n.as_f64().unwrap_or(0.0)),
        (serde_json::Value::Number(n), _) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        (serde_json::Value::String(s), _) => Value::Text(s.clone()),
        (other, _) => Value::Json(other.to_string()),
    }
}

fn parse_jsonl(text: &str) -> Result<SampleRows, LineError> {
    let mut names: Vec<String> = Vec::new();
    let mut types: Vec<Option<ValueType>> = Vec::new();
    let mut objects = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| (i + 1, format!("not JSON: {e}")))?;
        let serde_json::Value::Object(object) = value else {
            return Err((i + 1, "not a JSON object".into()));
        };
        for (name, v) in &object {
            let at = match names.iter().position(|n| n == name) {
                Some(at) => at,
                None => {
                    names.push(name.clone());
                    types.push(None);
                    names.len() - 1
                }
            };
            types[at] = match (types[at], json_type(v)) {
                (t, None) => t,
                (None, t) => t,
                (Some(a), Some(b)) if a == b => Some(a),
                (Some(ValueType::Integer), Some(ValueType::Float))
                | (Some(ValueType::Float), Some(ValueType::Integer)) => Some(ValueType::Float),
                _ => Some(ValueType::Any),
            };
        }
        objects.push(object);
    }
    let types: Vec<ValueType> = types
        .into_iter()
        .map(|t| t.unwrap_or(ValueType::Text))
        .collect();
    let rows = objects
        .iter()
        .map(|o| {
            names
                .iter()
                .zip(&types)
                .map(|(n, &t)| o.get(n).map_or(Value::Null, |v| json_value(v, t)))
                .collect()
        })
        .collect();
    let columns = names
        .into_iter()
        .zip(types)
        .map(|(name, value_type)| Column {
            name,
            value_type,
            nullable: true,
        })
        .collect();
    Ok(SampleRows { columns, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_quotes_types_and_nulls() {
        let rows = parse_csv(
            "email,age,note\r\na@x.com,31,\"says \"\"hi\"\"\nand more\"\nb@x.com,,plain\n",
        )
        .unwrap();
        let names: Vec<_> = rows.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["email", "age", "note"]);
        assert_eq!(rows.columns[1].value_type, ValueType::Integer);
        assert_eq!(rows.columns[2].value_type, ValueType::Text);
        assert_eq!(rows.rows.len(), 2);
        assert_eq!(rows.rows[0][2], Value::Text("says \"hi\"\nand more".into()));
        assert_eq!(rows.rows[1][1], Value::Null);
    }

    #[test]
    fn csv_errors_name_the_line() {
        assert_eq!(
            parse_csv("a,b\n1,2\n3\n").unwrap_err(),
            (3, "1 fields, the header has 2".into())
        );
        assert_eq!(parse_csv("a\n\"open\n").unwrap_err().0, 2);
    }

    #[test]
    fn jsonl_types_and_missing_fields() {
        let rows = parse_jsonl(
            "{\"email\":\"a@x.com\",\"n\":1,\"tags\":[1]}\n\n{\"email\":\"b@x.com\",\"n\":1.5,\"ok\":true}\n",
        )
        .unwrap();
        let types: Vec<_> = rows.columns.iter().map(|c| c.value_type).collect();
        assert_eq!(
            types,
            [
                ValueType::Text,
                ValueType::Float,
                ValueType::Json,
                ValueType::Boolean
            ]
        );
        assert_eq!(rows.rows[0][1], Value::Float(1.0));
        assert_eq!(rows.rows[0][3], Value::Null);
        assert_eq!(rows.rows[1][2], Value::Null);
        assert_eq!(
            parse_jsonl("{}\n[1]\n").unwrap_err(),
            (2, "not a JSON object".into())
        );
        assert_eq!(parse_jsonl("nope").unwrap_err().0, 1);
    }
}
