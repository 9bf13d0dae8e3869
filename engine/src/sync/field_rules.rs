//! Field-level write rules at run time (issue 36; the config is
//! [`crate::workspace::FieldRules`]): whether the destination can honour them (checked while
//! preparing a run), and which fields of a planned row are sent ([`PayloadRules`]).
//!
//! **What the snapshot keeps.** With `null = "skip"`, `write = "on_insert"` and
//! `update = "changed_fields"`, what the destination holds is the merge of every payload
//! sent over time (and of its users' own edits), not any one row. The snapshot still keeps,
//! per key, the whole mapped model row as it was when last delivered (every field, the ones
//! left out of the payload included), and its fingerprint: that is what the next run diffs
//! against, so a value is "changed" when the model's value moved since the last delivery,
//! whether or not it was sent then. Keeping the merged destination view instead would make
//! a skipped null or an on_insert field look changed at every run. Consequences, by rule:
//! - `null = "skip"`: a value that became null is recorded, not sent; the destination keeps
//!   its old value, and the field is sent again once the model has a value;
//! - `write = "on_insert"`: sent with a row added to the sync (an insert, or an undo
//!   re-inserting a deleted row), never with an update, and so never touched by an undo of
//!   an update;
//! - `update = "changed_fields"`: an update carries the key and the fields whose encoded
//!   value differs from the snapshot's; an undo of such an update (an update back, planned
//!   with the snapshot's row as `before`) so carries exactly the fields that run changed,
//!   with their previous values. A planned update equal to its snapshot entry (only a full
//!   resync plans one) carries every field: a resync re-sends all. An update whose only
//!   changes are in fields left out still goes, as the key alone, so that the snapshot
//!   records the new model row.
//!
//! Absent cells carry null in the payload (the contract's rule), and each batch says which
//! cells are present (`row-batch.present`); a destination gets absent cells only if it
//! declares `field-presence` ([`check_destination`]).

use crate::domain::Change;
use crate::host::Plugin;
use crate::workspace::{Connector, FieldRules, NullRule, SyncConfig, UpdateRule, WriteRule};
use backflow_plugin_sdk::codec::{
    raw_is_null, read_array_len, value_len, write_null, write_row_header,
};
use backflow_plugin_sdk::{Capability, Column};

/// A field rule the destination cannot honour: the rule's whole key, and why.
#[derive(Debug)]
pub(crate) struct RuleRefused {
    /// `syncs.NAME.mapping.COL.write`, `syncs.NAME.update`, ...
    pub(crate) key: String,
    /// Why the destination cannot honour it.
    pub(crate) reason: String,
}

/// Refuses rules the destination cannot honour, naming the rule's key: a rule that leaves
/// fields out needs a destination declaring `field-presence` (contract 0.3.0; an older
/// plugin would write an absent field as null), and `write = "if_empty"` one declaring
/// `read-back`. The built-in no-op destination honours everything.
pub(crate) fn check_destination(
    sync: &SyncConfig,
    destination: &Connector,
    plugin: Option<&Plugin>,
) -> Result<(), RuleRefused> {
    let Some(plugin) = plugin else {
        return Ok(());
    };
    let rules = &sync.field_rules;
    let error = |key: String, reason: String| RuleRefused { key, reason };
    let declares = |c: Capability| plugin.capabilities.contains(&c);
    if rules.leaves_fields_out() && !declares(Capability::FieldPresence) {
        let key = match rules.fields.values().find(|r| r.leaves_fields_out()) {
            Some(rule) if rules.update != UpdateRule::ChangedFields => {
                let what = if rule.null == crate::workspace::NullRule::Skip {
                    "null"
                } else {
                    "write"
                };
                sync.origin.key(&format!("mapping.{}.{what}", rule.column))
            }
            _ => sync.origin.key("update"),
        };
        return Err(error(
            key,
            format!(
                "this rule leaves fields out of what is sent, and destination {} (plugin {}, contract {}) does not declare field-presence, so it would write an absent field as null; use a destination plugin of contract 0.3.0 or later declaring field-presence, or remove the rule",
                destination.name, plugin.spec.name, plugin.contract
            ),
        ));
    }
    if let Some(rule) = rules.if_empty_fields().next() {
        if !declares(Capability::ReadBack) {
            return Err(error(
                sync.origin.key(&format!("mapping.{}.write", rule.column)),
                format!(
                    "if_empty needs to read what the destination holds, and destination {} (plugin {}, contract {}) cannot read back (it does not declare read-back)",
                    destination.name, plugin.spec.name, plugin.contract
                ),
            ));
        }
    }
    Ok(())
}

/// What a sync's field rules do to the rows of a plan, per destination field in the plan's
/// column order.
#[derive(Debug, Clone, Default)]
pub(crate) struct PayloadRules {
    /// Per field: a null is left out (`null = "skip"`).
    skip_null: Vec<bool>,
    /// Per field: sent with inserts only (`write = "on_insert"`).
    on_insert: Vec<bool>,
    /// Per field: part of the primary key (always sent).
    key: Vec<bool>,
    /// Updates carry only changed fields.
    changed_fields: bool,
    /// Some rule may leave a field out.
    active: bool,
}

impl PayloadRules {
    /// The rules for rows with `columns` (a plan's destination fields), `key_columns` being
    /// the primary key's.
    pub(crate) fn new(rules: &FieldRules, columns: &[Column], key_columns: &[Column]) -> Self {
        let mut out = PayloadRules {
            changed_fields: rules.update == UpdateRule::ChangedFields,
            active: rules.leaves_fields_out(),
            ..Default::default()
        };
        for c in columns {
            let (null, write) = rules.rule(&c.name);
            let key = key_columns.iter().any(|k| k.name == c.name);
            out.skip_null.push(null == NullRule::Skip && !key);
            out.on_insert.push(write == WriteRule::OnInsert && !key);
            out.key.push(key);
        }
        out
    }

    /// Which cells of a planned row are sent, `None` when all are. `row` is the row planned,
    /// `before` (for a change) the snapshot's row; a row that cannot be read is sent whole.
    /// (`write = "if_empty"` is decided by reading the destination back, elsewhere: here it
    /// is sent like any field.)
    pub(crate) fn present(&self, change: Change, row: &[u8], before: &[u8]) -> Option<Vec<bool>> {
        if !self.active || !matches!(change, Change::Added | Change::Changed) {
            return None;
        }
        let spans = cells(row).filter(|c| c.len() == self.key.len())?;
        let before_spans = match change {
            Change::Changed if self.changed_fields && row != before => {
                cells(before).filter(|c| c.len() == spans.len())
            }
            _ => None,
        };
        let present: Vec<bool> = (0..spans.len())
            .map(|i| {
                if self.key[i] {
                    return true;
                }
                let cell = &row[spans[i].0..spans[i].1];
                let skipped_null = self.skip_null[i] && raw_is_null(cell);
                let insert_only = self.on_insert[i] && change == Change::Changed;
                let unchanged = before_spans
                    .as_ref()
                    .is_some_and(|b| &before[b[i].0..b[i].1] == cell);
                !(skipped_null || insert_only || unchanged)
            })
            .collect();
        (!present.iter().all(|p| *p)).then_some(present)
    }

    /// The row to send given which cells are present: absent cells hold null.
    pub(crate) fn payload(row: &[u8], present: &[bool]) -> Vec<u8> {
        let Some(spans) = cells(row).filter(|c| c.len() == present.len()) else {
            return row.to_vec();
        };
        let mut out = Vec::with_capacity(row.len());
        write_row_header(&mut out, spans.len() as u32);
        for ((a, b), present) in spans.into_iter().zip(present) {
            if *present {
                out.extend_from_slice(&row[a..b]);
            } else {
                write_null(&mut out);
            }
        }
        out
    }
}

/// The byte spans of an encoded row's cells; `None` if it cannot be read.
fn cells(row: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut rest = row;
    let n = read_array_len(&mut rest).ok()?;
    let mut pos = row.len() - rest.len();
    let mut spans = Vec::with_capacity(n.min(row.len()));
    for _ in 0..n {
        let len = value_len(row.get(pos..)?).ok()?;
        spans.push((pos, pos + len));
        pos += len;
    }
    Some(spans)
}

/// The `row-batch.present` bitmap of rows of `width` cells (row-major, least significant bit
/// first; `None` for a row present whole); `None` when every cell is present.
pub(crate) fn present_bitmap(rows: &[Option<&[bool]>], width: usize) -> Option<Vec<u8>> {
    if rows.iter().all(Option::is_none) {
        return None;
    }
    let mut bits = vec![0u8; (rows.len() * width).div_ceil(8)];
    for (r, row) in rows.iter().enumerate() {
        for c in 0..width {
            if row.is_none_or(|p| p.get(c).copied().unwrap_or(true)) {
                let bit = r * width + c;
                bits[bit / 8] |= 1 << (bit % 8);
            }
        }
    }
    Some(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::FieldRule;
    use backflow_plugin_sdk::codec::write_value;
    use backflow_plugin_sdk::{Value, ValueType};

    fn columns(names: &[&str]) -> Vec<Column> {
        names
            .iter()
            .map(|n| Column {
                name: n.to_string(),
                value_type: ValueType::Any,
                nullable: true,
            })
            .collect()
    }

    fn row(values: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        write_row_header(&mut out, values.len() as u32);
        for v in values {
            write_value(&mut out, v);
        }
        out
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn rules(entries: &[(&str, NullRule, WriteRule)], update: UpdateRule) -> PayloadRules {
        let fields = entries
            .iter()
            .map(|(name, null, write)| {
                let rule = FieldRule {
                    column: name.to_string(),
                    to: name.to_string(),
                    null: *null,
                    write: *write,
                };
                (name.to_string(), rule)
            })
            .collect();
        let rules = FieldRules { fields, update };
        PayloadRules::new(
            &rules,
            &columns(&["id", "email", "source"]),
            &columns(&["id"]),
        )
    }

    #[test]
    fn null_skip_leaves_nulls_out_of_inserts_and_updates() {
        let r = rules(
            &[("email", NullRule::Skip, WriteRule::Always)],
            UpdateRule::AllFields,
        );
        let with_null = row(&[Value::Int(1), Value::Null, text("ads")]);
        assert_eq!(
            r.present(Change::Added, &with_null, &[]),
            Some(vec![true, false, true])
        );
        let before = row(&[Value::Int(1), text("a@x"), text("ads")]);
        assert_eq!(
            r.present(Change::Changed, &with_null, &before),
            Some(vec![true, false, true])
        );
        let full = row(&[Value::Int(1), text("b@x"), Value::Null]);
        assert_eq!(
            r.present(Change::Added, &full, &[]),
            None,
            "other nulls are sent"
        );
        assert_eq!(r.present(Change::Removed, &with_null, &[]), None);
    }

    #[test]
    fn on_insert_fields_go_with_inserts_only() {
        let r = rules(
            &[("source", NullRule::Send, WriteRule::OnInsert)],
            UpdateRule::AllFields,
        );
        let new = row(&[Value::Int(1), text("a@x"), text("ads")]);
        assert_eq!(r.present(Change::Added, &new, &[]), None);
        let changed = row(&[Value::Int(1), text("b@x"), text("ads")]);
        assert_eq!(
            r.present(Change::Changed, &changed, &new),
            Some(vec![true, true, false])
        );
    }

    #[test]
    fn changed_fields_updates_carry_the_key_and_what_changed() {
        let r = rules(&[], UpdateRule::ChangedFields);
        let before = row(&[Value::Int(1), text("a@x"), text("ads")]);
        let after = row(&[Value::Int(1), text("b@x"), text("ads")]);
        assert_eq!(
            r.present(Change::Changed, &after, &before),
            Some(vec![true, true, false])
        );
        assert_eq!(
            r.present(Change::Added, &after, &[]),
            None,
            "an insert carries every field"
        );
        assert_eq!(
            r.present(Change::Changed, &after, &after),
            None,
            "an unchanged row planned as changed (a full resync) is re-sent whole"
        );
        // An undo's update back: row = the values before, before = what the run sent.
        assert_eq!(
            r.present(Change::Changed, &before, &after),
            Some(vec![true, true, false])
        );
        let other_shape = row(&[Value::Int(1), text("a@x")]);
        assert_eq!(
            r.present(Change::Changed, &after, &other_shape),
            None,
            "a row delivered under another mapping: every field"
        );
    }

    #[test]
    fn the_payload_holds_null_in_absent_cells_and_the_bitmap_says_which() {
        let full = row(&[Value::Int(1), text("a@x"), text("ads")]);
        let sent = PayloadRules::payload(&full, &[true, false, true]);
        assert_eq!(sent, row(&[Value::Int(1), Value::Null, text("ads")]));
        let second = [true, true, false];
        // Row 0 all present (bits 0-2), row 1 without its third cell (bits 3, 4), row 2
        // without its second (bits 6, 8).
        let bits = present_bitmap(&[None, Some(&second), Some(&[true, false, true])], 3).unwrap();
        assert_eq!(bits, vec![0b0101_1111, 0b0000_0001]);
        for (row, col, want) in [(0, 2, true), (1, 2, false), (2, 1, false), (2, 2, true)] {
            assert_eq!(
                backflow_plugin_sdk::warehouse::present_bit(&bits, 3, row, col),
                want
            );
        }
        assert_eq!(present_bitmap(&[None, None], 3), None);
    }
}
