//! A C2SP tlog-witness: it keeps the newest checkpoint of every log it watches and cosigns a
//! new one (C2SP tlog-cosignature, `cosignature/v1`) only when the log's signature holds and a
//! consistency proof shows it extends the one it holds. Two views of one log (a fork: two copies
//! of a data dir that diverged) or a log that went back (a restored old data dir) cannot both get
//! its cosignature, so an auditor who requires it (`qtrail events verify --witness-key`) sees
//! one view only.
//!
//! Served at `POST <http side>/witness/add-checkpoint` ([`http`]), the submission prefix being
//! `<http side>/witness`. The rules, in the spec's order: a malformed body is 400; an origin it
//! does not watch 404; no valid signature of that log's key 403; `old` above the checkpoint's
//! size 400; `old` other than the size it holds 409 with that size (`text/x.tlog.size`); the
//! same size with another root (a fork) 409; a proof that does not verify 422. Only then is the
//! checkpoint recorded — durably, before answering ([`state`]) — and cosigned. The check and the
//! record happen under one lock, so concurrent requests cannot roll the state back.

pub mod http;
mod state;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use qtrail_cadf::checkpoint::SigningKey;
use qtrail_tlog::{
    AddCheckpoint, Checkpoint as TreeHead, CosignatureVerifier, Cosigner, EMPTY_TREE_HASH, NoteVerifier, open_note,
    verify_consistency,
};
use tracing::{info, warn};

use self::state::{LogHead, State};
use crate::meters;

/// Why a checkpoint was not cosigned; each maps to the status the spec names.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// 400: not an add-checkpoint body, or `old` above the checkpoint's size.
    #[error("{0}")]
    Malformed(String),
    /// 404: a log the witness does not watch.
    #[error("unknown log `{0}`")]
    UnknownLog(String),
    /// 403: no valid signature of the log's key.
    #[error("the checkpoint is not signed by the key of `{0}`")]
    Forbidden(String),
    /// 409 with the size held: `old` is not the size the witness holds.
    #[error("old size {old} does not match the size {size} the witness holds")]
    OldSize { old: u64, size: u64 },
    /// 409: the same size as held with another root hash.
    #[error("a checkpoint of size {size} with another root hash was cosigned: the log forked")]
    Fork { size: u64 },
    /// 422: the consistency proof does not verify.
    #[error("the consistency proof from {old} to {size} does not verify")]
    BadProof { old: u64, size: u64 },
    /// 500: the witness cannot record the checkpoint.
    #[error("cannot record the checkpoint")]
    Internal,
}

impl Refusal {
    /// The metric label of this refusal.
    fn label(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::UnknownLog(_) => "unknown_log",
            Refusal::Forbidden(_) => "forbidden",
            Refusal::OldSize { .. } => "conflict",
            Refusal::Fork { .. } => "fork",
            Refusal::BadProof { .. } => "bad_proof",
            Refusal::Internal => "internal",
        }
    }
}

/// A witness: its key and name, the logs it watches, and what it holds of each.
#[derive(Debug)]
pub struct Witness {
    name: String,
    key: SigningKey,
    logs: HashMap<String, NoteVerifier>,
    state: Mutex<State>,
}

impl Witness {
    /// Opens the witness named `name` signing with `key`, watching the logs of the note verifier
    /// keys `logs` (each key's name is its log's origin), with its state in `dir`.
    ///
    /// # Errors
    /// A bad name, two keys for one origin, or a state that cannot be read.
    pub fn open(dir: &Path, key: SigningKey, name: &str, logs: Vec<NoteVerifier>) -> anyhow::Result<Self> {
        Cosigner::new(name, key.key_pair())
            .map_err(|err| anyhow::anyhow!("the witness name `{name}` is not a valid key name: {err}"))?;
        let mut watched = HashMap::new();
        for log in logs {
            let origin = log.name().to_owned();
            if watched.insert(origin.clone(), log).is_some() {
                anyhow::bail!("the log `{origin}` is given twice to the witness");
            }
        }
        let state = State::open(dir)?;
        Ok(Self { name: name.to_owned(), key, logs: watched, state: Mutex::new(state) })
    }

    /// Returns the verifier key of this witness's cosignatures.
    pub fn verifier(&self) -> CosignatureVerifier {
        self.cosigner().verifier()
    }

    /// Returns the origins watched.
    pub fn origins(&self) -> Vec<&str> {
        self.logs.keys().map(String::as_str).collect()
    }

    fn cosigner(&self) -> Cosigner<'_> {
        // The name was checked when the witness was opened.
        Cosigner::new(&self.name, self.key.key_pair()).expect("checked at open")
    }

    /// Handles an add-checkpoint body: returns the cosignature line, or why there is none.
    /// Blocks on the state file's sync.
    ///
    /// # Errors
    /// A [`Refusal`], as the module docs list.
    pub fn add_checkpoint(&self, body: &str) -> Result<String, Refusal> {
        let answered = self.judge(body);
        let result = answered.as_ref().map_or_else(Refusal::label, |_| "cosigned");
        meters::witness_answered(result);
        answered
    }

    fn judge(&self, body: &str) -> Result<String, Refusal> {
        let request = AddCheckpoint::parse(body).map_err(|err| Refusal::Malformed(err.to_string()))?;
        let origin = request.note.split('\n').next().unwrap_or_default();
        let log = self.logs.get(origin).ok_or_else(|| Refusal::UnknownLog(origin.chars().take(256).collect()))?;
        let text =
            open_note(&request.note, std::slice::from_ref(log)).map_err(|_| Refusal::Forbidden(origin.to_owned()))?;
        let head = TreeHead::parse(text).map_err(|err| Refusal::Malformed(err.to_string()))?;
        if request.old > head.size {
            return Err(Refusal::Malformed(format!(
                "old size {} exceeds the checkpoint size {}",
                request.old, head.size
            )));
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let held = state.get(origin);
        let (held_size, held_root) = match held {
            Some(held) => (held.size, held.root_hash().ok_or(Refusal::Internal)?),
            None => (0, EMPTY_TREE_HASH),
        };
        if request.old != held_size {
            warn!(
                origin,
                old = request.old,
                size = head.size,
                held = held_size,
                "refused a checkpoint: old size mismatch"
            );
            return Err(Refusal::OldSize { old: request.old, size: held_size });
        }
        if head.size == held_size && head.root != held_root && held.is_some() {
            warn!(origin, size = head.size, held_root = %BASE64.encode(held_root), root = %BASE64.encode(head.root),
                  "refused a checkpoint: same size, another root: the log forked");
            return Err(Refusal::Fork { size: head.size });
        }
        let empty_root_differs = head.size == 0 && head.root != EMPTY_TREE_HASH;
        if empty_root_differs
            || verify_consistency(held_size, head.size, &held_root, &head.root, &request.proof).is_err()
        {
            warn!(
                origin,
                old = held_size,
                size = head.size,
                "refused a checkpoint: its consistency proof does not verify: the log forked or was rewritten"
            );
            return Err(Refusal::BadProof { old: held_size, size: head.size });
        }
        let time = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let line = self.cosigner().cosign(text, time).map_err(|_| Refusal::Internal)?;
        let record = LogHead { size: head.size, root: BASE64.encode(head.root), note: request.note.clone() };
        state.put(origin, record).map_err(|err| {
            warn!(origin, error = %err, "cannot record a checkpoint: not cosigning it");
            Refusal::Internal
        })?;
        info!(origin, size = head.size, "cosigned a checkpoint");
        Ok(line)
    }
}

#[cfg(test)]
mod tests;
