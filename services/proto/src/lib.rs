//! Beehive's gRPC API, generated from `proto/beehive/v1/*.proto` by `build.rs`.
//!
//! Every component's service and the shared types live in one package, `beehive.v1`,
//! so a type such as `User` is the same Rust type in every crate.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// `beehive.v1`: services, requests, responses and event envelopes.
pub mod v1 {
    tonic::include_proto!("beehive.v1");

    /// The encoded `FileDescriptorSet`, for gRPC reflection and for tests that check the
    /// API surface.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("beehive_descriptor");
}
