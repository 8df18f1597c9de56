//! Property test of the engine against a plain reference model of `shared/domain.md`.
//!
//! A random scenario (2–3 channels with ring-fenced allocations, buffers, overrides, four
//! positions, six hold refs) drives the engine and a model that keeps every ledger record
//! in a `Vec` and recomputes on_hand, physical, held and ATS by summing, exactly as the
//! contract writes them (`common::model`). After every step the engine's answers, the
//! operation's outcome, the hold records and the invariants of domain.md are checked
//! against the model (`common::harness`, `common::check`).
//!
//! Checked after every step: every channel × position ATS; on_hand, physical, allocation
//! base, used and entitlement; each operation's outcome (reserve kind and per-line
//! results, count applied/stale, adjustment applied/duplicate, confirm/release/fulfil/
//! cancel answers and errors, how many holds expired); each hold's state, lines, expiry,
//! order and open quantity; invariants 1–4 (a reserve gets at most the ATS of that
//! moment, with on_hand ≥ 0 and used ≤ entitlement after it; confirm and fulfil move no
//! ATS; every hold is let go exactly once, by one HOLD_RELEASED or HOLD_EXPIRED event);
//! OUT_OF_STOCK / BACK_IN_STOCK alternate and the last one matches the ATS; event
//! sequence numbers increase; `check_consistency()`.
//!
//! A failing case is saved under `proptest-regressions/` (committed) and replayed first.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(2048),
        max_shrink_iters: 20_000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/props_model.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// The engine agrees with the reference model after every step of a random history.
    #[test]
    fn engine_matches_reference_model(s in scenario(60)) {
        run(&s, false)?;
    }
}
