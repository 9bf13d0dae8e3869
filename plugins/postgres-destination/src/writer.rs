//! Writing batches. The fast path stages the batch with COPY into a temporary table and
//! applies it with one statement, all in one transaction. When the database refuses
//! something (a constraint, a value its column cannot hold), that transaction rolls back
//! and the batch is written again row by row, each row in a savepoint: the rows it refuses
//! are rejected naming their key and the constraint, the rest commit together.

use crate::config::Config;
use crate::session::{tag_rows, Session};
use crate::sql::{Op, Target};
use crate::text::{column_type, push_copy_escaped, push_copy_field, value_text};
use backflow_plugin_sdk::{codec, Batch, CodecError, Operation, PluginError, RowOutcome, Value};
use pg_protocol::wire::ServerError;

pub struct Writer {
    pub(crate) session: Session,
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) key: Vec<String>,
    pub(crate) create_table: bool,
    pub(crate) deletes: bool,
    /// Stage tables made in this session, by their columns.
    stages: Vec<Vec<String>>,
    /// Inserts are copied straight into the table (as fast as `COPY` itself) until one
    /// meets a row the table already holds (a replay, or a table filled by others); from
    /// then on they go through the stage and `ON CONFLICT`.
    copy_inserts: bool,
    table_ready: bool,
}

/// The statement name of the row-by-row path.
const ROW_STATEMENT: &str = "backflow_row";

impl Writer {
    pub fn new(session: Session, cfg: &Config, key: Vec<String>) -> Writer {
        Writer {
            session,
            schema: cfg.schema().to_string(),
            table: cfg.table.clone(),
            key,
            create_table: cfg.create_table.unwrap_or(false),
            deletes: cfg.deletes.unwrap_or(true),
            stages: Vec::new(),
            copy_inserts: true,
            table_ready: false,
        }
    }

    pub(crate) fn target<'a>(&'a self, columns: &'a [String]) -> Target<'a> {
        Target {
            schema: &self.schema,
            table: &self.table,
            columns,
            key: &self.key,
        }
    }

    /// The table's name as users wrote it, for messages.
    pub(crate) fn table_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// A failed statement as the run's error: the config's fault (no such table or column,
    /// no unique index for the key), a transient one, or fatal.
    pub(crate) fn statement_error(&self, e: &ServerError) -> PluginError {
        let table = self.table_name();
        let what = e.describe();
        match e.code.as_str() {
            "42P01" | "3F000" => PluginError::bad_config(
                "table",
                format!("{what}: create table {table}, or set create_table = true"),
            ),
            "42703" => PluginError::bad_config(
                "table",
                format!("{what}: table {table} needs a column for every mapped field (map the field to an existing column, or add the column)"),
            ),
            "42P10" => PluginError::bad_config(
                "table",
                format!("{what}: table {table} needs a primary key or unique index on the sync's key ({})", self.key.join(", ")),
            ),
            "42501" => PluginError::bad_config("user", format!("{what} (on table {table})")),
            "40001" | "40P01" | "55P03" | "53300" => PluginError::retryable(what),
            _ => PluginError::fatal(format!("PostgreSQL error on table {table}: {what}")),
        }
    }

    /// Creates the table from the batch's columns, once, when `create_table` is set.
    pub(crate) fn ensure_table(&mut self, batch: &Batch) -> Result<(), PluginError> {
        if !self.create_table || self.table_ready {
            return Ok(());
        }
        let columns: Vec<String> = batch.columns.iter().map(|c| c.name.clone()).collect();
        let types: Vec<&str> = batch
            .columns
            .iter()
            .map(|c| column_type(c.value_type))
            .collect();
        let sql = self.target(&columns).create_table(&types);
        let outcome = self.session.simple(&sql)?;
        if let Some(e) = outcome.error {
            return Err(self.statement_error(&e));
        }
        self.table_ready = true;
        Ok(())
    }

    /// The session's stage table for these columns (created on first use).
    pub(crate) fn stage_for(&mut self, columns: &[String]) -> Result<String, PluginError> {
        if let Some(i) = self.stages.iter().position(|c| c == columns) {
            return Ok(format!("backflow_stage_{i}"));
        }
        let name = format!("backflow_stage_{}", self.stages.len());
        let sql = self.target(columns).create_stage(&name);
        let outcome = self.session.simple(&sql)?;
        if let Some(e) = outcome.error {
            return Err(self.statement_error(&e));
        }
        self.stages.push(columns.to_vec());
        Ok(name)
    }

    /// Queues COPY of the batch's rows into `stage`, each with its index (or, without a
    /// stage, straight into the table). Reads the encoded
    /// payload in place: text is escaped straight from it, no row is decoded into values.
    pub(crate) fn queue_copy(
        &mut self,
        stage: Option<&str>,
        columns: &[String],
        batch: &Batch,
    ) -> Result<(), PluginError> {
        let target = self.target(columns);
        let copy = match stage {
            Some(stage) => target.copy_into(stage),
            None => target.copy_into_table(),
        };
        self.session.query(&copy)?;
        let malformed = |e: CodecError| PluginError::fatal(format!("cannot decode the batch: {e}"));
        let mut rest: &[u8] = &batch.payload;
        let rows = codec::read_array_len(&mut rest).map_err(malformed)?;
        let mut line = Vec::with_capacity(256);
        for index in 0..rows {
            line.clear();
            let width = codec::read_array_len(&mut rest).map_err(malformed)?;
            if width != columns.len() {
                return Err(PluginError::fatal(format!(
                    "cannot decode the batch: row {index} has {width} values for {} columns",
                    columns.len()
                )));
            }
            for _ in 0..width {
                let len = codec::value_len(rest).map_err(malformed)?;
                if len > rest.len() {
                    return Err(PluginError::fatal(format!(
                        "cannot decode the batch: row {index} is cut short"
                    )));
                }
                let (raw, after) = rest.split_at(len);
                rest = after;
                if codec::raw_is_null(raw) {
                    line.extend_from_slice(b"\\N");
                } else if let Some(text) = codec::raw_str(raw) {
                    push_copy_escaped(&mut line, text);
                } else {
                    let mut raw = raw;
                    let value = codec::read_value(&mut raw).map_err(malformed)?;
                    push_copy_field(&mut line, &value);
                }
                line.push(b'\t');
            }
            if stage.is_some() {
                line.extend_from_slice(index.to_string().as_bytes());
            } else {
                line.pop();
            }
            self.session.copy_row(&line)?;
        }
        self.session.copy_done()
    }

    /// `id=5` (or `region=eu, id=5`): the row's key, for messages.
    fn key_text(&self, columns: &[String], row: &[Value]) -> String {
        self.key
            .iter()
            .filter_map(|k| columns.iter().position(|c| c == k))
            .map(|i| {
                let v = value_text(&row[i]).unwrap_or_else(|| "NULL".into());
                format!("{}={v}", columns[i])
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn no_row_message(&self, columns: &[String], row: &[Value]) -> String {
        format!(
            "no row with {} in table {} to update (an update never creates a row)",
            self.key_text(columns, row),
            self.table_name()
        )
    }

    pub fn write_batch(
        &mut self,
        op: Operation,
        batch: Batch,
    ) -> Result<Vec<RowOutcome>, PluginError> {
        if batch.row_count == 0 {
            return Ok(Vec::new());
        }
        let op = match op {
            Operation::Insert => Op::Upsert,
            Operation::Update => Op::Update,
            Operation::Append => Op::Append,
            Operation::Delete if !self.deletes => {
                return Err(PluginError::bad_config(
                    "deletes",
                    format!(
                        "deletes = false: rows of table {} are never deleted",
                        self.table_name()
                    ),
                ))
            }
            Operation::Delete => Op::Delete,
        };
        let columns: Vec<String> = batch.columns.iter().map(|c| c.name.clone()).collect();
        if op != Op::Append {
            if let Some(k) = self.key.iter().find(|k| !columns.contains(k)) {
                return Err(PluginError::fatal(format!(
                    "the batch has no column {k:?}, a field of the sync's key (columns: {})",
                    columns.join(", ")
                )));
            }
        }
        self.ensure_table(&batch)?;
        if op == Op::Upsert && self.copy_inserts {
            self.session.query("BEGIN")?;
            self.queue_copy(None, &columns, &batch)?;
            self.session.query("COMMIT")?;
            match self.session.run()?.error {
                None => return Ok(Vec::new()),
                Some(e) if refuses_rows(&e) => {
                    if e.code == "23505" {
                        self.copy_inserts = false;
                    }
                }
                Some(e) => return Err(self.statement_error(&e)),
            }
        }
        let stage = self.stage_for(&columns)?;
        self.session.query("BEGIN")?;
        self.queue_copy(Some(&stage), &columns, &batch)?;
        let target = self.target(&columns);
        let apply = target.apply_stage(op, &stage);
        let missing = target.missing_rows(&stage);
        self.session.query(&apply)?;
        if op == Op::Update {
            self.session.query(&missing)?;
        }
        self.session.query("COMMIT")?;
        let outcome = self.session.run()?;
        if outcome.error.is_none() && (op != Op::Update || outcome.rows.is_empty()) {
            return Ok(Vec::new());
        }
        // Rows to name (an update's missing ones) or to write one by one: decode them now.
        let rows = batch
            .decode()
            .map_err(|e| PluginError::fatal(format!("cannot decode the batch: {e}")))?;
        match outcome.error {
            None => {
                let mut outcomes = vec![RowOutcome::Accepted; rows.len()];
                for r in &outcome.rows {
                    let index = r
                        .first()
                        .and_then(|v| v.as_deref())
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.parse::<usize>().ok())
                        .filter(|&i| i < rows.len())
                        .ok_or_else(|| {
                            PluginError::fatal("PostgreSQL returned a malformed row index")
                        })?;
                    outcomes[index] =
                        RowOutcome::Rejected(self.no_row_message(&columns, &rows[index]));
                }
                Ok(outcomes)
            }
            Some(e) if refuses_rows(&e) => self.write_row_by_row(op, &columns, &rows),
            Some(e) => Err(self.statement_error(&e)),
        }
    }

    /// The slow path: each row in its own savepoint, the refused ones rejected.
    fn write_row_by_row(
        &mut self,
        op: Op,
        columns: &[String],
        rows: &[Vec<Value>],
    ) -> Result<Vec<RowOutcome>, PluginError> {
        let sql = self.target(columns).single_row(op);
        self.session.prepare(ROW_STATEMENT, &sql)?;
        self.session.query("BEGIN")?;
        let outcome = self.session.run()?;
        if let Some(e) = outcome.error {
            let _ = self.session.simple("ROLLBACK");
            return Err(self.statement_error(&e));
        }
        let mut outcomes = Vec::with_capacity(rows.len());
        // A row that went through releases its savepoint with the next row's (savepoints
        // would otherwise nest, one per row).
        let mut release = false;
        for row in rows {
            let params: Vec<Option<String>> = row.iter().map(value_text).collect();
            self.session.query(if release {
                "RELEASE SAVEPOINT backflow_row; SAVEPOINT backflow_row"
            } else {
                "SAVEPOINT backflow_row"
            })?;
            self.session.execute(ROW_STATEMENT, &params)?;
            let outcome = self.session.run()?;
            match outcome.error {
                None => {
                    release = true;
                    let touched = outcome.tags.last().map_or(0, |t| tag_rows(t));
                    if op == Op::Update && touched == 0 {
                        outcomes.push(RowOutcome::Rejected(self.no_row_message(columns, row)));
                    } else {
                        outcomes.push(RowOutcome::Accepted);
                    }
                }
                Some(e) => {
                    release = false;
                    let back = self.session.simple("ROLLBACK TO SAVEPOINT backflow_row")?;
                    if !refuses_rows(&e) || back.error.is_some() {
                        let _ = self.session.simple("ROLLBACK");
                        return Err(self.statement_error(&e));
                    }
                    outcomes.push(RowOutcome::Rejected(refusal(
                        &e,
                        &self.key_text(columns, row),
                    )));
                }
            }
        }
        let commit = self.session.simple("COMMIT")?;
        if let Some(e) = commit.error {
            return Err(self.statement_error(&e));
        }
        Ok(outcomes)
    }
}

/// Errors that are one row's fault: integrity (class 23: unique, foreign key, not null,
/// check), data (class 22: a value the column cannot hold), a row affected twice (21000).
fn refuses_rows(e: &ServerError) -> bool {
    e.code.starts_with("23") || e.code.starts_with("22") || e.code == "21000"
}

/// A refused row's message: its key, the constraint (or column), the server's words.
fn refusal(e: &ServerError, key: &str) -> String {
    let mut m = format!("PostgreSQL refused the row with {key}");
    if let Some(c) = &e.constraint {
        m.push_str(&format!(": constraint {c}"));
    } else if let Some(c) = &e.column {
        m.push_str(&format!(": column {c}"));
    }
    m.push_str(&format!(": {}", e.describe()));
    m
}
