//! Recovery at start: checkpoint plus log replay per shard, then the repairs a crash needs.
//!
//! 1. Each shard of the current generation is rebuilt from its checkpoint (entries verified
//!    by the checkpoint store) and the records of its segment log after the LSN the
//!    checkpoint covers. A torn tail (a group write that never finished, so was never
//!    acknowledged) is dropped by the log and reported; damage anywhere else stops the
//!    start, naming the file and offset.
//! 2. If the shard count changed, the states are merged and split by the new routing and
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
use super::log::{self, Log, Lsn};
use super::pages::SmallPages;
use super::record::{self, LogRecord};
use super::repair::{repair_split_holds, resolve_updates};
use stockd_domain::{Command, Engine, EngineSnapshot, Millis, Settings};

/// The name of the layout record in the checkpoint store.
const LAYOUT: &str = "layout";

/// The layout in use: which generation, how many shards.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    pub generation: u32,
    pub shards: u32,
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
    /// Its log, opened for appending.
    pub log: Log<AnyDir>,
    pub config_keys: ConfigKeys,
}

/// Engines ready to serve, and what must be logged before serving.
pub struct Recovered {
    pub shards: Vec<ShardState>,
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

/// Rebuilds the state in `storage` for `shards` shards routed by `route`.
pub fn recover(
    storage: &Storage,
    shards: u32,
    settings: &Settings,
    now: Millis,
    route: &dyn Fn(&str, &str) -> usize,
) -> Result<Recovered, RecoveryError> {
    recover_with_events(storage, shards, settings, now, route, &DropEvents)
}

/// [`recover`], handing the events of the replayed records to `events`, which makes the
/// ones it keeps durable before the shard count changes.
pub fn recover_with_events(
    storage: &Storage,
    shards: u32,
    settings: &Settings,
    now: Millis,
    route: &dyn Fn(&str, &str) -> usize,
    events: &dyn ReplayEvents,
) -> Result<Recovered, RecoveryError> {
    let started = Instant::now();
    let _small_pages = SmallPages::during_recovery();
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
            };
            write_meta(storage, meta)?;
            meta
        }
    };
    report.shards_before = meta.shards;
    let mut states = load_all(storage, meta, settings, &mut report, events)?;
    events.flush()?;
    let mut generation = meta.generation;
    if meta.shards != shards {
        // Cart versions name the shards of the layout they were written in: settle them
        // there. The reshard writes the result whole, so their records are not needed.
        let mut old: Vec<&mut Engine> = states.iter_mut().map(|s| &mut s.engine).collect();
        let mut unused = vec![Vec::new(); old.len()];
        resolve_updates(&mut old, now, &mut unused, &mut report);
        states = reshard(storage, meta, states, shards, settings, route)?;
        generation = meta.generation + 1;
    }
    let mut engines: Vec<Engine> = Vec::with_capacity(states.len());
    let mut rest = Vec::with_capacity(states.len());
    for s in states {
        engines.push(s.engine);
        rest.push((s.log, s.config_keys));
    }
    let mut pending: Vec<Vec<Vec<u8>>> = vec![Vec::new(); shards as usize];
    repair_split_holds(&mut engines, now, &mut pending, &mut report)?;
    expire_and_check(&mut engines, now, &mut pending, &mut report)?;
    report.duration = started.elapsed();
    let shards = engines
        .into_iter()
        .zip(rest)
        .map(|(engine, (log, config_keys))| ShardState {
            engine,
            log,
            config_keys,
        })
        .collect();
    Ok(Recovered {
        shards,
        generation,
        pending,
        report,
    })
}

/// Rebuilds every shard of the layout `meta`, side by side: shards are independent until
/// the repairs.
fn load_all(
    storage: &Storage,
    meta: Meta,
    settings: &Settings,
    report: &mut RecoveryReport,
    events: &dyn ReplayEvents,
) -> Result<Vec<ShardState>, RecoveryError> {
    type Loaded = Result<(ShardState, RecoveryReport), RecoveryError>;
    let loaded: Vec<Loaded> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..meta.shards)
            .map(|shard| {
                scope.spawn(move || {
                    let mut part = RecoveryReport::default();
                    open_shard(storage, meta.generation, shard, settings, &mut part, events)
                        .map(|state| (state, part))
                })
            })
            .collect();
        (0..meta.shards)
            .zip(threads)
            .map(|(shard, t)| {
                t.join()
                    .unwrap_or_else(|_| Err(RecoveryError::Panicked { shard }))
            })
            .collect()
    });
    let mut states = Vec::with_capacity(meta.shards as usize);
    for result in loaded {
        let (state, part) = result?;
        report.records_replayed += part.records_replayed;
        report
            .dropped_tail_records
            .extend(part.dropped_tail_records);
        states.push(state);
    }
    Ok(states)
}

/// A shard's engine from its checkpoint (empty without one), the LSN it covers, and the
/// configuration keys it holds. The engine is checked by the caller, once its log is
/// replayed.
fn load_checkpoint(
    storage: &Storage,
    generation: u32,
    shard: u32,
    settings: &Settings,
) -> Result<(Engine, Lsn, ConfigKeys), RecoveryError> {
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

/// Applies a shard's log records, in LSN order, to its engine.
fn replay(
    storage: &Storage,
    (generation, shard): (u32, u32),
    engine: &mut Engine,
    records: &[log::Record],
    report: &mut RecoveryReport,
    events: &dyn ReplayEvents,
) -> Result<(), RecoveryError> {
    let path = || storage.data_dir.join("log");
    for r in records {
        let rec: LogRecord =
            record::decode(&r.payload).map_err(|e| RecoveryError::DamagedRecord {
                path: path(),
                shard,
                lsn: r.lsn,
                reason: e.to_string(),
            })?;
        engine
            .apply(rec.now, &rec.command)
            .map_err(|source| RecoveryError::Replay {
                path: path(),
                shard,
                lsn: r.lsn,
                source,
            })?;
        events.replayed((generation, shard, r.lsn), &rec.command, engine);
        report.records_replayed += 1;
    }
    Ok(())
}

fn log_error(storage: &Storage, shard: u32) -> impl Fn(log::LogError) -> RecoveryError + '_ {
    move |source| RecoveryError::Log {
        path: storage.data_dir.clone(),
        shard,
        source,
    }
}

/// Opens one shard: checkpoint, then its log after the covered LSN, replayed.
fn open_shard(
    storage: &Storage,
    generation: u32,
    shard: u32,
    settings: &Settings,
    report: &mut RecoveryReport,
    events: &dyn ReplayEvents,
) -> Result<ShardState, RecoveryError> {
    let (mut engine, covered, config_keys) = load_checkpoint(storage, generation, shard, settings)?;
    let opened = Instant::now();
    let dir = storage.log_dir(generation, shard)?;
    let (log, found) =
        Log::open(dir, storage.log_config, covered).map_err(log_error(storage, shard))?;
    let open_ms = opened.elapsed().as_millis() as u64;
    if let Some(tail) = &found.dropped {
        report.dropped_tail_records.push(format!(
            "shard {shard}: torn tail of the log dropped: {} at offset {} ({}); it was never acknowledged",
            tail.file, tail.offset, tail.reason
        ));
    }
    let replayed = Instant::now();
    replay(
        storage,
        (generation, shard),
        &mut engine,
        &found.records,
        report,
        events,
    )?;
    tracing::info!(
        shard,
        records = found.records.len(),
        log_open_ms = open_ms,
        replay_ms = replayed.elapsed().as_millis() as u64,
        "log replayed"
    );
    Ok(ShardState {
        engine,
        log,
        config_keys,
    })
}

/// Rebuilds one shard from what is durable, without taking its log over (after a failed
/// write, while the writer still owns the directory).
pub fn reload_shard(
    storage: &Storage,
    generation: u32,
    shard: u32,
    settings: &Settings,
) -> Result<Engine, RecoveryError> {
    let _small_pages = SmallPages::during_recovery();
    let (mut engine, covered, _) = load_checkpoint(storage, generation, shard, settings)?;
    let dir = storage.log_dir(generation, shard)?;
    let found = log::read_records(&dir, covered).map_err(log_error(storage, shard))?;
    replay(
        storage,
        (generation, shard),
        &mut engine,
        &found.records,
        &mut RecoveryReport::default(),
        &DropEvents,
    )?;
    engine
        .check_consistency()
        .map_err(|reason| RecoveryError::Inconsistent { shard, reason })?;
    Ok(engine)
}

/// Merges the state of the layout `old` and splits it for `shards` shards, stored as whole
/// checkpoints of the next generation with fresh logs. It writes the new layout, flips the
/// layout record, then removes the old generation: a crash anywhere leaves one whole
/// layout.
fn reshard(
    storage: &Storage,
    old: Meta,
    states: Vec<ShardState>,
    shards: u32,
    settings: &Settings,
    route: &dyn Fn(&str, &str) -> usize,
) -> Result<Vec<ShardState>, RecoveryError> {
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
        storage.remove_log(next, shard)?;
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
        let dir = storage.log_dir(next, shard)?;
        let (log, _) = Log::open(dir, storage.log_config, 0).map_err(log_error(storage, shard))?;
        out.push(ShardState {
            engine,
            log,
            config_keys,
        });
    }
    write_meta(
        storage,
        Meta {
            generation: next,
            shards,
        },
    )?;
    storage
        .checkpoints
        .remove_generation(old.generation)
        .map_err(StorageError::from)?;
    for shard in 0..old.shards {
        storage.remove_log(old.generation, shard)?;
    }
    Ok(out)
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
