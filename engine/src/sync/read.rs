//! Stage 2: reading the model. The source plugin runs on its own task and reads ahead; each
//! row is projected to destination fields, its key re-encoded canonically and checked for
//! NULLs, and (key, fingerprint, row) goes to a [`ModelSink`]: the plan's intake, which diffs
//! it at once, or a spill to be sorted.

use super::prepare::PreparedSync;
use super::progress::Progress;
use super::run::Abort;
use crate::domain::Fingerprint;
use crate::host::{CallError, SourceInstance};
use backflow_plugin_sdk::codec::{read_array_len, value_len, write_row_header};
use backflow_plugin_sdk::{Batch, Column};

/// Consecutive empty batches after which a source is deemed stuck.
pub(crate) const MAX_EMPTY_BATCHES: u32 = 1000;

/// Rows asked of the source per call, at most.
pub(crate) const SOURCE_BATCH_ROWS: u32 = 8192;
/// Bytes a batch should carry across the plugin boundary: when a source's rows are large,
/// it is asked for fewer rows per call (memory is bounded in bytes, not rows).
pub(crate) const TARGET_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Rows to ask for next, given the last batch: as many as fit [`TARGET_BATCH_BYTES`] at its
/// average row size, between 1 and [`SOURCE_BATCH_ROWS`].
pub(crate) fn next_request_rows(last_rows: u32, last_bytes: usize) -> u32 {
    if last_rows == 0 || last_bytes == 0 {
        return SOURCE_BATCH_ROWS;
    }
    let per_row = (last_bytes / last_rows as usize).max(1);
    u32::try_from(TARGET_BATCH_BYTES / per_row)
        .unwrap_or(SOURCE_BATCH_ROWS)
        .clamp(1, SOURCE_BATCH_ROWS)
}

/// Fingerprint of a mapped row: covers the destination field names too, so a changed mapping
/// changes every fingerprint (every row must be re-sent with the new shape). Stored in every
/// snapshot: it must never change for the same signature and row.
pub fn fingerprint(mapping_signature: &[u8], row: &[u8]) -> Fingerprint {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(mapping_signature);
    h.update(row);
    h.digest128().to_le_bytes()
}

/// [`fingerprint`] of a row that follows its mapping signature in one buffer: the same value
/// (XXH3's streaming digest equals the one-shot hash of the concatenation), without setting
/// up a streaming state per row, which was most of the hashing's cost on a million short rows.
pub fn fingerprint_of_signed(signature_then_row: &[u8]) -> Fingerprint {
    xxhash_rust::xxh3::xxh3_128(signature_then_row).to_le_bytes()
}

/// How a sync's model columns become destination fields.
pub(crate) struct Projection {
    /// For each destination column, the model column it comes from.
    pub(crate) source_index: Vec<usize>,
    pub(crate) key_index: Vec<usize>,
    pub(crate) columns: Vec<Column>,
    /// Destination fields of the primary key columns.
    pub(crate) key_columns: Vec<Column>,
    /// Destination field names, hashed into every fingerprint.
    pub(crate) signature: Vec<u8>,
    pub(crate) source_width: usize,
}

/// A model lacks a column the sync needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProjectionError {
    /// A primary key column of the model is not among the source's columns.
    NoKeyColumn(String),
    /// A `mapping` entry names a column the source does not have.
    NoMappedColumn(String),
}

/// A model lacks a column its sync needs (a primary key or mapped column); names the file
/// and key to fix.
#[derive(Debug, thiserror::Error)]
#[error("{}: {key}: model {model} has no column {column:?} (columns: {listing})", file.display())]
pub struct MissingColumn {
    file: std::path::PathBuf,
    key: String,
    model: String,
    column: String,
    listing: String,
}

impl Projection {
    /// The projection of a prepared sync; errors name the file and key to fix.
    pub(crate) fn new(
        p: &PreparedSync,
        model_columns: &[Column],
    ) -> Result<Projection, MissingColumn> {
        Projection::build(&p.model.primary_key, &p.sync.mapping, model_columns).map_err(|e| {
            let listing = model_columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let (origin, key, column) = match e {
                ProjectionError::NoKeyColumn(k) => {
                    (&p.model.origin, p.model.origin.key("primary_key"), k)
                }
                ProjectionError::NoMappedColumn(from) => (
                    &p.sync.origin,
                    p.sync.origin.key(&format!("mapping.{from}")),
                    from,
                ),
            };
            MissingColumn {
                file: origin.file.clone(),
                key,
                model: p.model.name.clone(),
                column,
                listing,
            }
        })
    }

    /// Maps model columns to destination fields: `mapping` (model column → field), or every
    /// column under its own name when empty. Key fields are renamed by the mapping too.
    pub(crate) fn build(
        primary_key: &[String],
        mapping: &[(String, String)],
        model_columns: &[Column],
    ) -> Result<Projection, ProjectionError> {
        let names: Vec<&str> = model_columns.iter().map(|c| c.name.as_str()).collect();
        let find = |name: &str| names.iter().position(|n| *n == name);
        let mut key_index = Vec::new();
        for k in primary_key {
            key_index.push(find(k).ok_or_else(|| ProjectionError::NoKeyColumn(k.clone()))?);
        }
        let mapping: Vec<(String, String)> = if mapping.is_empty() {
            names
                .iter()
                .map(|n| (n.to_string(), n.to_string()))
                .collect()
        } else {
            mapping.to_vec()
        };
        let mut source_index = Vec::new();
        let mut columns = Vec::new();
        for (from, to) in &mapping {
            let i = find(from).ok_or_else(|| ProjectionError::NoMappedColumn(from.clone()))?;
            source_index.push(i);
            columns.push(Column {
                name: to.clone(),
                value_type: model_columns[i].value_type,
                nullable: model_columns[i].nullable,
            });
        }
        let key_columns = key_index
            .iter()
            .map(|&i| {
                let name = mapping
                    .iter()
                    .find(|(from, _)| *from == names[i])
                    .map(|(_, to)| to.clone())
                    .unwrap_or_else(|| names[i].to_string());
                Column {
                    name,
                    value_type: model_columns[i].value_type,
                    nullable: false,
                }
            })
            .collect();
        let signature = columns
            .iter()
            .flat_map(|c| c.name.bytes().chain([0]))
            .collect();
        Ok(Projection {
            source_index,
            key_index,
            columns,
            key_columns,
            signature,
            source_width: model_columns.len(),
        })
    }
}

/// Whether an encoded cell is a MessagePack string whose bytes are not UTF-8.
pub(crate) fn is_invalid_text(cell: &[u8]) -> bool {
    matches!(cell.first(), Some(0xa0..=0xbf | 0xd9..=0xdb))
        && backflow_plugin_sdk::codec::raw_str(cell).is_none()
}

/// Batches the source reads ahead, on their own task: the guest parses the next batch while
/// the host projects and spills the previous one.
pub(crate) type SourceBatches = tokio::sync::mpsc::Receiver<Result<Batch, CallError>>;

/// Moves the source onto its own task, which reads until the model ends, an error occurs or
/// the receiver is dropped, then closes the source.
pub(crate) fn spawn_reader(mut source: SourceInstance) -> SourceBatches {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    // In the run's log span: the source's lines carry the run id too.
    let span = tracing::Span::current();
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let mut ask = SOURCE_BATCH_ROWS;
            loop {
                match source.next_batch(ask).await {
                    Ok(Some(batch)) => {
                        ask = next_request_rows(batch.row_count, batch.payload.len());
                        if tx.send(Ok(batch)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                }
            }
            source.close().await;
        },
        span,
    ));
    rx
}

/// Where [`read_model`] puts each model row.
pub(crate) trait ModelSink {
    /// One projected row: its canonically encoded key, fingerprint and mapped row.
    fn push(&mut self, key: &[u8], fp: Fingerprint, row: &[u8]) -> Result<(), Abort>;
}

/// The type of one key column's values in a model, and the row where it was first seen;
/// `None` when the model has no rows.
pub(crate) type KeyType = Option<(&'static str, u64)>;

/// Reads every batch from the source, projects rows to destination fields, checks keys, and
/// gives (key, fingerprint, row) to `sink`. Returns the type of each key column's values.
/// A key column holding values of two types (`1` and `"1"`) stops the run: those would be
/// two different keys.
pub(crate) async fn read_model(
    mut batches: SourceBatches,
    p: &PreparedSync,
    projection: &Projection,
    sink: &mut impl ModelSink,
) -> Result<Vec<KeyType>, Abort> {
    let mut rows = RowProjector::new(p, projection);
    let mut empty_batches = 0u32;
    let mut progress = Progress::new("read", 0);
    loop {
        let batch = match batches.recv().await {
            None => break,
            Some(batch) => batch.map_err(|e| {
                Abort::Source(format!(
                    "source {} failed reading model {} after {} rows: {e}",
                    p.source.name, p.model.name, rows.row_number
                ))
            })?,
        };
        if batch.row_count == 0 {
            empty_batches += 1;
            if empty_batches > MAX_EMPTY_BATCHES {
                return Err(Abort::Source(format!("source {} returned {MAX_EMPTY_BATCHES} empty batches in a row; a source signals the end with none", p.source.name)));
            }
            continue;
        }
        empty_batches = 0;
        let count = rows.batch(&batch, sink)?;
        progress.advance(count as u64);
    }
    progress.finish();
    rows.finish()
}

/// Projects a model's rows one batch at a time, keeping what spans batches: the row count,
/// each key column's type, the rows with a NULL key, and buffers reused from row to row.
pub(crate) struct RowProjector<'a> {
    p: &'a PreparedSync,
    projection: &'a Projection,
    key_types: Vec<KeyType>,
    spans: Vec<(usize, usize)>,
    row_buf: Vec<u8>,
    key_buf: Vec<u8>,
    null_keys: Vec<u64>,
    null_count: u64,
    row_number: u64,
}

impl<'a> RowProjector<'a> {
    pub(crate) fn new(p: &'a PreparedSync, projection: &'a Projection) -> RowProjector<'a> {
        let mut row_buf = Vec::with_capacity(projection.signature.len() + 256);
        row_buf.extend_from_slice(&projection.signature);
        RowProjector {
            p,
            projection,
            key_types: vec![None; projection.key_index.len()],
            spans: Vec::with_capacity(projection.source_width),
            row_buf,
            key_buf: Vec::with_capacity(64),
            null_keys: Vec::new(),
            null_count: 0,
            row_number: 0,
        }
    }

    /// Projects every row of a batch into `sink`; returns the batch's row count.
    pub(crate) fn batch(
        &mut self,
        batch: &Batch,
        sink: &mut impl ModelSink,
    ) -> Result<usize, Abort> {
        let (p, projection) = (self.p, self.projection);
        let payload = batch.payload.as_slice();
        let mut rest = payload;
        let count = read_array_len(&mut rest).map_err(|e| {
            Abort::Source(format!(
                "source {} sent a malformed batch: {e}",
                p.source.name
            ))
        })?;
        if count != batch.row_count as usize || batch.columns.len() != projection.source_width {
            return Err(Abort::Source(format!(
                "source {} sent a batch whose shape does not match its declared columns",
                p.source.name
            )));
        }
        let mut pos = payload.len() - rest.len();
        for _ in 0..count {
            self.row_number += 1;
            pos = self.split_row(payload, pos)?;
            if !self.encode_key(payload)? {
                continue;
            }
            self.encode_row(payload)?;
            let fp = fingerprint_of_signed(&self.row_buf);
            sink.push(
                &self.key_buf,
                fp,
                &self.row_buf[projection.signature.len()..],
            )?;
        }
        Ok(count)
    }

    /// Finds the cells of the row at `pos` (into `spans`); returns where the next row starts.
    fn split_row(&mut self, payload: &[u8], mut pos: usize) -> Result<usize, Abort> {
        let (model, row_number) = (&self.p.model.name, self.row_number);
        let mut r = &payload[pos..];
        let width = read_array_len(&mut r)
            .map_err(|e| Abort::Model(format!("model {model} row {row_number}: {e}")))?;
        if width != self.projection.source_width {
            return Err(Abort::Model(format!(
                "model {model} row {row_number}: {width} values for {} columns",
                self.projection.source_width
            )));
        }
        pos = payload.len() - r.len();
        self.spans.clear();
        for _ in 0..width {
            let len = value_len(&payload[pos..])
                .map_err(|e| Abort::Model(format!("model {model} row {row_number}: {e}")))?;
            self.spans.push((pos, pos + len));
            pos += len;
        }
        Ok(pos)
    }

    /// Encodes the row's key into `key_buf`; `false` for a key with a NULL (counted, and
    /// reported once the model is read).
    fn encode_key(&mut self, payload: &[u8]) -> Result<bool, Abort> {
        let (p, row_number) = (self.p, self.row_number);
        self.key_buf.clear();
        write_row_header(&mut self.key_buf, self.projection.key_index.len() as u32);
        let mut null_key = false;
        for (n, &k) in self.projection.key_index.iter().enumerate() {
            let (a, b) = self.spans[k];
            null_key |= payload[a] == 0xc0;
            // Keys are compared as bytes: re-encode them canonically, so the same value
            // is the same key whichever MessagePack width a plugin chose.
            let mut cell = &payload[a..b];
            let v = backflow_plugin_sdk::codec::read_value(&mut cell).map_err(|e| {
                Abort::Model(format!(
                    "model {} row {row_number}: primary key: {e}",
                    p.model.name
                ))
            })?;
            if !v.is_null() {
                match self.key_types[n] {
                    None => self.key_types[n] = Some((v.type_name(), row_number)),
                    Some((seen, first)) if seen != v.type_name() => {
                        return Err(Abort::Model(format!(
                            "model {} primary key column {:?} holds {seen} values (first at row {first}) and {} values (row {row_number}): \
                             1 and \"1\" would be two different rows; declare the column's type in the source; nothing was sent",
                            p.model.name,
                            p.model.primary_key.get(n).map(String::as_str).unwrap_or("?"),
                            v.type_name()
                        )))
                    }
                    Some(_) => {}
                }
            }
            backflow_plugin_sdk::codec::write_value(&mut self.key_buf, &v)
        }
        if null_key {
            self.null_count += 1;
            if self.null_keys.len() < 5 {
                self.null_keys.push(row_number);
            }
        }
        Ok(!null_key)
    }

    /// Encodes the mapped row after the mapping signature in `row_buf`, so its fingerprint
    /// is one call over both (see `fingerprint_of_signed`).
    fn encode_row(&mut self, payload: &[u8]) -> Result<(), Abort> {
        let projection = self.projection;
        self.row_buf.truncate(projection.signature.len());
        write_row_header(&mut self.row_buf, projection.source_index.len() as u32);
        for (field, &i) in projection.source_index.iter().enumerate() {
            let (a, b) = self.spans[i];
            let cell = &payload[a..b];
            // Text must be UTF-8: caught here, naming row and column, not by a destination
            // mid-delivery after other rows were sent.
            if is_invalid_text(cell) {
                return Err(Abort::Model(format!(
                    "model {} row {}, column {:?}: the text is not valid UTF-8; nothing was sent",
                    self.p.model.name, self.row_number, projection.columns[field].name
                )));
            }
            self.row_buf.extend_from_slice(cell);
        }
        Ok(())
    }

    /// The key columns' types, or the error for rows with a NULL key.
    pub(crate) fn finish(self) -> Result<Vec<KeyType>, Abort> {
        let (p, null_count) = (self.p, self.null_count);
        if null_count > 0 {
            return Err(Abort::Model(format!(
                "model {} has {null_count} row{} with a NULL primary key ({}), e.g. rows {}; nothing was sent",
                p.model.name,
                if null_count == 1 { "" } else { "s" },
                p.model.primary_key.join(", "),
                self.null_keys.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(self.key_types)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backflow_plugin_sdk::ValueType;

    fn columns(names: &[&str]) -> Vec<Column> {
        names
            .iter()
            .map(|n| Column {
                name: n.to_string(),
                value_type: ValueType::Text,
                nullable: true,
            })
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn names(c: &[Column]) -> Vec<&str> {
        c.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn without_a_mapping_every_column_keeps_its_name() {
        let p =
            Projection::build(&strings(&["id"]), &[], &columns(&["id", "email", "plan"])).unwrap();
        assert_eq!(p.source_index, [0, 1, 2]);
        assert_eq!(p.key_index, [0]);
        assert_eq!(names(&p.columns), ["id", "email", "plan"]);
        assert_eq!(names(&p.key_columns), ["id"]);
        assert!(
            !p.key_columns[0].nullable,
            "a key field is never null (rows with a null key are refused)"
        );
        assert_eq!(p.source_width, 3);
    }

    #[test]
    fn a_mapping_picks_reorders_and_renames_columns_and_key_fields() {
        let mapping = vec![
            ("email".to_string(), "Email".to_string()),
            ("id".to_string(), "external_id".to_string()),
        ];
        let p = Projection::build(
            &strings(&["id"]),
            &mapping,
            &columns(&["id", "name", "email"]),
        )
        .unwrap();
        assert_eq!(p.source_index, [2, 0]);
        assert_eq!(names(&p.columns), ["Email", "external_id"]);
        assert_eq!(names(&p.key_columns), ["external_id"]);
        assert_eq!(p.key_index, [0]);
    }

    #[test]
    fn the_signature_changes_with_field_names_so_a_renamed_field_resends_rows() {
        let cols = columns(&["id", "email"]);
        let plain = Projection::build(&strings(&["id"]), &[], &cols).unwrap();
        let renamed = Projection::build(
            &strings(&["id"]),
            &[("id".into(), "id".into()), ("email".into(), "mail".into())],
            &cols,
        )
        .unwrap();
        assert_ne!(plain.signature, renamed.signature);
        // Field boundaries are part of it: ("ab","c") and ("a","bc") differ.
        let a = Projection::build(&[], &[], &columns(&["ab", "c"])).unwrap();
        let b = Projection::build(&[], &[], &columns(&["a", "bc"])).unwrap();
        assert_ne!(a.signature, b.signature);
    }

    #[test]
    fn large_rows_are_asked_for_a_few_at_a_time() {
        assert_eq!(
            next_request_rows(8192, 8192 * 100),
            SOURCE_BATCH_ROWS,
            "small rows: the most"
        );
        assert_eq!(
            next_request_rows(10, 10 * 8 * 1024 * 1024),
            1,
            "8 MiB rows: one at a time"
        );
        assert_eq!(next_request_rows(100, 100 * 64 * 1024), 128);
        assert_eq!(next_request_rows(0, 0), SOURCE_BATCH_ROWS);
    }

    #[test]
    fn text_cells_must_be_utf8() {
        let mut ok = Vec::new();
        backflow_plugin_sdk::codec::write_text(&mut ok, "héllo");
        assert!(!is_invalid_text(&ok));
        let bad = [0xa3, b'a', 0xff, b'b'];
        assert!(is_invalid_text(&bad));
        assert!(!is_invalid_text(&[0x01]), "an integer is not text");
        let mut bin = Vec::new();
        backflow_plugin_sdk::codec::write_value(
            &mut bin,
            &backflow_plugin_sdk::Value::Bytes(vec![0xff]),
        );
        assert!(!is_invalid_text(&bin), "bytes may be anything");
    }

    #[test]
    fn missing_columns_are_named() {
        let cols = columns(&["id", "email"]);
        assert_eq!(
            Projection::build(&strings(&["user_id"]), &[], &cols).err(),
            Some(ProjectionError::NoKeyColumn("user_id".into()))
        );
        let mapping = vec![("mail".to_string(), "Email".to_string())];
        assert_eq!(
            Projection::build(&strings(&["id"]), &mapping, &cols).err(),
            Some(ProjectionError::NoMappedColumn("mail".into()))
        );
    }
}
