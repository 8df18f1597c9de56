//! Tests of the checkpoint stores through the `CheckpointStore` boundary, each damage test
//! run against both the simulated and the sled store.

use std::collections::BTreeMap;
use std::time::Instant;

use super::layout::{page_key, page_key_in, scope_key};
use super::sled_store::expected_conf_for_tests;
use super::*;

const A: Scope = Scope {
    generation: 1,
    shard: 0,
};
const B: Scope = Scope {
    generation: 1,
    shard: 1,
};

/// The state a scope should load as.
type Model = BTreeMap<(Namespace, Vec<u8>), Vec<u8>>;

/// Direct access to the stored bytes, bypassing the framing, to damage them.
trait Raw {
    fn raw_get(&self, key: &[u8]) -> Option<Vec<u8>>;
    fn raw_put(&self, key: &[u8], bytes: &[u8]);
    fn raw_remove(&self, key: &[u8]);

    /// The key of the page that holds `key`, as the scope record pages its namespace.
    fn page_of(&self, scope: Scope, namespace: Namespace, key: &[u8]) -> Vec<u8> {
        let (bits, set) = self.raw_get(&scope_key(scope)).map_or((0, 0), |bytes| {
            let record = entry::decode_scope_record(scope, &bytes).unwrap();
            let bits = record
                .namespaces
                .get(&namespace)
                .map_or(0, |d| d.bucket_bits);
            (bits, record.set_of(namespace))
        });
        page_key_in(scope, namespace, set, entry::bucket_of(key, bits)).to_vec()
    }
}

impl Raw for SimStore {
    fn raw_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.durable_bytes().get(key).cloned()
    }
    fn raw_put(&self, key: &[u8], bytes: &[u8]) {
        self.damage_put(key, bytes);
    }
    fn raw_remove(&self, key: &[u8]) {
        self.damage_remove(key);
    }
}

impl Raw for SledCheckpointStore {
    fn raw_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.raw_tree().get(key).unwrap().map(|v| v.to_vec())
    }
    fn raw_put(&self, key: &[u8], bytes: &[u8]) {
        self.raw_tree().insert(key, bytes).unwrap();
    }
    fn raw_remove(&self, key: &[u8]) {
        self.raw_tree().remove(key).unwrap();
    }
}

fn put(namespace: Namespace, key: &str, value: &str) -> Entry {
    Entry {
        namespace,
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
}

fn batch(scope: Scope, lsn_covered: u64, puts: Vec<Entry>) -> CheckpointBatch {
    CheckpointBatch {
        scope,
        lsn_covered,
        puts,
        deletes: Vec::new(),
        meta: Vec::new(),
    }
}

fn model_of(loaded: &Loaded) -> Model {
    loaded
        .entries()
        .map(|e| ((e.namespace, e.key.to_vec()), e.value.to_vec()))
        .collect()
}

fn apply_to_model(model: &mut Model, batch: &CheckpointBatch) {
    for e in &batch.puts {
        model.insert((e.namespace, e.key.clone()), e.value.clone());
    }
    for (namespace, key) in &batch.deletes {
        model.remove(&(*namespace, key.clone()));
    }
}

fn sled_store() -> (tempfile::TempDir, SledCheckpointStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledCheckpointStore::open(&dir.path().join("checkpoints")).unwrap();
    (dir, store)
}

/// Three checkpoints of two scopes: new keys, overwrites, deletes, a layout record.
fn write_three_checkpoints(store: &dyn CheckpointStore) -> (Model, Model) {
    let (mut a, mut b) = (Model::new(), Model::new());
    let first = CheckpointBatch {
        meta: vec![MetaRecord {
            name: "layout".into(),
            value: b"g1 s2".to_vec(),
        }],
        ..batch(
            A,
            10,
            vec![
                put(Namespace::POSITIONS, "sku-1@dc", "7"),
                put(Namespace::POSITIONS, "sku-2@dc", "3"),
                put(Namespace::HOLDS, "cart-1", "sku-1 x2"),
            ],
        )
    };
    let second = CheckpointBatch {
        deletes: vec![(Namespace::HOLDS, b"cart-1".to_vec())],
        ..batch(
            A,
            25,
            vec![
                put(Namespace::POSITIONS, "sku-1@dc", "5"),
                put(Namespace::ORDERS, "order-9", "sku-1 x2"),
            ],
        )
    };
    let other = batch(B, 4, vec![put(Namespace::POSITIONS, "sku-3@dc", "1")]);
    let third = CheckpointBatch {
        deletes: vec![
            (Namespace::POSITIONS, b"sku-2@dc".to_vec()),
            (Namespace::HOLDS, b"never-stored".to_vec()),
        ],
        ..batch(A, 31, vec![put(Namespace::IDEMPOTENCY, "req-1", "ok")])
    };
    for checkpoint in [&first, &second, &other, &third] {
        store.apply(checkpoint).unwrap();
        let model = if checkpoint.scope == A {
            &mut a
        } else {
            &mut b
        };
        apply_to_model(model, checkpoint);
    }
    (a, b)
}

fn check_round_trip(store: &dyn CheckpointStore) {
    assert_eq!(store.load(A).unwrap(), None);
    let (a, b) = write_three_checkpoints(store);
    let loaded = store.load(A).unwrap().unwrap();
    assert_eq!(loaded.lsn_covered, 31);
    assert_eq!(model_of(&loaded), a);
    let loaded_b = store.load(B).unwrap().unwrap();
    assert_eq!((loaded_b.lsn_covered, model_of(&loaded_b)), (4, b));
    assert_eq!(store.scopes().unwrap(), vec![A, B]);
    assert_eq!(store.get_meta("layout").unwrap(), Some(b"g1 s2".to_vec()));
    store.put_meta("layout", b"g2 s4").unwrap();
    assert_eq!(store.get_meta("layout").unwrap(), Some(b"g2 s4".to_vec()));
    assert_eq!(store.get_meta("absent").unwrap(), None);
    // The same checkpoint applied again (a retry) changes nothing.
    let again = batch(A, 31, vec![put(Namespace::IDEMPOTENCY, "req-1", "ok")]);
    store.apply(&again).unwrap();
    assert_eq!(model_of(&store.load(A).unwrap().unwrap()), a);
}

#[test]
fn sim_round_trip_over_several_checkpoints() {
    check_round_trip(&SimStore::new(1));
}

#[test]
fn sled_round_trip_over_several_checkpoints() {
    let (_dir, store) = sled_store();
    check_round_trip(&store);
}

/// Writes one checkpoint and returns the key of the page that holds `sku-1@dc` (and
/// `sku-2@dc`: a namespace this small has one page).
fn one_checkpoint(store: &(impl CheckpointStore + Raw)) -> Vec<u8> {
    store
        .apply(&batch(
            A,
            10,
            vec![
                put(Namespace::POSITIONS, "sku-1@dc", "7"),
                put(Namespace::POSITIONS, "sku-2@dc", "3"),
                put(Namespace::HOLDS, "cart-1", "sku-1 x2"),
            ],
        ))
        .unwrap();
    store.page_of(A, Namespace::POSITIONS, b"sku-1@dc")
}

fn check_flipped_value(store: &(impl CheckpointStore + Raw)) {
    let key = one_checkpoint(store);
    let good = store.raw_get(&key).unwrap();
    let mut named = 0;
    for index in 0..good.len() {
        let mut bad = good.clone();
        bad[index] ^= 0x04;
        store.raw_put(&key, &bad);
        let error = store.load(A).unwrap_err();
        match &error {
            CheckpointError::EntryDamaged {
                scope: A,
                namespace: Namespace::POSITIONS,
                key,
                ..
            } => named += usize::from(key == "\"sku-1@dc\""),
            CheckpointError::PageDamaged {
                scope: A,
                namespace: Namespace::POSITIONS,
                bucket: 0,
                ..
            } => {}
            other => panic!("byte {index}: {other:?}"),
        }
        let text = error.to_string();
        assert!(text.contains("generation 1 shard 0"), "{text}");
        assert!(text.contains("namespace positions"), "{text}");
        // A checkpoint that would rewrite the damaged page refuses too.
        let over = batch(A, 11, vec![put(Namespace::POSITIONS, "sku-1@dc", "6")]);
        assert!(matches!(
            store.apply(&over),
            Err(CheckpointError::EntryDamaged { .. } | CheckpointError::PageDamaged { .. })
        ));
    }
    // Every byte of its value and of its checksum names the entry (a flipped key byte
    // names the key as found).
    assert!(named >= 5, "{named}");
    store.raw_put(&key, &good);
    assert!(store.load(A).unwrap().is_some());
}

#[test]
fn sim_finds_a_flipped_byte_in_a_value() {
    check_flipped_value(&SimStore::new(2));
}

#[test]
fn sled_finds_a_flipped_byte_in_a_value() {
    let (_dir, store) = sled_store();
    check_flipped_value(&store);
    assert!(store.folder().ends_with("checkpoints"));
}

fn check_missing_entry(store: &(impl CheckpointStore + Raw)) {
    let key = one_checkpoint(store);
    store.raw_remove(&key);
    let error = store.load(A).unwrap_err();
    match &error {
        CheckpointError::DigestMismatch {
            scope,
            namespace,
            found_entries,
            expected_entries,
            ..
        } => {
            assert_eq!((*scope, *namespace), (A, Namespace::POSITIONS));
            // The page held both positions.
            assert_eq!((*found_entries, *expected_entries), (0, 2));
        }
        other => panic!("{other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains("generation 1 shard 0: namespace positions"),
        "{text}"
    );
}

#[test]
fn sim_finds_a_missing_entry() {
    check_missing_entry(&SimStore::new(3));
}

#[test]
fn sled_finds_a_missing_entry() {
    let (_dir, store) = sled_store();
    check_missing_entry(&store);
}

fn check_stale_entry(store: &(impl CheckpointStore + Raw)) {
    let key = one_checkpoint(store);
    let old = store.raw_get(&key).unwrap();
    let hold = store.page_of(A, Namespace::HOLDS, b"cart-1");
    let old_hold = store.raw_get(&hold).unwrap();
    let next = CheckpointBatch {
        deletes: vec![(Namespace::HOLDS, b"cart-1".to_vec())],
        ..batch(A, 20, vec![put(Namespace::POSITIONS, "sku-1@dc", "5")])
    };
    store.apply(&next).unwrap();
    let current = store.raw_get(&key).unwrap();
    // A valid frame of the older value, as a lost write would leave it.
    store.raw_put(&key, &old);
    assert!(matches!(
        store.load(A),
        Err(CheckpointError::DigestMismatch {
            namespace: Namespace::POSITIONS,
            found_entries: 2,
            expected_entries: 2,
            ..
        })
    ));
    store.raw_put(&key, &current);
    assert!(store.load(A).unwrap().is_some());
    // A deleted entry come back.
    store.raw_put(&hold, &old_hold);
    assert!(matches!(
        store.load(A),
        Err(CheckpointError::DigestMismatch {
            namespace: Namespace::HOLDS,
            found_entries: 1,
            expected_entries: 0,
            ..
        })
    ));
}

#[test]
fn sim_finds_a_stale_entry() {
    check_stale_entry(&SimStore::new(4));
}

#[test]
fn sled_finds_a_stale_entry() {
    let (_dir, store) = sled_store();
    check_stale_entry(&store);
}

fn check_record_damage(store: &(impl CheckpointStore + Raw)) {
    one_checkpoint(store);
    let record = scope_key(A);
    let good = store.raw_get(&record).unwrap();
    for index in 0..good.len() {
        let mut bad = good.clone();
        bad[index] ^= 0x20;
        store.raw_put(&record, &bad);
        let error = store.load(A).unwrap_err();
        assert!(
            matches!(error, CheckpointError::ScopeRecordDamaged { scope: A, .. }),
            "{error:?}"
        );
    }
    store.raw_remove(&record);
    assert!(matches!(
        store.load(A),
        Err(CheckpointError::RecordMissing {
            scope: A,
            entries: 3,
            ..
        })
    ));
    // A checkpoint does not start a new digest over entries it cannot account for.
    assert!(matches!(
        store.apply(&batch(A, 11, Vec::new())),
        Err(CheckpointError::RecordMissing { scope: A, .. })
    ));
    // Another scope's record copied over this one is not accepted either.
    store.raw_put(&scope_key(B), &good);
    assert!(matches!(
        store.load(B),
        Err(CheckpointError::ScopeRecordDamaged { scope: B, .. })
    ));
}

#[test]
fn sim_finds_a_damaged_or_missing_scope_record() {
    check_record_damage(&SimStore::new(5));
}

#[test]
fn sled_finds_a_damaged_or_missing_scope_record() {
    let (_dir, store) = sled_store();
    check_record_damage(&store);
}

#[test]
fn an_entry_copied_into_another_scope_is_damage() {
    let store = SimStore::new(6);
    let key = one_checkpoint(&store);
    store.apply(&batch(B, 3, Vec::new())).unwrap();
    let frame = store.raw_get(&key).unwrap();
    store.raw_put(&page_key(B, Namespace::POSITIONS, 0), &frame);
    assert!(matches!(
        store.load(B),
        Err(CheckpointError::EntryDamaged { scope: B, .. })
    ));
}

#[test]
fn damaged_layout_record_is_reported_by_name() {
    let store = SimStore::new(7);
    store.put_meta("layout", b"g1 s2").unwrap();
    store.damage_flip(&layout::meta_key("layout"), 6, 0x01);
    let error = store.get_meta("layout").unwrap_err();
    assert!(
        error.to_string().contains("layout record \"layout\""),
        "{error}"
    );
}

#[test]
#[should_panic(expected = "checkpoint LSN went backwards")]
fn a_checkpoint_lsn_going_backwards_is_a_bug() {
    let store = SimStore::new(8);
    store.apply(&batch(A, 10, Vec::new())).unwrap();
    let _ = store.apply(&batch(A, 9, Vec::new()));
}

/// A reproducible stream of numbers for the crash tests.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// A random change of a scope: puts and deletes over a small key space.
fn random_batch(rng: &mut Rng, scope: Scope, lsn_covered: u64, model: &Model) -> CheckpointBatch {
    let namespaces = [Namespace::POSITIONS, Namespace::HOLDS, Namespace::ORDERS];
    let mut changed = BTreeMap::new();
    for _ in 0..rng.below(12) {
        let namespace = namespaces[rng.below(3) as usize];
        let key = format!("key-{}", rng.below(16)).into_bytes();
        let delete = rng.below(3) == 0 && model.contains_key(&(namespace, key.clone()));
        let value = (!delete).then(|| format!("v{}", rng.below(1000)).into_bytes());
        changed.insert((namespace, key), value);
    }
    let mut b = batch(scope, lsn_covered, Vec::new());
    for ((namespace, key), value) in changed {
        match value {
            Some(value) => b.puts.push(Entry {
                namespace,
                key,
                value,
            }),
            None => b.deletes.push((namespace, key)),
        }
    }
    b.meta.push(MetaRecord {
        name: format!("lsn-{}", scope.shard),
        value: lsn_covered.to_le_bytes().to_vec(),
    });
    b
}

/// What a scope loads as, with its layout record (written in the same batches).
fn loaded_state(store: &SimStore, scope: Scope) -> (u64, Model) {
    let meta = store.get_meta(&format!("lsn-{}", scope.shard)).unwrap();
    match store.load(scope).unwrap() {
        None => {
            assert_eq!(meta, None);
            (0, Model::new())
        }
        Some(loaded) => {
            let meta_lsn = u64::from_le_bytes(meta.unwrap().try_into().unwrap());
            assert_eq!(
                meta_lsn, loaded.lsn_covered,
                "layout record and entries in one batch"
            );
            (loaded.lsn_covered, model_of(&loaded))
        }
    }
}

fn run_crash_seed(seed: u64) -> [u64; 2] {
    let mut rng = Rng(seed);
    let mut store = SimStore::new(seed);
    let mut states = [(0u64, Model::new()), (0u64, Model::new())];
    let mut outcomes = [0u64; 2];
    for _ in 0..24 {
        let which = rng.below(2) as usize;
        let scope = [A, B][which];
        let (lsn, model) = &states[which];
        let next_lsn = lsn + 1 + rng.below(5);
        let b = random_batch(&mut rng, scope, next_lsn, model);
        let mut after = model.clone();
        apply_to_model(&mut after, &b);
        let fault = [
            None,
            Some(Fault::CrashDuringApply),
            Some(Fault::SyncFails),
            Some(Fault::DiskFull),
        ][rng.below(4) as usize];
        if let Some(fault) = fault {
            store.inject(fault);
        }
        match store.apply(&b) {
            Ok(_) => states[which] = (next_lsn, after),
            Err(error) => {
                if fault == Some(Fault::DiskFull) {
                    assert!(matches!(error, CheckpointError::Io { .. }));
                    assert_eq!(loaded_state(&store, scope), states[which]);
                    continue;
                }
                store = store.crash();
                let found = loaded_state(&store, scope);
                let landed = found == (next_lsn, after.clone());
                assert!(
                    landed || found == states[which],
                    "seed {seed}: a mix: {found:?}"
                );
                outcomes[usize::from(landed)] += 1;
                states[which] = found;
                let other = 1 - which;
                assert_eq!(loaded_state(&store, [A, B][other]), states[other]);
            }
        }
    }
    for (which, scope) in [A, B].into_iter().enumerate() {
        assert_eq!(loaded_state(&store.crash(), scope), states[which]);
    }
    outcomes
}

/// Seeds of the crash test: each is 24 checkpoints of two scopes, half of them faulted.
const CRASH_SEEDS: u64 = 200;

#[test]
fn a_crash_during_apply_leaves_the_old_or_the_new_checkpoint_never_a_mix() {
    let mut outcomes = [0u64; 2];
    for seed in 0..CRASH_SEEDS {
        let [lost, landed] = run_crash_seed(seed);
        outcomes[0] += lost;
        outcomes[1] += landed;
    }
    // Both outcomes of a crash were exercised.
    assert!(outcomes[0] > 100 && outcomes[1] > 100, "{outcomes:?}");
}

#[test]
fn a_failed_fsync_refuses_further_writes_until_reopened() {
    let store = SimStore::new(9);
    store.inject(Fault::SyncFails);
    assert!(matches!(
        store.apply(&batch(A, 1, vec![put(Namespace::HOLDS, "h", "1")])),
        Err(CheckpointError::Io { .. })
    ));
    let error = store.apply(&batch(A, 2, Vec::new())).unwrap_err();
    assert!(
        matches!(error, CheckpointError::Poisoned { .. }),
        "{error:?}"
    );
    let reopened = store.crash();
    assert!(matches!(
        store.load(A),
        Err(CheckpointError::Crashed { .. })
    ));
    reopened.apply(&batch(A, 2, Vec::new())).unwrap();
}

#[test]
fn only_successful_applies_are_sync_points() {
    let store = SimStore::new(10);
    store.apply(&batch(A, 1, Vec::new())).unwrap();
    store.inject(Fault::DiskFull);
    store.apply(&batch(A, 2, Vec::new())).unwrap_err();
    store.apply(&batch(A, 2, Vec::new())).unwrap();
    assert_eq!(store.syncs(), 2);
}

fn check_remove_generation(store: &dyn CheckpointStore) {
    write_three_checkpoints(store);
    let next = Scope {
        generation: 2,
        shard: 0,
    };
    store
        .apply(&batch(
            next,
            31,
            vec![put(Namespace::POSITIONS, "sku-1@dc", "5")],
        ))
        .unwrap();
    let stats = store.remove_generation(1).unwrap();
    assert_eq!(stats.entries_deleted, 4);
    assert_eq!(store.scopes().unwrap(), vec![next]);
    assert_eq!(store.load(A).unwrap(), None);
    assert_eq!(store.load(next).unwrap().unwrap().entry_count(), 1);
}

#[test]
fn sim_removes_a_generation() {
    check_remove_generation(&SimStore::new(11));
}

#[test]
fn sled_removes_a_generation() {
    let (_dir, store) = sled_store();
    check_remove_generation(&store);
}

#[test]
fn sled_survives_reopen_with_identical_state_and_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("checkpoints");
    let store = SledCheckpointStore::open(&folder).unwrap();
    let (a, b) = write_three_checkpoints(&store);
    let before = (store.load(A).unwrap(), store.load(B).unwrap());
    drop(store);
    let store = SledCheckpointStore::open(&folder).unwrap();
    assert!(!store.conf_repaired());
    let after = (store.load(A).unwrap(), store.load(B).unwrap());
    assert_eq!(before, after);
    assert_eq!(after.0.as_ref().unwrap().lsn_covered, 31);
    assert_eq!(model_of(after.0.as_ref().unwrap()), a);
    assert_eq!(model_of(after.1.as_ref().unwrap()), b);
    assert_eq!(store.get_meta("layout").unwrap(), Some(b"g1 s2".to_vec()));
}

#[test]
fn sled_apply_fsyncs_every_file_and_folder() {
    let (_dir, store) = sled_store();
    let stats = store
        .apply(&batch(A, 1, vec![put(Namespace::POSITIONS, "k", "v")]))
        .unwrap();
    // At least `db` and `conf`, the sled folder and `blobs/`.
    assert!(stats.files_synced >= 2, "{stats:?}");
    assert!(stats.dirs_synced >= 2, "{stats:?}");
    assert_eq!(stats.entries_put, 1);
    assert!(stats.total >= stats.sync);
}

#[test]
fn sled_conf_written_by_sled_is_the_one_we_expect() {
    let (_dir, store) = sled_store();
    let conf = std::fs::read(store.folder().join("conf")).unwrap();
    assert_eq!(conf, expected_conf_for_tests(store.folder()));
}

#[test]
fn sled_torn_conf_is_rewritten_and_other_damage_reported() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("checkpoints");
    let store = SledCheckpointStore::open(&folder).unwrap();
    one_checkpoint(&store);
    drop(store);
    let conf = folder.join("conf");
    let whole = std::fs::read(&conf).unwrap();
    let mut zeroed = whole.clone();
    zeroed[20..].fill(0);
    for torn in [
        Vec::new(),
        whole[..12].to_vec(),
        whole[..whole.len() - 4].to_vec(),
        zeroed,
    ] {
        std::fs::write(&conf, &torn).unwrap();
        let store = SledCheckpointStore::open(&folder).unwrap();
        assert!(store.conf_repaired());
        assert_eq!(std::fs::read(&conf).unwrap(), whole);
        assert_eq!(store.load(A).unwrap().unwrap().entry_count(), 3);
    }
    let mut other = whole.clone();
    other[15] = b'9';
    std::fs::write(&conf, &other).unwrap();
    let error = SledCheckpointStore::open(&folder).err().unwrap();
    assert!(
        matches!(error, CheckpointError::ConfDamaged { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("checkpoints"), "{error}");
}

#[test]
fn sled_alone_refuses_a_torn_conf() {
    // Why the guard exists: sled 0.34 does not open a folder whose conf lost its tail.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("s");
    drop(sled::Config::new().path(&folder).open().unwrap());
    let conf = folder.join("conf");
    let whole = std::fs::read(&conf).unwrap();
    std::fs::write(&conf, &whole[..whole.len() - 4]).unwrap();
    assert!(sled::Config::new().path(&folder).open().is_err());
}

#[test]
fn shards_checkpoint_from_their_own_threads() {
    let (_dir, store) = sled_store();
    let store: std::sync::Arc<dyn CheckpointStore> = std::sync::Arc::new(store);
    let writers: Vec<_> = (0..4u32)
        .map(|shard| {
            let store = store.clone();
            std::thread::spawn(move || {
                let scope = Scope {
                    generation: 1,
                    shard,
                };
                for lsn in 1..=5u64 {
                    let key = format!("k{lsn}");
                    let b = batch(scope, lsn, vec![put(Namespace::POSITIONS, &key, "v")]);
                    store.apply(&b).unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    assert_eq!(store.scopes().unwrap().len(), 4);
    for scope in store.scopes().unwrap() {
        let loaded = store.load(scope).unwrap().unwrap();
        assert_eq!((loaded.lsn_covered, loaded.entry_count()), (5, 5));
    }
}

/// Entries of the timing test: about the size of the real state's positions and holds.
const TIMING_ENTRIES: usize = 100_000;

fn timing_batch(lsn: u64, round: usize) -> CheckpointBatch {
    let puts = (0..TIMING_ENTRIES)
        .map(|i| Entry {
            namespace: [Namespace::POSITIONS, Namespace::HOLDS][i % 2],
            key: format!("sku-{i:08}@warehouse-{:02}", i % 17).into_bytes(),
            value: format!("{{on_hand: {}, held: {}, round: {round}}}", i * 7, i % 5)
                .into_bytes()
                .repeat(2),
        })
        .collect();
    batch(A, lsn, puts)
}

#[test]
#[ignore = "timing: cargo test --release -p stockd --lib checkpoint_timing -- --ignored --nocapture"]
fn checkpoint_timing_of_100k_entries() {
    let (_dir, store) = sled_store();
    for (round, lsn) in [(0, 100), (1, 200)] {
        let b = timing_batch(lsn, round);
        let stats = store.apply(&b).unwrap();
        println!(
            "checkpoint of {TIMING_ENTRIES} entries ({}): total {:?} = prepare {:?} + write {:?} \
             + flush {:?} + fsync {:?} ({} files, {} folders), {} bytes",
            if round == 0 {
                "all new"
            } else {
                "all replaced"
            },
            stats.total,
            stats.prepare,
            stats.write,
            stats.flush,
            stats.sync,
            stats.files_synced,
            stats.dirs_synced,
            stats.bytes_written
        );
    }
    let small = store
        .apply(&batch(A, 300, vec![put(Namespace::HOLDS, "cart-1", "x")]))
        .unwrap();
    println!(
        "checkpoint of 1 entry: total {:?}, fsync {:?}",
        small.total, small.sync
    );
    let started = Instant::now();
    let loaded = store.load(A).unwrap().unwrap();
    println!(
        "load and verify of {} entries: {:?}",
        loaded.entry_count(),
        started.elapsed()
    );
    assert_eq!(loaded.entry_count(), TIMING_ENTRIES + 1);
}

/// A batch of `n` puts per namespace (positions and holds), values tagged with `round`,
/// deleting the holds of `deleted`.
fn large_batch(lsn: u64, n: usize, round: u32, deleted: std::ops::Range<usize>) -> CheckpointBatch {
    let mut puts = Vec::new();
    for i in 0..n {
        puts.push(put(
            Namespace::POSITIONS,
            &format!("p{i:03}"),
            &format!("v{round}-{i}"),
        ));
        if !deleted.contains(&i) {
            puts.push(put(
                Namespace::HOLDS,
                &format!("h{i:03}"),
                &format!("v{round}-{i}"),
            ));
        }
    }
    CheckpointBatch {
        deletes: deleted
            .map(|i| (Namespace::HOLDS, format!("h{i:03}").into_bytes()))
            .collect(),
        ..batch(A, lsn, puts)
    }
}

#[test]
fn a_checkpoint_larger_than_one_batch_is_written_in_several_and_loads_whole() {
    let store = SimStore::with_batch_entries_max(7, 10);
    let mut model = Model::new();
    // A first checkpoint, an incremental one in one batch, then large ones again that
    // overwrite, delete and empty a namespace: each loads as the model says.
    let batches = [
        large_batch(10, 25, 1, 0..0),
        batch(A, 11, vec![put(Namespace::HOLDS, "h001", "small")]),
        large_batch(20, 40, 2, 5..15),
        large_batch(30, 30, 3, 0..40),
        batch(A, 31, vec![put(Namespace::HOLDS, "h002", "back")]),
    ];
    for b in &batches {
        let syncs = store.syncs();
        store.apply(b).unwrap();
        let entries = b.puts.len() + b.deletes.len();
        assert!(
            entries <= 10 || store.syncs() - syncs > 2,
            "written in several batches"
        );
        apply_to_model(&mut model, b);
        let loaded = store.load(A).unwrap().unwrap();
        assert_eq!(loaded.lsn_covered, b.lsn_covered);
        assert_eq!(model_of(&loaded), model);
    }
}

#[test]
fn a_crash_in_any_batch_of_a_large_checkpoint_leaves_the_previous_or_the_next_one_whole() {
    let before = large_batch(10, 20, 1, 0..0);
    let next = large_batch(20, 30, 2, 3..9);
    let (mut old, mut new) = (Model::new(), Model::new());
    apply_to_model(&mut old, &before);
    new.clone_from(&old);
    apply_to_model(&mut new, &next);
    let mut saw = (false, false);
    for writes in 0.. {
        let store = SimStore::with_batch_entries_max(writes, 10);
        store.apply(&before).unwrap();
        store.inject_after(writes, Fault::CrashDuringApply);
        let finished = store.apply(&next).is_ok();
        let store = store.crash();
        let loaded = store.load(A).unwrap().unwrap();
        let found = model_of(&loaded);
        if loaded.lsn_covered == 10 {
            assert_eq!(found, old, "cut at write {writes}: the previous checkpoint");
            saw.0 = true;
        } else {
            assert_eq!(
                (loaded.lsn_covered, &found),
                (20, &new),
                "cut at write {writes}"
            );
            saw.1 = true;
        }
        // Whatever the cut left behind, the next large checkpoint writes and loads whole.
        let after = large_batch(30, 25, 3, 0..2);
        store.apply(&after).unwrap();
        let mut expected = found;
        apply_to_model(&mut expected, &after);
        assert_eq!(model_of(&store.load(A).unwrap().unwrap()), expected);
        if finished {
            break;
        }
    }
    assert_eq!(saw, (true, true), "cuts before and after the scope record");
}

/// A checkpoint whose atomic batch would rewrite more stored entries than one batch may
/// hold (a namespace that outgrows its buckets rewrites all its pages; or the pages it
/// touches hold that many) goes through the rewrite, a bounded batch at a time, and loads
/// whole; a small one is still one atomic commit. (Regression: a namespace of 8,400,000
/// holds that grew in one atomic batch took a shard past 24 GiB.)
#[test]
fn a_checkpoint_that_would_rewrite_more_than_a_batch_is_written_in_several() {
    let store = SimStore::with_batch_entries_max(11, 100);
    let mut model = Model::new();
    let holds = |lsn: u64, range: std::ops::Range<usize>| {
        let puts = range
            .map(|i| put(Namespace::HOLDS, &format!("h{i:04}"), &format!("v{lsn}")))
            .collect();
        batch(A, lsn, puts)
    };
    let mut commits = |b: &CheckpointBatch| {
        let syncs = store.syncs();
        store.apply(b).unwrap();
        apply_to_model(&mut model, b);
        assert_eq!(model_of(&store.load(A).unwrap().unwrap()), model);
        store.syncs() - syncs
    };
    // 128 entries: 4 buckets (PAGE_ENTRIES_TARGET 32 a page), filled 100 at a time.
    assert_eq!(commits(&holds(1, 0..100)), 1);
    assert_eq!(
        commits(&holds(2, 100..128)),
        1,
        "28 new entries in pages of 32"
    );
    assert_eq!(commits(&holds(3, 5..6)), 1, "one page rewritten: atomic");
    // The 129th entry makes the namespace grow to 8 buckets: every page is rewritten.
    assert!(
        commits(&holds(4, 128..129)) > 2,
        "the growth is written in batches"
    );
    // Entries spread over every page: together they hold more than a batch.
    let spread = (0..129).step_by(5);
    let spread = batch(
        A,
        5,
        spread
            .map(|i| put(Namespace::HOLDS, &format!("h{i:04}"), "again"))
            .collect(),
    );
    assert!(commits(&spread) > 2, "touched pages hold over 100 entries");
    assert_eq!(commits(&holds(6, 7..8)), 1, "one page again: atomic");
}
