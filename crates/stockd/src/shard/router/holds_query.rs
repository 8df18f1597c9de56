//! ListHolds and GetOrder: holds and orders as queryable things, over the shards.
//!
//! ListHolds asks every shard for its page (each lists only the primary part of a hold,
//! so a hold appears once however many shards it spans), merges them in the domain
//! (`stockd_domain::query::merge_pages`) and reads the holds with parts on other shards
//! whole, as GetHold would. GetOrder contacts only the shards the directory places the
//! order on, like FulfilOrder and CancelOrder.

use futures::future::join_all;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::{Router, first_error};
use crate::limits::LIST_HOLDS_WHOLE_READS_IN_FLIGHT;
use crate::shard::directory::{Ns, Seen};
use crate::shard::handle::ShardError;
use stockd_domain::query::merge_pages;
use stockd_domain::request::check_ref_field;
use stockd_domain::{Error, HoldFilter, HoldScan, HoldView, ListedHold, Millis, OrderView};

/// One page of a ListHolds.
#[derive(Clone, Debug)]
pub struct HoldListing {
    /// The whole holds of the page, in listing order.
    pub holds: Vec<HoldView>,
    /// The token of the next page; empty when the listing is complete.
    pub next_page_token: String,
}

impl Router {
    /// A page of at most `page_size` holds matching `filter`, after `page_token`'s place.
    pub async fn list_holds(
        &self,
        now: Millis,
        filter: HoldFilter,
        page_size: usize,
        page_token: &str,
    ) -> Result<HoldListing, ShardError> {
        filter.validate()?;
        let after = filter.after(page_token)?;
        let scan = HoldScan {
            filter,
            after,
            limit: page_size,
        };
        let answers = join_all(self.shards.iter().map(|s| s.list_holds(now, scan.clone()))).await;
        let mut pages = Vec::with_capacity(answers.len());
        let mut error = None;
        for answer in answers {
            match answer {
                Ok(page) => pages.push(page),
                Err(e) => error = Some(first_error(error, e)),
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        let (listed, next) = merge_pages(pages, page_size);
        let holds: Vec<Option<HoldView>> = stream::iter(listed)
            .map(|listed| self.whole(now, &scan.filter, listed))
            .buffered(LIST_HOLDS_WHOLE_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(HoldListing {
            holds: holds.into_iter().flatten().collect(),
            next_page_token: next.map_or_else(String::new, |k| scan.filter.token(&k)),
        })
    }

    /// A listed hold, whole: its listed part if it holds every line of the hold, else
    /// the hold read from all its shards (`None` if it no longer matches the filter, or is
    /// gone: it changed since its shard listed it).
    async fn whole(
        &self,
        now: Millis,
        filter: &HoldFilter,
        listed: ListedHold,
    ) -> Result<Option<HoldView>, ShardError> {
        let part = listed.hold;
        if part.answered_lines == part.total_lines {
            return Ok(Some(part));
        }
        match self.hold(now, &part.hold_ref).await {
            Ok(hold) => Ok(filter.state_matches(hold.state).then_some(hold)),
            Err(ShardError::Domain(Error::HoldNotFound(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The whole order, from the shards the directory places it on. NOT_FOUND for an
    /// unknown order.
    pub async fn order(&self, now: Millis, order_ref: &str) -> Result<OrderView, ShardError> {
        check_ref_field("order_ref", order_ref)?;
        let mut locked = self.directory.lock(now, &[order_ref]).await;
        let known = locked.shards(Ns::Order, order_ref);
        let answers = join_all(
            known
                .iter()
                .map(|&s| self.shards[s as usize].order(order_ref.to_string())),
        )
        .await;
        let mut parts = Vec::with_capacity(known.len());
        let mut error = None;
        for (&shard, answer) in known.iter().zip(answers) {
            let seen = Seen::of(&answer, |part| part.as_ref().map(|_| now));
            locked.note(Ns::Order, order_ref, shard as usize, seen);
            match answer {
                Ok(part) => parts.extend(part),
                Err(e) => error = Some(first_error(error, e)),
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        OrderView::merge(parts).ok_or_else(|| Error::OrderNotFound(order_ref.to_string()).into())
    }
}
