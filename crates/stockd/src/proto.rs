//! Generated protobuf messages and gRPC clients and servers for the stockd API.
//!
//! `build.rs` compiles `proto/inventory/v1/inventory.proto` into `OUT_DIR`;
//! this module is where that code enters the crate. The generated types are
//! the wire contract, not the domain model: only `grpc/` (which converts them
//! to and from domain commands) and the load generator may use them, so the
//! domain, shards and storage never depend on tonic or prost.
//!
//! One message is written by hand rather than generated: `WatchEventsResponse`
//! (`watch_response`, mapped in with `extern_path` in `build.rs`), so that a watch can send
//! the bytes `grpc::event_wire` encodes straight from the stored event.

/// The `inventory` protobuf package.
pub mod inventory {
    /// Version 1 of the inventory API (`inventory.v1`): `InventoryService`
    /// for storefront, cart and order traffic, `AdminService` for stock feeds
    /// and configuration.
    pub mod v1 {
        tonic::include_proto!("inventory.v1");
        pub use super::super::watch_response::WatchEventsResponse;
    }
}

pub mod watch_response;

/// The encoded `FileDescriptorSet` of the API, imports included, for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/inventory_descriptor.bin"));
