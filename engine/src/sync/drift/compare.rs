//! Comparing what backflow sent (a snapshot row) with what the destination holds (a row of a
//! read-back), field by field, under the destination's field names. Pure logic, no Wasm.

pub(crate) use crate::sync::deliver::if_empty::{is_empty, records_of, Record};
use backflow_plugin_sdk::{Column, Value};

/// One field whose value at the destination is not what was sent.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FieldDrift {
    /// The destination field (after the mapping).
    pub field: String,
    /// What backflow sent last.
    pub sent: serde_json::Value,
    /// What the destination holds; `None` when the record lacks the field.
    pub found: Option<serde_json::Value>,
}

/// Whether two values are the same for drift: equal as JSON, as text (`"99.00"` sent as a
/// decimal reads back as text; an id `1` as `"1"`), or as numbers (`99` and `99.0`).
pub(crate) fn same(sent: &Value, found: &Value) -> bool {
    let (a, b) = (sent.to_json(), found.to_json());
    if a == b {
        return true;
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    if text(&a) == text(&b) {
        return true;
    }
    let number = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    matches!((number(&a), number(&b)), (Some(x), Some(y)) if x == y)
}

/// The fields of `sent` (values in `columns` order) that `found` does not hold the same;
/// fields in `skip` (the destination's value wins) are not compared.
pub(crate) fn differing_fields(
    columns: &[Column],
    sent: &[Value],
    found: &Record,
    skip: &[String],
) -> Vec<FieldDrift> {
    columns
        .iter()
        .zip(sent)
        .filter(|(c, _)| !skip.contains(&c.name))
        .filter_map(|(c, v)| match found.get(&c.name) {
            Some(f) if same(v, f) => None,
            f => Some(FieldDrift {
                field: c.name.clone(),
                sent: v.to_json(),
                found: f.map(Value::to_json),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use backflow_plugin_sdk::ValueType;

    #[test]
    fn values_compare_across_the_types_a_json_destination_reads_back() {
        assert!(same(
            &Value::Decimal("99.00".into()),
            &Value::Text("99.00".into())
        ));
        assert!(same(&Value::Int(1), &Value::Text("1".into())));
        assert!(same(&Value::Int(99), &Value::Float(99.0)));
        assert!(same(&Value::Date(0), &Value::Text("1970-01-01".into())));
        assert!(!same(&Value::Text("a".into()), &Value::Text("b".into())));
        assert!(!same(&Value::Null, &Value::Text("".into())));
    }

    #[test]
    fn differing_fields_name_each_field_and_absent_ones() {
        let columns = vec![
            Column::new("id", ValueType::Integer),
            Column::new("email", ValueType::Text),
            Column::new("plan", ValueType::Text),
            Column::new("mrr", ValueType::Decimal),
        ];
        let sent = vec![
            Value::Int(1),
            Value::Text("a@x".into()),
            Value::Text("pro".into()),
            Value::Decimal("5.00".into()),
        ];
        let found: Record = [
            ("id".to_string(), Value::Int(1)),
            ("email".to_string(), Value::Text("edited@x".into())),
            ("mrr".to_string(), Value::Text("5.00".into())),
        ]
        .into_iter()
        .collect();
        let diffs = differing_fields(&columns, &sent, &found, &[]);
        let names: Vec<&str> = diffs.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(names, vec!["email", "plan"]);
        assert_eq!(diffs[1].found, None);
        assert!(
            differing_fields(&columns, &sent, &found, &["email".into(), "plan".into()]).is_empty()
        );
    }
}
