//! The MessagePack wire format of row batches, shared by the engine and the plugins.
//!
//! A batch payload is one MessagePack array of rows; a row is an array with one value per
//! column. Native MessagePack types carry null, booleans, integers, floats, text (str) and
//! bytes (bin). Types MessagePack lacks travel as extension values:
//!
//! | type      | encoding                                                            |
//! |-----------|---------------------------------------------------------------------|
//! | timestamp | ext -1, the standard MessagePack timestamp (we write the 96-bit form) |
//! | decimal   | ext 1, the decimal's ASCII text, e.g. `-12.50`                      |
//! | date      | ext 2, ASCII `YYYY-MM-DD`                                           |
//! | json      | ext 3, UTF-8 JSON text                                              |
//!
//! The format is documented for authors in other languages in `wit/README.md`.

use crate::value::{format_date, parse_date, Column, Value};
use std::fmt;

pub const EXT_TIMESTAMP: i8 = -1;
pub const EXT_DECIMAL: i8 = 1;
pub const EXT_DATE: i8 = 2;
pub const EXT_JSON: i8 = 3;

/// A payload that does not follow the batch format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

fn err<T>(msg: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError(msg.into()))
}

/// Appends one value.
pub fn write_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => write_null(buf),
        Value::Bool(b) => write_bool(buf, *b),
        Value::Int(i) => write_int(buf, *i),
        Value::Float(f) => write_float(buf, *f),
        Value::Text(t) => write_text(buf, t),
        Value::Bytes(b) => write_bytes(buf, b),
        Value::Decimal(d) => write_ext(buf, EXT_DECIMAL, d.as_bytes()),
        Value::Date(d) => write_ext(buf, EXT_DATE, format_date(*d).as_bytes()),
        Value::Json(j) => write_ext(buf, EXT_JSON, j.as_bytes()),
        Value::Timestamp(us) => {
            let secs = us.div_euclid(1_000_000);
            let nanos = (us.rem_euclid(1_000_000) * 1000) as u32;
            let mut data = [0u8; 12];
            data[..4].copy_from_slice(&nanos.to_be_bytes());
            data[4..].copy_from_slice(&secs.to_be_bytes());
            write_ext(buf, EXT_TIMESTAMP, &data);
        }
    }
}

/// Appends NULL. The `write_*` functions below encode single values without building a
/// [`Value`] first, for plugins on a hot path (see [`BatchBuilder::start_row`]).
pub fn write_null(buf: &mut Vec<u8>) {
    buf.push(0xc0);
}

pub fn write_bool(buf: &mut Vec<u8>, b: bool) {
    buf.push(if b { 0xc3 } else { 0xc2 });
}

/// An integer in its smallest MessagePack form (as `rmp::encode::write_sint` writes it:
/// fingerprints hash these bytes, so the form of a value must never change).
#[inline]
pub fn write_int(buf: &mut Vec<u8>, i: i64) {
    match i {
        0..=0x7f => buf.push(i as u8),
        -32..=-1 => buf.push(i as u8),
        -128..=-33 => buf.extend_from_slice(&[0xd0, i as u8]),
        -32_768..=-129 => push_marked(buf, 0xd1, &(i as i16).to_be_bytes()),
        -2_147_483_648..=-32_769 => push_marked(buf, 0xd2, &(i as i32).to_be_bytes()),
        i64::MIN..=-2_147_483_649 => push_marked(buf, 0xd3, &i.to_be_bytes()),
        0x80..=0xff => buf.extend_from_slice(&[0xcc, i as u8]),
        0x100..=0xffff => push_marked(buf, 0xcd, &(i as u16).to_be_bytes()),
        0x1_0000..=0xffff_ffff => push_marked(buf, 0xce, &(i as u32).to_be_bytes()),
        _ => push_marked(buf, 0xcf, &(i as u64).to_be_bytes()),
    }
}

#[inline]
pub fn write_float(buf: &mut Vec<u8>, f: f64) {
    push_marked(buf, 0xcb, &f.to_be_bytes());
}

#[inline]
pub fn write_text(buf: &mut Vec<u8>, s: &str) {
    write_text_header(buf, s.len() as u32);
    buf.extend_from_slice(s.as_bytes());
}

/// The header of a text of `len` bytes; the caller appends the (UTF-8) bytes.
#[inline]
pub fn write_text_header(buf: &mut Vec<u8>, len: u32) {
    match len {
        0..=31 => buf.push(0xa0 | len as u8),
        32..=0xff => buf.extend_from_slice(&[0xd9, len as u8]),
        0x100..=0xffff => push_marked(buf, 0xda, &(len as u16).to_be_bytes()),
        _ => push_marked(buf, 0xdb, &len.to_be_bytes()),
    }
}

/// Bytes (MessagePack bin).
#[inline]
pub fn write_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len() as u32;
    match len {
        0..=0xff => buf.extend_from_slice(&[0xc4, len as u8]),
        0x100..=0xffff => push_marked(buf, 0xc5, &(len as u16).to_be_bytes()),
        _ => push_marked(buf, 0xc6, &len.to_be_bytes()),
    }
    buf.extend_from_slice(bytes);
}

/// A marker byte and the big-endian bytes after it, in one append.
#[inline]
fn push_marked<const N: usize>(buf: &mut Vec<u8>, marker: u8, be: &[u8; N]) {
    buf.push(marker);
    buf.extend_from_slice(be);
}

/// A decimal given as its exact text (the caller checks it is a decimal literal).
pub fn write_decimal(buf: &mut Vec<u8>, text: &str) {
    write_ext(buf, EXT_DECIMAL, text.as_bytes());
}

/// A date given as `YYYY-MM-DD` (the caller checks it is valid).
pub fn write_date_text(buf: &mut Vec<u8>, text: &str) {
    write_ext(buf, EXT_DATE, text.as_bytes());
}

/// JSON given as its text (the caller checks it is valid JSON).
pub fn write_json(buf: &mut Vec<u8>, text: &str) {
    write_ext(buf, EXT_JSON, text.as_bytes());
}

/// An extension value: fixext for 1, 2, 4, 8 and 16 bytes, else ext 8/16/32 (as
/// `rmp::encode::write_ext_meta` writes them).
#[inline]
fn write_ext(buf: &mut Vec<u8>, ty: i8, data: &[u8]) {
    let len = data.len() as u32;
    match len {
        1 => buf.push(0xd4),
        2 => buf.push(0xd5),
        4 => buf.push(0xd6),
        8 => buf.push(0xd7),
        16 => buf.push(0xd8),
        0..=0xff => buf.extend_from_slice(&[0xc7, len as u8]),
        0x100..=0xffff => push_marked(buf, 0xc8, &(len as u16).to_be_bytes()),
        _ => push_marked(buf, 0xc9, &len.to_be_bytes()),
    }
    buf.push(ty as u8);
    buf.extend_from_slice(data);
}

/// Writes an array header of exactly five bytes (array32), so it can be patched later.
fn write_fixed_array_header(buf: &mut Vec<u8>, len: u32) {
    buf.push(0xdd);
    buf.extend_from_slice(&len.to_be_bytes());
}

/// Writes a row's array header; the caller then writes `len` values.
#[inline]
pub fn write_row_header(buf: &mut Vec<u8>, len: u32) {
    match len {
        0..=15 => buf.push(0x90 | len as u8),
        16..=0xffff => push_marked(buf, 0xdc, &(len as u16).to_be_bytes()),
        _ => push_marked(buf, 0xdd, &len.to_be_bytes()),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() - self.pos < n {
            return err(format!(
                "payload ends early at byte {} (needed {n} more)",
                self.pos
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn be<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn len(&mut self, width: usize) -> Result<usize, CodecError> {
        Ok(match width {
            1 => usize::from(self.u8()?),
            2 => usize::from(u16::from_be_bytes(self.be()?)),
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }
}

/// What a marker byte announces.
enum Head {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    F32(f32),
    F64(f64),
    Str(usize),
    Bin(usize),
    Array(usize),
    Map(usize),
    Ext(usize, i8),
}

fn read_head(r: &mut Reader<'_>) -> Result<Head, CodecError> {
    let at = r.pos;
    let m = r.u8()?;
    Ok(match m {
        0x00..=0x7f => Head::Int(i64::from(m)),
        0x80..=0x8f => Head::Map(usize::from(m & 0x0f)),
        0x90..=0x9f => Head::Array(usize::from(m & 0x0f)),
        0xa0..=0xbf => Head::Str(usize::from(m & 0x1f)),
        0xc0 => Head::Nil,
        0xc2 => Head::Bool(false),
        0xc3 => Head::Bool(true),
        0xc4 => Head::Bin(r.len(1)?),
        0xc5 => Head::Bin(r.len(2)?),
        0xc6 => Head::Bin(r.len(4)?),
        0xc7 => {
            let n = r.len(1)?;
            Head::Ext(n, r.u8()? as i8)
        }
        0xc8 => {
            let n = r.len(2)?;
            Head::Ext(n, r.u8()? as i8)
        }
        0xc9 => {
            let n = r.len(4)?;
            Head::Ext(n, r.u8()? as i8)
        }
        0xca => Head::F32(f32::from_be_bytes(r.be()?)),
        0xcb => Head::F64(f64::from_be_bytes(r.be()?)),
        0xcc => Head::UInt(u64::from(r.u8()?)),
        0xcd => Head::UInt(u64::from(u16::from_be_bytes(r.be()?))),
        0xce => Head::UInt(u64::from(u32::from_be_bytes(r.be()?))),
        0xcf => Head::UInt(u64::from_be_bytes(r.be()?)),
        0xd0 => Head::Int(i64::from(r.u8()? as i8)),
        0xd1 => Head::Int(i64::from(i16::from_be_bytes(r.be()?))),
        0xd2 => Head::Int(i64::from(i32::from_be_bytes(r.be()?))),
        0xd3 => Head::Int(i64::from_be_bytes(r.be()?)),
        0xd4 => Head::Ext(1, r.u8()? as i8),
        0xd5 => Head::Ext(2, r.u8()? as i8),
        0xd6 => Head::Ext(4, r.u8()? as i8),
        0xd7 => Head::Ext(8, r.u8()? as i8),
        0xd8 => Head::Ext(16, r.u8()? as i8),
        0xd9 => Head::Str(r.len(1)?),
        0xda => Head::Str(r.len(2)?),
        0xdb => Head::Str(r.len(4)?),
        0xdc => Head::Array(r.len(2)?),
        0xdd => Head::Array(r.len(4)?),
        0xde => Head::Map(r.len(2)?),
        0xdf => Head::Map(r.len(4)?),
        0xe0..=0xff => Head::Int(i64::from(m as i8)),
        0xc1 => return err(format!("invalid MessagePack marker 0xc1 at byte {at}")),
    })
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, CodecError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| CodecError(format!("{what} is not valid UTF-8")))
}

fn read_value_at(r: &mut Reader<'_>) -> Result<Value, CodecError> {
    let at = r.pos;
    Ok(match read_head(r)? {
        Head::Nil => Value::Null,
        Head::Bool(b) => Value::Bool(b),
        Head::Int(i) => Value::Int(i),
        Head::UInt(u) => match i64::try_from(u) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Decimal(u.to_string()),
        },
        Head::F32(f) => Value::Float(f64::from(f)),
        Head::F64(f) => Value::Float(f),
        Head::Str(n) => Value::Text(utf8(r.take(n)?, "text")?),
        Head::Bin(n) => Value::Bytes(r.take(n)?.to_vec()),
        Head::Ext(n, ty) => {
            let data = r.take(n)?;
            match ty {
                EXT_DECIMAL => Value::Decimal(utf8(data, "decimal")?),
                EXT_JSON => Value::Json(utf8(data, "json")?),
                EXT_DATE => {
                    let text = std::str::from_utf8(data).unwrap_or("");
                    Value::Date(
                        parse_date(text)
                            .ok_or_else(|| CodecError(format!("bad date {text:?} at byte {at}")))?,
                    )
                }
                EXT_TIMESTAMP => Value::Timestamp(
                    decode_timestamp(data)
                        .ok_or_else(|| CodecError(format!("bad timestamp at byte {at}")))?,
                ),
                other => return err(format!("unknown extension type {other} at byte {at}")),
            }
        }
        Head::Array(_) | Head::Map(_) => {
            return err(format!(
            "nested array/map at byte {at}: cell values must be scalars (use the json extension)"
        ))
        }
    })
}

fn decode_timestamp(data: &[u8]) -> Option<i64> {
    let (secs, nanos): (i64, u32) = match data.len() {
        4 => (i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0),
        8 => {
            let v = u64::from_be_bytes(data.try_into().ok()?);
            ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
        }
        12 => (
            i64::from_be_bytes(data[4..].try_into().ok()?),
            u32::from_be_bytes(data[..4].try_into().ok()?),
        ),
        _ => return None,
    };
    secs.checked_mul(1_000_000)?
        .checked_add(i64::from(nanos / 1000))
}

/// Reads one value from the front of `input`, advancing it.
pub fn read_value(input: &mut &[u8]) -> Result<Value, CodecError> {
    let mut r = Reader {
        bytes: input,
        pos: 0,
    };
    let v = read_value_at(&mut r)?;
    *input = &input[r.pos..];
    Ok(v)
}

/// The encoded length of the value (of any type, nested or not) starting at `bytes[0]`.
pub fn value_len(bytes: &[u8]) -> Result<usize, CodecError> {
    // Fast path for the scalars rows are made of: the length follows from the marker (and a
    // length byte or two) without a general parse. This runs once per cell on hot paths.
    let len = |n: usize| {
        if n <= bytes.len() {
            Ok(n)
        } else {
            err(format!(
                "payload ends early (value of {n} bytes, {} left)",
                bytes.len()
            ))
        }
    };
    let be = |at: usize, width: usize| -> Option<usize> {
        let b = bytes.get(at..at + width)?;
        Some(b.iter().fold(0usize, |acc, x| (acc << 8) | usize::from(*x)))
    };
    match bytes.first() {
        None => err("payload ends early (no value)"),
        Some(&m) => match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => len(1),
            0xa0..=0xbf => len(1 + usize::from(m & 0x1f)),
            0xcc | 0xd0 => len(2),
            0xcd | 0xd1 => len(3),
            0xca | 0xce | 0xd2 => len(5),
            0xcb | 0xcf | 0xd3 => len(9),
            0xd4 => len(3),
            0xd5 => len(4),
            0xd6 => len(6),
            0xd7 => len(10),
            0xd8 => len(18),
            0xc4 | 0xd9 => len(2 + be(1, 1).map_or(usize::MAX - 2, |n| n)),
            0xc5 | 0xda => len(3 + be(1, 2).map_or(usize::MAX - 3, |n| n)),
            0xc6 | 0xdb => len(5 + be(1, 4).map_or(usize::MAX - 5, |n| n)),
            0xc7 => len(3 + be(1, 1).map_or(usize::MAX - 3, |n| n)),
            0xc8 => len(4 + be(1, 2).map_or(usize::MAX - 4, |n| n)),
            0xc9 => len(6 + be(1, 4).map_or(usize::MAX - 6, |n| n)),
            // Arrays, maps and the invalid marker take the general path.
            _ => {
                let mut r = Reader { bytes, pos: 0 };
                skip(&mut r, 0)?;
                Ok(r.pos)
            }
        },
    }
}

fn skip(r: &mut Reader<'_>, depth: u32) -> Result<(), CodecError> {
    if depth > 64 {
        return err("value nested deeper than 64 levels");
    }
    match read_head(r)? {
        Head::Str(n) | Head::Bin(n) | Head::Ext(n, _) => {
            r.take(n)?;
        }
        Head::Array(n) => {
            for _ in 0..n {
                skip(r, depth + 1)?;
            }
        }
        Head::Map(n) => {
            for _ in 0..n * 2 {
                skip(r, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Reads an array header from the front of `input`, advancing it.
pub fn read_array_len(input: &mut &[u8]) -> Result<usize, CodecError> {
    let mut r = Reader {
        bytes: input,
        pos: 0,
    };
    match read_head(&mut r)? {
        Head::Array(n) => {
            *input = &input[r.pos..];
            Ok(n)
        }
        _ => err("expected an array"),
    }
}

/// Whether an encoded value (from [`Batch::raw_column`]) is NULL.
pub fn raw_is_null(raw: &[u8]) -> bool {
    raw == [0xc0]
}

/// The text of an encoded text value, borrowed; `None` for other types or invalid UTF-8.
pub fn raw_str(raw: &[u8]) -> Option<&str> {
    let (len, start) = match *raw.first()? {
        m @ 0xa0..=0xbf => (usize::from(m & 0x1f), 1),
        0xd9 => (usize::from(*raw.get(1)?), 2),
        0xda => (
            usize::from(u16::from_be_bytes(raw.get(1..3)?.try_into().ok()?)),
            3,
        ),
        0xdb => (
            u32::from_be_bytes(raw.get(1..5)?.try_into().ok()?) as usize,
            5,
        ),
        _ => return None,
    };
    std::str::from_utf8(raw.get(start..start + len)?).ok()
}

/// An encoded batch: the payload plus the columns it was written for.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub columns: Vec<Column>,
    pub row_count: u32,
    pub payload: Vec<u8>,
}

impl Batch {
    /// Position of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Decodes every row. Errors name the row and column.
    pub fn rows(&self) -> Rows<'_> {
        let mut rest: &[u8] = &self.payload;
        let header = read_array_len(&mut rest);
        Rows {
            batch: self,
            rest,
            index: 0,
            header_error: header.err(),
        }
    }

    /// The encoded bytes of one column's value in each row, without decoding anything: for
    /// checks that only compare, hash or test for NULL. See [`raw_is_null`] and [`raw_str`].
    pub fn raw_column(&self, index: usize) -> impl Iterator<Item = Result<&[u8], CodecError>> + '_ {
        let mut rest: &[u8] = &self.payload;
        let mut header = read_array_len(&mut rest).err();
        let mut failed = header.is_some();
        let mut row = 0u32;
        std::iter::from_fn(move || {
            if let Some(e) = header.take() {
                return Some(Err(CodecError(format!("batch payload: {e}"))));
            }
            if failed || row >= self.row_count {
                return None;
            }
            let r = row;
            row += 1;
            let result = (|| {
                let width = read_array_len(&mut rest)?;
                if index >= width {
                    return err(format!("row has {width} values, no column {index}"));
                }
                let mut value: &[u8] = &[];
                for i in 0..width {
                    let n = value_len(rest)?;
                    if i == index {
                        value = &rest[..n];
                    }
                    rest = &rest[n..];
                }
                Ok(value)
            })()
            .map_err(|e: CodecError| CodecError(format!("row {r}: {e}")));
            failed = result.is_err();
            Some(result)
        })
    }

    /// The values of one column, decoding only that column of each row (the others are
    /// skipped unread). Errors name the row.
    pub fn column_values(
        &self,
        index: usize,
    ) -> impl Iterator<Item = Result<Value, CodecError>> + '_ {
        let mut row = 0u32;
        self.raw_column(index).map(move |raw| {
            let r = row;
            row += 1;
            let mut raw = raw?;
            read_value(&mut raw).map_err(|e| CodecError(format!("row {r}: {e}")))
        })
    }

    /// Decodes all rows at once.
    pub fn decode(&self) -> Result<Vec<Vec<Value>>, CodecError> {
        self.rows().collect()
    }

    /// Appends the rows as a JSON array of objects (`[{"id":1,"email":"…"},…]`), each
    /// object's fields in column order, then `extra` fields (name, string value). Values are
    /// written as [`Value::to_json`] renders them, straight from the encoded payload: no
    /// [`Value`] or `serde_json::Value` per cell, which is what makes a destination that
    /// speaks JSON fast. Errors name the row.
    pub fn write_json_array(
        &self,
        out: &mut Vec<u8>,
        extra: &[(&str, &str)],
    ) -> Result<(), CodecError> {
        // Each field's `"name":` is escaped once per batch, not once per row.
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(self.columns.len() + extra.len());
        for (i, name) in self
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .chain(extra.iter().map(|(n, _)| *n))
            .enumerate()
        {
            let mut key = Vec::with_capacity(name.len() + 4);
            if i > 0 {
                key.push(b',');
            }
            json_string(&mut key, name);
            key.push(b':');
            keys.push(key);
        }
        let mut rest: &[u8] = &self.payload;
        let rows =
            read_array_len(&mut rest).map_err(|e| CodecError(format!("batch payload: {e}")))?;
        if rows != self.row_count as usize {
            return err(format!(
                "batch payload holds {rows} rows, the batch says {}",
                self.row_count
            ));
        }
        out.push(b'[');
        for row in 0..rows {
            if row > 0 {
                out.push(b',');
            }
            let mut r = Reader {
                bytes: rest,
                pos: 0,
            };
            write_json_row(&mut r, out, &keys, extra, self.columns.len())
                .map_err(|e| CodecError(format!("row {row}: {e}")))?;
            rest = &rest[r.pos..];
        }
        out.push(b']');
        Ok(())
    }
}

fn write_json_row(
    r: &mut Reader<'_>,
    out: &mut Vec<u8>,
    keys: &[Vec<u8>],
    extra: &[(&str, &str)],
    width: usize,
) -> Result<(), CodecError> {
    let n = match read_head(r)? {
        Head::Array(n) => n,
        _ => return err("a row is not an array"),
    };
    if n != width {
        return err(format!("row has {n} values for {width} columns"));
    }
    out.push(b'{');
    for key in &keys[..width] {
        out.extend_from_slice(key);
        write_json_cell(r, out)?;
    }
    for (key, (_, value)) in keys[width..].iter().zip(extra) {
        out.extend_from_slice(key);
        json_string(out, value);
    }
    out.push(b'}');
    Ok(())
}

/// One cell as JSON, exactly as `Value::to_json` then `serde_json` would write it.
fn write_json_cell(r: &mut Reader<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let at = r.pos;
    match read_head(r)? {
        Head::Nil => out.extend_from_slice(b"null"),
        Head::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Head::Int(i) => json_number(out, i),
        Head::UInt(u) => match i64::try_from(u) {
            Ok(i) => json_number(out, i),
            // Beyond i64: a decimal, written as text.
            Err(_) => json_string(out, &u.to_string()),
        },
        Head::F32(f) => json_number(out, f64::from(f)),
        Head::F64(f) => json_number(out, f),
        Head::Str(n) => json_text(out, r.take(n)?, "text")?,
        Head::Bin(n) => json_string(out, &crate::value::base64_encode(r.take(n)?)),
        Head::Ext(n, ty) => {
            let data = r.take(n)?;
            match ty {
                EXT_DECIMAL => json_text(out, data, "decimal")?,
                EXT_DATE => {
                    let text = std::str::from_utf8(data).unwrap_or("");
                    let days = parse_date(text)
                        .ok_or_else(|| CodecError(format!("bad date {text:?} at byte {at}")))?;
                    json_string(out, &format_date(days));
                }
                EXT_TIMESTAMP => {
                    let us = decode_timestamp(data)
                        .ok_or_else(|| CodecError(format!("bad timestamp at byte {at}")))?;
                    if !crate::value::write_timestamp_quoted(out, us) {
                        json_string(out, &crate::value::format_timestamp(us));
                    }
                }
                // Rare: re-serialized through serde_json (compact, as `to_json` does).
                EXT_JSON => {
                    let value = Value::Json(utf8(data, "json")?).to_json();
                    let _ = serde_json::to_writer(&mut *out, &value);
                }
                other => return err(format!("unknown extension type {other} at byte {at}")),
            }
        }
        Head::Array(_) | Head::Map(_) => {
            return err(format!(
            "nested array/map at byte {at}: cell values must be scalars (use the json extension)"
        ))
        }
    }
    Ok(())
}

/// Text as a JSON string. Text that is ASCII with nothing to escape (most of it:
/// names, emails, codes, decimals) is copied as it is; any other is checked to be UTF-8 and
/// escaped by serde_json. The same bytes either way: this only skips work.
fn json_text(out: &mut Vec<u8>, bytes: &[u8], what: &str) -> Result<(), CodecError> {
    if is_plain_ascii(bytes) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return Ok(());
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| CodecError(format!("{what} is not valid UTF-8")))?;
    json_string(out, text);
    Ok(())
}

/// Whether every byte is ASCII from space to DEL other than `"` and `\` (what JSON, and
/// serde_json, write as it is),
/// eight bytes at a time: plugins run without SIMD, and a byte at a time (UTF-8 validation,
/// then serde_json's escape table) was 5% of an initial sync's CPU in `webhook`.
fn is_plain_ascii(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `x` that is below `n` (exact in the lowest such byte; a
    // borrow may also mark bytes above it, which is then moot). Bytes of 0x80 and above are
    // not marked here: `w & HIGH` catches them.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            return false;
        };
        let w = u64::from_le_bytes(word);
        if (w & HIGH)
            | below(w, 0x20)
            | below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            != 0
        {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn json_number<N: serde::Serialize>(out: &mut Vec<u8>, n: N) {
    let _ = serde_json::to_writer(&mut *out, &n);
}

/// Iterator over a batch's rows, each a `Vec<Value>` in column order.
pub struct Rows<'a> {
    batch: &'a Batch,
    rest: &'a [u8],
    index: u32,
    header_error: Option<CodecError>,
}

impl Iterator for Rows<'_> {
    type Item = Result<Vec<Value>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.header_error.take() {
            self.index = self.batch.row_count;
            return Some(Err(CodecError(format!("batch payload: {e}"))));
        }
        if self.index >= self.batch.row_count {
            return None;
        }
        let row = self.index;
        self.index += 1;
        let result =
            (|| {
                let width = read_array_len(&mut self.rest)
                    .map_err(|e| CodecError(format!("row {row}: {e}")))?;
                if width != self.batch.columns.len() {
                    return err(format!(
                        "row {row} has {width} values but the batch has {} columns",
                        self.batch.columns.len()
                    ));
                }
                let mut values = Vec::with_capacity(width);
                for col in &self.batch.columns {
                    values.push(read_value(&mut self.rest).map_err(|e| {
                        CodecError(format!("row {row}, column {:?}: {e}", col.name))
                    })?);
                }
                Ok(values)
            })();
        if result.is_err() {
            self.index = self.batch.row_count;
        }
        Some(result)
    }
}

/// Builds a batch row by row.
pub struct BatchBuilder {
    columns: Vec<Column>,
    payload: Vec<u8>,
    rows: u32,
}

impl BatchBuilder {
    pub fn new(columns: Vec<Column>) -> BatchBuilder {
        BatchBuilder::with_capacity(columns, 64 * 1024)
    }

    pub fn with_capacity(columns: Vec<Column>, bytes: usize) -> BatchBuilder {
        let mut payload = Vec::with_capacity(bytes.max(5));
        write_fixed_array_header(&mut payload, 0);
        BatchBuilder {
            columns,
            payload,
            rows: 0,
        }
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn len(&self) -> u32 {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Bytes encoded so far.
    pub fn byte_len(&self) -> usize {
        self.payload.len()
    }

    /// Appends a row; `values` must have one value per column.
    pub fn push_row(&mut self, values: &[Value]) {
        assert_eq!(
            values.len(),
            self.columns.len(),
            "row width must match the batch's columns"
        );
        write_row_header(&mut self.payload, values.len() as u32);
        for v in values {
            write_value(&mut self.payload, v);
        }
        self.rows += 1;
    }

    /// Starts a row of `width` values to be written straight into [`BatchBuilder::buffer`]
    /// with the `write_*` functions; the caller must write exactly `width` values.
    pub fn start_row(&mut self, width: u32) -> &mut Vec<u8> {
        write_row_header(&mut self.payload, width);
        self.rows += 1;
        &mut self.payload
    }

    /// Drops everything written after byte `len` and sets the row count back to `rows`: undoes
    /// a partly written row (see [`BatchBuilder::byte_len`]).
    pub fn truncate(&mut self, len: usize, rows: u32) {
        self.payload.truncate(len.max(5));
        self.rows = rows;
    }

    /// Appends a row whose values are already encoded (a row header plus one value per
    /// column, exactly as [`write_row_header`] and [`write_value`] produce them).
    pub fn push_encoded_row(&mut self, encoded: &[u8]) {
        self.payload.extend_from_slice(encoded);
        self.rows += 1;
    }

    pub fn finish(mut self) -> Batch {
        self.payload[1..5].copy_from_slice(&self.rows.to_be_bytes());
        Batch {
            columns: self.columns,
            row_count: self.rows,
            payload: self.payload,
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every byte value at every position of texts of 0 to 19 bytes: the word-at-a-time check
    /// agrees with a byte-at-a-time one, and JSON comes out as serde_json writes it.
    #[test]
    fn plain_ascii_is_told_apart_from_text_to_escape_at_every_position() {
        let plain = |bytes: &[u8]| {
            bytes
                .iter()
                .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
        };
        for len in 0..20usize {
            for at in 0..len.max(1) {
                for b in 0..=255u8 {
                    let mut text = vec![b'a'; len];
                    if len > 0 {
                        text[at] = b;
                    }
                    assert_eq!(super::is_plain_ascii(&text), plain(&text), "{text:?}");
                    let mut out = Vec::new();
                    match std::str::from_utf8(&text) {
                        Ok(s) => {
                            super::json_text(&mut out, &text, "text").unwrap();
                            assert_eq!(out, serde_json::to_vec(s).unwrap());
                        }
                        Err(_) => assert!(super::json_text(&mut out, &text, "text").is_err()),
                    }
                }
            }
        }
    }

    use super::*;
    use crate::value::ValueType;

    /// The writers must give exactly `rmp`'s bytes (the encoding they replaced): a row's
    /// fingerprint hashes its bytes, so another form of the same value would make every
    /// row of every sync look changed after an upgrade.
    mod same_bytes_as_rmp {
        use super::*;
        use proptest::prelude::*;

        /// Every boundary of every form, and one past it on both sides.
        fn edges() -> Vec<i64> {
            let mut v = vec![0, i64::MIN, i64::MAX];
            for b in [
                31i64,
                32,
                127,
                128,
                255,
                256,
                32_767,
                32_768,
                65_535,
                65_536,
                2_147_483_647,
                2_147_483_648,
                4_294_967_295,
                4_294_967_296,
            ] {
                for x in [b - 1, b, b + 1] {
                    v.extend([x, -x]);
                }
            }
            v
        }

        fn ours(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
            let mut b = Vec::new();
            write(&mut b);
            b
        }

        fn theirs(
            write: impl FnOnce(&mut Vec<u8>) -> Result<(), rmp::encode::ValueWriteError>,
        ) -> Vec<u8> {
            let mut b = Vec::new();
            write(&mut b).unwrap();
            b
        }

        fn check_int(i: i64) {
            assert_eq!(
                ours(|b| write_int(b, i)),
                theirs(|b| rmp::encode::write_sint(b, i).map(|_| ())),
                "{i}"
            );
        }

        fn check_len(len: u32) {
            assert_eq!(
                ours(|b| write_text_header(b, len)),
                theirs(|b| rmp::encode::write_str_len(b, len).map(|_| ())),
                "str {len}"
            );
            assert_eq!(
                ours(|b| write_row_header(b, len)),
                theirs(|b| rmp::encode::write_array_len(b, len).map(|_| ())),
                "array {len}"
            );
            let data = vec![7u8; len as usize];
            let mut ext = theirs(|b| rmp::encode::write_ext_meta(b, len, EXT_JSON).map(|_| ()));
            ext.extend_from_slice(&data);
            assert_eq!(ours(|b| write_ext(b, EXT_JSON, &data)), ext, "ext {len}");
            let mut bin = theirs(|b| rmp::encode::write_bin_len(b, len).map(|_| ()));
            bin.extend_from_slice(&data);
            assert_eq!(ours(|b| write_bytes(b, &data)), bin, "bin {len}");
        }

        #[test]
        fn at_every_boundary() {
            for i in edges() {
                check_int(i);
            }
            for len in (0..300).chain([65_535, 65_536, 65_537]) {
                check_len(len);
            }
            for f in [
                0.0,
                -0.0,
                1.5,
                f64::NAN,
                f64::INFINITY,
                f64::MIN_POSITIVE,
                f64::MAX,
            ] {
                assert_eq!(
                    ours(|b| write_float(b, f)),
                    theirs(|b| rmp::encode::write_f64(b, f))
                );
            }
            let ts = ours(|b| write_value(b, &Value::Timestamp(1_700_000_000_123_456)));
            assert_eq!(
                &ts[..3],
                &[0xc7, 12, EXT_TIMESTAMP as u8],
                "a 12-byte timestamp is ext 8, as rmp wrote it"
            );
        }

        proptest! {
            #[test]
            fn for_any_integer(i in any::<i64>(), small in -70_000i64..70_000) {
                check_int(i);
                check_int(small);
            }

            #[test]
            fn for_any_text(s in ".{0,80}") {
                let mut expected = Vec::new();
                rmp::encode::write_str(&mut expected, &s).unwrap();
                prop_assert_eq!(ours(|b| write_text(b, &s)), expected);
            }
        }
    }

    #[test]
    fn every_type_round_trips() {
        let values = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-5),
            Value::Int(i64::MAX),
            Value::Int(i64::MIN),
            Value::Float(1.5),
            Value::Decimal("123456789012345678901234567890.000001".into()),
            Value::Text("héllo, \"world\"".into()),
            Value::Bytes(vec![0, 1, 255]),
            Value::Timestamp(-1),
            Value::Timestamp(1_700_000_000_123_456),
            Value::Date(-3000),
            Value::Json(r#"{"a":[1,2]}"#.into()),
        ];
        let columns: Vec<Column> = (0..values.len())
            .map(|i| Column::new(format!("c{i}"), ValueType::Any))
            .collect();
        let mut b = BatchBuilder::new(columns);
        b.push_row(&values);
        b.push_row(&values);
        let batch = b.finish();
        assert_eq!(batch.row_count, 2);
        let rows = batch.decode().unwrap();
        assert_eq!(rows, vec![values.clone(), values]);
        assert_eq!(value_len(&batch.payload).unwrap(), batch.payload.len());
    }

    #[test]
    fn one_column_decodes_alone() {
        let columns = vec![
            Column::new("id", ValueType::Integer),
            Column::new("email", ValueType::Text),
            Column::new("n", ValueType::Integer),
        ];
        let mut b = BatchBuilder::new(columns);
        b.push_row(&[Value::Int(1), Value::Text("a@x".into()), Value::Int(5)]);
        b.push_row(&[Value::Int(2), Value::Null, Value::Int(6)]);
        let batch = b.finish();
        let emails: Vec<Value> = batch.column_values(1).collect::<Result<_, _>>().unwrap();
        assert_eq!(emails, vec![Value::Text("a@x".into()), Value::Null]);
        let ns: Vec<Value> = batch.column_values(2).collect::<Result<_, _>>().unwrap();
        assert_eq!(ns, vec![Value::Int(5), Value::Int(6)]);
        let raw: Vec<&[u8]> = batch.raw_column(1).collect::<Result<_, _>>().unwrap();
        assert_eq!(raw_str(raw[0]), Some("a@x"));
        assert!(raw_is_null(raw[1]));
        assert_eq!(raw_str(&[0xc0]), None);
    }

    #[test]
    fn errors_name_row_and_column() {
        let columns = vec![
            Column::new("id", ValueType::Integer),
            Column::new("email", ValueType::Text),
        ];
        let mut b = BatchBuilder::new(columns);
        b.push_row(&[Value::Int(1), Value::Text("a@x".into())]);
        let mut batch = b.finish();
        batch.payload.truncate(batch.payload.len() - 1);
        let e = batch.decode().unwrap_err();
        assert!(e.0.contains("row 0, column \"email\""), "{e}");
    }

    #[test]
    fn value_len_agrees_with_the_general_parser() {
        let mut buf = Vec::new();
        let values = [
            Value::Null,
            Value::Bool(false),
            Value::Int(5),
            Value::Int(-3),
            Value::Int(200),
            Value::Int(-200),
            Value::Int(70_000),
            Value::Int(-70_000),
            Value::Int(i64::MAX),
            Value::Int(i64::MIN),
            Value::Float(0.5),
            Value::Text("x".repeat(31)),
            Value::Text("y".repeat(300)),
            Value::Text("z".repeat(70_000)),
            Value::Bytes(vec![1; 10]),
            Value::Bytes(vec![2; 300]),
            Value::Decimal("1.5".into()),
            Value::Date(0),
            Value::Timestamp(123),
            Value::Json("{}".into()),
            Value::Json("x".repeat(300)),
        ];
        for v in &values {
            buf.clear();
            write_value(&mut buf, v);
            let mut r = Reader {
                bytes: &buf,
                pos: 0,
            };
            skip(&mut r, 0).unwrap();
            assert_eq!(value_len(&buf).unwrap(), r.pos, "{v:?}");
            assert_eq!(value_len(&buf).unwrap(), buf.len(), "{v:?}");
            assert!(
                value_len(&buf[..buf.len() - 1]).is_err() || buf.len() == 1,
                "{v:?} truncated"
            );
        }
        for ext in [
            &[0xd4u8, 1, 0][..],
            &[0xd5, 1, 0, 0],
            &[0xd6, 1, 0, 0, 0, 0],
            &[0xc7, 1, 5, 9],
        ] {
            assert_eq!(value_len(ext).unwrap(), ext.len());
        }
    }

    #[test]
    fn standard_timestamp_forms_decode() {
        assert_eq!(decode_timestamp(&1u32.to_be_bytes()), Some(1_000_000));
        let v: u64 = (500_000_000u64 << 34) | 2;
        assert_eq!(decode_timestamp(&v.to_be_bytes()), Some(2_500_000));
    }
}
