//! What the engine's property tests share: the scenario universe and its generators, the
//! reference model, and the harness that drives engine and model side by side.
//!
//! Each test file includes it with `mod common;` and uses the part it needs, so some
//! items are unused in any one test binary.
#![allow(dead_code, unused_imports)]

pub mod check;
pub mod examples;
pub mod harness;
pub mod model;
pub mod scenario;

pub use check::*;
pub use harness::*;
pub use model::*;
pub use scenario::*;
