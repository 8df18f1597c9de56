//! Channel reports, computed as the events are stored: per-minute buckets of each channel's
//! figures and per-hour rows of each (channel, product, location), kept for the event log's
//! retention, so a report of a day reads ~1,440 small buckets instead of millions of events.
//!
//! Why buckets and not a scan: a day of a busy shop is millions of events; a report must
//! answer in milliseconds. Every figure is a sum (counts, units) or a fixed-bucket
//! histogram (time to confirmation), so buckets merge by adding, in any order: the writer
//! adds each durable group (`writer`), and the start-up rebuild adds the retained events
//! from before the start beside it (`rebuild`).
//!
//! Why rebuilt and not persisted: the log is the truth and is already on disk; a second
//! durable copy would need its own crash consistency with it. The rebuild reads the
//! retained log once, in the background, at the log's read speed; until it finished,
//! reports answer UNAVAILABLE.
//!
//! Rows are bounded (`REPORT_ROWS_MAX`, `REPORT_REFS_MAX`): beyond, an hour's new rows fold
//! into one "other" row and the report says its products are not complete.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use rustc_hash::FxHashMap;
use stockd_domain::{EventKind, IqKind};

use super::EventsError;
use super::read::Filter;
use super::record::EventRecord;
use super::shared::Shared;
use crate::limits::{
    REPORT_BUCKET_MS, REPORT_MINUTES_MAX, REPORT_REBUILD_PAGE, REPORT_REFS_MAX,
    REPORT_ROW_BUCKET_MS, REPORT_ROWS_MAX,
};

/// Upper bounds (ms) of the time-to-confirmation histogram's buckets; one more bucket
/// holds the longer ones.
pub const CONFIRM_BOUNDS_MS: [i64; 15] = [
    1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000,
    3_600_000, 7_200_000, 21_600_000, 86_400_000,
];
const HISTOGRAM: usize = CONFIRM_BOUNDS_MS.len() + 1;

/// The figures of one bucket, or of a report (their sum).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub holds_created: u64,
    pub holds_updated: u64,
    pub holds_confirmed: u64,
    pub holds_released: u64,
    pub holds_expired: u64,
    pub units_held: i64,
    pub units_confirmed: i64,
    pub units_sold: i64,
    pub units_returned: i64,
    pub units_cancelled: i64,
    pub rejections: u64,
    pub units_requested: i64,
    pub units_available: i64,
    /// Holds confirmed per `CONFIRM_BOUNDS_MS` bucket.
    pub confirm: [u32; HISTOGRAM],
    /// The longest time to confirmation (what the last bucket reports).
    pub confirm_max_ms: i64,
}

impl Stats {
    pub fn merge(&mut self, o: &Stats) {
        self.holds_created += o.holds_created;
        self.holds_updated += o.holds_updated;
        self.holds_confirmed += o.holds_confirmed;
        self.holds_released += o.holds_released;
        self.holds_expired += o.holds_expired;
        self.units_held += o.units_held;
        self.units_confirmed += o.units_confirmed;
        self.units_sold += o.units_sold;
        self.units_returned += o.units_returned;
        self.units_cancelled += o.units_cancelled;
        self.rejections += o.rejections;
        self.units_requested += o.units_requested;
        self.units_available += o.units_available;
        for (a, b) in self.confirm.iter_mut().zip(o.confirm) {
            *a = a.saturating_add(b);
        }
        self.confirm_max_ms = self.confirm_max_ms.max(o.confirm_max_ms);
    }

    pub fn note_confirm(&mut self, ms: i64) {
        let ms = ms.max(0);
        let b = CONFIRM_BOUNDS_MS.partition_point(|bound| *bound < ms);
        self.confirm[b] = self.confirm[b].saturating_add(1);
        self.confirm_max_ms = self.confirm_max_ms.max(ms);
    }

    /// The `pct` percentile (nearest rank) of the time to confirmation: the upper bound of
    /// the bucket it falls in (the longest time, for the last). `None` without confirms.
    pub fn confirm_percentile_ms(&self, pct: u64) -> Option<i64> {
        let n: u64 = self.confirm.iter().map(|c| u64::from(*c)).sum();
        if n == 0 {
            return None;
        }
        let rank = (pct * n).div_ceil(100).max(1);
        let mut seen = 0;
        for (b, c) in self.confirm.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some(
                    CONFIRM_BOUNDS_MS
                        .get(b)
                        .copied()
                        .unwrap_or(self.confirm_max_ms),
                );
            }
        }
        Some(self.confirm_max_ms)
    }

    /// holds_confirmed ÷ holds_created in basis points, rounded down.
    pub fn conversion_bps(&self) -> u32 {
        match self.holds_created {
            0 => 0,
            n => (self.holds_confirmed.saturating_mul(10_000) / n).min(u64::from(u32::MAX)) as u32,
        }
    }

    /// Only what counts whatever the channel: returns (they name none).
    fn returns_only(&self) -> Stats {
        Stats {
            units_returned: self.units_returned,
            ..Stats::default()
        }
    }
}

/// An interned ref of the report.
type Ref = u32;
/// No channel (a return).
const NONE: Ref = u32::MAX;
/// Folded away: beyond `REPORT_REFS_MAX` or `REPORT_ROWS_MAX`.
const OTHER: Ref = u32::MAX - 1;

#[derive(Default)]
struct Refs {
    ids: FxHashMap<Box<str>, Ref>,
    names: Vec<Box<str>>,
}

impl Refs {
    fn intern(&mut self, s: &str) -> Ref {
        if let Some(r) = self.ids.get(s) {
            return *r;
        }
        if self.names.len() >= REPORT_REFS_MAX {
            return OTHER;
        }
        let r = self.names.len() as Ref;
        self.names.push(s.into());
        self.ids.insert(s.into(), r);
        r
    }

    fn get(&self, s: &str) -> Option<Ref> {
        self.ids.get(s).copied()
    }
}

/// One hour's rows.
#[derive(Default)]
struct Hour {
    rows: FxHashMap<(Ref, Ref, Ref), Stats>,
    /// Some rows of this hour went to "other".
    folded: bool,
}

/// What a report asks.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub channel: String,
    pub from: i64,
    pub to: i64,
    pub product: Option<String>,
    pub location: Option<String>,
    pub top: usize,
}

/// A product's rejected demand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejected {
    pub product: String,
    pub rejections: u64,
    pub units_requested: i64,
    pub units_available: i64,
}

/// A report's answer.
#[derive(Clone, Debug, Default)]
pub struct Answer {
    /// The span covered: the request's, rounded out to whole buckets.
    pub from: i64,
    pub to: i64,
    pub figures: Stats,
    pub top: Vec<Rejected>,
    pub complete: bool,
    /// The oldest time a bucket covers.
    pub covered_from: i64,
}

/// The buckets.
pub struct Report {
    refs: Refs,
    /// Minute → each channel's figures (`NONE`: returns).
    minutes: BTreeMap<i64, Vec<(Ref, Stats)>>,
    hours: BTreeMap<i64, Hour>,
    rows: usize,
    retention_ms: i64,
    newest_at: i64,
}

fn is_hold(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::HoldCreated
            | EventKind::HoldUpdated
            | EventKind::HoldConfirmed
            | EventKind::HoldReleased
            | EventKind::HoldExpired
    )
}

/// Counts one hold event (of a hold, or at one of its positions) into `s`.
fn count_hold(s: &mut Stats, kind: EventKind) {
    match kind {
        EventKind::HoldCreated => s.holds_created += 1,
        EventKind::HoldUpdated => s.holds_updated += 1,
        EventKind::HoldConfirmed => s.holds_confirmed += 1,
        EventKind::HoldReleased => s.holds_released += 1,
        EventKind::HoldExpired => s.holds_expired += 1,
        _ => {}
    }
}

/// The channel-level figures of one event.
fn event_stats(kind: EventKind, r: &EventRecord) -> Stats {
    let mut s = Stats::default();
    if is_hold(kind) && r.primary {
        count_hold(&mut s, kind);
    }
    match kind {
        EventKind::HoldCreated => s.units_held = r.quantity,
        EventKind::HoldConfirmed => {
            s.units_confirmed = r.quantity;
            if let (true, Some(created)) = (r.primary, r.hold_created_at) {
                s.note_confirm(r.at - created);
            }
        }
        EventKind::OrderFulfilled => s.units_sold = r.quantity,
        EventKind::OrderCancelled => s.units_cancelled = r.quantity,
        EventKind::ReserveRejected => {
            s.rejections = 1;
            s.units_requested = r.quantity;
            s.units_available = r.available;
        }
        EventKind::StockAdjusted => {
            s.units_returned = r
                .iqs
                .iter()
                .filter(|iq| iq.active && iq.kind() == Some(IqKind::Returned))
                .map(|iq| iq.quantity)
                .sum();
        }
        _ => {}
    }
    s
}

/// A hold event's figures at each position it changed: the hold counts once there, its
/// units are the IQs' there.
fn hold_rows(kind: EventKind, r: &EventRecord) -> Vec<((String, String), Stats)> {
    let mut rows: Vec<((String, String), Stats)> = Vec::new();
    for iq in &r.iqs {
        let (Some(p), Some(l)) = iq.position(r) else {
            continue;
        };
        let i = match rows.iter().position(|((rp, rl), _)| rp == p && rl == l) {
            Some(i) => i,
            None => {
                let mut s = Stats::default();
                count_hold(&mut s, kind);
                if let (EventKind::HoldConfirmed, Some(c)) = (kind, r.hold_created_at) {
                    s.note_confirm(r.at - c);
                }
                rows.push(((p.to_owned(), l.to_owned()), s));
                rows.len() - 1
            }
        };
        let s = &mut rows[i].1;
        match (kind, iq.kind(), iq.active) {
            (EventKind::HoldCreated, Some(IqKind::SoftReserve), true) => {
                s.units_held -= iq.quantity
            }
            (EventKind::HoldConfirmed, Some(IqKind::Reserved), true) => {
                s.units_confirmed -= iq.quantity
            }
            _ => {}
        }
    }
    rows
}

impl Report {
    pub fn new(retention_secs: u64) -> Report {
        Report {
            refs: Refs::default(),
            minutes: BTreeMap::new(),
            hours: BTreeMap::new(),
            rows: 0,
            retention_ms: i64::try_from(retention_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            newest_at: i64::MIN,
        }
    }

    fn cutoff(&self) -> i64 {
        self.newest_at.saturating_sub(self.retention_ms)
    }

    /// Adds one stored event to its buckets.
    pub fn add(&mut self, r: &EventRecord) {
        let Some(kind) = r.kind() else { return };
        self.newest_at = self.newest_at.max(r.at);
        if r.at < self.cutoff() {
            return;
        }
        let whole = event_stats(kind, r);
        if whole == Stats::default() && !is_hold(kind) {
            return;
        }
        let channel = match (&r.channel, kind) {
            (_, EventKind::StockAdjusted) | (None, _) => NONE,
            (Some(c), _) => self.refs.intern(c),
        };
        let minute = r.at.div_euclid(REPORT_BUCKET_MS);
        let slot = self.minutes.entry(minute).or_default();
        match slot.iter_mut().find(|(c, _)| *c == channel) {
            Some((_, s)) => s.merge(&whole),
            None => slot.push((channel, whole)),
        }
        let hour = r.at.div_euclid(REPORT_ROW_BUCKET_MS);
        if is_hold(kind) {
            for ((p, l), s) in hold_rows(kind, r) {
                self.row(hour, channel, &p, &l).merge(&s);
            }
        } else if let (Some(p), Some(l)) = (&r.product, &r.location) {
            self.row(hour, channel, p, l).merge(&whole);
        }
        self.prune();
    }

    /// The row of (channel, product, location) in `hour`, or the hour's "other" row.
    fn row(&mut self, hour: i64, channel: Ref, product: &str, location: &str) -> &mut Stats {
        let (p, l) = (self.refs.intern(product), self.refs.intern(location));
        let full = self.rows >= REPORT_ROWS_MAX;
        let h = self.hours.entry(hour).or_default();
        let mut key = (channel, p, l);
        if !h.rows.contains_key(&key) && (full || p == OTHER || l == OTHER) {
            key = (channel, OTHER, OTHER);
            h.folded = true;
        }
        if !h.rows.contains_key(&key) {
            self.rows += 1;
        }
        h.rows.entry(key).or_default()
    }

    /// Drops the buckets older than the retention (or beyond the bucket bound).
    fn prune(&mut self) {
        let cutoff = self.cutoff();
        while let Some((&m, _)) = self.minutes.first_key_value() {
            if (m + 1) * REPORT_BUCKET_MS > cutoff && self.minutes.len() <= REPORT_MINUTES_MAX {
                break;
            }
            self.minutes.pop_first();
        }
        let hours_max =
            REPORT_MINUTES_MAX * REPORT_BUCKET_MS as usize / REPORT_ROW_BUCKET_MS as usize;
        while let Some((&h, _)) = self.hours.first_key_value() {
            if (h + 1) * REPORT_ROW_BUCKET_MS > cutoff && self.hours.len() <= hours_max {
                break;
            }
            if let Some((_, hour)) = self.hours.pop_first() {
                self.rows -= hour.rows.len();
            }
        }
    }

    /// Answers a report.
    pub fn query(&self, q: &Query) -> Answer {
        let channel = self.refs.get(&q.channel);
        let want =
            |name: &Option<String>| name.as_ref().map(|n| self.refs.get(n).unwrap_or(OTHER - 1));
        let (product, location) = (want(&q.product), want(&q.location));
        let filtered = product.is_some() || location.is_some();
        let covered_from = self
            .minutes
            .first_key_value()
            .map_or(self.newest_at.max(0), |(m, _)| m * REPORT_BUCKET_MS);
        let (hour_from, hour_to) = (
            q.from.div_euclid(REPORT_ROW_BUCKET_MS),
            ceil_div(q.to, REPORT_ROW_BUCKET_MS),
        );
        let mut answer = Answer {
            complete: true,
            covered_from,
            ..Answer::default()
        };
        if filtered {
            (answer.from, answer.to) = (
                hour_from * REPORT_ROW_BUCKET_MS,
                hour_to * REPORT_ROW_BUCKET_MS,
            );
        } else {
            let (from, to) = (
                q.from.div_euclid(REPORT_BUCKET_MS),
                ceil_div(q.to, REPORT_BUCKET_MS),
            );
            (answer.from, answer.to) = (from * REPORT_BUCKET_MS, to * REPORT_BUCKET_MS);
            for (_, slot) in self.minutes.range(from..to.max(from)) {
                for (c, s) in slot {
                    if Some(*c) == channel {
                        answer.figures.merge(s);
                    } else if *c == NONE {
                        answer.figures.merge(&s.returns_only());
                    }
                }
            }
        }
        let mut ranked: FxHashMap<Ref, Rejected> = FxHashMap::default();
        for (_, hour) in self.hours.range(hour_from..hour_to.max(hour_from)) {
            answer.complete &= !hour.folded;
            for (&(c, p, l), s) in &hour.rows {
                if product.is_some_and(|x| x != p) || location.is_some_and(|x| x != l) {
                    continue;
                }
                let mine = Some(c) == channel;
                if filtered && mine {
                    answer.figures.merge(s);
                } else if filtered && c == NONE {
                    answer.figures.merge(&s.returns_only());
                }
                if mine && s.rejections > 0 && p != OTHER {
                    let e = ranked.entry(p).or_default();
                    e.rejections += s.rejections;
                    e.units_requested += s.units_requested;
                    e.units_available += s.units_available;
                }
            }
        }
        answer.top = self.top(ranked, q.top);
        answer
    }

    /// The `n` products with the most units requested by rejected reserves.
    fn top(&self, ranked: FxHashMap<Ref, Rejected>, n: usize) -> Vec<Rejected> {
        let mut all: Vec<Rejected> = ranked
            .into_iter()
            .map(|(p, mut r)| {
                r.product = self.refs.names[p as usize].to_string();
                r
            })
            .collect();
        all.sort_by(|a, b| {
            (b.units_requested, b.rejections)
                .cmp(&(a.units_requested, a.rejections))
                .then_with(|| a.product.cmp(&b.product))
        });
        all.truncate(n);
        all
    }
}

fn ceil_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b) + i64::from(a.rem_euclid(b) != 0)
}

/// The report as the writer feeds it and readers query it.
pub struct Reports {
    pub(super) report: RwLock<Report>,
    /// Set once the start-up rebuild added every event from before the start.
    ready: AtomicBool,
}

impl Reports {
    pub fn new(retention_secs: u64) -> Reports {
        Reports {
            report: RwLock::new(Report::new(retention_secs)),
            ready: AtomicBool::new(false),
        }
    }

    /// Answers a report, or `Unavailable` while the rebuild runs.
    pub fn query(&self, q: &Query) -> Result<Answer, EventsError> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(EventsError::Unavailable(
                "the channel report is being rebuilt from the event log; retry shortly".into(),
            ));
        }
        Ok(self.report.read().expect("report lock").query(q))
    }
}

/// Adds the retained events up to `up_to` (those stored before the start; the writer adds
/// the later ones), a page at a time, then marks the report ready. Runs on its own thread.
pub fn rebuild(shared: Arc<Shared>, up_to: u64) {
    let mut from = shared.oldest();
    let all = Filter::default();
    while from <= up_to {
        match shared.read(from, REPORT_REBUILD_PAGE, &all) {
            Ok(page) => {
                let mut report = shared.reports.report.write().expect("report lock");
                for event in page.events.iter().filter(|e| e.seq <= up_to) {
                    report.add(&event.record);
                }
                if page.next == from {
                    break;
                }
                from = page.next;
            }
            // Retention moved past `from` meanwhile: go on from what is left.
            Err(EventsError::Expired { oldest, .. }) if oldest > from => from = oldest,
            Err(e) => {
                tracing::error!(error = %e, "the channel report's rebuild could not read the event log; reports lack the events before the start");
                break;
            }
        }
    }
    shared.reports.ready.store(true, Ordering::Release);
    tracing::info!(up_to, "channel report rebuilt from the event log");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::events::record::kind_code;

    fn event(kind: EventKind, at: i64, product: &str, quantity: i64) -> EventRecord {
        EventRecord {
            at,
            kind: kind_code(kind),
            channel: Some("WEB".into()),
            product: Some(product.into()),
            location: Some("L".into()),
            quantity,
            available: 1,
            primary: true,
            ..EventRecord::default()
        }
    }

    #[test]
    fn percentiles_are_bucket_bounds_by_nearest_rank() {
        let mut s = Stats::default();
        for ms in [500, 1_500, 1_600, 40_000] {
            s.note_confirm(ms);
        }
        assert_eq!(s.confirm_percentile_ms(50), Some(2_000));
        assert_eq!(s.confirm_percentile_ms(90), Some(60_000));
        s.note_confirm(100 * 86_400_000);
        assert_eq!(s.confirm_percentile_ms(100), Some(100 * 86_400_000));
        assert_eq!(Stats::default().confirm_percentile_ms(50), None);
    }

    #[test]
    fn a_report_sums_its_span_and_ranks_rejected_demand() {
        let mut report = Report::new(7 * 24 * 3600);
        let hour = REPORT_ROW_BUCKET_MS;
        report.add(&event(EventKind::ReserveRejected, hour, "A", 5));
        report.add(&event(EventKind::ReserveRejected, hour + 60_000, "B", 2));
        report.add(&event(EventKind::ReserveRejected, hour + 120_000, "A", 1));
        report.add(&event(EventKind::ReserveRejected, 3 * hour, "B", 100));
        let q = Query {
            channel: "WEB".into(),
            from: hour,
            to: 2 * hour,
            top: 10,
            ..Query::default()
        };
        let a = report.query(&q);
        assert_eq!((a.figures.rejections, a.figures.units_requested), (3, 8));
        let ranked: Vec<_> = a
            .top
            .iter()
            .map(|r| (r.product.as_str(), r.units_requested))
            .collect();
        assert_eq!(ranked, [("A", 6), ("B", 2)]);
        let b = report.query(&Query {
            product: Some("B".into()),
            to: 4 * hour,
            ..q.clone()
        });
        assert_eq!(b.figures.units_requested, 102);
        let other = report.query(&Query {
            channel: "SOCIAL".into(),
            ..q
        });
        assert_eq!(other.figures, Stats::default());
    }

    #[test]
    fn buckets_older_than_the_retention_are_dropped() {
        let mut report = Report::new(3600);
        report.add(&event(EventKind::ReserveRejected, 0, "A", 5));
        report.add(&event(EventKind::ReserveRejected, 3 * 3_600_000, "A", 1));
        assert_eq!(report.minutes.len(), 1);
        assert_eq!(report.hours.len(), 1);
        assert_eq!(report.rows, 1);
    }
}
