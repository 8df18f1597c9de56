//! Channels and the catalogue rules that shape what each channel may sell.
//!
//! A channel's numbers (allocation share, percentage buffer, absolute buffer) can be
//! overridden for a product at a location, a product, or a category. The most specific
//! rule wins and rules never stack: a field the winning rule leaves unset falls back to
//! the channel default, not to a less specific rule.

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::refs::Sym;

/// 100% in basis points.
pub const BPS_FULL: u32 = 10_000;

/// Whether an Inventory Position re-applies its allocation split by itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RebalanceMode {
    /// Rebalance after every count and adjustment.
    #[default]
    Automatic,
    /// Rebalance only when an operator asks.
    Manual,
}

/// An override of a channel's numbers. Which of product, location and category are set
/// decides its specificity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelRule {
    pub product_ref: Option<String>,
    pub location_ref: Option<String>,
    pub category: Option<String>,
    pub allocation_bps: Option<u32>,
    pub buffer_bps: Option<u32>,
    pub buffer_units: Option<i64>,
}

/// A channel as an operator configures it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    pub channel_ref: String,
    pub allocation_bps: u32,
    pub buffer_bps: u32,
    pub buffer_units: i64,
    pub excluded_locations: Vec<String>,
    pub hold_ttl_seconds: Option<u32>,
    pub rules: Vec<ChannelRule>,
    pub rebalance_mode: RebalanceMode,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            channel_ref: String::new(),
            allocation_bps: BPS_FULL,
            buffer_bps: 0,
            buffer_units: 0,
            excluded_locations: Vec::new(),
            hold_ttl_seconds: None,
            rules: Vec::new(),
            rebalance_mode: RebalanceMode::Automatic,
        }
    }
}

/// A product's catalogue entry: its category and its own hold timer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProductConfig {
    pub product_ref: String,
    pub category: Option<String>,
    pub hold_ttl_seconds: Option<u32>,
}

/// A category's hold timer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CategoryConfig {
    pub category: String,
    pub hold_ttl_seconds: Option<u32>,
}

/// The three numbers that decide a channel's ATS at a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Numbers {
    pub allocation_bps: u32,
    pub buffer_bps: u32,
    pub buffer_units: i64,
}

/// A field-named validation failure of a configuration.
pub type ConfigError = (String, String);

impl ChannelConfig {
    /// Checks the channel of an UpsertChannel request: the error names `channel.<field>`.
    pub fn validate_request(&self) -> Result<(), super::error::Error> {
        self.validate().map_err(|(field, reason)| {
            super::error::Error::invalid(format!("channel.{field}"), reason)
        })
    }

    /// Checks every field; the error names the field and the rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let refs = super::refs::check_ref;
        refs(&self.channel_ref).map_err(|e| ("channel_ref".into(), e))?;
        check_bps("allocation_bps", self.allocation_bps)?;
        check_bps("buffer_bps", self.buffer_bps)?;
        check_units("buffer_units", self.buffer_units)?;
        for (i, location) in self.excluded_locations.iter().enumerate() {
            refs(location).map_err(|e| (format!("excluded_locations[{i}]"), e))?;
        }
        if let Some(ttl) = self.hold_ttl_seconds {
            check_ttl("hold_ttl_seconds", ttl)?;
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let field = |name: &str| format!("rules[{i}].{name}");
            if let Some(p) = &rule.product_ref {
                refs(p).map_err(|e| (field("product_ref"), e))?;
            }
            if let Some(l) = &rule.location_ref {
                refs(l).map_err(|e| (field("location_ref"), e))?;
                if rule.product_ref.is_none() {
                    return Err((
                        field("location_ref"),
                        "a location rule needs a product_ref (rules are product+location, product or category)".into(),
                    ));
                }
            }
            if let Some(c) = &rule.category {
                refs(c).map_err(|e| (field("category"), e))?;
                if rule.product_ref.is_some() {
                    return Err((
                        field("category"),
                        "a rule matches a product or a category, not both".into(),
                    ));
                }
            }
            if rule.product_ref.is_none() && rule.category.is_none() {
                return Err((
                    field("product_ref"),
                    "a rule needs a product_ref or a category".into(),
                ));
            }
            if let Some(v) = rule.allocation_bps {
                check_bps(&field("allocation_bps"), v)?;
            }
            if let Some(v) = rule.buffer_bps {
                check_bps(&field("buffer_bps"), v)?;
            }
            if let Some(v) = rule.buffer_units {
                check_units(&field("buffer_units"), v)?;
            }
        }
        Ok(())
    }
}

impl ProductConfig {
    /// Checks every field; the error names the field (`products[i].…`) and the rule.
    pub fn validate_all(products: &[ProductConfig]) -> Result<(), super::error::Error> {
        use super::request::check_ref_field;
        for (i, p) in products.iter().enumerate() {
            check_ref_field(&format!("products[{i}].product_ref"), &p.product_ref)?;
            if let Some(c) = &p.category {
                check_ref_field(&format!("products[{i}].category"), c)?;
            }
            if let Some(ttl) = p.hold_ttl_seconds {
                check_ttl(&format!("products[{i}].hold_ttl_seconds"), ttl)
                    .map_err(|(f, r)| super::error::Error::invalid(f, r))?;
            }
        }
        Ok(())
    }
}

impl CategoryConfig {
    /// Checks every field; the error names the field (`categories[i].…`) and the rule.
    pub fn validate_all(categories: &[CategoryConfig]) -> Result<(), super::error::Error> {
        for (i, c) in categories.iter().enumerate() {
            super::request::check_ref_field(&format!("categories[{i}].category"), &c.category)?;
            if let Some(ttl) = c.hold_ttl_seconds {
                check_ttl(&format!("categories[{i}].hold_ttl_seconds"), ttl)
                    .map_err(|(f, r)| super::error::Error::invalid(f, r))?;
            }
        }
        Ok(())
    }
}

pub use super::limits::{BUFFER_UNITS_MAX, TTL_SECONDS_MAX, TTL_SECONDS_MIN};

fn check_bps(field: &str, value: u32) -> Result<(), ConfigError> {
    if value > BPS_FULL {
        return Err((
            field.into(),
            format!("must be between 0 and {BPS_FULL} basis points (got {value})"),
        ));
    }
    Ok(())
}

fn check_units(field: &str, value: i64) -> Result<(), ConfigError> {
    if !(0..=BUFFER_UNITS_MAX).contains(&value) {
        return Err((
            field.into(),
            format!("must be between 0 and {BUFFER_UNITS_MAX} (got {value})"),
        ));
    }
    Ok(())
}

pub(crate) fn check_ttl(field: &str, value: u32) -> Result<(), ConfigError> {
    if !(TTL_SECONDS_MIN..=TTL_SECONDS_MAX).contains(&value) {
        return Err((
            field.into(),
            format!(
                "must be between {TTL_SECONDS_MIN} and {TTL_SECONDS_MAX} seconds (got {value})"
            ),
        ));
    }
    Ok(())
}

/// A channel compiled for lookups: refs interned, rules indexed by what they match.
#[derive(Clone, Debug)]
pub(crate) struct Channel {
    pub config: ChannelConfig,
    pub sym: Sym,
    pub defaults: Numbers,
    pub excluded: FxHashSet<Sym>,
    pub by_product_location: FxHashMap<(Sym, Sym), Numbers>,
    pub by_product: FxHashMap<Sym, Numbers>,
    pub by_category: FxHashMap<Sym, Numbers>,
}

impl Channel {
    pub fn compile(config: ChannelConfig, intern: &mut impl FnMut(&str) -> Sym) -> Self {
        let defaults = Numbers {
            allocation_bps: config.allocation_bps,
            buffer_bps: config.buffer_bps,
            buffer_units: config.buffer_units,
        };
        let numbers = |rule: &ChannelRule| Numbers {
            allocation_bps: rule.allocation_bps.unwrap_or(defaults.allocation_bps),
            buffer_bps: rule.buffer_bps.unwrap_or(defaults.buffer_bps),
            buffer_units: rule.buffer_units.unwrap_or(defaults.buffer_units),
        };
        let mut channel = Channel {
            sym: intern(&config.channel_ref),
            defaults,
            excluded: config
                .excluded_locations
                .iter()
                .map(|l| intern(l))
                .collect(),
            by_product_location: FxHashMap::default(),
            by_product: FxHashMap::default(),
            by_category: FxHashMap::default(),
            config: ChannelConfig::default(),
        };
        for rule in &config.rules {
            match (&rule.product_ref, &rule.location_ref, &rule.category) {
                (Some(p), Some(l), _) => {
                    channel
                        .by_product_location
                        .insert((intern(p), intern(l)), numbers(rule));
                }
                (Some(p), None, _) => {
                    channel.by_product.insert(intern(p), numbers(rule));
                }
                (None, _, Some(c)) => {
                    channel.by_category.insert(intern(c), numbers(rule));
                }
                (None, _, None) => {}
            }
        }
        channel.config = config;
        channel
    }

    /// The numbers that apply at (product, location), most specific rule first.
    pub fn numbers(&self, product: Sym, location: Sym, category: Option<Sym>) -> Numbers {
        if let Some(n) = self.by_product_location.get(&(product, location)) {
            return *n;
        }
        if let Some(n) = self.by_product.get(&product) {
            return *n;
        }
        if let Some(n) = category.and_then(|c| self.by_category.get(&c)) {
            return *n;
        }
        self.defaults
    }
}

/// ATS from domain.md, in integer arithmetic:
/// `X = min(entitlement − used, on_hand)` (or `on_hand` at 100%), then the buffers.
pub fn available_to_sell(numbers: Numbers, allocation_base: i64, used: i64, on_hand: i64) -> i64 {
    let x = if numbers.allocation_bps >= BPS_FULL {
        on_hand
    } else {
        let entitlement = entitlement(allocation_base, numbers.allocation_bps);
        (entitlement - used).min(on_hand)
    };
    if x <= 0 {
        return 0;
    }
    let x = i128::from(x);
    let full = i128::from(BPS_FULL);
    let buffer = (x * i128::from(numbers.buffer_bps) + full - 1) / full;
    let ats = x - buffer - i128::from(numbers.buffer_units);
    i64::try_from(ats.max(0)).expect("ATS is at most on_hand")
}

/// `floor(P0 × allocation_bps / 10000)`, flooring towards minus infinity for a negative base.
pub fn entitlement(allocation_base: i64, allocation_bps: u32) -> i64 {
    let product = i128::from(allocation_base) * i128::from(allocation_bps);
    i64::try_from(product.div_euclid(i128::from(BPS_FULL))).expect("entitlement fits in i64")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(allocation_bps: u32, buffer_bps: u32, buffer_units: i64) -> Numbers {
        Numbers {
            allocation_bps,
            buffer_bps,
            buffer_units,
        }
    }

    #[test]
    fn percentage_buffer_rounds_up() {
        assert_eq!(available_to_sell(n(10_000, 1_000, 0), 45, 0, 45), 40);
        // The float trap: 30 × 0.1 is 3.0000000000000004 in binary and would round to 4.
        assert_eq!(available_to_sell(n(10_000, 1_000, 0), 30, 0, 30), 27);
        assert_eq!(available_to_sell(n(10_000, 0, 3), 30, 0, 30), 27);
        assert_eq!(available_to_sell(n(10_000, 1_000, 0), 0, 0, -5), 0);
    }

    #[test]
    fn allocation_caps_by_entitlement_less_used() {
        assert_eq!(available_to_sell(n(7_000, 0, 0), 100, 0, 100), 70);
        assert_eq!(available_to_sell(n(3_000, 0, 0), 100, 30, 70), 0);
        assert_eq!(entitlement(-7, 5_000), -4);
    }
}
