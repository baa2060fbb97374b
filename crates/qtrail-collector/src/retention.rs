//! Retention and legal hold: the admin's settings (validated here, stored by the store, see
//! [`EventStore::set_retention`] and [`EventStore::set_hold`]) and the sweep that prunes what
//! they let expire.
//!
//! # When an event expires
//!
//! Only when all of these hold: its location has a policy of `days` > 0; it was received more
//! than `days` ago; its position is archived and the archive verified ([`ArchiveProgress`],
//! implemented by the archiver: without one nothing ever expires, since deleting the only copy
//! of audit evidence is never what retention means); its location is not held; and no held
//! account owns it (its target's or log source's CRN names the account). The sweep prunes the
//! longest prefix of the chain that is old enough and archived, keeping held events in place
//! ([`EventStore::prune`]): positions, tree hashes and checkpoints stay, so what remains keeps
//! proving, and the archived events prove against the same signed checkpoints.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use prost_types::Timestamp;
use qtrail_cadf::{Crn, Location};
use qtrail_proto::qtrail::audit::v1 as proto;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::ingest::blocking;
use crate::registry::{parse_location, require_collector};
use crate::store::{EventStore, PruneOutcome, StoreError};

/// Longest retention accepted: a hundred years.
pub(crate) const MAX_DAYS: u32 = 36_500;

/// Longest hold reason accepted, in bytes.
pub(crate) const MAX_REASON_BYTES: usize = 1024;

/// Longest account id accepted, in bytes.
const MAX_ACCOUNT_BYTES: usize = 128;

/// Records read per step of the cutoff search.
const CHUNK: usize = 1000;

/// How far each location's archive is uploaded and verified: implemented by the archiver.
pub trait ArchiveProgress: Send + Sync + std::fmt::Debug + 'static {
    /// Returns the highest position of `location` whose archive is uploaded and verified, 0
    /// when none is.
    ///
    /// # Errors
    /// [`StoreError`] when the archive's state cannot be read: nothing expires then.
    fn verified_through(&self, location: &Location) -> std::result::Result<u64, StoreError>;
}

/// Sets the retention policy of `location`.
///
/// # Errors
/// [`Error::InvalidArgument`] for a malformed location or more than [`MAX_DAYS`] days,
/// [`Error::CollectorNotFound`] when the location has no collector.
pub(crate) async fn set_retention(
    store: &Arc<dyn EventStore>,
    location: &str,
    days: u32,
    caller: &str,
) -> Result<proto::RetentionPolicy> {
    let location = parse_location(location)?;
    if days > MAX_DAYS {
        return Err(Error::invalid(format!("days must be at most {MAX_DAYS}, not {days}")));
    }
    require_collector(store, location.clone()).await?;
    let policy = proto::RetentionPolicy { location: location.to_string(), days };
    let stored = store.clone();
    let copy = policy.clone();
    blocking(move || Ok(stored.set_retention(&copy)?)).await?;
    tracing::info!(location = %location, days, token = %caller, "retention policy set");
    Ok(policy)
}

/// Returns the retention policy of `location`.
///
/// # Errors
/// [`Error::InvalidArgument`] for a malformed location, [`Error::CollectorNotFound`].
pub(crate) async fn retention(store: &Arc<dyn EventStore>, location: &str) -> Result<proto::RetentionPolicy> {
    let location = parse_location(location)?;
    require_collector(store, location.clone()).await?;
    let store = store.clone();
    blocking(move || Ok(store.retention(&location)?)).await
}

/// Places (`on`) or lifts a legal hold on a location or an account.
///
/// # Errors
/// [`Error::InvalidArgument`] unless exactly one of location and account is set and well
/// formed, or when placing without a reason or with one too long;
/// [`Error::FailedPrecondition`] when lifting a hold that is not in force.
pub(crate) async fn set_hold(
    store: &Arc<dyn EventStore>,
    request: proto::SetLegalHoldRequest,
    caller: &str,
) -> Result<proto::LegalHold> {
    let hold = checked_hold(&request, caller)?;
    let store = store.clone();
    let on = request.on;
    let copy = hold.clone();
    blocking(move || {
        let held = store.holds()?.into_iter().any(|old| old.location == copy.location && old.account == copy.account);
        if !on && !held {
            return Err(Error::FailedPrecondition(format!("no legal hold on {}", held_what(&copy))));
        }
        Ok(store.set_hold(&copy, on)?)
    })
    .await?;
    let what = held_what(&hold);
    tracing::info!(hold = %what, on, token = %caller, "legal hold changed");
    Ok(hold)
}

/// Returns the hold a request names, checked.
fn checked_hold(request: &proto::SetLegalHoldRequest, caller: &str) -> Result<proto::LegalHold> {
    let (location, account) = match (request.location.is_empty(), request.account.is_empty()) {
        (false, true) => (parse_location(&request.location)?.to_string(), String::new()),
        (true, false) => (String::new(), check_account(&request.account)?.to_owned()),
        (true, true) => return Err(Error::invalid("a legal hold needs a location or an account")),
        (false, false) => return Err(Error::invalid("a legal hold names a location or an account, not both")),
    };
    if request.on && request.reason.trim().is_empty() {
        return Err(Error::invalid("a legal hold needs a reason"));
    }
    if request.reason.len() > MAX_REASON_BYTES || request.reason.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "the reason must be at most {MAX_REASON_BYTES} bytes without control characters"
        )));
    }
    Ok(proto::LegalHold {
        location,
        account,
        reason: request.reason.clone(),
        create_time: Some(crate::writer::now()),
        created_by: caller.to_owned(),
    })
}

/// Checks an account id: what a CRN's `a/<account>` scope may hold.
fn check_account(account: &str) -> Result<&str> {
    let ok = account.len() <= MAX_ACCOUNT_BYTES
        && account.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(account)
    } else {
        Err(Error::invalid(format!(
            "invalid account `{}`: at most {MAX_ACCOUNT_BYTES} letters, digits, `-`, `_` or `.`",
            qtrail_cadf::text::escape_control(account)
        )))
    }
}

fn held_what(hold: &proto::LegalHold) -> String {
    if hold.account.is_empty() {
        format!("location `{}`", hold.location)
    } else {
        format!("account `{}`", hold.account)
    }
}

/// Returns every legal hold in force.
///
/// # Errors
/// [`Error::Store`] on storage failure.
pub(crate) async fn holds(store: &Arc<dyn EventStore>) -> Result<Vec<proto::LegalHold>> {
    let store = store.clone();
    blocking(move || Ok(store.holds()?)).await
}

/// Returns the accounts that own `record`'s event: those its target's and log source's CRNs
/// name.
pub(crate) fn accounts_of(record: &proto::StoredEvent) -> impl Iterator<Item = String> + '_ {
    let event = record.event.as_ref();
    let crns = event
        .map(|event| [event.target.as_ref().map(|target| target.id.as_str()), Some(event.log_source_crn.as_str())]);
    crns.into_iter()
        .flatten()
        .flatten()
        .filter_map(|crn| crn.parse::<Crn>().ok().and_then(|crn| crn.account().map(str::to_owned)))
}

/// Prunes every location whose policy lets events expire as of `now`, and returns what each
/// prune did. A location's failure is logged and the others still swept.
pub fn sweep(store: &dyn EventStore, archive: &dyn ArchiveProgress, now: Timestamp) -> Vec<(String, PruneOutcome)> {
    let holds = match store.holds() {
        Ok(holds) => holds,
        Err(err) => {
            tracing::warn!(error = %err, "retention skipped: the legal holds cannot be read");
            return Vec::new();
        }
    };
    let held_locations: BTreeSet<&str> =
        holds.iter().map(|hold| hold.location.as_str()).filter(|l| !l.is_empty()).collect();
    let held_accounts: BTreeSet<&str> =
        holds.iter().map(|hold| hold.account.as_str()).filter(|a| !a.is_empty()).collect();
    let keep =
        |record: &proto::StoredEvent| accounts_of(record).any(|account| held_accounts.contains(account.as_str()));
    let mut done = Vec::new();
    for collector in store.collectors().unwrap_or_default() {
        let Ok(location) = collector.location.parse::<Location>() else { continue };
        if held_locations.contains(location.as_str()) {
            continue;
        }
        match sweep_location(store, archive, &location, &now, &keep) {
            Ok(Some(outcome)) => {
                tracing::info!(
                    location = %location,
                    removed = outcome.removed,
                    kept = outcome.kept,
                    pruned_through = outcome.pruned_through,
                    "expired events pruned"
                );
                done.push((location.to_string(), outcome));
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(location = %location, error = %err, "retention of a location failed"),
        }
    }
    done
}

/// Prunes one location up to its cutoff, if it has moved.
fn sweep_location(
    store: &dyn EventStore,
    archive: &dyn ArchiveProgress,
    location: &Location,
    now: &Timestamp,
    keep: &dyn Fn(&proto::StoredEvent) -> bool,
) -> std::result::Result<Option<PruneOutcome>, StoreError> {
    let days = store.retention(location)?.days;
    if days == 0 {
        return Ok(None);
    }
    let verified = archive.verified_through(location)?.min(store.last_seq(location)?);
    let pruned = store.pruned_through(location)?;
    let expires_before = now.seconds.saturating_sub(i64::from(days) * 86_400);
    let cutoff = cutoff(store, location, pruned, verified, expires_before)?;
    // Held records kept by an earlier prune are looked at again, so a lifted hold takes effect.
    let kept_before = pruned > 0 && first_present(store, location, pruned)?.is_some();
    if cutoff <= pruned && !kept_before {
        return Ok(None);
    }
    store.prune(location, cutoff, keep).map(Some)
}

/// Returns the first position up to `through` still present (a held record kept by a prune).
fn first_present(
    store: &dyn EventStore,
    location: &Location,
    through: u64,
) -> std::result::Result<Option<u64>, StoreError> {
    let mut from = 1;
    while from <= through {
        // A limit counts positions, present or not, in some backends: step by it.
        let records = store.chain_records(location, from, CHUNK)?;
        if let Some(record) = records.first() {
            return Ok((record.location_seq <= through).then_some(record.location_seq));
        }
        from += CHUNK as u64;
    }
    Ok(None)
}

/// Returns the newest position in `pruned + 1..=verified` up to which every record was received
/// before `expires_before` (seconds since the epoch); `pruned` when there is none.
fn cutoff(
    store: &dyn EventStore,
    location: &Location,
    pruned: u64,
    verified: u64,
    expires_before: i64,
) -> std::result::Result<u64, StoreError> {
    let mut cutoff = pruned;
    let mut from = pruned + 1;
    while from <= verified {
        let records = store.chain_records(location, from, CHUNK)?;
        let Some(next) = records.last().map(|record| record.location_seq + 1) else { break };
        for record in records {
            let received =
                record.record.as_ref().and_then(|record| record.receive_time.as_ref()).map(|time| time.seconds);
            // A record that does not decode, or is too young, ends the expired prefix.
            if record.location_seq > verified || received.is_none_or(|seconds| seconds >= expires_before) {
                return Ok(cutoff);
            }
            cutoff = record.location_seq;
        }
        from = next;
    }
    Ok(cutoff)
}

/// When the sweep runs, and what it takes for "now".
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Time between two sweeps.
    pub every: Duration,
    /// How far ahead of the real clock "now" is reckoned: zero but in end-to-end tests, which
    /// cannot wait the days a policy counts in (`--retention-clock-ahead`, hidden).
    pub ahead: Duration,
}

impl Clock {
    fn now(&self) -> Timestamp {
        let mut now = crate::writer::now();
        now.seconds = now.seconds.saturating_add(i64::try_from(self.ahead.as_secs()).unwrap_or(i64::MAX));
        now
    }
}

/// Sweeps every `clock.every` until `stop` is cancelled.
pub async fn run(store: Arc<dyn EventStore>, archive: Arc<dyn ArchiveProgress>, clock: Clock, stop: CancellationToken) {
    loop {
        let (store, archive) = (store.clone(), archive.clone());
        let now = clock.now();
        let swept = tokio::task::spawn_blocking(move || sweep(store.as_ref(), archive.as_ref(), now));
        if let Err(err) = swept.await {
            tracing::warn!(error = %err, "the retention sweep failed");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(clock.every) => {}
        }
    }
}

/// Logs, once at start, each location whose policy cannot take effect because no archive is
/// configured: nothing expires without one.
pub(crate) fn warn_without_archive(store: &dyn EventStore) {
    for collector in store.collectors().unwrap_or_default() {
        let Ok(location) = collector.location.parse::<Location>() else { continue };
        if let Ok(policy) = store.retention(&location)
            && policy.days > 0
        {
            tracing::warn!(
                location = %location,
                days = policy.days,
                "a retention policy is set but no archive is configured: nothing expires"
            );
        }
    }
}

#[cfg(test)]
mod tests;
