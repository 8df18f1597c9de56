//! Recovery at start: checkpoint plus log replay per shard, then the repairs a crash needs.
//!
//! 1. Each shard of the current generation is rebuilt from its checkpoint (entries verified
//!    by the checkpoint store) and its records after the sequence the checkpoint covers,
//!    read from the segment log it shares with the other shards of its log (shard `s`
//!    writes to log `s % logs`; every frame is tagged with its shard and sequence, see
//!    `log::streams`). A torn tail (a group write that never finished, so was never
//!    acknowledged) is dropped by the log and reported; damage anywhere else stops the
//!    start, naming the file and offset.
//! 2. If the shard count or the log count changed, the states are merged and split by the new routing and
//!    written as whole checkpoints of the next generation with fresh empty logs; the layout
//!    record is flipped (one durable write), then the old generation is removed.
//! 3. A cart version cut by a crash between its shards is kept if every shard it went to
//!    logged it, and otherwise put back to the previous version on every shard (before a
//!    reshard, in the layout it was written in); a confirm cut between shards is rolled
//!    forward (`repair`).
//! 4. Holds whose deadline passed while stockd was down are expired, with their events.
//!
//! The commands of steps 3 and 4 are returned so the caller logs them before serving.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::backend::{AnyDir, Storage};
use super::checkpoint::Scope;
use super::checkpointer::{self, ConfigKeys, RestoreError};
use super::error::{RecoveryError, StorageError};
use super::log::streams::{Tag, Uncovered};
use super::log::{self, Log, Lsn};
use super::pages::SmallPages;
use super::record::{self, LogRecord};
use super::repair::{repair_split_holds, resolve_updates};
use stockd_domain::{Command, Engine, EngineSnapshot, Millis, Settings};

/// The name of the layout record in the checkpoint store.
const LAYOUT: &str = "layout";

/// The layout in use: which generation, how many shards, how many logs they share.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    pub generation: u32,
    pub shards: u32,
    pub logs: u32,
}

/// The log shard `shard` writes to, of `logs`.
pub fn log_of(shard: u32, logs: u32) -> u32 {
    shard % logs.max(1)
}

/// What recovery found and did, for the start-up log.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    pub shards_before: u32,
    pub shards_after: u32,
    pub records_replayed: u64,
    /// Torn tails dropped, each naming the segment file and offset.
    pub dropped_tail_records: Vec<String>,
    pub holds_repaired: usize,
    pub holds_expired: usize,
    /// Repairs that could not be applied (each is logged as a warning).
    pub repair_failures: Vec<String>,
    pub positions: usize,
    pub holds: usize,
    pub duration: Duration,
}

/// One shard ready to serve.
pub struct ShardState {
    pub engine: Engine,
    pub config_keys: ConfigKeys,
    /// The sequence number its next record gets (its records are durable up to the one
    /// before).
    pub next_seq: u64,
}

/// One log ready for appending.
pub struct LogState {
    pub log: Log<AnyDir>,
    /// Where its records that no checkpoint covers yet lie (for recycling).
    pub uncovered: Uncovered,
}

/// Engines ready to serve, and what must be logged before serving.
pub struct Recovered {
    pub shards: Vec<ShardState>,
    /// The logs, `log_of(shard, logs.len())` for each shard.
    pub logs: Vec<LogState>,
    /// The storage generation (shard layout) to append to.
    pub generation: u32,
    /// Per shard: records (repairs and expiries) to append before serving.
    pub pending: Vec<Vec<Vec<u8>>>,
    pub report: RecoveryReport,
}

/// The layout record, if anything was ever written.
pub fn read_meta(storage: &Storage) -> Result<Option<Meta>, StorageError> {
    let Some(bytes) = storage.checkpoints.get_meta(LAYOUT)? else {
        return Ok(None);
    };
    record::decode(&bytes)
        .map(Some)
        .map_err(|e| StorageError::Corrupt {
            path: storage.data_dir.clone(),
            what: "layout record",
            reason: e.to_string(),
        })
}

/// Records the layout in use, durably (one atomic write).
pub fn write_meta(storage: &Storage, meta: Meta) -> Result<(), StorageError> {
    storage
        .checkpoints
        .put_meta(LAYOUT, &record::encode(&meta))?;
    Ok(())
}

/// What recovery does with the events its replay regenerates (`storage::events`).
pub trait ReplayEvents: Sync {
    /// Called after each replayed record of a shard: takes the engine's events.
    fn replayed(&self, at: (u32, u32, Lsn), command: &Command, engine: &mut Engine);
    /// Makes the events kept so far durable (before a reshard removes their records).
    fn flush(&self) -> Result<(), RecoveryError>;
}

/// Drops the events of replayed records (a reload after a failed write, benchmarks).
pub struct DropEvents;

impl ReplayEvents for DropEvents {
    fn replayed(&self, _: (u32, u32, Lsn), _: &Command, engine: &mut Engine) {
        engine.drain_events().for_each(drop);
    }
    fn flush(&self) -> Result<(), RecoveryError> {
        Ok(())
    }
}

/// The layout to recover into: shards, and the logs they share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub shards: u32,
    pub logs: u32,
}

/// Rebuilds the state in `storage` for `layout`, keys routed by `route`.
pub fn recover(
    storage: &Storage,
    layout: Layout,
    settings: &Settings,
    now: Millis,
    route: &dyn Fn(&str, &str) -> usize,
) -> Result<Recovered, RecoveryError> {
    recover_with_events(storage, layout, settings, now, route, &DropEvents)
}

/// [`recover`], handing the events of the replayed records to `events`, which makes the
/// ones it keeps durable before the shard count changes.
pub fn recover_with_events(
    storage: &Storage,
    layout: Layout,
    settings: &Settings,
    now: Millis,
    route: &dyn Fn(&str, &str) -> usize,
    events: &dyn ReplayEvents,
) -> Result<Recovered, RecoveryError> {
    let started = Instant::now();
    let _small_pages = SmallPages::during_recovery();
    let Layout { shards, logs } = layout;
    assert!(
        (1..=shards).contains(&logs),
        "between one log and one per shard"
    );
    let mut report = RecoveryReport {
        shards_after: shards,
        ..Default::default()
    };
    let meta = match read_meta(storage)? {
        Some(meta) => meta,
        None => {
            let meta = Meta {
                generation: 0,
                shards,
                logs,
            };
            write_meta(storage, meta)?;
            meta
        }
    };
    report.shards_before = meta.shards;
    let (mut states, mut opened) = load_all(storage, meta, settings, &mut report, events)?;
    events.flush()?;
    let mut generation = meta.generation;
    if meta.shards != shards || meta.logs != logs {
        // Cart versions name the shards of the layout they were written in: settle them
        // there. The reshard writes the result whole, so their records are not needed.
        let mut old: Vec<&mut Engine> = states.iter_mut().map(|s| &mut s.engine).collect();
        let mut unused = vec![Vec::new(); old.len()];
        resolve_updates(&mut old, now, &mut unused, &mut report);
        drop(opened);
        (states, opened) = reshard(storage, meta, states, layout, settings, route)?;
        generation = meta.generation + 1;
    }
    let mut engines: Vec<Engine> = Vec::with_capacity(states.len());
    let mut rest = Vec::with_capacity(states.len());
    for s in states {
        engines.push(s.engine);
        rest.push((s.config_keys, s.next_seq));
    }
    let mut pending: Vec<Vec<Vec<u8>>> = vec![Vec::new(); shards as usize];
    repair_split_holds(&mut engines, now, &mut pending, &mut report)?;
    expire_and_check(&mut engines, now, &mut pending, &mut report)?;
    report.duration = started.elapsed();
    let shards = engines
        .into_iter()
        .zip(rest)
        .map(|(engine, (config_keys, next_seq))| ShardState {
            engine,
            config_keys,
            next_seq,
        })
        .collect();
    Ok(Recovered {
        shards,
        logs: opened,
        generation,
        pending,
        report,
    })
}

/// A checkpoint as loaded: the engine, the sequence it covers, its configuration keys.
type Loaded = (Engine, Lsn, ConfigKeys);

/// Rebuilds every shard of the layout `meta`, side by side: the checkpoints and the logs
/// are read at once, then each shard replays its records on a thread of its own (shards
/// are independent until the repairs).
fn load_all(
    storage: &Storage,
    meta: Meta,
    settings: &Settings,
    report: &mut RecoveryReport,
    events: &dyn ReplayEvents,
) -> Result<(Vec<ShardState>, Vec<LogState>), RecoveryError> {
    let (checkpoints, logs) = std::thread::scope(|scope| {
        let logs: Vec<_> = (0..meta.logs)
            .map(|log| scope.spawn(move || open_log(storage, meta, log)))
            .collect();
        let checkpoints: Vec<_> = (0..meta.shards)
            .map(|shard| {
                scope.spawn(move || load_checkpoint(storage, meta.generation, shard, settings))
            })
            .collect();
        let logs: Vec<Result<_, _>> = logs
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or(Err(RecoveryError::Panicked { shard: 0 }))
            })
            .collect();
        let checkpoints: Vec<Result<Loaded, _>> = (0..meta.shards)
            .zip(checkpoints)
            .map(|(shard, t)| t.join().unwrap_or(Err(RecoveryError::Panicked { shard })))
            .collect();
        (checkpoints, logs)
    });
    let logs: Vec<(Log<AnyDir>, log::Recovered)> = logs.into_iter().collect::<Result<_, _>>()?;
    let checkpoints: Vec<Loaded> = checkpoints.into_iter().collect::<Result<_, _>>()?;
    for (l, (_, found)) in logs.iter().enumerate() {
        if let Some(tail) = &found.dropped {
            report.dropped_tail_records.push(format!(
                "log {l}: torn tail dropped: {} at offset {} ({}); it was never acknowledged",
                tail.file, tail.offset, tail.reason
            ));
        }
    }
    let replayed = replay_all(storage, meta, checkpoints, &logs, events)?;
    let mut uncovered: Vec<Uncovered> = (0..meta.logs).map(|_| Uncovered::default()).collect();
    let mut states = Vec::with_capacity(meta.shards as usize);
    for (shard, (state, runs, records)) in replayed.into_iter().enumerate() {
        let u = &mut uncovered[log_of(shard as u32, meta.logs) as usize];
        for (seq, lsn) in runs {
            u.appended(shard as u32, seq, lsn..lsn + 1);
        }
        report.records_replayed += records;
        states.push(state);
    }
    let logs = logs
        .into_iter()
        .zip(uncovered)
        .map(|((log, _), uncovered)| LogState { log, uncovered })
        .collect();
    Ok((states, logs))
}

/// A shard after its replay, the (sequence, LSN) of each record it replayed, and their count.
type Replayed = (ShardState, Vec<(u64, Lsn)>, u64);

/// Replays every shard's records after its checkpoint, each shard on its own thread.
fn replay_all(
    storage: &Storage,
    meta: Meta,
    checkpoints: Vec<Loaded>,
    logs: &[(Log<AnyDir>, log::Recovered)],
    events: &dyn ReplayEvents,
) -> Result<Vec<Replayed>, RecoveryError> {
    let results: Vec<Result<Replayed, RecoveryError>> = std::thread::scope(|scope| {
        let threads: Vec<_> = checkpoints
            .into_iter()
            .enumerate()
            .map(|(shard, (mut engine, covered, config_keys))| {
                let shard = shard as u32;
                let log = log_of(shard, meta.logs);
                let records = &logs[log as usize].1.records;
                scope.spawn(move || {
                    let started = Instant::now();
                    let mine = mine(storage, (log, shard), covered, records)?;
                    let count = mine.len() as u64;
                    replay(
                        storage,
                        (meta.generation, shard),
                        &mut engine,
                        &mine,
                        events,
                    )?;
                    tracing::info!(
                        shard,
                        log,
                        records = count,
                        replay_ms = started.elapsed().as_millis() as u64,
                        "log replayed"
                    );
                    let next_seq = mine.last().map_or(covered, |(seq, _, _)| *seq) + 1;
                    let runs = mine.iter().map(|(seq, lsn, _)| (*seq, *lsn)).collect();
                    let state = ShardState {
                        engine,
                        config_keys,
                        next_seq,
                    };
                    Ok((state, runs, count))
                })
            })
            .collect();
        threads
            .into_iter()
            .enumerate()
            .map(|(shard, t)| {
                t.join().unwrap_or(Err(RecoveryError::Panicked {
                    shard: shard as u32,
                }))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// One of a shard's records: its sequence, its LSN in the log, the record.
type Mine<'a> = (u64, Lsn, &'a [u8]);

/// One shard's records of a shared log after the sequence `covered`: (sequence, LSN,
/// record), in order. A record without a tag, or a gap between the checkpoint and the
/// shard's first record, is refused (`open_log` checks the rest of the log).
fn mine<'a>(
    storage: &Storage,
    (log, shard): (u32, u32),
    covered: u64,
    records: &'a [log::Record],
) -> Result<Vec<Mine<'a>>, RecoveryError> {
    let mut out = Vec::new();
    for r in records {
        let Some((tag, record)) = Tag::split(&r.payload) else {
            return Err(RecoveryError::Misplaced {
                path: storage.data_dir.join("log"),
                log,
                lsn: r.lsn,
                reason: "shorter than its tag".into(),
            });
        };
        if tag.stream != shard || tag.seq <= covered {
            continue;
        }
        let expected = out.last().map_or(covered, |(seq, _, _)| *seq) + 1;
        if tag.seq != expected {
            return Err(RecoveryError::Missing {
                path: storage.data_dir.join("log"),
                shard,
                covered: expected - 1,
                found: tag.seq,
            });
        }
        out.push((tag.seq, r.lsn, record));
    }
    Ok(out)
}

/// Opens log `log` of the layout `meta` and checks that each record is tagged with a
/// shard of this log, each shard's sequence contiguous.
fn open_log(
    storage: &Storage,
    meta: Meta,
    log: u32,
) -> Result<(Log<AnyDir>, log::Recovered), RecoveryError> {
    let opened = Instant::now();
    let dir = storage.log_dir(meta.generation, log)?;
    let (writer, found) =
        Log::open_shared(dir, storage.log_config).map_err(log_error(storage, log))?;
    let misplaced = |lsn, reason: String| RecoveryError::Misplaced {
        path: storage.data_dir.join("log"),
        log,
        lsn,
        reason,
    };
    let mut last: Vec<Option<u64>> = vec![None; meta.shards as usize];
    for r in &found.records {
        let Some((tag, _)) = Tag::split(&r.payload) else {
            return Err(misplaced(r.lsn, "shorter than its tag".into()));
        };
        if tag.stream >= meta.shards || log_of(tag.stream, meta.logs) != log {
            let reason = format!(
                "tagged with shard {}, which does not write here",
                tag.stream
            );
            return Err(misplaced(r.lsn, reason));
        }
        let before = &mut last[tag.stream as usize];
        if let Some(before) = *before
            && tag.seq != before + 1
        {
            let reason = format!(
                "shard {}'s record {} follows its record {before}",
                tag.stream, tag.seq
            );
            return Err(misplaced(r.lsn, reason));
        }
        *before = Some(tag.seq);
    }
    tracing::info!(
        log,
        records = found.records.len(),
        log_open_ms = opened.elapsed().as_millis() as u64,
        "log opened"
    );
    Ok((writer, found))
}

/// A shard's engine from its checkpoint (empty without one), the sequence it covers, and
/// the configuration keys it holds. The engine is checked by the caller, once its log is
/// replayed.
fn load_checkpoint(
    storage: &Storage,
    generation: u32,
    shard: u32,
    settings: &Settings,
) -> Result<Loaded, RecoveryError> {
    let config_keys = ConfigKeys::default();
    let scope = Scope { generation, shard };
    let started = Instant::now();
    let restored =
        checkpointer::restore_scope(storage.checkpoints.as_ref(), scope, settings, &config_keys);
    let restored = match restored {
        Ok(Some(restored)) => restored,
        Ok(None) => return Ok((Engine::new(settings.clone()), 0, config_keys)),
        Err(RestoreError::Store(e)) => return Err(StorageError::from(e).into()),
        Err(RestoreError::Entry(reason)) => {
            return Err(RecoveryError::Checkpoint {
                path: storage.data_dir.join("checkpoints"),
                shard,
                reason,
            });
        }
    };
    let total = started.elapsed();
    tracing::info!(
        shard,
        entries = restored.entries,
        pages = restored.pages,
        load_ms = (total - restored.decode).as_millis() as u64,
        restore_ms = restored.decode.as_millis() as u64,
        "checkpoint loaded"
    );
    Ok((restored.engine, restored.lsn_covered, config_keys))
}

/// Applies a shard's records, in sequence order, to its engine.
fn replay(
    storage: &Storage,
    (generation, shard): (u32, u32),
    engine: &mut Engine,
    records: &[Mine<'_>],
    events: &dyn ReplayEvents,
) -> Result<(), RecoveryError> {
    let path = || storage.data_dir.join("log");
    for &(seq, _, payload) in records {
        let rec: LogRecord = record::decode(payload).map_err(|e| RecoveryError::DamagedRecord {
            path: path(),
            shard,
            lsn: seq,
            reason: e.to_string(),
        })?;
        engine
            .apply(rec.now, &rec.command)
            .map_err(|source| RecoveryError::Replay {
                path: path(),
                shard,
                lsn: seq,
                source,
            })?;
        events.replayed((generation, shard, seq), &rec.command, engine);
    }
    Ok(())
}

fn log_error(storage: &Storage, log: u32) -> impl Fn(log::LogError) -> RecoveryError + '_ {
    move |source| RecoveryError::Log {
        path: storage.data_dir.clone(),
        log,
        source,
    }
}

/// Rebuilds one shard from what is durable, without taking its log over (after a failed
/// write, while the writer still owns the directory).
pub fn reload_shard(
    storage: &Storage,
    generation: u32,
    (shard, logs): (u32, u32),
    settings: &Settings,
) -> Result<Engine, RecoveryError> {
    let _small_pages = SmallPages::during_recovery();
    let (mut engine, covered, _) = load_checkpoint(storage, generation, shard, settings)?;
    let log = log_of(shard, logs);
    let dir = storage.log_dir(generation, log)?;
    let found = log::read_shared_records(&dir).map_err(log_error(storage, log))?;
    let mine = mine(storage, (log, shard), covered, &found.records)?;
    replay(
        storage,
        (generation, shard),
        &mut engine,
        &mine,
        &DropEvents,
    )?;
    engine
        .check_consistency()
        .map_err(|reason| RecoveryError::Inconsistent { shard, reason })?;
    Ok(engine)
}

/// Merges the state of the layout `old` and splits it for `layout`, stored as whole
/// checkpoints of the next generation with fresh logs. It writes the new layout, flips the
/// layout record, then removes the old generation: a crash anywhere leaves one whole
/// layout.
fn reshard(
    storage: &Storage,
    old: Meta,
    states: Vec<ShardState>,
    layout: Layout,
    settings: &Settings,
    route: &dyn Fn(&str, &str) -> usize,
) -> Result<(Vec<ShardState>, Vec<LogState>), RecoveryError> {
    let Layout { shards, logs } = layout;
    let merged = EngineSnapshot::merge(states.iter().map(|s| s.engine.snapshot()).collect());
    drop(states);
    let parts = merged.split(shards as usize, route);
    let next = old.generation + 1;
    storage
        .checkpoints
        .remove_generation(next)
        .map_err(StorageError::from)?;
    let mut out = Vec::with_capacity(shards as usize);
    for (shard, snap) in parts.into_iter().enumerate() {
        let shard = shard as u32;
        let engine = Engine::restore(settings.clone(), snap.clone()).map_err(|reason| {
            RecoveryError::Split {
                shards,
                shard,
                reason,
            }
        })?;
        let config_keys = ConfigKeys::default();
        let scope = Scope {
            generation: next,
            shard,
        };
        let encoded = checkpointer::encode(scope, 0, &snap.into_delta(), &config_keys);
        checkpointer::apply_unpublished(storage.checkpoints.as_ref(), encoded, &config_keys)?;
        out.push(ShardState {
            engine,
            config_keys,
            next_seq: 1,
        });
    }
    let mut opened = Vec::with_capacity(logs as usize);
    for log in 0..logs {
        storage.remove_log(next, log)?;
        let dir = storage.log_dir(next, log)?;
        let (log, _) =
            Log::open_shared(dir, storage.log_config).map_err(log_error(storage, log))?;
        opened.push(LogState {
            log,
            uncovered: Uncovered::default(),
        });
    }
    write_meta(
        storage,
        Meta {
            generation: next,
            shards,
            logs,
        },
    )?;
    storage
        .checkpoints
        .remove_generation(old.generation)
        .map_err(StorageError::from)?;
    for log in 0..old.logs {
        storage.remove_log(old.generation, log)?;
    }
    Ok((out, opened))
}

/// Expires the holds whose deadline passed while stockd was down (their records join
/// `pending`), counts the state, and checks every engine's invariants (the only check of
/// a restored engine: its checkpoint's, its log's and the repairs' changes together), each
/// shard on its own thread.
fn expire_and_check(
    engines: &mut [Engine],
    now: Millis,
    pending: &mut [Vec<Vec<u8>>],
    report: &mut RecoveryReport,
) -> Result<(), RecoveryError> {
    let results: Vec<Result<usize, RecoveryError>> = std::thread::scope(|scope| {
        let threads: Vec<_> = engines
            .iter_mut()
            .zip(pending.iter_mut())
            .enumerate()
            .map(|(shard, (engine, pending))| {
                scope.spawn(move || expire_and_check_one(engine, shard as u32, now, pending))
            })
            .collect();
        threads
            .into_iter()
            .enumerate()
            .map(|(shard, t)| {
                t.join().unwrap_or(Err(RecoveryError::Panicked {
                    shard: shard as u32,
                }))
            })
            .collect()
    });
    for (engine, expired) in engines.iter().zip(results) {
        report.holds_expired += expired?;
        report.positions += engine.position_count();
        report.holds += engine.hold_count();
    }
    Ok(())
}

fn expire_and_check_one(
    engine: &mut Engine,
    shard: u32,
    now: Millis,
    pending: &mut Vec<Vec<u8>>,
) -> Result<usize, RecoveryError> {
    let expired = engine.expire_due(now);
    if expired > 0 {
        pending.push(record::encode(&LogRecord {
            now,
            command: Command::Expire,
        }));
    }
    engine
        .check_consistency()
        .map_err(|reason| RecoveryError::Inconsistent { shard, reason })?;
    Ok(expired)
}
