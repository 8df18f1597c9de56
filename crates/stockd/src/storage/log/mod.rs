//! The segment log: a purpose-built write-ahead log whose group commit really reaches the disk.
//!
//! sled 0.34's `flush()` never fsyncs, so acknowledged holds could vanish on power loss.
//! This log owns its files: one `write_at` and one `fdatasync` per group, and a
//! completion ("durable up to LSN N") leaves only after the sync has returned.
//!
//! # Layout
//! - `file`: the `LogDir`/`LogFile` traits and their real implementation over `std::fs`.
//! - `sim`: a simulated disk for tests: unsynced writes, torn writes, lost renames, faults.
//! - `frame`: one record on disk: `[len | crc32c | lsn | term] payload`.
//! - `segment`: segment file names, the segment header, creating, activating, recycling.
//! - `reader`: the recovery scan and its rule for a torn tail versus damage.
//! - `writer`: the `Log` itself: open, append, commit (group commit), truncate_below.
//! - `group`: a thin thread that owns a `Log` and commits what arrived while it synced.
//! - `streams`: several shards sharing one log: each frame's tag, and what each still needs.
//!
//! # On disk
//! A log directory holds `seg-{epoch:016x}.log` (live, contiguous epochs) and
//! `free-{id:016x}.log` (ready for reuse). Each segment: a 4 KiB header (magic, version,
//! epoch, first LSN, size, CRC32C), then frames `[len u32 | crc32c u32 | lsn u64 | term
//! u64] payload` padded to 8 bytes, then an all-zero end marker written with every group.
//! See `segment` and `frame`; recovery's rules are in `reader`.
//!
//! # Invariants
//! - A log is one directory; N logs are N directories side by side. Nothing here is shared
//!   between logs. The shards of one core share one log (`streams`).
//! - LSNs are contiguous per log, starting at 1; LSN 0 means "nothing".
//! - After any failed write, sync or directory operation the log is poisoned and refuses
//!   every append until it is reopened (fsyncgate: the page cache state is unknown).

pub mod direct;
pub mod file;
pub mod frame;
pub mod group;
pub mod reader;
pub mod segment;
pub mod sim;
pub mod streams;
pub mod writer;

#[cfg(test)]
mod tests;

use std::io;
use std::sync::Arc;

pub use file::{FsDir, FsFile, LogDir, LogFile};
pub use group::{Appended, LogWriter, WRITER_INBOX_CAPACITY};
pub use reader::{DroppedTail, Record, Recovered};
pub use writer::{CommitStats, Log, LogStats, TruncateStats};

/// A log sequence number: the position of a record in its log. The first record is 1.
pub type Lsn = u64;

/// Default size of one segment file. Recovery reads one segment at a time into memory
/// (64 MiB), and creating a fresh segment costs one 64 MiB zero-filling write and sync.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

/// Default number of free segments prepared at open, so that a rollover finds a
/// zero-filled, synced file ready and only renames it (costs 64 MiB of disk each).
pub const SEGMENTS_PREALLOCATED_DEFAULT: usize = 2;

/// Default most free segments kept for reuse; recycled segments past this are removed,
/// which bounds the disk a burst of writes can leave behind.
pub const SEGMENTS_FREE_MAX_DEFAULT: usize = 4;

/// Default most bytes in one group (one write, one sync). Bounds the memory of the group
/// buffer and the time one write takes (4 MiB is a few ms on an SSD).
pub const GROUP_BYTES_MAX_DEFAULT: usize = 4 << 20;

const _: () = assert!(GROUP_BYTES_MAX_DEFAULT as u64 <= SEGMENT_BYTES_DEFAULT / 4);
const _: () = assert!(frame::RECORD_BYTES_MAX + frame::FRAME_HEADER_LEN <= GROUP_BYTES_MAX_DEFAULT);
const _: () = assert!(SEGMENTS_PREALLOCATED_DEFAULT <= SEGMENTS_FREE_MAX_DEFAULT);

/// The sizes of one log. Every field is a bound with a cost; see the `*_DEFAULT` constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Size of every segment file, header included.
    pub segment_bytes: u64,
    /// Free segments created at open when fewer are there.
    pub segments_preallocated: usize,
    /// Most free segments kept; more are removed by `truncate_below`.
    pub segments_free_max: usize,
    /// Most bytes of frames in one group.
    pub group_bytes_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segments_preallocated: SEGMENTS_PREALLOCATED_DEFAULT,
            segments_free_max: SEGMENTS_FREE_MAX_DEFAULT,
            group_bytes_max: GROUP_BYTES_MAX_DEFAULT,
        }
    }
}

impl LogConfig {
    /// Checks the relations between the fields; `Log::open` refuses a config that fails.
    pub fn validate(&self) -> Result<(), LogError> {
        let room = self
            .segment_bytes
            .checked_sub((segment::SEGMENT_HEADER_LEN + frame::FRAME_HEADER_LEN) as u64);
        if room.is_none_or(|room| (self.group_bytes_max as u64) > room) {
            return Err(LogError::Config(
                "group_bytes_max must fit in a segment after its header and an end marker",
            ));
        }
        if self.group_bytes_max < frame::frame_len(0) {
            return Err(LogError::Config(
                "group_bytes_max must hold at least one frame",
            ));
        }
        if !self.segment_bytes.is_multiple_of(frame::FRAME_ALIGN as u64) {
            return Err(LogError::Config(
                "segment_bytes must be a multiple of FRAME_ALIGN",
            ));
        }
        if self.segments_preallocated > self.segments_free_max {
            return Err(LogError::Config(
                "segments_preallocated exceeds segments_free_max",
            ));
        }
        Ok(())
    }

    /// The largest payload one record may have: `RECORD_BYTES_MAX`, or less when a
    /// group is smaller than a frame of that size.
    pub fn record_bytes_max(&self) -> usize {
        let room = self.group_bytes_max - frame::FRAME_HEADER_LEN;
        frame::RECORD_BYTES_MAX.min(room / frame::FRAME_ALIGN * frame::FRAME_ALIGN)
    }
}

/// Reads a log's records above `after` without opening it for writing: the same scan and
/// checks as `Log::open`, but nothing is created, repaired or removed. Used to rebuild a
/// shard's state from disk while its writer still owns the directory.
pub fn read_records<D: LogDir>(dir: &D, after: Lsn) -> Result<Recovered, LogError> {
    reader::scan(dir, Some(after)).map(|scan| scan.recovered)
}

/// [`read_records`] of a shared log (`streams`): every live record.
pub fn read_shared_records<D: LogDir>(dir: &D) -> Result<Recovered, LogError> {
    reader::scan(dir, None).map(|scan| scan.recovered)
}

/// Why the log refused or failed. Operating errors are values; the service maps them
/// to UNAVAILABLE (I/O, poisoned, damaged) or RESOURCE_EXHAUSTED (no space, group full).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    #[error("log disk full: {op} {file}: {source}")]
    NoSpace {
        op: &'static str,
        file: String,
        source: Arc<io::Error>,
    },
    #[error("log I/O failed: {op} {file}: {source}")]
    Io {
        op: &'static str,
        file: String,
        source: Arc<io::Error>,
    },
    #[error("the log refuses appends after an earlier failure ({0}); reopen it to recover")]
    Poisoned(Arc<LogError>),
    #[error("record of {len} bytes exceeds the most a record may have ({max})")]
    RecordTooLarge { len: usize, max: usize },
    #[error("group is full ({bytes} of {max} bytes); commit first")]
    GroupFull { bytes: usize, max: usize },
    #[error("log damaged: {file} at offset {offset}: {reason}")]
    Damaged {
        file: String,
        offset: u64,
        reason: String,
    },
    #[error("log is missing records {wanted}..{first}: its oldest segment starts at LSN {first}")]
    Missing { wanted: Lsn, first: Lsn },
    #[error("checkpoint covers LSN {after} but the log ends at LSN {last}")]
    CheckpointAhead { after: Lsn, last: Lsn },
    #[error("invalid log config: {0}")]
    Config(&'static str),
    #[error("the log writer thread has stopped")]
    WriterStopped,
}

impl LogError {
    /// Wraps an I/O error, telling a full disk apart from other failures.
    pub(crate) fn io(op: &'static str, file: impl Into<String>, e: io::Error) -> LogError {
        let file = file.into();
        let source = Arc::new(e);
        if source.kind() == io::ErrorKind::StorageFull {
            LogError::NoSpace { op, file, source }
        } else {
            LogError::Io { op, file, source }
        }
    }
}
