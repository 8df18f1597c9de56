//! Locations and channel networks in the engine, replicated to every shard like channels.
//!
//! A channel with a named network sells nothing outside it (its ATS there is 0, as at an
//! excluded location); a channel without one, or with `all_locations`, sells at every
//! position as before. The aggregate reads and fulfilment plans consider only configured
//! locations (`NetworkSnap::members`).

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};

use super::Engine;
use crate::error::Error;
use crate::limits::LOCATIONS_MAX;
use crate::network::{ChannelNetwork, LocationConfig, NetworkSnap};
use crate::refs::Sym;

/// The engine's locations and networks, with each named network's locations interned for
/// the ATS check.
#[derive(Clone, Debug, Default)]
pub(crate) struct NetworkState {
    locations: BTreeMap<String, LocationConfig>,
    networks: BTreeMap<String, ChannelNetwork>,
    /// Channel symbol → the locations of its named network.
    pub(crate) only: FxHashMap<Sym, FxHashSet<Sym>>,
}

impl Engine {
    /// Creates or replaces locations (validated whole first).
    pub fn upsert_locations(&mut self, locations: &[LocationConfig]) -> Result<(), Error> {
        LocationConfig::validate_all(locations)?;
        let new = locations
            .iter()
            .filter(|l| !self.network.locations.contains_key(&l.location_ref))
            .count();
        if self.network.locations.len() + new > LOCATIONS_MAX {
            return Err(Error::invalid(
                "locations",
                format!("an engine keeps at most {LOCATIONS_MAX} locations"),
            ));
        }
        for l in locations {
            self.network
                .locations
                .insert(l.location_ref.clone(), l.clone());
        }
        self.checkpoint.config = true;
        Ok(())
    }

    /// Removes a location, and removes it from every named network.
    pub fn delete_location(&mut self, location_ref: &str) -> Result<(), Error> {
        if self.network.locations.remove(location_ref).is_none() {
            return Err(Error::UnknownLocation(location_ref.to_string()));
        }
        let changed: Vec<ChannelNetwork> = self
            .network
            .networks
            .values()
            .filter(|n| n.locations.iter().any(|l| l == location_ref))
            .cloned()
            .collect();
        for mut n in changed {
            n.locations.retain(|l| l != location_ref);
            self.install_network(n);
        }
        self.checkpoint.config = true;
        Ok(())
    }

    /// Sets the network a channel sells from. The channel and every named location must
    /// be configured.
    pub fn set_network(&mut self, network: ChannelNetwork) -> Result<(), Error> {
        network.validate()?;
        self.channel_index(&network.channel_ref)?;
        if let Some(missing) = network
            .locations
            .iter()
            .find(|l| !self.network.locations.contains_key(*l))
        {
            return Err(Error::UnknownLocation(missing.clone()));
        }
        self.install_network(network);
        self.checkpoint.config = true;
        Ok(())
    }

    fn install_network(&mut self, network: ChannelNetwork) {
        let channel = self.interner.intern(&network.channel_ref);
        if network.all_locations {
            self.network.only.remove(&channel);
        } else {
            let set = network
                .locations
                .iter()
                .map(|l| self.interner.intern(l))
                .collect();
            self.network.only.insert(channel, set);
        }
        self.network
            .networks
            .insert(network.channel_ref.clone(), network);
    }

    /// Forgets a deleted channel's network (called by `delete_channel`).
    pub(super) fn drop_network(&mut self, channel_ref: &str) {
        if self.network.networks.remove(channel_ref).is_some()
            && let Some(sym) = self.interner.get(channel_ref)
        {
            self.network.only.remove(&sym);
        }
    }

    /// The locations and networks, by ref.
    pub fn network_snap(&self) -> NetworkSnap {
        NetworkSnap {
            locations: self.network.locations.values().cloned().collect(),
            networks: self.network.networks.values().cloned().collect(),
        }
    }

    /// Restores locations and networks (a checkpoint's or a snapshot's).
    pub(crate) fn restore_network(&mut self, snap: NetworkSnap) -> Result<(), String> {
        if !snap.locations.is_empty() {
            self.upsert_locations(&snap.locations)
                .map_err(|e| format!("snapshot locations: {e}"))?;
        }
        // Not `set_network`: a named network emptied by `delete_location` is kept as it is
        // (it sells nothing), though a request could not set it so.
        for n in snap.networks {
            let known = self.channel_index(&n.channel_ref).is_ok()
                && n.locations
                    .iter()
                    .all(|l| self.network.locations.contains_key(l));
            if !known {
                return Err(format!(
                    "snapshot network of {:?} names unknown refs",
                    n.channel_ref
                ));
            }
            self.install_network(n);
        }
        Ok(())
    }

    /// Whether channel `channel` may sell at `location` under its network.
    #[inline]
    pub(super) fn in_network(&self, channel: Sym, location: Sym) -> bool {
        self.network.only.is_empty()
            || self
                .network
                .only
                .get(&channel)
                .is_none_or(|set| set.contains(&location))
    }
}
