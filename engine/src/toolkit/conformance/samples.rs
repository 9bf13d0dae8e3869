//! What the suite sends: a column of every value type, rows of edge values, batches of them.

use backflow_plugin_sdk::{Batch, BatchBuilder, Column, Value, ValueType};

/// Rows of the "many rows" batches: more than one page of anything, fewer than any
/// reasonable batch limit.
pub(super) const MANY_ROWS: u32 = 300;

/// One column per value type, all nullable, after an integer `id`.
pub fn sample_columns() -> Vec<Column> {
    let mut columns = vec![Column {
        name: "id".into(),
        value_type: ValueType::Integer,
        nullable: false,
    }];
    for t in [
        ValueType::Boolean,
        ValueType::Integer,
        ValueType::Float,
        ValueType::Decimal,
        ValueType::Text,
        ValueType::Bytes,
        ValueType::Timestamp,
        ValueType::Date,
        ValueType::Json,
        ValueType::Any,
    ] {
        columns.push(Column {
            name: format!("{}_value", t.as_str()),
            value_type: t,
            nullable: true,
        });
    }
    columns
}

/// Row `i` of the sample: edge values in turn (extremes, negative, empty, non-ASCII,
/// before 1970), and nulls in every seventh row. Floats stay finite: JSON has no NaN, so a
/// destination speaking JSON could not pass one on.
pub fn sample_row(i: u32) -> Vec<Value> {
    let k = i as usize;
    let pick = |n: usize| k % n;
    if i % 7 == 6 {
        let mut row = vec![Value::Int(i64::from(i))];
        row.extend(std::iter::repeat_n(Value::Null, sample_columns().len() - 1));
        return row;
    }
    let any = [
        Value::Int(42),
        Value::Text("any".into()),
        Value::Decimal("0.10".into()),
        Value::Timestamp(-1),
        Value::Bool(true),
        Value::Json("{\"nested\":[1,2]}".into()),
    ];
    vec![
        Value::Int(i64::from(i)),
        Value::Bool(i.is_multiple_of(2)),
        Value::Int([0, -1, i64::MAX, i64::MIN, 9_007_199_254_740_993][pick(5)]),
        Value::Float([1.5, -0.25, 1e300, 0.0][pick(4)]),
        Value::Decimal(["12345678901234567890.123456789", "-0.01", "0"][pick(3)].into()),
        Value::Text(["", "plain", "quote \" backslash \\ newline \n", "é 中文 🙂"][pick(4)].into()),
        Value::Bytes([vec![], vec![0, 255, 10], b"bytes".to_vec()][pick(3)].clone()),
        Value::Timestamp([0, 1_700_000_000_123_456, -86_400_000_001][pick(3)]),
        Value::Date([0, 19_723, -1][pick(3)]),
        Value::Json(["{\"a\":1}", "[true,null]", "\"text\""][pick(3)].into()),
        any[pick(any.len())].clone(),
    ]
}

/// The rows the suite sends: the built-in sample ([`SampleRows::builtin`]) or the author's
/// (`--rows`, see `rows_file.rs`). The first column is the primary key.
#[derive(Debug, Clone, Default)]
pub struct SampleRows {
    /// The columns, the primary key first.
    pub columns: Vec<Column>,
    /// The rows, one value per column.
    pub rows: Vec<Vec<Value>>,
}

impl SampleRows {
    /// The built-in sample: [`sample_columns`] and rows `0..=MANY_ROWS` of [`sample_row`].
    pub fn builtin() -> SampleRows {
        SampleRows {
            columns: sample_columns(),
            rows: (0..=MANY_ROWS).map(sample_row).collect(),
        }
    }

    /// The primary key's column name.
    pub(super) fn key(&self) -> String {
        self.columns
            .first()
            .map_or_else(|| "id".into(), |c| c.name.clone())
    }

    /// The row count of the "many rows" batches: all the rows, at most [`MANY_ROWS`].
    pub(super) fn many(&self) -> u32 {
        u32::try_from(self.rows.len())
            .unwrap_or(u32::MAX)
            .min(MANY_ROWS)
    }

    /// `count` rows from row `first` on (wrapping around), in the first `width` columns.
    pub(super) fn batch(&self, width: usize, count: u32, first: u32) -> Batch {
        let rows: Vec<u32> = (first..first + count).collect();
        self.batch_of(width, &rows)
    }

    /// Rows `rows` (wrapping around), in the first `width` columns.
    pub(super) fn batch_of(&self, width: usize, rows: &[u32]) -> Batch {
        let columns = &self.columns[..width.min(self.columns.len())];
        let mut builder = BatchBuilder::new(columns.to_vec());
        if self.rows.is_empty() {
            return builder.finish();
        }
        for &i in rows {
            let row = &self.rows[i as usize % self.rows.len()];
            builder.push_row(&row[..columns.len()]);
        }
        builder.finish()
    }
}
