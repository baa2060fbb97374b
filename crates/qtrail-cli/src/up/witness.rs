//! The witness `qtrail up` runs: a C2SP tlog-witness on a loopback port of its own, with its own
//! key (`witness-key.pem` in the data directory, mode 0600) and state (`witness/`), watching the
//! location's log; the collector submits every checkpoint to it, so `qtrail events verify
//! --witness-key` has a cosignature to require.

use std::path::Path;
use std::sync::Arc;

use qtrail_collector::witness::Witness;
use qtrail_tlog::NoteVerifier;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::keys::witness_key;
use crate::error::CliError;

/// The name of the witness's cosignatures.
const WITNESS_NAME: &str = "qtrail.local/up-witness";

/// A witness serving on its own port.
#[derive(Debug)]
pub(super) struct UpWitness {
    /// Its submission prefix.
    pub(super) url: String,
    /// Its cosignature verifier key.
    pub(super) key: String,
    task: JoinHandle<std::io::Result<()>>,
    stop: CancellationToken,
}

impl UpWitness {
    /// Starts the witness of `dir` on a loopback port, watching the log `origin` signed by the
    /// checkpoint key whose public half is `log_key`.
    ///
    /// # Errors
    /// Unusable key files, an unreadable witness state, or no port.
    pub(super) async fn start(dir: &Path, log_key: [u8; 32], origin: &str) -> Result<Self, CliError> {
        let usage = |err: String| CliError::Usage(format!("witness: {err}"));
        let log = NoteVerifier::new(origin, log_key).map_err(|err| usage(err.to_string()))?;
        let key = witness_key(dir)?;
        let witness = Witness::open(&dir.join("witness"), key, WITNESS_NAME, vec![log])
            .map_err(|err| usage(format!("{err:#}")))?;
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|err| usage(format!("cannot listen: {err}")))?;
        let addr = listener.local_addr().map_err(|err| usage(err.to_string()))?;
        let key = witness.verifier().to_string();
        let stop = CancellationToken::new();
        let task = tokio::spawn(qtrail_collector::witness::http::serve(
            listener,
            Arc::new(witness),
            stop.clone().cancelled_owned(),
        ));
        Ok(Self { url: format!("http://{addr}/witness"), key, task, stop })
    }

    /// Stops serving; called after the collector, whose last checkpoint it cosigns.
    pub(super) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
