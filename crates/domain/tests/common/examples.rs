//! Builders the example-style tests share: an engine with one uncapped channel, and a
//! hold request whose lines all sit at DC1.

use stockd_domain::{ChannelConfig, Engine, ReserveLine, ReserveRequest, Settings};

/// An engine with channel `WEB` (no allocation cap) and nothing else.
pub fn web_engine() -> Engine {
    let mut e = Engine::new(Settings::default());
    e.upsert_channel(ChannelConfig {
        channel_ref: "WEB".into(),
        allocation_bps: 10_000,
        ..Default::default()
    })
    .unwrap();
    e
}

/// A hold of `lines` (product, quantity), all at location DC1, all-or-nothing.
pub fn dc1_hold(
    hold: &str,
    channel: &str,
    lines: &[(&str, i64)],
    ttl_seconds: Option<u32>,
) -> ReserveRequest {
    ReserveRequest {
        hold_ref: hold.into(),
        channel_ref: channel.into(),
        lines: lines
            .iter()
            .map(|(p, q)| ReserveLine {
                product_ref: p.to_string(),
                location_ref: "DC1".into(),
                quantity: *q,
                category: None,
            })
            .collect(),
        ttl_seconds,
        allow_partial: false,
    }
}
