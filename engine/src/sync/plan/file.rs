//! The plan's on-disk files: one frame per planned row (key, fingerprint, row, last
//! delivered row), written in key order and read back by checks and delivery.

use backflow_plugin_sdk::codec::{read_array_len, read_value};
use std::io::{BufReader, Read, Write};

/// Appends one planned row (key, fingerprint, row, its last delivered values) to a plan file.
pub(crate) fn write_frame(
    out: &mut impl Write,
    key: &[u8],
    fp: &[u8; 16],
    row: &[u8],
    before: &[u8],
) -> std::io::Result<()> {
    out.write_all(&(key.len() as u32).to_le_bytes())?;
    out.write_all(key)?;
    out.write_all(fp)?;
    out.write_all(&(row.len() as u32).to_le_bytes())?;
    out.write_all(row)?;
    out.write_all(&(before.len() as u32).to_le_bytes())?;
    out.write_all(before)
}

/// One planned row: its encoded key (a MessagePack array), fingerprint, mapped row, the last
/// delivered row (for changes and removals), and what is sent.
pub(crate) struct PlannedRow {
    pub(crate) key: Vec<u8>,
    pub(crate) fp: [u8; 16],
    pub(crate) row: Vec<u8>,
    pub(crate) before: Vec<u8>,
    pub(crate) payload: Payload,
    /// Which cells of the payload are present, when field rules leave some out (absent
    /// cells hold null; see `sync::field_rules`); `None`: every cell.
    pub(crate) present: Option<Vec<bool>>,
}

/// What a planned row sends to the destination. Most rows send themselves: no copy of a
/// row per row delivered.
pub(crate) enum Payload {
    /// The mapped row (inserts and updates).
    Row,
    /// The key alone (deletes).
    Key,
    /// Something built for sending (the row with its event id, in `append` mode).
    Built(Vec<u8>),
}

/// Renders an encoded key: `42`, or `42|eu` for composite keys.
pub fn key_text(key: &[u8]) -> String {
    let mut rest = key;
    let n = read_array_len(&mut rest).unwrap_or(0);
    // Each value takes at least a byte: a corrupt count must not size the result.
    (0..n.min(rest.len()))
        .map(|_| {
            read_value(&mut rest)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| "?".into())
        })
        .collect::<Vec<_>>()
        .join("|")
}

impl PlannedRow {
    pub(crate) fn key_text(&self) -> String {
        key_text(&self.key)
    }

    /// The encoded row sent to the destination.
    pub(crate) fn payload(&self) -> &[u8] {
        match &self.payload {
            Payload::Row => &self.row,
            Payload::Key => &self.key,
            Payload::Built(p) => p,
        }
    }
}

/// Reads exactly `len` bytes of a plan (or journal) frame, growing the buffer as they arrive
/// past 64 KiB: a corrupt length prefix in a short file is an error (`UnexpectedEof`), not a
/// 4 GiB allocation (found by the fuzz test below).
pub(crate) fn read_exactly(r: &mut impl Read, len: u32) -> std::io::Result<Vec<u8>> {
    // The common case, a row or a key: one allocation and one copy out of the reader (read_to_end
    // would probe for more after filling an exact-sized buffer).
    if len <= 1 << 16 {
        let mut buf = vec![0; len as usize];
        return match r.read_exact(&mut buf) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "plan file truncated",
            )),
            Err(e) => Err(e),
        };
    }
    let mut buf = Vec::with_capacity(1 << 16);
    r.take(u64::from(len)).read_to_end(&mut buf)?;
    if buf.len() != len as usize {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "plan file truncated",
        ));
    }
    Ok(buf)
}

/// Reads the frames of one plan file back, in the order they were written.
pub(crate) struct PlanReader<'a> {
    pub(crate) input: BufReader<&'a std::fs::File>,
}

impl<'a> PlanReader<'a> {
    pub(crate) fn new(file: &'a std::fs::File) -> PlanReader<'a> {
        PlanReader {
            input: BufReader::with_capacity(1 << 20, file),
        }
    }

    fn bytes(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        read_exactly(&mut self.input, u32::from_le_bytes(len)).map(Some)
    }

    pub(crate) fn next(&mut self) -> std::io::Result<Option<PlannedRow>> {
        let Some(key) = self.bytes()? else {
            return Ok(None);
        };
        let truncated =
            || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "plan file truncated");
        let mut fp = [0u8; 16];
        self.input.read_exact(&mut fp)?;
        let row = self.bytes()?.ok_or_else(truncated)?;
        let before = self.bytes()?.ok_or_else(truncated)?;
        Ok(Some(PlannedRow {
            key,
            fp,
            row,
            before,
            payload: Payload::Row,
            present: None,
        }))
    }
}

/// Fuzzing by property (issue 16): a plan file of any content reads as rows or an error.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut file = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut file, &bytes).unwrap();
            std::io::Seek::rewind(&mut file).unwrap();
            let mut reader = PlanReader::new(&file);
            for _ in 0..100 {
                match reader.next() {
                    Ok(Some(row)) => { let _ = row.key_text(); }
                    _ => break,
                }
            }
            let _ = key_text(&bytes);
        }
    }
}
