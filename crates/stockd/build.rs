//! Compiles the gRPC API in `proto/` into Rust types, clients and servers.
//!
//! The proto is parsed with `protox`, a pure-Rust compiler, so building
//! stockd needs no `protoc` on the machine. The encoded descriptor set is kept
//! next to the generated code because server reflection serves it.

use std::{env, fs, path::PathBuf};

// prost is not among the build-dependencies: protox re-exports the version its
// `FileDescriptorSet` is built with, which is the one that can encode it.
use protox::prost::Message as _;

/// The inventory and admin API, relative to this crate (the workspace keeps `proto/` at its root).
const PROTO_FILE: &str = "../../proto/inventory/v1/inventory.proto";

/// The event API (`EventService`), in the same package.
const EVENTS_PROTO_FILE: &str = "../../proto/inventory/v1/events.proto";

/// The include root the file's package path (`inventory/v1/`) is relative to.
const PROTO_ROOT: &str = "../../proto";

/// Where `src/proto.rs` expects the encoded descriptor set, inside `OUT_DIR`.
const DESCRIPTOR_FILE: &str = "inventory_descriptor.bin";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");

    let fds = protox::compile([PROTO_FILE, EVENTS_PROTO_FILE], [PROTO_ROOT])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join(DESCRIPTOR_FILE), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Written by hand (`src/proto/watch_response.rs`): the server sends events it
        // encoded itself.
        .extern_path(
            ".inventory.v1.WatchEventsResponse",
            "crate::proto::watch_response::WatchEventsResponse",
        )
        .compile_fds(fds)?;
    Ok(())
}
