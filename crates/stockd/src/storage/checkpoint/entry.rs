//! The checkpoint byte formats, so that every byte read back can be checked.
//!
//! - An entry's stored value is a frame: `version(1) crc32c(4, LE) value`. The CRC32C
//!   covers the version, the scope, the namespace, the key's length, the key and the value,
//!   so a value moved under another key or scope fails as surely as a flipped bit.
//! - A scope record is `version(1) crc32c(4) lsn(8) count(2) [namespace(1) entries(8)
//!   digest(8)]*`, all little-endian, its CRC32C covering the scope as well.
//! - A layout record is `version(1) crc32c(4) value`, its CRC covering its name.
//!
//! The digest of a namespace is the XOR of `entry_hash` (64-bit rapidhash V3, a stable
//! algorithm) over its entries. XOR lets a checkpoint keep it up to date from the changed
//! entries alone: a put XORs out the old entry's hash and XORs in the new one, a delete
//! XORs the old one out. A load recomputes it with the count, so an entry that is missing,
//! extra or stale (a valid frame of an older value) shows as a mismatch of its namespace.

use std::collections::BTreeMap;
use std::fmt;

use rapidhash::v3::{RapidSecrets, RapidStreamHasherV3};

use super::{Namespace, Scope};

/// Version of these formats. Bump it with any change to them.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before a framed value: version (1) and CRC32C (4).
pub const FRAME_HEADER_BYTES: usize = 5;

/// Bytes of one namespace in a scope record: namespace (1), entries (8), digest (8).
const NAMESPACE_DIGEST_BYTES: usize = 17;

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

/// Frames a value for storage under `key`, checked right before it is written.
pub fn encode_entry(scope: Scope, namespace: Namespace, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + value.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&entry_crc(scope, namespace, key, value).to_le_bytes());
    out.extend_from_slice(value);
    debug_assert_eq!(
        decode_entry(scope, namespace, key, &out),
        Ok(value),
        "an entry frame is checked right before it is written"
    );
    out
}

/// Checks a stored frame and returns its value.
pub fn decode_entry<'a>(
    scope: Scope,
    namespace: Namespace,
    key: &[u8],
    frame: &'a [u8],
) -> Result<&'a [u8], Damage> {
    let value = check_header(frame, FRAME_HEADER_BYTES)?;
    let stored = stored_crc(frame);
    let computed = entry_crc(scope, namespace, key, value);
    if stored != computed {
        return Err(Damage::Checksum { stored, computed });
    }
    Ok(value)
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

/// Count and digest of one namespace of a scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NamespaceDigest {
    pub entries: u64,
    pub digest: u64,
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
    /// Drops namespaces left without entries (their digest is then zero).
    pub fn prune(&mut self) {
        self.namespaces.retain(|namespace, d| {
            assert!(
                d.entries > 0 || d.digest == 0,
                "{namespace}: no entries left but digest {:#x}: an old value was not XORed out",
                d.digest
            );
            d.entries > 0
        });
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
            d.entries > 0,
            "a scope record holds only non-empty namespaces"
        );
        out.push(namespace.0);
        out.extend_from_slice(&d.entries.to_le_bytes());
        out.extend_from_slice(&d.digest.to_le_bytes());
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
        };
        if d.entries == 0 || namespaces.insert(Namespace(chunk[0]), d).is_some() {
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

    #[test]
    fn frames_detect_flips_and_moves() {
        let frame = encode_entry(SCOPE, Namespace::HOLDS, b"cart-1", b"value");
        assert_eq!(
            decode_entry(SCOPE, Namespace::HOLDS, b"cart-1", &frame),
            Ok(&b"value"[..])
        );
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x01;
            assert!(decode_entry(SCOPE, Namespace::HOLDS, b"cart-1", &bad).is_err());
        }
        let other = Scope { shard: 3, ..SCOPE };
        assert!(decode_entry(other, Namespace::HOLDS, b"cart-1", &frame).is_err());
        assert!(decode_entry(SCOPE, Namespace::ORDERS, b"cart-1", &frame).is_err());
        assert!(decode_entry(SCOPE, Namespace::HOLDS, b"cart-2", &frame).is_err());
        assert!(matches!(
            decode_entry(SCOPE, Namespace::HOLDS, b"cart-1", &frame[..3]),
            Err(Damage::Truncated { .. })
        ));
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
