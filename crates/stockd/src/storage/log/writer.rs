//! The `Log`: open (recover), append into the group buffer, commit a group with one write
//! and one `fdatasync`, and recycle the segments a checkpoint covers.
//!
//! The core is synchronous and owns no thread, so tests drive it step by step on the
//! simulated disk; `group::LogWriter` is the thin thread around it.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::file::{LogDir, LogFile};
use super::frame::{self, FRAME_HEADER_LEN};
use super::reader::{self, Recovered};
use super::segment::{self, SEGMENT_HEADER_LEN, SegmentHeader};
use super::streams::{TAG_LEN, Tag};
use super::{LogConfig, LogError, Lsn};

/// What one `commit` did: for the integrator's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Every record up to this LSN is durable.
    pub durable_lsn: Lsn,
    /// Records in the group (0: nothing was pending, no I/O was done).
    pub records: usize,
    /// Bytes of frames written.
    pub bytes: usize,
    /// Time of the one durable write (`LogFile::write_durable_at`: a synchronous direct
    /// write, or a write and an `fdatasync`).
    pub sync_duration: Duration,
    /// Whether the group opened a new segment first.
    pub rolled: bool,
}

/// What one `truncate_below` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TruncateStats {
    /// Segments renamed into the free pool.
    pub recycled: usize,
    /// Segments removed because the free pool was full.
    pub removed: usize,
}

/// Running totals of a log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub durable_lsn: Lsn,
    pub next_lsn: Lsn,
    /// Live segments (sealed and active).
    pub segments_live: usize,
    /// Free segments ready for reuse.
    pub segments_free: usize,
    /// Segment files created since open (at open, to preallocate, included).
    pub segments_created: u64,
    /// Segments recycled since open.
    pub segments_recycled: u64,
    pub groups: u64,
    pub records: u64,
    pub bytes: u64,
}

/// The segment receiving writes.
struct Active<F> {
    file: F,
    name: String,
    header: SegmentHeader,
    /// Where the next group goes.
    offset: u64,
}

/// An older live segment, kept until a checkpoint covers it.
struct Sealed {
    name: String,
    first_lsn: Lsn,
    segment_bytes: u64,
}

/// The free segments of a log.
struct Pool {
    /// Free segment names, reused last-in first-out.
    free: Vec<String>,
    next_free_id: u64,
    /// Segment files created since open.
    created: u64,
}

impl Pool {
    /// Creates a zero-filled free segment (not yet in `free`).
    fn create<D: LogDir>(&mut self, dir: &D, config: &LogConfig) -> Result<String, LogError> {
        let name = segment::create_free(dir, self.next_free_id, config.segment_bytes)?;
        self.next_free_id += 1;
        self.created += 1;
        Ok(name)
    }

    /// A free segment to activate: a recycled one if any, else a new one.
    fn take<D: LogDir>(&mut self, dir: &D, config: &LogConfig) -> Result<String, LogError> {
        match self.free.pop() {
            Some(name) => Ok(name),
            None => self.create(dir, config),
        }
    }
}

/// Reopens the last live segment to append at `offset`. An end marker goes at `offset`
/// first: a dropped torn tail there must not stay as a bad frame before the next segment
/// if the next group rolls over. What recovery read may have come from the page cache:
/// the sync makes it durable before anything is built on it.
fn resume<D: LogDir>(
    dir: &D,
    name: String,
    header: SegmentHeader,
    offset: u64,
) -> Result<Active<D::File>, LogError> {
    let describe = dir.describe(&name);
    let err = |op| {
        let describe = describe.clone();
        move |e| LogError::io(op, describe, e)
    };
    let mut file = dir.open(&name).map_err(err("open"))?;
    if offset + FRAME_HEADER_LEN as u64 <= header.segment_bytes {
        let marker = [0u8; FRAME_HEADER_LEN];
        file.write_at(offset, &marker)
            .map_err(err("write end marker"))?;
    }
    file.sync_data().map_err(err("sync"))?;
    dir.sync_dir().map_err(err("sync directory"))?;
    Ok(Active {
        file,
        name,
        header,
        offset,
    })
}

/// Activates a free segment as segment `epoch`, its first record `first_lsn`.
fn activate<D: LogDir>(
    dir: &D,
    config: &LogConfig,
    pool: &mut Pool,
    epoch: u64,
    first_lsn: Lsn,
) -> Result<Active<D::File>, LogError> {
    let free = pool.take(dir, config)?;
    let header = SegmentHeader {
        epoch,
        first_lsn,
        segment_bytes: config.segment_bytes,
    };
    let (name, file) = segment::activate(dir, &free, header)?;
    Ok(Active {
        file,
        name,
        header,
        offset: SEGMENT_HEADER_LEN as u64,
    })
}

/// One append-only log in one directory.
pub struct Log<D: LogDir> {
    dir: D,
    config: LogConfig,
    active: Active<D::File>,
    sealed: VecDeque<Sealed>,
    pool: Pool,
    /// Encoded frames of the group not yet committed.
    group: Vec<u8>,
    group_records: usize,
    next_lsn: Lsn,
    durable_lsn: Lsn,
    last_term: u64,
    /// The first failure. Once set, nothing more is written until the log is reopened.
    poisoned: Option<Arc<LogError>>,
    stats: LogStats,
}

impl<D: LogDir> Log<D> {
    /// Opens the log in `dir`, recovering it. `after` is the last LSN the checkpoint
    /// covers (0 without one): the records above it come back in `Recovered`, and a fresh
    /// log starts at `after + 1`.
    pub fn open(dir: D, config: LogConfig, after: Lsn) -> Result<(Log<D>, Recovered), LogError> {
        Self::open_from(dir, config, Some(after))
    }

    /// Opens a log shared by several streams (`streams`): every live record comes back, and
    /// a fresh log starts at LSN 1.
    pub fn open_shared(dir: D, config: LogConfig) -> Result<(Log<D>, Recovered), LogError> {
        Self::open_from(dir, config, None)
    }

    fn open_from(
        dir: D,
        config: LogConfig,
        covered: Option<Lsn>,
    ) -> Result<(Log<D>, Recovered), LogError> {
        config.validate()?;
        let after = covered.unwrap_or(0);
        let scan = reader::scan(&dir, covered)?;
        let next_free_id = scan.free.iter().map(|(id, _, _)| id + 1).max().unwrap_or(1);
        let mut free = Vec::new();
        for (_, name, len) in scan.free {
            if len == config.segment_bytes {
                free.push(name);
            } else {
                // A creation cut short, or a segment of another size: not worth keeping.
                segment::remove(&dir, &name)?;
            }
        }
        let mut sealed: VecDeque<Sealed> = scan
            .live
            .iter()
            .map(|f| Sealed {
                name: f.name.clone(),
                first_lsn: f.header.first_lsn,
                segment_bytes: f.header.segment_bytes,
            })
            .collect();
        let recovered = scan.recovered;
        let mut pool = Pool {
            free,
            next_free_id,
            created: 0,
        };
        let active = match (sealed.pop_back(), scan.live.last()) {
            (Some(last), Some(found)) => resume(&dir, last.name, found.header, scan.end_offset)?,
            // A fresh log: its first segment starts right after the checkpoint.
            _ => activate(&dir, &config, &mut pool, 1, after + 1)?,
        };
        let mut log = Log {
            dir,
            config,
            active,
            sealed,
            pool,
            group: Vec::with_capacity(config.group_bytes_max + FRAME_HEADER_LEN),
            group_records: 0,
            next_lsn: recovered.last_lsn + 1,
            durable_lsn: recovered.last_lsn,
            last_term: recovered.last_term,
            poisoned: None,
            stats: LogStats::default(),
        };
        while log.pool.free.len() < config.segments_preallocated {
            let name = log.pool.create(&log.dir, &config)?;
            log.pool.free.push(name);
        }
        Ok((log, recovered))
    }

    /// Adds records to the group, all or none, and returns their LSNs. They are durable
    /// only once a later `commit` returns Ok.
    pub fn append<P: AsRef<[u8]>>(
        &mut self,
        term: u64,
        payloads: &[P],
    ) -> Result<Range<Lsn>, LogError> {
        self.append_inner(term, None, payloads)
    }

    /// [`append`](Self::append) into a log shared by several streams: each frame starts
    /// with its [`Tag`], the records numbered from `first_seq` in `stream`.
    pub fn append_tagged<P: AsRef<[u8]>>(
        &mut self,
        term: u64,
        stream: u32,
        first_seq: u64,
        payloads: &[P],
    ) -> Result<Range<Lsn>, LogError> {
        self.append_inner(term, Some((stream, first_seq)), payloads)
    }

    fn append_inner<P: AsRef<[u8]>>(
        &mut self,
        term: u64,
        tag: Option<(u32, u64)>,
        payloads: &[P],
    ) -> Result<Range<Lsn>, LogError> {
        self.check_poisoned()?;
        assert!(
            term >= self.last_term,
            "terms never go backwards within a log"
        );
        let head_len = if tag.is_some() { TAG_LEN } else { 0 };
        let mut bytes = 0;
        let max = self.config.record_bytes_max();
        for p in payloads {
            let len = p.as_ref().len() + head_len;
            if len > max {
                return Err(LogError::RecordTooLarge { len, max });
            }
            bytes += frame::frame_len(len);
        }
        if self.group.len() + bytes > self.config.group_bytes_max {
            return Err(LogError::GroupFull {
                bytes: self.group.len() + bytes,
                max: self.config.group_bytes_max,
            });
        }
        let first = self.next_lsn;
        for (i, p) in payloads.iter().enumerate() {
            let head = tag.map(|(stream, seq)| {
                Tag {
                    stream,
                    seq: seq + i as u64,
                }
                .encode()
            });
            let head: &[u8] = head.as_ref().map_or(&[], |h| &h[..]);
            frame::encode_parts(&mut self.group, self.next_lsn, term, head, p.as_ref());
            self.next_lsn += 1;
        }
        self.group_records += payloads.len();
        if !payloads.is_empty() {
            self.last_term = term;
        }
        Ok(first..self.next_lsn)
    }

    /// Makes the group durable: one write, one `fdatasync`. Ok means every record up to
    /// `durable_lsn` is on disk. Any failure poisons the log.
    pub fn commit(&mut self) -> Result<CommitStats, LogError> {
        self.check_poisoned()?;
        if self.group_records == 0 {
            return Ok(CommitStats {
                durable_lsn: self.durable_lsn,
                ..CommitStats::default()
            });
        }
        let result = self.write_group();
        if let Err(e) = &result {
            self.poison(e);
        }
        result
    }

    fn write_group(&mut self) -> Result<CommitStats, LogError> {
        let len = self.group.len();
        let first = self.next_lsn - self.group_records as u64;
        let rolled =
            self.active.offset + (len + FRAME_HEADER_LEN) as u64 > self.active.header.segment_bytes;
        if rolled {
            self.roll(first)?;
        }
        assert!(
            self.active.offset + (len + FRAME_HEADER_LEN) as u64
                <= self.active.header.segment_bytes
        );
        let describe = |log: &Self| log.dir.describe(&log.active.name);
        // The end marker: the next group overwrites it; recovery stops at it.
        self.group.resize(len + FRAME_HEADER_LEN, 0);
        // One durable write (a synchronous direct write where the filesystem allows it,
        // else a write and an fdatasync): its whole time counts as the sync's.
        let started = Instant::now();
        let written = self
            .active
            .file
            .write_durable_at(self.active.offset, &self.group);
        self.group.truncate(len);
        written.map_err(|(op, e)| LogError::io(op, describe(self), e))?;
        let stats = CommitStats {
            durable_lsn: self.next_lsn - 1,
            records: self.group_records,
            bytes: len,
            sync_duration: started.elapsed(),
            rolled,
        };
        debug_assert_eq!(stats.durable_lsn, first + self.group_records as u64 - 1);
        self.active.offset += len as u64;
        self.durable_lsn = stats.durable_lsn;
        self.group.clear();
        self.group_records = 0;
        self.stats.groups += 1;
        self.stats.records += stats.records as u64;
        self.stats.bytes += len as u64;
        Ok(stats)
    }

    /// Seals the active segment and activates a free (or new) one starting at `first_lsn`.
    fn roll(&mut self, first_lsn: Lsn) -> Result<(), LogError> {
        let epoch = self.active.header.epoch + 1;
        let active = activate(&self.dir, &self.config, &mut self.pool, epoch, first_lsn)?;
        let old = std::mem::replace(&mut self.active, active);
        self.sealed.push_back(Sealed {
            name: old.name,
            first_lsn: old.header.first_lsn,
            segment_bytes: old.header.segment_bytes,
        });
        Ok(())
    }

    /// Recycles every sealed segment whose records all have LSNs below `lsn` (a
    /// checkpoint covers them). The active segment is never recycled.
    pub fn truncate_below(&mut self, lsn: Lsn) -> Result<TruncateStats, LogError> {
        self.check_poisoned()?;
        assert!(
            lsn <= self.durable_lsn + 1,
            "a checkpoint covers only durable records"
        );
        let result = self.recycle_below(lsn);
        if let Err(e) = &result {
            self.poison(e);
        }
        result
    }

    fn recycle_below(&mut self, lsn: Lsn) -> Result<TruncateStats, LogError> {
        let mut stats = TruncateStats::default();
        while let Some(oldest) = self.sealed.front() {
            let next_first = self
                .sealed
                .get(1)
                .map_or(self.active.header.first_lsn, |s| s.first_lsn);
            if next_first > lsn {
                break;
            }
            debug_assert!(oldest.first_lsn < next_first);
            let keep = self.pool.free.len() < self.config.segments_free_max
                && oldest.segment_bytes == self.config.segment_bytes;
            if keep {
                let name = segment::recycle(&self.dir, &oldest.name, self.pool.next_free_id)?;
                self.pool.next_free_id += 1;
                self.pool.free.push(name);
                stats.recycled += 1;
                self.stats.segments_recycled += 1;
            } else {
                segment::remove(&self.dir, &oldest.name)?;
                stats.removed += 1;
            }
            self.sealed.pop_front();
        }
        Ok(stats)
    }

    fn check_poisoned(&self) -> Result<(), LogError> {
        match &self.poisoned {
            Some(cause) => Err(LogError::Poisoned(cause.clone())),
            None => Ok(()),
        }
    }

    fn poison(&mut self, e: &LogError) {
        if self.poisoned.is_none() {
            tracing::error!(error = %e, "segment log failed; it refuses appends until reopened");
            self.poisoned = Some(Arc::new(e.clone()));
        }
    }

    /// Every record up to this LSN is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// The LSN the next appended record gets.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Records appended but not yet committed.
    pub fn pending_records(&self) -> usize {
        self.group_records
    }

    /// Bytes of frames appended but not yet committed.
    pub fn pending_bytes(&self) -> usize {
        self.group.len()
    }

    /// Whether an earlier failure made the log refuse appends.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn stats(&self) -> LogStats {
        LogStats {
            durable_lsn: self.durable_lsn,
            next_lsn: self.next_lsn,
            segments_live: self.sealed.len() + 1,
            segments_free: self.pool.free.len(),
            segments_created: self.pool.created,
            ..self.stats
        }
    }
}
