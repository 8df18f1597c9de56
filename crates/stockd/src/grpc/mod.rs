//! The gRPC transport: the only module that knows tonic and the protobuf types.
//!
//! - `inventory`, `admin`: the two services, thin handlers over the router.
//! - `holds_query`: ListHolds and GetOrder (holds and orders as queryable things).
//! - `events`: `EventService` (WatchEvents, ListEvents) over the event log; `history`
//!   (GetPositionHistory) and `reports` (GetChannelReport), its other two methods;
//!   `event_wire`: WatchEvents' events encoded straight from the stored record.
//! - `convert`: protobuf ↔ domain, naming the field of every bad input.
//! - `status`: errors → `tonic::Status`, one exhaustive mapping.
//! - `observe`: the span and latency histogram around every RPC.
//! - `decode`: a request body tonic cannot decode answers INVALID_ARGUMENT, not INTERNAL.
//! - `overload`: the concurrency limit and load shedding (tower layers) before the services.
//! - `listen`: accepting connections: the connection bound, TLS handshakes, `Peer`;
//!   `gather`: a connection's writes gathered into one `write` per turn of its task.
//! - `tls`: rustls' server configuration from PEM files; `reload`: files re-read on change.
//! - `identity`: client certificate names, bearer tokens; `policy`: the `--auth-policy`
//!   file; `access`: the policy's checks (method before the service, channel in handlers).
//! - `serve`: the tonic server (health, reflection, services, message limits, ports) and
//!   its drain.

pub mod access;
pub mod admin;
pub mod convert;
pub mod decode;
pub mod event_wire;
pub mod events;
pub mod gather;
pub mod history;
pub mod holds_query;
pub mod identity;
pub mod inventory;
pub mod listen;
pub mod observe;
pub mod overload;
pub mod policy;
pub mod reload;
pub mod reports;
pub mod serve;
pub mod status;
pub mod tls;

pub use admin::AdminApi;
pub use events::EventApi;
pub use inventory::InventoryApi;
pub use overload::Overload;
pub use serve::{Listeners, Protection, ServeError, serve};
