//! The recovery scan: reads every live segment back, checks every frame, and tells a torn
//! tail (a write that was never acknowledged: dropped and reported) from damage (refused).
//!
//! The rule: the log ends at the first position that does not hold the next expected
//! frame. An all-zero header there is the normal end (every group write ends with one).
//! A bad frame or a stale one (left from an earlier use of a recycled segment) is a torn
//! tail, but only in the last segment, and only if no valid frame with a higher LSN lies
//! anywhere after it: a valid later record means what came before it had been synced, so
//! the bad frame is damage. A valid frame with an LSN beyond the expected one is a gap:
//! damage too.

use super::file::{LogDir, LogFile};
use super::frame::{self, Decoded, FRAME_ALIGN, FRAME_HEADER_LEN, LSN_AT};
use super::segment::{self, SEGMENT_HEADER_LEN, SegmentHeader, SegmentName};
use super::{LogError, Lsn};

/// One record read back, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub lsn: Lsn,
    pub term: u64,
    pub payload: Vec<u8>,
}

/// The report of a torn tail that recovery dropped: a write that was never acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedTail {
    /// The segment file, as `LogDir::describe` names it.
    pub file: String,
    /// Where the first frame that failed its check starts; appends resume there.
    pub offset: u64,
    /// Why the frame there was not taken.
    pub reason: &'static str,
    /// Frames dropped: a torn write leaves at most one partial frame on disk; whatever of
    /// the group came after it never reached the disk and cannot be counted.
    pub frames: u64,
}

/// What `Log::open` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Every record with an LSN above the checkpoint's, in LSN order, contiguous.
    pub records: Vec<Record>,
    /// The oldest LSN the log still holds (the first LSN of its oldest segment).
    pub first_lsn: Lsn,
    /// The last LSN in the log; `first_lsn - 1` when it holds no record.
    pub last_lsn: Lsn,
    /// The term of the last record, 0 when there is none.
    pub last_term: u64,
    /// The torn tail dropped, if there was one.
    pub dropped: Option<DroppedTail>,
    /// Live segments found.
    pub segments: usize,
}

/// A live segment as the scan found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub name: String,
    pub header: SegmentHeader,
}

/// Everything the writer needs to resume after the scan.
pub(crate) struct Scan {
    pub live: Vec<Found>,
    /// Free segments: (id, name, length).
    pub free: Vec<(u64, String, u64)>,
    /// Where the next frame goes in the last live segment.
    pub end_offset: u64,
    pub recovered: Recovered,
}

/// Where a segment's frames ended.
struct End {
    offset: u64,
    next_lsn: Lsn,
    last_term: u64,
    /// Why the frame at `offset` was not taken, when it was not the end marker.
    torn: Option<&'static str>,
}

fn damaged(file: String, offset: u64, reason: String) -> LogError {
    LogError::Damaged {
        file,
        offset,
        reason,
    }
}

/// Scans the directory. `after`: the last LSN the checkpoint covers, or `None` for a
/// shared log (`streams`), whose records all come back: each stream's checkpoint covers
/// its own sequence, so only the caller can tell which ones it still needs.
pub(crate) fn scan<D: LogDir>(dir: &D, covered: Option<Lsn>) -> Result<Scan, LogError> {
    let (live, free) = list(dir)?;
    let mut after = covered.unwrap_or(0);
    let mut recovered = Recovered {
        first_lsn: after + 1,
        last_lsn: after,
        segments: live.len(),
        ..Recovered::default()
    };
    let mut found = Vec::with_capacity(live.len());
    let mut next_lsn = None;
    let mut last_term = 0;
    let mut end_offset = SEGMENT_HEADER_LEN as u64;
    // One window for every segment: fresh memory costs more than the reading itself.
    let mut buffer = vec![0u8; LOG_READ_WINDOW_BYTES];
    for (i, (epoch, name)) in live.iter().enumerate() {
        let file = dir.describe(name);
        let mut bytes = Window::open(dir, name, &mut buffer)?;
        let head = bytes.at(0, SEGMENT_HEADER_LEN)?;
        let header = SegmentHeader::decode(head).map_err(|r| damaged(file.clone(), 0, r.into()))?;
        check_header(&file, &header, *epoch, bytes.len, next_lsn)?;
        if i == 0 {
            recovered.first_lsn = header.first_lsn;
            if covered.is_none() {
                after = header.first_lsn - 1;
            }
        }
        let end = scan_segment(
            &mut bytes,
            &file,
            header.first_lsn,
            last_term,
            after,
            &mut recovered,
        )?;
        let last = i + 1 == live.len();
        check_end(&mut bytes, &file, &end, last)?;
        if let (Some(reason), true) = (end.torn, last) {
            recovered.dropped = Some(DroppedTail {
                file: file.clone(),
                offset: end.offset,
                reason,
                frames: 1,
            });
        }
        next_lsn = Some(end.next_lsn);
        last_term = end.last_term;
        end_offset = end.offset;
        found.push(Found {
            name: name.clone(),
            header,
        });
    }
    if let Some(next) = next_lsn {
        recovered.last_lsn = next - 1;
        recovered.last_term = last_term;
        // A shared log starts `after` at its first record: both checks then pass, and its
        // streams check their own sequences.
        if after + 1 < recovered.first_lsn {
            return Err(LogError::Missing {
                wanted: after + 1,
                first: recovered.first_lsn,
            });
        }
        if after > recovered.last_lsn {
            return Err(LogError::CheckpointAhead {
                after,
                last: recovered.last_lsn,
            });
        }
    }
    Ok(Scan {
        live: found,
        free,
        end_offset,
        recovered,
    })
}

type Listing = (Vec<(u64, String)>, Vec<(u64, String, u64)>);

/// The live segments sorted by epoch (checked contiguous) and the free ones.
fn list<D: LogDir>(dir: &D) -> Result<Listing, LogError> {
    let names = dir
        .list()
        .map_err(|e| LogError::io("list", dir.describe(""), e))?;
    let mut live = Vec::new();
    let mut free = Vec::new();
    for name in names {
        match segment::parse_name(&name) {
            Some(SegmentName::Live { epoch }) => live.push((epoch, name)),
            Some(SegmentName::Free { id }) => {
                let len = dir
                    .open(&name)
                    .and_then(|f| f.len())
                    .map_err(|e| LogError::io("open", dir.describe(&name), e))?;
                free.push((id, name, len));
            }
            None => {}
        }
    }
    live.sort();
    for pair in live.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            let missing = segment::live_name(pair[0].0 + 1);
            return Err(damaged(
                dir.describe(&missing),
                0,
                format!("segment missing between {} and {}", pair[0].1, pair[1].1),
            ));
        }
    }
    Ok((live, free))
}

/// Bytes of the window a segment is read through at recovery (one buffer, reused for
/// every segment and every part of one): room for the largest frame twice over, so a
/// frame never needs more than one read. A 64 MiB segment read whole was 64 MiB of fresh
/// memory per segment, which the kernel zeroes first.
pub const LOG_READ_WINDOW_BYTES: usize = 4 << 20;

const _: () = assert!(LOG_READ_WINDOW_BYTES >= 2 * frame::frame_len(frame::RECORD_BYTES_MAX));
const _: () = assert!(LOG_READ_WINDOW_BYTES >= SEGMENT_HEADER_LEN);

/// A segment file read through a window of `LOG_READ_WINDOW_BYTES`, moved forward as the
/// scan goes.
struct Window<'b, F: LogFile> {
    file: F,
    name: String,
    /// The file's length.
    len: u64,
    buffer: &'b mut [u8],
    /// The file offset of `buffer[0]` and how many bytes of it were read.
    start: u64,
    filled: usize,
}

impl<'b, F: LogFile> Window<'b, F> {
    fn open<D: LogDir<File = F>>(
        dir: &D,
        name: &str,
        buffer: &'b mut [u8],
    ) -> Result<Window<'b, F>, LogError> {
        let file = dir
            .open(name)
            .map_err(|e| LogError::io("open", dir.describe(name), e))?;
        let len = file
            .len()
            .map_err(|e| LogError::io("stat", dir.describe(name), e))?;
        Ok(Window {
            file,
            name: dir.describe(name),
            len,
            buffer,
            start: 0,
            filled: 0,
        })
    }

    /// The bytes from offset `at`: `want` of them, or fewer where the file ends first.
    /// `want` is at most half the window.
    fn at(&mut self, at: u64, want: usize) -> Result<&[u8], LogError> {
        debug_assert!(want <= self.buffer.len() / 2);
        let end = at.saturating_add(want as u64).min(self.len).max(at);
        if at < self.start || end > self.start + self.filled as u64 {
            let n = usize::try_from(self.len.saturating_sub(at))
                .unwrap_or(usize::MAX)
                .min(self.buffer.len());
            self.file
                .read_at(at, &mut self.buffer[..n])
                .map_err(|e| LogError::io("read", self.name.clone(), e))?;
            self.start = at;
            self.filled = n;
        }
        let from = (at - self.start) as usize;
        Ok(&self.buffer[from..from + (end - at) as usize])
    }

    /// The first frame position at or after `at` (in steps of `FRAME_ALIGN`, with a whole
    /// header before the file ends) whose LSN field reads at least `lsn_min`, found by
    /// scanning the window's bytes as words rather than decoding each position.
    fn next_lsn_at_least(&mut self, mut at: u64, lsn_min: Lsn) -> Result<Option<u64>, LogError> {
        const BLOCK_WORDS: usize = 16;
        while at + FRAME_HEADER_LEN as u64 <= self.len {
            let chunk = self.at(at, self.buffer.len() / 2)?;
            // Positions p = 0, 8, … with p + FRAME_HEADER_LEN within the chunk.
            let positions = (chunk.len() - FRAME_HEADER_LEN) / FRAME_ALIGN + 1;
            let words = &chunk[LSN_AT..LSN_AT + positions * FRAME_ALIGN];
            let lsn = |w: &[u8]| u64::from_le_bytes(w.try_into().expect("8 bytes"));
            let mut block_at = 0;
            for block in words.chunks(BLOCK_WORDS * FRAME_ALIGN) {
                // No early exit inside a block, so the comparison vectorises.
                let any = block
                    .chunks_exact(FRAME_ALIGN)
                    .fold(false, |hit, w| hit | (lsn(w) >= lsn_min));
                if any {
                    let k = block
                        .chunks_exact(FRAME_ALIGN)
                        .position(|w| lsn(w) >= lsn_min)
                        .expect("a word of the block matched");
                    return Ok(Some(at + (block_at + k * FRAME_ALIGN) as u64));
                }
                block_at += block.len();
            }
            at += (positions * FRAME_ALIGN) as u64;
        }
        Ok(None)
    }

    /// The frame at offset `at`, read whole (as far as the file goes).
    fn frame(&mut self, at: u64) -> Result<Decoded<'_>, LogError> {
        let head = self.at(at, FRAME_HEADER_LEN)?;
        let len = head.get(..4).map_or(0, |b| {
            u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize
        });
        // A length past the limit is refused from the header alone.
        let want = FRAME_HEADER_LEN + len.min(frame::RECORD_BYTES_MAX);
        Ok(frame::decode(self.at(at, want)?))
    }
}

fn check_header(
    file: &str,
    header: &SegmentHeader,
    epoch: u64,
    len: u64,
    expected_lsn: Option<Lsn>,
) -> Result<(), LogError> {
    if header.epoch != epoch {
        let reason = format!("header says epoch {}, name says {epoch}", header.epoch);
        return Err(damaged(file.into(), 0, reason));
    }
    if header.segment_bytes != len || len < (SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64 {
        let reason = format!(
            "segment is {len} bytes, its header says {}",
            header.segment_bytes
        );
        return Err(damaged(file.into(), len, reason));
    }
    if let Some(expected) = expected_lsn
        && header.first_lsn != expected
    {
        let reason = format!(
            "segment starts at LSN {}, the previous one ends before LSN {expected}",
            header.first_lsn
        );
        return Err(damaged(file.into(), 0, reason));
    }
    Ok(())
}

/// Reads the frames of one segment, pushing those above `after` into `out.records`.
fn scan_segment<F: LogFile>(
    bytes: &mut Window<'_, F>,
    file: &str,
    first_lsn: Lsn,
    mut term: u64,
    after: Lsn,
    out: &mut Recovered,
) -> Result<End, LogError> {
    let mut at = SEGMENT_HEADER_LEN;
    let mut lsn = first_lsn;
    let end = |at: usize, lsn, term, torn| End {
        offset: at as u64,
        next_lsn: lsn,
        last_term: term,
        torn,
    };
    while (at + FRAME_HEADER_LEN) as u64 <= bytes.len {
        let (frame, len) = match bytes.frame(at as u64)? {
            Decoded::End => return Ok(end(at, lsn, term, None)),
            Decoded::Invalid(reason) => return Ok(end(at, lsn, term, Some(reason))),
            Decoded::Valid { frame, len } => (frame, len),
        };
        if frame.lsn < lsn {
            let stale = "stale frame from an earlier use of the segment";
            return Ok(end(at, lsn, term, Some(stale)));
        }
        if frame.lsn > lsn {
            let reason = format!("record with LSN {} where LSN {lsn} belongs", frame.lsn);
            return Err(damaged(file.into(), at as u64, reason));
        }
        if frame.term < term {
            let reason = format!("record LSN {lsn} has term {} after term {term}", frame.term);
            return Err(damaged(file.into(), at as u64, reason));
        }
        if lsn > after {
            out.records.push(Record {
                lsn,
                term: frame.term,
                payload: frame.payload.to_vec(),
            });
        }
        term = frame.term;
        lsn += 1;
        at += len;
    }
    Ok(end(at, lsn, term, None))
}

/// Refuses a segment whose end is not a clean end or a torn tail of the last segment.
fn check_end<F: LogFile>(
    bytes: &mut Window<'_, F>,
    file: &str,
    end: &End,
    last: bool,
) -> Result<(), LogError> {
    let what = match end.torn {
        Some(reason) => format!("bad frame ({reason})"),
        None => "end of the log".to_owned(),
    };
    if let Some((offset, lsn)) = find_stray(bytes, end.offset + FRAME_ALIGN as u64, end.next_lsn)? {
        let reason =
            format!("{what}, yet a valid record with LSN {lsn} follows at offset {offset}");
        return Err(damaged(file.into(), end.offset, reason));
    }
    if end.torn.is_some() && !last {
        let reason = format!("{what} in a segment that later segments follow");
        return Err(damaged(file.into(), end.offset, reason));
    }
    Ok(())
}

/// The first valid frame at or after `from` with an LSN of at least `lsn_min`.
fn find_stray<F: LogFile>(
    bytes: &mut Window<'_, F>,
    from: u64,
    lsn_min: Lsn,
) -> Result<Option<(u64, Lsn)>, LogError> {
    let mut at = from;
    // Cheap test first: most positions hold zeros or stale frames with lower LSNs, so the
    // window is scanned for a plausible LSN field and only a hit is decoded.
    while let Some(hit) = bytes.next_lsn_at_least(at, lsn_min)? {
        if let Decoded::Valid { frame, .. } = bytes.frame(hit)? {
            return Ok(Some((hit, frame.lsn)));
        }
        at = hit + FRAME_ALIGN as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod scan_tests {
    use super::*;
    use crate::storage::log::sim::SimDisk;

    /// The word scan finds what a position-by-position test finds, from every start,
    /// across window refills, at the segment's last whole header and not past it.
    #[test]
    fn the_word_scan_agrees_with_a_position_by_position_scan() {
        let disk = SimDisk::new(3);
        let dir = disk.dir("log");
        let len = 4_096 + 36; // not a multiple of FRAME_ALIGN: the last header is cut off
        let mut bytes = vec![0u8; len];
        let mut put = |at: usize, lsn: u64| {
            bytes[at + LSN_AT..at + LSN_AT + 8].copy_from_slice(&lsn.to_le_bytes())
        };
        for (at, lsn) in [
            (0, 5),
            (8, 2),
            (120, 9),
            (1_016, 7),
            (1_024, 30),
            (2_048, 8),
        ] {
            put(at, lsn);
        }
        let last_whole = (len - FRAME_HEADER_LEN) / FRAME_ALIGN * FRAME_ALIGN;
        put(last_whole, 40);
        put(last_whole + FRAME_ALIGN, 50); // its LSN field is in the file, its header is not
        let mut file = dir.create("seg").unwrap();
        file.write_at(0, &bytes).unwrap();
        let naive = |from: usize, min: u64| {
            (from..)
                .step_by(FRAME_ALIGN)
                .take_while(|at| at + FRAME_HEADER_LEN <= len)
                .find(|&at| frame::peek_lsn(&bytes[at..]).is_some_and(|l| l >= min))
                .map(|at| at as u64)
        };
        // A small window, so that the scan refills it many times.
        let mut buffer = vec![0u8; 96];
        let mut window = Window::open(&dir, "seg", &mut buffer).unwrap();
        for from in (0..len).step_by(FRAME_ALIGN) {
            for min in [1, 6, 8, 10, 31, 40, 41, 50] {
                let found = window.next_lsn_at_least(from as u64, min).unwrap();
                assert_eq!(found, naive(from, min), "from {from}, lsn at least {min}");
            }
        }
    }
}
