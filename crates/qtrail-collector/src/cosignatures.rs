//! The log's side of C2SP tlog-witness: every checkpoint note the checkpointer signs is posted
//! to each witness given (`--witness-url` with its `--witness-verifier-key`) with a consistency
//! proof from the size that witness last cosigned, and the cosignature lines it answers are
//! checked with its key and appended to the note before the checkpoint is stored, so the served
//! checkpoint (`/tlog/<location>/checkpoint`, ListCheckpoints, GetConsistencyProof) carries them.
//!
//! The size a witness holds is remembered per log in memory, from 0 at start: a `409 Conflict`
//! answer names the witness's size, and the request is made once more from it. A witness that
//! holds a larger tree than ours (a rollback) or refuses the proof (a fork) is not asked again
//! for that checkpoint. A witness that fails, refuses or times out costs its cosignature only:
//! the checkpoint is stored without it (warning, `qtrail_collector_cosignatures_total{result="failed"}`),
//! and ingest never waits on a witness.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use prost::bytes::Bytes;
use qtrail_tlog::{AddCheckpoint, CosignatureVerifier, Hash, parse_conflict_size};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::meters;

/// How long one request to a witness may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of a witness's answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One witness: where it listens and the key of its cosignatures.
#[derive(Debug)]
struct Witness {
    /// The submission prefix, without a trailing slash.
    url: String,
    verifier: CosignatureVerifier,
    /// The size it last cosigned of each origin, as far as this collector knows.
    known: Mutex<HashMap<String, u64>>,
}

/// The witnesses this collector submits its checkpoints to.
#[derive(Debug)]
pub(crate) struct Witnesses {
    witnesses: Vec<Witness>,
}

/// An answer of a witness.
struct Answer {
    status: u16,
    size_body: bool,
    body: String,
}

impl Witnesses {
    /// Returns the witnesses of `config`: (submission prefix, cosignature verifier key) pairs;
    /// `None` for none.
    ///
    /// # Errors
    /// When a URL is not http, or a key is not a cosignature verifier key.
    pub(crate) fn new(config: &[(String, String)]) -> anyhow::Result<Option<Self>> {
        let mut witnesses = Vec::new();
        for (url, key) in config {
            if !url.starts_with("http://") || url.parse::<axum::http::Uri>().is_err() {
                anyhow::bail!("--witness-url `{url}` is not an http:// url");
            }
            let verifier = CosignatureVerifier::parse(key)
                .map_err(|err| anyhow::anyhow!("--witness-verifier-key `{key}`: {err}"))?;
            witnesses.push(Witness { url: url.trim_end_matches('/').to_owned(), verifier, known: Mutex::default() });
        }
        Ok((!witnesses.is_empty()).then_some(Self { witnesses }))
    }

    /// Returns the names of the witnesses.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.witnesses.iter().map(|witness| witness.verifier.name()).collect()
    }

    /// Returns `note` (a checkpoint of `origin` with `size` leaves) with the cosignature lines of
    /// every witness that cosigned it; `prove(old)` returns the consistency proof from `old`.
    /// Blocks the calling (blocking-pool) thread on the requests.
    pub(crate) fn cosign_blocking(
        &self,
        origin: &str,
        note: String,
        size: u64,
        prove: &dyn Fn(u64) -> Result<Vec<Hash>, String>,
    ) -> String {
        let handle = tokio::runtime::Handle::current();
        let mut cosigned = note.clone();
        let text = note.rfind("\n\n").map_or("", |split| &note[..=split]);
        for witness in &self.witnesses {
            let name = witness.verifier.name();
            match handle.block_on(witness.submit(origin, &note, text, size, prove)) {
                Ok(lines) => {
                    debug!(witness = name, origin, size, "checkpoint cosigned");
                    meters::cosignature(name, true);
                    cosigned.push_str(&lines);
                }
                Err(why) => {
                    warn!(witness = name, url = %witness.url, origin, size, why = %why, "no cosignature for a checkpoint");
                    meters::cosignature(name, false);
                }
            }
        }
        cosigned
    }
}

impl Witness {
    /// Posts the checkpoint from the size this witness holds, once more after a `409` naming
    /// another; returns its valid cosignature lines.
    async fn submit(
        &self,
        origin: &str,
        note: &str,
        text: &str,
        size: u64,
        prove: &dyn Fn(u64) -> Result<Vec<Hash>, String>,
    ) -> Result<String, String> {
        let mut old = self.known(origin).min(size);
        for attempt in 0..2 {
            let proof = if old == 0 { Vec::new() } else { prove(old)? };
            let body = AddCheckpoint { old, proof, note: note.to_owned() }.to_body();
            let answer = tokio::time::timeout(TIMEOUT, post(&format!("{}/add-checkpoint", self.url), body))
                .await
                .map_err(|_| format!("no answer within {}s", TIMEOUT.as_secs()))??;
            match answer.status {
                200 => {
                    let lines = self.valid_lines(text, &answer.body)?;
                    self.remember(origin, size);
                    return Ok(lines);
                }
                409 if answer.size_body && attempt == 0 => {
                    let held = parse_conflict_size(&answer.body).map_err(|err| err.to_string())?;
                    self.remember(origin, held);
                    if held > size {
                        return Err(format!(
                            "the witness holds a tree of {held} leaves, larger than this log's {size}: it was rolled back"
                        ));
                    }
                    old = held;
                }
                status => {
                    let why: String = answer.body.trim().chars().take(200).collect();
                    return Err(format!("the witness answered {status}: {why}"));
                }
            }
        }
        Err("the witness changed its size twice in a row".into())
    }

    /// Returns the lines of `answer` that are valid cosignatures of `text` by this witness.
    fn valid_lines(&self, text: &str, answer: &str) -> Result<String, String> {
        let lines: String =
            answer.split_inclusive('\n').filter(|line| self.verifier.verify_lines(text, line).is_ok()).collect();
        if lines.is_empty() {
            return Err("the witness answered no valid cosignature by its key".into());
        }
        Ok(lines)
    }

    fn known(&self, origin: &str) -> u64 {
        self.known.lock().unwrap_or_else(PoisonError::into_inner).get(origin).copied().unwrap_or(0)
    }

    fn remember(&self, origin: &str, size: u64) {
        self.known.lock().unwrap_or_else(PoisonError::into_inner).insert(origin.to_owned(), size);
    }
}

/// Posts `body` to `url` (plain http), returning the status, whether the body is a
/// `text/x.tlog.size`, and up to 64 KiB of the body.
async fn post(url: &str, body: String) -> Result<Answer, String> {
    let uri: axum::http::Uri = url.parse().map_err(|_| "invalid url".to_owned())?;
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|err| format!("connect failed: {err}"))?;
    let authority = uri.authority().map(|authority| authority.as_str().to_owned()).unwrap_or_default();
    let request = axum::http::Request::post(uri.path_and_query().map_or("/", |path| path.as_str()))
        .header("host", authority)
        .header("content-type", "text/plain; charset=utf-8")
        .header("user-agent", concat!("qtrail-collector/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(Bytes::from(body)))
        .map_err(|err| format!("bad request: {err}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|err| format!("http failed: {err}"))?;
    let driver = tokio::spawn(connection);
    let answered = async {
        let response = sender.send_request(request).await.map_err(|err| format!("http failed: {err}"))?;
        let status = response.status().as_u16();
        let size_body = response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(qtrail_tlog::SIZE_CONTENT_TYPE.as_bytes()));
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|err| format!("cannot read the answer: {err}"))?
            .to_bytes();
        Ok(Answer { status, size_body, body: String::from_utf8_lossy(&body).into_owned() })
    }
    .await;
    driver.abort();
    answered
}
