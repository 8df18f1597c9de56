//! Engine benchmarks: reserve + release on a hot position and over 1,000,000 positions,
//! ATS queries over 1,000,000 positions, and memory per idle position and per active hold.
//!
//! Run: `cargo bench --bench engine -- --warm-up-time 1 --measurement-time 3`.
//! `ENGINE_BENCH_POSITIONS` (default 1,000,000; 10,000 when run as a test) sets the number
//! of positions and of holds.
//!
//! Memory is measured with a counting global allocator (live bytes requested, so
//! allocator overhead is not included) around the setup, and printed before the criterion
//! groups run. The counting costs one relaxed atomic add per allocation and is included in
//! the timings, as is draining the events each call emits (the service drains them too).

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write;
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use criterion::{Criterion, Throughput};
use stockd_domain::{
    ChannelConfig, Engine, Millis, ReserveKind, ReserveLine, ReserveRequest, Settings, StockCount,
};

// ----- a counting allocator -----

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call forwards to `System` with the same arguments; the counter is a side
// effect only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

// ----- setup -----

const NOW: Millis = 1_800_000_000_000;
const CHANNEL: &str = "WEB";
/// Locations per product: 1,000,000 positions are 100,000 products at 10 locations.
const LOCATIONS: usize = 10;
const STOCK: i64 = 1_000;

/// splitmix64: a small, fast, seeded generator for picking positions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Width of a product ref: `SKU-` and seven digits.
const PRODUCT_REF_LEN: usize = 11;

/// The refs of the positions, built once so that a benchmark iteration copies them
/// instead of formatting them. Product refs sit side by side in one string (1.1 MB for
/// 100,000), so reading one costs the benchmark little next to the engine's own work.
struct Refs {
    products: String,
    product_count: usize,
    locations: Vec<String>,
}

impl Refs {
    fn new(positions: usize) -> Self {
        let product_count = positions.div_ceil(LOCATIONS);
        let mut products = String::with_capacity(product_count * PRODUCT_REF_LEN);
        for p in 0..product_count {
            let r = format!("SKU-{p:07}");
            assert_eq!(r.len(), PRODUCT_REF_LEN, "at most 10,000,000 products");
            products.push_str(&r);
        }
        Refs {
            products,
            product_count,
            locations: (0..LOCATIONS.min(positions))
                .map(|l| format!("STORE-{l:03}"))
                .collect(),
        }
    }

    /// The refs of position `i`.
    fn of(&self, i: usize) -> (&str, &str) {
        let p = i / self.locations.len() * PRODUCT_REF_LEN;
        (
            &self.products[p..p + PRODUCT_REF_LEN],
            &self.locations[i % self.locations.len()],
        )
    }
}

/// How many reserve+release pairs run between two expiry passes, which forget the holds
/// released by then: each pair takes a fresh hold ref (a released ref answers
/// FAILED_PRECONDITION if reserved again), so without them released holds pile up.
const FORGET_EVERY: usize = 1024;

fn new_engine() -> Engine {
    let mut engine = Engine::new(Settings {
        // Released holds are forgotten a millisecond after they end (the bench's clock moves
        // one millisecond a pair), so memory stays flat however long criterion runs.
        hold_retention_ms: 1,
        ..Settings::default()
    });
    engine
        .upsert_channel(ChannelConfig {
            channel_ref: CHANNEL.into(),
            ..ChannelConfig::default()
        })
        .expect("valid channel");
    engine
}

/// Gives `req` the hold ref `{prefix}{i}`, written into its own buffer (no allocation).
fn fresh_ref(req: &mut ReserveRequest, prefix: &str, i: usize) {
    req.hold_ref.clear();
    let _ = write!(req.hold_ref, "{prefix}{i}");
}

fn one_line(hold: &str, product: &str, location: &str) -> ReserveRequest {
    ReserveRequest {
        hold_ref: hold.into(),
        channel_ref: CHANNEL.into(),
        lines: vec![ReserveLine {
            product_ref: product.into(),
            location_ref: location.into(),
            quantity: 1,
            category: None,
        }],
        ttl_seconds: None,
        allow_partial: false,
    }
}

/// Points a one-line request at another position without allocating.
fn retarget(req: &mut ReserveRequest, product: &str, location: &str) {
    let line = &mut req.lines[0];
    line.product_ref.clear();
    line.product_ref.push_str(product);
    line.location_ref.clear();
    line.location_ref.push_str(location);
}

/// Builds the 1,000,000-position engine, then 1,000,000 holds on it, measuring the live
/// bytes each adds. Returns the engine (positions and holds) for the benchmarks.
fn build_world(n: usize, refs: &Refs) -> Engine {
    let started = Instant::now();
    let mut engine = new_engine();
    let before = live();
    let mut count = StockCount {
        product_ref: String::with_capacity(32),
        location_ref: String::with_capacity(32),
        quantity: STOCK,
        as_of: NOW,
    };
    for i in 0..n {
        let (p, l) = refs.of(i);
        count.product_ref.clear();
        count.product_ref.push_str(p);
        count.location_ref.clear();
        count.location_ref.push_str(l);
        engine.set_stock(NOW, &count).expect("valid count");
        engine.drain_events().for_each(drop);
    }
    let after_positions = live();
    let mut req = one_line("x", "x", "x");
    for i in 0..n {
        let (p, l) = refs.of(i);
        retarget(&mut req, p, l);
        req.hold_ref.clear();
        write!(req.hold_ref, "cart-{i}").expect("write to a String");
        let part = engine.reserve(NOW, &req, &[0]).expect("valid reserve");
        debug_assert_eq!(part.kind, ReserveKind::Created);
        drop(part);
        engine.drain_events().for_each(drop);
    }
    let after_holds = live();
    assert_eq!(engine.position_count(), n);
    assert_eq!(engine.hold_count(), n);
    let per_position = (after_positions - before) as f64 / n as f64;
    let per_hold = (after_holds - after_positions) as f64 / n as f64;
    println!(
        "memory: {per_position:.1} bytes per idle position, {per_hold:.1} bytes per active hold \
         ({n} positions = {} products x {} locations, one channel; {n} one-unit holds with \
         unique refs, one per position; live bytes requested from the allocator; setup {:.1} s)",
        refs.product_count,
        refs.locations.len(),
        started.elapsed().as_secs_f64()
    );
    engine
}

/// Live bytes per finished hold: `n` holds reserved and released on a fresh engine with
/// the default retention, so each stays queryable (GetHold, ListHolds, idempotent retries)
/// for `hold_retention_ms` after it ends.
fn finished_hold_bytes(n: usize, refs: &Refs) {
    let mut engine = Engine::new(Settings::default());
    engine
        .upsert_channel(ChannelConfig {
            channel_ref: CHANNEL.into(),
            ..ChannelConfig::default()
        })
        .expect("valid channel");
    let mut count = StockCount {
        product_ref: String::new(),
        location_ref: String::new(),
        quantity: STOCK,
        as_of: NOW,
    };
    let positions = n.min(100_000);
    for i in 0..positions {
        let (p, l) = refs.of(i);
        count.product_ref = p.into();
        count.location_ref = l.into();
        engine.set_stock(NOW, &count).expect("valid count");
    }
    engine.drain_events().for_each(drop);
    let before = live();
    let mut req = one_line("x", "x", "x");
    for i in 0..n {
        let (p, l) = refs.of(i % positions);
        retarget(&mut req, p, l);
        fresh_ref(&mut req, "done-", i);
        engine.reserve(NOW, &req, &[0]).expect("valid reserve");
        engine.release(NOW, &req.hold_ref).expect("release");
        engine.drain_events().for_each(drop);
    }
    let per_hold = (live() - before) as f64 / n as f64;
    println!(
        "memory: {per_hold:.1} bytes per finished hold ({n} reserved and released, kept for the default retention)"
    );
}

// ----- benchmarks -----

fn hot_position(c: &mut Criterion) {
    let mut engine = new_engine();
    let count = StockCount {
        product_ref: "SKU-HOT".into(),
        location_ref: "STORE-001".into(),
        quantity: STOCK,
        as_of: NOW,
    };
    engine.set_stock(NOW, &count).expect("valid count");
    let mut req = one_line("cart-hot", "SKU-HOT", "STORE-001");
    let mut group = c.benchmark_group("hot_position");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("reserve_release_1_unit", |b| {
        b.iter(|| {
            i += 1;
            let now = NOW + i as Millis;
            fresh_ref(&mut req, "cart-hot-", i);
            let part = engine.reserve(now, &req, &[0]).expect("reserve");
            debug_assert_eq!(part.lines[0].reserved, 1);
            black_box(part);
            black_box(engine.release(now, &req.hold_ref).expect("release"));
            engine.drain_events().for_each(drop);
            if i.is_multiple_of(FORGET_EVERY) {
                engine.expire_due(now + 2);
                engine.drain_events().for_each(drop);
            }
        });
    });
    group.finish();
    assert_eq!(
        engine.availability(CHANNEL, "SKU-HOT", "STORE-001"),
        Ok(STOCK)
    );
}

fn random_positions(c: &mut Criterion, engine: &mut Engine, refs: &Refs, n: usize) {
    let mut rng = Rng(0x5eed);
    let mut req = one_line("cart-random", "x", "x");
    let mut group = c.benchmark_group(format!("{n}_positions"));
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("reserve_release_1_unit_random_position", |b| {
        b.iter(|| {
            i += 1;
            let now = NOW + i as Millis;
            let (p, l) = refs.of(rng.below(n));
            retarget(&mut req, p, l);
            fresh_ref(&mut req, "cart-random-", i);
            let part = engine.reserve(now, &req, &[0]).expect("reserve");
            debug_assert_eq!(part.lines[0].reserved, 1);
            black_box(part);
            black_box(engine.release(now, &req.hold_ref).expect("release"));
            engine.drain_events().for_each(drop);
            if i.is_multiple_of(FORGET_EVERY) {
                engine.expire_due(now + 2);
                engine.drain_events().for_each(drop);
            }
        });
    });
    group.bench_function("availability_random_position", |b| {
        b.iter(|| {
            let (p, l) = refs.of(rng.below(n));
            black_box(engine.availability(CHANNEL, p, l).expect("known channel"))
        });
    });
    group.finish();
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`, a debug build)
    // the benchmarks only smoke-test, so the setup stays small.
    let benching = std::env::args().any(|a| a == "--bench");
    let n = std::env::var("ENGINE_BENCH_POSITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 1_000_000usize } else { 10_000 })
        .max(1);
    let refs = Refs::new(n);
    finished_hold_bytes(n, &refs);
    let mut engine = build_world(n, &refs);
    let mut c = Criterion::default().configure_from_args();
    hot_position(&mut c);
    random_positions(&mut c, &mut engine, &refs, n);
    c.final_summary();
}
