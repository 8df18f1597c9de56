//! Restart time: how long recovery takes for a data folder with 1,000,000 positions and
//! 1,000,000 active holds (goal: at most 2 s on a 2-core machine).
//!
//! Builds the state through the engine, stores it the way stockd does (one whole
//! checkpoint per shard in sled, plus a tail of records in each shard's segment log),
//! then times `storage::recovery::recover`. `RESTART_POSITIONS` and `RESTART_HOLDS`
//! change the sizes. `RESTART_DATA_DIR=path` keeps the data folder there, and a second
//! run with a folder already in it only times the restart (to profile it alone).

/// The allocator the `stockd` binary uses (`main.rs`), so that the recovery timed here
/// allocates the way a real restart does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use stockd::shard::shard_of;
use stockd::storage::checkpoint::Scope;
use stockd::storage::checkpointer::{self, ConfigKeys};
use stockd::storage::log::{Log, LogError};
use stockd::storage::record::{self, LogRecord};
use stockd::storage::recovery::{self, Layout, Meta};
use stockd::storage::{Storage, StorageBackend};
use stockd_domain::{
    ChannelConfig, Command, Engine, ReserveLine, ReserveRequest, Settings, StockCount,
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The product of position `i` (all at DC1).
fn product(i: usize) -> String {
    format!("SKU-{i:07}")
}

/// A day-long hold of one unit of `product` at DC1 on WEB.
fn one_unit_hold(hold_ref: String, product: String) -> ReserveRequest {
    ReserveRequest {
        hold_ref,
        channel_ref: "WEB".into(),
        lines: vec![ReserveLine {
            product_ref: product,
            location_ref: "DC1".into(),
            quantity: 1,
            category: None,
        }],
        ttl_seconds: Some(86_400),
        allow_partial: false,
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let positions = env("RESTART_POSITIONS", 1_000_000);
    let holds = env("RESTART_HOLDS", 1_000_000);
    let shards = 2u32;
    let now = 1_800_000_000_000i64;
    let temp = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("RESTART_DATA_DIR").map(std::path::PathBuf::from);
    let path = kept.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let reuse = kept.is_some() && path.join("checkpoints").exists();
    let storage = Storage::open(&StorageBackend::Real, &path, Default::default()).unwrap();
    let settings = Settings::default();
    if !reuse {
        store_state(&storage, &settings, shards, now, positions, holds);
    }
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let route = |p: &str, l: &str| shard_of(p, l, shards as usize);
    // One log per shard, as on this 2-core machine by default.
    let layout = Layout {
        shards,
        logs: shards,
    };
    let recovered = recovery::recover(&storage, layout, &settings, now + 1_000, &route)
        .unwrap_or_else(|e| panic!("recovery failed: {e}"));
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    let size: u64 = walk(&path);
    println!(
        "restart: recovered {} positions and {} holds ({} log records replayed) in {:.2} s \
         ({cpu:.2} s of CPU, all threads); data folder {:.0} MiB",
        recovered.report.positions,
        recovered.report.holds,
        recovered.report.records_replayed,
        elapsed.as_secs_f64(),
        size as f64 / (1 << 20) as f64
    );
}

/// CPU time of this process so far (user + system, all threads), from /proc: on a shared
/// machine it says what the restart cost when the wall clock includes waiting for a core.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5); 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Builds the state and stores it as stockd does: whole checkpoints and a log tail.
fn store_state(
    storage: &Storage,
    settings: &Settings,
    shards: u32,
    now: i64,
    positions: usize,
    holds: usize,
) {
    recovery::write_meta(
        storage,
        Meta {
            generation: 0,
            shards,
            logs: shards,
        },
    )
    .unwrap();

    let started = Instant::now();
    let mut engines = build(settings, shards, now, positions, holds);
    println!(
        "built {positions} positions and {holds} holds in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    store_checkpoints(storage, &engines);
    incremental_checkpoint(storage, &mut engines[0], now, positions);
    let t = Instant::now();
    // A tail of log records to replay, as after a crash between checkpoints.
    let tail = 10_000usize;
    store_log_tail(storage, shards, now, positions, tail);
    println!("{tail} log records in {:.2} s", t.elapsed().as_secs_f64());
    println!("stored in {:.1} s", started.elapsed().as_secs_f64());
}

/// One engine per shard with channel WEB, `positions` positions of 10 units and `holds`
/// one-unit holds spread over them.
fn build(
    settings: &Settings,
    shards: u32,
    now: i64,
    positions: usize,
    holds: usize,
) -> Vec<Engine> {
    let mut engines: Vec<Engine> = (0..shards).map(|_| Engine::new(settings.clone())).collect();
    for e in &mut engines {
        e.upsert_channel(ChannelConfig {
            channel_ref: "WEB".into(),
            ..Default::default()
        })
        .unwrap();
    }
    for i in 0..positions {
        let p = product(i);
        let s = shard_of(&p, "DC1", shards as usize);
        engines[s]
            .set_stock(
                now,
                &StockCount {
                    product_ref: p,
                    location_ref: "DC1".into(),
                    quantity: 10,
                    as_of: now,
                },
            )
            .unwrap();
    }
    for h in 0..holds {
        let p = product(h % positions.max(1));
        let s = shard_of(&p, "DC1", shards as usize);
        let req = one_unit_hold(format!("cart-{h:08}"), p);
        engines[s].reserve(now, &req, &[0]).unwrap();
    }
    for e in &mut engines {
        e.drain_events().for_each(drop);
    }
    engines
}

/// One whole checkpoint per shard, as stockd writes a first one, timing the copy (the
/// shard's pause, here of everything), the encoding and the sled write with its fsyncs.
fn store_checkpoints(storage: &Storage, engines: &[Engine]) {
    for (shard, engine) in engines.iter().enumerate() {
        let t = Instant::now();
        let delta = engine.snapshot().into_delta();
        let copied = t.elapsed();
        let scope = Scope {
            generation: 0,
            shard: shard as u32,
        };
        let keys = ConfigKeys::default();
        let batch = checkpointer::encode(scope, 0, &delta, &keys);
        let encoded = t.elapsed() - copied;
        let entries = batch.batch.puts.len();
        let t = Instant::now();
        let stats =
            checkpointer::apply_unpublished(storage.checkpoints.as_ref(), batch, &keys).unwrap();
        println!(
            "shard {shard}: checkpoint of {entries} entries: copied in {:.2} s, encoded in {:.2} s, \
             written in {:.2} s: {} pages, {:.0} MiB ({:.0} bytes an entry)",
            copied.as_secs_f64(),
            encoded.as_secs_f64(),
            t.elapsed().as_secs_f64(),
            stats.pages_written,
            stats.bytes_written as f64 / (1 << 20) as f64,
            stats.bytes_written as f64 / entries as f64
        );
    }
}

/// Changed entries of the incremental checkpoint: 5,000 new holds and their positions.
const INCREMENTAL_HOLDS: usize = 5_000;

/// An incremental checkpoint of shard 0 after `INCREMENTAL_HOLDS` reserves on positions
/// at random, as stockd writes one between two of its checkpoints.
fn incremental_checkpoint(storage: &Storage, engine: &mut Engine, now: i64, positions: usize) {
    drop(engine.take_checkpoint_delta());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut placed = 0;
    while placed < INCREMENTAL_HOLDS {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let p = product((seed >> 33) as usize % positions.max(1));
        if shard_of(&p, "DC1", 2) != 0 {
            continue;
        }
        let req = one_unit_hold(format!("inc-{placed:06}"), p);
        engine.reserve(now, &req, &[0]).unwrap();
        placed += 1;
    }
    engine.drain_events().for_each(drop);
    let delta = engine.take_checkpoint_delta();
    let scope = Scope {
        generation: 0,
        shard: 0,
    };
    let keys = ConfigKeys::default();
    let encoded = checkpointer::encode(scope, 0, &delta, &keys);
    let entries = encoded.batch.puts.len() + encoded.batch.deletes.len();
    let stats = storage.checkpoints.apply(&encoded.batch).unwrap();
    println!(
        "shard 0: incremental checkpoint of {entries} changed entries: {:.2} s \
         (prepare {:.2} s, write {:.2} s, flush {:.2} s, fsync {:.2} s), {} pages, {:.1} MiB, \
         {:.0} bytes per changed entry",
        stats.total.as_secs_f64(),
        stats.prepare.as_secs_f64(),
        stats.write.as_secs_f64(),
        stats.flush.as_secs_f64(),
        stats.sync.as_secs_f64(),
        stats.pages_written,
        stats.bytes_written as f64 / (1 << 20) as f64,
        stats.bytes_written as f64 / entries as f64
    );
}

/// `tail` records of one-unit holds in the shards' logs after the checkpoints, as after a
/// crash between checkpoints.
fn store_log_tail(storage: &Storage, shards: u32, now: i64, positions: usize, tail: usize) {
    let mut logs: Vec<_> = (0..shards)
        .map(|s| {
            let dir = storage.log_dir(0, s).unwrap();
            Log::open_shared(dir, storage.log_config).unwrap().0
        })
        .collect();
    let mut seqs = vec![1u64; shards as usize];
    for i in 0..tail {
        let p = product(i % positions.max(1));
        let s = shard_of(&p, "DC1", shards as usize);
        let rec = LogRecord {
            now,
            command: Command::Reserve {
                request: one_unit_hold(format!("tail-{i}"), p),
                mine: vec![0],
            },
        };
        let payload = [record::encode(&rec)];
        let seq = seqs[s];
        seqs[s] += 1;
        match logs[s].append_tagged(0, s as u32, seq, &payload) {
            Err(LogError::GroupFull { .. }) => {
                logs[s].commit().unwrap();
                logs[s].append_tagged(0, s as u32, seq, &payload).unwrap();
            }
            other => {
                other.unwrap();
            }
        }
    }
    for log in &mut logs {
        log.commit().unwrap();
    }
}

fn walk(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let m = e.metadata().unwrap();
            total += if m.is_dir() { walk(&e.path()) } else { m.len() };
        }
    }
    total
}
