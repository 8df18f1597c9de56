//! Request builders (a channel, a stock count, a reserve of lines, position keys) and the
//! times they carry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use stockd::proto::inventory::v1 as pb;

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

pub fn ts(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn ts_millis(t: &Option<prost_types::Timestamp>) -> Option<i64> {
    t.as_ref()
        .map(|t| t.seconds * 1000 + (t.nanos as i64) / 1_000_000)
}

/// A strictly increasing count time (`as_of`) for the whole test binary: counts sent
/// later supersede counts sent earlier, and no two counts share a time.
pub fn next_as_of() -> i64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = now_millis() as u64;
    let mut last = LAST.load(Ordering::SeqCst);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return next as i64,
            Err(seen) => last = seen,
        }
    }
}

/// A channel with every setting at its default.
pub fn channel(channel_ref: &str) -> pb::Channel {
    pb::Channel {
        channel_ref: channel_ref.into(),
        ..Default::default()
    }
}

/// A channel with an allocation and a buffer, both in basis points.
pub fn channel_bps(channel_ref: &str, allocation_bps: i32, buffer_bps: i32) -> pb::Channel {
    pb::Channel {
        channel_ref: channel_ref.into(),
        allocation_bps: Some(allocation_bps),
        buffer_bps,
        ..Default::default()
    }
}

/// A warehouse count taken at `as_of` (milliseconds since 1970).
pub fn count(product: &str, location: &str, quantity: i64, as_of: i64) -> pb::StockCount {
    pb::StockCount {
        as_of: Some(ts(as_of)),
        ..count_now(product, location, quantity)
    }
}

/// A warehouse count without a time: the server stamps it.
pub fn count_now(product: &str, location: &str, quantity: i64) -> pb::StockCount {
    pb::StockCount {
        product_ref: product.into(),
        location_ref: location.into(),
        quantity,
        as_of: None,
    }
}

/// An all-or-nothing reserve of (product, location, quantity) lines; a `ttl_seconds` of
/// 0 asks for the server's default.
pub fn reserve_request<P: AsRef<str>, L: AsRef<str>>(
    hold_ref: &str,
    channel_ref: &str,
    lines: &[(P, L, i64)],
    ttl_seconds: i64,
) -> pb::ReserveRequest {
    pb::ReserveRequest {
        hold_ref: hold_ref.into(),
        channel_ref: channel_ref.into(),
        lines: lines
            .iter()
            .map(|(p, l, q)| pb::ReserveLine {
                product_ref: p.as_ref().to_string(),
                location_ref: l.as_ref().to_string(),
                quantity: *q,
                category: String::new(),
            })
            .collect(),
        ttl_seconds,
        allow_partial: false,
    }
}

/// The (product, location) keys of `products` at one location.
pub fn keys_at(products: &[String], location: &str) -> Vec<(String, String)> {
    products
        .iter()
        .map(|p| (p.clone(), location.to_string()))
        .collect()
}

pub fn position_keys<P: AsRef<str>, L: AsRef<str>>(keys: &[(P, L)]) -> Vec<pb::PositionKey> {
    keys.iter()
        .map(|(p, l)| pb::PositionKey {
            product_ref: p.as_ref().to_string(),
            location_ref: l.as_ref().to_string(),
        })
        .collect()
}

/// Order lines to fulfil; none means everything still reserved.
pub fn order_lines(lines: &[(String, String, i64)]) -> Vec<pb::OrderLine> {
    lines
        .iter()
        .map(|(p, l, q)| pb::OrderLine {
            product_ref: p.clone(),
            location_ref: l.clone(),
            quantity: *q,
        })
        .collect()
}
