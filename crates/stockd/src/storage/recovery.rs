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
//! 3. A hold whose parts on different shards disagree (a crash between them) is made
//!    whole: rolled forward if a part was confirmed, otherwise rolled back everywhere.
//! 4. Holds whose deadline passed while stockd was down are expired, with their events.
//!
//! The commands of steps 3 and 4 are returned so the caller logs them before serving.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::backend::{AnyDir, Storage};
use super::checkpoint::Scope;
use super::checkpointer::{self, ConfigKeys, RestoreError};
use super::error::{RecoveryError, StorageError};
use super::log::{self, Log, Lsn};
use super::record::{self, LogRecord};
use stockd_domain::{
    Command, Engine, EngineSnapshot, HoldState, HoldView, LineView, Millis, OrderLine, Settings,
};

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

/// Rebuilds the state in `storage` for `shards` shards routed by `route`.
pub fn recover(
    storage: &Storage,
    shards: u32,
    settings: &Settings,
    now: Millis,
    route: &dyn Fn(&str, &str) -> usize,
) -> Result<Recovered, RecoveryError> {
    let started = Instant::now();
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
    let mut states = load_all(storage, meta, settings, &mut report)?;
    let mut generation = meta.generation;
    if meta.shards != shards {
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
) -> Result<Vec<ShardState>, RecoveryError> {
    type Loaded = Result<(ShardState, RecoveryReport), RecoveryError>;
    let loaded: Vec<Loaded> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..meta.shards)
            .map(|shard| {
                scope.spawn(move || {
                    let mut part = RecoveryReport::default();
                    open_shard(storage, meta.generation, shard, settings, &mut part)
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
    shard: u32,
    engine: &mut Engine,
    records: &[log::Record],
    report: &mut RecoveryReport,
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
        engine.drain_events().for_each(drop);
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
    replay(storage, shard, &mut engine, &found.records, report)?;
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
    let (mut engine, covered, _) = load_checkpoint(storage, generation, shard, settings)?;
    let dir = storage.log_dir(generation, shard)?;
    let found = log::read_records(&dir, covered).map_err(log_error(storage, shard))?;
    replay(
        storage,
        shard,
        &mut engine,
        &found.records,
        &mut RecoveryReport::default(),
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

/// Makes every hold whole again after a crash between its shards.
fn repair_split_holds(
    engines: &mut [Engine],
    now: Millis,
    pending: &mut [Vec<Vec<u8>>],
    report: &mut RecoveryReport,
) -> Result<(), RecoveryError> {
    let mut by_hold: BTreeMap<String, Vec<(usize, HoldView)>> = BTreeMap::new();
    for (shard, engine) in engines.iter().enumerate() {
        for view in engine.split_hold_views() {
            by_hold
                .entry(view.hold_ref.clone())
                .or_default()
                .push((shard, view));
        }
    }
    add_whole_parts(engines, &mut by_hold);
    for (hold_ref, parts) in by_hold {
        let same_digest = parts.iter().all(|(_, p)| p.digest == parts[0].1.digest);
        let answered: u32 = parts.iter().map(|(_, p)| p.answered_lines).sum();
        let states: Vec<HoldState> = parts.iter().map(|(_, p)| p.state).collect();
        let uniform = states.iter().all(|s| *s == states[0]);
        let complete = same_digest && answered == parts[0].1.total_lines;
        if (complete && uniform) || !states.contains(&HoldState::Active) {
            continue;
        }
        report.holds_repaired += 1;
        let confirmed = parts
            .iter()
            .find(|(_, p)| p.state == HoldState::Confirmed)
            .and_then(|(_, p)| p.order_ref.clone());
        for (shard, part) in &parts {
            if part.state != HoldState::Active {
                continue;
            }
            let command = match (&confirmed, complete) {
                (Some(order_ref), true) => Command::Confirm {
                    hold_ref: hold_ref.clone(),
                    order_ref: order_ref.clone(),
                },
                _ => Command::Release {
                    hold_ref: hold_ref.clone(),
                },
            };
            let applied = engines[*shard].apply(now, &command);
            if applied.is_err() {
                // A confirm can fail on a part already past its deadline: release it instead.
                let release = Command::Release {
                    hold_ref: hold_ref.clone(),
                };
                engines[*shard]
                    .apply(now, &release)
                    .map_err(|source| RecoveryError::Repair {
                        hold_ref: hold_ref.clone(),
                        source,
                    })?;
                pending[*shard].push(record::encode(&LogRecord {
                    now,
                    command: release,
                }));
                continue;
            }
            pending[*shard].push(record::encode(&LogRecord { now, command }));
        }
    }
    repair_split_orders(engines, now, pending, report);
    Ok(())
}

/// Adds the parts of each split hold that hold their whole request on another shard: a
/// cart update that moved every line onto one shard answers for all of its request there,
/// while a shard that missed the update keeps the older, split version. Both must be
/// compared, or the hold would come back half updated.
fn add_whole_parts(engines: &[Engine], by_hold: &mut BTreeMap<String, Vec<(usize, HoldView)>>) {
    for (hold_ref, parts) in by_hold.iter_mut() {
        for (shard, engine) in engines.iter().enumerate() {
            if parts.iter().any(|(s, _)| *s == shard) {
                continue;
            }
            // `Millis::MIN`: the part's stored state, without the read-time expiry.
            if let Some(view) = engine.hold(Millis::MIN, hold_ref) {
                parts.push((shard, view));
            }
        }
    }
}

/// Finishes a fulfilment or cancellation that a crash cut between shards: the router
/// checked every shard before any wrote, so finishing is always allowed.
fn repair_split_orders(
    engines: &mut [Engine],
    now: Millis,
    pending: &mut [Vec<Vec<u8>>],
    report: &mut RecoveryReport,
) {
    let mut orders: BTreeMap<String, Vec<(usize, HoldView)>> = BTreeMap::new();
    for (shard, engine) in engines.iter().enumerate() {
        for view in engine.split_hold_views() {
            if view.state == HoldState::Confirmed {
                orders
                    .entry(view.hold_ref.clone())
                    .or_default()
                    .push((shard, view));
            }
        }
    }
    for (hold_ref, parts) in orders {
        let Some(order_ref) = parts.iter().find_map(|(_, p)| p.order_ref.clone()) else {
            continue;
        };
        let commands = order_repairs(&order_ref, &parts);
        if !commands.is_empty() {
            report.holds_repaired += 1;
        }
        for (shard, command) in commands {
            match engines[shard].apply(now, &command) {
                Ok(_) => pending[shard].push(record::encode(&LogRecord { now, command })),
                Err(e) => report
                    .repair_failures
                    .push(format!("order {order_ref:?} of hold {hold_ref:?}: {e}")),
            }
        }
    }
}

/// The commands that make an order's parts agree: a cancellation seen on one part is
/// finished on the others; otherwise the latest fulfilment is finished on every part that
/// missed it.
fn order_repairs(order_ref: &str, parts: &[(usize, HoldView)]) -> Vec<(usize, Command)> {
    if parts.iter().any(|(_, p)| p.cancelled) {
        return parts
            .iter()
            .filter(|(_, p)| !p.cancelled)
            .map(|(shard, _)| {
                let order_ref = order_ref.to_string();
                (*shard, Command::CancelOrder { order_ref })
            })
            .collect();
    }
    let Some(latest) = parts
        .iter()
        .filter_map(|(_, p)| p.last_fulfil.as_ref())
        .max_by_key(|op| (op.at, op.id))
    else {
        return Vec::new();
    };
    let mut commands = Vec::new();
    for (shard, p) in parts {
        if p.last_fulfil.as_ref().map(|o| o.id) == Some(latest.id) {
            continue;
        }
        let lines = match &latest.lines {
            None if p.open == 0 => continue,
            None => None,
            Some(all) => match lines_on_part(all, p) {
                Some(mine) => Some(mine),
                None => continue,
            },
        };
        commands.push((
            *shard,
            Command::Fulfil {
                order_ref: order_ref.to_string(),
                lines,
                op: Some(latest.clone()),
            },
        ));
    }
    commands
}

/// The lines of a partial fulfilment that fall on this part, with their request index;
/// `None` when none does.
fn lines_on_part(all: &[LineView], part: &HoldView) -> Option<Vec<OrderLine>> {
    let mine: Vec<OrderLine> = all
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            part.lines
                .iter()
                .any(|pl| pl.product_ref == l.product_ref && pl.location_ref == l.location_ref)
        })
        .map(|(i, l)| OrderLine {
            index: i as u32,
            product_ref: l.product_ref.clone(),
            location_ref: l.location_ref.clone(),
            quantity: l.quantity,
        })
        .collect();
    (!mine.is_empty()).then_some(mine)
}
