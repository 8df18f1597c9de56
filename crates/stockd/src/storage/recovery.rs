//! Recovery at start: snapshot plus log replay per shard, then the repairs a crash needs.
//!
//! 1. Each shard that wrote the folder is rebuilt from its snapshot and the log after it.
//!    A damaged record at the very end of a shard's log was never acknowledged (its flush
//!    did not finish): it is reported and dropped. Damage anywhere else stops the start.
//! 2. If the shard count changed, the states are merged and split by the new routing and
//!    stored as the snapshots of the next generation, which then replaces the old one.
//! 3. A hold whose parts on different shards disagree (a crash between them) is made
//!    whole: rolled forward if a part was confirmed, otherwise rolled back everywhere.
//! 4. Holds whose deadline passed while stockd was down are expired, with their events.
//!
//! The commands of steps 3 and 4 are returned so the caller logs them before serving.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::error::RecoveryError;
use super::record::{self, LogRecord};
use super::store::{Meta, Store};
use stockd_domain::snapshot::CompactSnapshot;
use stockd_domain::{
    Command, Engine, EngineSnapshot, HoldState, HoldView, LineView, Millis, OrderLine, Settings,
};

/// What recovery found and did, for the start-up log.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    pub shards_before: u32,
    pub shards_after: u32,
    pub records_replayed: u64,
    pub dropped_tail_records: Vec<String>,
    pub holds_repaired: usize,
    pub holds_expired: usize,
    /// Repairs that could not be applied (each is logged as a warning).
    pub repair_failures: Vec<String>,
    pub positions: usize,
    pub holds: usize,
    pub duration: Duration,
}

/// Engines ready to serve, and what must be logged before serving.
pub struct Recovered {
    pub engines: Vec<Engine>,
    /// The storage generation (shard layout) to append to.
    pub generation: u32,
    pub next_seq: Vec<u64>,
    /// Per shard: records (repairs and expiries) to append before serving.
    pub pending: Vec<Vec<Vec<u8>>>,
    pub report: RecoveryReport,
}

/// Rebuilds the state in `store` for `shards` shards routed by `route`.
pub fn recover(
    store: &Store,
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
    let Some(meta) = store.meta()? else {
        store.set_meta(Meta {
            generation: 0,
            shards,
        })?;
        report.duration = started.elapsed();
        return Ok(Recovered {
            generation: 0,
            engines: (0..shards).map(|_| Engine::new(settings.clone())).collect(),
            next_seq: vec![0; shards as usize],
            pending: vec![Vec::new(); shards as usize],
            report,
        });
    };
    report.shards_before = meta.shards;
    let (mut engines, mut next_seq) = replay_all(store, meta, settings, &mut report)?;
    let mut generation = meta.generation;
    if meta.shards != shards {
        engines = reshard(store, meta, engines, shards, settings, route)?;
        generation = meta.generation + 1;
        next_seq = vec![0; shards as usize];
    }
    let mut pending: Vec<Vec<Vec<u8>>> = vec![Vec::new(); shards as usize];
    repair_split_holds(&mut engines, now, &mut pending, &mut report)?;
    expire_and_check(&mut engines, now, &mut pending, &mut report)?;
    report.duration = started.elapsed();
    Ok(Recovered {
        engines,
        generation,
        next_seq,
        pending,
        report,
    })
}

/// Replays every shard of the layout `meta`, side by side: shards are independent until
/// the repairs. Returns the engines and each shard's next log sequence.
fn replay_all(
    store: &Store,
    meta: Meta,
    settings: &Settings,
    report: &mut RecoveryReport,
) -> Result<(Vec<Engine>, Vec<u64>), RecoveryError> {
    type Replayed = Result<(Engine, u64, RecoveryReport), RecoveryError>;
    let replayed: Vec<Replayed> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..meta.shards)
            .map(|shard| {
                scope.spawn(move || {
                    let mut part = RecoveryReport::default();
                    replay_shard(store, meta.generation, shard, settings, &mut part)
                        .map(|(engine, seq)| (engine, seq, part))
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
    let mut engines = Vec::with_capacity(meta.shards as usize);
    let mut next_seq = Vec::with_capacity(meta.shards as usize);
    for result in replayed {
        let (engine, seq, part) = result?;
        report.records_replayed += part.records_replayed;
        report
            .dropped_tail_records
            .extend(part.dropped_tail_records);
        engines.push(engine);
        next_seq.push(seq);
    }
    Ok((engines, next_seq))
}

/// Merges the state of the layout `old` and splits it for `shards` shards, stored as the
/// next generation. It writes the new layout, flips the layout record, then removes the
/// old generation: a crash anywhere leaves one whole layout.
fn reshard(
    store: &Store,
    old: Meta,
    engines: Vec<Engine>,
    shards: u32,
    settings: &Settings,
    route: &dyn Fn(&str, &str) -> usize,
) -> Result<Vec<Engine>, RecoveryError> {
    let merged = EngineSnapshot::merge(engines.iter().map(Engine::snapshot).collect());
    drop(engines);
    let parts = merged.split(shards as usize, route);
    let next = old.generation + 1;
    store.remove_generation(next)?;
    let mut engines = Vec::with_capacity(shards as usize);
    for (shard, snap) in parts.into_iter().enumerate() {
        let shard = shard as u32;
        let engine =
            Engine::restore(settings.clone(), snap).map_err(|reason| RecoveryError::Split {
                shards,
                shard,
                reason,
            })?;
        store.write_snapshot(next, shard, 0, &record::encode(&engine.compact()))?;
        engines.push(engine);
    }
    store.set_meta(Meta {
        generation: next,
        shards,
    })?;
    store.remove_generation(old.generation)?;
    Ok(engines)
}

/// Expires the holds whose deadline passed while stockd was down (their records join
/// `pending`), counts the state, and checks every engine's invariants.
fn expire_and_check(
    engines: &mut [Engine],
    now: Millis,
    pending: &mut [Vec<Vec<u8>>],
    report: &mut RecoveryReport,
) -> Result<(), RecoveryError> {
    for (shard, engine) in engines.iter_mut().enumerate() {
        let expired = engine.expire_due(now);
        if expired > 0 {
            report.holds_expired += expired;
            pending[shard].push(record::encode(&LogRecord {
                now,
                command: Command::Expire,
            }));
        }
        report.positions += engine.position_count();
        report.holds += engine.hold_count();
        engine
            .check_consistency()
            .map_err(|reason| RecoveryError::Inconsistent {
                shard: shard as u32,
                reason,
            })?;
    }
    Ok(())
}

/// Rebuilds one shard from its snapshot and log (also used after a failed write).
pub fn replay_shard(
    store: &Store,
    generation: u32,
    shard: u32,
    settings: &Settings,
    report: &mut RecoveryReport,
) -> Result<(Engine, u64), RecoveryError> {
    let (mut engine, covers) = load_snapshot(store, generation, shard, settings)?;
    let mut next = covers;
    let mut log = store.read_log(generation, shard).peekable();
    while let Some(item) = log.next() {
        let (seq, bytes) = item?;
        if seq < covers {
            continue;
        }
        let decoded: Result<LogRecord, _> = record::decode(&bytes);
        let rec = match decoded {
            Ok(rec) => rec,
            Err(e) if log.peek().is_none() => {
                let what = format!(
                    "{}: shard {shard} log record {seq}: {e}; it was never acknowledged and is dropped",
                    store.path.display()
                );
                store.remove_log_record(generation, shard, seq)?;
                report.dropped_tail_records.push(what);
                break;
            }
            Err(source) => {
                return Err(RecoveryError::DamagedRecord {
                    path: store.path.clone(),
                    shard,
                    record: seq,
                    source,
                });
            }
        };
        if seq != next {
            return Err(RecoveryError::Gap {
                path: store.path.clone(),
                shard,
                expected: next,
                found: seq,
            });
        }
        engine
            .apply(rec.now, &rec.command)
            .map_err(|source| RecoveryError::Replay {
                path: store.path.clone(),
                shard,
                record: seq,
                source,
            })?;
        engine.drain_events().for_each(drop);
        report.records_replayed += 1;
        next = seq + 1;
    }
    Ok((engine, next))
}

/// A shard's engine from its snapshot (empty without one), and the log sequence the
/// snapshot covers.
fn load_snapshot(
    store: &Store,
    generation: u32,
    shard: u32,
    settings: &Settings,
) -> Result<(Engine, u64), RecoveryError> {
    let snapshot_err = |reason: String| RecoveryError::Snapshot {
        path: store.path.clone(),
        shard,
        reason,
    };
    match store.read_snapshot(generation, shard)? {
        Some((header, bytes)) => {
            let snap: CompactSnapshot =
                record::decode(&bytes).map_err(|e| snapshot_err(e.to_string()))?;
            let engine = Engine::from_compact(settings.clone(), snap).map_err(snapshot_err)?;
            Ok((engine, header.covers_seq))
        }
        None => Ok((Engine::new(settings.clone()), 0)),
    }
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
