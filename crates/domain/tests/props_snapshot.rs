//! Property test of snapshots: the portable snapshot restores, the on-disk (compact)
//! snapshot reloads exactly, merge ∘ split (a restart with another number of shards) keeps
//! every answer, and an engine restored midway goes on answering every call exactly as
//! the original (the harness's shadow engine, `common::check`).
//!
//! A failing case is saved under `proptest-regressions/` (committed) and replayed first;
//! `props_snapshot.txt` holds the seed of issue #12 defect 8 (a released symbol resolved),
//! pinned down as a plain test in `engine_regressions.rs`.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use stockd_domain::{Engine, EngineSnapshot};

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(512),
        max_shrink_iters: 20_000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/props_snapshot.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// A snapshot restores to the same engine; merge ∘ split by a shard route keeps every
    /// answer; and an engine restored midway goes on answering exactly as the original.
    #[test]
    fn snapshots_restore_and_reshard(s in scenario(60), shards in 1usize..=4) {
        let h = run(&s, true)?;
        let snap = h.engine.snapshot();
        // The on-disk snapshot keeps symbols and structures: the state comes back exactly.
        let reloaded = through_disk(&h.engine)?;
        prop_assert!(reloaded.snapshot() == snap, "compact round trip changed the state");
        same_answers(&reloaded, &h.engine, h.n)?;
        let restored = Engine::restore(settings(), snap.clone())
            .map_err(|e| TestCaseError::fail(format!("restore failed: {e}")))?;
        prop_assert!(
            canonical(restored.snapshot()) == canonical(snap.clone()),
            "restore ∘ snapshot changed the state"
        );
        same_answers(&restored, &h.engine, h.n)?;

        let parts = snap.clone().split(shards, route(shards));
        prop_assert_eq!(parts.len(), shards);
        // Each shard alone answers for the positions routed to it.
        let r = route(shards);
        for (i, part) in parts.iter().enumerate() {
            let shard = Engine::restore(settings(), part.clone())
                .map_err(|e| TestCaseError::fail(format!("restore of shard {i} failed: {e}")))?;
            for ch in CHANNELS.iter().take(h.n) {
                for pos in 0..NPOS {
                    let (p, l) = (product_of(pos), location_of(pos));
                    if r(p, l) == i {
                        prop_assert_eq!(
                            shard.availability(ch, p, l).expect("channel"),
                            h.engine.availability(ch, p, l).expect("channel"),
                            "shard {} of {}: ATS of {} at {}:{}", i, shards, ch, p, l
                        );
                    }
                }
            }
        }
        let merged = EngineSnapshot::merge(parts);
        let remerged = Engine::restore(settings(), merged)
            .map_err(|e| TestCaseError::fail(format!("restore of merge failed: {e}")))?;
        same_answers(&remerged, &h.engine, h.n)?;
        prop_assert_eq!(canonical(remerged.snapshot()), canonical(snap));
    }
}
