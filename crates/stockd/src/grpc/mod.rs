//! The gRPC transport: the only module that knows tonic and the protobuf types.
//!
//! - `inventory`, `admin`: the two services, thin handlers over the router.
//! - `events`: `EventService` (WatchEvents, ListEvents) over the event log.
//! - `convert`: protobuf ↔ domain, naming the field of every bad input.
//! - `status`: errors → `tonic::Status`, one exhaustive mapping.
//! - `observe`: the span and latency histogram around every RPC.
//! - `overload`: the concurrency limit and load shedding (tower layers) before the services.
//! - `serve`: the tonic server (health, reflection, services, message limits) and its drain.

pub mod admin;
pub mod convert;
pub mod events;
pub mod inventory;
pub mod observe;
pub mod overload;
pub mod serve;
pub mod status;

pub use admin::AdminApi;
pub use events::EventApi;
pub use inventory::InventoryApi;
pub use overload::Overload;
pub use serve::{ServeError, serve};
