//! The data folder of a stopped server, read and damaged as a crash or a bad disk would.
//!
//! The logs are segment files (`data/log/g{generation}-l{log}/seg-*.log`; shard `s` writes
//! to log `s % logs`, each frame tagged with its shard and sequence), read here
//! with the crate's own frame decoder so the tests follow the format when it changes; the
//! layout record comes from the checkpoint store. The server must be stopped: sled locks
//! the checkpoint folder.

use std::path::{Path, PathBuf};

use stockd::storage::log::frame::{self, Decoded};
use stockd::storage::log::segment::{SEGMENT_HEADER_LEN, SegmentName, parse_name};
use stockd::storage::log::streams::Tag;
use stockd::storage::record::{self, LogRecord};
use stockd::storage::{Storage, StorageBackend, backend, recovery};
use stockd_domain::Command as DomainCommand;

/// One record of a log as it lies on disk.
#[derive(Clone, Debug)]
pub struct LogFrame {
    pub lsn: u64,
    /// The shard that wrote it, and its number in that shard's sequence.
    pub shard: u32,
    pub seq: u64,
    /// The segment file that holds it.
    pub file: PathBuf,
    /// Where the frame starts in that file.
    pub offset: u64,
    /// Its size on disk, padding included.
    pub len: usize,
    /// The record, after the tag.
    pub payload: Vec<u8>,
}

/// The layout record of a stopped server's folder.
fn layout(data: &Path) -> recovery::Meta {
    let storage = Storage::open(&StorageBackend::Real, data, Default::default())
        .expect("open the data folder");
    recovery::read_meta(&storage)
        .expect("read the layout record")
        .expect("the folder has a layout")
}

/// The log a shard of a stopped server's folder writes to.
pub fn shard_log(data: &Path, shard: u32) -> u32 {
    recovery::log_of(shard, layout(data).logs)
}

/// The generation (shard layout) a stopped server's folder uses.
pub fn generation(data: &Path) -> u32 {
    layout(data).generation
}

/// The folder of one log.
pub fn log_dir(data: &Path, generation: u32, log: u32) -> PathBuf {
    data.join("log")
        .join(backend::log_dir_name(generation, log))
}

/// Every record of a log, in LSN order, read from its live segments.
pub fn log_frames(data: &Path, generation: u32, log: u32) -> Vec<LogFrame> {
    let dir = log_dir(data, generation, log);
    let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .expect("list the log folder")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            match parse_name(&name)? {
                SegmentName::Live { epoch } => Some((epoch, e.path())),
                SegmentName::Free { .. } => None,
            }
        })
        .collect();
    segments.sort();
    let mut frames: Vec<LogFrame> = Vec::new();
    for (_, file) in segments {
        let bytes = std::fs::read(&file).expect("read a segment");
        let mut at = SEGMENT_HEADER_LEN;
        while let Decoded::Valid { frame, len } = frame::decode(&bytes[at..]) {
            if frames.last().is_some_and(|f| frame.lsn != f.lsn + 1) {
                break; // a stale frame from an earlier use of a recycled segment
            }
            let (tag, record) = Tag::split(frame.payload).expect("a tagged frame");
            frames.push(LogFrame {
                lsn: frame.lsn,
                shard: tag.stream,
                seq: tag.seq,
                file: file.clone(),
                offset: at as u64,
                len,
                payload: record.to_vec(),
            });
            at += len;
        }
    }
    frames
}

/// The decoded command of a log frame.
pub fn frame_command(frame: &LogFrame) -> DomainCommand {
    record::decode::<LogRecord>(&frame.payload)
        .expect("decode a log record")
        .command
}

/// Writes bytes into a file at an offset, in place.
pub fn write_at(file: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("open a segment");
    f.write_all_at(bytes, offset).expect("write a segment");
    f.sync_all().expect("sync a segment");
}

/// Flips bits of one byte of a file; returns the byte as it was.
pub fn flip_byte(file: &Path, offset: u64, mask: u8) -> u8 {
    let bytes = std::fs::read(file).expect("read a file");
    let old = bytes[offset as usize];
    write_at(file, offset, &[old ^ mask]);
    old
}

/// The frames of the log `shard` writes to; the last one must be `shard`'s.
fn shard_frames(data: &Path, generation: u32, shard: u32) -> Vec<LogFrame> {
    let frames = log_frames(data, generation, shard_log(data, shard));
    let last = frames.last().expect("the shard's log has records");
    assert_eq!(
        last.shard, shard,
        "the log's last record is another shard's"
    );
    frames
}

/// Zeroes the last frame of a shard's log, as if the crash came before it was written,
/// after checking it is the one the test means. Returns its command.
pub fn drop_last_log_record(
    data: &Path,
    generation: u32,
    shard: u32,
    is_it: impl Fn(&DomainCommand) -> bool,
) -> DomainCommand {
    let frames = shard_frames(data, generation, shard);
    let last = frames.last().expect("the shard has log records");
    let command = frame_command(last);
    assert!(
        is_it(&command),
        "shard {shard}'s last record is {command:?}"
    );
    write_at(&last.file, last.offset, &vec![0u8; last.len]);
    command
}

/// Tears the last frame of a shard's log: its second half is zeroed, as a write cut short
/// by a power loss leaves it. Returns the frame.
pub fn tear_last_log_record(data: &Path, generation: u32, shard: u32) -> LogFrame {
    let frames = shard_frames(data, generation, shard);
    let last = frames.last().expect("the shard has log records").clone();
    let half = last.len / 2;
    write_at(
        &last.file,
        last.offset + half as u64,
        &vec![0u8; last.len - half],
    );
    last
}

/// Writes a garbage frame after the last one of a shard's log (a torn write of a group
/// that was never acknowledged). Returns the file and offset it starts at.
pub fn append_garbage_frame(data: &Path, generation: u32, shard: u32) -> (PathBuf, u64) {
    let frames = shard_frames(data, generation, shard);
    let last = frames.last().expect("the shard has log records");
    let offset = last.offset + last.len as u64;
    let mut garbage = Vec::new();
    garbage.extend_from_slice(&24u32.to_le_bytes());
    garbage.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    garbage.extend_from_slice(&(last.lsn + 1).to_le_bytes());
    garbage.extend_from_slice(&0u64.to_le_bytes());
    garbage.extend_from_slice(b"torn record payload, 24b");
    write_at(&last.file, offset, &garbage);
    (last.file.clone(), offset)
}
