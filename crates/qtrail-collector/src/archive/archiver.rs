//! The archiver task: at every interval, for every location, seals the ranges from the last
//! archived position + 1 up to the newest signed checkpoint, at most `max_events` a range
//! (more only when no checkpoint falls within that many), writes object then manifest, reads
//! both back and verifies them, and only then moves on.
//!
//! A kill -9 anywhere leaves either an object without a manifest (invisible to readers, and
//! overwritten or left over when the range is redone), or a complete manifest (puts are atomic)
//! that the next start reads back and verifies before trusting it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message as _;
use qtrail_cadf::checkpoint::{SigningKey, VerifyingKey};
use qtrail_cadf::{AuditEvent, Location};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::{NoteSigner, leaf_hash};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ArchiveError;
use super::format::{
    Frontier, FrontierNode, MANIFEST_SUFFIX, Manifest, OBJECT_SUFFIX, compress, event_line, frontier_indexes,
    range_name, sha256_hex,
};
use super::objects::{Archive, Listed};
use super::verify::verify_range;
use crate::retention::ArchiveProgress;
use crate::store::{EventStore, Result as StoreResult};

/// Events read from the store at a time while a range is written.
const READ_PAGE: usize = 1000;
/// Checkpoints read from the store at a time.
const CHECKPOINT_PAGE: usize = 256;

/// What the archiver is told.
#[derive(Debug, Clone)]
pub struct ArchiverConfig {
    /// Time between two rounds.
    pub every: Duration,
    /// Most events of one range, unless no checkpoint falls within that many.
    pub max_events: u64,
    /// Prefix of each location's log origin, `<prefix>/<location>`: the manifests' key name.
    pub origin_prefix: String,
}

/// Where a location's archive ends.
#[derive(Debug, Clone)]
struct Cursor {
    last: u64,
    checkpoint_number: u64,
    frontier: Frontier,
}

impl Cursor {
    fn empty() -> Self {
        Self { last: 0, checkpoint_number: 0, frontier: Frontier(Vec::new()) }
    }
}

/// A range ready to upload.
struct Sealed {
    listed: Listed,
    object: Vec<u8>,
    manifest: String,
    checkpoint_number: u64,
}

/// Archives every location of a store into one archive.
#[derive(Debug)]
pub struct Archiver {
    archive: Archive,
    store: Arc<dyn EventStore>,
    key: SigningKey,
    config: ArchiverConfig,
    cursors: Mutex<HashMap<String, Cursor>>,
}

impl Archiver {
    /// Returns an archiver of `store` into `archive`, signing manifests with `key`.
    pub fn new(archive: Archive, store: Arc<dyn EventStore>, key: SigningKey, config: ArchiverConfig) -> Self {
        Self { archive, store, key, config, cursors: Mutex::new(HashMap::new()) }
    }

    /// Runs rounds until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        info!(
            url = self.archive.url(),
            every_secs = self.config.every.as_secs_f64(),
            max_events = self.config.max_events,
            "archiving sealed ranges"
        );
        let mut ticks = tokio::time::interval(self.config.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            if let Err(err) = self.round(&stop).await {
                warn!(error = %err, "cannot archive");
            }
        }
    }

    /// Archives what is sealed in every location.
    ///
    /// # Errors
    /// When the collectors cannot be listed; a location that fails is logged and the others go on.
    pub async fn round(&self, stop: &CancellationToken) -> Result<(), ArchiveError> {
        let store = self.store.clone();
        let collectors = tokio::task::spawn_blocking(move || store.collectors())
            .await
            .map_err(|err| ArchiveError::Invalid(err.to_string()))??;
        for collector in collectors {
            let location = collector.location;
            while !stop.is_cancelled() {
                match self.archive_next(&location).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(err) => {
                        warn!(location = %location, error = %err, "cannot archive a range");
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Seals, uploads and verifies the next range of `location`; returns whether there was one.
    async fn archive_next(&self, location: &str) -> Result<bool, ArchiveError> {
        let cursor = self.cursor(location).await?;
        let Some(sealed) = self.seal(location, &cursor).await? else { return Ok(false) };
        let object_path = self
            .archive
            .path(location, &format!("{}{OBJECT_SUFFIX}", range_name(sealed.listed.first, sealed.listed.last)));
        // Object first: a manifest is only ever written once the object it names is in place.
        self.archive.put(&object_path, sealed.object).await?;
        self.archive.put(&sealed.listed.path, sealed.manifest.into_bytes()).await?;
        let keys = [self.verifying_key()?];
        let verified =
            verify_range(&self.archive, location, &sealed.listed, &keys, Some(&cursor.frontier), false).await?;
        info!(
            location,
            first = sealed.listed.first,
            last = sealed.listed.last,
            checkpoint = sealed.checkpoint_number,
            "range archived and verified"
        );
        let next = Cursor {
            last: sealed.listed.last,
            checkpoint_number: sealed.checkpoint_number,
            frontier: verified.frontier_after,
        };
        self.cursors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(location.to_owned(), next);
        Ok(true)
    }

    fn verifying_key(&self) -> Result<VerifyingKey, ArchiveError> {
        VerifyingKey::from_pem(self.key.public_pem().as_bytes()).map_err(|err| ArchiveError::Invalid(err.to_string()))
    }

    /// Returns where `location`'s archive ends: remembered, or found from the newest manifest,
    /// verified first. One that does not verify is never overwritten or deleted (puts are
    /// atomic, so no crash leaves one: it was changed, or signed by another key): the location
    /// is not archived further until someone looks.
    async fn cursor(&self, location: &str) -> Result<Cursor, ArchiveError> {
        if let Some(cursor) = self.cursors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(location) {
            return Ok(cursor.clone());
        }
        let keys = [self.verifying_key()?];
        let cursor = match self.archive.manifests(location).await?.pop() {
            None => Cursor::empty(),
            Some(newest) => {
                let range =
                    verify_range(&self.archive, location, &newest, &keys, None, false).await.map_err(|err| {
                        ArchiveError::Invalid(format!(
                            "the newest archived range {}..={} does not verify, so nothing more is archived: {err}",
                            newest.first, newest.last
                        ))
                    })?;
                Cursor {
                    last: range.manifest.last,
                    checkpoint_number: range.manifest.checkpoint_number,
                    frontier: range.frontier_after,
                }
            }
        };
        self.cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(location.to_owned(), cursor.clone());
        Ok(cursor)
    }

    /// Builds the next range after `cursor` from the store, if a checkpoint seals one.
    async fn seal(&self, location: &str, cursor: &Cursor) -> Result<Option<Sealed>, ArchiveError> {
        let store = self.store.clone();
        let location_owned = location.to_owned();
        let cursor_owned = cursor.clone();
        let max_events = self.config.max_events;
        let read =
            tokio::task::spawn_blocking(move || read_range(store.as_ref(), &location_owned, &cursor_owned, max_events));
        let Some(range) = read.await.map_err(|err| ArchiveError::Invalid(err.to_string()))?? else { return Ok(None) };
        let origin = crate::checkpointer::log_origin(&self.config.origin_prefix, location);
        let signer =
            NoteSigner::new(&origin, self.key.key_pair()).map_err(|err| ArchiveError::Invalid(err.to_string()))?;
        let object = compress(&range.lines)?;
        let covering = range.checkpoints.last().cloned().unwrap_or_default();
        let base = range_name(range.first, range.last);
        let manifest = Manifest {
            location: location.to_owned(),
            first: range.first,
            last: range.last,
            object: format!("{base}{OBJECT_SUFFIX}"),
            object_sha256: sha256_hex(&object),
            events: range.last - range.first + 1,
            root: range.root,
            checkpoint_note: covering.note.clone(),
            frontier: range.frontier.0,
            checkpoints: range.checkpoints.iter().map(|checkpoint| BASE64.encode(checkpoint.encode_to_vec())).collect(),
            checkpoint_number: covering.number,
        };
        let listed = Listed {
            first: range.first,
            last: range.last,
            path: self.archive.path(location, &format!("{base}{MANIFEST_SUFFIX}")),
        };
        Ok(Some(Sealed { listed, object, manifest: manifest.sign(&signer)?, checkpoint_number: covering.number }))
    }
}

/// A range as read from the store.
struct ReadRange {
    first: u64,
    last: u64,
    lines: String,
    root: qtrail_tlog::Hash,
    frontier: Frontier,
    checkpoints: Vec<proto::Checkpoint>,
}

/// Reads the next sealed range after `cursor`: its checkpoints, its frontier and its events as
/// lines, checked against the covering checkpoint's root.
fn read_range(
    store: &dyn EventStore,
    location: &str,
    cursor: &Cursor,
    max_events: u64,
) -> Result<Option<ReadRange>, ArchiveError> {
    let location: Location = location.parse().map_err(|err| ArchiveError::Invalid(format!("location: {err}")))?;
    let checkpoints = checkpoints_after(store, &location, cursor.checkpoint_number)?;
    let first = cursor.last + 1;
    let with_note = |checkpoint: &&proto::Checkpoint| !checkpoint.note.is_empty() && checkpoint.tree_size >= first;
    let within = checkpoints.iter().filter(with_note).rfind(|checkpoint| checkpoint.tree_size < first + max_events);
    let Some(covering) = within.or_else(|| checkpoints.iter().find(with_note)) else { return Ok(None) };
    let (last, number) = (covering.tree_size, covering.number);
    let indexes: Vec<u64> = frontier_indexes(first - 1).iter().map(|(_, index)| *index).collect();
    let hashes = store.read_hashes(&location, &indexes)?;
    let mut frontier = Frontier(
        frontier_indexes(first - 1)
            .iter()
            .zip(hashes)
            .map(|((level, _), hash)| FrontierNode { level: *level, hash })
            .collect(),
    );
    let before = frontier.clone();
    let mut lines = String::new();
    let mut next = first;
    while next <= last {
        let page =
            store.events(&location, next, READ_PAGE.min(usize::try_from(last - next + 1).unwrap_or(READ_PAGE)))?;
        if page.is_empty() {
            return Err(ArchiveError::Invalid(format!("location_seq {next} is missing from the store")));
        }
        for record in page {
            if record.location_seq != next {
                return Err(ArchiveError::Invalid(format!("location_seq {next} is missing from the store")));
            }
            let event = record
                .event
                .and_then(|event| AuditEvent::try_from(event).ok())
                .ok_or_else(|| ArchiveError::Invalid(format!("the event at location_seq {next} is not valid")))?;
            frontier.push(leaf_hash(&qtrail_cadf::canonical_bytes(&event)));
            lines.push_str(&event_line(&event, next));
            lines.push('\n');
            next += 1;
        }
    }
    if frontier.root() != covering.root.as_slice() {
        return Err(ArchiveError::Invalid(format!(
            "events {first}..={last} do not fold into checkpoint {number}'s root"
        )));
    }
    let root = frontier.root();
    let carried = checkpoints.into_iter().take_while(|checkpoint| checkpoint.number <= number).collect();
    Ok(Some(ReadRange { first, last, lines, root, frontier: before, checkpoints: carried }))
}

/// Returns the intact checkpoints of `location` numbered after `after`, oldest first, up to the
/// first damaged one (a range cannot carry past it).
fn checkpoints_after(store: &dyn EventStore, location: &Location, after: u64) -> StoreResult<Vec<proto::Checkpoint>> {
    let mut newest_first = Vec::new();
    let mut before = None;
    'pages: loop {
        let page = store.checkpoints(location, before, CHECKPOINT_PAGE)?;
        let Some(oldest) = page.last().map(|entry| entry.number) else { break };
        for entry in page {
            if entry.number <= after {
                break 'pages;
            }
            newest_first.push(entry);
        }
        before = Some(oldest);
    }
    let mut checkpoints = Vec::new();
    for entry in newest_first.into_iter().rev() {
        match entry.checkpoint {
            Ok(checkpoint) if checkpoint.number == after + 1 + checkpoints.len() as u64 => checkpoints.push(checkpoint),
            _ => break,
        }
    }
    Ok(checkpoints)
}

impl ArchiveProgress for Archiver {
    fn verified_through(&self, location: &Location) -> StoreResult<u64> {
        let cursors = self.cursors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(cursors.get(location.as_str()).map_or(0, |cursor| cursor.last))
    }
}
