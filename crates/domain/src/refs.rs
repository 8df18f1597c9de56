//! Refs: validation of the client-owned names and the interner that stores each once.
//!
//! Every product, location, channel, hold, order and adjustment ref is validated here
//! (1 to 128 bytes of `A-Z a-z 0-9 _ . - /`) and interned, so that a ledger entry
//! carries a 4-byte [`Sym`] instead of a copy of the string.

use std::hash::BuildHasher;

use rustc_hash::FxBuildHasher;

pub use super::limits::REF_LEN_MAX;

/// Checks a ref against the naming rule of domain.md. The colon is reserved for
/// composite refs, so it is rejected here.
pub fn check_ref(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > REF_LEN_MAX {
        return Err(format!(
            "must be 1 to {REF_LEN_MAX} bytes (got {})",
            value.len()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
    {
        return Err(format!(
            "must contain only A-Z a-z 0-9 _ . - / (found {bad:?})"
        ));
    }
    Ok(())
}

/// Namespace of hold refs in the interner: a hold and an order or adjustment may share
/// a ref's text without sharing its symbol (a hold's symbol is released when the hold is
/// forgotten).
pub const HOLD_NS: u8 = 1;
/// Namespace of order refs in the interner.
pub const ORDER_NS: u8 = 2;

/// The interner key of a ref in a namespace: a control byte no ref can contain, then the ref.
fn ns_key(ns: u8, value: &str) -> String {
    let mut key = String::with_capacity(value.len() + 1);
    key.push(char::from(ns));
    key.push_str(value);
    key
}

/// Bytes of a namespaced key built on the stack: any valid ref and its namespace byte.
const NS_KEY_STACK_BYTES: usize = REF_LEN_MAX + 1;

/// The interner key of a ref in a namespace, in `buf`, without allocating (a restore
/// looks up a million of them); `None` if it does not fit (a ref longer than any valid one).
fn ns_key_on_stack<'a>(
    buf: &'a mut [u8; NS_KEY_STACK_BYTES],
    ns: u8,
    value: &str,
) -> Option<&'a str> {
    debug_assert!(
        ns < b' ',
        "a namespace byte is a control byte no ref contains"
    );
    let len = value.len() + 1;
    if len > buf.len() {
        return None;
    }
    buf[0] = ns;
    buf[1..len].copy_from_slice(value.as_bytes());
    // A control byte followed by a `str` is UTF-8.
    std::str::from_utf8(&buf[..len]).ok()
}

/// Asks the processor to bring `at`'s cache line in, without waiting for it.
#[inline]
fn prefetch_read<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it changes no memory and cannot fault, and `at` is
    // a live reference anyway.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(at).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// What [`Interner::prefetch`] brings into cache: first the table slot, then the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefetch {
    Slot,
    Text,
}

/// An interned ref: an index into the [`Interner`] of the engine that made it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Sym(pub(crate) u32);

/// Longest text kept inline in its slot: SKUs, locations and cart refs mostly fit, so
/// they need no allocation of their own and a lookup reads no second cache line.
const INLINE_TEXT_BYTES: usize = 22;

/// The text of one symbol (its namespace byte first, if it has one).
#[derive(Clone, Debug)]
enum Text {
    Inline {
        len: u8,
        bytes: [u8; INLINE_TEXT_BYTES],
    },
    Heap(Box<str>),
}

const _: () = assert!(std::mem::size_of::<Option<Text>>() == 24);

impl Text {
    fn new(value: &str) -> Text {
        match u8::try_from(value.len()) {
            Ok(len) if value.len() <= INLINE_TEXT_BYTES => {
                let mut bytes = [0u8; INLINE_TEXT_BYTES];
                bytes[..value.len()].copy_from_slice(value.as_bytes());
                Text::Inline { len, bytes }
            }
            _ => Text::Heap(Box::from(value)),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Text::Heap(text) => text.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Text::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)])
                .expect("inline text is copied whole from a str"),
            Text::Heap(text) => text,
        }
    }
}

/// The interner's lookup table: open addressing with linear probing over 8-byte slots,
/// each 32 bits of its text's hash and its symbol number + 1 (0: an empty slot). A probe
/// reads one cache line and compares a text only when the hash bits match; growing and
/// removing move slots by their stored bits, without reading any text. (hashbrown keeps
/// its control bytes apart from its slots: two cache misses a probe in a table of a
/// million refs, which a restore probes four million times a shard.)
#[derive(Clone, Default, Debug)]
struct SymTable {
    /// A power of two long, or empty.
    slots: Vec<u64>,
    len: usize,
}

/// Fewest slots of a table that holds anything.
const SYM_TABLE_SLOTS_MIN: usize = 16;

/// The bits of a text's hash a slot keeps (they also place it).
fn hash_tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

impl SymTable {
    /// The slot a tag's probe starts at (Fibonacci hashing of the tag).
    fn home(&self, tag: u32) -> usize {
        let bits = self.slots.len().trailing_zeros();
        (u64::from(tag).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    /// The slot holding the symbol for which `eq` holds among those with `hash`, or the
    /// empty slot where it would go. The table must have room (`reserve`).
    fn probe(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Result<usize, usize> {
        let tag = hash_tag(hash);
        let mask = self.slots.len() - 1;
        let mut i = self.home(tag);
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return Err(i);
            }
            if hash_tag(slot) == tag && eq(slot as u32 - 1) {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    fn find(&self, hash: u64, eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        self.probe(hash, eq).ok().map(|i| self.slots[i] as u32 - 1)
    }

    /// Fills the empty slot `at` (from `probe`) with `sym`.
    fn fill(&mut self, at: usize, hash: u64, sym: u32) {
        debug_assert_eq!(self.slots[at], 0);
        let sym = sym.checked_add(1).expect("fewer than 2^32 - 1 refs");
        self.slots[at] = (u64::from(hash_tag(hash)) << 32) | u64::from(sym);
        self.len += 1;
    }

    /// Makes room for `total` symbols at a load of at most 3/4.
    fn reserve(&mut self, total: usize) {
        if total * 4 <= self.slots.len() * 3 {
            return;
        }
        let wanted = (total * 4 / 3 + 1)
            .next_power_of_two()
            .max(SYM_TABLE_SLOTS_MIN);
        let old = std::mem::replace(&mut self.slots, vec![0; wanted]);
        let mask = wanted - 1;
        for slot in old.into_iter().filter(|&s| s != 0) {
            let mut i = self.home(hash_tag(slot));
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }

    /// Empties slot `at`, shifting back the slots after it that probed past it.
    fn remove_at(&mut self, mut at: usize) {
        let mask = self.slots.len() - 1;
        let mut j = at;
        loop {
            j = (j + 1) & mask;
            let slot = self.slots[j];
            if slot == 0 {
                break;
            }
            let home = self.home(hash_tag(slot));
            // It stays if its home lies cyclically in (at, j]: its probe never passed `at`.
            let stays = if at <= j {
                at < home && home <= j
            } else {
                at < home || home <= j
            };
            if !stays {
                self.slots[at] = slot;
                at = j;
            }
        }
        self.slots[at] = 0;
        self.len -= 1;
    }
}

/// Interns strings so each distinct ref is stored once per engine.
///
/// Hold and order refs come and go with carts, so their entries can be released and
/// their slots reused; catalogue refs (products, locations, channels) stay.
///
/// The lookup table holds symbol numbers and hash bits (8 bytes a slot, `SymTable`), the
/// texts lie in `strs`: a restore interns a million refs per shard, and every byte of
/// table is fresh memory the kernel zeroes first. One hash and one probe per intern; a
/// short text lies in its slot (`INLINE_TEXT_BYTES`).
#[derive(Clone, Debug)]
pub struct Interner {
    table: SymTable,
    strs: Vec<Option<Text>>,
    free: Vec<u32>,
    /// Which interner this is and how often a plain ref (one outside every namespace)
    /// came or went: see `PlainEpoch`.
    epoch: PlainEpoch,
}

/// Changes whenever what a plain ref (a product, location or channel: outside every
/// namespace) resolves to may have changed: a plain ref interned or released, or another
/// interner. A memo of plain lookups (`engine::GridMemo`) is still true while the epoch
/// it was built at is. Hold and order refs come and go with every cart without changing
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlainEpoch {
    /// Unique to each interner made (`Interner::default`, `from_slots`); a clone shares it
    /// and counts on from the same numbers, and a memo it copied stays true of it.
    pub interner: u64,
    pub interned: u64,
    pub released: u64,
}

impl Default for Interner {
    fn default() -> Self {
        static INTERNERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = INTERNERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Interner {
            table: SymTable::default(),
            strs: Vec::new(),
            free: Vec::new(),
            epoch: PlainEpoch {
                interner: id,
                interned: 0,
                released: 0,
            },
        }
    }
}

/// Whether an interner key is a plain ref: namespaced keys start with a control byte.
fn is_plain(key: &[u8]) -> bool {
    key.first().is_none_or(|b| *b >= b' ')
}

/// The hash of a ref's text.
fn text_hash(value: &[u8]) -> u64 {
    FxBuildHasher.hash_one(value)
}

/// Whether slot `sym` holds `value`.
fn holds(strs: &[Option<Text>], sym: u32, value: &[u8]) -> bool {
    strs[sym as usize]
        .as_ref()
        .is_some_and(|t| t.as_bytes() == value)
}

impl Interner {
    /// Returns the symbol of `value`, interning it if it is new.
    pub fn intern(&mut self, value: &str) -> Sym {
        let bytes = value.as_bytes();
        let hash = text_hash(bytes);
        self.table.reserve(self.table.len + 1);
        let strs = &self.strs;
        let at = match self.table.probe(hash, |s| holds(strs, s, bytes)) {
            Ok(found) => return Sym(self.table.slots[found] as u32 - 1),
            Err(empty) => empty,
        };
        let text = Text::new(value);
        if is_plain(bytes) {
            self.epoch.interned += 1;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.strs[slot as usize] = Some(text);
                slot
            }
            None => {
                let slot = u32::try_from(self.strs.len()).expect("more than 2^32 refs interned");
                self.strs.push(Some(text));
                slot
            }
        };
        self.table.fill(at, hash, slot);
        Sym(slot)
    }

    /// Makes room for `additional` more refs (a restore knows how many are coming).
    pub fn reserve(&mut self, additional: usize) {
        self.table.reserve(self.table.len + additional);
        self.strs.reserve(additional);
    }

    /// Returns the symbol of `value` if it was interned, without interning it.
    pub fn get(&self, value: &str) -> Option<Sym> {
        let strs = &self.strs;
        let bytes = value.as_bytes();
        self.table
            .find(text_hash(bytes), |s| holds(strs, s, bytes))
            .map(Sym)
    }

    /// Starts loading what a lookup of `value` soon after reads: at `Prefetch::Slot` the
    /// table slot its probe begins at; at `Prefetch::Text` (later, once that slot is in
    /// cache) the text the slot names, if its hash bits match. Only a hint: a restore
    /// prefetches the refs of the entries ahead of the one it interns, so that their cache
    /// misses overlap instead of waiting one after the other.
    pub fn prefetch(&self, value: &str, stage: Prefetch) {
        self.prefetch_bytes(value.as_bytes(), stage);
    }

    /// [`Interner::prefetch`] of a ref in a namespace.
    pub fn prefetch_in(&self, ns: u8, value: &str, stage: Prefetch) {
        let mut buf = [0u8; NS_KEY_STACK_BYTES];
        if let Some(key) = ns_key_on_stack(&mut buf, ns, value) {
            self.prefetch_bytes(key.as_bytes(), stage);
        }
    }

    fn prefetch_bytes(&self, bytes: &[u8], stage: Prefetch) {
        if self.table.slots.is_empty() {
            return;
        }
        let hash = text_hash(bytes);
        let slot = &self.table.slots[self.table.home(hash_tag(hash))];
        match stage {
            Prefetch::Slot => prefetch_read(slot),
            Prefetch::Text => {
                let sym = *slot as u32;
                if hash_tag(*slot) == hash_tag(hash)
                    && let Some(text) = self.strs.get(sym.wrapping_sub(1) as usize)
                {
                    prefetch_read(text);
                }
            }
        }
    }

    /// Interns a ref in a namespace (`HOLD_NS`, `ORDER_NS`).
    pub fn intern_in(&mut self, ns: u8, value: &str) -> Sym {
        let mut buf = [0u8; NS_KEY_STACK_BYTES];
        match ns_key_on_stack(&mut buf, ns, value) {
            Some(key) => self.intern(key),
            None => self.intern(&ns_key(ns, value)),
        }
    }

    /// The symbol of a ref in a namespace, without interning it.
    pub fn get_in(&self, ns: u8, value: &str) -> Option<Sym> {
        let mut buf = [0u8; NS_KEY_STACK_BYTES];
        match ns_key_on_stack(&mut buf, ns, value) {
            Some(key) => self.get(key),
            None => self.get(&ns_key(ns, value)),
        }
    }

    /// The text of a symbol (without its namespace). Panics on a released symbol: that is
    /// a programmer error.
    pub fn resolve(&self, sym: Sym) -> &str {
        let text = self.strs[sym.0 as usize]
            .as_ref()
            .expect("resolve of a released symbol")
            .as_str();
        match text.as_bytes().first() {
            Some(b) if *b < b' ' => &text[1..],
            _ => text,
        }
    }

    /// Forgets a ref that nothing refers to any more (a forgotten hold or order).
    pub fn release(&mut self, sym: Sym) {
        if let Some(text) = self.strs[sym.0 as usize].take() {
            if is_plain(text.as_bytes()) {
                self.epoch.released += 1;
            }
            let hash = text_hash(text.as_bytes());
            if let Ok(at) = self.table.probe(hash, |s| s == sym.0) {
                self.table.remove_at(at);
            }
            self.free.push(sym.0);
        }
    }

    /// The slots, in symbol order (`None` for a released slot): a snapshot of the interner.
    pub fn slots(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        self.strs.iter().map(|s| s.as_ref().map(Text::as_str))
    }

    /// Rebuilds an interner from its slots, keeping every symbol's number.
    pub fn from_slots(slots: Vec<Option<String>>) -> Result<Interner, String> {
        let mut interner = Interner::default();
        interner.table.reserve(slots.iter().flatten().count());
        for (i, slot) in slots.into_iter().enumerate() {
            let i = u32::try_from(i).map_err(|_| "more than 2^32 refs".to_string())?;
            match slot {
                Some(text) => {
                    let strs = &interner.strs;
                    let bytes = text.as_bytes();
                    let hash = text_hash(bytes);
                    match interner.table.probe(hash, |s| holds(strs, s, bytes)) {
                        Ok(_) => return Err(format!("ref {text:?} is interned twice")),
                        Err(at) => interner.table.fill(at, hash, i),
                    }
                    interner.strs.push(Some(Text::new(&text)));
                }
                None => {
                    interner.strs.push(None);
                    interner.free.push(i);
                }
            }
        }
        Ok(interner)
    }

    /// The epoch of plain refs (see `PlainEpoch`).
    pub fn plain_epoch(&self) -> PlainEpoch {
        self.epoch
    }

    /// Whether a symbol names a live ref.
    pub fn is_live(&self, sym: Sym) -> bool {
        self.strs.get(sym.0 as usize).is_some_and(Option::is_some)
    }

    /// Number of live interned refs.
    pub fn len(&self) -> usize {
        self.table.len
    }

    /// Whether nothing is interned.
    pub fn is_empty(&self) -> bool {
        self.table.len == 0
    }
}

/// A stable 64-bit FNV-1a digest. Used where every shard must reach the same answer
/// from the same input (a hold's line set), so it must not depend on a random seed.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separator so that ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_follow_the_naming_rule() {
        assert!(check_ref("cart-abc123-20240315").is_ok());
        assert!(check_ref("a/b.c_d-E9").is_ok());
        assert!(check_ref("").is_err());
        assert!(check_ref("a:b").is_err());
        assert!(check_ref("a b").is_err());
        assert!(check_ref(&"x".repeat(128)).is_ok());
        assert!(check_ref(&"x".repeat(129)).is_err());
    }

    #[test]
    fn released_slots_are_reused() {
        let mut interner = Interner::default();
        let a = interner.intern("a");
        let b = interner.intern("b");
        assert_eq!(interner.intern("a"), a);
        interner.release(a);
        assert_eq!(interner.get("a"), None);
        let c = interner.intern("c");
        assert_eq!(c, a);
        assert_eq!(interner.resolve(b), "b");
        assert_eq!(interner.resolve(c), "c");
    }

    #[test]
    fn releases_in_any_order_keep_every_other_ref_found() {
        let mut interner = Interner::default();
        let syms: Vec<Sym> = (0..20_000)
            .map(|i| interner.intern(&format!("h{i}")))
            .collect();
        // Every ref not released is found under its symbol; every released one is gone.
        let check = |interner: &Interner, released: &[bool]| {
            for (j, sym) in syms.iter().enumerate() {
                let want = (!released[j]).then_some(*sym);
                assert_eq!(interner.get(&format!("h{j}")), want);
            }
        };
        // Release in a scrambled order, checking the survivors now and then.
        let mut released = vec![false; syms.len()];
        for k in 0..15_000usize {
            let i = (k * 7_919) % syms.len();
            if !released[i] {
                interner.release(syms[i]);
                released[i] = true;
            }
            if k % 2_500 == 0 {
                check(&interner, &released);
            }
        }
        let live = released.iter().filter(|r| !**r).count();
        assert_eq!(interner.len(), live);
        check(&interner, &released);
    }

    #[test]
    fn long_and_short_texts_intern_alike() {
        let mut interner = Interner::default();
        let short = "x".repeat(INLINE_TEXT_BYTES);
        let long = "x".repeat(INLINE_TEXT_BYTES + 1);
        let (a, b) = (interner.intern(&short), interner.intern(&long));
        assert_ne!(a, b);
        assert_eq!((interner.intern(&short), interner.intern(&long)), (a, b));
        assert_eq!(
            (interner.resolve(a), interner.resolve(b)),
            (&*short, &*long)
        );
        let c = interner.intern_in(HOLD_NS, &short);
        assert_eq!(interner.resolve(c), short);
        assert_eq!(interner.get_in(HOLD_NS, &short), Some(c));
    }

    #[test]
    fn symbols_survive_growth_and_release() {
        let mut interner = Interner::default();
        let syms: Vec<Sym> = (0..5_000)
            .map(|i| interner.intern(&format!("r{i}")))
            .collect();
        for (i, sym) in syms.iter().enumerate().step_by(3) {
            assert_eq!(interner.resolve(*sym), format!("r{i}"));
            interner.release(*sym);
        }
        for (i, sym) in syms.iter().enumerate() {
            let want = (i % 3 != 0).then_some(*sym);
            assert_eq!(interner.get(&format!("r{i}")), want);
        }
        assert_eq!(interner.len(), 5_000 - 5_000_usize.div_ceil(3));
        let again = interner.intern_in(HOLD_NS, "r0");
        assert_eq!(interner.resolve(again), "r0");
        assert_eq!(interner.get("r0"), None);
        assert_eq!(interner.get_in(HOLD_NS, "r0"), Some(again));
        let slots: Vec<Option<String>> = interner.slots().map(|s| s.map(str::to_owned)).collect();
        let rebuilt = Interner::from_slots(slots).unwrap();
        assert_eq!(rebuilt.get("r1"), Some(syms[1]));
        assert_eq!(rebuilt.len(), interner.len());
    }
}
