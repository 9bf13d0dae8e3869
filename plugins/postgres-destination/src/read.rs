//! Read-back (`writer.read`, capability `read-back`): the keys are staged with COPY like a
//! batch, and one join returns every column of the rows the table holds for them, typed by
//! their columns as the postgres source types a query's (see `pg_protocol::types`).

use crate::writer::Writer;
use backflow_plugin_sdk::codec;
use backflow_plugin_sdk::warehouse::{Held, ReadResult};
use backflow_plugin_sdk::{Batch, BatchBuilder, Column, PluginError};
use pg_protocol::types;

impl Writer {
    pub fn read_keys(&mut self, keys: Batch) -> Result<ReadResult, PluginError> {
        let columns: Vec<String> = keys.columns.iter().map(|c| c.name.clone()).collect();
        let mut held = vec![Held::Absent; keys.row_count as usize];
        if held.is_empty() {
            return Ok(empty(held));
        }
        let stage = match self.stage_for(&columns) {
            Ok(stage) => stage,
            // A table create_table has not made yet holds nothing.
            Err(PluginError::BadConfig(e)) if self.create_table && e.message.contains("42P01") => {
                return Ok(empty(held))
            }
            Err(e) => return Err(e),
        };
        self.session.query("BEGIN")?;
        self.queue_copy(Some(&stage), &columns, &keys)?;
        let select = self.target(&columns).read_back(&stage);
        self.session.query(&select)?;
        self.session.query("COMMIT")?;
        let outcome = self.session.run()?;
        if let Some(e) = outcome.error {
            return Err(self.statement_error(&e));
        }
        let kinds: Vec<types::Kind> = outcome
            .fields
            .iter()
            .skip(1)
            .map(|(_, oid)| types::kind_for_oid(*oid))
            .collect();
        let result_columns: Vec<Column> = outcome
            .fields
            .iter()
            .skip(1)
            .zip(&kinds)
            .map(|((name, _), kind)| Column::new(name.as_str(), kind.value_type()))
            .collect();
        let mut batch = BatchBuilder::new(result_columns.clone());
        let mut scratch = String::new();
        for row in &outcome.rows {
            let index = row
                .first()
                .and_then(|v| v.as_deref())
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&i| i < held.len())
                .ok_or_else(|| PluginError::fatal("PostgreSQL returned a malformed row index"))?;
            held[index] = Held::Present(batch.len());
            let buf = batch.start_row(kinds.len() as u32);
            for ((value, kind), column) in row.iter().skip(1).zip(&kinds).zip(&result_columns) {
                match value {
                    None => codec::write_null(buf),
                    Some(text) => {
                        types::write_cell(buf, *kind, text, &mut scratch).map_err(|e| {
                            PluginError::fatal(format!(
                                "reading back table {} column {:?}: {e}",
                                self.table_name(),
                                column.name
                            ))
                        })?
                    }
                }
            }
        }
        Ok(ReadResult {
            rows: batch.finish(),
            present: None,
            held,
        })
    }
}

fn empty(held: Vec<Held>) -> ReadResult {
    ReadResult {
        rows: BatchBuilder::new(Vec::new()).finish(),
        present: None,
        held,
    }
}
