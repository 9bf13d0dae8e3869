//! The `warehouse` interface (contract 0.3.0, capability `warehouse-diff`): the snapshot of
//! what a sync delivered lives in a table of the source database, and PostgreSQL computes
//! the diff, so only changed rows leave the database.
//!
//! The snapshot table (`schema.table`, named by the engine) holds the key columns, a row
//! fingerprint (`__bf_fp`, `md5` of the model row's text: `md5(q::text)`) and the row as
//! delivered (`__bf_row`, the encoded row the engine wrote back, returned untouched as the
//! `before` of a changed row). The diff runs once, into a temporary table dropped when the
//! differ's transaction ends, so its counts are known before the first batch and the model
//! is scanned once; the batches stream out of it with the simple query protocol (the server
//! is held back by the socket, so neither side holds more than a batch).
//!
//! Privileges: `SELECT` on the model; `TEMP` on the database (granted to everyone by
//! default) for the diff; `USAGE` and `CREATE` on the snapshot schema (and `CREATE` on the
//! database the first time, when the schema does not exist yet) for `prepare` and the
//! write-back. A dry run (the differ alone) writes nothing lasting.

use backflow_plugin_sdk::codec::{self, read_array_len, read_value, value_len};
use backflow_plugin_sdk::warehouse::{
    ChangeBatch, DiffCounts, DiffRequest, SnapshotTable, WriteBack,
};
use backflow_plugin_sdk::{
    Batch, BatchBuilder, ChangeKind, Column, PluginError, Value, ValueType, WarehouseDiffer,
};
use pg_protocol::types::{self, Kind};
use pg_protocol::wire::{Connection, ServerError};
use postgres_protocol::message::backend::{DataRowBody, Message};
use postgres_protocol::message::frontend;

/// Names of the snapshot table's own columns (beside the key columns).
const FP: &str = "__bf_fp";
const ROW: &str = "__bf_row";
/// The temporary table holding one diff.
const DIFF: &str = "pg_temp.\"__bf_diff\"";
/// Rows per write-back statement.
const WRITE_BACK_ROWS: usize = 1000;

fn connect(config: &str) -> Result<Connection, PluginError> {
    let cfg = crate::check(config).map_err(|mut e| PluginError::BadConfig(e.remove(0)))?;
    crate::connect(&cfg)
}

/// A quoted identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted string literal (standard_conforming_strings is on by default since 9.1).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn table_name(t: &SnapshotTable) -> String {
    format!("{}.{}", ident(&t.schema), ident(&t.table))
}

/// The column type a key of this value type is kept in.
fn pg_type(t: ValueType) -> &'static str {
    match t {
        ValueType::Integer => "bigint",
        ValueType::Float => "double precision",
        ValueType::Decimal => "numeric",
        ValueType::Boolean => "boolean",
        ValueType::Date => "date",
        ValueType::Timestamp => "timestamptz",
        ValueType::Bytes => "bytea",
        ValueType::Text | ValueType::Json | ValueType::Any => "text",
    }
}

/// Whether a key of this type is kept as text (and compared as text).
fn kept_as_text(t: ValueType) -> bool {
    pg_type(t) == "text"
}

fn server_error(e: &ServerError, what: &str) -> PluginError {
    let message = format!("PostgreSQL error {what}: {}", e.describe());
    if e.is_connection_loss() {
        PluginError::retryable(message)
    } else if e.code.starts_with("42") && what.contains("query") {
        PluginError::bad_config("query", message)
    } else {
        PluginError::fatal(message)
    }
}

/// One result of [`simple`]: its columns (name, type OID) and rows of text cells.
struct TextResult {
    columns: Vec<(String, u32)>,
    rows: Vec<Vec<Option<String>>>,
}

/// Runs statements with the simple query protocol and collects the last result (small
/// results only: catalog lookups and counts).
fn simple(conn: &mut Connection, sql: &str, what: &str) -> Result<TextResult, PluginError> {
    frontend::query(sql, &mut conn.write_buf)
        .map_err(|e| PluginError::fatal(format!("cannot encode a statement: {e}")))?;
    conn.flush()?;
    let mut result = TextResult {
        columns: Vec::new(),
        rows: Vec::new(),
    };
    let mut error = None;
    loop {
        match conn.recv()? {
            Message::RowDescription(body) => {
                use fallible_iterator::FallibleIterator;
                result = TextResult {
                    columns: Vec::new(),
                    rows: Vec::new(),
                };
                let mut fields = body.fields();
                while let Some(f) = fields
                    .next()
                    .map_err(|e| PluginError::fatal(format!("malformed row description: {e}")))?
                {
                    result.columns.push((f.name().to_string(), f.type_oid()));
                }
            }
            Message::DataRow(body) => {
                let cells = split_cells(&body)?;
                result.rows.push(
                    cells
                        .into_iter()
                        .map(|c| c.map(|b| String::from_utf8_lossy(b).into_owned()))
                        .collect(),
                );
            }
            Message::ErrorResponse(body) => {
                error.get_or_insert_with(|| server_error(&ServerError::parse(&body), what));
            }
            Message::ReadyForQuery(_) => break,
            _ => {}
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

/// The cells of a `DataRow`; `None` for NULL.
fn split_cells(body: &DataRowBody) -> Result<Vec<Option<&[u8]>>, PluginError> {
    use fallible_iterator::FallibleIterator;
    let buf = body.buffer();
    body.ranges()
        .map(|r| Ok(r.and_then(|r| buf.get(r))))
        .collect()
        .map_err(|e| {
            PluginError::fatal(format!(
                "PostgreSQL protocol error: malformed data row: {e}"
            ))
        })
}

/// The key columns a snapshot table holds (name and value type), or `None` when it does
/// not exist.
fn held_key_columns(
    conn: &mut Connection,
    table: &SnapshotTable,
) -> Result<Option<Vec<Column>>, PluginError> {
    let exists = simple(
        conn,
        &format!(
            "SELECT to_regclass({}) IS NOT NULL",
            literal(&table_name(table))
        ),
        "looking up the snapshot table",
    )?;
    if exists.rows.first().and_then(|r| r[0].as_deref()) != Some("t") {
        return Ok(None);
    }
    let cols = simple(
        conn,
        &format!(
            "SELECT a.attname, a.atttypid::int8 FROM pg_attribute a WHERE a.attrelid = {}::regclass \
             AND a.attnum > 0 AND NOT a.attisdropped AND a.attname NOT IN ({}, {}) ORDER BY a.attnum",
            literal(&table_name(table)),
            literal(FP),
            literal(ROW)
        ),
        "reading the snapshot table's columns",
    )?;
    Ok(Some(
        cols.rows
            .iter()
            .filter_map(|r| {
                let name = r[0].clone()?;
                let oid: u32 = r[1].as_deref()?.parse().ok()?;
                Some(Column::new(name, types::kind_for_oid(oid).value_type()))
            })
            .collect(),
    ))
}

/// Creates the schema and snapshot table if missing; the key columns the table holds.
pub(crate) fn prepare(
    config: &str,
    table: &SnapshotTable,
    key_columns: &[Column],
) -> Result<Vec<Column>, PluginError> {
    let mut conn = connect(config)?;
    if let Some(held) = held_key_columns(&mut conn, table)? {
        conn.terminate();
        return Ok(held);
    }
    let schema_exists = simple(
        &mut conn,
        &format!(
            "SELECT 1 FROM pg_namespace WHERE nspname = {}",
            literal(&table.schema)
        ),
        "looking up the snapshot schema",
    )?;
    let mut sql = String::from("BEGIN READ WRITE;");
    // CREATE SCHEMA needs CREATE on the database even with IF NOT EXISTS: only when missing.
    if schema_exists.rows.is_empty() {
        sql.push_str(&format!(
            "CREATE SCHEMA IF NOT EXISTS {};",
            ident(&table.schema)
        ));
    }
    let keys: Vec<String> = key_columns
        .iter()
        .map(|c| format!("{} {} NOT NULL", ident(&c.name), pg_type(c.value_type)))
        .collect();
    let names: Vec<String> = key_columns.iter().map(|c| ident(&c.name)).collect();
    sql.push_str(&format!(
        "CREATE TABLE IF NOT EXISTS {} ({}, {} text, {} bytea NOT NULL, PRIMARY KEY ({}));COMMIT;",
        table_name(table),
        keys.join(", "),
        ident(FP),
        ident(ROW),
        names.join(", ")
    ));
    simple(&mut conn, &sql, "creating the snapshot table")?;
    let held = held_key_columns(&mut conn, table)?.unwrap_or_default();
    conn.terminate();
    Ok(held)
}

/// The statement creating the diff's temporary table: `__bf_kind` (a, c, r, u), the model's
/// columns, `__bf_fp`, `__bf_before` (the delivered row) and `__bf_sk_N` (the snapshot's
/// key, for removed rows).
fn diff_statement(
    request: &DiffRequest,
    key_types: &[ValueType],
    snapshot_exists: bool,
    include_unchanged: bool,
) -> String {
    let model = format!(
        "SELECT q.*, md5(q::text) AS {fp} FROM ({query}\n) AS q",
        fp = ident(FP),
        query = request.query
    );
    if !snapshot_exists {
        let keys: Vec<String> = (0..request.key_columns.len())
            .map(|i| format!("NULL::text AS \"__bf_sk_{i}\""))
            .collect();
        return format!(
            "CREATE TEMP TABLE \"__bf_diff\" ON COMMIT DROP AS WITH m AS ({model}) \
             SELECT 'a'::text AS \"__bf_kind\", m.*, NULL::bytea AS \"__bf_before\", {} FROM m",
            keys.join(", ")
        );
    }
    let join: Vec<String> = request
        .key_columns
        .iter()
        .zip(key_types)
        .map(|(k, t)| {
            if kept_as_text(*t) {
                format!("m.{k}::text = s.{k}", k = ident(k))
            } else {
                format!("m.{k} = s.{k}", k = ident(k))
            }
        })
        .collect();
    let keys: Vec<String> = request
        .key_columns
        .iter()
        .enumerate()
        .map(|(i, k)| format!("s.{} AS \"__bf_sk_{i}\"", ident(k)))
        .collect();
    let full = if request.full_resync { "true" } else { "false" };
    let (fp, row) = (ident(FP), ident(ROW));
    let filter = if include_unchanged {
        String::new()
    } else {
        format!("WHERE m.{fp} IS DISTINCT FROM s.{fp} OR ({full} AND m.{fp} IS NOT NULL)")
    };
    format!(
        "CREATE TEMP TABLE \"__bf_diff\" ON COMMIT DROP AS WITH m AS ({model}) \
         SELECT CASE WHEN s.{row} IS NULL THEN 'a' WHEN m.{fp} IS NULL THEN 'r' \
         WHEN {full} OR m.{fp} IS DISTINCT FROM s.{fp} THEN 'c' ELSE 'u' END AS \"__bf_kind\", \
         m.*, s.{row} AS \"__bf_before\", {keys} FROM m FULL JOIN {table} AS s ON {join} {filter}",
        keys = keys.join(", "),
        table = table_name(&request.snapshot),
        join = join.join(" AND "),
    )
}

/// A diff computed into a temporary table, read out one kind of change after the other.
pub(crate) struct Differ {
    conn: Connection,
    /// The model's columns, and how each is read (text format).
    columns: Vec<Column>,
    kinds: Vec<Kind>,
    /// Per key column: its position among the model's columns, and how the snapshot's key
    /// cell is read (removed rows).
    key_kinds: Vec<Kind>,
    key_columns: Vec<Column>,
    counts: DiffCounts,
    /// The kinds still to read, in order, and whether a query for the first is in flight.
    pending: Vec<(ChangeKind, &'static str)>,
    in_flight: bool,
    done: bool,
    scratch: String,
}

impl Differ {
    pub(crate) fn open(
        config: &str,
        request: DiffRequest,
        include_unchanged: bool,
    ) -> Result<Differ, PluginError> {
        if request.cursor.is_some() {
            return Err(PluginError::fatal(
                "cursor reads are not supported by this plugin",
            ));
        }
        let mut conn = connect(config)?;
        let described = simple(
            &mut conn,
            &format!("SELECT * FROM ({}\n) AS q LIMIT 0", request.query),
            "in the model's query",
        )?;
        let columns: Vec<Column> = described
            .columns
            .iter()
            .map(|(name, oid)| Column::new(name.clone(), types::kind_for_oid(*oid).value_type()))
            .collect();
        let kinds: Vec<Kind> = described
            .columns
            .iter()
            .map(|(_, oid)| types::kind_for_oid(*oid))
            .collect();
        let mut key_types = Vec::new();
        for k in &request.key_columns {
            let i = columns.iter().position(|c| &c.name == k).ok_or_else(|| {
                PluginError::bad_config(
                    "query",
                    format!("the model has no column {k:?} (its primary key)"),
                )
            })?;
            key_types.push(columns[i].value_type);
        }
        let held = held_key_columns(&mut conn, &request.snapshot)?;
        if let Some(held) = &held {
            check_key_types(&request, &key_types, held)?;
        }
        let key_columns: Vec<Column> = match &held {
            Some(held) => held.clone(),
            None => request
                .key_columns
                .iter()
                .zip(&key_types)
                .map(|(k, t)| Column::new(k.clone(), *t))
                .collect(),
        };
        let key_kinds = key_columns
            .iter()
            .map(|c| kind_for_value_type(c.value_type))
            .collect();
        let statement = diff_statement(&request, &key_types, held.is_some(), include_unchanged);
        simple(
            &mut conn,
            &format!("BEGIN ISOLATION LEVEL REPEATABLE READ READ WRITE;{statement}"),
            "computing the diff of the model's query",
        )?;
        let by_kind = simple(
            &mut conn,
            &format!("SELECT \"__bf_kind\", count(*) FROM {DIFF} GROUP BY 1"),
            "counting the diff",
        )?;
        let count = |kind: &str| -> u64 {
            by_kind
                .rows
                .iter()
                .find(|r| r[0].as_deref() == Some(kind))
                .and_then(|r| r[1].as_deref()?.parse().ok())
                .unwrap_or(0)
        };
        let snapshot_rows = if held.is_some() {
            let n = simple(
                &mut conn,
                &format!("SELECT count(*) FROM {}", table_name(&request.snapshot)),
                "counting the snapshot",
            )?;
            n.rows
                .first()
                .and_then(|r| r[0].as_deref()?.parse().ok())
                .unwrap_or(0)
        } else {
            0
        };
        let (added, changed, removed) = (count("a"), count("c"), count("r"));
        let counts = DiffCounts {
            // Model rows are the unchanged and changed rows of the snapshot, and the added.
            model_rows: Some((snapshot_rows + added).saturating_sub(removed)),
            snapshot_rows,
            added,
            changed,
            removed,
        };
        let mut pending = vec![
            (ChangeKind::Added, "a"),
            (ChangeKind::Changed, "c"),
            (ChangeKind::Removed, "r"),
        ];
        if include_unchanged {
            pending.push((ChangeKind::Unchanged, "u"));
        }
        pending.retain(|(_, k)| count(k) > 0);
        Ok(Differ {
            conn,
            columns,
            kinds,
            key_kinds,
            key_columns,
            counts,
            pending,
            in_flight: false,
            done: false,
            scratch: String::new(),
        })
    }

    /// Ends the diff's transaction (dropping its table) and the session.
    fn finish(&mut self) -> Result<(), PluginError> {
        self.done = true;
        simple(&mut self.conn, "COMMIT", "ending the diff")?;
        self.conn.terminate();
        Ok(())
    }

    /// Encodes one row of the diff table into the batches of its kind.
    fn take_row(
        &mut self,
        body: &DataRowBody,
        kind: ChangeKind,
        out: &mut Builders,
    ) -> Result<(), PluginError> {
        let cells = split_cells(body)?;
        let width = self.columns.len();
        if cells.len() != width + 3 + self.key_columns.len() {
            return Err(PluginError::fatal(
                "the diff table's columns do not match the model's",
            ));
        }
        if kind == ChangeKind::Removed {
            let buf = out.rows.start_row(self.key_kinds.len() as u32);
            for (i, k) in self.key_kinds.iter().enumerate() {
                write_text_cell(buf, *k, cells[width + 3 + i], &mut self.scratch)?;
            }
            return Ok(());
        }
        let buf = out.rows.start_row(width as u32);
        for (i, k) in self.kinds.iter().enumerate() {
            write_text_cell(buf, *k, cells[1 + i], &mut self.scratch).map_err(|e| {
                PluginError::fatal(format!("column {:?}: {e}", self.columns[i].name))
            })?;
        }
        let fp = cells[1 + width].unwrap_or_default();
        out.fingerprints
            .push(String::from_utf8_lossy(fp).into_owned());
        if kind == ChangeKind::Changed {
            let before = decode_bytea(cells[2 + width].unwrap_or_default())?;
            out.before.push_encoded_row(&before);
        }
        Ok(())
    }
}

struct Builders {
    rows: BatchBuilder,
    before: BatchBuilder,
    fingerprints: Vec<String>,
}

fn check_key_types(
    request: &DiffRequest,
    model: &[ValueType],
    held: &[Column],
) -> Result<(), PluginError> {
    for ((name, now), held) in request.key_columns.iter().zip(model).zip(held) {
        if pg_type(*now) != pg_type(held.value_type) {
            return Err(PluginError::fatal(format!(
                "primary key column {name:?} held {} values in the rows delivered so far (snapshot table {}), and now holds {} values; \
                 the same key as another type is another row, so this run would delete and re-add every row. Cast it in the query; nothing was sent",
                held.value_type.as_str(),
                table_name(&request.snapshot),
                now.as_str()
            )));
        }
    }
    Ok(())
}

/// How a snapshot key cell of a value type is read back (its text form).
fn kind_for_value_type(t: ValueType) -> Kind {
    match t {
        ValueType::Integer => Kind::Int,
        ValueType::Float => Kind::Float,
        ValueType::Decimal => Kind::Numeric,
        ValueType::Boolean => Kind::Bool,
        ValueType::Date => Kind::Date,
        ValueType::Timestamp => Kind::Timestamp,
        ValueType::Bytes => Kind::Bytea,
        ValueType::Json => Kind::Json,
        ValueType::Text | ValueType::Any => Kind::Text,
    }
}

fn write_text_cell(
    buf: &mut Vec<u8>,
    kind: Kind,
    cell: Option<&[u8]>,
    scratch: &mut String,
) -> Result<(), PluginError> {
    match cell {
        None => {
            codec::write_null(buf);
            Ok(())
        }
        Some(text) => types::write_cell(buf, kind, text, scratch).map_err(PluginError::fatal),
    }
}

/// A `bytea` in hex output (`\x0a1b…`).
fn decode_bytea(text: &[u8]) -> Result<Vec<u8>, PluginError> {
    let hex = text
        .strip_prefix(b"\\x")
        .ok_or_else(|| PluginError::fatal("a snapshot row is not in hex bytea output"))?;
    let digit = |c: u8| -> Result<u8, PluginError> {
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| PluginError::fatal("a snapshot row has a bad hex digit"))
    };
    hex.chunks(2)
        .map(|pair| match pair {
            [a, b] => Ok(digit(*a)? << 4 | digit(*b)?),
            _ => Err(PluginError::fatal("a snapshot row has an odd hex length")),
        })
        .collect()
}

impl WarehouseDiffer for Differ {
    fn columns(&self) -> Vec<Column> {
        self.columns.clone()
    }

    fn counts(&mut self) -> Result<DiffCounts, PluginError> {
        Ok(self.counts)
    }

    fn next_batch(&mut self, max_rows: u32) -> Result<Option<ChangeBatch>, PluginError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(&(kind, code)) = self.pending.first() else {
                self.finish()?;
                return Ok(None);
            };
            if !self.in_flight {
                let sql = format!("SELECT * FROM {DIFF} WHERE \"__bf_kind\" = '{code}'");
                frontend::query(&sql, &mut self.conn.write_buf)
                    .map_err(|e| PluginError::fatal(format!("cannot encode a statement: {e}")))?;
                self.conn.flush()?;
                self.in_flight = true;
            }
            let row_columns = if kind == ChangeKind::Removed {
                self.key_columns.clone()
            } else {
                self.columns.clone()
            };
            let mut out = Builders {
                rows: BatchBuilder::new(row_columns),
                before: BatchBuilder::new(self.columns.clone()),
                fingerprints: Vec::new(),
            };
            let mut ended = false;
            while out.rows.len() < max_rows.max(1) {
                match self.conn.recv()? {
                    Message::DataRow(body) => self.take_row(&body, kind, &mut out)?,
                    Message::RowDescription(_) => {}
                    Message::CommandComplete(_) => {}
                    Message::ErrorResponse(body) => {
                        let e = server_error(&ServerError::parse(&body), "reading the diff");
                        // The ReadyForQuery that follows ends the query; the run stops anyway.
                        return Err(e);
                    }
                    Message::ReadyForQuery(_) => {
                        ended = true;
                        break;
                    }
                    _ => {}
                }
            }
            if ended {
                self.in_flight = false;
                self.pending.remove(0);
            }
            if out.rows.is_empty() {
                continue;
            }
            return Ok(Some(ChangeBatch {
                kind,
                before: (kind == ChangeKind::Changed).then(|| out.before.finish()),
                rows: out.rows.finish(),
                fingerprints: out.fingerprints,
            }));
        }
    }
}

/// The encoded rows of a batch, each as its own bytes.
fn raw_rows(batch: &Batch) -> Result<Vec<&[u8]>, PluginError> {
    let bad = |e: codec::CodecError| PluginError::fatal(format!("malformed batch: {e}"));
    let payload = batch.payload.as_slice();
    let mut rest = payload;
    let count = read_array_len(&mut rest).map_err(bad)?;
    let mut rows = Vec::with_capacity(count.min(payload.len()));
    for _ in 0..count {
        let start = payload.len() - rest.len();
        let width = read_array_len(&mut rest).map_err(bad)?;
        for _ in 0..width {
            let n = value_len(rest).map_err(bad)?;
            rest = &rest[n..];
        }
        rows.push(&payload[start..payload.len() - rest.len()]);
    }
    Ok(rows)
}

/// A value as an SQL literal (untyped: it takes the type of the column it goes into).
fn value_literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Bytes(b) => bytea_literal(b),
        other => literal(&other.to_string()),
    }
}

fn bytea_literal(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2 + 6);
    s.push_str("'\\x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s.push('\'');
    s
}

/// The key values of each row of `batch` (columns `keys`, found by name).
fn key_literals(batch: &Batch, keys: &[String]) -> Result<Vec<Vec<String>>, PluginError> {
    let index: Vec<usize> = keys
        .iter()
        .map(|k| {
            batch.column_index(k).ok_or_else(|| {
                PluginError::fatal(format!("the write-back carries no key column {k:?}"))
            })
        })
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for row in raw_rows(batch)? {
        let mut rest = row;
        let width = read_array_len(&mut rest)
            .map_err(|e| PluginError::fatal(format!("malformed batch: {e}")))?;
        let mut values = Vec::with_capacity(width);
        for _ in 0..width {
            values.push(
                read_value(&mut rest)
                    .map_err(|e| PluginError::fatal(format!("malformed batch: {e}")))?,
            );
        }
        out.push(
            index
                .iter()
                .map(|&i| {
                    values
                        .get(i)
                        .map(value_literal)
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect(),
        );
    }
    Ok(out)
}

/// Records acknowledged rows and removals in the snapshot table, in one transaction,
/// idempotently (upsert by key; delete by key).
pub(crate) fn write_back(config: &str, w: WriteBack) -> Result<(), PluginError> {
    let mut conn = connect(config)?;
    let held = held_key_columns(&mut conn, &w.snapshot)?.ok_or_else(|| {
        PluginError::fatal(format!(
            "the snapshot table {} does not exist (prepare creates it)",
            table_name(&w.snapshot)
        ))
    })?;
    let keys: Vec<String> = held.iter().map(|c| c.name.clone()).collect();
    let key_list = keys.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
    let table = table_name(&w.snapshot);
    let mut sql = String::from("BEGIN READ WRITE;");
    let rows = raw_rows(&w.delivered)?;
    let row_keys = key_literals(&w.delivered, &keys)?;
    let mut values = Vec::new();
    for (i, (row, key)) in rows.iter().zip(&row_keys).enumerate() {
        let fp = match w.fingerprints.get(i).cloned().flatten() {
            Some(fp) => literal(&fp),
            // An undo's or reconcile's row: its fingerprint is unknown, so the next diff
            // sees it as changed (and sends it once more).
            None => "NULL".into(),
        };
        values.push(format!(
            "({}, {fp}, {})",
            key.join(", "),
            bytea_literal(row)
        ));
    }
    for chunk in values.chunks(WRITE_BACK_ROWS) {
        sql.push_str(&format!(
            "INSERT INTO {table} ({key_list}, {fp}, {row}) VALUES {} ON CONFLICT ({key_list}) DO UPDATE SET {fp} = EXCLUDED.{fp}, {row} = EXCLUDED.{row};",
            chunk.join(", "),
            fp = ident(FP),
            row = ident(ROW),
        ));
    }
    let removed = key_literals(&w.removed, &keys)?;
    for chunk in removed.chunks(WRITE_BACK_ROWS) {
        let tuples: Vec<String> = chunk
            .iter()
            .map(|k| format!("({})", k.join(", ")))
            .collect();
        sql.push_str(&format!(
            "DELETE FROM {table} WHERE ({key_list}) IN ({});",
            tuples.join(", ")
        ));
    }
    sql.push_str("COMMIT;");
    simple(&mut conn, &sql, "writing back to the snapshot table")?;
    conn.terminate();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(bytea_literal(&[0, 255]), "'\\x00ff'");
        assert_eq!(decode_bytea(b"\\x00ff").unwrap(), vec![0, 255]);
        assert!(decode_bytea(b"00ff").is_err());
    }
}
