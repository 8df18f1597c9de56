//! Holds as queryable things: the ListHolds filter, its order, page tokens, and the merge
//! of the pages each shard answers.
//!
//! Holds are listed oldest first by one of their times (creation, or the end: the
//! confirmation, the release, or the deadline of an expired hold), then by hold ref:
//! a `HoldKey`. Both times of a hold never change once set and a hold enters an index
//! at its own time, so a key names a fixed place in the listing and a page token (the
//! last key a page covered, with a digest of the filter) resumes exactly after it: no
//! duplicate and no gap across pages, whatever changed in between.
//!
//! Each shard answers the listed holds of its own index after the token, at most a page,
//! and scans at most `LIST_HOLDS_SCAN_MAX` index entries (finishing the millisecond it
//! is in), saying up to which key it has answered everything (`HoldPage::complete_to`).
//! `merge_pages` keeps what is before the lowest of those keys, so a page may be short,
//! even empty, and still carry a token: the listing ends when the token is empty.

use super::Millis;
use super::error::Error;
use super::hold::{HoldState, HoldView};
use super::limits::{LIST_HOLDS_PAGE_SIZE_DEFAULT, LIST_HOLDS_PAGE_SIZE_MAX};
use super::refs::fnv1a;
use super::request::check_ref_field;

/// Which time of a hold a listing filters and orders by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldTime {
    /// When the hold was first placed.
    Created,
    /// When it ended: confirmed or released (that moment), or expired (its deadline).
    Ended,
}

/// What a ListHolds asks for, validated by `validate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldFilter {
    /// Only this channel's holds; `None`: every channel.
    pub channel_ref: Option<String>,
    /// Only holds in this state (as GetHold would show it); `None`: any.
    pub state: Option<HoldState>,
    pub time: HoldTime,
    /// At or after this time, if set.
    pub from: Option<Millis>,
    /// Before this time, if set.
    pub to: Option<Millis>,
}

/// A hold's place in a listing: its time, then its ref.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HoldKey {
    pub at: Millis,
    pub hold_ref: String,
}

/// What one shard is asked: the filter, where the previous page ended, how many holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldScan {
    pub filter: HoldFilter,
    pub after: Option<HoldKey>,
    pub limit: usize,
}

/// A listed hold: its key and its (primary) part, or the whole hold once merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedHold {
    pub key: HoldKey,
    pub hold: HoldView,
}

/// One shard's answer to a `HoldScan`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldPage {
    /// The matching holds after the scan's `after`, in key order, at most its limit.
    pub holds: Vec<ListedHold>,
    /// Every matching hold up to this key (inclusive) is in `holds`; `None`: every
    /// matching hold of the whole range is.
    pub complete_to: Option<HoldKey>,
}

impl HoldFilter {
    /// Checks the filter; the error names the request's field.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(c) = &self.channel_ref {
            check_ref_field("channel_ref", c)?;
        }
        if self.time == HoldTime::Ended && self.state == Some(HoldState::Active) {
            return Err(Error::invalid(
                "state",
                "ACTIVE holds have not ended: list them by their creation time",
            ));
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from >= to
        {
            return Err(Error::invalid("end_time", "must be after start_time"));
        }
        Ok(())
    }

    /// Whether `at` is within the filter's time range.
    pub fn in_range(&self, at: Millis) -> bool {
        self.from.is_none_or(|f| at >= f) && self.to.is_none_or(|t| at < t)
    }

    /// Whether a hold (as of the listing) passes the state filter.
    pub fn state_matches(&self, state: HoldState) -> bool {
        self.state.is_none_or(|s| s == state)
    }

    /// A digest of the filter, which a page token carries: a token is only valid for the
    /// filter that made it.
    fn digest(&self) -> u64 {
        let state = self.state.map_or("", HoldState::as_str);
        let time = match self.time {
            HoldTime::Created => "created",
            HoldTime::Ended => "ended",
        };
        let from = self.from.map_or(String::new(), |t| t.to_string());
        let to = self.to.map_or(String::new(), |t| t.to_string());
        let channel = self.channel_ref.as_deref().unwrap_or("");
        fnv1a(&[
            channel.as_bytes(),
            state.as_bytes(),
            time.as_bytes(),
            from.as_bytes(),
            to.as_bytes(),
        ])
    }

    /// The page token that resumes this listing after `key`: opaque to clients,
    /// `{filter digest}:{time}:{hold ref}` (a ref never holds a colon).
    pub fn token(&self, key: &HoldKey) -> String {
        format!("{:016x}:{}:{}", self.digest(), key.at, key.hold_ref)
    }

    /// The key a page token resumes after (`None` for an empty token, the first page).
    pub fn after(&self, token: &str) -> Result<Option<HoldKey>, Error> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| Error::invalid("page_token", why.to_string());
        let mut parts = token.splitn(3, ':');
        let (Some(digest), Some(at), Some(hold_ref)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("is not a token ListHolds returned"));
        };
        let digest = u64::from_str_radix(digest, 16)
            .map_err(|_| bad("is not a token ListHolds returned"))?;
        let at: Millis = at
            .parse()
            .map_err(|_| bad("is not a token ListHolds returned"))?;
        if crate::refs::check_ref(hold_ref).is_err() {
            return Err(bad("is not a token ListHolds returned"));
        }
        if digest != self.digest() {
            return Err(bad(
                "was made for other filters: repeat the first request's filters",
            ));
        }
        Ok(Some(HoldKey {
            at,
            hold_ref: hold_ref.to_string(),
        }))
    }
}

/// The page size a request asks for: 0 means the default, above the maximum is the
/// maximum, negative is refused.
pub fn page_size(requested: i32) -> Result<usize, Error> {
    match requested {
        n if n < 0 => Err(Error::invalid("page_size", "must not be negative")),
        0 => Ok(LIST_HOLDS_PAGE_SIZE_DEFAULT),
        n => Ok((n as usize).min(LIST_HOLDS_PAGE_SIZE_MAX)),
    }
}

/// Merges the shards' pages into one page of at most `limit` holds, in key order, and
/// the key the next page starts after (`None`: the listing is complete). Only what every
/// shard answered completely is kept, so nothing is skipped; a hold two shards list (a
/// crash left two primary parts) appears once.
pub fn merge_pages(pages: Vec<HoldPage>, limit: usize) -> (Vec<ListedHold>, Option<HoldKey>) {
    let frontier = pages.iter().filter_map(|p| p.complete_to.clone()).min();
    let mut all: Vec<ListedHold> = pages
        .into_iter()
        .flat_map(|p| p.holds)
        .filter(|h| frontier.as_ref().is_none_or(|f| h.key <= *f))
        .collect();
    all.sort_by(|a, b| a.key.cmp(&b.key));
    let mut seen = std::collections::HashSet::new();
    all.retain(|h| seen.insert(h.key.hold_ref.clone()));
    if all.len() >= limit {
        all.truncate(limit);
        let next = all.last().map(|h| h.key.clone());
        return (all, next);
    }
    (all, frontier)
}
