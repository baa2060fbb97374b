//! What any Rust service needs to emit qtrail audit events.
//!
//! - [`Outbox`]: audit events waiting to be published, kept in redb tables of the service's own
//!   database. A service enqueues each event inside the write transaction that makes the state
//!   change it describes, so the change and its event commit together or not at all. The outbox
//!   numbers events densely per `(publisher_id, epoch)` and is bounded in events and bytes.
//! - [`Publisher`]: the background task that streams the outbox to the collector of the
//!   service's location over `qtrail.audit.v1.Ingest/Publish`, in bounded batches with at most
//!   [`qtrail_proto::limits::MAX_UNACKED_BATCHES`] unacknowledged, and deletes an event from the
//!   outbox only once the collector has acknowledged it. Any failure ends the stream; the task
//!   reconnects with exponential backoff and full jitter and resends what is still unacknowledged.
//! - [`OutboxTransaction`]: a write transaction from [`Outbox::begin`] whose commit returns only
//!   once it is durable, sharing one fsync with concurrent callers when the outbox was opened
//!   with [`CommitMode::Grouped`] (group commit); and
//!   [`Outbox::submit`], which appends an event alone, durably, in a batch with every other
//!   event waiting (for calls that change nothing); the caller awaits its [`Recording`].
//! - [`PublisherStats`]: counters and gauges for metrics.
//! - [`AuditSink`]: where a service's events go; always the outbox outside tests and benchmarks.
//!
//! Events travel as the outbox stores them, protobuf-encoded: `PublishedEvent.event` is `bytes`,
//! so the generated client sends them without decoding them.
//!
//! With the `testing` feature, `testing::CollectorStub` is an in-memory collector for tests, and
//! `AuditSink::discard` the sink of an unaudited baseline.

mod backoff;
pub mod error;
pub mod outbox;
pub mod publisher;
pub mod receipts;
mod sink;
pub mod stats;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{OutboxError, PublisherError};
pub use outbox::{CommitMode, Outbox, OutboxDepth, OutboxLimits, OutboxTransaction, Recording};
pub use publisher::{Publisher, PublisherConfig};
pub use sink::AuditSink;
pub use stats::{PublisherStats, StatsSnapshot};
