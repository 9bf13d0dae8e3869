//! The blocks a snapshot's base is stored in: runs of consecutive entries (encoded key →
//! fingerprint ‖ row), encoded one after another, each block a single redb value filed under
//! its last key. Pure byte handling; `snapshot_write.rs` files the blocks in redb.
//!
//! Why blocks: one redb entry per row made every delivered row a B-tree insert, and that was
//! the largest cost left in the initial sync (about a fifth of all CPU samples, session 14 in
//! docs/benchmarks-history.md). A block of about [`TARGET_BYTES`] holds some 30 rows of the
//! issue-15 table, so a load of a million rows is some 30,000 inserts, and the diff's walk
//! reads 30,000 values.
//!
//! An entry is `len(key) key len(value) value`, lengths as LEB128 varints; entries are in
//! ascending key order, and no key appears twice.

/// Most bytes a block holds (unless one entry alone is larger): what fits, with its key, in
/// one 4 KiB redb leaf page (a leaf takes 4 bytes of header and 8 per entry besides the key
/// and the value; 128 bytes are left for the key). Some 30 rows of the issue-15 table. A
/// block even a little larger takes an 8 KiB page of its own: the first form of this filed
/// blocks once they passed 4,096 bytes, which doubled the state file (285 MB against 143 MB
/// for the million rows) and the bytes written and read. Smaller blocks make more B-tree
/// entries (1 KiB blocks made the initial sync about 0.15 s slower); larger ones make every
/// lookup and every scattered update copy more bytes.
pub(super) const TARGET_BYTES: usize = 4096 - 128;

/// A block edited in place (inserts in its middle) is split in two above this size, into
/// halves that fit a page.
pub(super) const MAX_BYTES: usize = TARGET_BYTES;

/// A block whose bytes do not decode: the state file was damaged or written by a bug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Corrupt;

impl From<Corrupt> for redb::Error {
    fn from(corrupt: Corrupt) -> redb::Error {
        redb::StorageError::from(corrupt).into()
    }
}

impl From<Corrupt> for redb::StorageError {
    fn from(_: Corrupt) -> redb::StorageError {
        redb::StorageError::Corrupted("a snapshot block does not decode".into())
    }
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Result<usize, Corrupt> {
    let mut n: usize = 0;
    // At most nine bytes (63 bits): no length in a block comes near that, and a tenth byte
    // would shift bits out unnoticed.
    for shift in (0..63).step_by(7) {
        let byte = *bytes.get(*at).ok_or(Corrupt)?;
        *at += 1;
        n |= usize::from(byte & 0x7f).checked_shl(shift).ok_or(Corrupt)?;
        if byte & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(Corrupt)
}

/// Appends one entry to a block being built; the caller keeps keys ascending.
fn push(block: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    put_varint(block, key.len());
    block.extend_from_slice(key);
    put_varint(block, value.len());
    block.extend_from_slice(value);
}

/// The bytes an entry takes in a block.
pub(super) fn entry_len(key: &[u8], value: &[u8]) -> usize {
    let varint = |n: usize| (usize::BITS - n.max(1).leading_zeros()).div_ceil(7) as usize;
    varint(key.len()) + key.len() + varint(value.len()) + value.len()
}

/// Where one entry lies in its block.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    key: (usize, usize),
    value: (usize, usize),
}

impl Span {
    fn end(&self) -> usize {
        self.value.1
    }
}

/// The entry starting at `at`.
fn span_at(block: &[u8], at: usize) -> Result<Span, Corrupt> {
    let mut pos = at;
    let key_len = get_varint(block, &mut pos)?;
    let key = (pos, pos.checked_add(key_len).ok_or(Corrupt)?);
    pos = key.1;
    let value_len = get_varint(block, &mut pos)?;
    let value = (pos, pos.checked_add(value_len).ok_or(Corrupt)?);
    if value.1 > block.len() {
        return Err(Corrupt);
    }
    Ok(Span {
        start: at,
        key,
        value,
    })
}

/// A block's entries in order: (key, value).
pub(super) struct Entries<'a> {
    block: &'a [u8],
    at: usize,
}

pub(super) fn entries(block: &[u8]) -> Entries<'_> {
    Entries { block, at: 0 }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), Corrupt>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.block.len() {
            return None;
        }
        match span_at(self.block, self.at) {
            Ok(span) => {
                self.at = span.end();
                Some(Ok((
                    &self.block[span.key.0..span.key.1],
                    &self.block[span.value.0..span.value.1],
                )))
            }
            Err(e) => {
                self.at = self.block.len();
                Some(Err(e))
            }
        }
    }
}

/// The value of `key` in a block.
pub(super) fn find<'a>(block: &'a [u8], key: &[u8]) -> Result<Option<&'a [u8]>, Corrupt> {
    for entry in entries(block) {
        let (k, v) = entry?;
        match k.cmp(key) {
            std::cmp::Ordering::Less => continue,
            std::cmp::Ordering::Equal => return Ok(Some(v)),
            std::cmp::Ordering::Greater => return Ok(None),
        }
    }
    Ok(None)
}

/// A block open for edits in memory: entries inserted, replaced and removed, then written
/// back whole.
#[derive(Debug, Default)]
pub(super) struct EditBlock {
    bytes: Vec<u8>,
    /// The last entry's span, so an append (the common case: deliveries come in key order)
    /// compares one key instead of scanning the block.
    last: Option<Span>,
}

impl EditBlock {
    /// A block read from the state file, to edit.
    pub(super) fn from_bytes(bytes: &[u8]) -> Result<EditBlock, Corrupt> {
        let mut block = EditBlock {
            bytes: bytes.to_vec(),
            last: None,
        };
        block.last = block.find_last()?;
        Ok(block)
    }

    fn find_last(&self) -> Result<Option<Span>, Corrupt> {
        let (mut at, mut last) = (0, None);
        while at < self.bytes.len() {
            let span = span_at(&self.bytes, at)?;
            at = span.end();
            last = Some(span);
        }
        Ok(last)
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(super) fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub(super) fn last_key(&self) -> Option<&[u8]> {
        self.last.map(|s| &self.bytes[s.key.0..s.key.1])
    }

    /// The first entry whose key is `key` or after it.
    fn seek(&self, key: &[u8]) -> Result<Option<Span>, Corrupt> {
        let mut at = 0;
        while at < self.bytes.len() {
            let span = span_at(&self.bytes, at)?;
            if &self.bytes[span.key.0..span.key.1] >= key {
                return Ok(Some(span));
            }
            at = span.end();
        }
        Ok(None)
    }

    /// Whether an entry for `key` would go after every other.
    pub(super) fn appends(&self, key: &[u8]) -> bool {
        self.last_key().is_none_or(|last| last < key)
    }

    /// Sets `key`'s value; returns the value before, and whether the entry was appended
    /// after every other (which is how a block being loaded in key order grows).
    pub(super) fn upsert(
        &mut self,
        key: &[u8],
        value: &[u8],
    ) -> Result<(Option<Vec<u8>>, bool), Corrupt> {
        if self.appends(key) {
            let start = self.bytes.len();
            push(&mut self.bytes, key, value);
            self.last = Some(span_at(&self.bytes, start)?);
            return Ok((None, true));
        }
        let Some(span) = self.seek(key)? else {
            return Err(Corrupt);
        };
        let mut entry = Vec::with_capacity(key.len() + value.len() + 10);
        push(&mut entry, key, value);
        let before = if &self.bytes[span.key.0..span.key.1] == key {
            let before = self.bytes[span.value.0..span.value.1].to_vec();
            self.bytes.splice(span.start..span.end(), entry);
            Some(before)
        } else {
            self.bytes.splice(span.start..span.start, entry);
            None
        };
        self.last = self.find_last()?;
        Ok((before, false))
    }

    /// Removes `key`'s entry; returns its value.
    pub(super) fn remove(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Corrupt> {
        let Some(span) = self.seek(key)? else {
            return Ok(None);
        };
        if &self.bytes[span.key.0..span.key.1] != key {
            return Ok(None);
        }
        let before = self.bytes[span.value.0..span.value.1].to_vec();
        self.bytes.drain(span.start..span.end());
        self.last = self.find_last()?;
        Ok(Some(before))
    }

    /// Splits off the entries of the first half (by bytes) as a block of their own, leaving
    /// the rest here; `None` for a block of one entry.
    pub(super) fn split_front(&mut self) -> Result<Option<Vec<u8>>, Corrupt> {
        let half = self.bytes.len() / 2;
        let mut at = 0;
        while at < self.bytes.len() {
            let span = span_at(&self.bytes, at)?;
            at = span.end();
            if at >= half {
                break;
            }
        }
        if at >= self.bytes.len() {
            // The first entry reaches past the middle: split after it, if anything follows.
            let first = span_at(&self.bytes, 0)?.end();
            if first >= self.bytes.len() {
                return Ok(None);
            }
            at = first;
        }
        let rest = self.bytes.split_off(at);
        let front = std::mem::replace(&mut self.bytes, rest);
        self.last = self.find_last()?;
        Ok(Some(front))
    }

    /// Empties the block, returning its bytes.
    pub(super) fn take(&mut self) -> Vec<u8> {
        self.last = None;
        std::mem::take(&mut self.bytes)
    }
}

/// The entry starting at `at` in a block: its key, its value, and where the next starts.
pub(super) fn entry_at(
    block: &[u8],
    at: usize,
) -> Result<(std::ops::Range<usize>, std::ops::Range<usize>, usize), Corrupt> {
    let span = span_at(block, at)?;
    Ok((
        span.key.0..span.key.1,
        span.value.0..span.value.1,
        span.end(),
    ))
}

/// The last key of a block's bytes.
pub(super) fn last_key(block: &[u8]) -> Result<Option<&[u8]>, Corrupt> {
    let mut last = None;
    for entry in entries(block) {
        last = Some(entry?.0);
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn decoded(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        entries(block)
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap()
    }

    proptest! {
        /// Edits of a block read as the same edits of a map, whatever their order; splits
        /// keep every entry, in order, on one side or the other.
        #[test]
        fn edits_read_as_a_map(ops in prop::collection::vec((0u16..300, prop::option::weighted(0.75, prop::collection::vec(any::<u8>(), 0..40))), 0..200)) {
            let mut block = EditBlock::default();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut split_off = Vec::new();
            for (k, v) in ops {
                let key = format!("{k:03}").into_bytes();
                match v {
                    Some(v) => {
                        let (before, _) = block.upsert(&key, &v).unwrap();
                        prop_assert_eq!(before, model.insert(key.clone(), v));
                    }
                    None => prop_assert_eq!(block.remove(&key).unwrap(), model.remove(&key)),
                }
                prop_assert_eq!(block.last_key(), model.keys().next_back().map(Vec::as_slice));
                prop_assert_eq!(last_key(block.bytes()).unwrap(), model.keys().next_back().map(Vec::as_slice));
                if block.len_bytes() > 400 {
                    let front = block.split_front().unwrap().unwrap();
                    let rest_first = decoded(block.bytes()).first().map(|(k, _)| k.clone());
                    prop_assert!(last_key(&front).unwrap().map(<[u8]>::to_vec) < rest_first);
                    for (k, v) in decoded(&front) {
                        prop_assert_eq!(model.remove(&k), Some(v));
                        split_off.push(k);
                    }
                }
            }
            let expected: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(decoded(block.bytes()), expected);
            for (k, v) in &model {
                prop_assert_eq!(find(block.bytes(), k).unwrap(), Some(v.as_slice()));
            }
            for k in split_off.iter().filter(|k| !model.contains_key(*k)) {
                prop_assert_eq!(find(block.bytes(), k).unwrap(), None);
            }
        }
    }

    #[test]
    fn entry_len_is_what_push_writes() {
        for (k, v) in [
            (0, 0),
            (1, 127),
            (127, 128),
            (128, 16_383),
            (3, 16_384),
            (200, 70_000),
        ] {
            let mut block = Vec::new();
            push(&mut block, &vec![1; k], &vec![2; v]);
            assert_eq!(
                entry_len(&vec![1; k], &vec![2; v]),
                block.len(),
                "key {k}, value {v}"
            );
        }
    }

    #[test]
    fn appends_in_key_order_are_reported_as_appends() {
        let mut block = EditBlock::default();
        assert_eq!(block.upsert(b"a", b"1").unwrap(), (None, true));
        assert_eq!(block.upsert(b"c", b"3").unwrap(), (None, true));
        assert_eq!(block.upsert(b"b", b"2").unwrap(), (None, false));
        assert_eq!(
            block.upsert(b"c", b"4").unwrap(),
            (Some(b"3".to_vec()), false)
        );
        assert_eq!(
            decoded(block.bytes()),
            [
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec()),
                (b"c".to_vec(), b"4".to_vec())
            ]
        );
    }

    #[test]
    fn a_block_of_one_large_entry_does_not_split() {
        let mut block = EditBlock::default();
        block.upsert(b"k", &[7; 10_000]).unwrap();
        assert_eq!(block.split_front().unwrap(), None);
        block.upsert(b"a", b"small").unwrap();
        let front = block.split_front().unwrap().unwrap();
        assert_eq!(decoded(&front), [(b"a".to_vec(), b"small".to_vec())]);
        assert_eq!(block.last_key(), Some(&b"k"[..]));
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let mut good = Vec::new();
        push(&mut good, b"key", b"value");
        for cut in 0..good.len() {
            let damaged = &good[..cut];
            if cut > 0 {
                assert!(entries(damaged).any(|e| e.is_err()), "cut at {cut}");
                assert!(EditBlock::from_bytes(damaged).is_err());
            }
        }
        assert!(find(&[0xff; 12], b"k").is_err(), "a varint that never ends");
        assert!(last_key(&[5, b'a']).is_err(), "a key longer than the block");
    }
}
