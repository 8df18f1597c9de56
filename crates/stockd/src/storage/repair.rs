//! Repairs after a crash: what a crash between the shards of one hold or order cut in two.
//!
//! Each shard logs its own records, so a crash can leave an operation that spans shards
//! logged on some and not on others. Recovery sees every shard, and here it decides:
//! - a cart version (a reserve tagged with its shards, `UpdateTag`) is kept if every shard
//!   it went to logged it, and otherwise every shard that logged it puts back the part it
//!   replaced (`resolve_updates`): the hold comes back as its last acknowledged version or
//!   the whole new one, never released, never mixed;
//! - a confirm logged on some shards is finished on the others (`repair_split_holds`);
//!   a hold half-written by an untagged reserve is released there;
//! - a fulfilment or cancellation logged on some shards is finished on the others
//!   (`repair_split_orders`).
//!
//! Each repair is a command, applied here and returned to be logged before serving.

use std::collections::BTreeMap;

use super::error::RecoveryError;
use super::record::{self, LogRecord};
use super::recovery::RecoveryReport;
use stockd_domain::{Command, Engine, HoldState, HoldView, LineView, Millis, OrderLine, Outcome};

/// Whether the shard `engine` logged the cart version `version` of a hold, or needed not:
/// its record is that version or a later one; or it had no line in that version and
/// keeps no part before or after it (no record, or a tombstone), so that version changed
/// nothing there. A shard with no engine (a damaged tag) counts as not logged.
fn logged(engine: Option<&&mut Engine>, hold_ref: &str, version: u64, lines: bool) -> bool {
    let Some(engine) = engine else {
        return false;
    };
    match engine.hold_record(hold_ref) {
        Some((v, _)) if v >= version => true,
        Some((_, tombstone)) => tombstone && !lines,
        None => !lines,
    }
}

/// Settles every cross-shard cart version a crash may have cut: kept where every shard
/// it went to logged it, otherwise put back to the previous version on every shard that
/// did. The verdicts are taken from the state as loaded, then applied; their commands
/// join `pending`.
pub(super) fn resolve_updates(
    engines: &mut [&mut Engine],
    now: Millis,
    pending: &mut [Vec<Vec<u8>>],
    report: &mut RecoveryReport,
) {
    let mut versions: BTreeMap<(String, u64), Vec<(u32, bool)>> = BTreeMap::new();
    for engine in engines.iter() {
        for p in engine.pending_updates() {
            versions
                .entry((p.hold_ref, p.version))
                .or_insert(p.participants);
        }
    }
    let verdicts: Vec<(String, u64, bool)> = versions
        .into_iter()
        .map(|((hold_ref, version), participants)| {
            let complete = participants.iter().all(|&(shard, lines)| {
                logged(engines.get(shard as usize), &hold_ref, version, lines)
            });
            (hold_ref, version, complete)
        })
        .collect();
    for (hold_ref, version, complete) in verdicts {
        if !complete {
            report.holds_repaired += 1;
        }
        for (engine, pending) in engines.iter_mut().zip(pending.iter_mut()) {
            let command = Command::ResolveUpdate {
                hold_ref: hold_ref.clone(),
                version,
                complete,
            };
            if let Ok(Outcome::Done) = engine.apply(now, &command) {
                pending.push(record::encode(&LogRecord { now, command }));
            }
        }
    }
}

/// Makes every hold whole again after a crash between its shards: cart versions first,
/// then confirms, then orders.
pub(super) fn repair_split_holds(
    engines: &mut [Engine],
    now: Millis,
    pending: &mut [Vec<Vec<u8>>],
    report: &mut RecoveryReport,
) -> Result<(), RecoveryError> {
    resolve_updates(
        &mut engines.iter_mut().collect::<Vec<_>>(),
        now,
        pending,
        report,
    );
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
