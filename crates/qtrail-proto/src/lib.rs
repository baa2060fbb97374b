//! Generated protobuf messages and gRPC stubs for qtrail's wire contract (`proto/`).
//!
//! This crate holds no hand-written logic. The module tree mirrors the protobuf packages:
//! `qtrail::audit::v1` (the audit event, collector admin, ingest and query services) and
//! `qtrail::runtime::v1` (programs and jobs). With the default `grpc` feature off, only the
//! messages are generated, which is what the pure event model uses.

#![allow(missing_docs, unreachable_pub, missing_debug_implementations, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/mod.rs"));

/// Encoded `FileDescriptorSet` of every qtrail proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/qtrail_descriptor.bin"));

pub use prost;
pub use prost_types;
