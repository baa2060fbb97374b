//! Errors of the outbox and the publisher.

/// Why the outbox could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Enqueueing the event would exceed the outbox bound; nothing was written.
    #[error("audit outbox full ({events} events, {bytes} bytes queued)")]
    Full {
        /// Events queued.
        events: u64,
        /// Bytes queued.
        bytes: u64,
    },
    /// The database failed.
    #[error("audit outbox storage failed: {0}")]
    Storage(#[source] Box<redb::Error>),
    /// The outbox tables hold something this code did not write.
    #[error("audit outbox is corrupt: {0}")]
    Corrupt(String),
}

impl OutboxError {
    fn storage(err: impl Into<redb::Error>) -> Self {
        OutboxError::Storage(Box::new(err.into()))
    }
}

impl From<redb::Error> for OutboxError {
    fn from(err: redb::Error) -> Self {
        OutboxError::storage(err)
    }
}

impl From<redb::StorageError> for OutboxError {
    fn from(err: redb::StorageError) -> Self {
        OutboxError::storage(err)
    }
}

impl From<redb::TableError> for OutboxError {
    fn from(err: redb::TableError) -> Self {
        OutboxError::storage(err)
    }
}

impl From<redb::TransactionError> for OutboxError {
    fn from(err: redb::TransactionError) -> Self {
        OutboxError::storage(err)
    }
}

impl From<redb::CommitError> for OutboxError {
    fn from(err: redb::CommitError) -> Self {
        OutboxError::storage(err)
    }
}

/// Why a publisher could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    /// The collector URL is not a valid URI.
    #[error("invalid collector url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The collector token cannot travel in a header (it is never echoed).
    #[error("invalid collector token: not printable ascii")]
    InvalidToken,
    /// The batch limits exceed what the wire contract allows.
    #[error("invalid batch limits: {0}")]
    InvalidLimits(String),
    /// The receipt store cannot be opened.
    #[error("cannot start receipts: {0}")]
    Receipts(String),
}
