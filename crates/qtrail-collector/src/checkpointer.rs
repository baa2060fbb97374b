//! The checkpointer: signs a checkpoint of every location's chain head at a fixed interval, and
//! a last one when the collector stops (see `qtrail_cadf::checkpoint` for what they prove).
//!
//! Every location gets one at every tick, whether events arrived or not: an idle period still
//! leaves signed evidence of where the chain stood, and a gap in the checkpoints' times shows
//! when the collector was not running. The head comes from the collector row, which the writer
//! updates in the transaction that stores the records, so it names a stored position and hash.
//!
//! Each checkpoint also signs the same head as the location's Merkle tree: a C2SP
//! tlog-checkpoint note (origin `<prefix>/<location>`, tree size, root) signed with the same
//! key under the origin's name, which any note verifier can check and the tiles served under
//! `/tlog/<location>/` extend.
//!
//! With witnesses (`--witness-url`), the signed note is submitted to each before the checkpoint
//! is stored, and the cosignatures they answer are stored as lines of the note
//! ([`crate::cosignatures`]); a witness that does not cosign leaves the checkpoint without its line.
//!
//! Before signing, the newest checkpoint must be one this collector signed: its v1 signature
//! holds under the key, or under one of the previous keys it was given (a rotated key, matched
//! by key id), and its note opens under that same key and the origin (the v1 signature does not
//! cover the note, so the signed tree head is read from the note, never from the `tree_size`
//! and `root` fields; a newest checkpoint without a note counts only when no older one has
//! one). The tree must be consistent with that head (a consistency proof from the stored hashes
//! verifies against its root), and the chain must still fit: the record at its position must
//! have the hash it states. A chain or tree rewritten or cut while the collector was stopped
//! would otherwise get a fresh signature over the forged head at the next start. When it does
//! not fit, nothing is signed for that location (an error in the log, and
//! `qtrail_collector_checkpoint_failures_total`) until someone looks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use qtrail_cadf::checkpoint::{SigningKey, VerifyingKey};
use qtrail_cadf::{ChainHash, Location};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::{
    Checkpoint as TreeHead, NoteSigner, NoteVerifier, consistency_proof, open_note, sign_note, tree_hash,
    verify_consistency,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::cosignatures::Witnesses;
use crate::meters;
use crate::replica::Leadership;
use crate::store::{EventStore, Result, StoreError, TreeReader};
use crate::writer::now;

/// Reads the signing key in `path`.
///
/// # Errors
/// When the file cannot be read or holds no Ed25519 private key.
pub(crate) fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    let pem = std::fs::read(path).with_context(|| format!("failed to read the checkpoint key {}", path.display()))?;
    SigningKey::from_pem(&pem).with_context(|| format!("the checkpoint key {} is unusable", path.display()))
}

/// Reads a previous checkpoint key's public key in `path`.
///
/// # Errors
/// When the file cannot be read or holds no Ed25519 public key.
pub(crate) fn load_previous_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    let pem = std::fs::read(path)
        .with_context(|| format!("failed to read the previous checkpoint public key {}", path.display()))?;
    VerifyingKey::from_pem(&pem)
        .with_context(|| format!("the previous checkpoint public key {} is unusable", path.display()))
}

/// The key that signs checkpoints, and the public keys of the ones it replaced: the newest
/// checkpoint may be signed by any of them, so that a rotated key signs on.
#[derive(Debug)]
pub(crate) struct Keys {
    pub(crate) current: SigningKey,
    pub(crate) previous: Vec<VerifyingKey>,
}

impl Keys {
    /// Returns the raw public keys, the current one first, for note verifiers.
    pub(crate) fn public_keys(&self) -> Vec<[u8; 32]> {
        std::iter::once(self.current.public_key()).chain(self.previous.iter().map(VerifyingKey::raw)).collect()
    }

    /// Returns the key among these whose id is `key_id`.
    fn verifying(&self, key_id: &str) -> Option<VerifyingKey> {
        if key_id == self.current.id() {
            return VerifyingKey::from_pem(self.current.public_pem().as_bytes()).ok();
        }
        self.previous.iter().find(|key| key.id() == key_id).cloned()
    }
}

/// Signs and stores one checkpoint of every location while `fence` says this replica is the
/// signer. A location that fails is logged and counted, and the others still get theirs.
///
/// # Errors
/// When the collectors cannot be listed.
pub(crate) fn checkpoint_all(
    store: &dyn EventStore,
    keys: &Keys,
    origin_prefix: &str,
    witnesses: Option<&Witnesses>,
    fence: &Fence,
) -> Result<()> {
    for collector in store.collectors()? {
        match checkpoint(store, keys, origin_prefix, witnesses, &collector, fence) {
            Ok(Some(checkpoint)) => {
                debug!(location = %checkpoint.location, number = checkpoint.number,
                       location_seq = checkpoint.location_seq, "checkpoint signed");
                meters::checkpoint_signed(&checkpoint.location, checkpoint.time.map_or(0, |time| time.seconds));
            }
            Ok(None) => {
                info!(location = %collector.location, "not the checkpoint signer any more, not signing");
                return Ok(());
            }
            Err(err) => {
                error!(location = %collector.location, error = %err, "cannot sign a checkpoint");
                meters::checkpoint_failed();
            }
        }
    }
    Ok(())
}

/// Says, just before a checkpoint is stored, whether this collector still is the one that
/// signs (see `crate::replica::leadership`); a collector alone over its store always is.
pub(crate) type Fence = dyn Fn() -> bool + Send + Sync;

/// Returns the transparency-log origin of `location`: its checkpoint notes' first line and the
/// name of their key.
pub(crate) fn log_origin(prefix: &str, location: &str) -> String {
    format!("{prefix}/{location}")
}

fn checkpoint(
    store: &dyn EventStore,
    keys: &Keys,
    origin_prefix: &str,
    witnesses: Option<&Witnesses>,
    collector: &proto::Collector,
    fence: &Fence,
) -> Result<Option<proto::Checkpoint>> {
    let location: Location = collector
        .location
        .parse()
        .map_err(|err| StoreError::Corrupt(format!("collector `{}`: {err}", collector.location)))?;
    let head = match ChainHash::from_slice(&collector.head_chain_hash) {
        Some(head) => head,
        None if collector.head_chain_hash.is_empty() && collector.event_count == 0 => ChainHash::GENESIS,
        None => {
            return Err(StoreError::Corrupt(format!(
                "collector `{location}` has a head_chain_hash of {} bytes for {} events",
                collector.head_chain_hash.len(),
                collector.event_count
            )));
        }
    };
    // A damaged newest entry leaves no number to follow: signing stops (and is counted as
    // failing) until someone looks, rather than signing over damaged evidence.
    let newest = store
        .checkpoints(&location, None, 1)?
        .into_iter()
        .next()
        .map(|entry| entry.checkpoint.map_err(StoreError::Corrupt))
        .transpose()?;
    let size = collector.event_count;
    let root = tree_hash(size, &TreeReader { store, location: &location })
        .map_err(|err| crate::store::tree_error(location.as_str(), &err))?;
    let origin = log_origin(origin_prefix, location.as_str());
    if let Some(newest) = &newest {
        if let Some((old, old_root)) = signed_head(store, &location, keys, &origin, newest)? {
            fits_tree(store, &location, newest.number, (old, &old_root), size, &root)?;
        }
        fits_chain(store, &location, newest)?;
    }
    let key = &keys.current;
    let text = qtrail_tlog::Checkpoint { origin: origin.clone(), size, root, extensions: Vec::new() }.to_text();
    let note = NoteSigner::new(&origin, key.key_pair())
        .and_then(|signer| sign_note(&text, &signer))
        .map_err(|err| StoreError::Corrupt(format!("cannot sign the tree head of `{location}`: {err}")))?;
    let note = match witnesses {
        Some(witnesses) => {
            let reader = TreeReader { store, location: &location };
            let prove = |old| consistency_proof(old, size, &reader).map_err(|err| err.to_string());
            witnesses.cosign_blocking(&origin, note, size, &prove)
        }
        None => note,
    };
    let mut checkpoint = proto::Checkpoint {
        location: location.to_string(),
        number: newest.map_or(0, |newest| newest.number) + 1,
        location_seq: size,
        head_chain_hash: head.as_bytes().to_vec(),
        time: Some(now()),
        note,
        tree_size: size,
        root: root.to_vec(),
        ..Default::default()
    };
    // Last, after the witnesses (which may take seconds): another replica may have taken over.
    if !fence() {
        return Ok(None);
    }
    key.sign(&mut checkpoint);
    store.add_checkpoint(&checkpoint)?;
    Ok(Some(checkpoint))
}

/// Returns the tree head (size, root) that `newest` signed, read from its note under the key
/// among `keys` that signed it and this collector's origin: the v1 signature does not cover
/// the note or the `tree_size` and `root` fields, so only the note's own signature makes them
/// evidence. `None` for a checkpoint signed before the tree, which is only one when no older
/// checkpoint has a note (otherwise a blanked note would skip the check).
///
/// # Errors
/// [`StoreError::Corrupt`] when `newest` is not signed by one of `keys` (also after a key change
/// without the old key among the previous ones: this collector cannot tell another key's
/// checkpoint from a forged one), its note does not open under that key and `origin` (also
/// after a prefix change), or its note was removed.
fn signed_head(
    store: &dyn EventStore,
    location: &Location,
    keys: &Keys,
    origin: &str,
    newest: &proto::Checkpoint,
) -> Result<Option<(u64, qtrail_tlog::Hash)>> {
    let refuse = |why: String| {
        StoreError::Corrupt(format!(
            "checkpoint {} of `{location}` is not evidence this collector can build on: {why}: not signing",
            newest.number
        ))
    };
    let Some(key) = keys.verifying(&newest.key_id) else {
        return Err(refuse(format!(
            "it is signed by key {}, neither this collector's nor a previous one",
            newest.key_id
        )));
    };
    key.verify(newest).map_err(|err| refuse(err.to_string()))?;
    if newest.note.is_empty() {
        return match older_note(store, location, newest.number)? {
            Some(number) => Err(refuse(format!("it has no tree note, but checkpoint {number} has one"))),
            None => Ok(None),
        };
    }
    // Only the key that made the v1 signature may open the note: one checkpoint, one signer.
    let verifier = NoteVerifier::new(origin, key.raw()).map_err(|err| refuse(err.to_string()))?;
    let head = open_note(&newest.note, &[verifier]).and_then(TreeHead::parse).map_err(|err| {
        refuse(format!("its note does not open as a checkpoint of `{origin}` by key {}: {err}", key.id()))
    })?;
    if head.origin != origin {
        return Err(refuse(format!("its note names the log `{}`, not `{origin}`", head.origin)));
    }
    Ok(Some((head.size, head.root)))
}

/// Returns the number of the newest checkpoint of `location` below `below` that has a tree
/// note. Only reached when the newest has none, which is once after an upgrade.
///
/// # Errors
/// When the store cannot list the checkpoints.
fn older_note(store: &dyn EventStore, location: &Location, below: u64) -> Result<Option<u64>> {
    const PAGE: usize = 256;
    let mut before = below;
    loop {
        let page = store.checkpoints(location, Some(before), PAGE)?;
        let noted =
            page.iter().find(|entry| entry.checkpoint.as_ref().is_ok_and(|checkpoint| !checkpoint.note.is_empty()));
        if let Some(entry) = noted {
            return Ok(Some(entry.number));
        }
        match page.last() {
            Some(last) if page.len() == PAGE && last.number < before => before = last.number,
            _ => return Ok(None),
        }
    }
}

/// Checks that the tree of `location` at `size` with hash `root` extends the tree head
/// `(old, old_root)` that checkpoint `number` signed (same size ⇒ same root).
///
/// # Errors
/// [`StoreError::Corrupt`] naming the checkpoint when it does not.
fn fits_tree(
    store: &dyn EventStore,
    location: &Location,
    number: u64,
    (old, old_root): (u64, &qtrail_tlog::Hash),
    size: u64,
    root: &qtrail_tlog::Hash,
) -> Result<()> {
    let refuse = |why: String| {
        StoreError::Corrupt(format!(
            "the tree of `{location}` is not consistent with checkpoint {number}: {why}: not signing over it"
        ))
    };
    if old > size {
        return Err(refuse(format!("it signed {old} leaves, the tree has {size}")));
    }
    let proof = consistency_proof(old, size, &TreeReader { store, location })
        .map_err(|err| crate::store::tree_error(location.as_str(), &err))?;
    verify_consistency(old, size, old_root, root, &proof).map_err(|err| refuse(err.to_string()))
}

/// Checks that the chain of `location` still has, at the position `checkpoint` covers, the hash
/// it states.
///
/// # Errors
/// [`StoreError::Corrupt`] naming the checkpoint when it does not.
fn fits_chain(store: &dyn EventStore, location: &Location, checkpoint: &proto::Checkpoint) -> Result<()> {
    let seq = checkpoint.location_seq;
    let stored = if seq == 0 {
        Some(ChainHash::GENESIS)
    } else {
        let record = store.chain_records(location, seq, 1)?.into_iter().next();
        record
            .filter(|entry| entry.location_seq == seq)
            .and_then(|entry| entry.record)
            .and_then(|record| ChainHash::from_slice(&record.chain_hash))
    };
    if stored.is_some() && stored == qtrail_cadf::checkpoint::head_of(checkpoint) {
        return Ok(());
    }
    Err(StoreError::Corrupt(format!(
        "the chain of `{location}` no longer fits checkpoint {} (location_seq {seq}): not signing over it",
        checkpoint.number
    )))
}

/// Signs checkpoints every `interval` while `leadership` says this replica leads, until `stop`
/// is cancelled, then a last one if it still leads. The caller cancels once the writer has
/// stopped, so that the last one covers everything stored.
pub(crate) async fn run(
    store: Arc<dyn EventStore>,
    keys: Keys,
    origin_prefix: String,
    witnesses: Option<Witnesses>,
    interval: Duration,
    leadership: Arc<Leadership>,
    stop: CancellationToken,
) {
    let previous: Vec<&str> = keys.previous.iter().map(VerifyingKey::id).collect();
    let witness_names = witnesses.as_ref().map(Witnesses::names).unwrap_or_default();
    info!(key_id = keys.current.id(), previous_key_ids = ?previous, interval_secs = interval.as_secs_f64(),
          witnesses = ?witness_names, "signing checkpoints");
    let (keys, origin_prefix, witnesses) = (Arc::new(keys), Arc::new(origin_prefix), Arc::new(witnesses));
    let runtime = tokio::runtime::Handle::current();
    let fence: Arc<Fence> = {
        let leadership = leadership.clone();
        Arc::new(move || runtime.block_on(leadership.ensure_leader()))
    };
    let mut role = leadership.role();
    loop {
        // Replicas over a shared store take turns: only the leader signs.
        tokio::select! {
            () = role.wait_until(true) => {}
            () = stop.cancelled() => return,
        }
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: a checkpoint at start shows where the chain stood then.
        loop {
            let stopping = tokio::select! {
                _ = ticks.tick() => false,
                () = stop.cancelled() => true,
                () = role.wait_until(false) => break,
            };
            let (store, keys, prefix) = (store.clone(), keys.clone(), origin_prefix.clone());
            let (witnesses, fence) = (witnesses.clone(), fence.clone());
            let signing =
                move || checkpoint_all(store.as_ref(), &keys, &prefix, witnesses.as_ref().as_ref(), fence.as_ref());
            match tokio::task::spawn_blocking(signing).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => warn!(error = %err, "cannot sign checkpoints"),
                Err(err) => warn!(error = %err, "checkpoint task failed"),
            }
            if stopping {
                return;
            }
        }
    }
}
