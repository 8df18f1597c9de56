//! Every bound and default of the domain, in one place, each with its cost or its reason.
//!
//! A limit is a named constant so that the transport, the router and the engine agree on
//! it, and so that its price (memory, latency, fan-out) is written beside it. The
//! relations between them are checked at compile time at the bottom of this file.

use super::Millis;

/// Milliseconds in a second.
pub const MS_PER_SECOND: Millis = 1_000;
/// Milliseconds in a day.
pub const MS_PER_DAY: Millis = 86_400 * MS_PER_SECOND;

// ----- refs -----

/// Longest ref accepted, in bytes (domain.md: 1 to 128). Bounds the interner's memory per
/// entry (each distinct ref is stored once per engine, plus its map key).
pub const REF_LEN_MAX: usize = 128;

// ----- holds -----

/// Most lines in one hold. Bounds a reserve's work on a shard (one ATS check and one
/// SOFT_RESERVE per line) and the size of the request every shard receives.
pub const HOLD_LINES_MAX: usize = 100;
/// Largest quantity of one hold or fulfilment line: a cart, not a pallet. Far below
/// `STOCK_QUANTITY_MAX`, so a hold can never overflow a position's counters.
pub const HOLD_QUANTITY_MAX: i64 = 1_000_000;

/// Shortest hold timer a request may ask for. Below one second the expiry timer (which
/// fires `EXPIRY_GRACE_MS` after the deadline) could not honour it.
pub const TTL_SECONDS_MIN: u32 = 1;
/// Longest hold timer a request or a rule may ask for: one day. A longer hold is a
/// reservation, not a cart, and would pin stock (and memory) for that long.
pub const TTL_SECONDS_MAX: u32 = 86_400;
/// The global default hold timer: 15 minutes (domain.md, "TTL").
pub const TTL_SECONDS_DEFAULT: u32 = 900;

/// How long a finished hold (released, expired, or confirmed with the order closed) stays
/// in memory by default, so that GetHold and idempotent retries still answer: 24 hours.
/// Costs one hold record (about 200 bytes plus its lines) per finished cart of the day.
pub const HOLD_RETENTION_MS_DEFAULT: Millis = MS_PER_DAY;

/// How long after a hold's deadline its timer fires: lets every shard of a multi-shard
/// hold agree on what a request just before the deadline saw, well inside domain.md's
/// "within one second". A request that arrives after the deadline already treats the hold
/// as expired, so the grace never lets a hold outlive its deadline for a reader.
pub const EXPIRY_GRACE_MS: Millis = 250;

// ----- listings (ListHolds) -----

/// Holds in a ListHolds page when the request does not say.
pub const LIST_HOLDS_PAGE_SIZE_DEFAULT: usize = 100;
/// Most holds in one ListHolds page (a larger page_size is served as this). Each shard
/// answers up to a page, so a page costs at most shards × this many hold views; with
/// `HOLD_LINES_MAX` lines of about 40 bytes each, the largest page stays near 2 MB, under
/// a client's default 4 MiB message limit.
pub const LIST_HOLDS_PAGE_SIZE_MAX: usize = 500;
/// Most index entries one shard examines for one ListHolds page (plus the rest of the
/// millisecond it stops in, which holds what one shard did in one millisecond): about
/// 1 ms of the shard's time. A page that reaches it is short and carries a token.
pub const LIST_HOLDS_SCAN_MAX: usize = 20_000;

// ----- stock -----

/// Largest counted quantity, and largest magnitude of one adjustment: far above any
/// warehouse (10^12 units), far below overflow (i64 holds 9.2 × 10^18, so even 10^6
/// adjustments of this size cannot overflow a position's counters).
pub const STOCK_QUANTITY_MAX: i64 = 1_000_000_000_000;
/// Largest absolute channel buffer: the same scale as a stock quantity.
pub const BUFFER_UNITS_MAX: i64 = STOCK_QUANTITY_MAX;

/// How far in the future a count's `as_of` or an adjustment's `occurred_at` may lie: one
/// day, to absorb clock skew and time-zone mistakes of the systems that send them. A count
/// dated later would make every real count until then stale.
pub const STOCK_TIME_FUTURE_MS_MAX: Millis = MS_PER_DAY;
/// How far in the past a count's `as_of` or an adjustment's `occurred_at` may lie: one
/// year. Anything older is a data error (a count that old is stale against any later one,
/// an adjustment that old is already in every count since).
pub const STOCK_TIME_PAST_MS_MAX: Millis = 366 * MS_PER_DAY;

// ----- batches -----

/// Most keys in one availability read. Bounds the reply (16 bytes per key) and the work
/// one read puts on the shards (one ATS computation per key, about 100 ns each).
pub const READ_KEYS_MAX: usize = 1_000;
/// Rounds a checkpoint delta taken in steps makes over entries changed while it was being
/// copied; the last one copies whatever changed since at once. Each round is shorter than
/// the one before as long as the shard copies faster than it changes entries, so the cap
/// is only reached under a sustained write load, and bounds how long a delta takes.
pub const CHECKPOINT_ROUNDS_MAX: usize = 4;
/// Most entries in one part of a checkpoint delta taken in steps: a part is one vector
/// of copies, so the shard grows (and, when it grows, moves) at most this many at once,
/// about 0.5 MiB at ~130 bytes a copy, instead of a vector of the whole delta.
pub const CHECKPOINT_PART_ENTRIES_MAX: usize = 4_096;
/// Most items in one SetStock, AdjustStock, UpsertProducts or UpsertCategories. Bounds
/// one log record (about 100 bytes per item) and the time one batch holds a shard.
pub const STOCK_BATCH_MAX: usize = 1_000;

// ----- locations, networks and fulfilment -----

/// Most locations an engine knows, and most in one UpsertLocations. Every shard keeps the
/// whole list (about 200 bytes a location), and a fulfilment or network read considers
/// each member once per line.
pub const LOCATIONS_MAX: usize = 1_000;
/// Most location lists a shard's engine keeps resolved for network reads
/// (`engine::GridMemo`): two a channel (its members, and those that ship), each at most
/// `LOCATIONS_MAX` refs.
pub const GRID_MEMO_LISTS_MAX: usize = 16;
/// Most locations in a named network.
pub const NETWORK_LOCATIONS_MAX: usize = LOCATIONS_MAX;
/// Most products in one aggregate (network) availability read. With `LOCATIONS_MAX`
/// members it bounds one read to 20,000 ATS computations (about 2 ms of shard time).
pub const NETWORK_PRODUCTS_MAX: usize = 20;
/// Most lines in one GetFulfilmentOptions cart: the same fan-out bound as
/// `NETWORK_PRODUCTS_MAX` (lines × members ATS reads).
pub const FULFIL_LINES_MAX: usize = NETWORK_PRODUCTS_MAX;
/// Most plans one GetFulfilmentOptions answers (and the default of `max_plans`).
pub const FULFIL_PLANS_MAX: usize = 10;
/// Most locations in one split plan: a cart split over more parcels than this is not
/// offered. Bounds each greedy search to this many rounds.
pub const FULFIL_PLAN_LOCATIONS_MAX: usize = 8;
/// Most greedy searches for split plans, one from each of the best-ranked starting
/// locations. The search costs at most starts × plan locations × members × lines steps
/// (32 × 8 × 1,000 × 20 = 5 M in the worst case, 80,000 for 5 lines over 50 locations).
pub const FULFIL_SEARCH_STARTS_MAX: usize = 32;

// ----- relations, checked at compile time -----

const _: () = assert!(TTL_SECONDS_MIN >= 1);
const _: () = assert!(TTL_SECONDS_MIN <= TTL_SECONDS_DEFAULT);
const _: () = assert!(TTL_SECONDS_DEFAULT <= TTL_SECONDS_MAX);
// The grace is shorter than the shortest hold, and within domain.md's one second.
const _: () = assert!(EXPIRY_GRACE_MS < TTL_SECONDS_MIN as Millis * MS_PER_SECOND);
// A finished hold outlives the longest hold timer, so a retry of a long hold still answers.
const _: () = assert!(HOLD_RETENTION_MS_DEFAULT >= TTL_SECONDS_MAX as Millis * MS_PER_SECOND);
const _: () = assert!(0 < HOLD_QUANTITY_MAX && HOLD_QUANTITY_MAX <= STOCK_QUANTITY_MAX);
// Every line of the largest hold at its largest quantity still fits one position's counters.
const _: () = assert!(
    (HOLD_LINES_MAX as i64)
        .checked_mul(HOLD_QUANTITY_MAX)
        .is_some()
);
// A million stock changes of the largest size cannot overflow a position's counters.
const _: () = assert!(STOCK_QUANTITY_MAX.checked_mul(1_000_000).is_some());
const _: () =
    assert!(0 < STOCK_TIME_FUTURE_MS_MAX && STOCK_TIME_FUTURE_MS_MAX <= STOCK_TIME_PAST_MS_MAX);
const _: () = assert!(0 < REF_LEN_MAX && REF_LEN_MAX <= u8::MAX as usize);
const _: () = assert!(0 < READ_KEYS_MAX && 0 < STOCK_BATCH_MAX);
const _: () = assert!(NETWORK_LOCATIONS_MAX <= LOCATIONS_MAX && LOCATIONS_MAX <= STOCK_BATCH_MAX);
const _: () = assert!(FULFIL_LINES_MAX <= HOLD_LINES_MAX && 0 < FULFIL_PLANS_MAX);
const _: () = assert!(0 < LIST_HOLDS_PAGE_SIZE_DEFAULT);
const _: () = assert!(LIST_HOLDS_PAGE_SIZE_DEFAULT <= LIST_HOLDS_PAGE_SIZE_MAX);
// A page fits in the entries one scan may examine.
const _: () = assert!(LIST_HOLDS_PAGE_SIZE_MAX <= LIST_HOLDS_SCAN_MAX);
const _: () = assert!(1 < FULFIL_PLAN_LOCATIONS_MAX && 0 < FULFIL_SEARCH_STARTS_MAX);
