//! Requests the engine accepts, and the validation that guards them.
//!
//! Validation lives here, beside the types, so the transport and the engine agree on
//! every limit. Each limit is a named constant; each failure names the field the way
//! the request spells it (`lines[2].quantity`).

use serde::{Deserialize, Serialize};

use super::Millis;
use super::error::Error;
use super::refs::check_ref;

/// Most lines in one hold: bounds a reserve's work on a shard and its fan-out.
pub const HOLD_LINES_MAX: usize = 100;
/// Largest quantity of one hold line.
pub const HOLD_QUANTITY_MAX: i64 = 1_000_000;
/// Largest counted quantity or adjustment: far above any warehouse, far below overflow.
pub const STOCK_QUANTITY_MAX: i64 = 1_000_000_000_000;
/// Shortest hold timer a request may ask for.
pub const TTL_SECONDS_MIN: u32 = 1;
/// Longest hold timer a request may ask for: one day.
pub const TTL_SECONDS_MAX: u32 = 86_400;
/// The global default hold timer: 15 minutes.
pub const TTL_SECONDS_DEFAULT: u32 = 900;

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

/// A warehouse count: `physical = quantity` as of `as_of`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockCount {
    pub product_ref: String,
    pub location_ref: String,
    pub quantity: i64,
    pub as_of: Millis,
}

impl StockCount {
    pub fn validate(&self, field: &str) -> Result<(), Error> {
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
    pub fn validate(&self, field: &str) -> Result<(), Error> {
        check_ref_field(&format!("{field}.adjustment_ref"), &self.adjustment_ref)?;
        check_ref_field(&format!("{field}.product_ref"), &self.product_ref)?;
        check_ref_field(&format!("{field}.location_ref"), &self.location_ref)?;
        if self.quantity == 0 || self.quantity.abs() > STOCK_QUANTITY_MAX {
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
