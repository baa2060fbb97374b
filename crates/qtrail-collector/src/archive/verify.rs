//! Offline verification of an archive: with the checkpoint key's public half only, each range's
//! manifest signature, its object's hash, its events folded from the frontier into the covering
//! checkpoint's signed root, and the ranges' contiguity (each frontier is the previous range's
//! tree). The archiver runs the same check on what it wrote before it counts a range as done.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message as _;
use qtrail_cadf::checkpoint::VerifyingKey;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::{Checkpoint as TreeHead, NoteVerifier, open_note};

use super::ArchiveError;
use super::format::{ArchivedEvent, Frontier, Manifest, OBJECT_SUFFIX, extend, range_name, read_object, sha256_hex};
use super::objects::{Archive, Listed};

/// One verified range.
#[derive(Debug, Clone)]
pub struct VerifiedRange {
    /// Its manifest.
    pub manifest: Manifest,
    /// The covering checkpoint's tree head.
    pub head: TreeHead,
    /// The tree's frontier after the range: the next range's must equal it.
    pub frontier_after: Frontier,
    /// The checkpoints the manifest carries, decoded and verified.
    pub checkpoints: Vec<proto::Checkpoint>,
    /// The events, when the caller asked to keep them.
    pub events: Vec<ArchivedEvent>,
}

/// The verdict on one range of a location's archive.
#[derive(Debug)]
pub struct RangeReport {
    /// First position the range's name states.
    pub first: u64,
    /// Last position the range's name states.
    pub last: u64,
    /// The range as verified, or why it does not verify.
    pub result: Result<VerifiedRange, String>,
}

impl RangeReport {
    /// Returns the report's line: `ok` or `FAILED` with the range and why.
    pub fn line(&self, location: &str) -> String {
        match &self.result {
            Ok(range) => format!(
                "ok {location} {}..={} ({} events, checkpoint {}, root {})",
                self.first,
                self.last,
                range.manifest.events,
                range.manifest.checkpoint_number,
                BASE64.encode(range.manifest.root)
            ),
            Err(why) => format!("FAILED {location} {}..={}: {why}", self.first, self.last),
        }
    }
}

/// Verifies every range of `location` in order. A range that does not follow the previous one
/// (a gap or an overlap) fails, and so does one whose frontier is not the previous range's tree.
///
/// # Errors
/// [`ArchiveError::Object`] when the manifests cannot be listed.
pub async fn verify_location(
    archive: &Archive,
    location: &str,
    keys: &[VerifyingKey],
    keep_events: bool,
) -> Result<Vec<RangeReport>, ArchiveError> {
    let mut reports = Vec::new();
    let mut previous: Option<(u64, Frontier)> = None;
    for listed in archive.manifests(location).await? {
        let result = match &previous {
            Some((last, _)) if listed.first != last + 1 => {
                Err(format!("does not follow the previous range, which ends at {last}"))
            }
            _ => verify_range(archive, location, &listed, keys, previous.as_ref().map(|(_, f)| f), keep_events)
                .await
                .map_err(|err| err.to_string()),
        };
        previous = result.as_ref().ok().map(|range| (listed.last, range.frontier_after.clone()));
        if result.is_err() {
            // The next range cannot be linked to this one, but is still checked on its own.
            previous = None;
        }
        reports.push(RangeReport { first: listed.first, last: listed.last, result });
    }
    Ok(reports)
}

/// Verifies one range; `previous` is the frontier the range must start from, when known.
///
/// # Errors
/// [`ArchiveError::Invalid`] saying what does not hold; [`ArchiveError::Object`] when an object
/// cannot be read.
pub async fn verify_range(
    archive: &Archive,
    location: &str,
    listed: &Listed,
    keys: &[VerifyingKey],
    previous: Option<&Frontier>,
    keep_events: bool,
) -> Result<VerifiedRange, ArchiveError> {
    let note = String::from_utf8(archive.get(&listed.path).await?)
        .map_err(|_| ArchiveError::Invalid("manifest is not utf-8".to_owned()))?;
    let (verifier, manifest) = open_manifest(&note, location, keys)?;
    check_names(&manifest, listed, location)?;
    let head = open_head(&manifest, &verifier)?;
    let checkpoints = check_checkpoints(&manifest, location, keys)?;
    let before = Frontier(manifest.frontier.clone());
    if before.size() != Some(manifest.first - 1) {
        return invalid(format!("the frontier does not cover the {} positions before the range", manifest.first - 1));
    }
    if previous.is_some_and(|previous| *previous != before) {
        return invalid("the frontier is not the tree of the previous range".to_owned());
    }
    let object = archive.get(&archive.path(location, &manifest.object)).await?;
    if sha256_hex(&object) != manifest.object_sha256 {
        return invalid(format!("object {} does not have the sha-256 its manifest states", manifest.object));
    }
    let events = read_object(&object, manifest.first)?;
    if events.len() as u64 != manifest.events {
        return invalid(format!("object holds {} events, its manifest states {}", events.len(), manifest.events));
    }
    let frontier_after = extend(&before, &events);
    if frontier_after.root() != manifest.root {
        return invalid("the events do not fold into the covering checkpoint's root".to_owned());
    }
    let events = if keep_events { events } else { Vec::new() };
    Ok(VerifiedRange { manifest, head, frontier_after, checkpoints, events })
}

fn invalid<T>(why: String) -> Result<T, ArchiveError> {
    Err(ArchiveError::Invalid(why))
}

/// Opens a manifest note: its key name must be `<prefix>/<location>`, and one of `keys` must
/// have signed it under that name.
fn open_manifest(note: &str, location: &str, keys: &[VerifyingKey]) -> Result<(NoteVerifier, Manifest), ArchiveError> {
    let name = note
        .lines()
        .last()
        .and_then(|line| line.strip_prefix("\u{2014} "))
        .and_then(|line| line.split(' ').next())
        .unwrap_or_default();
    if !name.strip_suffix(location).is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('/')) {
        return invalid(format!("manifest is signed as `{name}`, not as `<prefix>/{location}`"));
    }
    let mut last_error = ArchiveError::Invalid("no public key given".to_owned());
    for key in keys {
        let verifier = NoteVerifier::new(name, key.raw()).map_err(|err| ArchiveError::Invalid(err.to_string()))?;
        match Manifest::open(note, &verifier) {
            Ok(manifest) => return Ok((verifier, manifest)),
            Err(err) => last_error = err,
        }
    }
    Err(last_error)
}

/// Checks that the manifest is the one its name and place say.
fn check_names(manifest: &Manifest, listed: &Listed, location: &str) -> Result<(), ArchiveError> {
    if manifest.location != location || manifest.first != listed.first || manifest.last != listed.last {
        return invalid(format!(
            "manifest states location `{}` range {}..={}, not its name's",
            manifest.location, manifest.first, manifest.last
        ));
    }
    if manifest.first == 0 || manifest.last < manifest.first || manifest.events != manifest.last - manifest.first + 1 {
        return invalid("manifest range or event count is inconsistent".to_owned());
    }
    if manifest.object != format!("{}{OBJECT_SUFFIX}", range_name(manifest.first, manifest.last)) {
        return invalid(format!("manifest names object `{}`, not its range's", manifest.object));
    }
    Ok(())
}

/// Opens the covering checkpoint's note: signed by the same key under the same name, for a
/// tree of `last` leaves with the manifest's root.
fn open_head(manifest: &Manifest, verifier: &NoteVerifier) -> Result<TreeHead, ArchiveError> {
    let text = open_note(&manifest.checkpoint_note, std::slice::from_ref(verifier))
        .map_err(|err| ArchiveError::Invalid(format!("covering checkpoint note: {err}")))?;
    let head = TreeHead::parse(text).map_err(|err| ArchiveError::Invalid(format!("covering checkpoint: {err}")))?;
    if head.origin != verifier.name() || head.size != manifest.last || head.root != manifest.root {
        return invalid(format!(
            "the covering checkpoint is of `{}` at size {}, not of this range's tree at {}",
            head.origin, head.size, manifest.last
        ));
    }
    Ok(head)
}

/// Decodes and verifies the checkpoints the manifest carries: numbered densely up to the
/// covering one, each signed by one of `keys`, the last holding the covering note.
fn check_checkpoints(
    manifest: &Manifest,
    location: &str,
    keys: &[VerifyingKey],
) -> Result<Vec<proto::Checkpoint>, ArchiveError> {
    let mut checkpoints = Vec::with_capacity(manifest.checkpoints.len());
    for encoded in &manifest.checkpoints {
        let checkpoint = BASE64
            .decode(encoded)
            .ok()
            .and_then(|bytes| proto::Checkpoint::decode(bytes.as_slice()).ok())
            .ok_or_else(|| ArchiveError::Invalid("a carried checkpoint does not decode".to_owned()))?;
        if checkpoint.location != location || keys.iter().all(|key| key.verify(&checkpoint).is_err()) {
            return invalid(format!("carried checkpoint {} is not signed by the key", checkpoint.number));
        }
        if checkpoints.last().is_some_and(|prev: &proto::Checkpoint| prev.number + 1 != checkpoint.number) {
            return invalid(format!("carried checkpoint {} does not follow the one before", checkpoint.number));
        }
        checkpoints.push(checkpoint);
    }
    match checkpoints.last() {
        Some(last) if last.number == manifest.checkpoint_number && last.note == manifest.checkpoint_note => {
            Ok(checkpoints)
        }
        _ => invalid("the carried checkpoints do not end with the covering one".to_owned()),
    }
}
