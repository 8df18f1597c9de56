//! Segment files: their names, their header, and the steps that create, activate and
//! recycle them, each made durable (data synced, then the directory synced) before the
//! next step relies on it.
//!
//! A log directory holds `seg-{epoch:016x}.log` files (the live log, epochs contiguous,
//! oldest first) and `free-{id:016x}.log` files (zero-filled or recycled, ready to be
//! activated). A segment is `SEGMENT_HEADER_LEN` bytes of header, then frames, then an
//! all-zero end marker. Lifecycle:
//! 1. create `free-N`, write zeros over its whole length, `fdatasync`, sync the directory;
//! 2. activate: write the header (epoch, first LSN) and an end marker, `fdatasync`, rename
//!    to `seg-E`, sync the directory: only then are records written into it;
//! 3. recycle: once a checkpoint covers every record, rename `seg-E` to a free name and
//!    sync the directory. Its old frames stay, and are told from new ones by their LSNs,
//!    which are all below the first LSN of its next header.

use super::file::{LogDir, LogFile};
use super::frame::FRAME_HEADER_LEN;
use super::{LogError, Lsn};

/// Bytes reserved for the segment header; records start after it. One 4 KiB page, so
/// that record writes never share a page with the header.
pub const SEGMENT_HEADER_LEN: usize = 4096;

/// Identifies a stockd segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"STKDLOG\0";

/// Version of the segment and frame layout. Bump it with any change to either.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;

/// Bytes of the header actually used (the rest of `SEGMENT_HEADER_LEN` is zero).
const HEADER_USED_LEN: usize = 48;

const _: () = assert!(HEADER_USED_LEN <= SEGMENT_HEADER_LEN);
const _: () = assert!(SEGMENT_HEADER_LEN.is_multiple_of(super::frame::FRAME_ALIGN));

/// The header at the start of a live segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Position of the segment in its log: the next segment has `epoch + 1`.
    pub epoch: u64,
    /// LSN of the first record in the segment (the one after the previous segment's last).
    pub first_lsn: Lsn,
    /// The file's length when it was activated.
    pub segment_bytes: u64,
}

impl SegmentHeader {
    /// Layout: magic (8) | version u32 | reserved u32 | epoch u64 | first_lsn u64 |
    /// segment_bytes u64 | reserved u32 | crc32c u32 of bytes 0..44.
    pub fn encode(&self) -> [u8; HEADER_USED_LEN] {
        let mut out = [0u8; HEADER_USED_LEN];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        out[32..40].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..44]);
        out[44..48].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, &'static str> {
        let b = bytes
            .get(..HEADER_USED_LEN)
            .ok_or("segment shorter than its header")?;
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        if b[0..8] != SEGMENT_MAGIC {
            return Err("not a stockd segment (bad magic)");
        }
        if u32_at(44) != crc32c::crc32c(&b[0..44]) {
            return Err("segment header checksum mismatch");
        }
        if u32_at(8) != SEGMENT_FORMAT_VERSION {
            return Err("segment format version unknown to this stockd");
        }
        let header = SegmentHeader {
            epoch: u64_at(16),
            first_lsn: u64_at(24),
            segment_bytes: u64_at(32),
        };
        if header.first_lsn == 0 || header.epoch == 0 {
            return Err("segment header with epoch or first LSN 0");
        }
        Ok(header)
    }
}

/// What a file name in a log directory means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentName {
    Live { epoch: u64 },
    Free { id: u64 },
}

pub fn live_name(epoch: u64) -> String {
    format!("seg-{epoch:016x}.log")
}

pub fn free_name(id: u64) -> String {
    format!("free-{id:016x}.log")
}

/// Parses a name made by `live_name` or `free_name`; other files are not the log's.
pub fn parse_name(name: &str) -> Option<SegmentName> {
    let hex = |s: &str| {
        (s.len() == 16)
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
    };
    let stem = name.strip_suffix(".log")?;
    if let Some(epoch) = stem.strip_prefix("seg-").and_then(hex) {
        return Some(SegmentName::Live { epoch });
    }
    stem.strip_prefix("free-")
        .and_then(hex)
        .map(|id| SegmentName::Free { id })
}

/// Creates a free segment: zero-filled over `segment_bytes`, synced, its name durable.
pub fn create_free<D: LogDir>(dir: &D, id: u64, segment_bytes: u64) -> Result<String, LogError> {
    let name = free_name(id);
    let file_name = dir.describe(&name);
    let err = |op| {
        let file_name = file_name.clone();
        move |e| LogError::io(op, file_name, e)
    };
    let mut file = dir.create(&name).map_err(err("create"))?;
    file.allocate(segment_bytes).map_err(err("zero-fill"))?;
    file.sync_data().map_err(err("sync"))?;
    dir.sync_dir()
        .map_err(err("sync directory after creating"))?;
    Ok(name)
}

/// Turns the free segment `free` into the live segment of `header`, returning it open.
/// The header and an end marker are durable before the rename, and the rename is durable
/// before this returns, so no record is ever written into a segment recovery would skip.
pub fn activate<D: LogDir>(
    dir: &D,
    free: &str,
    header: SegmentHeader,
) -> Result<(String, D::File), LogError> {
    let name = live_name(header.epoch);
    let err = |op, file: &str| {
        let file = dir.describe(file);
        move |e| LogError::io(op, file, e)
    };
    let mut file = dir.open(free).map_err(err("open", free))?;
    let mut block = vec![0u8; SEGMENT_HEADER_LEN + FRAME_HEADER_LEN];
    block[..HEADER_USED_LEN].copy_from_slice(&header.encode());
    file.write_at(0, &block)
        .map_err(err("write header", free))?;
    file.sync_data().map_err(err("sync header", free))?;
    dir.rename(free, &name).map_err(err("rename", free))?;
    dir.sync_dir()
        .map_err(err("sync directory after renaming", &name))?;
    Ok((name, file))
}

/// Makes the live segment `live` free again under the name `free_name(id)`.
pub fn recycle<D: LogDir>(dir: &D, live: &str, id: u64) -> Result<String, LogError> {
    let name = free_name(id);
    dir.rename(live, &name)
        .map_err(|e| LogError::io("rename", dir.describe(live), e))?;
    dir.sync_dir()
        .map_err(|e| LogError::io("sync directory after recycling", dir.describe(&name), e))?;
    Ok(name)
}

/// Removes a segment file for good, durably.
pub fn remove<D: LogDir>(dir: &D, name: &str) -> Result<(), LogError> {
    dir.remove(name)
        .map_err(|e| LogError::io("remove", dir.describe(name), e))?;
    dir.sync_dir()
        .map_err(|e| LogError::io("sync directory after removing", dir.describe(name), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_detect_damage() {
        let h = SegmentHeader {
            epoch: 3,
            first_lsn: 77,
            segment_bytes: 1 << 20,
        };
        let mut bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        bytes[25] ^= 1;
        assert_eq!(
            SegmentHeader::decode(&bytes),
            Err("segment header checksum mismatch")
        );
        assert!(SegmentHeader::decode(&[0u8; 64]).is_err());
    }

    #[test]
    fn names_parse_back() {
        assert_eq!(
            parse_name(&live_name(10)),
            Some(SegmentName::Live { epoch: 10 })
        );
        assert_eq!(parse_name(&free_name(3)), Some(SegmentName::Free { id: 3 }));
        assert_eq!(parse_name("seg-12.log"), None);
        assert_eq!(parse_name("notes.txt"), None);
    }
}
