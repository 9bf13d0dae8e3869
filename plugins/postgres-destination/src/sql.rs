//! The statements the writer sends, built from the table's name, the batch's columns and the
//! sync's key. Identifiers are always quoted, so any column name works and none is SQL.

/// `"name"` with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The column the stage table numbers rows with (the row's index in its batch).
pub const ROW_COLUMN: &str = "__backflow_row";

/// Where one writer writes: the qualified table, the batch's columns and the key.
pub struct Target<'a> {
    pub schema: &'a str,
    pub table: &'a str,
    pub columns: &'a [String],
    pub key: &'a [String],
}

impl Target<'_> {
    pub fn table(&self) -> String {
        format!("{}.{}", ident(self.schema), ident(self.table))
    }

    fn list(names: &[String], prefix: &str) -> String {
        names
            .iter()
            .map(|c| format!("{prefix}{}", ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn non_key(&self) -> impl Iterator<Item = &String> {
        self.columns.iter().filter(|c| !self.key.contains(c))
    }

    /// `t.k1 = s.k1 AND ...` (NULL keys never match: a key is never NULL).
    fn key_match(&self, left: &str, right: &str) -> String {
        self.key
            .iter()
            .map(|k| format!("{left}.{0} = {right}.{0}", ident(k)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The `ON CONFLICT` clause of an upsert: the key's columns, every other column updated.
    fn upsert_clause(&self) -> String {
        let sets: Vec<String> = self
            .non_key()
            .map(|c| format!("{0} = EXCLUDED.{0}", ident(c)))
            .collect();
        if sets.is_empty() {
            format!("ON CONFLICT ({}) DO NOTHING", Self::list(self.key, ""))
        } else {
            format!(
                "ON CONFLICT ({}) DO UPDATE SET {}",
                Self::list(self.key, ""),
                sets.join(", ")
            )
        }
    }

    /// A session's stage table for these columns: the target's column types, no rows, the
    /// row index added; emptied at every commit.
    pub fn create_stage(&self, stage: &str) -> String {
        format!(
            "DROP TABLE IF EXISTS pg_temp.{stage}; CREATE TEMP TABLE {stage} ON COMMIT DELETE ROWS AS SELECT {}, 0::int AS {ROW_COLUMN} FROM {} WITH NO DATA",
            Self::list(self.columns, ""),
            self.table()
        )
    }

    /// COPY straight into the table: the fast path of an insert (rows new to backflow).
    pub fn copy_into_table(&self) -> String {
        format!(
            "COPY {} ({}) FROM STDIN",
            self.table(),
            Self::list(self.columns, "")
        )
    }

    pub fn copy_into(&self, stage: &str) -> String {
        format!(
            "COPY pg_temp.{stage} ({}, {ROW_COLUMN}) FROM STDIN",
            Self::list(self.columns, "")
        )
    }

    /// From the stage into the table: an upsert (`insert`), an insert that skips rows a
    /// unique index already holds (`append`: a replayed event lands once), an update of
    /// existing rows, or a delete.
    pub fn apply_stage(&self, op: Op, stage: &str) -> String {
        let cols = Self::list(self.columns, "");
        let s_cols = Self::list(self.columns, "s.");
        let table = self.table();
        match op {
            Op::Upsert => format!(
                "INSERT INTO {table} AS t ({cols}) SELECT {s_cols} FROM pg_temp.{stage} s {}",
                self.upsert_clause()
            ),
            Op::Append => format!(
                "INSERT INTO {table} ({cols}) SELECT {s_cols} FROM pg_temp.{stage} s ON CONFLICT DO NOTHING"
            ),
            Op::Update => {
                let sets: Vec<String> = self
                    .non_key()
                    .map(|c| format!("{0} = s.{0}", ident(c)))
                    .collect();
                if sets.is_empty() {
                    // Nothing to change: an update only checks the row is there.
                    "SELECT 1 WHERE false".to_string()
                } else {
                    format!(
                        "UPDATE {table} t SET {} FROM pg_temp.{stage} s WHERE {}",
                        sets.join(", "),
                        self.key_match("t", "s")
                    )
                }
            }
            Op::Delete => format!(
                "DELETE FROM {table} t USING pg_temp.{stage} s WHERE {}",
                self.key_match("t", "s")
            ),
        }
    }

    /// The stage's rows the table does not hold (an update's rows with no record to update).
    pub fn missing_rows(&self, stage: &str) -> String {
        format!(
            "SELECT s.{ROW_COLUMN} FROM pg_temp.{stage} s WHERE NOT EXISTS (SELECT 1 FROM {} t WHERE {}) ORDER BY 1",
            self.table(),
            self.key_match("t", "s")
        )
    }

    /// One row, its values as parameters `$1..` in column order: the slow path, per row
    /// inside a savepoint, that finds which rows the database refuses.
    pub fn single_row(&self, op: Op) -> String {
        let cols = Self::list(self.columns, "");
        let params: Vec<String> = (1..=self.columns.len()).map(|i| format!("${i}")).collect();
        let param_of = |name: &String| {
            let i = self.columns.iter().position(|c| c == name).unwrap_or(0);
            format!("${}", i + 1)
        };
        let where_key = self
            .key
            .iter()
            .map(|k| format!("{} = {}", ident(k), param_of(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let table = self.table();
        match op {
            Op::Upsert => format!(
                "INSERT INTO {table} AS t ({cols}) VALUES ({}) {}",
                params.join(", "),
                self.upsert_clause()
            ),
            Op::Append => format!(
                "INSERT INTO {table} ({cols}) VALUES ({}) ON CONFLICT DO NOTHING",
                params.join(", ")
            ),
            Op::Update => {
                let sets: Vec<String> = self
                    .non_key()
                    .map(|c| format!("{} = {}", ident(c), param_of(c)))
                    .collect();
                if sets.is_empty() {
                    format!("SELECT 1 FROM {table} WHERE {where_key}")
                } else {
                    format!("UPDATE {table} SET {} WHERE {where_key}", sets.join(", "))
                }
            }
            Op::Delete => format!("DELETE FROM {table} WHERE {where_key}"),
        }
    }

    /// `CREATE TABLE IF NOT EXISTS` with these column types, the key as primary key.
    pub fn create_table(&self, types: &[&str]) -> String {
        let defs: Vec<String> = self
            .columns
            .iter()
            .zip(types)
            .map(|(c, t)| {
                let not_null = if self.key.contains(c) {
                    " NOT NULL"
                } else {
                    ""
                };
                format!("{} {t}{not_null}", ident(c))
            })
            .collect();
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))",
            self.table(),
            defs.join(", "),
            Self::list(self.key, "")
        )
    }

    /// Every column of the table for the keys in the key stage (row index first).
    pub fn read_back(&self, stage: &str) -> String {
        format!(
            "SELECT s.{ROW_COLUMN}, t.* FROM pg_temp.{stage} s JOIN {} t ON {} ORDER BY 1",
            self.table(),
            self.key_match("t", "s")
        )
    }
}

/// What a batch does to the table (the contract's operations, as SQL does them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Upsert,
    Update,
    Delete,
    Append,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(columns: &'a [String], key: &'a [String]) -> Target<'a> {
        Target {
            schema: "public",
            table: "con\"tacts",
            columns,
            key,
        }
    }

    #[test]
    fn statements_quote_every_identifier() {
        let cols = vec!["id".to_string(), "e mail".to_string()];
        let key = vec!["id".to_string()];
        let t = target(&cols, &key);
        assert_eq!(t.table(), "\"public\".\"con\"\"tacts\"");
        assert_eq!(
            t.apply_stage(Op::Upsert, "st"),
            "INSERT INTO \"public\".\"con\"\"tacts\" AS t (\"id\", \"e mail\") SELECT s.\"id\", s.\"e mail\" FROM pg_temp.st s ON CONFLICT (\"id\") DO UPDATE SET \"e mail\" = EXCLUDED.\"e mail\""
        );
        assert_eq!(
            t.single_row(Op::Update),
            "UPDATE \"public\".\"con\"\"tacts\" SET \"e mail\" = $2 WHERE \"id\" = $1"
        );
        assert_eq!(
            t.single_row(Op::Delete),
            "DELETE FROM \"public\".\"con\"\"tacts\" WHERE \"id\" = $1"
        );
    }

    #[test]
    fn a_table_of_only_key_columns_upserts_as_do_nothing() {
        let cols = vec!["a".to_string(), "b".to_string()];
        let t = target(&cols, &cols);
        assert!(t
            .apply_stage(Op::Upsert, "st")
            .ends_with("ON CONFLICT (\"a\", \"b\") DO NOTHING"));
        assert!(t
            .create_table(&["bigint", "text"])
            .ends_with("(\"a\" bigint NOT NULL, \"b\" text NOT NULL, PRIMARY KEY (\"a\", \"b\"))"));
    }
}
