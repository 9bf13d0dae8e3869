//! Counting a body's rows while parsing it, without building a JSON value: what a
//! benchmark's receiver does with every request.

/// The rows of a body, counted while parsing it: an array's elements, the array of a
/// one-key wrapper object (`{"records": [...]}`) or of an object's `rows` field, or 1 for any
/// other object. Every byte is
/// parsed; no value is kept.
pub(super) struct RowCount(pub(super) usize);

impl<'de> serde::Deserialize<'de> for RowCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RowCount, D::Error> {
        use serde::de::DeserializeSeed;
        Ok(RowCount(Count { top: true }.deserialize(d)?.0))
    }
}

/// Counts a value's rows as [`RowCount`] says; `.1`: whether it was an array. Only the
/// top level looks into objects (for a wrapper).
struct Count {
    top: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Count {
    type Value = (usize, bool);
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(usize, bool), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Count {
    type Value = (usize, bool);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<(usize, bool), A::Error> {
        let mut n = 0;
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok((n, true))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<(usize, bool), A::Error> {
        let (mut entries, mut array, mut rows) = (0, None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            entries += 1;
            if self.top {
                let (n, is_array) = map.next_value_seed(Count { top: false })?;
                array = is_array.then_some(n);
                if key == "rows" && is_array {
                    rows = Some(n);
                }
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok((
            if entries == 1 {
                array.unwrap_or(1)
            } else {
                rows.unwrap_or(1)
            },
            false,
        ))
    }
    fn visit_bool<E>(self, _: bool) -> Result<(usize, bool), E> {
        Ok((0, false))
    }
    fn visit_i64<E>(self, _: i64) -> Result<(usize, bool), E> {
        Ok((0, false))
    }
    fn visit_u64<E>(self, _: u64) -> Result<(usize, bool), E> {
        Ok((0, false))
    }
    fn visit_f64<E>(self, _: f64) -> Result<(usize, bool), E> {
        Ok((0, false))
    }
    fn visit_str<E>(self, _: &str) -> Result<(usize, bool), E> {
        Ok((0, false))
    }
    fn visit_unit<E>(self) -> Result<(usize, bool), E> {
        Ok((0, false))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_rows_as_the_full_parse_does() {
        let count = |body: &str| {
            serde_json::from_str::<super::RowCount>(body)
                .map(|c| c.0)
                .ok()
        };
        assert_eq!(count(r#"[{"a":1},{"b":[1,2]},3]"#), Some(3));
        assert_eq!(count(r#"{"records":[{"a":1},{"a":2}]}"#), Some(2));
        assert_eq!(count(r#"{"id":1,"x":[1]}"#), Some(1));
        assert_eq!(
            count(r#"{"operation":"insert","rows":[{"a":1},{"a":2}]}"#),
            Some(2)
        );
        assert_eq!(
            count(r#"{"operation":"insert","ro\u0077s":[{"a":1},{"a":2}]}"#),
            Some(2)
        );
        assert_eq!(count(r#"{"x":{"y":[1,2,3]}}"#), Some(1));
        assert_eq!(count(r#"[{"a":1},"#), None);
        assert_eq!(count(r#"["\x"]"#), None);
    }
}
