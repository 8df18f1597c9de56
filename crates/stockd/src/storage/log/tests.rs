//! Tests of the log through its API boundary (`Log`, `LogWriter`), on the simulated disk
//! for power cuts, damage and failing disks, and on the real filesystem.

use std::io;

use super::sim::{CrashMode, Faults, SimDir, SimDisk};
use super::*;

/// Small segments so that tests roll over and recycle often.
fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        segments_preallocated: 1,
        segments_free_max: 2,
        group_bytes_max: 8 << 10,
    }
}

fn payload(lsn: Lsn, len: usize) -> Vec<u8> {
    (0..len).map(|i| (lsn as usize * 31 + i) as u8).collect()
}

fn open(disk: &SimDisk, config: LogConfig, after: Lsn) -> (Log<SimDir>, Recovered) {
    Log::open(disk.dir("log"), config, after).expect("open")
}

/// Writes `n` records of `len` bytes, `per_group` per commit.
fn write(log: &mut Log<SimDir>, n: usize, len: usize, per_group: usize) {
    for chunk in 0..n.div_ceil(per_group) {
        let count = per_group.min(n - chunk * per_group);
        let first = log.next_lsn();
        let batch: Vec<_> = (0..count as u64).map(|i| payload(first + i, len)).collect();
        let lsns = log.append(1, &batch).unwrap();
        assert_eq!(lsns, first..first + count as u64);
        let stats = log.commit().unwrap();
        assert_eq!(stats.durable_lsn, lsns.end - 1);
    }
}

fn check_records(records: &[Record], first: Lsn, last: Lsn, len: usize) {
    let lsns: Vec<_> = records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, (first..=last).collect::<Vec<_>>());
    for r in records {
        assert_eq!(r.payload, payload(r.lsn, len), "payload of LSN {}", r.lsn);
    }
}

fn damaged(e: LogError) -> (String, u64, String) {
    match e {
        LogError::Damaged {
            file,
            offset,
            reason,
        } => (file, offset, reason),
        other => panic!("expected damage, got {other}"),
    }
}

#[test]
fn round_trip() {
    let disk = SimDisk::new(1);
    let (mut log, recovered) = open(&disk, small(), 0);
    assert!(recovered.records.is_empty());
    assert_eq!(log.append(7, &[b"one".as_slice(), b"two"]).unwrap(), 1..3);
    assert_eq!(log.durable_lsn(), 0, "nothing is durable before commit");
    let stats = log.commit().unwrap();
    assert_eq!((stats.durable_lsn, stats.records), (2, 2));
    drop(log);
    let (log, recovered) = open(&disk, small(), 0);
    let got: Vec<_> = recovered
        .records
        .iter()
        .map(|r| (r.lsn, r.term, &r.payload[..]))
        .collect();
    assert_eq!(got, vec![(1, 7, &b"one"[..]), (2, 7, &b"two"[..])]);
    assert_eq!((log.next_lsn(), recovered.last_term), (3, 7));
}

#[test]
fn one_sync_per_group() {
    let disk = SimDisk::new(2);
    let (mut log, _) = open(&disk, small(), 0);
    let before = disk.syncs();
    let created_before = log.stats().segments_created;
    write(&mut log, 1000, 40, 100);
    // 10 groups; rollovers add a header sync and a directory sync each, and creating a
    // segment when the free pool is empty adds two more.
    let stats = log.stats();
    let rollovers = stats.segments_live as u64 - 1;
    assert_eq!(
        disk.syncs() - before,
        10 + 2 * rollovers + 2 * (stats.segments_created - created_before)
    );
    assert_eq!((stats.groups, stats.records), (10, 1000));
    assert!(
        log.commit().unwrap().records == 0,
        "an empty commit does no I/O"
    );
}

#[test]
fn reopen_continues_the_lsn_sequence() {
    let disk = SimDisk::new(3);
    let (mut log, _) = open(&disk, small(), 0);
    write(&mut log, 30, 100, 7);
    drop(log);
    let (mut log, recovered) = open(&disk, small(), 0);
    check_records(&recovered.records, 1, 30, 100);
    write(&mut log, 30, 100, 7);
    drop(log);
    let (_, recovered) = open(&disk, small(), 10);
    check_records(&recovered.records, 11, 60, 100);
    assert!(recovered.dropped.is_none());
}

#[test]
fn segments_roll_over_and_read_back() {
    let disk = SimDisk::new(4);
    let (mut log, _) = open(&disk, small(), 0);
    write(&mut log, 2000, 200, 30);
    let live = log.stats().segments_live;
    assert!(live >= 6, "{live} segments");
    drop(log);
    let (log, recovered) = open(&disk, small(), 0);
    check_records(&recovered.records, 1, 2000, 200);
    assert_eq!(recovered.segments, live);
    assert_eq!(log.stats().segments_live, live);
}

#[test]
fn truncate_below_recycles_and_reopen_ignores_stale_frames() {
    let disk = SimDisk::new(5);
    let (mut log, _) = open(&disk, small(), 0);
    write(&mut log, 1500, 200, 25);
    let truncated = log.truncate_below(1200).unwrap();
    assert!(truncated.recycled >= 2, "{truncated:?}");
    let stats = log.stats();
    assert!(stats.segments_free <= small().segments_free_max);
    // New records go into recycled segments, over their old frames.
    let created = stats.segments_created;
    write(&mut log, 400, 200, 25);
    assert!(log.stats().segments_created <= created + 1);
    drop(log);
    let (log, recovered) = open(&disk, small(), 1199);
    check_records(&recovered.records, 1200, 1900, 200);
    assert!(recovered.dropped.is_none(), "{:?}", recovered.dropped);
    assert!(recovered.first_lsn <= 1200);
    drop(log);
    // A checkpoint older than the oldest kept segment cannot be served.
    let e = Log::open(disk.dir("log"), small(), 10)
        .err()
        .expect("refused");
    assert!(matches!(e, LogError::Missing { wanted: 11, .. }), "{e}");
}

#[test]
fn a_recycled_segments_old_frames_are_not_read_as_new() {
    let disk = SimDisk::new(16);
    let (mut log, _) = open(&disk, small(), 0);
    while log.stats().segments_live < 3 {
        write(&mut log, 10, 300, 10);
    }
    log.truncate_below(log.durable_lsn() + 1).unwrap();
    assert_eq!(log.stats().segments_live, 1);
    let created = log.stats().segments_created;
    let first_new = log.next_lsn();
    while log.stats().segments_live < 2 {
        write(&mut log, 1, 300, 1);
    }
    write(&mut log, 3, 300, 1);
    assert_eq!(
        log.stats().segments_created,
        created,
        "the new segment is a recycled one"
    );
    let last = log.durable_lsn();
    drop(log);
    // The recycled segment still holds old frames after the 4 new ones.
    let (_, recovered) = open(&disk, small(), first_new - 1);
    check_records(&recovered.records, first_new, last, 300);
    assert!(recovered.dropped.is_none(), "{:?}", recovered.dropped);
}

#[test]
fn regular_truncation_keeps_the_log_bounded() {
    let disk = SimDisk::new(6);
    let (mut log, _) = open(&disk, small(), 0);
    for _ in 0..50 {
        write(&mut log, 300, 200, 30);
        log.truncate_below(log.durable_lsn() - 100).unwrap();
        let names = disk.names("log").len();
        assert!(names <= 2 + small().segments_free_max, "{names} files");
    }
    assert!(log.stats().segments_created <= 4, "{:?}", log.stats());
    drop(log);
    let (_, recovered) = open(&disk, small(), 15_000 - 101);
    check_records(&recovered.records, 15_000 - 100, 15_000, 200);
}

#[test]
fn records_too_large_or_groups_too_full_are_refused() {
    let disk = SimDisk::new(7);
    let (mut log, _) = open(&disk, small(), 0);
    let max = small().record_bytes_max();
    let e = log.append(0, &[vec![0u8; max + 1]]).unwrap_err();
    assert!(matches!(e, LogError::RecordTooLarge { .. }), "{e}");
    log.append(0, &[vec![1u8; max]]).unwrap();
    let e = log.append(0, &[b"x"]).unwrap_err();
    assert!(matches!(e, LogError::GroupFull { .. }), "{e}");
    log.commit().unwrap();
    assert_eq!(log.append(0, &[b"x"]).unwrap(), 2..3);
}

/// The model of one power-cut run: what was appended and what was acknowledged.
struct Model {
    appended: Vec<Vec<u8>>,
    /// LSN of `appended[0]`.
    base: Lsn,
    acked: Lsn,
    checkpoint_below: Lsn,
}

/// Random appends, commits and truncations until the disk's power goes.
fn run_until_power_cut(log: &mut Log<SimDir>, disk: &SimDisk, model: &mut Model) {
    disk.power_off_after(disk.random() % 400);
    for _ in 0..300 {
        // Appends 12 in 20, commits 7 in 20, truncations 1 in 20 (with a lag, so that
        // torn tails are often still in a live segment when the next rollover comes).
        match disk.random() % 20 {
            0..=11 => {
                let n = 1 + disk.random() % 5;
                let batch: Vec<_> = (0..n)
                    .map(|i| payload(log.next_lsn() + i, (disk.random() % 700) as usize))
                    .collect();
                match log.append(1, &batch) {
                    Ok(_) => model.appended.extend(batch),
                    Err(LogError::GroupFull { .. }) => {}
                    Err(_) => return,
                }
            }
            12..=18 => match log.commit() {
                Ok(stats) => model.acked = stats.durable_lsn,
                Err(_) => return,
            },
            _ => {
                let below = model
                    .acked
                    .saturating_sub(disk.random() % 300)
                    .max(model.checkpoint_below);
                // The checkpoint is stored first, so it counts even if truncating fails.
                model.checkpoint_below = below;
                if log.truncate_below(below).is_err() {
                    return;
                }
            }
        }
    }
}

fn check_after_power_cut(seed: u64, recovered: &Recovered, model: &Model) {
    let after = model.checkpoint_below.saturating_sub(1).max(model.base - 1);
    let expected_first = after + 1;
    let mut lsn = expected_first;
    for r in &recovered.records {
        assert_eq!(r.lsn, lsn, "seed {seed}: LSNs in order");
        let index = (r.lsn - model.base) as usize;
        let appended = model.appended.get(index);
        assert_eq!(
            Some(&r.payload),
            appended,
            "seed {seed}: LSN {} never appended or changed",
            r.lsn
        );
        lsn += 1;
    }
    assert!(
        lsn > model.acked,
        "seed {seed}: acknowledged up to {} but recovered up to {}",
        model.acked,
        lsn - 1
    );
}

#[test]
fn power_cuts_lose_nothing_acknowledged() {
    let modes = [
        CrashMode::DropUnsynced,
        CrashMode::TornBytes,
        CrashMode::TornSectors,
    ];
    // What the runs went through, so the test shows it covered the interesting cases.
    let (mut dropped, mut unacked_kept, mut recycled) = (0, 0, 0);
    // Segments of 4 groups at most, so that rollovers (and torn tails just before one)
    // are frequent.
    let config = LogConfig {
        segment_bytes: 32 << 10,
        ..small()
    };
    for seed in 0..200u64 {
        let disk = SimDisk::new(seed);
        let (mut log, _) = open(&disk, config, 0);
        let mut model = Model {
            appended: Vec::new(),
            base: 1,
            acked: 0,
            checkpoint_below: 0,
        };
        for round in 0..5 {
            run_until_power_cut(&mut log, &disk, &mut model);
            recycled += (log.stats().segments_recycled > 0) as u32;
            drop(log);
            let mode = modes[(seed as usize + round) % modes.len()];
            disk.crash(mode);
            let after = model.checkpoint_below.saturating_sub(1).max(model.base - 1);
            if disk.random().is_multiple_of(4) {
                // The power goes again while recovery runs (it syncs, and may create).
                disk.power_off_after(disk.random() % 8);
                drop(Log::open(disk.dir("log"), config, after));
                disk.crash(mode);
            }
            let (reopened, recovered) = Log::open(disk.dir("log"), config, after)
                .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
            check_after_power_cut(seed, &recovered, &model);
            dropped += recovered.dropped.is_some() as u32;
            unacked_kept += (recovered.last_lsn > model.acked) as u32;
            // The next round's model starts from what recovery found (now durable).
            model.appended = recovered
                .records
                .iter()
                .map(|r| r.payload.clone())
                .collect();
            model.base = after + 1;
            model.acked = recovered.last_lsn;
            log = reopened;
        }
    }
    println!(
        "1000 power cuts: {dropped} torn tails dropped, {unacked_kept} kept unacknowledged records, {recycled} had recycled segments"
    );
    assert!(dropped > 10 && unacked_kept > 10 && recycled > 10);
}

#[test]
fn a_flipped_byte_followed_by_good_records_is_refused() {
    let disk = SimDisk::new(8);
    let (mut log, _) = open(&disk, small(), 0);
    write(&mut log, 100, 100, 10);
    drop(log);
    let name = first_segment(&disk);
    // The 11th record's frame: header + 10 frames of 128 bytes in.
    let offset = (segment::SEGMENT_HEADER_LEN + 10 * frame::frame_len(100)) as u64;
    disk.flip("log", &name, offset + 40, 0x04);
    let e = Log::open(disk.dir("log"), small(), 0)
        .err()
        .expect("refused");
    let (file, at, reason) = damaged(e);
    assert_eq!(
        (file.as_str(), at),
        (format!("sim:log/{name}").as_str(), offset)
    );
    assert!(reason.contains("LSN 12"), "{reason}");
}

/// Segments larger than the recovery scan's window: frames that straddle two windows read
/// back whole, and damage past the first window is still found and named.
#[test]
fn segments_larger_than_the_read_window_read_back_and_refuse_damage() {
    let config = LogConfig {
        segment_bytes: 3 * reader::LOG_READ_WINDOW_BYTES as u64,
        segments_preallocated: 1,
        segments_free_max: 1,
        group_bytes_max: 1 << 20,
    };
    let len = 100_003;
    let disk = SimDisk::new(8);
    let (mut log, _) = open(&disk, config, 0);
    write(&mut log, 100, len, 3);
    drop(log);
    let (_, found) = open(&disk, config, 0);
    check_records(&found.records, 1, 100, len);
    assert_eq!(found.dropped, None);
    let name = first_segment(&disk);
    let offset = (segment::SEGMENT_HEADER_LEN + 60 * frame::frame_len(len)) as u64;
    assert!(offset > reader::LOG_READ_WINDOW_BYTES as u64);
    disk.flip("log", &name, offset + 1_000, 0x10);
    let e = Log::open(disk.dir("log"), config, 0)
        .err()
        .expect("refused");
    let (file, at, reason) = damaged(e);
    assert_eq!(
        (file.as_str(), at),
        (format!("sim:log/{name}").as_str(), offset)
    );
    assert!(reason.contains("LSN 62"), "{reason}");
}

#[test]
fn a_truncated_tail_is_dropped_and_reported() {
    let disk = SimDisk::new(9);
    let (mut log, _) = open(&disk, small(), 0);
    write(&mut log, 20, 100, 5);
    let end = (segment::SEGMENT_HEADER_LEN + 20 * frame::frame_len(100)) as u64;
    log.append(1, &[payload(21, 100), payload(22, 100)])
        .unwrap();
    // The whole first frame and half of the second reach the disk.
    fail_commit_then_crash(&disk, log, frame::frame_len(100) as u64 + 60);
    let (mut log, recovered) = open(&disk, small(), 0);
    check_records(&recovered.records, 1, 21, 100);
    let dropped = recovered.dropped.expect("reported");
    assert_eq!(dropped.offset, end + frame::frame_len(100) as u64);
    assert!(dropped.file.starts_with("sim:log/seg-"), "{dropped:?}");
    assert_eq!(dropped.frames, 1);
    // Appends resume where the torn frame was.
    write(&mut log, 5, 100, 5);
    drop(log);
    let (_, recovered) = open(&disk, small(), 0);
    check_records(&recovered.records, 1, 26, 100);
    assert!(recovered.dropped.is_none());
}

#[test]
fn a_dropped_tail_then_a_rollover_is_not_damage() {
    let disk = SimDisk::new(18);
    let (mut log, _) = open(&disk, small(), 0);
    // 180 of the 187 frames of 328 bytes a segment holds, then a torn group of 5.
    write(&mut log, 180, 300, 10);
    let batch: Vec<_> = (181..186).map(|lsn| payload(lsn, 300)).collect();
    log.append(1, &batch).unwrap();
    fail_commit_then_crash(&disk, log, 1000);
    let (mut log, recovered) = open(&disk, small(), 0);
    check_records(&recovered.records, 1, 183, 300);
    assert!(recovered.dropped.is_some());
    // A group that does not fit after LSN 183 opens the next segment.
    write(&mut log, 20, 300, 20);
    assert_eq!(log.stats().segments_live, 2);
    drop(log);
    let (_, recovered) = open(&disk, small(), 0);
    check_records(&recovered.records, 1, 203, 300);
    assert!(recovered.dropped.is_none());
}

#[test]
fn a_torn_last_record_is_dropped_and_reported() {
    let disk = SimDisk::new(10);
    let (mut log, _) = open(&disk, small(), 0);
    write(&mut log, 20, 100, 5);
    drop(log);
    let name = first_segment(&disk);
    let last = (segment::SEGMENT_HEADER_LEN + 19 * frame::frame_len(100)) as u64;
    disk.flip("log", &name, last + 70, 0xff);
    let (_, recovered) = open(&disk, small(), 0);
    check_records(&recovered.records, 1, 19, 100);
    let dropped = recovered.dropped.expect("reported");
    assert_eq!(
        (dropped.offset, dropped.reason),
        (last, "checksum mismatch")
    );
}

#[test]
fn a_full_disk_fails_appends_with_a_typed_error_until_reopened() {
    let disk = SimDisk::new(11);
    let (mut log, _) = open(&disk, small(), 0);
    write(&mut log, 10, 100, 5);
    disk.set_faults(Faults {
        write: Some(io::ErrorKind::StorageFull),
        ..Faults::default()
    });
    log.append(1, &[b"lost"]).unwrap();
    let e = log.commit().unwrap_err();
    assert!(matches!(e, LogError::NoSpace { op: "write", .. }), "{e}");
    disk.set_faults(Faults::default());
    let e = log.append(1, &[b"refused"]).unwrap_err();
    assert!(matches!(e, LogError::Poisoned(_)), "{e}");
    assert!(log.commit().is_err() && log.truncate_below(1).is_err());
    drop(log);
    let (mut log, recovered) = open(&disk, small(), 0);
    check_records(&recovered.records, 1, 10, 100);
    write(&mut log, 1, 100, 1);
}

#[test]
fn a_full_disk_at_rollover_is_a_typed_error() {
    let disk = SimDisk::new(17);
    let config = LogConfig {
        segments_preallocated: 0,
        ..small()
    };
    let (mut log, _) = open(&disk, config, 0);
    // Exactly fills the first segment: (64 KiB - 4 KiB header - end marker) / 328 bytes.
    write(&mut log, 187, 300, 1);
    assert_eq!(log.stats().segments_live, 1);
    disk.set_faults(Faults {
        write: Some(io::ErrorKind::StorageFull),
        ..Faults::default()
    });
    log.append(1, &[payload(188, 300)]).unwrap();
    let e = log.commit().unwrap_err();
    assert!(matches!(e, LogError::NoSpace { op: "create", .. }), "{e}");
    assert!(matches!(log.append(1, &[b"x"]), Err(LogError::Poisoned(_))));
    let acked = log.durable_lsn();
    drop(log);
    disk.set_faults(Faults::default());
    let (_, recovered) = open(&disk, config, 0);
    check_records(&recovered.records, 1, acked, 300);
}

#[test]
fn a_failed_sync_poisons_the_log() {
    let disk = SimDisk::new(12);
    let (mut log, _) = open(&disk, small(), 0);
    write(&mut log, 10, 100, 5);
    disk.set_faults(Faults {
        sync: Some(io::ErrorKind::Other),
        ..Faults::default()
    });
    log.append(1, &[payload(11, 100)]).unwrap();
    let e = log.commit().unwrap_err();
    assert!(matches!(e, LogError::Io { op: "sync", .. }), "{e}");
    disk.set_faults(Faults::default());
    assert!(matches!(log.append(1, &[b"x"]), Err(LogError::Poisoned(_))));
    assert!(log.is_poisoned());
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    let (_, recovered) = open(&disk, small(), 0);
    check_records(&recovered.records, 1, 10, 100);
}

#[test]
fn a_missing_or_shortened_segment_is_damage() {
    let disk = SimDisk::new(13);
    let (mut log, _) = open(&disk, small(), 0);
    write(&mut log, 1000, 200, 25);
    drop(log);
    let live: Vec<_> = disk
        .names("log")
        .into_iter()
        .filter(|n| n.starts_with("seg-"))
        .collect();
    assert!(live.len() >= 3);
    disk.truncate("log", &live[1], 10_000);
    let (file, at, _) = damaged(Log::open(disk.dir("log"), small(), 0).err().unwrap());
    assert_eq!((file, at), (format!("sim:log/{}", live[1]), 10_000));
    disk.dir("log").remove(&live[1]).unwrap();
    let (file, _, reason) = damaged(Log::open(disk.dir("log"), small(), 0).err().unwrap());
    assert_eq!(file, format!("sim:log/{}", live[1]));
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn logs_side_by_side_are_independent() {
    let disk = SimDisk::new(14);
    let mut a = Log::open(disk.dir("shard-0"), small(), 0).unwrap().0;
    let mut b = Log::open(disk.dir("shard-1"), small(), 500).unwrap().0;
    assert_eq!(a.append(1, &[b"a"]).unwrap(), 1..2);
    assert_eq!(b.append(1, &[b"b"]).unwrap(), 501..502);
    a.commit().unwrap();
    b.commit().unwrap();
    drop((a, b));
    let (_, ra) = Log::open(disk.dir("shard-0"), small(), 0).unwrap();
    let (_, rb) = Log::open(disk.dir("shard-1"), small(), 500).unwrap();
    assert_eq!((ra.records[0].lsn, rb.records[0].lsn), (1, 501));
}

/// The records of `stream` in a shared log's recovered records: (sequence, record).
fn stream_records(recovered: &Recovered, stream: u32) -> Vec<(u64, Vec<u8>)> {
    recovered
        .records
        .iter()
        .filter_map(|r| {
            let (tag, record) = streams::Tag::split(&r.payload).expect("tagged");
            (tag.stream == stream).then(|| (tag.seq, record.to_vec()))
        })
        .collect()
}

/// A shared log on `disk` where stream 1 wrote one record ("one") that no checkpoint
/// covers, then stream 0 filled several segments, all covered by its checkpoint.
fn busy_and_quiet_streams(disk: &SimDisk) -> (LogWriter, std::thread::JoinHandle<Log<SimDir>>) {
    let (log, _) = Log::open_shared(disk.dir("log"), small()).unwrap();
    let (writer, thread) = LogWriter::spawn(log, |_| {});
    writer
        .blocking_append_tagged(1, (1, 1), vec![b"one".to_vec()])
        .unwrap();
    for seq in 1..=200u64 {
        writer
            .blocking_append_tagged(1, (0, seq), vec![payload(seq, 1000)])
            .unwrap();
    }
    (writer, thread)
}

#[test]
fn a_checkpoint_of_one_stream_keeps_what_another_still_needs() {
    let disk = SimDisk::new(16);
    let (writer, thread) = busy_and_quiet_streams(&disk);
    let kept = writer.blocking_covered(0, 200).unwrap();
    assert_eq!(
        kept.recycled + kept.removed,
        0,
        "stream 1's record is in the oldest segment"
    );
    let live_before = live_segments(&disk);
    assert!(live_before >= 3, "stream 0 filled several segments");
    // Once stream 1's checkpoint covers it too, every sealed segment goes.
    let gone = writer.blocking_covered(1, 1).unwrap();
    assert!(gone.recycled + gone.removed >= 2, "{gone:?}");
    assert!(live_segments(&disk) < live_before);
    drop(writer);
    let log = thread.join().unwrap();
    drop(log);
    let (_, recovered) = Log::open_shared(disk.dir("log"), small()).unwrap();
    assert!(stream_records(&recovered, 1).is_empty(), "recycled");
    let zero = stream_records(&recovered, 0);
    assert_eq!(zero.last().map(|(seq, _)| *seq), Some(200));
}

#[test]
fn a_shared_log_hands_each_stream_its_records_after_a_crash() {
    let disk = SimDisk::new(17);
    let (writer, thread) = busy_and_quiet_streams(&disk);
    writer.blocking_covered(0, 200).unwrap();
    drop(writer);
    drop(thread.join().unwrap());
    disk.crash(CrashMode::DropUnsynced);
    let (_, recovered) = Log::open_shared(disk.dir("log"), small()).unwrap();
    assert_eq!(
        stream_records(&recovered, 1),
        vec![(1, b"one".to_vec())],
        "stream 0's checkpoint did not recycle stream 1's record"
    );
}

/// Live segments in the simulated directory "log".
fn live_segments(disk: &SimDisk) -> usize {
    disk.names("log")
        .iter()
        .filter(|n| n.starts_with("seg-"))
        .count()
}

#[test]
fn the_writer_thread_groups_concurrent_batches() {
    let disk = SimDisk::new(15);
    let (log, _) = open(&disk, small(), 0);
    let groups = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = groups.clone();
    let (writer, thread) = LogWriter::spawn(log, move |stats| {
        assert!(stats.records > 0);
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let writer = writer.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    let done = writer
                        .blocking_append(1, vec![vec![c as u8; 1 + i]])
                        .unwrap();
                    assert!(done.durable_lsn >= done.lsns.end - 1);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    drop(writer);
    let log = thread.join().unwrap();
    assert_eq!(log.durable_lsn(), 800);
    assert!(groups.load(std::sync::atomic::Ordering::Relaxed) <= 800);
    drop(log);
    let (_, recovered) = open(&disk, small(), 0);
    assert_eq!(recovered.records.len(), 800);
}

#[test]
fn the_real_filesystem_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("shard-0");
    let config = LogConfig {
        segment_bytes: 256 << 10,
        ..small()
    };
    let (mut log, _) = Log::open(FsDir::open(&path).unwrap(), config, 0).unwrap();
    for i in 0..400u64 {
        log.append(1, &[payload(i + 1, 700)]).unwrap();
        if i % 10 == 9 {
            log.commit().unwrap();
        }
    }
    assert!(log.stats().segments_live >= 2);
    log.truncate_below(300).unwrap();
    drop(log);
    let (_, recovered) = Log::open(FsDir::open(&path).unwrap(), config, 299).unwrap();
    let lsns: Vec<_> = recovered.records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, (300..=400).collect::<Vec<_>>());
    assert!(
        recovered
            .records
            .iter()
            .all(|r| r.payload == payload(r.lsn, 700))
    );
}

#[test]
fn the_real_filesystem_refuses_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(FsDir::open(tmp.path()).unwrap(), small(), 0).unwrap();
    for i in 1..=20 {
        log.append(1, &[payload(i, 100)]).unwrap();
        log.commit().unwrap();
    }
    drop(log);
    let path = tmp.path().join(segment::live_name(1));
    let mut bytes = std::fs::read(&path).unwrap();
    let offset = segment::SEGMENT_HEADER_LEN + 5 * frame::frame_len(100);
    bytes[offset + 30] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let e = Log::open(FsDir::open(tmp.path()).unwrap(), small(), 0)
        .err()
        .unwrap();
    let (file, at, _) = damaged(e);
    assert_eq!((file, at), (path.display().to_string(), offset as u64));
}

/// fdatasync latency on the real disk: 1,000 groups of 16 records of 200 bytes.
/// `STOCKD_LOG_BENCH_DIR` picks the directory (default: the system temp dir).
/// Run: `cargo test -p stockd --release --lib storage::log::tests::fdatasync_latency -- \
/// --ignored --nocapture`.
#[test]
#[ignore]
fn fdatasync_latency_on_the_real_disk() {
    let base = std::env::var_os("STOCKD_LOG_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let tmp = tempfile::tempdir_in(base).unwrap();
    let (mut log, _) =
        Log::open(FsDir::open(tmp.path()).unwrap(), LogConfig::default(), 0).unwrap();
    let batch: Vec<_> = (0..16).map(|i| payload(i, 200)).collect();
    let mut syncs: Vec<_> = (0..1000)
        .map(|_| {
            log.append(1, &batch).unwrap();
            log.commit().unwrap().sync_duration
        })
        .collect();
    syncs.sort();
    let us = |q: f64| syncs[((syncs.len() - 1) as f64 * q) as usize].as_micros();
    println!(
        "fdatasync over 1000 groups of 16 x 200 B in {}: p50 {} us, p99 {} us, max {} us",
        tmp.path().display(),
        us(0.50),
        us(0.99),
        us(1.0)
    );
}

/// The name of the first live segment of the sim disk's `log` directory.
fn first_segment(disk: &SimDisk) -> String {
    disk.names("log")
        .into_iter()
        .find(|n| n.starts_with("seg-"))
        .expect("a live segment")
}

/// Makes the pending group's sync fail (so it is never acknowledged), then cuts power
/// keeping `keep` bytes of what was written but not synced.
fn fail_commit_then_crash(disk: &SimDisk, mut log: Log<SimDir>, keep: u64) {
    disk.set_faults(Faults {
        sync: Some(io::ErrorKind::Other),
        ..Faults::default()
    });
    assert!(log.commit().is_err());
    drop(log);
    disk.crash(CrashMode::KeepBytes(keep));
}
