//! stockd: an inventory reservation service.
//!
//! Checkout, cart and catalogue services ask it over gRPC how many units a sales channel
//! may sell and to hold units for a cart. It never oversells, never loses an
//! acknowledged hold, and answers in well under a millisecond. The inventory rules
//! themselves are the pure `stockd_domain` crate; this crate serves them.
//!
//! # Layout
//! - `clock`: the wall clock, read in one place (the engine is handed `now`).
//! - `config`: the flags (`Cli`, `ServeArgs`), the TOML `BootConfig`, `ServerConfig`.
//! - `grpc`: the only module that knows tonic: services, conversions, `to_status`, serving.
//! - `limits`: every bound and default of the server, with its cost or reason.
//! - `metrics`: every Prometheus metric name, HELP text and bucket layout.
//! - `proto`: the generated protobuf and gRPC types (the wire contract).
//! - `server`: `server::run`: recovery, shards, wiring, serving, drain and final flush.
//! - `shard`: the single-writer shard actors, their handles and the router in front.
//! - `storage`: per-shard segment logs, checkpoints in sled, recovery, and their errors.

pub mod clock;
pub mod config;
pub mod grpc;
pub mod limits;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod shard;
pub mod storage;
