//! The router's side of locations and networks: their configuration (sent to every shard
//! like channels), the aggregate availability of a product over a channel's network, and
//! fulfilment options.
//!
//! The router keeps a copy of the channels, locations and networks (`NetworkView`), read
//! from shard 0 on first use under the configuration lock and dropped by every
//! configuration change, so a network read costs no extra message. The ATS of the
//! (product, location) keys goes to the shards that own them, one message per involved
//! shard.

use std::sync::Arc;

use futures::future::join_all;

use super::{Router, shard_of};
use crate::shard::handle::ShardError;
use stockd_domain::network::{NetworkAts, sum_network, validate_network_read};
use stockd_domain::request::check_ref_field;
use stockd_domain::{
    ChannelConfig, ChannelNetwork, Command, Error, LocationConfig, Millis, NetworkSnap,
};

/// The configuration a network read needs: channels, locations and networks.
#[derive(Debug)]
pub struct NetworkView {
    pub channels: Vec<ChannelConfig>,
    pub snap: NetworkSnap,
}

impl NetworkView {
    /// The configured locations `channel_ref` sells from, by ref; NOT_FOUND for an
    /// unknown channel.
    pub fn members(&self, channel_ref: &str) -> Result<Vec<&LocationConfig>, Error> {
        let channel = self
            .channels
            .iter()
            .find(|c| c.channel_ref == channel_ref)
            .ok_or_else(|| Error::UnknownChannel(channel_ref.to_string()))?;
        Ok(self.snap.members(channel_ref, &channel.excluded_locations))
    }
}

impl Router {
    /// The channels, locations and networks, from the cache or shard 0.
    pub async fn network(&self) -> Result<Arc<NetworkView>, ShardError> {
        if let Some(view) = self.network.lock().expect("network cache lock").clone() {
            return Ok(view);
        }
        // Under the configuration lock, so no change lands between the read and the store.
        let _guard = self.config.lock().await;
        if let Some(view) = self.network.lock().expect("network cache lock").clone() {
            return Ok(view);
        }
        let view = Arc::new(NetworkView {
            channels: self.shards[0].channels().await?,
            snap: self.shards[0].network().await?,
        });
        *self.network.lock().expect("network cache lock") = Some(view.clone());
        Ok(view)
    }

    pub async fn upsert_locations(
        &self,
        now: Millis,
        locations: Vec<LocationConfig>,
    ) -> Result<(), ShardError> {
        LocationConfig::validate_all(&locations)?;
        self.configure(now, Command::UpsertLocations(locations))
            .await
    }

    pub async fn delete_location(&self, now: Millis, location_ref: &str) -> Result<(), ShardError> {
        check_ref_field("location_ref", location_ref)?;
        let view = self.network().await?;
        if !view
            .snap
            .locations
            .iter()
            .any(|l| l.location_ref == location_ref)
        {
            return Err(Error::UnknownLocation(location_ref.to_string()).into());
        }
        self.configure(now, Command::DeleteLocation(location_ref.to_string()))
            .await
    }

    /// Sets a channel's network; the channel and its named locations must exist.
    pub async fn set_network(
        &self,
        now: Millis,
        network: ChannelNetwork,
    ) -> Result<(), ShardError> {
        network.validate()?;
        let view = self.network().await?;
        view.members(&network.channel_ref)?;
        let known = |l: &String| view.snap.locations.iter().any(|c| &c.location_ref == l);
        if let Some(missing) = network.locations.iter().find(|l| !known(l)) {
            return Err(Error::UnknownLocation(missing.clone()).into());
        }
        self.configure(now, Command::SetNetwork(network)).await
    }

    /// For each product, the channel's ATS summed over its network (and each location's
    /// part with `by_location`): one message per shard owning a (product, member) key.
    pub async fn network_availability(
        &self,
        channel_ref: &str,
        products: Vec<String>,
        by_location: bool,
    ) -> Result<Vec<NetworkAts>, ShardError> {
        validate_network_read(channel_ref, &products)?;
        let view = self.network().await?;
        let members = view.members(channel_ref)?;
        let keys = products
            .iter()
            .flat_map(|p| members.iter().map(|l| (p.clone(), l.location_ref.clone())))
            .collect();
        let ats = self.ats_of(channel_ref, keys).await?;
        Ok(sum_network(products, &members, &ats, by_location))
    }

    /// The ATS of `channel_ref` at each (product, location) key, in key order: one message
    /// per shard that owns a key. The caller validated the refs and bounded the keys.
    pub(crate) async fn ats_of(
        &self,
        channel_ref: &str,
        keys: Vec<(String, String)>,
    ) -> Result<Vec<i64>, ShardError> {
        let n = self.shards.len();
        let total = keys.len();
        let mut by_shard: Vec<Vec<(usize, String, String)>> = vec![Vec::new(); n];
        for (i, (p, l)) in keys.into_iter().enumerate() {
            by_shard[shard_of(&p, &l, n)].push((i, p, l));
        }
        let calls = by_shard
            .into_iter()
            .enumerate()
            .filter(|(_, k)| !k.is_empty())
            .map(|(s, k)| self.shards[s].availability(channel_ref.to_string(), k));
        let mut out = vec![0; total];
        for answer in join_all(calls).await {
            for (i, q) in answer? {
                out[i] = q;
            }
        }
        Ok(out)
    }
}
