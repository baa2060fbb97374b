//! Errors of the CLI and the exit codes scripts can rely on.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other error |
//! | 2 | bad usage: unknown flag, bad value, missing setting |
//! | 3 | not found |
//! | 4 | not authenticated or not permitted |
//! | 5 | service unavailable or unreachable |
//! | 6 | request refused: invalid argument, already exists, failed precondition, overload |
//! | 10 | `events verify`: the hash chain does not hold, or does not lead to `--expect-head`, or a signed checkpoint does not hold (also `events checkpoints --public-key`); `proof verify`: the proof, its signature or `--event` does not hold |

use tonic::Code;

/// Everything that can end a `qtrail` command unsuccessfully.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or the settings are incomplete or wrong.
    #[error("{0}")]
    Usage(String),
    /// A server could not be reached.
    #[error("cannot connect to the {service} at {url}: {detail}")]
    Connect {
        /// Which service (`runtime`, `collector`).
        service: &'static str,
        /// The address tried.
        url: String,
        /// Why it failed.
        detail: String,
    },
    /// A server answered with an error, or the connection failed during the call (then the
    /// status carries the transport error as its source, which the message includes: a server
    /// refusing our TLS client certificate shows only that way).
    #[error("{}", rpc_text(.0))]
    Rpc(tonic::Status),
    /// `events verify` found the chain broken.
    #[error("chain broken at location_seq {seq}: {kind}: {detail}")]
    ChainBroken {
        /// First bad position.
        seq: u64,
        /// What is wrong there.
        kind: String,
        /// Details.
        detail: String,
    },
    /// `events verify --expect-head`: the chain holds but does not lead to the expected head.
    #[error("chain head at location_seq {seq} is {found}, expected {expected}: the history up to there was rewritten")]
    HeadMismatch {
        /// The position whose head was compared.
        seq: u64,
        /// The head the chain leads to.
        found: String,
        /// The head kept out of band.
        expected: String,
    },
    /// `events verify --expect-head`: the chain ends before the position whose head was kept.
    #[error("the chain ends at location_seq {end}, before {expected_seq} whose head was kept: events were removed")]
    ChainShort {
        /// The last position of the chain.
        end: u64,
        /// The position whose head was kept.
        expected_seq: u64,
    },
    /// A signed checkpoint does not hold: a bad signature, another key, or numbers missing.
    #[error("checkpoints of {location} do not hold: {detail}")]
    Checkpoint {
        /// The location.
        location: String,
        /// What is wrong.
        detail: String,
    },
    /// `proof verify`: the proof file does not prove its event, or not the `--event` given.
    #[error("proof does not hold: {0}")]
    Proof(String),
    /// `archive verify|restore`: a range of the archive does not verify.
    #[error("archive does not hold: {0}")]
    Archive(String),
    /// `archive verify|restore`: the object store cannot be read.
    #[error("archive unreachable: {0}")]
    ArchiveStore(String),
    /// Reading or writing a local file failed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing the output failed (e.g. a closed pipe).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        CliError::Rpc(status)
    }
}

/// Returns `<code>: <message>`, followed by the transport error behind a status that the
/// connection, not the server, produced.
fn rpc_text(status: &tonic::Status) -> String {
    let code = code_name(status.code());
    let Some(source) = std::error::Error::source(status) else {
        return format!("{code}: {}", status.message());
    };
    let chain = qtrail_server::tls::error_chain(source);
    // The message is often the source's own text (`transport error`): say it once.
    if chain.starts_with(status.message()) {
        format!("{code}: {chain}")
    } else {
        format!("{code}: {}: {chain}", status.message())
    }
}

impl CliError {
    /// Returns the process exit code for this error (see the module table).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Connect { .. } => 5,
            // The connection broke during the call (a status with a transport error behind it
            // and no code of its own): the server was not reachable as needed.
            CliError::Rpc(status)
                if matches!(status.code(), Code::Unknown | Code::Internal | Code::Cancelled)
                    && std::error::Error::source(status).is_some() =>
            {
                5
            }
            CliError::ChainBroken { .. }
            | CliError::HeadMismatch { .. }
            | CliError::ChainShort { .. }
            | CliError::Checkpoint { .. }
            | CliError::Proof(_)
            | CliError::Archive(_) => 10,
            CliError::ArchiveStore(_) => 5,
            CliError::File { .. } | CliError::Output(_) => 1,
            CliError::Rpc(status) => match status.code() {
                Code::NotFound => 3,
                Code::Unauthenticated | Code::PermissionDenied => 4,
                Code::Unavailable | Code::DeadlineExceeded => 5,
                Code::InvalidArgument
                | Code::AlreadyExists
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::ResourceExhausted
                | Code::Aborted => 6,
                Code::Ok | Code::Cancelled | Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => 1,
            },
        }
    }
}

/// Returns a gRPC code as lowercase words, e.g. `not found`.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_documented_exit_codes() {
        let cases = [
            (Code::NotFound, 3),
            (Code::Unauthenticated, 4),
            (Code::PermissionDenied, 4),
            (Code::Unavailable, 5),
            (Code::InvalidArgument, 6),
            (Code::AlreadyExists, 6),
            (Code::FailedPrecondition, 6),
            (Code::Internal, 1),
        ];
        for (code, exit) in cases {
            assert_eq!(CliError::Rpc(tonic::Status::new(code, "x")).exit_code(), exit, "{code:?}");
        }
        let err = CliError::Rpc(tonic::Status::not_found("job `j-1` not found"));
        assert_eq!(err.to_string(), "not found: job `j-1` not found");
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::ChainBroken { seq: 3, kind: "modified".into(), detail: String::new() }.exit_code(), 10);
        assert_eq!(CliError::Proof("invalid inclusion proof".into()).exit_code(), 10);
    }

    #[test]
    fn a_status_the_connection_produced_names_its_cause_and_exits_as_unreachable() {
        let cause = std::io::Error::other("received fatal alert: UnknownCA");
        let status = tonic::Status::from_error(Box::new(cause));
        let err = CliError::Rpc(status);
        assert_eq!(err.exit_code(), 5);
        assert_eq!(err.to_string(), "unknown error: received fatal alert: UnknownCA");
        // A status the server chose keeps its code's exit, whatever is behind it.
        let mut exhausted = tonic::Status::resource_exhausted("slow down");
        exhausted.set_source(std::sync::Arc::new(std::io::Error::other("enhance your calm")));
        assert_eq!(CliError::Rpc(exhausted).exit_code(), 6);
    }
}
