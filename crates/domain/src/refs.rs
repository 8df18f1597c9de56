//! Refs: validation of the client-owned names and the interner that stores each once.
//!
//! Every product, location, channel, hold, order and adjustment ref is validated here
//! (1 to 128 bytes of `A-Z a-z 0-9 _ . - /`) and interned, so that a ledger entry
//! carries a 4-byte [`Sym`] instead of a copy of the string.

use std::sync::Arc;

use rustc_hash::FxHashMap;

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

/// An interned ref: an index into the [`Interner`] of the engine that made it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Sym(pub(crate) u32);

/// Interns strings so each distinct ref is stored once per engine.
///
/// Hold and order refs come and go with carts, so their entries can be released and
/// their slots reused; catalogue refs (products, locations, channels) stay.
#[derive(Clone, Default, Debug)]
pub struct Interner {
    map: FxHashMap<Arc<str>, Sym>,
    strs: Vec<Option<Arc<str>>>,
    free: Vec<u32>,
}

impl Interner {
    /// Returns the symbol of `value`, interning it if it is new.
    pub fn intern(&mut self, value: &str) -> Sym {
        if let Some(sym) = self.map.get(value) {
            return *sym;
        }
        let text: Arc<str> = Arc::from(value);
        let sym = match self.free.pop() {
            Some(slot) => {
                self.strs[slot as usize] = Some(text.clone());
                Sym(slot)
            }
            None => {
                let slot = u32::try_from(self.strs.len()).expect("more than 2^32 refs interned");
                self.strs.push(Some(text.clone()));
                Sym(slot)
            }
        };
        self.map.insert(text, sym);
        sym
    }

    /// Makes room for `additional` more refs (a restore knows how many are coming).
    pub fn reserve(&mut self, additional: usize) {
        self.map.reserve(additional);
        self.strs.reserve(additional);
    }

    /// Returns the symbol of `value` if it was interned, without interning it.
    pub fn get(&self, value: &str) -> Option<Sym> {
        self.map.get(value).copied()
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
            .as_deref()
            .expect("resolve of a released symbol");
        match text.as_bytes().first() {
            Some(b) if *b < b' ' => &text[1..],
            _ => text,
        }
    }

    /// Forgets a ref that nothing refers to any more (a forgotten hold or order).
    pub fn release(&mut self, sym: Sym) {
        if let Some(text) = self.strs[sym.0 as usize].take() {
            self.map.remove(&*text);
            self.free.push(sym.0);
        }
    }

    /// The slots, in symbol order (`None` for a released slot): a snapshot of the interner.
    pub fn slots(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        self.strs.iter().map(|s| s.as_deref())
    }

    /// Rebuilds an interner from its slots, keeping every symbol's number.
    pub fn from_slots(slots: Vec<Option<String>>) -> Result<Interner, String> {
        let mut interner = Interner::default();
        for (i, slot) in slots.into_iter().enumerate() {
            match slot {
                Some(text) => {
                    let text: Arc<str> = Arc::from(text);
                    if interner.map.insert(text.clone(), Sym(i as u32)).is_some() {
                        return Err(format!("ref {text:?} is interned twice"));
                    }
                    interner.strs.push(Some(text));
                }
                None => {
                    interner.strs.push(None);
                    interner.free.push(i as u32);
                }
            }
        }
        Ok(interner)
    }

    /// Whether a symbol names a live ref.
    pub fn is_live(&self, sym: Sym) -> bool {
        self.strs.get(sym.0 as usize).is_some_and(Option::is_some)
    }

    /// Number of live interned refs.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is interned.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
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
}
