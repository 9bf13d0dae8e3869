//! PostgreSQL types to backflow values. Results arrive in the text format (the session is
//! set to UTF-8, ISO dates, UTC and hex bytea), and each cell is encoded straight into the
//! batch's MessagePack without building a `Value` first.

use backflow_plugin_sdk::codec;
use backflow_plugin_sdk::value::{
    base64_encode, days_from_civil, format_date, format_timestamp, parse_date, parse_timestamp,
};
use backflow_plugin_sdk::ValueType;

/// How a column's text is read. Arrays of any of these become JSON arrays.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Bool,
    Int,
    Float,
    Numeric,
    Text,
    Date,
    Timestamp,
    Json,
    Bytea,
    Array(Scalar),
}

/// The element kinds an array may hold (everything but arrays: nested dimensions are
/// part of the array's text, not a separate type).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    Bool,
    Int,
    Float,
    Numeric,
    Text,
    Date,
    Timestamp,
    Json,
    Bytea,
}

/// The kind for a type OID (from `pg_type`). Unknown types are read as text, never dropped.
pub fn kind_for_oid(oid: u32) -> Kind {
    match oid {
        16 => Kind::Bool,
        20 | 21 | 23 | 26 => Kind::Int,
        700 | 701 => Kind::Float,
        1700 => Kind::Numeric,
        1082 => Kind::Date,
        1114 | 1184 => Kind::Timestamp,
        114 | 3802 => Kind::Json,
        17 => Kind::Bytea,
        1000 => Kind::Array(Scalar::Bool),
        1005 | 1007 | 1016 | 1028 => Kind::Array(Scalar::Int),
        1021 | 1022 => Kind::Array(Scalar::Float),
        1231 => Kind::Array(Scalar::Numeric),
        1009 | 1015 | 1014 | 1003 | 2951 => Kind::Array(Scalar::Text),
        1182 => Kind::Array(Scalar::Date),
        1115 | 1185 => Kind::Array(Scalar::Timestamp),
        199 | 3807 => Kind::Array(Scalar::Json),
        1001 => Kind::Array(Scalar::Bytea),
        // text, varchar, bpchar, name, "char", uuid, and everything else
        _ => Kind::Text,
    }
}

impl Kind {
    pub fn value_type(self) -> ValueType {
        match self {
            Kind::Bool => ValueType::Boolean,
            Kind::Int => ValueType::Integer,
            Kind::Float => ValueType::Float,
            Kind::Numeric => ValueType::Decimal,
            Kind::Text => ValueType::Text,
            Kind::Date => ValueType::Date,
            Kind::Timestamp => ValueType::Timestamp,
            Kind::Json => ValueType::Json,
            Kind::Bytea => ValueType::Bytes,
            Kind::Array(_) => ValueType::Json,
        }
    }
}

/// Encodes one non-NULL cell given as the server's text; `Err` says what was wrong with it.
pub fn write_cell(
    buf: &mut Vec<u8>,
    kind: Kind,
    text: &[u8],
    scratch: &mut String,
) -> Result<(), String> {
    match kind {
        Kind::Text => {
            // The session's client_encoding is UTF8: the server guarantees valid UTF-8.
            codec::write_text_header(buf, text.len() as u32);
            buf.extend_from_slice(text);
        }
        Kind::Int => codec::write_int(
            buf,
            parse_int(text).ok_or_else(|| format!("{:?} is not an integer", lossy(text)))?,
        ),
        Kind::Bool => codec::write_bool(buf, parse_bool(text)?),
        Kind::Float => codec::write_float(buf, parse_float(text)?),
        Kind::Numeric => codec::write_decimal(buf, utf8(text)?),
        Kind::Date => {
            let text = utf8(text)?;
            // A plain YYYY-MM-DD is already the encoding's text: check it, copy it.
            if parse_date(text).is_some() && text.len() == 10 {
                codec::write_date_text(buf, text);
            } else {
                codec::write_value(buf, &backflow_plugin_sdk::Value::Date(parse_pg_date(text)?));
            }
        }
        Kind::Timestamp => codec::write_value(
            buf,
            &backflow_plugin_sdk::Value::Timestamp(parse_pg_timestamp(utf8(text)?)?),
        ),
        Kind::Json => codec::write_json(buf, utf8(text)?),
        Kind::Bytea => {
            let bytes = parse_bytea(text)?;
            codec::write_bytes(buf, &bytes);
        }
        Kind::Array(element) => {
            scratch.clear();
            parse_array(utf8(text)?, element, scratch)?;
            codec::write_json(buf, scratch);
        }
    }
    Ok(())
}

/// A column read in PostgreSQL's binary format. For these types the binary form is cheaper
/// for the server to produce (no timestamp or numeric formatting: most of a text result's
/// cost on the server) and for the plugin to read (no parsing). Each decodes to exactly the
/// value its text form gives, so a sync's fingerprints do not depend on the format. Every
/// other type stays text: `float4` too, whose text (its shortest decimal) and binary form
/// (the f32 itself) widen to different f64 values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Binary {
    Bool,
    Int2,
    Int4,
    Int8,
    Float8,
    Numeric,
    Date,
    Timestamp,
    Bytea,
}

/// How a column's values come (the format asked for in the Bind) and are read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Format {
    Text(Kind),
    Binary(Binary),
}

/// The binary reading of a type OID, if it has one here.
pub fn binary_for_oid(oid: u32) -> Option<Binary> {
    Some(match oid {
        16 => Binary::Bool,
        21 => Binary::Int2,
        23 => Binary::Int4,
        20 => Binary::Int8,
        701 => Binary::Float8,
        1700 => Binary::Numeric,
        1082 => Binary::Date,
        1114 | 1184 => Binary::Timestamp,
        17 => Binary::Bytea,
        _ => return None,
    })
}

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS as i64 * 86_400_000_000;

/// Encodes one non-NULL cell given in the binary format; `Err` says what was wrong with it.
pub fn write_binary_cell(
    buf: &mut Vec<u8>,
    kind: Binary,
    data: &[u8],
    scratch: &mut String,
) -> Result<(), String> {
    match kind {
        Binary::Bool => codec::write_bool(buf, fixed::<1>(data)?[0] != 0),
        Binary::Int2 => codec::write_int(buf, i64::from(i16::from_be_bytes(fixed(data)?))),
        Binary::Int4 => codec::write_int(buf, i64::from(i32::from_be_bytes(fixed(data)?))),
        Binary::Int8 => codec::write_int(buf, i64::from_be_bytes(fixed(data)?)),
        Binary::Float8 => codec::write_float(buf, f64::from_be_bytes(fixed(data)?)),
        Binary::Numeric => {
            scratch.clear();
            numeric_text(data, scratch)?;
            codec::write_decimal(buf, scratch);
        }
        Binary::Date => {
            let days = i32::from_be_bytes(fixed(data)?);
            match days {
                i32::MAX => return Err(format!("date \"infinity\" {NOT_REPRESENTABLE}")),
                i32::MIN => return Err(format!("date \"-infinity\" {NOT_REPRESENTABLE}")),
                _ => {}
            }
            let days = days
                .checked_add(PG_EPOCH_DAYS)
                .ok_or_else(|| format!("date {days} days from 2000-01-01 is out of range"))?;
            codec::write_value(buf, &backflow_plugin_sdk::Value::Date(days));
        }
        Binary::Timestamp => {
            let micros = i64::from_be_bytes(fixed(data)?);
            match micros {
                i64::MAX => return Err(format!("timestamp \"infinity\" {NOT_REPRESENTABLE}")),
                i64::MIN => return Err(format!("timestamp \"-infinity\" {NOT_REPRESENTABLE}")),
                _ => {}
            }
            let micros = micros
                .checked_add(PG_EPOCH_MICROS)
                .ok_or_else(|| format!("timestamp {micros} µs from 2000-01-01 is out of range"))?;
            codec::write_value(buf, &backflow_plugin_sdk::Value::Timestamp(micros));
        }
        Binary::Bytea => {
            codec::write_bytes(buf, data);
        }
    }
    Ok(())
}

/// A fixed-size binary value: exactly `N` bytes, or an error saying how many came.
fn fixed<const N: usize>(data: &[u8]) -> Result<[u8; N], String> {
    data.try_into()
        .map_err(|_| format!("{} bytes where the binary format has {N}", data.len()))
}

/// A `numeric` in the binary format (digit count, weight of the first base-10000 digit,
/// sign, display scale, then the digits) written as PostgreSQL's text output writes it:
/// the integer part without leading zeros (`0` when there is none), then exactly `dscale`
/// decimals; `NaN`, `Infinity` and `-Infinity` as words.
pub fn numeric_text(data: &[u8], out: &mut String) -> Result<(), String> {
    let malformed = || "malformed binary numeric".to_string();
    let header = data.get(..8).ok_or_else(malformed)?;
    let ndigits = i16::from_be_bytes([header[0], header[1]]);
    let weight = i32::from(i16::from_be_bytes([header[2], header[3]]));
    let sign = u16::from_be_bytes([header[4], header[5]]);
    let dscale = u16::from_be_bytes([header[6], header[7]]);
    if ndigits < 0 || data.len() != 8 + 2 * ndigits as usize {
        return Err(malformed());
    }
    match sign {
        0x0000 => {}
        0x4000 => out.push('-'),
        0xC000 | 0xD000 | 0xF000 => {
            out.push_str(match sign {
                0xC000 => "NaN",
                0xD000 => "Infinity",
                _ => "-Infinity",
            });
            return Ok(());
        }
        _ => return Err(format!("binary numeric with an unknown sign {sign:#06x}")),
    }
    let digits = &data[8..];
    // The base-10000 digit at index `i` (weight `weight - i`); zero past either end.
    let digit = |i: i32| -> Result<u16, String> {
        if i < 0 || i >= i32::from(ndigits) {
            return Ok(0);
        }
        let at = 2 * i as usize;
        let d = u16::from_be_bytes([digits[at], digits[at + 1]]);
        if d > 9999 {
            return Err(format!("binary numeric digit {d} is over 9999"));
        }
        Ok(d)
    };
    // A base-10000 digit's four decimal digits: the first `take`, or the last `take`.
    let decimals =
        |d: u16| [d / 1000, d / 100 % 10, d / 10 % 10, d % 10].map(|x| char::from(b'0' + x as u8));
    let push4 = |out: &mut String, d: u16, take: u16| out.extend(&decimals(d)[..take as usize]);
    let push_last =
        |out: &mut String, d: u16, take: u16| out.extend(&decimals(d)[4 - take as usize..]);
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            let d = digit(i)?;
            if i == 0 {
                // The first group without its leading zeros (PostgreSQL keeps at least one).
                let significant = match d {
                    1000.. => 4,
                    100.. => 3,
                    10.. => 2,
                    _ => 1,
                };
                push_last(out, d, significant);
            } else {
                push4(out, d, 4);
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut left = dscale;
        let mut i = weight + 1;
        while left > 0 {
            let take = left.min(4);
            push4(out, digit(i)?, take);
            left -= take;
            i += 1;
        }
    }
    Ok(())
}

fn lossy(text: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(text)
}

fn utf8(text: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(text).map_err(|_| "not valid UTF-8".to_string())
}

fn parse_int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.first()? {
        b'-' => (true, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative {
        Some(n)
    } else {
        n.checked_neg()
    }
}

fn parse_bool(text: &[u8]) -> Result<bool, String> {
    match text {
        b"t" => Ok(true),
        b"f" => Ok(false),
        other => Err(format!("{:?} is not a boolean", lossy(other))),
    }
}

fn parse_float(text: &[u8]) -> Result<f64, String> {
    // Rust accepts "NaN", "Infinity" and "-Infinity" as PostgreSQL prints them.
    utf8(text)?
        .parse::<f64>()
        .map_err(|_| format!("{:?} is not a number", lossy(text)))
}

fn parse_bytea(text: &[u8]) -> Result<Vec<u8>, String> {
    let hex = text
        .strip_prefix(b"\\x")
        .ok_or_else(|| "bytea is not in hex format".to_string())?;
    if hex.len() % 2 != 0 {
        return Err("bytea hex has an odd number of digits".into());
    }
    let nibble = |c: u8| -> Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err("bytea hex has a non-hex digit".into()),
        }
    };
    hex.chunks(2)
        .map(|pair| Ok(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

const NOT_REPRESENTABLE: &str = "cannot be represented (backflow dates and timestamps are finite); map it in the query, e.g. NULLIF(column, 'infinity')";

/// Splits a date or timestamp's text into its astronomical year and the text after the year,
/// handling years past 9999 and ` BC` (1 BC is year 0).
fn split_year(text: &str) -> Result<(i64, &str), String> {
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text, false),
    };
    let dash = body
        .find('-')
        .filter(|&i| i >= 4)
        .ok_or_else(|| format!("{text:?} is not an ISO date"))?;
    let year: i64 = body[..dash]
        .parse()
        .map_err(|_| format!("{text:?} is not an ISO date"))?;
    Ok((if bc { 1 - year } else { year }, &body[dash..]))
}

/// Parses a date the way a session with DateStyle ISO prints it: `YYYY-MM-DD`, with ` BC`
/// and years beyond 9999.
pub fn parse_pg_date(text: &str) -> Result<i32, String> {
    if let Some(days) = parse_date(text) {
        return Ok(days);
    }
    if text == "infinity" || text == "-infinity" {
        return Err(format!("date {text:?} {NOT_REPRESENTABLE}"));
    }
    let (year, rest) = split_year(text)?;
    let (proxy, shift) = proxy_year(year);
    let days =
        parse_date(&format!("{proxy}{rest}")).ok_or_else(|| format!("{text:?} is not a date"))?;
    Ok(days + shift)
}

/// Parses `timestamp` and `timestamptz` (the session's TimeZone is UTC) into microseconds.
pub fn parse_pg_timestamp(text: &str) -> Result<i64, String> {
    if !text.ends_with(" BC") {
        if let Some(micros) = parse_timestamp(text) {
            return Ok(micros);
        }
    }
    if text == "infinity" || text == "-infinity" {
        return Err(format!("timestamp {text:?} {NOT_REPRESENTABLE}"));
    }
    let (year, rest) = split_year(text)?;
    let (proxy, shift) = proxy_year(year);
    let micros = parse_timestamp(&format!("{proxy}{rest}"))
        .ok_or_else(|| format!("{text:?} is not a timestamp"))?;
    Ok(micros + i64::from(shift) * 86_400_000_000)
}

/// A four-digit year with the same place in the 400-year Gregorian cycle as `year` (so the
/// same leap days), and the days to add to a date in it to get back to `year`.
fn proxy_year(year: i64) -> (i32, i32) {
    let proxy = 2000 + year.rem_euclid(400) as i32;
    let shift = days_from_civil(year as i32, 1, 1) - days_from_civil(proxy, 1, 1);
    (proxy, shift)
}

/// Converts an array's text form (`{1,2,NULL}`, `{{1,2},{3,4}}`, `[0:1]={a,b}`, `{}`) into a
/// JSON array, each element typed by `element`.
pub fn parse_array(text: &str, element: Scalar, out: &mut String) -> Result<(), String> {
    // Arrays with lower bounds other than 1 print their dimensions first.
    let body = match text.find("={") {
        Some(i) if text.starts_with('[') => &text[i + 1..],
        _ => text,
    };
    let bytes = body.as_bytes();
    let mut pos = 0;
    parse_dimension(body, bytes, &mut pos, element, out)?;
    if pos != bytes.len() {
        return Err(format!(
            "unexpected text after the array: {:?}",
            &body[pos..]
        ));
    }
    Ok(())
}

fn parse_dimension(
    text: &str,
    bytes: &[u8],
    pos: &mut usize,
    element: Scalar,
    out: &mut String,
) -> Result<(), String> {
    if bytes.get(*pos) != Some(&b'{') {
        return Err("an array must start with '{'".into());
    }
    *pos += 1;
    out.push('[');
    if bytes.get(*pos) == Some(&b'}') {
        *pos += 1;
        out.push(']');
        return Ok(());
    }
    let mut first = true;
    loop {
        if !first {
            out.push(',');
        }
        first = false;
        match bytes.get(*pos) {
            Some(b'{') => parse_dimension(text, bytes, pos, element, out)?,
            Some(b'"') => {
                *pos += 1;
                let mut value = String::new();
                loop {
                    match bytes.get(*pos) {
                        Some(b'\\') => {
                            let c = text[*pos + 1..]
                                .chars()
                                .next()
                                .ok_or("unterminated escape in array")?;
                            value.push(c);
                            *pos += 1 + c.len_utf8();
                        }
                        Some(b'"') => {
                            *pos += 1;
                            break;
                        }
                        Some(_) => {
                            let c = text[*pos..].chars().next().expect("in bounds");
                            value.push(c);
                            *pos += c.len_utf8();
                        }
                        None => return Err("unterminated quoted array element".into()),
                    }
                }
                write_element(&value, element, out)?;
            }
            Some(_) => {
                let start = *pos;
                while !matches!(bytes.get(*pos), Some(b',') | Some(b'}') | None) {
                    *pos += 1;
                }
                let raw = &text[start..*pos];
                if raw.eq_ignore_ascii_case("NULL") {
                    out.push_str("null");
                } else {
                    write_element(raw, element, out)?;
                }
            }
            None => return Err("unterminated array".into()),
        }
        match bytes.get(*pos) {
            Some(b',') => *pos += 1,
            Some(b'}') => {
                *pos += 1;
                out.push(']');
                return Ok(());
            }
            _ => return Err("unterminated array".into()),
        }
    }
}

fn write_element(raw: &str, element: Scalar, out: &mut String) -> Result<(), String> {
    let push_str = |out: &mut String, s: &str| {
        out.push_str(&serde_json::to_string(s).expect("strings serialize"))
    };
    match element {
        Scalar::Bool => out.push_str(if parse_bool(raw.as_bytes())? {
            "true"
        } else {
            "false"
        }),
        Scalar::Int => out.push_str(
            &parse_int(raw.as_bytes())
                .ok_or_else(|| format!("{raw:?} is not an integer"))?
                .to_string(),
        ),
        Scalar::Float => {
            let f = parse_float(raw.as_bytes())?;
            match serde_json::Number::from_f64(f) {
                Some(n) => out.push_str(&n.to_string()),
                // NaN and infinities have no JSON number; keep PostgreSQL's spelling.
                None => push_str(out, raw),
            }
        }
        // Exact: a string, never a float that would round 30 digits.
        Scalar::Numeric | Scalar::Text => push_str(out, raw),
        Scalar::Date => push_str(out, &format_date(parse_pg_date(raw)?)),
        Scalar::Timestamp => push_str(out, &format_timestamp(parse_pg_timestamp(raw)?)),
        Scalar::Json => out.push_str(raw),
        Scalar::Bytea => push_str(out, &base64_encode(&parse_bytea(raw.as_bytes())?)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(text: &str, element: Scalar) -> String {
        let mut out = String::new();
        parse_array(text, element, &mut out).unwrap();
        out
    }

    #[test]
    fn arrays() {
        assert_eq!(array("{}", Scalar::Int), "[]");
        assert_eq!(array("{1,NULL,-3}", Scalar::Int), "[1,null,-3]");
        assert_eq!(array("{{1,2},{3,4}}", Scalar::Int), "[[1,2],[3,4]]");
        assert_eq!(array("[0:1]={7,8}", Scalar::Int), "[7,8]");
        assert_eq!(
            array(r#"{"a b","c\"d",NULL,"NULL",é}"#, Scalar::Text),
            r#"["a b","c\"d",null,"NULL","é"]"#
        );
        assert_eq!(array("{t,f}", Scalar::Bool), "[true,false]");
        assert_eq!(array("{1.5,NaN}", Scalar::Float), r#"[1.5,"NaN"]"#);
        assert_eq!(
            array("{123456789012345678901234567890.5}", Scalar::Numeric),
            r#"["123456789012345678901234567890.5"]"#
        );
        assert_eq!(array(r#"{"{\"a\": 1}"}"#, Scalar::Json), r#"[{"a": 1}]"#);
        assert_eq!(
            array(r#"{"1969-12-31 23:59:59+00"}"#, Scalar::Timestamp),
            r#"["1969-12-31T23:59:59Z"]"#
        );
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(parse_pg_date("1970-01-02").unwrap(), 1);
        assert_eq!(
            format_date(parse_pg_date("0044-03-15 BC").unwrap()),
            "-0043-03-15"
        );
        assert_eq!(
            format_date(parse_pg_date("12345-06-07").unwrap()),
            "+12345-06-07"
        );
        assert_eq!(
            parse_pg_timestamp("1969-12-31 23:59:59.5+00").unwrap(),
            -500_000
        );
        assert_eq!(
            parse_pg_timestamp("0001-01-01 00:00:00+00 BC").unwrap(),
            i64::from(days_from_civil(0, 1, 1)) * 86_400_000_000
        );
        assert!(parse_pg_timestamp("infinity")
            .unwrap_err()
            .contains("infinity"));
    }

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> String {
        let mut data = Vec::new();
        for part in [
            ndigits.to_be_bytes(),
            weight.to_be_bytes(),
            sign.to_be_bytes(),
            dscale.to_be_bytes(),
        ] {
            data.extend_from_slice(&part);
        }
        for d in digits {
            data.extend_from_slice(&d.to_be_bytes());
        }
        let mut out = String::new();
        numeric_text(&data, &mut out).unwrap();
        out
    }

    /// What `numeric_send` gives for these values (read off PostgreSQL 15), written as
    /// `numeric_out` writes them.
    #[test]
    fn binary_numerics_read_as_their_text() {
        assert_eq!(numeric(0, 0, 0, 0, &[]), "0");
        assert_eq!(numeric(0, 0, 0, 2, &[]), "0.00");
        assert_eq!(numeric(2, 0, 0, 2, &[42, 5000]), "42.50");
        assert_eq!(numeric(2, 0, 0x4000, 2, &[12, 3400]), "-12.34");
        assert_eq!(numeric(1, 1, 0, 0, &[1]), "10000");
        assert_eq!(numeric(2, 1, 0, 1, &[1, 5]), "10005.0");
        assert_eq!(numeric(1, -2, 0, 5, &[1000]), "0.00001");
        assert_eq!(numeric(1, -1, 0, 3, &[1230]), "0.123");
        assert_eq!(numeric(3, 2, 0, 0, &[1, 2, 3]), "100020003");
        assert_eq!(
            numeric(8, 7, 0, 1, &[12, 3456, 7890, 1234, 5678, 9012, 3456, 7890]),
            "123456789012345678901234567890.0"
        );
        // The first group has one to four digits of its own, never a leading zero.
        for (group, text) in [
            (7, "7"),
            (10, "10"),
            (99, "99"),
            (100, "100"),
            (999, "999"),
            (1000, "1000"),
            (9999, "9999"),
        ] {
            assert_eq!(numeric(1, 0, 0, 0, &[group]), text);
            assert_eq!(
                numeric(2, 1, 0x4000, 0, &[group, 1]),
                format!("-{text}0001")
            );
        }
        assert_eq!(numeric(2, 1, 0, 2, &[123, 4500]), "1234500.00");
        assert_eq!(numeric(0, 0, 0xC000, 0, &[]), "NaN");
        assert_eq!(numeric(0, 0, 0xF000, 0, &[]), "-Infinity");
        assert!(
            numeric_text(&[0, 1, 0, 0, 0, 0, 0, 0], &mut String::new()).is_err(),
            "a digit missing"
        );
        assert!(
            numeric_text(&[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10], &mut String::new())
                .unwrap_err()
                .contains("10000")
        );
    }

    #[test]
    fn binary_dates_and_timestamps() {
        let cell = |kind: Binary, data: &[u8]| {
            let mut buf = Vec::new();
            write_binary_cell(&mut buf, kind, data, &mut String::new()).map(|_| buf)
        };
        let text = |kind: Kind, text: &str| {
            let mut buf = Vec::new();
            write_cell(&mut buf, kind, text.as_bytes(), &mut String::new()).unwrap();
            buf
        };
        assert_eq!(
            cell(Binary::Date, &0i32.to_be_bytes()).unwrap(),
            text(Kind::Date, "2000-01-01")
        );
        assert_eq!(
            cell(Binary::Date, &(-10_958i32).to_be_bytes()).unwrap(),
            text(Kind::Date, "1969-12-31")
        );
        assert_eq!(
            cell(Binary::Date, &(-730_119i32).to_be_bytes()).unwrap(),
            text(Kind::Date, "0001-01-01")
        );
        assert_eq!(
            cell(Binary::Date, &(-730_120i32).to_be_bytes()).unwrap(),
            text(Kind::Date, "0001-12-31 BC")
        );
        assert!(cell(Binary::Date, &i32::MAX.to_be_bytes())
            .unwrap_err()
            .contains("infinity"));
        assert_eq!(
            cell(Binary::Timestamp, &1_500_000i64.to_be_bytes()).unwrap(),
            text(Kind::Timestamp, "2000-01-01 00:00:01.5+00")
        );
        assert!(cell(Binary::Timestamp, &i64::MIN.to_be_bytes())
            .unwrap_err()
            .contains("-infinity"));
        assert_eq!(
            cell(Binary::Int2, &(-2i16).to_be_bytes()).unwrap(),
            text(Kind::Int, "-2")
        );
        assert_eq!(
            cell(Binary::Float8, &0.1f64.to_be_bytes()).unwrap(),
            text(Kind::Float, "0.1")
        );
        assert_eq!(
            cell(Binary::Bytea, &[0, 255]).unwrap(),
            text(Kind::Bytea, "\\x00ff")
        );
        assert!(cell(Binary::Int8, &[1, 2, 3])
            .unwrap_err()
            .contains("3 bytes"));
    }

    #[test]
    fn scalars() {
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert_eq!(parse_bytea(b"\\x00ff").unwrap(), vec![0, 255]);
        assert!(parse_float(b"-Infinity").unwrap().is_infinite());
    }
}

/// Fuzzing by property (issue 16): whatever text the server sends for a column, converting
/// it never panics; it becomes a value or an error naming the problem.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const SCALARS: [Scalar; 9] = [
        Scalar::Bool,
        Scalar::Int,
        Scalar::Float,
        Scalar::Numeric,
        Scalar::Text,
        Scalar::Date,
        Scalar::Timestamp,
        Scalar::Json,
        Scalar::Bytea,
    ];

    fn every_kind() -> Vec<Kind> {
        let mut kinds = vec![
            Kind::Bool,
            Kind::Int,
            Kind::Float,
            Kind::Numeric,
            Kind::Text,
            Kind::Date,
            Kind::Timestamp,
            Kind::Json,
            Kind::Bytea,
        ];
        kinds.extend(SCALARS.iter().map(|s| Kind::Array(*s)));
        kinds
    }

    fn convert_all(bytes: &[u8]) {
        let mut buf = Vec::new();
        let mut scratch = String::new();
        for kind in every_kind() {
            buf.clear();
            let _ = write_cell(&mut buf, kind, bytes, &mut scratch);
        }
    }

    proptest! {
        #[test]
        fn any_bytes_in_any_binary_column(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            for kind in [Binary::Bool, Binary::Int2, Binary::Int4, Binary::Int8, Binary::Float8, Binary::Numeric, Binary::Date, Binary::Timestamp, Binary::Bytea] {
                let _ = write_binary_cell(&mut Vec::new(), kind, &bytes, &mut String::new());
            }
        }

        /// Any numeric PostgreSQL could send (digits 0-9999, any weight and scale) reads as
        /// a decimal literal.
        #[test]
        fn binary_numerics_are_decimal_literals(digits in proptest::collection::vec(0u16..10_000, 0..6), weight in -8i16..8, negative: bool, dscale in 0u16..40) {
            let mut data = Vec::new();
            data.extend_from_slice(&(digits.len() as i16).to_be_bytes());
            data.extend_from_slice(&weight.to_be_bytes());
            data.extend_from_slice(&(if negative { 0x4000u16 } else { 0 }).to_be_bytes());
            data.extend_from_slice(&dscale.to_be_bytes());
            for d in &digits {
                data.extend_from_slice(&d.to_be_bytes());
            }
            let mut out = String::new();
            numeric_text(&data, &mut out).unwrap();
            prop_assert!(backflow_plugin_sdk::value::is_decimal_literal(&out), "{out:?}");
        }

        #[test]
        fn any_bytes_in_any_column(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            convert_all(&bytes);
        }

        #[test]
        fn value_shaped_text(text in "[-+0-9.:eE TZ{}\",\\\\a-zNUL()€é]{0,40}") {
            convert_all(text.as_bytes());
        }

        #[test]
        fn array_shaped_text(text in "\\{[-0-9a-z.,\"{}\\\\ NUL€]{0,30}\\}?") {
            for s in SCALARS {
                let _ = parse_array(&text, s, &mut String::new());
            }
        }
    }
}
