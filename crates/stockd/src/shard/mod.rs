//! Shards: one single-writer actor per slice of the positions, and the router in front.
//!
//! - `handle`: `ShardHandle`, the cheap clone that holds the bounded mailbox sender.
//! - `actor`: `ShardActor`, the task that owns an engine, batches, logs and replies.
//! - `router`: `Router`, key → shard routing and the cross-shard coordination of holds;
//!   `router/holds_query`: ListHolds over every shard, GetOrder over an order's shards.
//! - `directory`: `Directory`, which shards keep a part of each hold and order, so each
//!   operation contacts only those; the router's lock stripes.
//! - `watch`: a shard panic exits the process, so that recovery runs on the restart.

pub mod actor;
pub mod directory;
pub mod handle;
pub mod router;
pub mod watch;

pub use actor::{ShardActor, ShardLimits};
pub use handle::{ShardError, ShardHandle};
pub use router::{Router, shard_of};
