//! Locations and the networks channels sell from: what a storefront needs to know to ask
//! "where can this cart be served from?" instead of reading every position itself.
//!
//! A location (warehouse, store…) says whether it ships home deliveries, whether it serves
//! click & collect, and its priority (lower first). A channel sells from a network: a named
//! list of locations, or all of them, less the channel's `excluded_locations`. The
//! configuration is replicated to every shard like channels; the fulfilment search over it
//! is in `crate::fulfilment`.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::limits::{LOCATIONS_MAX, NETWORK_LOCATIONS_MAX, NETWORK_PRODUCTS_MAX};
use crate::refs::check_ref;
use crate::request::check_ref_field;

/// What kind of site a location is (informative: the flags decide what it may do).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocationKind {
    /// A warehouse or distribution centre.
    #[default]
    Warehouse,
    /// A shop.
    Store,
    /// Anything else (a dark store, a supplier's drop-ship site…).
    Other,
}

/// A location as an operator configures it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocationConfig {
    pub location_ref: String,
    pub kind: LocationKind,
    /// May send parcels to a customer's home (HOME_DELIVERY).
    pub ships_home_delivery: bool,
    /// A customer may collect an order here (CLICK_AND_COLLECT).
    pub serves_click_collect: bool,
    /// Lower is preferred when plans otherwise tie.
    pub priority: u32,
}

impl Default for LocationConfig {
    fn default() -> Self {
        LocationConfig {
            location_ref: String::new(),
            kind: LocationKind::Warehouse,
            ships_home_delivery: true,
            serves_click_collect: false,
            priority: 0,
        }
    }
}

/// The locations a channel sells from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelNetwork {
    pub channel_ref: String,
    /// The network's name (several channels may share one name; it is a label).
    pub network_ref: String,
    /// Every configured location (then `locations` is empty).
    pub all_locations: bool,
    /// The named list, when not `all_locations`.
    pub locations: Vec<String>,
}

/// Locations and networks: small, written whole when any of it changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSnap {
    pub locations: Vec<LocationConfig>,
    pub networks: Vec<ChannelNetwork>,
}

impl LocationConfig {
    /// Checks one location; the error names `{prefix}.{field}`.
    pub fn validate(&self, prefix: &str) -> Result<(), Error> {
        check_ref(&self.location_ref)
            .map_err(|e| Error::invalid(format!("{prefix}.location_ref"), e))
    }

    /// Checks an UpsertLocations batch: 1 to `LOCATIONS_MAX` locations, no ref twice.
    pub fn validate_all(locations: &[LocationConfig]) -> Result<(), Error> {
        if locations.is_empty() || locations.len() > LOCATIONS_MAX {
            return Err(Error::invalid(
                "locations",
                format!(
                    "must hold 1 to {LOCATIONS_MAX} locations (got {})",
                    locations.len()
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, l) in locations.iter().enumerate() {
            l.validate(&format!("locations[{i}]"))?;
            if !seen.insert(l.location_ref.as_str()) {
                return Err(Error::invalid(
                    format!("locations[{i}].location_ref"),
                    format!("repeats {:?}", l.location_ref),
                ));
            }
        }
        Ok(())
    }
}

impl ChannelNetwork {
    /// Checks the shape (refs, list size, no repeats); whether the channel and the
    /// locations exist is the engine's check.
    pub fn validate(&self) -> Result<(), Error> {
        let field = |f: &str| format!("network.{f}");
        check_ref(&self.channel_ref).map_err(|e| Error::invalid(field("channel_ref"), e))?;
        check_ref(&self.network_ref).map_err(|e| Error::invalid(field("network_ref"), e))?;
        if self.all_locations && !self.locations.is_empty() {
            return Err(Error::invalid(
                field("locations"),
                "must be empty when all_locations is set",
            ));
        }
        if !self.all_locations
            && (self.locations.is_empty() || self.locations.len() > NETWORK_LOCATIONS_MAX)
        {
            return Err(Error::invalid(
                field("locations"),
                format!(
                    "must hold 1 to {NETWORK_LOCATIONS_MAX} locations unless all_locations is set (got {})",
                    self.locations.len()
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, l) in self.locations.iter().enumerate() {
            check_ref(l).map_err(|e| Error::invalid(field(&format!("locations[{i}]")), e))?;
            if !seen.insert(l.as_str()) {
                return Err(Error::invalid(
                    field(&format!("locations[{i}]")),
                    format!("repeats {l:?}"),
                ));
            }
        }
        Ok(())
    }
}

impl NetworkSnap {
    /// The configured locations a channel sells from, by ref: its network (all locations
    /// when it has none) less `excluded`.
    pub fn members<'a>(
        &'a self,
        channel_ref: &str,
        excluded: &[String],
    ) -> Vec<&'a LocationConfig> {
        let network = self.networks.iter().find(|n| n.channel_ref == channel_ref);
        let mut out: Vec<&LocationConfig> = self
            .locations
            .iter()
            .filter(|l| match network {
                Some(n) if !n.all_locations => n.locations.contains(&l.location_ref),
                _ => true,
            })
            .filter(|l| !excluded.contains(&l.location_ref))
            .collect();
        out.sort_by(|a, b| a.location_ref.cmp(&b.location_ref));
        out
    }
}

/// A product's ATS over a channel's network: the sum, and each member's part when asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkAts {
    pub product_ref: String,
    pub quantity: i64,
    /// (location ref, ATS) per network location, by ref; empty unless asked.
    pub locations: Vec<(String, i64)>,
}

/// Checks an aggregate availability read: 1 to `NETWORK_PRODUCTS_MAX` products, each once.
pub fn validate_network_read(channel_ref: &str, products: &[String]) -> Result<(), Error> {
    check_ref_field("channel_ref", channel_ref)?;
    if products.is_empty() || products.len() > NETWORK_PRODUCTS_MAX {
        return Err(Error::invalid(
            "product_refs",
            format!(
                "must hold 1 to {NETWORK_PRODUCTS_MAX} products (got {})",
                products.len()
            ),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in products.iter().enumerate() {
        let field = format!("product_refs[{i}]");
        check_ref_field(&field, p)?;
        if !seen.insert(p.as_str()) {
            return Err(Error::invalid(field, format!("repeats {p:?}")));
        }
    }
    Ok(())
}

/// Sums the ATS read at every (product, member) key, product-major, into one answer per
/// product.
pub fn sum_network(
    products: Vec<String>,
    members: &[&LocationConfig],
    ats: &[i64],
    by_location: bool,
) -> Vec<NetworkAts> {
    debug_assert_eq!(ats.len(), products.len() * members.len());
    products
        .into_iter()
        .enumerate()
        .map(|(i, product_ref)| {
            let row = &ats[i * members.len()..(i + 1) * members.len()];
            NetworkAts {
                product_ref,
                quantity: row.iter().sum(),
                locations: if by_location {
                    members
                        .iter()
                        .zip(row)
                        .map(|(l, q)| (l.location_ref.clone(), *q))
                        .collect()
                } else {
                    Vec::new()
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(r: &str) -> LocationConfig {
        LocationConfig {
            location_ref: r.into(),
            ..Default::default()
        }
    }

    #[test]
    fn members_are_the_network_less_the_exclusions() {
        let snap = NetworkSnap {
            locations: vec![loc("C"), loc("A"), loc("B")],
            networks: vec![ChannelNetwork {
                channel_ref: "WEB".into(),
                network_ref: "online".into(),
                all_locations: false,
                locations: vec!["A".into(), "C".into()],
            }],
        };
        let refs = |v: Vec<&LocationConfig>| -> Vec<String> {
            v.into_iter().map(|l| l.location_ref.clone()).collect()
        };
        assert_eq!(refs(snap.members("WEB", &[])), ["A", "C"]);
        assert_eq!(refs(snap.members("WEB", &["C".into()])), ["A"]);
        assert_eq!(refs(snap.members("POS", &["B".into()])), ["A", "C"]);
    }

    #[test]
    fn a_network_names_its_bad_field() {
        let mut n = ChannelNetwork {
            channel_ref: "WEB".into(),
            network_ref: "online".into(),
            all_locations: true,
            locations: vec!["A".into()],
        };
        let field = |n: &ChannelNetwork| match n.validate() {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(&n), "network.locations");
        n.all_locations = false;
        n.locations.push("A".into());
        assert_eq!(field(&n), "network.locations[1]");
    }
}
