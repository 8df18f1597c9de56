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

use super::Router;
use crate::shard::handle::ShardError;
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
}
