//! Generated protobuf messages and gRPC stubs for qtrail's wire contract (`proto/`).
//!
//! The module tree mirrors the protobuf packages: `qtrail::audit::v1` (the audit event, collector
//! admin, ingest and query services) and `qtrail::runtime::v1` (programs and jobs). With the
//! default `grpc` feature off, only the messages are generated, which is what the pure event
//! model uses. Hand-written beside them, and part of the same contract: [`limits`].
//!
//! `Ingest.Publish` carries each event as its encoded bytes (`PublishedEvent.event` is `bytes`,
//! as `prost::bytes::Bytes`): the publisher sends what its outbox stores without decoding it,
//! and the collector decodes each event once, straight into its event model.

#![allow(missing_docs, unreachable_pub, missing_debug_implementations, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/mod.rs"));

/// Encoded `FileDescriptorSet` of every qtrail proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/qtrail_descriptor.bin"));

pub use prost;
pub use prost_types;

/// Limits that are part of the wire contract: publishers and collectors must agree on them.
pub mod limits {
    /// Most batches a publisher may have sent and not yet seen acknowledged on one `Publish`
    /// stream. A collector fails a stream that exceeds it with RESOURCE_EXHAUSTED.
    pub const MAX_UNACKED_BATCHES: u64 = 8;

    /// Most events in one `Batch`; a larger batch fails the stream with RESOURCE_EXHAUSTED.
    pub const MAX_BATCH_EVENTS: usize = 1000;

    /// Largest gRPC message either side of `Publish` accepts (a full batch of maximum-size
    /// events is 16 MiB).
    pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
}
