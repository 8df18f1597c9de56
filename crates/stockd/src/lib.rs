//! stockd: an inventory reservation service.
//!
//! Checkout, cart and catalogue services ask it over gRPC how many units a sales channel
//! may sell and to hold units for a cart. It never oversells, never loses an
//! acknowledged hold, and answers in well under a millisecond.
//!
//! # Layout
//! - `domain`: the pure inventory engine (positions, ledger, channels, holds). No I/O.
//! - `proto`: the generated protobuf and gRPC types.

pub mod clock;
pub mod config;
pub mod grpc;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod shard;
pub mod storage;
