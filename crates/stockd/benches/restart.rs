//! Restart time: how long recovery takes for a data folder with 1,000,000 positions and
//! 1,000,000 active holds (goal: at most 2 s on a 2-core machine).
//!
//! Builds the state through the engine, stores it the way stockd does (one whole
//! checkpoint per shard in sled, plus a tail of records in each shard's segment log),
//! then times `storage::recovery::recover`. `RESTART_POSITIONS` and `RESTART_HOLDS`
//! change the sizes.

use std::time::Instant;

use stockd::shard::shard_of;
use stockd::storage::checkpoint::Scope;
use stockd::storage::checkpointer::{self, ConfigKeys};
use stockd::storage::log::{Log, LogError};
use stockd::storage::record::{self, LogRecord};
use stockd::storage::recovery::{self, Meta};
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
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&StorageBackend::Real, dir.path(), Default::default()).unwrap();
    recovery::write_meta(
        &storage,
        Meta {
            generation: 0,
            shards,
        },
    )
    .unwrap();

    let started = Instant::now();
    let settings = Settings::default();
    let engines = build(&settings, shards, now, positions, holds);
    println!(
        "built {positions} positions and {holds} holds in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    store_checkpoints(&storage, &engines);
    let t = Instant::now();
    // A tail of log records to replay, as after a crash between checkpoints.
    let tail = 10_000usize;
    store_log_tail(&storage, shards, now, positions, tail);
    println!("{tail} log records in {:.2} s", t.elapsed().as_secs_f64());
    println!("stored in {:.1} s", started.elapsed().as_secs_f64());
    drop(engines);

    let started = Instant::now();
    let route = |p: &str, l: &str| shard_of(p, l, shards as usize);
    let recovered = recovery::recover(&storage, shards, &settings, now + 1_000, &route)
        .unwrap_or_else(|e| panic!("recovery failed: {e}"));
    let elapsed = started.elapsed();
    let size: u64 = walk(dir.path());
    println!(
        "restart: recovered {} positions and {} holds ({} log records replayed) in {:.2} s; data folder {:.0} MiB",
        recovered.report.positions,
        recovered.report.holds,
        recovered.report.records_replayed,
        elapsed.as_secs_f64(),
        size as f64 / (1 << 20) as f64
    );
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
        let batch = checkpointer::encode(scope, 0, &delta, &ConfigKeys::default());
        let encoded = t.elapsed() - copied;
        let entries = batch.puts.len();
        let t = Instant::now();
        checkpointer::apply_unpublished(storage.checkpoints.as_ref(), batch).unwrap();
        println!(
            "shard {shard}: checkpoint of {entries} entries: copied in {:.2} s, encoded in {:.2} s, written in {:.2} s",
            copied.as_secs_f64(),
            encoded.as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
    }
}

/// `tail` records of one-unit holds in the shards' logs after the checkpoints, as after a
/// crash between checkpoints.
fn store_log_tail(storage: &Storage, shards: u32, now: i64, positions: usize, tail: usize) {
    let mut logs: Vec<_> = (0..shards)
        .map(|s| {
            let dir = storage.log_dir(0, s).unwrap();
            Log::open(dir, storage.log_config, 0).unwrap().0
        })
        .collect();
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
        match logs[s].append(0, &payload) {
            Err(LogError::GroupFull { .. }) => {
                logs[s].commit().unwrap();
                logs[s].append(0, &payload).unwrap();
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
