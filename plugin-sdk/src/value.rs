//! Typed cell values and columns, the vocabulary shared by the engine and every plugin.

use std::fmt;

/// The logical type of a column (mirrors `value-type` in the WIT contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    Any,
    Boolean,
    Integer,
    Float,
    Decimal,
    Text,
    Bytes,
    Timestamp,
    Date,
    Json,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Any => "any",
            ValueType::Boolean => "boolean",
            ValueType::Integer => "integer",
            ValueType::Float => "float",
            ValueType::Decimal => "decimal",
            ValueType::Text => "text",
            ValueType::Bytes => "bytes",
            ValueType::Timestamp => "timestamp",
            ValueType::Date => "date",
            ValueType::Json => "json",
        }
    }

    /// Parses the names used in workspace files (`integer`, `int`, `bool`, `string`, ...).
    pub fn parse(name: &str) -> Option<ValueType> {
        Some(match name.to_ascii_lowercase().as_str() {
            "any" => ValueType::Any,
            "bool" | "boolean" => ValueType::Boolean,
            "int" | "integer" | "bigint" => ValueType::Integer,
            "float" | "double" | "real" => ValueType::Float,
            "decimal" | "numeric" => ValueType::Decimal,
            "text" | "string" => ValueType::Text,
            "bytes" | "binary" => ValueType::Bytes,
            "timestamp" | "datetime" => ValueType::Timestamp,
            "date" => ValueType::Date,
            "json" => ValueType::Json,
            _ => return None,
        })
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One column of a batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    pub name: String,
    pub value_type: ValueType,
    pub nullable: bool,
}

impl Column {
    pub fn new(name: impl Into<String>, value_type: ValueType) -> Column {
        Column {
            name: name.into(),
            value_type,
            nullable: true,
        }
    }
}

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Exact decimal kept as its string form; never rounded through a float.
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
    /// Days since 1970-01-01.
    Date(i32),
    /// A JSON document as text.
    Json(String),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Decimal(_) => "decimal",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Timestamp(_) => "timestamp",
            Value::Date(_) => "date",
            Value::Json(_) => "json",
        }
    }

    /// Converts to JSON the way destinations usually want it: decimals stay exact as strings,
    /// bytes become base64, timestamps ISO 8601 UTC, dates `YYYY-MM-DD`, JSON embedded.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Decimal(d) => J::String(d.clone()),
            Value::Text(t) => J::String(t.clone()),
            Value::Bytes(b) => J::String(base64_encode(b)),
            Value::Timestamp(us) => J::String(format_timestamp(*us)),
            Value::Date(d) => J::String(format_date(*d)),
            Value::Json(text) => {
                serde_json::from_str(text).unwrap_or_else(|_| J::String(text.clone()))
            }
        }
    }

    /// Converts from JSON, as read from JSON Lines files or JSON APIs.
    pub fn from_json(value: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match value {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(f) = n.as_f64().filter(|_| n.as_u64().is_none()) {
                    Value::Float(f)
                } else {
                    Value::Decimal(n.to_string())
                }
            }
            J::String(s) => Value::Text(s.clone()),
            other => Value::Json(other.to_string()),
        }
    }
}

impl fmt::Display for Value {
    /// Renders a value for humans (keys in messages, previews).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Decimal(d) => f.write_str(d),
            Value::Text(t) => f.write_str(t),
            Value::Bytes(b) => write!(
                f,
                "\\x{}",
                b.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            Value::Timestamp(us) => f.write_str(&format_timestamp(*us)),
            Value::Date(d) => f.write_str(&format_date(*d)),
            Value::Json(j) => f.write_str(j),
        }
    }
}

/// Standard base64 with padding (RFC 4648), used for bytes in JSON.
pub fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes standard base64 with padding; `None` when `text` is not that.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i32 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) as i32
}

/// The (year, month, day) of a day number from [`days_from_civil`].
pub fn civil_from_days(days: i32) -> (i32, u32, u32) {
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

pub fn format_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        format!("{y:04}-{m:02}-{d:02}")
    } else {
        format!("{y:+05}-{m:02}-{d:02}")
    }
}

/// ISO 8601 in UTC with as many fractional digits as needed (none, 3 or 6).
pub fn format_timestamp(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400) as i32;
    let tod = secs.rem_euclid(86_400);
    let (h, mi, s) = (tod / 3600, (tod % 3600) / 60, tod % 60);
    let date = format_date(days);
    if frac == 0 {
        format!("{date}T{h:02}:{mi:02}:{s:02}Z")
    } else if frac % 1000 == 0 {
        format!("{date}T{h:02}:{mi:02}:{s:02}.{:03}Z", frac / 1000)
    } else {
        format!("{date}T{h:02}:{mi:02}:{s:02}.{frac:06}Z")
    }
}

/// Appends `"` + [`format_timestamp`] + `"` without formatting machinery, for years 0 to
/// 9999 (what JSON writers meet); `false` (nothing written) for other years.
pub(crate) fn write_timestamp_quoted(out: &mut Vec<u8>, micros: i64) -> bool {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let Ok(days) = i32::try_from(days) else {
        return false;
    };
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return false;
    }
    let tod = secs.rem_euclid(86_400);
    let digits = |out: &mut Vec<u8>, n: u32, width: u32| {
        for i in (0..width).rev() {
            out.push(b'0' + (n / 10u32.pow(i) % 10) as u8);
        }
    };
    out.push(b'"');
    digits(out, y as u32, 4);
    out.push(b'-');
    digits(out, m, 2);
    out.push(b'-');
    digits(out, d, 2);
    out.push(b'T');
    digits(out, (tod / 3600) as u32, 2);
    out.push(b':');
    digits(out, ((tod % 3600) / 60) as u32, 2);
    out.push(b':');
    digits(out, (tod % 60) as u32, 2);
    if frac != 0 {
        out.push(b'.');
        if frac % 1000 == 0 {
            digits(out, (frac / 1000) as u32, 3);
        } else {
            digits(out, frac as u32, 6);
        }
    }
    out.extend_from_slice(b"Z\"");
    true
}

/// Parses `YYYY-MM-DD`, or the ISO 8601 expanded form [`format_date`] writes for years
/// outside 0..=9999 (`-0043-03-15`, `+12345-06-07`).
pub fn parse_date(text: &str) -> Option<i32> {
    let b = text.as_bytes();
    let (year, rest): (i32, &str) = if b.len() == 10 && b[4] == b'-' {
        (text[0..4].parse().ok()?, &text[4..])
    } else if matches!(b.first(), Some(b'+' | b'-')) && b.len() >= 11 && b[b.len() - 6] == b'-' {
        let digits = &text[1..text.len() - 6];
        if digits.len() < 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let magnitude: i32 = digits.parse().ok()?;
        (
            if b[0] == b'-' { -magnitude } else { magnitude },
            &text[text.len() - 6..],
        )
    } else {
        return None;
    };
    let rb = rest.as_bytes();
    if rb.len() != 6
        || rb[0] != b'-'
        || rb[3] != b'-'
        || !rb[1..3].iter().chain(&rb[4..6]).all(u8::is_ascii_digit)
    {
        return None;
    }
    let month: u32 = rest[1..3].parse().ok()?;
    let day: u32 = rest[4..6].parse().ok()?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Parses an ISO 8601 / RFC 3339 timestamp: `YYYY-MM-DD[T ]HH:MM[:SS[.ffffff]][Z|±HH[:MM]]`.
/// A timestamp without an offset is taken as UTC. Returns microseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    if text.len() < 16 || !text.is_char_boundary(10) {
        return None;
    }
    let days = parse_date(&text[..10])?;
    let rest = &text.as_bytes()[10..];
    if rest[0] != b'T' && rest[0] != b't' && rest[0] != b' ' {
        return None;
    }
    let rest = &text[11..];
    let two = |s: &str| -> Option<i64> {
        let b = s.as_bytes();
        if b.len() == 2 && b[0].is_ascii_digit() && b[1].is_ascii_digit() {
            Some(i64::from(b[0] - b'0') * 10 + i64::from(b[1] - b'0'))
        } else {
            None
        }
    };
    let hour = two(rest.get(0..2)?)?;
    if rest.as_bytes().get(2) != Some(&b':') {
        return None;
    }
    let minute = two(rest.get(3..5)?)?;
    let mut pos = 5;
    let mut second = 0;
    let mut micros = 0i64;
    if rest.as_bytes().get(pos) == Some(&b':') {
        second = two(rest.get(pos + 1..pos + 3)?)?;
        pos += 3;
        if rest.as_bytes().get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while rest.as_bytes().get(pos).is_some_and(u8::is_ascii_digit) {
                pos += 1;
            }
            let digits = &rest[start..pos];
            if digits.is_empty() {
                return None;
            }
            let mut frac = String::from(&digits[..digits.len().min(6)]);
            while frac.len() < 6 {
                frac.push('0');
            }
            micros = frac.parse().ok()?;
        }
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let offset_secs = match &rest[pos..] {
        "" | "Z" | "z" => 0,
        tz => {
            let sign = match tz.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let tz = &tz[1..];
            let (h, m) = match tz.len() {
                2 => (two(tz)?, 0),
                // `get`, not indexing: the offset may hold a multibyte character (`+€1`).
                4 => (two(tz.get(0..2)?)?, two(tz.get(2..4)?)?),
                5 if tz.as_bytes()[2] == b':' => (two(tz.get(0..2)?)?, two(tz.get(3..5)?)?),
                _ => return None,
            };
            sign * (h * 3600 + m * 60)
        }
    };
    let secs = i64::from(days) * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1_000_000 + micros)
}

/// Whether `text` is a plain decimal number (`-12.50`, `3`, `1e5` is not: exponents are floats).
pub fn is_decimal_literal(text: &str) -> bool {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    let mut parts = t.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    match frac {
        None => !int.is_empty() && digits(int),
        Some(f) => (!int.is_empty() || !f.is_empty()) && digits(int) && digits(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for (y, m, d) in [
            (1970, 1, 1),
            (1969, 12, 31),
            (2000, 2, 29),
            (1900, 3, 1),
            (2024, 12, 31),
            (1, 1, 1),
        ] {
            let days = days_from_civil(y, m, d);
            assert_eq!(civil_from_days(days), (y, m, d));
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(parse_date("2000-02-30"), None);
        assert_eq!(format_date(parse_date("1955-11-05").unwrap()), "1955-11-05");
        for expanded in ["-0043-03-15", "+12345-06-07", "-0004-02-29"] {
            assert_eq!(format_date(parse_date(expanded).unwrap()), expanded);
        }
        assert_eq!(parse_date("-43-03-15"), None);
        assert_eq!(parse_date("+2024-1-01"), None);
    }

    #[test]
    fn timestamps_parse_and_format() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("1970-01-01 00:00:01.5"), Some(1_500_000));
        assert_eq!(parse_timestamp("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_timestamp("1969-12-31T23:59:59.999999Z"), Some(-1));
        assert_eq!(format_timestamp(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            format_timestamp(1_700_000_000_123_000),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            parse_timestamp("2023-11-14T22:13"),
            Some(1_699_999_980_000_000)
        );
        assert_eq!(parse_timestamp("hello world, long"), None);
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn decimal_literals() {
        assert!(is_decimal_literal("-12.50"));
        assert!(is_decimal_literal("3"));
        assert!(!is_decimal_literal("1e5"));
        assert!(!is_decimal_literal("."));
        assert!(!is_decimal_literal("12a"));
    }
}
