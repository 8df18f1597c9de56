//! Requests the engine accepts, and the validation that guards them.
//!
//! Validation lives here, beside the types, and runs once, at the boundary (the router
//! calls it before anything is sent to a shard); the engine's operations rely on
//! validated input and only `debug_assert!` it. Each limit is a named constant of
//! [`crate::limits`]; each failure names the field the way the request spells it
//! (`lines[2].quantity`).

use serde::{Deserialize, Serialize};

use super::Millis;
use super::error::Error;
use super::refs::check_ref;

pub use super::limits::{
    HOLD_LINES_MAX, HOLD_QUANTITY_MAX, READ_KEYS_MAX, STOCK_BATCH_MAX, STOCK_QUANTITY_MAX,
    STOCK_TIME_FUTURE_MS_MAX, STOCK_TIME_PAST_MS_MAX, TTL_SECONDS_DEFAULT, TTL_SECONDS_MAX,
    TTL_SECONDS_MIN,
};

/// Checks a ref field.
pub fn check_ref_field(field: &str, value: &str) -> Result<(), Error> {
    check_ref(value).map_err(|reason| Error::invalid(field, reason))
}

/// One line of a reserve request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveLine {
    pub product_ref: String,
    pub location_ref: String,
    pub quantity: i64,
    /// The category, when the catalogue does not know the product.
    pub category: Option<String>,
}

/// A reserve: create a hold, re-send it (idempotent) or update its cart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveRequest {
    pub hold_ref: String,
    pub channel_ref: String,
    pub lines: Vec<ReserveLine>,
    /// The request's own timer, bounded by the engine's settings.
    pub ttl_seconds: Option<u32>,
    pub allow_partial: bool,
}

impl ReserveRequest {
    pub fn validate(&self) -> Result<(), Error> {
        check_ref_field("hold_ref", &self.hold_ref)?;
        check_ref_field("channel_ref", &self.channel_ref)?;
        if self.lines.is_empty() || self.lines.len() > HOLD_LINES_MAX {
            return Err(Error::invalid(
                "lines",
                format!(
                    "must hold 1 to {HOLD_LINES_MAX} lines (got {})",
                    self.lines.len()
                ),
            ));
        }
        for (i, line) in self.lines.iter().enumerate() {
            check_ref_field(&format!("lines[{i}].product_ref"), &line.product_ref)?;
            check_ref_field(&format!("lines[{i}].location_ref"), &line.location_ref)?;
            if let Some(category) = &line.category {
                check_ref_field(&format!("lines[{i}].category"), category)?;
            }
            if !(1..=HOLD_QUANTITY_MAX).contains(&line.quantity) {
                return Err(Error::invalid(
                    format!("lines[{i}].quantity"),
                    format!(
                        "must be between 1 and {HOLD_QUANTITY_MAX} (got {})",
                        line.quantity
                    ),
                ));
            }
            if self.lines[..i].iter().any(|other| {
                other.product_ref == line.product_ref && other.location_ref == line.location_ref
            }) {
                return Err(Error::invalid(
                    format!("lines[{i}]"),
                    format!(
                        "repeats product {:?} at location {:?}: one line per position",
                        line.product_ref, line.location_ref
                    ),
                ));
            }
        }
        if let Some(ttl) = self.ttl_seconds {
            check_ttl_request(ttl)?;
        }
        Ok(())
    }
}

/// Checks a request's ttl against the hard limits.
pub fn check_ttl_request(ttl: u32) -> Result<(), Error> {
    if !(TTL_SECONDS_MIN..=TTL_SECONDS_MAX).contains(&ttl) {
        return Err(Error::invalid(
            "ttl_seconds",
            format!("must be between {TTL_SECONDS_MIN} and {TTL_SECONDS_MAX} (got {ttl})"),
        ));
    }
    Ok(())
}

/// Checks that a batch holds 1 to `STOCK_BATCH_MAX` items.
pub fn check_batch(field: &str, len: usize) -> Result<(), Error> {
    if len == 0 || len > STOCK_BATCH_MAX {
        return Err(Error::invalid(
            field,
            format!("must hold 1 to {STOCK_BATCH_MAX} items (got {len})"),
        ));
    }
    Ok(())
}

/// Checks a stock event's time against the window around `now` (see `limits`).
fn check_stock_time(field: &str, at: Millis, now: Millis) -> Result<(), Error> {
    let earliest = now.saturating_sub(STOCK_TIME_PAST_MS_MAX);
    let latest = now.saturating_add(STOCK_TIME_FUTURE_MS_MAX);
    if !(earliest..=latest).contains(&at) {
        return Err(Error::invalid(
            field,
            format!(
                "must be at most {} days before and {} day after now (got {at} ms, now {now} ms)",
                STOCK_TIME_PAST_MS_MAX / super::limits::MS_PER_DAY,
                STOCK_TIME_FUTURE_MS_MAX / super::limits::MS_PER_DAY,
            ),
        ));
    }
    Ok(())
}

/// Checks an availability read: the channel, 1 to `READ_KEYS_MAX` keys, each key's refs.
pub fn validate_read(channel_ref: &str, keys: &[(String, String)]) -> Result<(), Error> {
    check_ref_field("channel_ref", channel_ref)?;
    if keys.is_empty() || keys.len() > READ_KEYS_MAX {
        return Err(Error::invalid(
            "keys",
            format!("must hold 1 to {READ_KEYS_MAX} keys (got {})", keys.len()),
        ));
    }
    for (i, (p, l)) in keys.iter().enumerate() {
        check_ref_field(&format!("keys[{i}].product_ref"), p)?;
        check_ref_field(&format!("keys[{i}].location_ref"), l)?;
    }
    Ok(())
}

/// A warehouse count: `physical = quantity` as of `as_of`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockCount {
    pub product_ref: String,
    pub location_ref: String,
    pub quantity: i64,
    pub as_of: Millis,
}

impl StockCount {
    /// Checks the count as item `field` of a request received at `now`.
    pub fn validate(&self, field: &str, now: Millis) -> Result<(), Error> {
        check_ref_field(&format!("{field}.product_ref"), &self.product_ref)?;
        check_ref_field(&format!("{field}.location_ref"), &self.location_ref)?;
        if !(0..=STOCK_QUANTITY_MAX).contains(&self.quantity) {
            return Err(Error::invalid(
                format!("{field}.quantity"),
                format!(
                    "must be between 0 and {STOCK_QUANTITY_MAX} (got {})",
                    self.quantity
                ),
            ));
        }
        check_stock_time(&format!("{field}.as_of"), self.as_of, now)
    }

    /// Checks a SetStock batch (`counts[i]`), whole, before any count applies.
    pub fn validate_batch(counts: &[StockCount], now: Millis) -> Result<(), Error> {
        check_batch("counts", counts.len())?;
        for (i, c) in counts.iter().enumerate() {
            c.validate(&format!("counts[{i}]"), now)?;
        }
        Ok(())
    }
}

/// The relative stock changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdjustmentKind {
    Delta,
    Correction,
    Returned,
}

/// A relative change, idempotent on its ref.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    pub adjustment_ref: String,
    pub product_ref: String,
    pub location_ref: String,
    pub kind: AdjustmentKind,
    pub quantity: i64,
    /// When the change happened; a count as of a later time supersedes it.
    pub occurred_at: Option<Millis>,
}

impl Adjustment {
    /// Checks the adjustment as item `field` of a request received at `now`.
    pub fn validate(&self, field: &str, now: Millis) -> Result<(), Error> {
        check_ref_field(&format!("{field}.adjustment_ref"), &self.adjustment_ref)?;
        check_ref_field(&format!("{field}.product_ref"), &self.product_ref)?;
        check_ref_field(&format!("{field}.location_ref"), &self.location_ref)?;
        // `unsigned_abs`: `i64::MIN.abs()` overflows (and wraps to a negative in release).
        if self.quantity == 0 || self.quantity.unsigned_abs() > STOCK_QUANTITY_MAX.unsigned_abs() {
            return Err(Error::invalid(
                format!("{field}.quantity"),
                format!(
                    "must be non-zero and between -{STOCK_QUANTITY_MAX} and {STOCK_QUANTITY_MAX} (got {})",
                    self.quantity
                ),
            ));
        }
        if self.kind == AdjustmentKind::Returned && self.quantity < 0 {
            return Err(Error::invalid(
                format!("{field}.quantity"),
                "a return puts stock back and must be positive",
            ));
        }
        if let Some(at) = self.occurred_at {
            check_stock_time(&format!("{field}.occurred_at"), at, now)?;
        }
        Ok(())
    }

    /// Checks an AdjustStock batch (`adjustments[i]`), whole, before any adjustment applies.
    pub fn validate_batch(adjustments: &[Adjustment], now: Millis) -> Result<(), Error> {
        check_batch("adjustments", adjustments.len())?;
        for (i, a) in adjustments.iter().enumerate() {
            a.validate(&format!("adjustments[{i}]"), now)?;
        }
        Ok(())
    }
}

/// A line of a fulfilment, with its index in the request for error messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub index: u32,
    pub product_ref: String,
    pub location_ref: String,
    pub quantity: i64,
}

impl OrderLine {
    /// Checks one line's refs and quantity.
    pub fn validate(&self) -> Result<(), Error> {
        let i = self.index;
        check_ref_field(&format!("lines[{i}].product_ref"), &self.product_ref)?;
        check_ref_field(&format!("lines[{i}].location_ref"), &self.location_ref)?;
        if !(1..=HOLD_QUANTITY_MAX).contains(&self.quantity) {
            return Err(Error::invalid(
                format!("lines[{i}].quantity"),
                format!(
                    "must be between 1 and {HOLD_QUANTITY_MAX} (got {})",
                    self.quantity
                ),
            ));
        }
        Ok(())
    }

    /// Checks a fulfilment: the order ref, each line, at most `HOLD_LINES_MAX` lines, and one
    /// line per position (a repeated position would ship twice). Empty lines mean
    /// "everything still reserved".
    pub fn validate_fulfil(order_ref: &str, lines: &[OrderLine]) -> Result<(), Error> {
        check_ref_field("order_ref", order_ref)?;
        // The count first: the repeat check below is quadratic in it.
        if lines.len() > HOLD_LINES_MAX {
            return Err(Error::invalid(
                "lines",
                format!("must hold at most {HOLD_LINES_MAX} lines"),
            ));
        }
        for (n, line) in lines.iter().enumerate() {
            line.validate()?;
            if lines[..n].iter().any(|other| {
                other.product_ref == line.product_ref && other.location_ref == line.location_ref
            }) {
                return Err(Error::invalid(
                    format!("lines[{}]", line.index),
                    format!(
                        "repeats product {:?} at location {:?}: one line per position",
                        line.product_ref, line.location_ref
                    ),
                ));
            }
        }
        Ok(())
    }
}
