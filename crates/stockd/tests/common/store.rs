//! The data folder of a stopped server, read and damaged as a crash or a bad disk would.
//!
//! These go through the crate's own `Store` (its trees and key layout), so the tests
//! follow the layout when it changes. The server must be stopped: sled locks the folder.

use std::path::Path;

use stockd::storage::Store;
use stockd::storage::record::{self, LogRecord};
use stockd_domain::Command as DomainCommand;

/// Opens a stopped server's store; returns it with the generation in use.
pub fn open_store(data: &Path) -> (Store, u32) {
    let store = Store::open(data).expect("open the data folder");
    let meta = store
        .meta()
        .expect("read the layout record")
        .expect("the folder has a layout");
    (store, meta.generation)
}

/// The sequence numbers of one shard's log, in order.
pub fn log_seqs(store: &Store, generation: u32, shard: u32) -> Vec<u64> {
    store
        .read_log(generation, shard)
        .map(|r| r.expect("read a log record").0)
        .collect()
}

/// The stored bytes of one log record (its checksum and encoding included).
pub fn log_bytes(store: &Store, generation: u32, shard: u32, seq: u64) -> Vec<u8> {
    store
        .log
        .get(stockd::storage::store::log_key(generation, shard, seq))
        .expect("read a log record")
        .expect("the record exists")
        .to_vec()
}

/// Writes the bytes of one log record as they are, checksum or not, and flushes.
pub fn put_log_bytes(store: &Store, generation: u32, shard: u32, seq: u64, bytes: Vec<u8>) {
    store
        .log
        .insert(
            stockd::storage::store::log_key(generation, shard, seq),
            bytes,
        )
        .expect("write a log record");
    store.db.flush().expect("flush");
}

/// The decoded command of a log record.
pub fn log_command(store: &Store, generation: u32, shard: u32, seq: u64) -> DomainCommand {
    record::decode::<LogRecord>(&log_bytes(store, generation, shard, seq))
        .expect("decode a log record")
        .command
}

/// Removes the last record of a shard's log, as if the crash came before it was durable,
/// after checking it is the one the test means. Returns its command.
pub fn drop_last_log_record(
    store: &Store,
    generation: u32,
    shard: u32,
    is_it: impl Fn(&DomainCommand) -> bool,
) -> DomainCommand {
    let seqs = log_seqs(store, generation, shard);
    let last = *seqs.last().expect("the shard has log records");
    let command = log_command(store, generation, shard, last);
    assert!(
        is_it(&command),
        "shard {shard}'s last record is {command:?}"
    );
    store
        .remove_log_record(generation, shard, last)
        .expect("remove a log record");
    store.db.flush().expect("flush");
    command
}
