//! The hold directory: which shards keep a part of each hold and of each order, so that an
//! operation on a hold contacts only those shards (and the shards of its new lines), not
//! every shard.
//!
//! The directory lives in the router's lock stripes: an entry is read and changed only
//! under its ref's stripe lock, the lock that serialises the operations on that hold or
//! order, and only after the shards answered. It is a superset of the truth: a shard
//! leaves an entry only when it answered that it keeps no part; a shard whose answer is
//! unknown (stopped, a failed disk) stays. A shard with no part that is contacted all the
//! same answers "none" and changes nothing, so a stale entry costs one message; only a
//! missing shard would be wrong, and every shard an operation may have changed is noted.
//!
//! Shards forget finished holds and orders after their retention without telling anyone.
//! Each entry therefore carries the earliest moment its parts may be gone (`check_at`:
//! the deadline or the last change, plus the retention); a prune walks the stripes a few
//! at a time and asks the shards of entries past it whether they still keep them. At
//! start-up the directory is rebuilt from every recovered engine's parts
//! (`Engine::part_refs`), before any request is served.
//!
//! An entry may also keep the whole view of an active hold, as its shards last answered
//! a GetHold of it (`Entry::view`), so that the next GetHold is answered here without a
//! shard message. It is exact because every change of a hold goes through its stripe
//! lock and notes the shards' answers, and a note drops the view; the one change that
//! does not, expiry, happens at the view's own deadline, after which the view is not
//! used. Views are bounded per stripe (`DIRECTORY_VIEWS_PER_STRIPE_MAX`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures::future::join_all;
use rustc_hash::FxHashMap;
use tokio::sync::{Mutex, MutexGuard};

use super::handle::{ShardError, ShardHandle};
use super::router::LOCK_STRIPES;
use crate::limits::{
    DIRECTORY_PRUNE_CHECKS_MAX, DIRECTORY_PRUNE_GRACE_MS, DIRECTORY_PRUNE_STRIPES_PER_TICK,
    DIRECTORY_RETRY_MS, DIRECTORY_VIEWS_PER_STRIPE_MAX,
};
use stockd_domain::refs::fnv1a;
use stockd_domain::{Engine, HoldState, HoldView, Millis};

/// The two namespaces of the directory: hold refs and order refs are distinct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ns {
    Hold,
    Order,
}

/// What one shard's answer says about its part of a hold or order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// It keeps a part; it cannot forget it before this moment plus the retention.
    Kept(Millis),
    /// It keeps no part.
    Absent,
    /// It may keep one: it could not say (stopped, a failed disk).
    Unknown,
}

impl Seen {
    /// What an answer says, given what a successful answer says (`kept`): nothing at all
    /// (`None`) when the shard refused before changing anything (a domain rule, a full
    /// mailbox); unknown when it could not answer.
    pub fn of<T>(
        answer: &Result<T, ShardError>,
        kept: impl FnOnce(&T) -> Option<Millis>,
    ) -> Option<Seen> {
        match answer {
            Ok(t) => Some(kept(t).map_or(Seen::Absent, Seen::Kept)),
            Err(ShardError::Domain(_) | ShardError::Overloaded(_)) => None,
            Err(ShardError::Unavailable(_) | ShardError::Stopped(_)) => Some(Seen::Unknown),
        }
    }

    /// What a shard's part of a hold (after the operation at `now`) says.
    pub fn hold(now: Millis, part: Option<&HoldView>) -> Seen {
        part.map_or(Seen::Absent, |p| Seen::Kept(p.expires_at.max(now)))
    }
}

/// The shards of one hold or order, and when to ask them whether they still keep it.
#[derive(Debug)]
struct Entry {
    /// Ascending shard indices.
    shards: Vec<u32>,
    check_at: Millis,
    /// The whole hold (holds only), while it is active and unchanged since its shards
    /// answered a GetHold of it, and the moment it stops being valid: the earliest
    /// deadline of its parts.
    view: Option<Box<(HoldView, Millis)>>,
}

/// One lock stripe's share of the directory.
#[derive(Debug, Default)]
pub struct Stripe {
    holds: FxHashMap<Box<str>, Entry>,
    orders: FxHashMap<Box<str>, Entry>,
    /// How many hold entries keep a view (at most `DIRECTORY_VIEWS_PER_STRIPE_MAX`).
    views: usize,
}

impl Stripe {
    fn map(&self, ns: Ns) -> &FxHashMap<Box<str>, Entry> {
        match ns {
            Ns::Hold => &self.holds,
            Ns::Order => &self.orders,
        }
    }

    fn map_mut(&mut self, ns: Ns) -> &mut FxHashMap<Box<str>, Entry> {
        match ns {
            Ns::Hold => &mut self.holds,
            Ns::Order => &mut self.orders,
        }
    }

    fn shards(&self, ns: Ns, key: &str) -> Vec<u32> {
        self.map(ns)
            .get(key)
            .map_or_else(Vec::new, |e| e.shards.clone())
    }

    /// Drops the hold's view, if it keeps one: something about the hold was answered.
    fn forget_view(&mut self, key: &str) {
        if let Some(entry) = self.holds.get_mut(key)
            && entry.view.take().is_some()
        {
            self.views -= 1;
        }
    }

    /// The hold's whole view, if kept and still before its deadline at `now`.
    fn view(&self, key: &str, now: Millis) -> Option<HoldView> {
        let (view, until) = self.holds.get(key)?.view.as_deref()?;
        (now < *until).then(|| view.clone())
    }

    /// Keeps the whole view of an active hold that has an entry, if the stripe has room.
    fn keep_view(&mut self, key: &str, view: &HoldView, until: Millis) {
        if view.state != HoldState::Active || self.views >= DIRECTORY_VIEWS_PER_STRIPE_MAX {
            return;
        }
        if let Some(entry) = self.holds.get_mut(key)
            && entry.view.is_none()
        {
            entry.view = Some(Box::new((view.clone(), until)));
            self.views += 1;
        }
    }

    fn note(&mut self, ns: Ns, key: &str, shard: u32, seen: Seen, now: Millis, retention: Millis) {
        if ns == Ns::Hold {
            self.forget_view(key);
        }
        let map = self.map_mut(ns);
        let check_at = match seen {
            Seen::Kept(until) => until.max(now) + retention + DIRECTORY_PRUNE_GRACE_MS,
            Seen::Unknown => now + DIRECTORY_RETRY_MS,
            Seen::Absent => {
                if let Some(entry) = map.get_mut(key) {
                    entry.shards.retain(|s| *s != shard);
                    if entry.shards.is_empty() {
                        map.remove(key);
                    }
                }
                return;
            }
        };
        let entry = map.entry(key.into()).or_insert_with(|| Entry {
            shards: Vec::new(),
            check_at,
            view: None,
        });
        if let Err(at) = entry.shards.binary_search(&shard) {
            entry.shards.insert(at, shard);
        }
        entry.check_at = entry.check_at.max(check_at);
    }

    /// Up to `max` entries whose shards may have forgotten them by `now`.
    fn due(&self, now: Millis, max: usize) -> Vec<(Ns, String, Vec<u32>)> {
        let mut due = Vec::new();
        for ns in [Ns::Hold, Ns::Order] {
            for (key, entry) in self.map(ns) {
                if due.len() == max {
                    return due;
                }
                if entry.check_at <= now {
                    due.push((ns, key.to_string(), entry.shards.clone()));
                }
            }
        }
        due
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.holds.len() + self.orders.len()
    }
}

/// The stripe of a ref (hold or order): its lock and its share of the directory.
pub fn stripe_of(key: &str) -> usize {
    (fnv1a(&[key.as_bytes()]) % LOCK_STRIPES as u64) as usize
}

/// The directory: `LOCK_STRIPES` stripes, each a lock and its entries.
pub struct Directory {
    stripes: Vec<Mutex<Stripe>>,
    /// How long shards keep a finished hold (`Settings::hold_retention_ms`).
    retention: Millis,
    /// The next stripe the prune visits.
    cursor: AtomicUsize,
    /// The next cart version (`UpdateTag::version`): above every version a recovered
    /// engine holds, so a hold's versions only grow, across restarts too.
    next_version: AtomicU64,
    /// The cart versions whose reserve has not yet answered on all its shards (or whose
    /// outcome on some shard is unknown: those stay until a restart). Below the lowest,
    /// every version is complete: the watermark the next tagged reserves carry. At most
    /// one per reserve in flight (each holds its hold's stripe lock), plus the unknown.
    open_versions: std::sync::Mutex<std::collections::BTreeSet<u64>>,
}

impl Directory {
    /// An empty directory (no shard keeps anything yet).
    pub fn new(retention: Millis) -> Directory {
        Directory {
            stripes: (0..LOCK_STRIPES)
                .map(|_| Mutex::new(Stripe::default()))
                .collect(),
            retention,
            cursor: AtomicUsize::new(0),
            next_version: AtomicU64::new(1),
            open_versions: Default::default(),
        }
    }

    /// Opens a new cart version, higher than any before it: `(version, settled_below)`,
    /// every version below `settled_below` being complete on all its shards.
    pub fn open_version(&self) -> (u64, u64) {
        let mut open = self.open_versions.lock().expect("open versions lock");
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        open.insert(version);
        let settled_below = *open.first().expect("just inserted");
        (version, settled_below)
    }

    /// Closes a cart version that answered on all its shards (or was undone on all).
    pub fn close_version(&self, version: u64) {
        let mut open = self.open_versions.lock().expect("open versions lock");
        open.remove(&version);
    }

    /// The directory of the recovered engines (one per shard, in shard order).
    pub fn rebuild(engines: &[Engine], now: Millis, retention: Millis) -> Directory {
        let mut stripes: Vec<Stripe> = (0..LOCK_STRIPES).map(|_| Stripe::default()).collect();
        for (shard, engine) in engines.iter().enumerate() {
            for part in engine.part_refs() {
                let at = part.expires_at.max(now);
                stripes[stripe_of(part.hold_ref)].note(
                    Ns::Hold,
                    part.hold_ref,
                    shard as u32,
                    Seen::Kept(at),
                    now,
                    retention,
                );
                if let Some(order) = part.order_ref {
                    stripes[stripe_of(order)].note(
                        Ns::Order,
                        order,
                        shard as u32,
                        Seen::Kept(now),
                        now,
                        retention,
                    );
                }
            }
        }
        let version = engines.iter().map(Engine::max_hold_version).max();
        Directory {
            stripes: stripes.into_iter().map(Mutex::new).collect(),
            retention,
            cursor: AtomicUsize::new(0),
            next_version: AtomicU64::new(version.unwrap_or(0) + 1),
            open_versions: Default::default(),
        }
    }

    /// Locks the stripes of the given refs in ascending order (so two operations never
    /// deadlock), for an operation at `now`.
    pub async fn lock(&self, now: Millis, refs: &[&str]) -> Locked<'_> {
        let mut idx: Vec<usize> = refs.iter().map(|r| stripe_of(r)).collect();
        idx.sort_unstable();
        idx.dedup();
        let mut guards = Vec::with_capacity(idx.len());
        for i in idx {
            guards.push((i, self.stripes[i].lock().await));
        }
        Locked {
            guards,
            now,
            retention: self.retention,
        }
    }

    /// One prune wake: visits the next `DIRECTORY_PRUNE_STRIPES_PER_TICK` stripes and asks
    /// the shards of each due entry whether they still keep it; the shards that do not
    /// leave the entry, and an entry with no shard left goes.
    pub async fn prune(&self, shards: &[ShardHandle], now: Millis) {
        let start = self
            .cursor
            .fetch_add(DIRECTORY_PRUNE_STRIPES_PER_TICK, Ordering::Relaxed);
        for i in 0..DIRECTORY_PRUNE_STRIPES_PER_TICK {
            let mut stripe = self.stripes[(start + i) % LOCK_STRIPES].lock().await;
            for (ns, key, on) in stripe.due(now, DIRECTORY_PRUNE_CHECKS_MAX) {
                let answers =
                    join_all(on.iter().map(|&s| ask(&shards[s as usize], ns, &key, now))).await;
                if let Some(entry) = stripe.map_mut(ns).get_mut(key.as_str()) {
                    entry.check_at = now;
                }
                for (&s, seen) in on.iter().zip(answers) {
                    stripe.note(ns, &key, s, seen, now, self.retention);
                }
            }
        }
    }
}

/// Asks one shard whether it keeps a part of a hold or order. An overloaded shard is
/// asked again later.
async fn ask(shard: &ShardHandle, ns: Ns, key: &str, now: Millis) -> Seen {
    let seen = match ns {
        Ns::Hold => {
            let answer = shard.hold(now, key.to_string()).await;
            Seen::of(&answer, |part| part.as_ref().map(|p| p.expires_at.max(now)))
        }
        Ns::Order => {
            let answer = shard.fulfil_check(now, key.to_string(), None).await;
            Seen::of(&answer, |lines| lines.as_ref().map(|_| now))
        }
    };
    seen.unwrap_or(Seen::Unknown)
}

fn kept(seen: Seen) -> Option<Millis> {
    match seen {
        Seen::Kept(at) => Some(at),
        _ => None,
    }
}

/// The stripes an operation holds, with their entries: what it reads to find the shards
/// to contact and notes their answers in.
pub struct Locked<'a> {
    guards: Vec<(usize, MutexGuard<'a, Stripe>)>,
    now: Millis,
    retention: Millis,
}

impl Locked<'_> {
    fn stripe(&self, key: &str) -> &Stripe {
        let i = stripe_of(key);
        let (_, guard) = self
            .guards
            .iter()
            .find(|(s, _)| *s == i)
            .expect("an operation reads only the refs it locked");
        guard
    }

    fn stripe_mut(&mut self, key: &str) -> &mut Stripe {
        let i = stripe_of(key);
        let (_, guard) = self
            .guards
            .iter_mut()
            .find(|(s, _)| *s == i)
            .expect("an operation changes only the refs it locked");
        guard
    }

    /// The shards that may keep a part of the hold or order (ascending).
    pub fn shards(&self, ns: Ns, key: &str) -> Vec<u32> {
        self.stripe(key).shards(ns, key)
    }

    /// The whole view of an active hold, kept since its shards last answered a GetHold
    /// and valid now (see the module's doc).
    pub fn view(&self, hold_ref: &str) -> Option<HoldView> {
        self.stripe(hold_ref).view(hold_ref, self.now)
    }

    /// Keeps the whole view of a hold, as its shards just answered a GetHold, if it is
    /// active (and its stripe has room), until `until` (the earliest deadline of its parts).
    pub fn keep_view(&mut self, hold_ref: &str, view: &HoldView, until: Millis) {
        self.stripe_mut(hold_ref).keep_view(hold_ref, view, until);
    }

    /// Notes what a shard's answer said (`None`: nothing changed there). Any note of a
    /// hold drops its view.
    pub fn note(&mut self, ns: Ns, key: &str, shard: usize, seen: Option<Seen>) {
        let (now, retention) = (self.now, self.retention);
        if ns == Ns::Hold {
            self.stripe_mut(key).forget_view(key);
        }
        if let Some(seen) = seen {
            self.stripe_mut(key)
                .note(ns, key, shard as u32, seen, now, retention);
        }
    }

    /// Notes a shard's part of a hold from an answer that carries it.
    pub fn note_hold<T>(
        &mut self,
        hold_ref: &str,
        shard: usize,
        answer: &Result<T, ShardError>,
        part: impl FnOnce(&T) -> Option<&HoldView>,
    ) {
        let now = self.now;
        let seen = Seen::of(answer, |t| kept(Seen::hold(now, part(t))));
        self.note(Ns::Hold, hold_ref, shard, seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Millis = 86_400_000;

    #[test]
    fn an_entry_keeps_every_shard_until_each_says_it_has_none() {
        let mut s = Stripe::default();
        s.note(Ns::Hold, "h", 3, Seen::Kept(10), 0, DAY);
        s.note(Ns::Hold, "h", 1, Seen::Unknown, 0, DAY);
        assert_eq!(s.shards(Ns::Hold, "h"), vec![1, 3]);
        assert!(s.shards(Ns::Order, "h").is_empty(), "namespaces are apart");
        s.note(Ns::Hold, "h", 3, Seen::Absent, 0, DAY);
        assert_eq!(s.shards(Ns::Hold, "h"), vec![1]);
        s.note(Ns::Hold, "h", 1, Seen::Absent, 0, DAY);
        assert_eq!(s.len(), 0, "an entry with no shard goes");
    }

    /// A shard that has forgotten every hold and order (or, with `drop`, one that dies
    /// without answering).
    fn forgetful_shard(drop: bool) -> ShardHandle {
        use super::super::handle::Msg;
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Hold { respond, .. } if !drop => {
                        let _ = respond.send(Ok(None));
                    }
                    Msg::FulfilCheck { respond, .. } if !drop => {
                        let _ = respond.send(Ok(None));
                    }
                    _ => {}
                }
            }
        });
        ShardHandle { id: 0, tx }
    }

    /// One whole pass of the prune over every stripe at `now`.
    async fn prune_pass(dir: &Directory, shards: &[ShardHandle], now: Millis) {
        for _ in 0..LOCK_STRIPES.div_ceil(DIRECTORY_PRUNE_STRIPES_PER_TICK) {
            dir.prune(shards, now).await;
        }
    }

    async fn shards_of(dir: &Directory, ns: Ns, key: &str) -> Vec<u32> {
        dir.lock(0, &[key]).await.shards(ns, key)
    }

    #[tokio::test]
    async fn a_prune_drops_what_the_shards_forgot_once_it_is_due() {
        let dir = Directory::new(DAY);
        {
            let mut locked = dir.lock(0, &["h", "o"]).await;
            locked.note(Ns::Hold, "h", 0, Some(Seen::Kept(0)));
            locked.note(Ns::Order, "o", 0, Some(Seen::Kept(0)));
        }
        let due = DAY + DIRECTORY_PRUNE_GRACE_MS;
        let forgetful = [forgetful_shard(false)];
        prune_pass(&dir, &forgetful, due - 1).await;
        assert_eq!(shards_of(&dir, Ns::Hold, "h").await, vec![0], "not yet due");
        assert_eq!(
            shards_of(&dir, Ns::Order, "o").await,
            vec![0],
            "not yet due"
        );
        // A shard that cannot answer keeps its place, to be asked again later.
        prune_pass(&dir, &[forgetful_shard(true)], due).await;
        assert_eq!(shards_of(&dir, Ns::Hold, "h").await, vec![0]);
        prune_pass(&dir, &forgetful, due + DIRECTORY_RETRY_MS).await;
        assert!(shards_of(&dir, Ns::Hold, "h").await.is_empty(), "forgotten");
        assert!(
            shards_of(&dir, Ns::Order, "o").await.is_empty(),
            "forgotten"
        );
        let total: usize = futures::future::join_all(dir.stripes.iter().map(|s| s.lock()))
            .await
            .iter()
            .map(|s| s.len())
            .sum();
        assert_eq!(total, 0, "every entry went");
    }

    fn active(hold_ref: &str, expires_at: Millis) -> HoldView {
        HoldView {
            hold_ref: hold_ref.into(),
            channel_ref: "WEB".into(),
            state: HoldState::Active,
            lines: Vec::new(),
            created_at: 0,
            expires_at,
            order_ref: None,
            digest: 0,
            total_lines: 0,
            answered_lines: 0,
            primary: true,
            last_fulfil: None,
            cancelled: false,
            open: 0,
            version: 1,
            ended_at: None,
        }
    }

    #[test]
    fn a_view_is_kept_until_a_note_or_its_deadline_and_only_while_active() {
        let mut s = Stripe::default();
        s.keep_view("h", &active("h", 1_000), 1_000);
        assert_eq!(s.view("h", 0), None, "no entry, no view");
        s.note(Ns::Hold, "h", 0, Seen::Kept(1_000), 0, DAY);
        s.keep_view("h", &active("h", 1_000), 900);
        assert_eq!(s.view("h", 899), Some(active("h", 1_000)));
        assert_eq!(s.view("h", 900), None, "past the earliest part's deadline");
        s.note(Ns::Hold, "h", 1, Seen::Kept(1_000), 0, DAY);
        assert_eq!(s.view("h", 0), None, "a note drops the view");
        assert_eq!(s.views, 0);
        let mut released = active("h", 1_000);
        released.state = HoldState::Released;
        s.keep_view("h", &released, 1_000);
        assert_eq!(s.view("h", 0), None, "only an active hold's view is kept");
        s.note(Ns::Order, "h", 0, Seen::Kept(1_000), 0, DAY);
        s.keep_view("h", &active("h", 1_000), 1_000);
        s.note(Ns::Hold, "h", 0, Seen::Absent, 0, DAY);
        s.note(Ns::Hold, "h", 1, Seen::Absent, 0, DAY);
        assert_eq!(
            (s.view("h", 0), s.views),
            (None, 0),
            "the entry went, its view too"
        );
    }

    #[test]
    fn a_stripe_keeps_at_most_its_bound_of_views() {
        let mut s = Stripe::default();
        let n = DIRECTORY_VIEWS_PER_STRIPE_MAX + 5;
        for i in 0..n {
            let key = format!("h{i}");
            s.note(Ns::Hold, &key, 0, Seen::Kept(1_000), 0, DAY);
            s.keep_view(&key, &active(&key, 1_000), 1_000);
        }
        let kept = (0..n).filter(|i| s.view(&format!("h{i}"), 0).is_some());
        assert_eq!(kept.count(), DIRECTORY_VIEWS_PER_STRIPE_MAX);
        // Once one goes, there is room for another.
        let last = format!("h{}", n - 1);
        assert!(s.view(&last, 0).is_none(), "no room when it came");
        s.note(Ns::Hold, "h0", 0, Seen::Kept(1_000), 0, DAY);
        s.keep_view(&last, &active(&last, 1_000), 1_000);
        assert!(s.view(&last, 0).is_some());
        assert_eq!(s.views, DIRECTORY_VIEWS_PER_STRIPE_MAX);
    }

    #[test]
    fn an_entry_is_due_once_its_parts_may_be_forgotten() {
        let mut s = Stripe::default();
        s.note(Ns::Hold, "h", 0, Seen::Kept(1_000), 500, DAY);
        let at = 1_000 + DAY + DIRECTORY_PRUNE_GRACE_MS;
        assert!(s.due(at - 1, 8).is_empty());
        assert_eq!(s.due(at, 8), vec![(Ns::Hold, "h".to_string(), vec![0])]);
        // A later change pushes the check back.
        s.note(Ns::Hold, "h", 0, Seen::Kept(5_000), 5_000, DAY);
        assert!(s.due(at, 8).is_empty());
    }
}
