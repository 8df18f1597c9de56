//! Checkpoints: the durable state of every shard, written incrementally into sled.
//!
//! The segment log takes every change before it is acknowledged; a checkpoint then writes
//! what changed since the previous one, as opaque (namespace, key, value) entries, together
//! with the log position (LSN) it covers, in one atomic batch made durable before `apply`
//! returns. Only then may the log below that LSN be recycled. Recovery loads each shard's
//! entries and replays the log from the stored LSN.
//!
//! Entries are stored in pages (the entries of one namespace whose keys hash to one
//! bucket), a few dozen a page: sled 0.34 costs about 20 µs per stored value to read back,
//! so a million entries one per value took 20 s to load, and a few thousand pages take a
//! fraction of that. A checkpoint rewrites only the pages its changes fall in.
//!
//! Every byte read back is checked: each page carries a CRC32C over its scope, namespace,
//! bucket and bytes, each entry in it one over its scope, namespace, key and value, and
//! each scope keeps a record with its LSN and, per namespace, the count and a 64-bit XOR
//! digest of its entries, written in the same batch as the pages. A load recomputes both,
//! so a flipped, missing, extra or stale entry or page is reported, naming the folder, the
//! scope and the key, page or namespace, and never loaded as state.
//!
//! - `entry`: the byte formats (pages, scope records, layout records) and the digest.
//! - `layout`: the key layout, and the store-independent work of `apply` and `load`.
//! - `rewrite`: a checkpoint too large for one atomic batch, written in several, published
//!   by its scope record alone.
//! - `sled_store`: the real store, on sled, with the fsyncs sled itself does not do.
//! - `sim`: a simulated store for power-cut tests.

pub mod entry;
#[cfg(test)]
mod kill_tests;
pub mod layout;
pub mod rewrite;
pub mod sim;
pub mod sled_store;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use entry::Damage;
pub use sim::{Fault, SimStore};
pub use sled_store::SledCheckpointStore;

/// Longest entry key, in bytes. Keys are short identifiers (SKU, location, hold ref);
/// the bound keeps a sled key and an error message small.
pub const KEY_BYTES_MAX: usize = 1024;

/// Largest entry value, in bytes. Values are one position, hold or order; 256 KiB keeps
/// a value well inside one 512 KiB sled segment.
pub const VALUE_BYTES_MAX: usize = 256 * 1024;

/// Most entries (puts plus deletes) in one atomic sled batch. A batch is held in memory
/// twice (the copies and the sled batch): at ~200 bytes an entry, 1,000,000 is ~400 MB. A
/// larger checkpoint is written in several batches and published by its scope record
/// (`rewrite`).
pub const BATCH_ENTRIES_MAX: usize = 1_000_000;

/// Most layout records in one batch (the layout is a handful of records).
pub const META_RECORDS_MAX: usize = 16;

/// Longest layout record name, in bytes.
pub const META_NAME_BYTES_MAX: usize = 64;

/// Largest layout record value, in bytes.
pub const META_VALUE_BYTES_MAX: usize = 4096;

/// Pages removed per sled batch when a scope is dropped; bounds the memory of a removal
/// (~50 bytes a key) while keeping the number of flushes small.
pub const REMOVE_CHUNK_PAGES: usize = 50_000;

/// Entries a page is sized for: a namespace of n entries gets the fewest power-of-two
/// buckets that hold n at this many a page or fewer (so pages average between half of it
/// and all of it). Larger pages mean fewer sled values to load, smaller ones fewer bytes
/// rewritten per changed entry (a whole page, ~110 bytes an entry). Measured with
/// `cargo bench --bench restart` (1,000,000 entries a shard): 32 and 64 load alike
/// (sled's cost is in the bytes at this size), and an incremental checkpoint of 10,000
/// entries at random writes 3.0 KB per changed entry with 32, 5.1 KB with 64.
pub const PAGE_ENTRIES_TARGET: usize = 32;

/// Bytes of a key shown in an error message; longer keys are cut with `…`.
pub const KEY_SHOWN_BYTES_MAX: usize = 64;

const _: () = assert!(KEY_SHOWN_BYTES_MAX <= KEY_BYTES_MAX);
const _: () = assert!(REMOVE_CHUNK_PAGES <= BATCH_ENTRIES_MAX);
const _: () = assert!(PAGE_ENTRIES_TARGET >= 1);

/// One shard of one generation (shard layout). Each scope is checkpointed and verified on
/// its own: its LSN, its entries and its digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    pub generation: u32,
    pub shard: u32,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "generation {} shard {}", self.generation, self.shard)
    }
}

/// The kind of an entry. Opaque to the store except in error messages, which name the
/// kinds below; any other value is shown as its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace(pub u8);

impl Namespace {
    pub const POSITIONS: Namespace = Namespace(1);
    pub const HOLDS: Namespace = Namespace(2);
    pub const ORDERS: Namespace = Namespace(3);
    pub const CHANNELS: Namespace = Namespace(4);
    pub const CATALOGUE: Namespace = Namespace(5);
    pub const IDEMPOTENCY: Namespace = Namespace(6);

    /// The name used in messages, if this is one of the known kinds.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Namespace::POSITIONS => "positions",
            Namespace::HOLDS => "holds",
            Namespace::ORDERS => "orders",
            Namespace::CHANNELS => "channels",
            Namespace::CATALOGUE => "catalogue",
            Namespace::IDEMPOTENCY => "idempotency",
            _ => return None,
        })
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "namespace {name}"),
            None => write!(f, "namespace {}", self.0),
        }
    }
}

/// One piece of a shard's state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub namespace: Namespace,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// A layout record (generation, shard count, …), written with a batch or alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaRecord {
    pub name: String,
    pub value: Vec<u8>,
}

/// What changed in one scope since its previous checkpoint, and the LSN it covers: every
/// log record of the scope below `lsn_covered` is in the state once the batch is applied.
/// A key appears at most once in `puts` and `deletes` together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointBatch {
    pub scope: Scope,
    pub lsn_covered: u64,
    pub puts: Vec<Entry>,
    pub deletes: Vec<(Namespace, Vec<u8>)>,
    /// Layout records written atomically with the entries.
    pub meta: Vec<MetaRecord>,
}

/// A scope's state as last checkpointed, verified: its pages as read, so that loading
/// copies no entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// Replay the log from here.
    pub lsn_covered: u64,
    /// Grouped by namespace; entries sorted by key within a page.
    pub pages: Vec<LoadedPage>,
}

impl Loaded {
    /// Every entry, page by page.
    pub fn entries(&self) -> impl Iterator<Item = EntryRef<'_>> {
        self.pages.iter().flat_map(LoadedPage::entries)
    }

    pub fn entry_count(&self) -> usize {
        self.pages.iter().map(|p| p.spans.len()).sum()
    }
}

/// One verified page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedPage {
    pub namespace: Namespace,
    bytes: Vec<u8>,
    spans: Vec<entry::EntrySpan>,
}

impl LoadedPage {
    pub(crate) fn new(
        namespace: Namespace,
        bytes: Vec<u8>,
        spans: Vec<entry::EntrySpan>,
    ) -> LoadedPage {
        LoadedPage {
            namespace,
            bytes,
            spans,
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = EntryRef<'_>> {
        self.as_page_ref().entries()
    }

    /// The page borrowed, as `CheckpointStore::load_each` hands pages over.
    pub fn as_page_ref(&self) -> PageRef<'_> {
        PageRef {
            namespace: self.namespace,
            bytes: &self.bytes,
            spans: &self.spans,
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// One verified page, borrowed from where the store keeps it (sled's own buffer), so
/// that a load decodes entries where they lie, without copying the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRef<'a> {
    pub namespace: Namespace,
    bytes: &'a [u8],
    spans: &'a [entry::EntrySpan],
}

impl<'a> PageRef<'a> {
    pub(crate) fn new(
        namespace: Namespace,
        bytes: &'a [u8],
        spans: &'a [entry::EntrySpan],
    ) -> PageRef<'a> {
        PageRef {
            namespace,
            bytes,
            spans,
        }
    }

    pub fn entries(self) -> impl Iterator<Item = EntryRef<'a>> {
        self.spans.iter().map(move |s| EntryRef {
            namespace: self.namespace,
            key: s.key(self.bytes),
            value: s.value(self.bytes),
        })
    }

    pub fn len(self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(self) -> bool {
        self.spans.is_empty()
    }

    /// A copy that outlives the store's buffer.
    pub fn to_loaded(self) -> LoadedPage {
        LoadedPage::new(self.namespace, self.bytes.to_vec(), self.spans.to_vec())
    }
}

/// What a streamed load (`CheckpointStore::load_each`) hands over: the scope record's
/// counts first, then each page once its checksum is checked. Only when `load_each`
/// returns `Ok(Some(lsn))` were all of them the whole, current checkpoint (counts and
/// digests checked at the end): on any error the caller drops what it built.
pub trait PageVisitor {
    /// The entries of a namespace as the (checksummed) scope record counts them, before
    /// any page: lets a caller size its tables once.
    fn expect(&mut self, namespace: Namespace, entries: u64) {
        let _ = (namespace, entries);
    }

    /// A page whose checksum is checked. `false` stops the load (the visitor keeps its
    /// own reason); `load_each` then returns `Ok(None)`.
    fn page(&mut self, page: PageRef<'_>) -> bool;
}

/// One loaded entry, borrowed from its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub namespace: Namespace,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// What one `apply` did and cost, for `stockd_checkpoint_duration_seconds` and
/// `stockd_checkpoint_entries`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub entries_put: u64,
    pub entries_deleted: u64,
    /// Pages (and scope and layout records) written, and pages removed.
    pub pages_written: u64,
    pub pages_removed: u64,
    /// Bytes of keys and values handed to the store: whole pages, so divided by the
    /// entries put and deleted it is the write amplification of a checkpoint.
    pub bytes_written: u64,
    /// Files fsynced after the store's own flush (sled: `db`, `conf`, `blobs/*`, `snap.*`).
    pub files_synced: u32,
    /// Folders fsynced (the sled folder and `blobs/`).
    pub dirs_synced: u32,
    /// Reading the pages it rewrites and the scope record, framing the new pages.
    pub prepare: Duration,
    /// The atomic batch write (visible, not yet durable).
    pub write: Duration,
    /// The store's flush (sled: `sync_file_range`, which does not reach the disk's cache).
    pub flush: Duration,
    /// The explicit fsyncs of every file and folder.
    pub sync: Duration,
    pub total: Duration,
}

/// Why a checkpoint cannot be written or loaded. Every message names the data folder;
/// damage names the scope and the namespace or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint store {}: {doing}: {error}", folder.display())]
    Io {
        folder: PathBuf,
        doing: String,
        error: String,
    },
    #[error("checkpoint store {}: {scope}: {namespace} key {key} is damaged: {damage}", folder.display())]
    EntryDamaged {
        folder: PathBuf,
        scope: Scope,
        namespace: Namespace,
        key: String,
        damage: Damage,
    },
    #[error("checkpoint store {}: {scope}: {namespace} page {bucket} is damaged: {damage}", folder.display())]
    PageDamaged {
        folder: PathBuf,
        scope: Scope,
        namespace: Namespace,
        bucket: u32,
        damage: Damage,
    },
    #[error("checkpoint store {}: {scope}: the checkpoint record is damaged: {damage}", folder.display())]
    ScopeRecordDamaged {
        folder: PathBuf,
        scope: Scope,
        damage: Damage,
    },
    #[error(
        "checkpoint store {}: {scope}: {namespace} does not match its checkpoint record \
         (LSN {lsn_covered}): found {found_entries} entries with digest {found_digest:#018x}, \
         the record says {expected_entries} with digest {expected_digest:#018x}; an entry of \
         it is missing, extra or stale",
        folder.display()
    )]
    DigestMismatch {
        folder: PathBuf,
        scope: Scope,
        namespace: Namespace,
        lsn_covered: u64,
        found_entries: u64,
        expected_entries: u64,
        found_digest: u64,
        expected_digest: u64,
    },
    #[error("checkpoint store {}: {scope}: holds entries ({entries} seen) but no checkpoint record", folder.display())]
    RecordMissing {
        folder: PathBuf,
        scope: Scope,
        entries: u64,
    },
    #[error("checkpoint store {}: layout record {name:?} is damaged: {damage}", folder.display())]
    MetaDamaged {
        folder: PathBuf,
        name: String,
        damage: Damage,
    },
    #[error("checkpoint store {}: stored key {key} belongs to no known record kind", folder.display())]
    UnknownKey { folder: PathBuf, key: String },
    #[error("checkpoint store {}: sled's conf file is damaged (not a torn write of the expected one): {what}", folder.display())]
    ConfDamaged { folder: PathBuf, what: String },
    #[error(
        "checkpoint store {}: an earlier write or fsync failed, so what is on disk is \
         unknown; reopen the store (recovery replays the log after the checkpoint it finds)",
        folder.display()
    )]
    Poisoned { folder: PathBuf },
    #[error("checkpoint store {}: the process crashed (simulated); only crash() goes on", folder.display())]
    Crashed { folder: PathBuf },
}

/// Where a shard's durable state lives. `apply` is atomic (all of the batch or none of it)
/// and durable when it returns `Ok`. Calls on one scope are serialized inside the store (an
/// apply reads the pages it rewrites, and a load must see one checkpoint); calls on
/// different scopes may run at once (recovery loads every shard side by side). A caller
/// runs them off the shard's task.
///
/// After an `Err` from `apply` the checkpoint may or may not be on disk, so the log below
/// it must stay. After a failed write or fsync (`Io` from the write itself) the store
/// refuses further writes (`Poisoned`): neither sled's memory nor the kernel's page cache
/// can be trusted then. A reopen loads either the previous checkpoint or this one, whole.
pub trait CheckpointStore: Send + Sync {
    /// Writes a batch and its scope record atomically, then makes it durable.
    fn apply(&self, batch: &CheckpointBatch) -> Result<ApplyStats, CheckpointError>;

    /// Streams the scope's verified pages to `visitor` (see `PageVisitor`) and returns
    /// the LSN the checkpoint covers, `None` if it was never checkpointed (or the visitor
    /// stopped). Nothing is copied: pages are borrowed from the store's buffers.
    fn load_each(
        &self,
        scope: Scope,
        visitor: &mut dyn PageVisitor,
    ) -> Result<Option<u64>, CheckpointError>;

    /// The scope's verified state, copied, or `None` if it was never checkpointed.
    fn load(&self, scope: Scope) -> Result<Option<Loaded>, CheckpointError> {
        struct Collect(Vec<LoadedPage>);
        impl PageVisitor for Collect {
            fn page(&mut self, page: PageRef<'_>) -> bool {
                self.0.push(page.to_loaded());
                true
            }
        }
        let mut pages = Collect(Vec::new());
        let lsn = self.load_each(scope, &mut pages)?;
        Ok(lsn.map(|lsn_covered| Loaded {
            lsn_covered,
            pages: pages.0,
        }))
    }

    /// Every scope with a checkpoint record, in order.
    fn scopes(&self) -> Result<Vec<Scope>, CheckpointError>;

    /// Drops a scope (a shard of a replaced generation): its entries, then its record, so a
    /// crash part-way leaves a scope that `scopes` still lists and `load` reports.
    fn remove_scope(&self, scope: Scope) -> Result<ApplyStats, CheckpointError>;

    /// A layout record, checked.
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, CheckpointError>;

    /// Writes one layout record alone, durably.
    fn put_meta(&self, name: &str, value: &[u8]) -> Result<ApplyStats, CheckpointError>;

    /// Drops every scope of a generation.
    fn remove_generation(&self, generation: u32) -> Result<ApplyStats, CheckpointError> {
        let mut total = ApplyStats::default();
        for scope in self.scopes()? {
            if scope.generation == generation {
                let stats = self.remove_scope(scope)?;
                total.entries_deleted += stats.entries_deleted;
                total.pages_removed += stats.pages_removed;
                total.files_synced += stats.files_synced;
                total.dirs_synced += stats.dirs_synced;
                total.total += stats.total;
            }
        }
        Ok(total)
    }
}

/// A key as shown in messages: printable ASCII as is, other bytes escaped, cut after
/// `KEY_SHOWN_BYTES_MAX` bytes.
pub fn show_key(key: &[u8]) -> String {
    let shown = &key[..key.len().min(KEY_SHOWN_BYTES_MAX)];
    let mut text = format!("\"{}\"", shown.escape_ascii());
    if key.len() > shown.len() {
        text.push_str(&format!("… ({} bytes)", key.len()));
    }
    text
}
