//! `file-source`: reads CSV (RFC 4180, with a header row) and JSON Lines files as models.
//!
//! The model's query is the file's path as the plugin sees it: a path inside a directory the
//! operator granted with `grants.files`. Files are streamed; only the first `infer_rows` rows
//! are held at once, to infer the types of columns the config does not declare.

use backflow_plugin_sdk::codec;
use backflow_plugin_sdk::value::{is_decimal_literal, parse_date, parse_timestamp};
use backflow_plugin_sdk::*;
use serde::Deserialize;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader};

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "file-source",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "format": { "enum": ["csv", "jsonl"], "description": "File format; by default from the extension (.csv, .tsv, .jsonl, .ndjson)." },
    "delimiter": { "type": "string", "minLength": 1, "maxLength": 1, "description": "CSV field delimiter (default ',', or tab for .tsv)." },
    "columns": { "type": "object", "additionalProperties": { "enum": ["text", "integer", "float", "decimal", "boolean", "date", "timestamp", "json", "any"] }, "description": "Declared column types; other columns are inferred." },
    "infer_rows": { "type": "integer", "minimum": 1, "description": "Rows sampled to infer undeclared column types (default 1000)." },
    "null_values": { "type": "array", "items": { "type": "string" }, "description": "CSV cells read as NULL (default [\"\"])." }
  }
}"#;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    format: Option<Format>,
    delimiter: Option<String>,
    #[serde(default)]
    columns: BTreeMap<String, String>,
    infer_rows: Option<usize>,
    null_values: Option<Vec<String>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Format {
    Csv,
    Jsonl,
}

fn check(config: &str) -> Result<Config, Vec<ConfigError>> {
    let cfg: Config = parse_config(config).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    for (name, ty) in &cfg.columns {
        if ValueType::parse(ty).is_none() {
            errors.push(ConfigError::new(format!("columns.{name}"), format!("unknown type {ty:?}; use text, integer, float, decimal, boolean, date, timestamp, json or any")));
        }
    }
    if let Some(d) = &cfg.delimiter {
        if d.len() != 1 {
            errors.push(ConfigError::new(
                "delimiter",
                "must be a single ASCII character",
            ));
        }
    }
    if cfg.infer_rows == Some(0) {
        errors.push(ConfigError::new("infer_rows", "must be at least 1"));
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

struct FileSource;

impl SourcePlugin for FileSource {
    type Reader = FileReader;

    fn spec() -> PluginSpec {
        PluginSpec {
            name: "file-source".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::Source,
            description: "Reads CSV and JSON Lines files from granted directories.".into(),
            config_schema: SCHEMA.into(),
            operations: vec![],
            max_batch_size: 0,
            default_rate_limit: None,
        }
    }

    fn check_config(config: &str) -> Vec<ConfigError> {
        check(config).err().unwrap_or_default()
    }

    fn open(config: &str, query: &str) -> Result<FileReader, PluginError> {
        let cfg = check(config).map_err(|mut e| PluginError::BadConfig(e.remove(0)))?;
        let path = query.trim();
        let format = cfg.format.unwrap_or_else(|| {
            if path.ends_with(".jsonl") || path.ends_with(".ndjson") {
                Format::Jsonl
            } else {
                Format::Csv
            }
        });
        let file = File::open(path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::PermissionDenied
            {
                " (is its directory granted to this source with grants.files?)"
            } else {
                ""
            };
            PluginError::bad_config("query", format!("cannot open {path}: {e}{hint}"))
        })?;
        let declared: BTreeMap<String, ValueType> = cfg
            .columns
            .iter()
            .map(|(k, v)| (k.clone(), ValueType::parse(v).expect("checked")))
            .collect();
        let infer_rows = cfg.infer_rows.unwrap_or(1000);
        let rows = match format {
            Format::Csv => {
                let delimiter = match &cfg.delimiter {
                    Some(d) => d.as_bytes()[0],
                    None if path.ends_with(".tsv") => b'\t',
                    None => b',',
                };
                let nulls = cfg.null_values.unwrap_or_else(|| vec![String::new()]);
                RowStream::Csv(CsvStream::open(path, file, delimiter, nulls)?)
            }
            Format::Jsonl => RowStream::Jsonl(JsonlStream {
                path: path.to_string(),
                lines: BufReader::with_capacity(256 * 1024, file),
                line: 0,
                buf: String::new(),
            }),
        };
        FileReader::new(rows, declared, infer_rows)
    }
}

/// A raw row before typing: CSV cells are text, JSON Lines cells are JSON values.
enum RawRow {
    Csv(csv::StringRecord),
    Json(serde_json::Map<String, serde_json::Value>),
}

enum RowStream {
    Csv(CsvStream),
    Jsonl(JsonlStream),
}

struct CsvStream {
    /// A record to read the next row into, reused to avoid an allocation per row.
    spare: Option<RawRow>,
    path: String,
    reader: csv::Reader<File>,
    header: Vec<String>,
    nulls: Vec<String>,
}

impl CsvStream {
    fn open(
        path: &str,
        file: File,
        delimiter: u8,
        nulls: Vec<String>,
    ) -> Result<CsvStream, PluginError> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(true)
            .flexible(true)
            .buffer_capacity(256 * 1024)
            .from_reader(file);
        let header = reader
            .headers()
            .map_err(|e| PluginError::fatal(format!("{path}: cannot read the header row: {e}")))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').to_string())
            .collect::<Vec<_>>();
        if header.is_empty() || header.iter().all(String::is_empty) {
            return Err(PluginError::fatal(format!(
                "{path}: the file is empty or has no header row"
            )));
        }
        for (i, h) in header.iter().enumerate() {
            if header[..i].contains(h) {
                return Err(PluginError::fatal(format!(
                    "{path}: column {h:?} appears twice in the header"
                )));
            }
        }
        Ok(CsvStream {
            spare: None,
            path: path.into(),
            reader,
            header,
            nulls,
        })
    }
}

struct JsonlStream {
    path: String,
    lines: BufReader<File>,
    line: u64,
    buf: String,
}

impl RowStream {
    /// The next raw row and the line it started on.
    fn next(&mut self) -> Result<Option<(RawRow, u64)>, PluginError> {
        match self {
            RowStream::Csv(s) => {
                let mut record = match s.spare.take() {
                    Some(RawRow::Csv(r)) => r,
                    _ => csv::StringRecord::new(),
                };
                match s.reader.read_record(&mut record) {
                    Ok(false) => Ok(None),
                    Ok(true) => {
                        let line = record.position().map(|p| p.line()).unwrap_or(0);
                        if record.len() != s.header.len() {
                            return Err(PluginError::bad_row(
                                0,
                                None,
                                format!(
                                    "{} line {line}: {} fields, but the header has {}",
                                    s.path,
                                    record.len(),
                                    s.header.len()
                                ),
                            ));
                        }
                        Ok(Some((RawRow::Csv(record), line)))
                    }
                    Err(e) => Err(PluginError::fatal(format!("{}: {e}", s.path))),
                }
            }
            RowStream::Jsonl(s) => loop {
                s.buf.clear();
                let n = s.lines.read_line(&mut s.buf).map_err(|e| {
                    PluginError::fatal(format!("{} line {}: {e}", s.path, s.line + 1))
                })?;
                if n == 0 {
                    return Ok(None);
                }
                s.line += 1;
                let text = s.buf.trim();
                if text.is_empty() {
                    continue;
                }
                return match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(serde_json::Value::Object(map)) => Ok(Some((RawRow::Json(map), s.line))),
                    Ok(_) => Err(PluginError::bad_row(
                        0,
                        None,
                        format!("{} line {}: expected a JSON object", s.path, s.line),
                    )),
                    Err(e) => Err(PluginError::bad_row(
                        0,
                        None,
                        format!("{} line {}: invalid JSON: {e}", s.path, s.line),
                    )),
                };
            },
        }
    }

    fn path(&self) -> &str {
        match self {
            RowStream::Csv(s) => &s.path,
            RowStream::Jsonl(s) => &s.path,
        }
    }
}

struct FileReader {
    rows: RowStream,
    columns: Vec<Column>,
    /// For JSON Lines: column name → position.
    positions: BTreeMap<String, usize>,
    /// Rows read while inferring types, not yet returned.
    sample: VecDeque<(RawRow, u64)>,
    nulls: Vec<String>,
    row_values: Vec<Value>,
    done: bool,
}

impl FileReader {
    fn new(
        mut rows: RowStream,
        declared: BTreeMap<String, ValueType>,
        infer_rows: usize,
    ) -> Result<FileReader, PluginError> {
        let mut sample = VecDeque::new();
        while sample.len() < infer_rows {
            match rows.next()? {
                Some(r) => sample.push_back(r),
                None => break,
            }
        }
        let (names, nulls): (Vec<String>, Vec<String>) = match &rows {
            RowStream::Csv(s) => (s.header.clone(), s.nulls.clone()),
            RowStream::Jsonl(_) => {
                let mut names: Vec<String> = Vec::new();
                for (row, _) in &sample {
                    if let RawRow::Json(map) = row {
                        for k in map.keys() {
                            if !names.contains(k) {
                                names.push(k.clone());
                            }
                        }
                    }
                }
                for k in declared.keys() {
                    if !names.contains(k) {
                        names.push(k.clone());
                    }
                }
                (names, vec![])
            }
        };
        for name in declared.keys() {
            if !names.contains(name) {
                return Err(PluginError::bad_config(
                    format!("columns.{name}"),
                    format!("{} has no column {name:?}", rows.path()),
                ));
            }
        }
        let columns = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let ty = declared
                    .get(name)
                    .copied()
                    .unwrap_or_else(|| infer(sample.iter().map(|(r, _)| r), i, name, &nulls));
                Column::new(name.clone(), ty)
            })
            .collect::<Vec<_>>();
        let positions = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let width = columns.len();
        Ok(FileReader {
            rows,
            columns,
            positions,
            sample,
            nulls,
            row_values: Vec::with_capacity(width),
            done: false,
        })
    }

    /// Encodes one CSV record straight into the batch, without building `Value`s.
    fn encode_csv(
        &self,
        record: &csv::StringRecord,
        line: u64,
        batch: &mut BatchBuilder,
    ) -> Result<(), PluginError> {
        let (len, rows) = (batch.byte_len(), batch.len());
        let row_index = rows;
        let buf = batch.start_row(self.columns.len() as u32);
        for (cell, col) in record.iter().zip(&self.columns) {
            if self.nulls.iter().any(|n| n == cell) {
                codec::write_null(buf);
            } else if !encode_text(cell, col.value_type, buf) {
                let path = self.rows.path();
                let message = format!(
                    "{path} line {line}, column {:?}: {cell:?} is not {} {}",
                    col.name,
                    article(col.value_type),
                    hint(col)
                );
                batch.truncate(len, rows);
                return Err(PluginError::bad_row(row_index, None, message));
            }
        }
        Ok(())
    }

    fn typed(&mut self, raw: &RawRow, line: u64, row_index: u32) -> Result<(), PluginError> {
        self.row_values.clear();
        let path = self.rows.path();
        match raw {
            RawRow::Csv(_) => unreachable!("CSV rows are encoded by encode_csv"),
            RawRow::Json(map) => {
                self.row_values.resize(self.columns.len(), Value::Null);
                for (k, v) in map {
                    let Some(&i) = self.positions.get(k) else {
                        return Err(PluginError::bad_row(row_index, None, format!("{path} line {line}: field {k:?} was not in the first rows; declare it under columns")));
                    };
                    let col = &self.columns[i];
                    self.row_values[i] = coerce_json(v, col.value_type).ok_or_else(|| {
                        PluginError::bad_row(
                            row_index,
                            None,
                            format!(
                                "{path} line {line}, field {:?}: {v} is not {} {}",
                                col.name,
                                article(col.value_type),
                                hint(col)
                            ),
                        )
                    })?;
                }
            }
        }
        Ok(())
    }
}

fn article(t: ValueType) -> String {
    match t {
        ValueType::Integer | ValueType::Any => format!("an {t}"),
        _ => format!("a {t}"),
    }
}

fn hint(col: &Column) -> String {
    format!(
        "(declare another type with columns.{} = \"text\" if the data is right)",
        col.name
    )
}

impl SourceReader for FileReader {
    fn columns(&self) -> Vec<Column> {
        self.columns.clone()
    }

    fn next_batch(&mut self, max_rows: u32) -> Result<Option<Batch>, PluginError> {
        if self.done {
            return Ok(None);
        }
        let mut batch =
            BatchBuilder::with_capacity(self.columns.clone(), (max_rows as usize).min(8192) * 64);
        while batch.len() < max_rows {
            let next = match self.sample.pop_front() {
                Some(r) => Some(r),
                None => self.rows.next()?,
            };
            let Some((raw, line)) = next else {
                self.done = true;
                break;
            };
            if let RawRow::Csv(record) = &raw {
                self.encode_csv(record, line, &mut batch)?;
                if let RowStream::Csv(s) = &mut self.rows {
                    s.spare = Some(raw);
                }
                continue;
            }
            let index = batch.len();
            self.typed(&raw, line, index)?;
            batch.push_row(&self.row_values);
        }
        if batch.is_empty() {
            return Ok(None);
        }
        Ok(Some(batch.finish()))
    }
}

/// The narrowest type every non-null sample value of column `i` fits.
fn infer<'a>(
    rows: impl Iterator<Item = &'a RawRow>,
    i: usize,
    name: &str,
    nulls: &[String],
) -> ValueType {
    let mut candidates = [
        ValueType::Integer,
        ValueType::Decimal,
        ValueType::Float,
        ValueType::Boolean,
        ValueType::Date,
        ValueType::Timestamp,
    ];
    let mut alive = [true; 6];
    let mut json_type: Option<ValueType> = None;
    let mut seen = false;
    for row in rows {
        match row {
            RawRow::Csv(rec) => {
                let cell = rec.get(i).unwrap_or("");
                if nulls.iter().any(|n| n == cell) {
                    continue;
                }
                seen = true;
                // Zero-padded codes (ZIP codes, account numbers) and explicit signs are text:
                // as numbers they would lose their zeros and collide ("01" and "1").
                let t = cell.trim();
                let padded = t.starts_with('+')
                    || (t.len() > 1 && t.starts_with('0') && t.as_bytes()[1].is_ascii_digit());
                for (k, ty) in candidates.iter().enumerate() {
                    let numeric = matches!(
                        ty,
                        ValueType::Integer | ValueType::Decimal | ValueType::Float
                    );
                    if alive[k] && ((numeric && padded) || parse_text(cell, *ty).is_none()) {
                        alive[k] = false;
                    }
                }
            }
            RawRow::Json(map) => {
                let Some(v) = map.get(name) else { continue };
                let t = match Value::from_json(v) {
                    Value::Null => continue,
                    Value::Bool(_) => ValueType::Boolean,
                    Value::Int(_) => ValueType::Integer,
                    Value::Float(_) => ValueType::Float,
                    Value::Decimal(_) => ValueType::Decimal,
                    Value::Text(_) => ValueType::Text,
                    _ => ValueType::Json,
                };
                json_type = Some(match json_type {
                    None => t,
                    Some(prev) if prev == t => t,
                    Some(ValueType::Integer) if t == ValueType::Float => ValueType::Float,
                    Some(ValueType::Float) if t == ValueType::Integer => ValueType::Float,
                    Some(_) => ValueType::Any,
                });
            }
        }
    }
    if let Some(t) = json_type {
        return t;
    }
    if !seen {
        return ValueType::Text;
    }
    candidates
        .iter_mut()
        .zip(alive)
        .find(|(_, a)| *a)
        .map(|(t, _)| *t)
        .unwrap_or(ValueType::Text)
}

/// Encodes a CSV cell as `ty` into `buf`; `false` (and nothing written) when it does not fit.
fn encode_text(cell: &str, ty: ValueType, buf: &mut Vec<u8>) -> bool {
    match ty {
        ValueType::Text | ValueType::Any => codec::write_text(buf, cell),
        ValueType::Integer => match cell.trim().parse::<i64>() {
            Ok(i) => codec::write_int(buf, i),
            Err(_) => return false,
        },
        ValueType::Decimal => {
            let t = cell.trim();
            if !is_decimal_literal(t) {
                return false;
            }
            codec::write_decimal(buf, t);
        }
        ValueType::Boolean => {
            let t = cell.trim();
            let b = if ["true", "t", "yes"]
                .iter()
                .any(|w| t.eq_ignore_ascii_case(w))
            {
                true
            } else if ["false", "f", "no"]
                .iter()
                .any(|w| t.eq_ignore_ascii_case(w))
            {
                false
            } else {
                return false;
            };
            codec::write_bool(buf, b);
        }
        ValueType::Date => {
            let t = cell.trim();
            if parse_date(t).is_none() {
                return false;
            }
            codec::write_date_text(buf, t);
        }
        _ => match parse_text(cell, ty) {
            Some(v) => codec::write_value(buf, &v),
            None => return false,
        },
    }
    true
}

/// Parses a CSV cell as `ty`; `None` when it does not fit.
fn parse_text(cell: &str, ty: ValueType) -> Option<Value> {
    Some(match ty {
        ValueType::Text | ValueType::Any => Value::Text(cell.to_string()),
        ValueType::Integer => Value::Int(cell.trim().parse().ok()?),
        ValueType::Float => Value::Float(cell.trim().parse().ok()?),
        ValueType::Decimal => {
            let t = cell.trim();
            if !is_decimal_literal(t) {
                return None;
            }
            Value::Decimal(t.to_string())
        }
        ValueType::Boolean => match cell.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" => Value::Bool(true),
            "false" | "f" | "no" => Value::Bool(false),
            _ => return None,
        },
        ValueType::Date => Value::Date(parse_date(cell.trim())?),
        ValueType::Timestamp => Value::Timestamp(parse_timestamp(cell.trim())?),
        ValueType::Json => {
            serde_json::from_str::<serde_json::Value>(cell).ok()?;
            Value::Json(cell.to_string())
        }
        ValueType::Bytes => Value::Bytes(cell.as_bytes().to_vec()),
    })
}

fn coerce_json(v: &serde_json::Value, ty: ValueType) -> Option<Value> {
    let value = Value::from_json(v);
    Some(match (ty, value) {
        (_, Value::Null) => Value::Null,
        (ValueType::Any, v) => v,
        (ValueType::Json, _) => Value::Json(v.to_string()),
        (ValueType::Text, Value::Text(t)) => Value::Text(t),
        (ValueType::Text, other) => Value::Text(other.to_string()),
        (ValueType::Integer, Value::Int(i)) => Value::Int(i),
        (ValueType::Float, Value::Int(i)) => Value::Float(i as f64),
        (ValueType::Float, Value::Float(f)) => Value::Float(f),
        (ValueType::Decimal, Value::Int(i)) => Value::Decimal(i.to_string()),
        (ValueType::Decimal, Value::Float(_) | Value::Decimal(_)) => Value::Decimal(v.to_string()),
        (ValueType::Boolean, Value::Bool(b)) => Value::Bool(b),
        (t, Value::Text(s)) => parse_text(&s, t)?,
        _ => return None,
    })
}

export_source!(FileSource);

/// Fuzzing by property (issue 16): whatever a file holds, reading it never panics: every row
/// comes back or the read ends with an error value. Cases per property: `PROPTEST_CASES`
/// (256 by default); failures are kept in `proptest-regressions/` and replayed first.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn read_all(content: &[u8], name: &str, config: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let Ok(mut reader) = FileSource::open(config, path.to_str().unwrap()) else {
            return;
        };
        let _ = reader.columns();
        for _ in 0..10_000 {
            match reader.next_batch(64) {
                Ok(Some(batch)) => {
                    let _ = batch.decode();
                }
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// CSV-looking text: short fields of awkward characters, quotes, separators and newlines.
    fn csv_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            proptest::string::string_regex("[a-z0-9 ,;\"\\n\\r\\t.:+-é€\\u{0}]{0,12}").unwrap(),
            0..40,
        )
        .prop_map(|cells| {
            let mut s = String::from("id,name,at\n");
            for (i, c) in cells.iter().enumerate() {
                s.push_str(c);
                s.push(if i % 3 == 2 { '\n' } else { ',' });
            }
            s
        })
    }

    proptest! {
        #[test]
        fn any_bytes_as_csv_or_jsonl(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            read_all(&bytes, "f.csv", "{}");
            read_all(&bytes, "f.jsonl", "{}");
        }

        #[test]
        fn csv_like_text(text in csv_text(), infer in 1usize..5) {
            read_all(text.as_bytes(), "f.csv", &format!("{{\"infer_rows\": {infer}}}"));
            read_all(text.as_bytes(), "f.csv", "{\"columns\": {\"id\": \"integer\", \"at\": \"timestamp\", \"name\": \"decimal\"}}");
        }

        #[test]
        fn jsonl_like_text(lines in proptest::collection::vec("\\{(\"[a-z]{1,3}\": ?(-?[0-9]{1,20}(\\.[0-9]{0,3})?|\"[^\"]{0,8}\"|null|true|\\[\\]|\\{\\}),?){0,4}\\}", 0..20)) {
            read_all(lines.join("\n").as_bytes(), "f.jsonl", "{}");
        }

        #[test]
        fn cells_of_every_type(cell in "\\PC{0,30}") {
            for ty in [ValueType::Integer, ValueType::Float, ValueType::Decimal, ValueType::Boolean, ValueType::Date, ValueType::Timestamp, ValueType::Json, ValueType::Text, ValueType::Bytes, ValueType::Any] {
                let mut buf = Vec::new();
                let _ = encode_text(&cell, ty, &mut buf);
                let _ = parse_text(&cell, ty);
            }
        }
    }

    #[test]
    fn a_multibyte_timezone_offset_is_text_not_a_trap() {
        assert_eq!(
            parse_text("2024-01-01 00:00+€1", ValueType::Timestamp),
            None
        );
        read_all("id,at\n1,2024-01-01 00:00+€1\n".as_bytes(), "f.csv", "{}");
    }
}
