//! Restart time: how long recovery takes for a data folder with 1,000,000 positions and
//! 1,000,000 active holds (goal: at most 5 s on a 2-core machine).
//!
//! Builds the state through the engine, stores it the way stockd does (one snapshot per
//! shard, plus a tail of log records to replay), then times `storage::recovery::recover`.
//! `RESTART_POSITIONS` and `RESTART_HOLDS` change the sizes.

use std::time::Instant;

use stockd::shard::shard_of;
use stockd::storage::Store;
use stockd::storage::record::{self, LogRecord};
use stockd::storage::recovery;
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
    let positions = env("RESTART_POSITIONS", 1_000_000);
    let holds = env("RESTART_HOLDS", 1_000_000);
    let shards = 2u32;
    let now = 1_800_000_000_000i64;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .set_meta(stockd::storage::store::Meta {
            generation: 0,
            shards,
        })
        .unwrap();

    let started = Instant::now();
    let settings = Settings::default();
    let engines = build(&settings, shards, now, positions, holds);
    println!(
        "built {positions} positions and {holds} holds in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    store_snapshots(&store, &engines);
    let t = Instant::now();
    // A tail of log records to replay, as after a crash between snapshots.
    let tail = 10_000usize;
    store_log_tail(&store, shards, now, positions, tail);
    println!("{tail} log records in {:.2} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    store.db.flush().unwrap();
    println!("flush in {:.2} s", t.elapsed().as_secs_f64());
    println!("stored in {:.1} s", started.elapsed().as_secs_f64());
    drop(engines);

    let started = Instant::now();
    let route = |p: &str, l: &str| shard_of(p, l, shards as usize);
    let recovered = recovery::recover(&store, shards, &settings, now + 1_000, &route)
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

/// One snapshot per shard, as stockd stores them, timing each shard's encoding.
fn store_snapshots(store: &Store, engines: &[Engine]) {
    for (shard, engine) in engines.iter().enumerate() {
        let t = Instant::now();
        let payload = record::encode(&engine.compact());
        let encoded = t.elapsed();
        store.write_snapshot(0, shard as u32, 0, &payload).unwrap();
        println!(
            "shard {shard}: snapshot of {:.0} MiB encoded in {:.2} s (the shard's pause), stored in {:.2} s",
            payload.len() as f64 / (1 << 20) as f64,
            encoded.as_secs_f64(),
            (t.elapsed() - encoded).as_secs_f64()
        );
    }
}

/// `tail` log records of one-unit holds after the snapshots, as after a crash between
/// snapshots.
fn store_log_tail(store: &Store, shards: u32, now: i64, positions: usize, tail: usize) {
    let mut seqs = vec![0u64; shards as usize];
    for i in 0..tail {
        let p = product(i % positions.max(1));
        let s = shard_of(&p, "DC1", shards as usize) as u32;
        let rec = LogRecord {
            now,
            command: Command::Reserve {
                request: one_unit_hold(format!("tail-{i}"), p),
                mine: vec![0],
            },
        };
        let seq = seqs[s as usize];
        seqs[s as usize] += 1;
        store
            .log
            .insert(
                stockd::storage::store::log_key(0, s, seq),
                record::encode(&rec),
            )
            .unwrap();
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
