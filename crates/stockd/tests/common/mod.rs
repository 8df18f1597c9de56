//! The harness the integration tests share, each test file including it with `mod common;`.
//!
//! # Layout
//! - `server`: the servers under test, both on 127.0.0.1: `InProcessServer` (the library's
//!   `stockd::server::run` on a port the OS picks) and `ServerProcess` (the real `stockd`
//!   binary on free ports and a data folder the test owns, to SIGKILL and start again).
//! - `client`: tonic clients to either, with bounded connect and call times.
//! - `requests`: request builders (a channel, a stock count, a reserve of lines) and times.
//! - `calls`: one RPC each, its answer checked or made plain (`Ok(None)` for NOT_FOUND).
//! - `raw`: calls with raw request bodies (tonic with a bytes codec, and `h2` for broken
//!   framing).
//! - `tls`: certificates made at test time (rcgen), TLS clients.
//! - `fixtures`: the durability tests' world: a data folder (`TestFolder`), products on
//!   every shard, standard channels, a server started on them with stock counted
//!   (`start_seeded`), a mix of holds in every state.
//! - `visible`: everything a client can see of a set of positions and holds, to compare
//!   before and after a restart.
//! - `sim`: `server::run` over a simulated disk and checkpoint store, and its segments.
//! - `store`: the data folder of a stopped server, read and damaged through the crate's
//!   own `Store`.
//! - `yaml`, `manifests`: the deployment files under `k8s/` as the manifest tests read them.

// Every test binary compiles all of this module but uses only its own part of it (the
// manifest tests start no server, the service tests open no store), so unused helpers
// are expected here and not a sign of dead code.
#![allow(dead_code)]

pub mod calls;
pub mod client;
pub mod fixtures;
pub mod manifests;
pub mod raw;
pub mod requests;
pub mod server;
pub mod sim;
pub mod store;
pub mod tls;
pub mod visible;
pub mod yaml;
