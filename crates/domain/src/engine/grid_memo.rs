//! What a network read's location list resolves to in this engine, kept between reads.
//!
//! A fulfilment or network read over 50 locations comes to every shard with the same
//! shared list of refs (the router's `Members`, one per channel and configuration), and
//! looking up each ref in the interner, then building the map of columns, was about a
//! quarter of the shard's cost of the read. The memo keys a list by its allocation
//! (`Arc::ptr_eq`, the memo holding the list so that the address is not reused) and is
//! true while the interner's `PlainEpoch` says no plain ref came or went; a list whose refs
//! all resolved stays true when new refs come. What the channel sells from is not kept:
//! each read checks it per column, so configuration changes need no invalidation here.
//! Only lists the caller sends again (`GridLocations::Kept`) are kept: a list made for one
//! read (a click & collect store and its transfers) would only push the others out.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::limits::GRID_MEMO_LISTS_MAX;
use crate::refs::{Interner, PlainEpoch, Sym};

/// The location list of a grid read (`Engine::availability_grid`).
#[derive(Clone, Copy, Debug)]
pub enum GridLocations<'a> {
    /// A list the caller sends again and again, unchanged (a channel's members in one
    /// configuration): resolved once and kept in the memo.
    Kept(&'a Arc<[String]>),
    /// A list made for this read: resolved, not kept.
    Once(&'a [String]),
}

impl GridLocations<'_> {
    pub fn refs(&self) -> &[String] {
        match self {
            GridLocations::Kept(list) => list,
            GridLocations::Once(list) => list,
        }
    }
}

/// The resolved columns of a location list.
#[derive(Debug)]
pub(crate) struct Columns {
    /// Each location's symbol, in list order (`None`: not interned here).
    pub syms: Vec<Option<Sym>>,
    /// Symbol → column of the resolved ones, as a table over the symbols' span when it is
    /// at most `DENSE_SPAN_PER_COLUMN` times the list (locations are mostly interned
    /// together, so their symbols lie close), otherwise a map: a read looks up every
    /// position of every product, and an index beats hashing there.
    at: ColumnIndex,
    resolved: usize,
}

#[derive(Debug)]
enum ColumnIndex {
    /// `table[sym - first]` is the column + 1 (0: not in the list).
    Dense {
        first: u32,
        table: Vec<u32>,
    },
    Map(FxHashMap<Sym, usize>),
}

/// How sparse a list's symbols may lie for a table over their span (4 bytes a symbol).
const DENSE_SPAN_PER_COLUMN: usize = 8;

impl Columns {
    fn of(interner: &Interner, list: &[String]) -> Columns {
        let syms: Vec<Option<Sym>> = list.iter().map(|l| interner.get(l)).collect();
        let resolved = syms.iter().flatten().count();
        let (lo, hi) =
            (syms.iter().flatten()).fold((u32::MAX, 0), |(lo, hi), s| (lo.min(s.0), hi.max(s.0)));
        let span = (hi as usize + 1).saturating_sub(lo as usize);
        let at = if span <= DENSE_SPAN_PER_COLUMN * list.len() {
            let mut table = vec![0; span];
            for (l, sym) in syms.iter().enumerate() {
                if let Some(sym) = sym {
                    table[(sym.0 - lo) as usize] = l as u32 + 1;
                }
            }
            ColumnIndex::Dense { first: lo, table }
        } else {
            let resolved = syms.iter().enumerate();
            ColumnIndex::Map(resolved.filter_map(|(l, s)| Some(((*s)?, l))).collect())
        };
        Columns { syms, at, resolved }
    }

    /// The column of `location`, if the list has it.
    pub fn column(&self, location: Sym) -> Option<usize> {
        match &self.at {
            ColumnIndex::Dense { first, table } => {
                let slot = table.get(location.0.wrapping_sub(*first) as usize)?;
                (*slot as usize).checked_sub(1)
            }
            ColumnIndex::Map(map) => map.get(&location).copied(),
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    list: Arc<[String]>,
    epoch: PlainEpoch,
    columns: Arc<Columns>,
}

impl Entry {
    fn holds(&self, interner: &Interner) -> bool {
        let now = interner.plain_epoch();
        let complete = self.columns.resolved == self.columns.syms.len();
        now.interner == self.epoch.interner
            && now.released == self.epoch.released
            && (complete || now.interned == self.epoch.interned)
    }
}

/// At most `GRID_MEMO_LISTS_MAX` lists, the oldest replaced first.
#[derive(Clone, Debug, Default)]
pub(crate) struct GridMemo {
    entries: Vec<Entry>,
    /// The entry the next new list replaces once the memo is full.
    next: usize,
}

impl GridMemo {
    /// The columns of `locations` as `interner` resolves them: a kept list's from the
    /// memo, or worked out (and kept).
    pub fn columns(&mut self, interner: &Interner, locations: GridLocations) -> Arc<Columns> {
        let list = match locations {
            GridLocations::Kept(list) => list,
            GridLocations::Once(list) => return Arc::new(Columns::of(interner, list)),
        };
        let found = self.entries.iter().position(|e| Arc::ptr_eq(&e.list, list));
        if let Some(i) = found
            && self.entries[i].holds(interner)
        {
            return self.entries[i].columns.clone();
        }
        let entry = Entry {
            list: list.clone(),
            epoch: interner.plain_epoch(),
            columns: Arc::new(Columns::of(interner, list)),
        };
        let columns = entry.columns.clone();
        match found {
            Some(i) => self.entries[i] = entry,
            None if self.entries.len() < GRID_MEMO_LISTS_MAX => self.entries.push(entry),
            None => {
                self.entries[self.next] = entry;
                self.next = (self.next + 1) % GRID_MEMO_LISTS_MAX;
            }
        }
        columns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(refs: &[&str]) -> Arc<[String]> {
        refs.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn a_list_is_resolved_again_once_a_missing_ref_is_interned() {
        let mut interner = Interner::default();
        let a = interner.intern("A");
        let refs = list(&["A", "B"]);
        let mut memo = GridMemo::default();
        let first = memo.columns(&interner, GridLocations::Kept(&refs));
        assert_eq!(first.syms, vec![Some(a), None]);
        let again = memo.columns(&interner, GridLocations::Kept(&refs));
        assert!(Arc::ptr_eq(&first, &again), "answered from the memo");
        let hold = interner.intern_in(crate::refs::HOLD_NS, "B");
        assert_eq!(
            memo.columns(&interner, GridLocations::Kept(&refs)).syms,
            vec![Some(a), None]
        );
        interner.release(hold);
        let b = interner.intern("B");
        assert_eq!(
            memo.columns(&interner, GridLocations::Kept(&refs)).syms,
            vec![Some(a), Some(b)]
        );
        // The same refs in another list are another entry.
        let other = list(&["B"]);
        assert_eq!(
            memo.columns(&interner, GridLocations::Kept(&other))
                .column(b),
            Some(0)
        );
    }

    #[test]
    fn another_interner_or_a_released_plain_ref_is_never_answered_from_the_memo() {
        let mut interner = Interner::default();
        let a = interner.intern("A");
        let refs = list(&["A"]);
        let mut memo = GridMemo::default();
        assert_eq!(
            memo.columns(&interner, GridLocations::Kept(&refs)).syms,
            vec![Some(a)]
        );
        let other = Interner::default();
        assert_eq!(
            memo.columns(&other, GridLocations::Kept(&refs)).syms,
            vec![None]
        );
        assert_eq!(
            memo.columns(&interner, GridLocations::Kept(&refs)).syms,
            vec![Some(a)]
        );
        interner.release(a);
        assert_eq!(
            memo.columns(&interner, GridLocations::Kept(&refs)).syms,
            vec![None]
        );
    }

    #[test]
    fn the_memo_keeps_a_bounded_number_of_lists() {
        let interner = Interner::default();
        let mut memo = GridMemo::default();
        let lists: Vec<_> = (0..3 * GRID_MEMO_LISTS_MAX)
            .map(|i| list(&[&format!("L{i}")]))
            .collect();
        for l in &lists {
            memo.columns(&interner, GridLocations::Kept(l));
        }
        assert_eq!(memo.entries.len(), GRID_MEMO_LISTS_MAX);
        let last = lists.last().expect("lists");
        assert!(memo.entries.iter().any(|e| Arc::ptr_eq(&e.list, last)));
    }

    #[test]
    fn columns_are_found_whether_the_symbols_lie_close_or_far_apart() {
        let mut interner = Interner::default();
        let a = interner.intern("A");
        let between: Vec<Sym> = (0..100)
            .map(|i| interner.intern(&format!("P{i}")))
            .collect();
        let b = interner.intern("B");
        let mut memo = GridMemo::default();
        for refs in [list(&["B", "A", "C"]), list(&["P3", "B", "P5"])] {
            let columns = memo.columns(&interner, GridLocations::Kept(&refs));
            let want = |sym: Sym| refs.iter().position(|r| interner.get(r) == Some(sym));
            for sym in [a, b, between[3], between[4], between[5]] {
                assert_eq!(columns.column(sym), want(sym), "{refs:?} {sym:?}");
            }
        }
    }

    #[test]
    fn a_list_made_for_one_read_is_not_kept() {
        let mut interner = Interner::default();
        let a = interner.intern("A");
        let mut memo = GridMemo::default();
        let refs = ["A".to_string()];
        assert_eq!(
            memo.columns(&interner, GridLocations::Once(&refs)).syms,
            vec![Some(a)]
        );
        assert!(memo.entries.is_empty());
    }
}
