//! One record on disk: a 24-byte header `[len u32 | crc32c u32 | lsn u64 | term u64]`, the
//! payload, and zero padding to `FRAME_ALIGN`. All integers are little-endian.
//!
//! The CRC32C covers the `len` field, `lsn`, `term` and the payload (everything in the
//! frame but the CRC itself and the padding), so a damaged length is caught as surely as
//! a damaged payload. An all-zero header is the end marker: preallocated space is zero,
//! and every group write ends with one.

use super::Lsn;

/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 24;

/// Frames start at multiples of this in a segment. It makes the recovery scan for stray
/// valid frames after the end of the log 8 times cheaper, at a cost of at most 7 bytes of
/// padding per record.
pub const FRAME_ALIGN: usize = 8;

/// Offset of the `lsn` field in a frame header.
pub const LSN_AT: usize = 8;

/// Largest payload of one record (1 MiB). Bounds the memory a single corrupt length can
/// make recovery consider, and keeps one record well inside a group and a segment.
pub const RECORD_BYTES_MAX: usize = 1 << 20;

const _: () = assert!(FRAME_HEADER_LEN.is_multiple_of(FRAME_ALIGN));
const _: () = assert!(FRAME_ALIGN.is_power_of_two());
const _: () = assert!(RECORD_BYTES_MAX <= u32::MAX as usize);

/// A frame read back and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub lsn: Lsn,
    pub term: u64,
    pub payload: &'a [u8],
}

/// What the bytes at a frame position hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole frame with a matching CRC; `len` is its size on disk, padding included.
    Valid { frame: Frame<'a>, len: usize },
    /// An all-zero header: the end of what was written.
    End,
    /// Anything else: a torn write, garbage, or damage. The reason is for reports.
    Invalid(&'static str),
}

/// The size on disk of a frame with a payload of `payload_len` bytes, padding included.
pub const fn frame_len(payload_len: usize) -> usize {
    (FRAME_HEADER_LEN + payload_len).next_multiple_of(FRAME_ALIGN)
}

fn crc(header: &[u8], payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&header[0..4]);
    let c = crc32c::crc32c_append(c, &header[8..FRAME_HEADER_LEN]);
    crc32c::crc32c_append(c, payload)
}

/// Appends one frame to `out`. A payload over `RECORD_BYTES_MAX` is a programmer error:
/// callers check it first and return `LogError::RecordTooLarge`.
pub fn encode(out: &mut Vec<u8>, lsn: Lsn, term: u64, payload: &[u8]) {
    encode_parts(out, lsn, term, &[], payload);
}

/// Appends one frame whose payload is `head` then `payload` (a shared log's tag before
/// the record), without joining them first.
pub fn encode_parts(out: &mut Vec<u8>, lsn: Lsn, term: u64, head: &[u8], payload: &[u8]) {
    let len = head.len() + payload.len();
    assert!(
        len <= RECORD_BYTES_MAX,
        "record size checked before encoding"
    );
    assert!(lsn > 0, "LSNs start at 1");
    let start = out.len();
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    header[8..16].copy_from_slice(&lsn.to_le_bytes());
    header[16..24].copy_from_slice(&term.to_le_bytes());
    let sum = crc32c::crc32c_append(crc(&header, head), payload);
    header[4..8].copy_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(head);
    out.extend_from_slice(payload);
    out.resize(start + frame_len(len), 0);
    debug_assert!(
        matches!(decode(&out[start..]), Decoded::Valid { frame, .. }
            if frame.lsn == lsn && frame.term == term && frame.payload.len() == len),
        "a frame is checked right after it is encoded"
    );
}

/// Reads the LSN field of a header without checking anything: for the cheap first test
/// of the scan for stray frames.
pub fn peek_lsn(bytes: &[u8]) -> Option<Lsn> {
    let raw = bytes.get(LSN_AT..LSN_AT + 8)?;
    Some(u64::from_le_bytes(raw.try_into().expect("8 bytes")))
}

/// Decodes the frame at the start of `bytes` (which runs to the end of the segment).
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    let Some(header) = bytes.get(..FRAME_HEADER_LEN) else {
        return Decoded::Invalid("header runs past the end of the segment");
    };
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let field = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let stored = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if len > RECORD_BYTES_MAX {
        return Decoded::Invalid("length exceeds RECORD_BYTES_MAX");
    }
    let Some(payload) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Decoded::Invalid("payload runs past the end of the segment");
    };
    if crc(header, payload) != stored {
        return Decoded::Invalid("checksum mismatch");
    }
    let lsn = field(8);
    if lsn == 0 {
        return Decoded::Invalid("LSN 0");
    }
    let frame = Frame {
        lsn,
        term: field(16),
        payload,
    };
    Decoded::Valid {
        frame,
        len: frame_len(len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_padding() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, 3, b"hello");
        assert_eq!(buf.len(), frame_len(5));
        assert_eq!(buf.len() % FRAME_ALIGN, 0);
        let Decoded::Valid { frame, len } = decode(&buf) else {
            panic!("valid frame expected");
        };
        assert_eq!(
            (frame.lsn, frame.term, frame.payload, len),
            (7, 3, &b"hello"[..], 32)
        );
        encode(&mut buf, 8, 3, b"");
        assert!(matches!(decode(&buf[32..]), Decoded::Valid { len: 24, .. }));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 0, b"payload bytes");
        for byte in 0..FRAME_HEADER_LEN + 13 {
            if (4..8).contains(&byte) {
                continue; // the CRC itself: a flip there is a mismatch too, checked below
            }
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    matches!(decode(&damaged), Decoded::Invalid(_)),
                    "flip at byte {byte} bit {bit} not caught"
                );
            }
        }
        let mut damaged = buf.clone();
        damaged[5] ^= 0x10;
        assert_eq!(decode(&damaged), Decoded::Invalid("checksum mismatch"));
    }

    #[test]
    fn zeros_are_the_end_and_short_bytes_are_invalid() {
        assert_eq!(decode(&[0u8; 64]), Decoded::End);
        let mut buf = Vec::new();
        encode(&mut buf, 1, 0, b"abcdefgh");
        assert!(matches!(decode(&buf[..20]), Decoded::Invalid(_)));
        assert!(matches!(decode(&buf[..30]), Decoded::Invalid(_)));
    }
}
