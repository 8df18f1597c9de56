//! The checkpoint byte formats, so that every byte read back can be checked.
//!
//! - Entries are stored in pages: all the entries of one namespace of one scope whose key
//!   falls in one hash bucket (`bucket_of`), in one stored value, so that a load reads a
//!   few thousand values instead of one per entry, and a checkpoint rewrites only the
//!   pages it changes. A page is `version(1) crc32c(4, LE) count(4, LE)` and then, sorted
//!   by key, `key_len(2, LE) value_len(4, LE) key value entry_crc32c(4, LE)` per entry.
//!   The page's CRC32C covers the version, the scope, the namespace, the bucket and every
//!   byte after the CRC, so a page moved under another bucket or scope fails as surely as
//!   a flipped bit; each entry's CRC32C covers the version, the scope, the namespace, the
//!   key's length, the key and the value, and names the damaged entry when a page fails.
//! - A scope record is `version(1) crc32c(4) lsn(8) count(2) [namespace(1) entries(8)
//!   digest(8) bucket_bits(1)]*`, all little-endian, its CRC32C covering the scope as well;
//!   a namespace byte's `SET_BIT` says its pages are in page set 1.
//! - A layout record is `version(1) crc32c(4) value`, its CRC covering its name.
//!
//! The digest of a namespace is the XOR of `entry_hash` (64-bit rapidhash V3, a stable
//! algorithm) over its entries. XOR lets a checkpoint keep it up to date from the changed
//! entries alone: a put XORs out the old entry's hash and XORs in the new one, a delete
//! XORs the old one out. A load recomputes it with the count, so an entry that is missing,
//! extra or stale (a valid page of older values) shows as a mismatch of its namespace.

use std::collections::BTreeMap;
use std::fmt;

use rapidhash::v3::{RapidSecrets, RapidStreamHasherV3, rapidhash_v3_seeded};

use super::{Namespace, Scope};

/// Version of these formats. Bump it with any change to them.
pub const FORMAT_VERSION: u8 = 2;

/// Bytes before a framed value: version (1) and CRC32C (4).
pub const FRAME_HEADER_BYTES: usize = 5;

/// The bit of a stored namespace byte (in a page key and a scope record) that names page
/// set 1; namespaces are below it.
pub const SET_BIT: u8 = 0x80;

/// Bytes of one namespace in a scope record: namespace (1, its page set in `SET_BIT`),
/// entries (8), digest (8), bucket bits (1).
const NAMESPACE_DIGEST_BYTES: usize = 18;

/// Bytes of a page before its entries: header and entry count (4).
pub const PAGE_FIXED_BYTES: usize = FRAME_HEADER_BYTES + 4;

/// Bytes of an entry in a page besides its key and value: lengths (2 + 4) and CRC (4).
pub const PAGE_ENTRY_OVERHEAD_BYTES: usize = 10;

/// Most bucket bits of a namespace: 2^20 pages hold far more than a shard's entries.
pub const BUCKET_BITS_MAX: u8 = 20;

/// Fixed secrets of the bucket hash: changing them moves every stored entry.
const BUCKET_SECRETS: RapidSecrets = RapidSecrets::seed(0x5374_6f63_6b64_4250);

/// Bytes of a scope record before its namespaces: header, LSN (8), namespace count (2).
const SCOPE_RECORD_FIXED_BYTES: usize = FRAME_HEADER_BYTES + 8 + 2;

/// Fixed secrets of the entry hash: changing them changes every stored digest.
const DIGEST_SECRETS: RapidSecrets = RapidSecrets::seed(0x5374_6f63_6b64_4350);

/// Why stored bytes cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Shorter than its fixed part.
    Truncated { bytes: usize, needed: usize },
    /// Written by a format this stockd does not read (or a flipped version byte).
    Version(u8),
    /// The stored checksum is not the one of the stored bytes.
    Checksum { stored: u32, computed: u32 },
    /// Well-checksummed but inconsistent (a bug, or a collision).
    Malformed(&'static str),
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Truncated { bytes, needed } => {
                write!(
                    f,
                    "{bytes} bytes, shorter than the {needed} of its fixed part"
                )
            }
            Damage::Version(v) => {
                write!(f, "format version {v}, this stockd reads {FORMAT_VERSION}")
            }
            Damage::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Damage::Malformed(what) => write!(f, "malformed: {what}"),
        }
    }
}

/// The bytes that precede the key and value in an entry's checksum and hash.
fn entry_preamble(scope: Scope, namespace: Namespace, key: &[u8]) -> [u8; 14] {
    let mut p = [0u8; 14];
    p[0] = FORMAT_VERSION;
    p[1..5].copy_from_slice(&scope.generation.to_be_bytes());
    p[5..9].copy_from_slice(&scope.shard.to_be_bytes());
    p[9] = namespace.0;
    let key_len = u32::try_from(key.len()).expect("keys are bounded by KEY_BYTES_MAX");
    p[10..14].copy_from_slice(&key_len.to_le_bytes());
    p
}

/// The CRC32C stored in an entry's frame.
fn entry_crc(scope: Scope, namespace: Namespace, key: &[u8], value: &[u8]) -> u32 {
    let preamble = entry_preamble(scope, namespace, key);
    let crc = crc32c::crc32c(&preamble);
    let crc = crc32c::crc32c_append(crc, key);
    crc32c::crc32c_append(crc, value)
}

/// An entry's contribution to its namespace's digest.
pub fn entry_hash(scope: Scope, namespace: Namespace, key: &[u8], value: &[u8]) -> u64 {
    let mut hasher = RapidStreamHasherV3::new(&DIGEST_SECRETS);
    hasher.write(&entry_preamble(scope, namespace, key));
    hasher.write(key);
    hasher.write(value);
    hasher.finish()
}

/// Checks length and version; returns the bytes after the frame header.
fn check_header(bytes: &[u8], needed: usize) -> Result<&[u8], Damage> {
    if bytes.len() < needed {
        return Err(Damage::Truncated {
            bytes: bytes.len(),
            needed,
        });
    }
    if bytes[0] != FORMAT_VERSION {
        return Err(Damage::Version(bytes[0]));
    }
    Ok(&bytes[FRAME_HEADER_BYTES..])
}

fn stored_crc(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[1..FRAME_HEADER_BYTES].try_into().expect("4 bytes"))
}

/// The bucket of `key` among `1 << bits`: the page it is stored in.
pub fn bucket_of(key: &[u8], bits: u8) -> u32 {
    if bits == 0 {
        return 0;
    }
    (rapidhash_v3_seeded(key, &BUCKET_SECRETS) >> (64 - u32::from(bits))) as u32
}

fn page_crc(scope: Scope, namespace: Namespace, bucket: u32, body: &[u8]) -> u32 {
    let mut p = [0u8; 14];
    p[0] = FORMAT_VERSION;
    p[1..5].copy_from_slice(&scope.generation.to_be_bytes());
    p[5..9].copy_from_slice(&scope.shard.to_be_bytes());
    p[9] = namespace.0;
    p[10..14].copy_from_slice(&bucket.to_be_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&p), body)
}

/// Frames a page of entries, sorted by key (each key once).
pub fn encode_page<'a>(
    scope: Scope,
    namespace: Namespace,
    bucket: u32,
    entries: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<u8> {
    let count = u32::try_from(entries.len()).expect("a page holds under 2^32 entries");
    let mut out = vec![FORMAT_VERSION, 0, 0, 0, 0];
    out.extend_from_slice(&count.to_le_bytes());
    for (key, value) in entries {
        let key_len = u16::try_from(key.len()).expect("keys are bounded by KEY_BYTES_MAX");
        let value_len = u32::try_from(value.len()).expect("values are bounded");
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(&value_len.to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        out.extend_from_slice(&entry_crc(scope, namespace, key, value).to_le_bytes());
    }
    let crc = page_crc(scope, namespace, bucket, &out[FRAME_HEADER_BYTES..]);
    out[1..FRAME_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    debug_assert!(
        decode_page(scope, namespace, bucket, &out).is_ok(),
        "a page is checked right before it is written"
    );
    out
}

/// Where one entry lies in its page's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntrySpan {
    pub key_start: u32,
    pub key_len: u16,
    pub value_len: u32,
}

impl EntrySpan {
    pub fn key<'a>(&self, page: &'a [u8]) -> &'a [u8] {
        let start = self.key_start as usize;
        &page[start..start + usize::from(self.key_len)]
    }

    pub fn value<'a>(&self, page: &'a [u8]) -> &'a [u8] {
        let start = self.key_start as usize + usize::from(self.key_len);
        &page[start..start + self.value_len as usize]
    }
}

/// Why a page cannot be used: the entry that fails its own checksum, when one does, or
/// the page as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageDamage {
    Entry { key: Vec<u8>, damage: Damage },
    Page(Damage),
}

/// The entries of a page, without checking their checksums (the caller checked the
/// page's, or will check each entry's).
fn page_spans(page: &[u8]) -> Result<(Vec<EntrySpan>, Vec<u32>), Damage> {
    let count = u32::from_le_bytes(
        page[FRAME_HEADER_BYTES..PAGE_FIXED_BYTES]
            .try_into()
            .expect("4 bytes"),
    );
    let count = count as usize;
    if count > page.len() / PAGE_ENTRY_OVERHEAD_BYTES {
        return Err(Damage::Malformed("entry count larger than the page"));
    }
    let mut spans = Vec::with_capacity(count);
    let mut crcs = Vec::with_capacity(count);
    let mut at = PAGE_FIXED_BYTES;
    for _ in 0..count {
        let Some(head) = page.get(at..at + 6) else {
            return Err(Damage::Malformed("an entry runs past the page"));
        };
        let key_len = u16::from_le_bytes([head[0], head[1]]);
        let value_len = u32::from_le_bytes(head[2..6].try_into().expect("4 bytes"));
        let key_start = at + 6;
        let end = key_start + usize::from(key_len) + value_len as usize;
        let Some(crc) = page.get(end..end + 4) else {
            return Err(Damage::Malformed("an entry runs past the page"));
        };
        crcs.push(u32::from_le_bytes(crc.try_into().expect("4 bytes")));
        spans.push(EntrySpan {
            key_start: u32::try_from(key_start)
                .map_err(|_| Damage::Malformed("page over 4 GiB"))?,
            key_len,
            value_len,
        });
        at = end + 4;
    }
    if at != page.len() {
        return Err(Damage::Malformed("bytes after the last entry"));
    }
    Ok((spans, crcs))
}

/// The entry count a page's header claims, unchecked (for statistics of a removal).
pub fn page_entry_count(page: &[u8]) -> u64 {
    page.get(FRAME_HEADER_BYTES..PAGE_FIXED_BYTES)
        .map_or(0, |b| {
            u64::from(u32::from_le_bytes(b.try_into().expect("4 bytes")))
        })
}

/// Checks a stored page and returns where its entries lie. Its own checksum is checked
/// first (one pass); only when it fails are the entries' checksums used, to name the
/// damaged entry.
pub fn decode_page(
    scope: Scope,
    namespace: Namespace,
    bucket: u32,
    page: &[u8],
) -> Result<Vec<EntrySpan>, PageDamage> {
    let body = check_header(page, PAGE_FIXED_BYTES).map_err(PageDamage::Page)?;
    let stored = stored_crc(page);
    let computed = page_crc(scope, namespace, bucket, body);
    if stored == computed {
        return page_spans(page)
            .map(|(spans, _)| spans)
            .map_err(PageDamage::Page);
    }
    if let Ok((spans, crcs)) = page_spans(page) {
        for (span, stored) in spans.iter().zip(crcs) {
            let (key, value) = (span.key(page), span.value(page));
            let computed = entry_crc(scope, namespace, key, value);
            if stored != computed {
                let damage = Damage::Checksum { stored, computed };
                return Err(PageDamage::Entry {
                    key: key.to_vec(),
                    damage,
                });
            }
        }
    }
    Err(PageDamage::Page(Damage::Checksum { stored, computed }))
}

/// Count and digest of one namespace of a scope, and how its entries are paged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NamespaceDigest {
    pub entries: u64,
    pub digest: u64,
    /// The namespace's entries are in `1 << bucket_bits` pages (`bucket_of`).
    pub bucket_bits: u8,
    /// The page set (0 or 1) its pages are stored under: a checkpoint too large for one
    /// batch rewrites a namespace into the other set, then names it here (`rewrite`).
    pub set: u8,
}

impl NamespaceDigest {
    /// Accounts for an entry that is now stored.
    pub fn add(&mut self, hash: u64) {
        self.entries += 1;
        self.digest ^= hash;
    }

    /// Accounts for an entry that is no longer stored.
    pub fn remove(&mut self, hash: u64) {
        assert!(self.entries > 0, "a digest never counts below zero entries");
        self.entries -= 1;
        self.digest ^= hash;
    }
}

/// The record of a scope's last checkpoint, written in the same batch as its entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeRecord {
    pub lsn_covered: u64,
    /// Only namespaces holding entries.
    pub namespaces: BTreeMap<Namespace, NamespaceDigest>,
}

impl ScopeRecord {
    /// Drops namespaces left without entries (their digest is then zero), except those in
    /// page set 1: an absent namespace is in set 0, and leftover pages of set 0 (a rewrite's)
    /// must stay ignored.
    pub fn prune(&mut self) {
        self.namespaces.retain(|namespace, d| {
            assert!(
                d.entries > 0 || d.digest == 0,
                "{namespace}: no entries left but digest {:#x}: an old value was not XORed out",
                d.digest
            );
            d.entries > 0 || d.set == 1
        });
    }

    /// The page set a namespace's current pages are stored under.
    pub fn set_of(&self, namespace: Namespace) -> u8 {
        self.namespaces.get(&namespace).map_or(0, |d| d.set)
    }

    pub fn entries(&self) -> u64 {
        self.namespaces.values().map(|d| d.entries).sum()
    }
}

fn scope_record_crc(scope: Scope, body: &[u8]) -> u32 {
    let mut preamble = [0u8; 9];
    preamble[0] = FORMAT_VERSION;
    preamble[1..5].copy_from_slice(&scope.generation.to_be_bytes());
    preamble[5..9].copy_from_slice(&scope.shard.to_be_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&preamble), body)
}

/// Encodes a scope record, checked right before it is written.
pub fn encode_scope_record(scope: Scope, record: &ScopeRecord) -> Vec<u8> {
    let count = u16::try_from(record.namespaces.len()).expect("at most 256 namespaces");
    let mut out = vec![FORMAT_VERSION, 0, 0, 0, 0];
    out.extend_from_slice(&record.lsn_covered.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for (namespace, d) in &record.namespaces {
        assert!(
            d.entries > 0 || d.set == 1,
            "a scope record holds only non-empty namespaces (or emptied ones of set 1)"
        );
        assert!(
            namespace.0 < SET_BIT && d.set <= 1,
            "namespace or set out of range"
        );
        out.push(namespace.0 | (d.set * SET_BIT));
        out.extend_from_slice(&d.entries.to_le_bytes());
        out.extend_from_slice(&d.digest.to_le_bytes());
        out.push(d.bucket_bits);
    }
    let crc = scope_record_crc(scope, &out[FRAME_HEADER_BYTES..]);
    out[1..FRAME_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        decode_scope_record(scope, &out).as_ref(),
        Ok(record),
        "a scope record is checked right before it is written"
    );
    out
}

/// Checks and decodes a scope record.
pub fn decode_scope_record(scope: Scope, bytes: &[u8]) -> Result<ScopeRecord, Damage> {
    let body = check_header(bytes, SCOPE_RECORD_FIXED_BYTES)?;
    let stored = stored_crc(bytes);
    let computed = scope_record_crc(scope, body);
    if stored != computed {
        return Err(Damage::Checksum { stored, computed });
    }
    let lsn_covered = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
    let count = usize::from(u16::from_le_bytes(body[8..10].try_into().expect("2 bytes")));
    let digests = &body[10..];
    if digests.len() != count * NAMESPACE_DIGEST_BYTES {
        return Err(Damage::Malformed("namespace count disagrees with length"));
    }
    let mut namespaces = BTreeMap::new();
    for chunk in digests.chunks_exact(NAMESPACE_DIGEST_BYTES) {
        let d = NamespaceDigest {
            entries: u64::from_le_bytes(chunk[1..9].try_into().expect("8 bytes")),
            digest: u64::from_le_bytes(chunk[9..17].try_into().expect("8 bytes")),
            bucket_bits: chunk[17],
            set: chunk[0] / SET_BIT,
        };
        if d.bucket_bits > BUCKET_BITS_MAX {
            return Err(Damage::Malformed("bucket bits over BUCKET_BITS_MAX"));
        }
        let namespace = Namespace(chunk[0] % SET_BIT);
        if (d.entries == 0 && d.set == 0) || namespaces.insert(namespace, d).is_some() {
            return Err(Damage::Malformed("empty or repeated namespace"));
        }
    }
    Ok(ScopeRecord {
        lsn_covered,
        namespaces,
    })
}

fn meta_crc(name: &str, value: &[u8]) -> u32 {
    let name_len = u32::try_from(name.len()).expect("names are bounded");
    let crc = crc32c::crc32c(&[FORMAT_VERSION]);
    let crc = crc32c::crc32c_append(crc, &name_len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, name.as_bytes());
    crc32c::crc32c_append(crc, value)
}

/// Frames a layout record.
pub fn encode_meta(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    out.extend_from_slice(&meta_crc(name, value).to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Checks a layout record and returns its value.
pub fn decode_meta<'a>(name: &str, bytes: &'a [u8]) -> Result<&'a [u8], Damage> {
    let value = check_header(bytes, FRAME_HEADER_BYTES)?;
    let stored = stored_crc(bytes);
    let computed = meta_crc(name, value);
    if stored != computed {
        return Err(Damage::Checksum { stored, computed });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPE: Scope = Scope {
        generation: 1,
        shard: 2,
    };

    fn page(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        encode_page(SCOPE, Namespace::HOLDS, 7, entries.iter().copied())
    }

    #[test]
    fn pages_round_trip_and_detect_flips_and_moves() {
        let entries: [(&[u8], &[u8]); 2] = [(b"cart-1", b"value"), (b"cart-2", b"other")];
        let frame = page(&entries);
        let spans = decode_page(SCOPE, Namespace::HOLDS, 7, &frame).unwrap();
        let read: Vec<_> = spans
            .iter()
            .map(|s| (s.key(&frame), s.value(&frame)))
            .collect();
        assert_eq!(read, entries);
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x01;
            assert!(
                decode_page(SCOPE, Namespace::HOLDS, 7, &bad).is_err(),
                "byte {i}"
            );
        }
        let other = Scope { shard: 3, ..SCOPE };
        assert!(decode_page(other, Namespace::HOLDS, 7, &frame).is_err());
        assert!(decode_page(SCOPE, Namespace::ORDERS, 7, &frame).is_err());
        assert!(decode_page(SCOPE, Namespace::HOLDS, 8, &frame).is_err());
        assert!(matches!(
            decode_page(SCOPE, Namespace::HOLDS, 7, &frame[..3]),
            Err(PageDamage::Page(Damage::Truncated { .. }))
        ));
        assert_eq!(page_entry_count(&frame), 2);
    }

    #[test]
    fn a_damaged_value_names_its_entry() {
        let frame = page(&[(b"cart-1", b"value"), (b"cart-2", b"other")]);
        let last_value_byte = frame.len() - 5;
        let mut bad = frame.clone();
        bad[last_value_byte] ^= 0x10;
        match decode_page(SCOPE, Namespace::HOLDS, 7, &bad) {
            Err(PageDamage::Entry { key, .. }) => assert_eq!(key, b"cart-2"),
            other => panic!("{other:?}"),
        }
        let mut bad = frame.clone();
        bad[0] = 9;
        assert_eq!(
            decode_page(SCOPE, Namespace::HOLDS, 7, &bad),
            Err(PageDamage::Page(Damage::Version(9)))
        );
    }

    #[test]
    fn buckets_spread_keys_and_stay_within_bounds() {
        assert_eq!(bucket_of(b"anything", 0), 0);
        let mut seen = [0u32; 16];
        for i in 0..1600 {
            seen[bucket_of(format!("SKU-{i}:DC1").as_bytes(), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|n| (50..150).contains(n)), "{seen:?}");
        assert!(bucket_of(b"k", BUCKET_BITS_MAX) < 1 << BUCKET_BITS_MAX);
    }

    #[test]
    fn scope_records_round_trip_and_detect_flips() {
        let mut record = ScopeRecord {
            lsn_covered: 77,
            ..ScopeRecord::default()
        };
        record
            .namespaces
            .entry(Namespace::POSITIONS)
            .or_default()
            .add(entry_hash(SCOPE, Namespace::POSITIONS, b"k", b"v"));
        let bytes = encode_scope_record(SCOPE, &record);
        assert_eq!(decode_scope_record(SCOPE, &bytes), Ok(record));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x80;
            assert!(decode_scope_record(SCOPE, &bad).is_err());
        }
        let other = Scope { shard: 9, ..SCOPE };
        assert!(decode_scope_record(other, &bytes).is_err());
    }

    #[test]
    fn digest_is_order_free_and_undoable() {
        let h = |k: &[u8], v: &[u8]| entry_hash(SCOPE, Namespace::ORDERS, k, v);
        let mut a = NamespaceDigest::default();
        a.add(h(b"1", b"x"));
        a.add(h(b"2", b"y"));
        let mut b = NamespaceDigest::default();
        b.add(h(b"2", b"y"));
        b.add(h(b"1", b"old"));
        b.remove(h(b"1", b"old"));
        b.add(h(b"1", b"x"));
        assert_eq!(a, b);
        assert_ne!(h(b"1", b"x"), h(b"1", b"y"));
    }

    #[test]
    fn layout_records_cover_their_name() {
        let bytes = encode_meta("layout", b"g2 s4");
        assert_eq!(decode_meta("layout", &bytes), Ok(&b"g2 s4"[..]));
        assert!(decode_meta("other", &bytes).is_err());
    }
}
