//! Incremental checkpoints: the deltas an engine hands out, folded in order into a store
//! of entries and rebuilt with `EngineSnapshot::from_entries`, give back the engine's state;
//! a delta holds only what changed.
//!
//! A failing case of the property is saved under `proptest-regressions/` and replayed first.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use stockd_domain::{
    CheckpointDelta, ConfigSnap, Counters, Engine, EngineSnapshot, HoldSnap, Millis, PositionSnap,
    ReserveLine, ReserveRequest, Settings, StockCount,
};

const T0: Millis = 1_700_000_000_000;

/// A checkpoint store: one entry per position, hold and adjustment, as the service's
/// store keeps them, with the deltas applied in order.
#[derive(Default)]
struct Store {
    config: ConfigSnap,
    positions: BTreeMap<(String, String), PositionSnap>,
    holds: BTreeMap<String, HoldSnap>,
    adjustments: BTreeSet<String>,
    counters: Counters,
}

impl Store {
    fn apply(&mut self, delta: CheckpointDelta) -> Result<(), TestCaseError> {
        for p in delta.positions {
            self.positions
                .insert((p.product_ref.clone(), p.location_ref.clone()), p);
        }
        for r in &delta.holds_removed {
            prop_assert!(
                !delta.holds.iter().any(|h| &h.hold_ref == r),
                "hold {} both changed and removed in one delta",
                r
            );
            self.holds.remove(r);
        }
        for h in delta.holds {
            self.holds.insert(h.hold_ref.clone(), h);
        }
        self.adjustments.extend(delta.adjustments);
        if let Some(config) = delta.config {
            self.config = config;
        }
        self.counters = delta.counters;
        Ok(())
    }

    fn snapshot(&self) -> EngineSnapshot {
        // Any order: `from_entries` sorts.
        EngineSnapshot::from_entries(
            self.config.clone(),
            self.positions.values().rev().cloned().collect(),
            self.holds.values().rev().cloned().collect(),
            self.adjustments.iter().rev().cloned().collect(),
            self.counters,
        )
    }

    fn restore(&self) -> Result<Engine, TestCaseError> {
        Engine::restore(settings(), self.snapshot())
            .map_err(|e| TestCaseError::fail(format!("restore from entries failed: {e}")))
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(256),
        max_shrink_iters: 20_000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/checkpoint_delta.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// Deltas taken at random points, folded in order, rebuild the engine's state: also
    /// when some writes "fail" and their delta is merged into the next, and when the
    /// engine is swapped midway for one restored from the store (a recovery), whose own
    /// deltas then carry on.
    #[test]
    fn folded_deltas_rebuild_the_state(
        s in scenario(60),
        takes in prop::collection::vec(0u8..10, 60),
        recover in any::<bool>(),
    ) {
        let mut h = Harness::new(&s)?;
        let mut store = Store::default();
        store.apply(h.engine.take_checkpoint_delta())?;
        // A delta whose write "failed": kept and merged with the next one.
        let mut failed: Option<CheckpointDelta> = None;
        for (i, op) in s.ops.iter().enumerate() {
            h.step(op)?;
            match takes[i] {
                0..=1 => {
                    let delta = h.engine.take_checkpoint_delta();
                    let delta = match failed.take() {
                        Some(earlier) => earlier.merge(delta),
                        None => delta,
                    };
                    store.apply(delta)?;
                }
                2 => {
                    let delta = h.engine.take_checkpoint_delta();
                    failed = Some(match failed.take() {
                        Some(earlier) => earlier.merge(delta),
                        None => delta,
                    });
                }
                _ => {}
            }
            if recover && i == s.fork {
                if let Some(delta) = failed.take() {
                    store.apply(delta)?;
                }
                store.apply(h.engine.take_checkpoint_delta())?;
                let restored = store.restore()?;
                prop_assert!(restored.snapshot() == h.engine.snapshot(), "recovery at step {}", i);
                h.engine = restored;
                prop_assert_eq!(h.engine.checkpoint_pending(), 0, "a restored engine starts clean");
            }
        }
        if let Some(delta) = failed.take() {
            store.apply(delta)?;
        }
        store.apply(h.engine.take_checkpoint_delta())?;
        let rebuilt = store.restore()?;
        prop_assert!(rebuilt.snapshot() == h.engine.snapshot(), "folded deltas differ from the state");
        prop_assert!(h.engine.take_checkpoint_delta().is_empty());
    }

    /// Deltas taken in steps of a few entries, gathered in parts of a few entries, with
    /// operations between the steps, folded in order, rebuild the engine's state: an
    /// entry changed after its copy is copied again, a hold forgotten (and its symbol
    /// released or reused) while set aside is removed by its ref, whatever part its copy
    /// and its removal fall in.
    #[test]
    fn deltas_taken_in_steps_rebuild_the_state(
        s in scenario(60),
        plan in prop::collection::vec((0u8..6, 1usize..4, 1usize..6), 60),
    ) {
        let mut h = Harness::new(&s)?;
        let mut store = Store::default();
        store.apply(h.engine.take_checkpoint_delta())?;
        for (i, op) in s.ops.iter().enumerate() {
            h.step(op)?;
            let (action, budget, part) = plan[i];
            if action == 0 {
                h.engine.begin_checkpoint_delta();
            }
            let done = match action {
                0..=3 => h.engine.step_checkpoint_delta_in_parts(budget, part),
                _ => None,
            };
            if let Some(done) = done {
                prop_assert!(!h.engine.checkpoint_delta_in_progress());
                store.apply(done.into_delta())?;
            }
        }
        while h.engine.checkpoint_delta_in_progress() {
            if let Some(done) = h.engine.step_checkpoint_delta(2) {
                store.apply(done.into_delta())?;
            }
        }
        store.apply(h.engine.take_checkpoint_delta())?;
        let rebuilt = store.restore()?;
        prop_assert!(rebuilt.snapshot() == h.engine.snapshot(), "folded deltas differ from the state");
    }
}

/// A delta taken in steps is the state as of its last step: an entry changed after it was
/// copied is copied again, and nothing is left pending.
#[test]
fn a_delta_taken_in_steps_is_the_state_at_its_last_step() {
    let mut e = engine();
    for i in 0..100 {
        count(&mut e, T0, &format!("P{i}"), 10);
    }
    reserve(&mut e, T0, "cart-1", "P1", 2);
    e.begin_checkpoint_delta();
    let mut steps = 0;
    let done = loop {
        steps += 1;
        // Changes between the steps, to entries copied already and to new ones.
        count(&mut e, T0 + steps, "P0", 10 + steps);
        if steps == 3 {
            reserve(&mut e, T0, "cart-2", "P2", 1);
            e.release(T0, "cart-1").unwrap();
        }
        if let Some(done) = e.step_checkpoint_delta(10) {
            break done;
        }
        assert!(steps < 100, "a stepped delta never finished");
    };
    assert!(steps >= 5, "taken in steps of about 10 entries: {steps}");
    assert_eq!(e.checkpoint_pending(), 0);
    let delta = done.into_delta();
    let whole = e.snapshot().into_delta();
    assert_eq!(delta.positions, whole.positions);
    assert_eq!(delta.holds, whole.holds);
    assert_eq!(delta.counters, whole.counters);
}

fn engine() -> Engine {
    common::examples::web_engine()
}

fn count(e: &mut Engine, now: Millis, product: &str, quantity: i64) {
    e.set_stock(
        now,
        &StockCount {
            product_ref: product.into(),
            location_ref: "DC1".into(),
            quantity,
            as_of: now,
        },
    )
    .unwrap();
}

fn reserve(e: &mut Engine, now: Millis, hold: &str, product: &str, quantity: i64) {
    let request = ReserveRequest {
        hold_ref: hold.into(),
        channel_ref: "WEB".into(),
        lines: vec![ReserveLine {
            product_ref: product.into(),
            location_ref: "DC1".into(),
            quantity,
            category: None,
        }],
        ttl_seconds: None,
        allow_partial: false,
    };
    e.reserve(now, &request, &[0]).unwrap();
}

#[test]
fn a_delta_after_a_delta_holds_only_the_counters() {
    let mut e = engine();
    count(&mut e, T0, "P1", 10);
    reserve(&mut e, T0, "cart-1", "P1", 2);
    let first = e.take_checkpoint_delta();
    assert_eq!(first.positions.len(), 1);
    assert_eq!(first.holds.len(), 1);
    assert!(first.config.is_some());
    assert_eq!(e.checkpoint_pending(), 0);
    let second = e.take_checkpoint_delta();
    assert!(second.is_empty(), "{second:?}");
    assert_eq!(second.entries(), 0);
    assert_eq!(second.counters, first.counters);
    let snap = e.snapshot();
    assert_eq!(second.counters.next_iq_id, snap.next_iq_id);
    assert_eq!(second.counters.next_event_seq, snap.next_event_seq);
}

#[test]
fn marking_all_makes_the_next_delta_the_whole_state() {
    let mut e = engine();
    for i in 0..5 {
        count(&mut e, T0, &format!("P{i}"), 10);
    }
    reserve(&mut e, T0, "cart-1", "P1", 2);
    reserve(&mut e, T0, "cart-2", "P2", 3);
    e.take_checkpoint_delta();
    e.mark_all_for_checkpoint();
    assert_eq!(e.checkpoint_pending(), 5 + 2 + 1);
    let whole = e.take_checkpoint_delta();
    assert_eq!(whole, e.snapshot().into_delta());
    assert!(e.take_checkpoint_delta().is_empty());
}

#[test]
fn a_delta_is_as_big_as_the_change() {
    let mut e = engine();
    for i in 0..10_000 {
        count(&mut e, T0, &format!("P{i}"), 10);
    }
    assert_eq!(e.take_checkpoint_delta().positions.len(), 10_000);
    count(&mut e, T0 + 1, "P4242", 7);
    let delta = e.take_checkpoint_delta();
    assert_eq!(delta.entries(), 1, "{delta:?}");
    assert_eq!(delta.positions[0].product_ref, "P4242");
    reserve(&mut e, T0 + 2, "cart-1", "P17", 1);
    let delta = e.take_checkpoint_delta();
    assert_eq!((delta.positions.len(), delta.holds.len()), (1, 1));
    assert_eq!(delta.entries(), 2);
}

#[test]
fn a_forgotten_hold_is_removed_by_ref_even_after_its_symbol_is_reused() {
    let mut e = engine();
    count(&mut e, T0, "P1", 10);
    reserve(&mut e, T0, "cart-old", "P1", 1);
    e.take_checkpoint_delta();
    e.release(T0, "cart-old").unwrap();
    let retention = e.settings().hold_retention_ms;
    e.expire_due(T0 + retention);
    // Two drains release the forgotten hold's symbol; a new hold may take its slot.
    e.drain_events().for_each(drop);
    e.drain_events().for_each(drop);
    reserve(&mut e, T0 + retention, "cart-new", "P1", 1);
    let delta = e.take_checkpoint_delta();
    assert_eq!(delta.holds_removed, vec!["cart-old".to_string()]);
    let holds: Vec<&str> = delta.holds.iter().map(|h| h.hold_ref.as_str()).collect();
    assert_eq!(holds, vec!["cart-new"]);
}

#[test]
fn a_restored_engine_starts_clean_and_tracks_what_follows() {
    let mut e = engine();
    count(&mut e, T0, "P1", 10);
    count(&mut e, T0, "P2", 10);
    let mut restored = Engine::restore(Settings::default(), e.snapshot()).unwrap();
    assert_eq!(restored.checkpoint_pending(), 0);
    assert!(restored.take_checkpoint_delta().is_empty());
    reserve(&mut restored, T0, "cart-1", "P2", 4);
    let delta = restored.take_checkpoint_delta();
    assert_eq!((delta.positions.len(), delta.holds.len()), (1, 1));
}
