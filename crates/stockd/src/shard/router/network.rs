//! The router's side of locations and networks: their configuration (sent to every shard
//! like channels), the aggregate availability of a product over a channel's network, and
//! fulfilment options.
//!
//! The router keeps a copy of the channels, locations and networks (`NetworkView`), read
//! from shard 0 on first use under the configuration lock and dropped by every
//! configuration change, so a network read costs no extra message. The ATS of the
//! (product, location) keys goes to the shards that own them, one message per involved
//! shard. A fulfilment's reserve goes through `Router::reserve`, plan after plan.

use std::sync::Arc;

use futures::future::join_all;

use super::{Router, shard_of};
use crate::shard::handle::ShardError;
use stockd_domain::fulfilment::{self, Candidate, FulfilAnswer, FulfilRequest, Plan};
use stockd_domain::network::{NetworkAts, sum_network, validate_network_read};
use stockd_domain::request::check_ref_field;
use stockd_domain::{
    ChannelConfig, ChannelNetwork, Command, Error, HoldState, LocationConfig, Millis, NetworkSnap,
    ReserveOutcome, ReserveResult,
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

    /// The ranked fulfilment plans of a cart (`stockd_domain::fulfilment`) and, with a
    /// hold ref, the best of them still available reserved as that hold.
    pub async fn fulfilment_options(
        &self,
        now: Millis,
        req: FulfilRequest,
    ) -> Result<FulfilAnswer, ShardError> {
        req.validate()?;
        let view = self.network().await?;
        let members = view.members(&req.channel_ref)?;
        let eligible = fulfilment::eligible(&view.snap, &members, &req.delivery)?;
        let keys = eligible
            .iter()
            .flat_map(|(l, _)| {
                let location = &l.location_ref;
                req.lines
                    .iter()
                    .map(|line| (line.product_ref.clone(), location.clone()))
            })
            .collect();
        let ats = self.ats_of(&req.channel_ref, keys).await?;
        let n = req.lines.len();
        let mut candidates: Vec<Candidate> = eligible
            .iter()
            .enumerate()
            .map(|(i, (l, transfer))| Candidate {
                location_ref: l.location_ref.clone(),
                priority: l.priority,
                transfer: *transfer,
                ats: ats[i * n..(i + 1) * n].to_vec(),
            })
            .collect();
        if let Some(hold_ref) = &req.hold_ref {
            self.count_own_hold(now, hold_ref, &req, &mut candidates)
                .await?;
        }
        let quantities: Vec<i64> = req.lines.iter().map(|l| l.quantity).collect();
        let plans = fulfilment::plans(
            &quantities,
            &candidates,
            req.allow_split,
            req.plans_wanted(),
        );
        let available = fulfilment::available(&quantities, &candidates);
        let mut answer = FulfilAnswer {
            plans,
            available,
            held: None,
        };
        if let Some(hold_ref) = &req.hold_ref {
            answer.held = self
                .reserve_plan(now, &req, hold_ref, &answer.plans)
                .await?;
            if answer.held.is_none() {
                answer.plans.clear();
            }
        }
        Ok(answer)
    }

    /// A cart update is checked against the ATS the channel would have without this hold
    /// (as Reserve does): the units an active hold of this channel keeps at a candidate
    /// count as available there.
    async fn count_own_hold(
        &self,
        now: Millis,
        hold_ref: &str,
        req: &FulfilRequest,
        candidates: &mut [Candidate],
    ) -> Result<(), ShardError> {
        let hold = match self.hold(now, hold_ref).await {
            Ok(h) => h,
            Err(ShardError::Domain(Error::HoldNotFound(_))) => return Ok(()),
            Err(e) => return Err(e),
        };
        if hold.state != HoldState::Active || hold.channel_ref != req.channel_ref {
            return Ok(());
        }
        for line in &hold.lines {
            let i = req
                .lines
                .iter()
                .position(|l| l.product_ref == line.product_ref);
            let c = candidates
                .iter_mut()
                .find(|c| c.location_ref == line.location_ref);
            if let (Some(i), Some(c)) = (i, c) {
                c.ats[i] += line.quantity;
            }
        }
        Ok(())
    }

    /// Reserves the first plan that is still available, through `reserve` (all-or-nothing,
    /// idempotent, a cart update if the hold exists): at most one attempt per plan.
    async fn reserve_plan(
        &self,
        now: Millis,
        req: &FulfilRequest,
        hold_ref: &str,
        plans: &[Plan],
    ) -> Result<Option<(usize, ReserveResult)>, ShardError> {
        for (i, plan) in plans.iter().enumerate() {
            let result = self
                .reserve(now, req.reserve_request(hold_ref, plan))
                .await?;
            if result.outcome == ReserveOutcome::Reserved {
                return Ok(Some((i, result)));
            }
        }
        Ok(None)
    }
}
