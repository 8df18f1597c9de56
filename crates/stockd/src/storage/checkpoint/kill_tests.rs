//! A real killed process: a child applies checkpoints to a sled folder in a loop and is
//! killed with SIGKILL at a different moment each round; the folder must then load as one of
//! the checkpoints, whole, and no older than the last one the child reported durable.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

/// The environment variable that turns the ignored child test into the writer.
const CHILD_FOLDER_ENV: &str = "STOCKD_CHECKPOINT_KILL_CHILD";

/// Times the child is killed; each round takes a fraction of a second.
const KILL_ROUNDS: u64 = 4;

/// What the child prints after each durable checkpoint.
const DONE_LINE: &str = "checkpoint done";

/// Checkpoints the child must report in a round before it may be killed.
const CHECKPOINTS_BEFORE_KILL: usize = 2;

/// Keys the checkpoints draw from.
const KEY_SPACE: u64 = 2000;
/// Puts per checkpoint: enough that one batch spans many sled log writes.
const PUTS_PER_CHECKPOINT: u64 = 400;
/// Deletes per checkpoint (of keys it does not put).
const DELETES_PER_CHECKPOINT: u64 = 40;

const SCOPE: Scope = Scope {
    generation: 3,
    shard: 1,
};

/// Checkpoint number `lsn` of the deterministic sequence.
fn checkpoint(lsn: u64) -> CheckpointBatch {
    let key = |k: u64| format!("k{k:05}").into_bytes();
    let puts: BTreeSet<u64> = (0..PUTS_PER_CHECKPOINT)
        .map(|n| (lsn * 131 + n * 7) % KEY_SPACE)
        .collect();
    let deletes: BTreeSet<u64> = (0..DELETES_PER_CHECKPOINT)
        .map(|n| (lsn * 17 + n * 13 + 1) % KEY_SPACE)
        .filter(|k| !puts.contains(k))
        .collect();
    CheckpointBatch {
        scope: SCOPE,
        lsn_covered: lsn,
        puts: puts
            .iter()
            .map(|&k| Entry {
                namespace: Namespace::POSITIONS,
                key: key(k),
                value: format!("written by checkpoint {lsn}").into_bytes(),
            })
            .collect(),
        deletes: deletes
            .iter()
            .map(|&k| (Namespace::POSITIONS, key(k)))
            .collect(),
        meta: Vec::new(),
    }
}

/// The state after checkpoints 1 to `lsn`.
fn expected(lsn: u64) -> Vec<Entry> {
    let mut state = BTreeMap::new();
    for i in 1..=lsn {
        let b = checkpoint(i);
        for e in b.puts {
            state.insert(e.key.clone(), e);
        }
        for (_, key) in b.deletes {
            state.remove(&key);
        }
    }
    state.into_values().collect()
}

fn loaded_lsn(folder: &Path) -> u64 {
    let store = SledCheckpointStore::open(folder).unwrap();
    match store.load(SCOPE).unwrap() {
        None => 0,
        Some(loaded) => {
            let mut entries: Vec<Entry> = loaded
                .entries()
                .map(|e| Entry {
                    namespace: e.namespace,
                    key: e.key.to_vec(),
                    value: e.value.to_vec(),
                })
                .collect();
            entries.sort();
            assert_eq!(
                entries,
                expected(loaded.lsn_covered),
                "not one whole checkpoint"
            );
            loaded.lsn_covered
        }
    }
}

#[test]
#[ignore = "the writer half of a_killed_writer_leaves_one_whole_checkpoint"]
fn kill_child_writer() {
    let Some(folder) = std::env::var_os(CHILD_FOLDER_ENV) else {
        return;
    };
    let store = SledCheckpointStore::open(Path::new(&folder)).unwrap();
    let mut lsn = store.load(SCOPE).unwrap().map_or(0, |l| l.lsn_covered);
    loop {
        lsn += 1;
        store.apply(&checkpoint(lsn)).unwrap();
        println!("{DONE_LINE} {lsn}");
    }
}

#[test]
fn a_killed_writer_leaves_one_whole_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("checkpoints");
    let mut lsn = 0;
    for round in 0..KILL_ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "storage::checkpoint::kill_tests::kill_child_writer",
            ])
            .args(["--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_FOLDER_ENV, &folder)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Kept open until the kill: a closed pipe would end the child at its next report.
        let mut reports = BufReader::new(child.stdout.take().unwrap()).lines();
        let done = reports
            .by_ref()
            .map(Result::unwrap)
            .filter(|line| line.starts_with(DONE_LINE))
            .take(CHECKPOINTS_BEFORE_KILL)
            .count();
        assert_eq!(done, CHECKPOINTS_BEFORE_KILL, "the child stopped writing");
        // Somewhere inside the next checkpoint, or between two.
        std::thread::sleep(Duration::from_millis(7 + 13 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        drop(reports);
        let found = loaded_lsn(&folder);
        assert!(
            found >= lsn,
            "round {round}: went back from {lsn} to {found}"
        );
        lsn = found;
    }
}
