//! Streams: several writers (the shards of one core) sharing one log.
//!
//! Eight shards on one core with eight logs pay eight `fdatasync`s where one would do, and
//! each group is an eighth as full (issue #12). So a log may carry several streams. Every
//! frame of a shared log starts with its [`Tag`]: the stream (a shard) and the stream's own
//! sequence number. A shard numbers its records 1, 2, 3… whatever else the log carries, so
//! its checkpoints, its events and its recovery speak of its own sequence only.
//!
//! What a checkpoint may recycle depends on every stream of the log: [`Uncovered`] keeps,
//! per stream, the log LSNs of its records that no checkpoint covers yet, and
//! [`Uncovered::floor`] is the lowest LSN some stream still needs.
//!
//! # Invariants
//! - A stream's records reach its log in the order of their sequence numbers, contiguous
//!   (one writer per stream, one inbox per log).
//! - [`Uncovered`] holds one run per batch at most (fewer when batches follow each other
//!   in the log), and a checkpoint drops what it covers: it is bounded by the records
//!   between two checkpoints of a stream (`--checkpoint-every-records`).

use std::collections::VecDeque;
use std::ops::Range;

use super::Lsn;

/// Bytes of a tag at the start of every frame payload of a shared log.
pub const TAG_LEN: usize = 12;

/// The stream a record belongs to, and its sequence number in that stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub stream: u32,
    pub seq: u64,
}

impl Tag {
    /// `[stream u32 | seq u64]`, little-endian.
    pub fn encode(&self) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        out[..4].copy_from_slice(&self.stream.to_le_bytes());
        out[4..].copy_from_slice(&self.seq.to_le_bytes());
        out
    }

    /// Splits a frame payload into its tag and the record; `None` when it is too short.
    pub fn split(payload: &[u8]) -> Option<(Tag, &[u8])> {
        let head = payload.get(..TAG_LEN)?;
        let stream = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(head[4..].try_into().expect("8 bytes"));
        Some((Tag { stream, seq }, &payload[TAG_LEN..]))
    }
}

/// Records of one stream at contiguous LSNs with contiguous sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    seq: u64,
    lsn: Lsn,
    count: u64,
}

/// Per stream, where its records that no checkpoint covers yet lie in the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uncovered {
    /// Indexed by stream id (shard ids are small and dense).
    runs: Vec<VecDeque<Run>>,
}

impl Uncovered {
    /// Notes that `stream`'s records from `first_seq` on were given `lsns`.
    pub fn appended(&mut self, stream: u32, first_seq: u64, lsns: Range<Lsn>) {
        let count = lsns.end - lsns.start;
        if count == 0 {
            return;
        }
        let stream = stream as usize;
        if self.runs.len() <= stream {
            self.runs.resize_with(stream + 1, VecDeque::new);
        }
        let runs = &mut self.runs[stream];
        if let Some(last) = runs.back_mut()
            && last.seq + last.count == first_seq
            && last.lsn + last.count == lsns.start
        {
            last.count += count;
            return;
        }
        runs.push_back(Run {
            seq: first_seq,
            lsn: lsns.start,
            count,
        });
    }

    /// A checkpoint of `stream` covers its records up to `seq`: they are not needed now.
    pub fn covered(&mut self, stream: u32, seq: u64) {
        let Some(runs) = self.runs.get_mut(stream as usize) else {
            return;
        };
        while let Some(front) = runs.front_mut() {
            if front.seq + front.count - 1 <= seq {
                runs.pop_front();
            } else {
                if front.seq <= seq {
                    let skip = seq + 1 - front.seq;
                    front.seq += skip;
                    front.lsn += skip;
                    front.count -= skip;
                }
                break;
            }
        }
    }

    /// The lowest LSN a stream still needs; `next_lsn` when every stream is covered.
    pub fn floor(&self, next_lsn: Lsn) -> Lsn {
        self.runs
            .iter()
            .filter_map(|runs| runs.front().map(|r| r.lsn))
            .min()
            .unwrap_or(next_lsn)
    }

    /// Runs kept (for tests and the bound).
    pub fn runs(&self) -> usize {
        self.runs.iter().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let tag = Tag {
            stream: 7,
            seq: 1 << 40,
        };
        let mut payload = tag.encode().to_vec();
        payload.extend_from_slice(b"record");
        assert_eq!(Tag::split(&payload), Some((tag, &b"record"[..])));
        assert_eq!(Tag::split(&payload[..TAG_LEN - 1]), None);
    }

    #[test]
    fn the_floor_is_the_oldest_record_any_stream_still_needs() {
        let mut u = Uncovered::default();
        assert_eq!(u.floor(1), 1, "nothing written: everything may go");
        // Stream 0 writes LSNs 1-3 (its 1-3), stream 1 LSNs 4-5 (its 1-2), stream 0 6 (its 4).
        u.appended(0, 1, 1..4);
        u.appended(1, 1, 4..6);
        u.appended(0, 4, 6..7);
        assert_eq!(u.floor(7), 1);
        u.covered(0, 2);
        assert_eq!(u.floor(7), 3, "stream 0's record 3 is at LSN 3");
        u.covered(0, 4);
        assert_eq!(u.floor(7), 4, "stream 1 still needs LSN 4");
        u.covered(1, 1);
        assert_eq!(u.floor(7), 5);
        u.covered(1, 2);
        assert_eq!(u.floor(7), 7, "all covered: up to the next LSN");
        assert_eq!(u.runs(), 0);
    }

    #[test]
    fn a_stream_that_writes_again_after_its_checkpoint_holds_the_floor() {
        let mut u = Uncovered::default();
        u.appended(0, 1, 1..3);
        u.covered(0, 2);
        u.appended(1, 1, 3..9);
        u.appended(0, 3, 9..10);
        u.covered(1, 6);
        assert_eq!(u.floor(10), 9);
    }

    #[test]
    fn batches_that_follow_each_other_share_one_run() {
        let mut u = Uncovered::default();
        for i in 0..100 {
            u.appended(3, 1 + i * 2, 1 + i * 2..3 + i * 2);
        }
        assert_eq!(u.runs(), 1);
        u.appended(2, 1, 201..202);
        u.appended(3, 201, 202..203);
        assert_eq!(u.runs(), 3);
        u.covered(9, 5);
        assert_eq!(u.floor(203), 1, "an unknown stream changes nothing");
    }
}
