//! Reading the event log's segment files directly: the live segments and their first
//! events (at open), and the frames of one segment from a given offset (reads).
//!
//! The writer owns the `Log`; readers open the same files by name and read only frames up
//! to the published sequence, which are durable and never rewritten until the segment is
//! recycled. A recycled segment is told by its header (another first LSN) or by a frame
//! whose LSN is not the one expected: the caller then reports the sequence as gone.

use super::record::EventRecord;
use crate::storage::backend::AnyDir;
use crate::storage::log::frame::{self, Decoded, FRAME_HEADER_LEN};
use crate::storage::log::segment::{self, SEGMENT_HEADER_LEN, SegmentHeader, SegmentName};
use crate::storage::log::{LogDir, LogError, LogFile, Lsn};

/// Bytes read from a segment at a time.
pub const READ_CHUNK_BYTES: usize = 256 << 10;

/// One live segment of the event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegInfo {
    pub epoch: u64,
    pub first_seq: Lsn,
    /// The time of its first event; `i64::MAX` while it holds none.
    pub first_at: i64,
}

/// The live segments, oldest first, with their first event's time.
pub fn list(dir: &AnyDir) -> Result<Vec<SegInfo>, LogError> {
    let names = dir
        .list()
        .map_err(|e| LogError::io("list", dir.describe(""), e))?;
    let mut epochs: Vec<u64> = names
        .iter()
        .filter_map(|n| match segment::parse_name(n) {
            Some(SegmentName::Live { epoch }) => Some(epoch),
            _ => None,
        })
        .collect();
    epochs.sort_unstable();
    let mut out = Vec::with_capacity(epochs.len());
    for epoch in epochs {
        let mut cursor = Cursor::open(dir, epoch)?;
        let first_seq = cursor.header.first_lsn;
        let first_at = match cursor.next(first_seq)? {
            Step::Frame(_, payload) => EventRecord::decode(&payload).map_or(i64::MAX, |r| r.at),
            _ => i64::MAX,
        };
        out.push(SegInfo {
            epoch,
            first_seq,
            first_at,
        });
    }
    Ok(out)
}

/// What the next position of a segment holds.
pub enum Step {
    /// A frame with the expected sequence, and its payload.
    Frame(Lsn, Vec<u8>),
    /// The end of what was written.
    End,
    /// A frame of an earlier use of the file, or another sequence: recycled meanwhile.
    Stale,
}

/// Reads one segment's frames in order, a chunk at a time.
pub struct Cursor {
    file: crate::storage::backend::AnyFile,
    name: String,
    len: u64,
    pub header: SegmentHeader,
    /// File offset of `buf[0]`.
    base: u64,
    buf: Vec<u8>,
    /// Position in `buf` of the next frame.
    at: usize,
}

impl Cursor {
    pub fn open(dir: &AnyDir, epoch: u64) -> Result<Cursor, LogError> {
        let name = segment::live_name(epoch);
        let describe = dir.describe(&name);
        let err = |op| {
            let describe = describe.clone();
            move |e| LogError::io(op, describe, e)
        };
        let file = dir.open(&name).map_err(err("open"))?;
        let len = file.len().map_err(err("stat"))?;
        let mut head = vec![0u8; SEGMENT_HEADER_LEN.min(len as usize)];
        file.read_at(0, &mut head).map_err(err("read"))?;
        let header = SegmentHeader::decode(&head).map_err(|reason| LogError::Damaged {
            file: describe.clone(),
            offset: 0,
            reason: reason.into(),
        })?;
        Ok(Cursor {
            file,
            name: describe,
            len,
            header,
            base: SEGMENT_HEADER_LEN as u64,
            buf: Vec::new(),
            at: 0,
        })
    }

    /// The file offset of the next frame.
    pub fn offset(&self) -> u64 {
        self.base + self.at as u64
    }

    /// Moves to a frame boundary found earlier (`offset` from a previous cursor).
    pub fn seek(&mut self, offset: u64) {
        self.base = offset;
        self.buf.clear();
        self.at = 0;
    }

    /// Reads `need` bytes at the cursor into the buffer, if the file has them.
    fn fill(&mut self, need: usize) -> Result<bool, LogError> {
        if self.buf.len() - self.at >= need {
            return Ok(true);
        }
        let start = self.offset();
        let want = (need.max(READ_CHUNK_BYTES) as u64).min(self.len.saturating_sub(start));
        if (want as usize) < need {
            return Ok(false);
        }
        self.buf.resize(want as usize, 0);
        self.file
            .read_at(start, &mut self.buf)
            .map_err(|e| LogError::io("read", self.name.clone(), e))?;
        self.base = start;
        self.at = 0;
        Ok(true)
    }

    /// The frame at the cursor, which must carry `expected`.
    pub fn next(&mut self, expected: Lsn) -> Result<Step, LogError> {
        if !self.fill(FRAME_HEADER_LEN)? {
            return Ok(Step::End);
        }
        let head = &self.buf[self.at..self.at + FRAME_HEADER_LEN];
        if head.iter().all(|b| *b == 0) {
            return Ok(Step::End);
        }
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        let total = frame::frame_len(len.min(frame::RECORD_BYTES_MAX));
        if !self.fill(total)? {
            return Ok(Step::Stale);
        }
        match frame::decode(&self.buf[self.at..]) {
            Decoded::Valid { frame, len } if frame.lsn == expected => {
                let payload = frame.payload.to_vec();
                self.at += len;
                Ok(Step::Frame(expected, payload))
            }
            Decoded::End => Ok(Step::End),
            _ => Ok(Step::Stale),
        }
    }
}
