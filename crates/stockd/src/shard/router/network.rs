//! The router's side of locations and networks: their configuration (sent to every shard
//! like channels), the aggregate availability of a product over a channel's network, and
//! fulfilment options.
//!
//! The router keeps a copy of the channels, locations and networks (`NetworkView`), read
//! from shard 0 on first use under the configuration lock and dropped by every
//! configuration change, so a network read costs no extra message. The ATS of the
//! (product, location) pairs is one message per shard that may own one, carrying the
//! product and location lists once (shared), and each shard answers for the positions it
//! keeps (`ats_grid`): a 5-line cart over 50 locations is 250 pairs, and owned key strings
//! for each, then hashing each to its shard, were most of the read's cost. A fulfilment's
//! reserve goes through `Router::reserve`, plan after plan.

use std::sync::{Arc, Mutex};

use futures::future::join_all;
use rustc_hash::FxHashMap;

use super::{Router, shard_of};
use crate::shard::handle::ShardError;
use stockd_domain::fulfilment::{self, Candidate, Delivery, FulfilAnswer, FulfilRequest, Plan};
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
    /// Each channel's members, worked out on first use in this view: otherwise every
    /// network read filters and sorts the locations and copies their refs. At most one
    /// entry per configured channel; the view is dropped by every configuration change.
    members: Mutex<FxHashMap<String, Arc<Members>>>,
}

/// A channel's members in a view, by ref.
#[derive(Debug)]
pub struct Members {
    /// Their places in `snap.locations`.
    at: Vec<usize>,
    /// Their refs (shared with the shards a network read goes to).
    pub refs: Arc<[String]>,
    /// The refs of those that ship home deliveries: `Delivery::HomeDelivery`'s candidates.
    pub shipping: Arc<[String]>,
}

impl NetworkView {
    pub fn new(channels: Vec<ChannelConfig>, snap: NetworkSnap) -> Self {
        NetworkView {
            channels,
            snap,
            members: Mutex::new(FxHashMap::default()),
        }
    }

    /// The configured locations `channel_ref` sells from, by ref; NOT_FOUND for an
    /// unknown channel.
    pub fn members(&self, channel_ref: &str) -> Result<Vec<&LocationConfig>, Error> {
        let members = self.channel_members(channel_ref)?;
        Ok(members
            .at
            .iter()
            .map(|&i| &self.snap.locations[i])
            .collect())
    }

    /// `members`, with their refs, from this view's cache.
    pub fn channel_members(&self, channel_ref: &str) -> Result<Arc<Members>, Error> {
        let cache = || self.members.lock().expect("members cache lock");
        if let Some(members) = cache().get(channel_ref) {
            return Ok(members.clone());
        }
        let channel = self
            .channels
            .iter()
            .find(|c| c.channel_ref == channel_ref)
            .ok_or_else(|| Error::UnknownChannel(channel_ref.to_string()))?;
        let list = self.snap.members(channel_ref, &channel.excluded_locations);
        let locations = &self.snap.locations;
        let place = |l: &LocationConfig| locations.iter().position(|x| std::ptr::eq(x, l));
        let members = Arc::new(Members {
            at: list.iter().filter_map(|l| place(l)).collect(),
            refs: list.iter().map(|l| l.location_ref.clone()).collect(),
            shipping: (list.iter().filter(|l| l.ships_home_delivery))
                .map(|l| l.location_ref.clone())
                .collect(),
        });
        cache().insert(channel_ref.to_string(), members.clone());
        Ok(members)
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
        let view = Arc::new(NetworkView::new(
            self.shards[0].channels().await?,
            self.shards[0].network().await?,
        ));
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
        let refs = view.channel_members(channel_ref)?.refs.clone();
        let ats = self
            .ats_grid(channel_ref, products.clone().into(), (refs, true))
            .await?;
        Ok(sum_network(products, &members, &ats, by_location))
    }

    /// The ATS of `channel_ref` at every (product, location), product-major (the ATS of
    /// `products[p]` at `locations[l]` at `p * locations.len() + l`): one message per
    /// shard that may own a pair, carrying both lists once; each shard answers for the
    /// positions it keeps. A grid of at least `GRID_PAIRS_PER_SHARD_ASK_ALL` pairs per
    /// shard goes to every shard without hashing a pair (nearly every shard owns one); a
    /// smaller one only to the shards of its pairs. The caller validated the refs and
    /// bounded the lists; `locations` are distinct, and `kept` when the list is one the
    /// router sends again unchanged (`Msg::AvailabilityGrid`).
    pub(crate) async fn ats_grid(
        &self,
        channel_ref: &str,
        products: Arc<[String]>,
        (locations, kept): (Arc<[String]>, bool),
    ) -> Result<Vec<i64>, ShardError> {
        let n = self.shards.len();
        let cells = products.len() * locations.len();
        let every = cells >= n * GRID_PAIRS_PER_SHARD_ASK_ALL;
        let mut asked = vec![every; n];
        if !every {
            for product in products.iter() {
                for location in locations.iter() {
                    asked[shard_of(product, location, n)] = true;
                }
            }
        }
        let calls = (self.shards.iter().zip(&asked))
            .filter(|(_, asked)| **asked)
            .map(|(shard, _)| {
                shard.availability_grid(
                    channel_ref.to_string(),
                    products.clone(),
                    locations.clone(),
                    kept,
                )
            });
        let mut out = vec![0; cells];
        for answer in join_all(calls).await {
            for (at, q) in answer? {
                out[at] = q;
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
        let products: Arc<[String]> = req.lines.iter().map(|l| l.product_ref.clone()).collect();
        // Home delivery's list is the view's, sent again by every such read (kept); a
        // click & collect list is made for this read.
        let refs: (Arc<[String]>, bool) = match req.delivery {
            Delivery::HomeDelivery => {
                let shipping = view.channel_members(&req.channel_ref)?.shipping.clone();
                (shipping, true)
            }
            Delivery::ClickAndCollect { .. } => {
                let list = eligible.iter().map(|(l, _)| l.location_ref.clone());
                (list.collect(), false)
            }
        };
        debug_assert_eq!(refs.0.len(), eligible.len());
        let ats = self.ats_grid(&req.channel_ref, products, refs).await?;
        // By location, then line: each candidate's row is a slice of it.
        let (width, lines) = (eligible.len(), req.lines.len());
        let by_location: Vec<i64> = (0..width * lines)
            .map(|x| ats[(x % lines) * width + x / lines])
            .collect();
        let mut candidates: Vec<Candidate> = (eligible.iter())
            .zip(by_location.chunks_exact(lines.max(1)))
            .map(|((l, transfer), row)| Candidate {
                location_ref: l.location_ref.as_str().into(),
                priority: l.priority,
                transfer: *transfer,
                ats: row.into(),
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
        candidates: &mut [Candidate<'_>],
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
                .find(|c| *c.location_ref == *line.location_ref);
            if let (Some(i), Some(c)) = (i, c) {
                c.ats.to_mut()[i] += line.quantity;
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

/// A network read of at least this many (product, location) pairs per shard asks every
/// shard: with pairs spread by hash, at 4 a shard owns none of them with a chance of about
/// e⁻⁴ (2%), and hashing every pair to find out would cost more than that shard's answer.
const GRID_PAIRS_PER_SHARD_ASK_ALL: usize = 4;
