//! The trail's own use, recorded on the trail: every auditor's read (query, tail, export,
//! verify, proof), console sign-in and alert rule change becomes a CADF event of the collector's
//! own service (`qtrail.events.read`, `qtrail.console.login`, …) in the log of the location it
//! concerns, so that who looked at what is as tamper-evident as what they looked at.
//!
//! The events go through the same single [writer](crate::writer) as the publishers' batches,
//! as the batches of a publisher of the collector's own ([`PUBLISHER_ID`], reserved: no Publish
//! stream may use it), one epoch per process start, seqs from 1 per location. They are thus
//! sequenced, chained, in the Merkle tree, covered by VerifyChain and by checkpoints, and group
//! commit with whatever else is being written.
//!
//! Durability rule: a use is recorded *before* it is answered, and a use that cannot be
//! recorded is refused ([`Error::NotRecorded`], UNAVAILABLE): an auditor never reads what the
//! trail does not say they read. A call refused for its input is recorded too, as a failure,
//! and then refused as before. A location without a collector has no log to record into: such
//! calls are answered as they were (NOT_FOUND, mostly).
//!
//! No loops: a call is one event, however many events or pages it streams, so a tail of the
//! trail's own events does not feed itself; the alert evaluator and webhook deliveries are not
//! uses. What goes in the event is bounded and never a secret: the token's *name*, the client's
//! address, the filter or range asked for (cut at [`MAX_DETAIL_BYTES`]); never a token, a
//! cookie or a webhook secret.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use qtrail_cadf::event::INITIATOR_SERVICE_ID;
use qtrail_cadf::{Action, AuditEvent, Crn, EventBuilder, Initiator, JsonObject, Location};
use qtrail_proto::qtrail::audit::v1 as proto;
use serde_json::{Value, json};
use tracing::warn;

use crate::error::{Error, Result};
use crate::ingest::blocking;
use crate::store::{AppendBatch, EventStore, NewEvent, StoreError};
use crate::writer::{Sequence, WriterHandle};

/// The publisher id of the collector's own events; refused on Publish.
pub(crate) const PUBLISHER_ID: &str = "qtrail-collector";

/// Returns the publisher id of this collector's own events: [`PUBLISHER_ID`] alone, or with the
/// replica's name when replicas share the store — each replica numbers its own events, and two
/// under one id would take each other's epochs for restarts.
pub(crate) fn publisher_id(replica: Option<&str>) -> String {
    match replica {
        Some(replica) => format!("{PUBLISHER_ID}/{replica}"),
        None => PUBLISHER_ID.to_owned(),
    }
}

/// Returns whether `id` is reserved for collectors' own events: no Publish stream may use it.
pub(crate) fn is_reserved(id: &str) -> bool {
    id.strip_prefix(PUBLISHER_ID).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Most bytes of a use's details (`requestData`): a filter quotes what the caller typed.
pub(crate) const MAX_DETAIL_BYTES: usize = 2048;

/// Longest client agent and request id kept, in bytes.
const MAX_HEADER_BYTES: usize = 256;

/// The initiator id of a sign-in whose token is unknown: the token itself is never recorded.
pub(crate) const UNKNOWN_TOKEN: &str = "unknown-token";

/// Who used the trail and from where.
#[derive(Debug, Clone, Default)]
pub(crate) struct User {
    /// The token's name (never the token).
    pub(crate) name: String,
    /// The client's address, as the connection shows it.
    pub(crate) address: String,
    /// The client's `user-agent`.
    pub(crate) agent: String,
    /// The request's `x-request-id` (or `x-correlation-id`), which becomes the correlation id.
    pub(crate) request_id: String,
}

impl User {
    /// Returns the user of a gRPC request admitted by the [`Authorizer`](crate::grpc::Authorizer).
    pub(crate) fn of_grpc<T>(request: &tonic::Request<T>) -> Self {
        let header = |name: &str| request.metadata().get(name).and_then(|value| value.to_str().ok());
        Self {
            name: crate::grpc::caller_name(request),
            address: request.remote_addr().map(|addr| addr.ip().to_string()).unwrap_or_default(),
            agent: bounded(header("user-agent").unwrap_or_default()),
            request_id: request_id(header("x-request-id").or_else(|| header("x-correlation-id"))),
        }
    }

    /// Returns the user of a console request from `peer` with `headers`.
    pub(crate) fn of_http(name: &str, peer: std::net::IpAddr, headers: &axum::http::HeaderMap) -> Self {
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        Self {
            name: name.to_owned(),
            address: peer.to_string(),
            agent: bounded(header("user-agent").unwrap_or_default()),
            request_id: request_id(header("x-request-id").or_else(|| header("x-correlation-id"))),
        }
    }
}

/// Returns `text` cut to [`MAX_HEADER_BYTES`].
fn bounded(text: &str) -> String {
    qtrail_cadf::text::truncate(text, MAX_HEADER_BYTES).into_owned()
}

/// Returns a caller's request id if it is a plausible one (visible ASCII, not too long), else
/// empty (the event then gets a new one).
fn request_id(value: Option<&str>) -> String {
    value
        .filter(|id| !id.is_empty() && id.len() <= MAX_HEADER_BYTES && id.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_default()
        .to_owned()
}

/// One use of the trail, to record.
#[derive(Debug, Clone)]
pub(crate) struct Use {
    action: Action,
    user: User,
    /// The location as the caller named it; checked when recorded.
    location: String,
    /// The resource targeted beside the location's log (an alert rule's name), if any.
    resource: Option<String>,
    detail: JsonObject,
}

impl Use {
    /// A use of the log of `location` (reads, retention and hold changes).
    pub(crate) fn log(action: Action, user: User, location: &str) -> Self {
        Self { action, user, location: location.to_owned(), resource: None, detail: JsonObject::new() }
    }

    /// A change of the alert rule `name` of `location`.
    pub(crate) fn rule(action: Action, user: User, location: &str, name: &str) -> Self {
        Self { resource: Some(name.to_owned()), ..Self::log(action, user, location) }
    }

    /// Adds a detail of the call (a filter, a range, a format); nothing secret may go here.
    pub(crate) fn with(mut self, key: &str, value: Value) -> Self {
        if !value.is_null() {
            self.detail.insert(key.to_owned(), value);
        }
        self
    }

    /// Adds the non-empty fields of an event filter as the detail `filter`.
    pub(crate) fn with_filter(self, filter: Option<&proto::EventFilter>) -> Self {
        let Some(filter) = filter else {
            return self;
        };
        let mut fields = JsonObject::new();
        let mut put = |key: &str, value: String| {
            if !value.is_empty() {
                fields.insert(key.to_owned(), Value::String(value));
            }
        };
        let time = |time: &Option<prost_types::Timestamp>| time.as_ref().map(ToString::to_string).unwrap_or_default();
        put("startTime", time(&filter.start_time));
        put("endTime", time(&filter.end_time));
        put("action", filter.action.clone());
        put("outcome", if filter.outcome == 0 { String::new() } else { filter.outcome.to_string() });
        put("severity", if filter.severity == 0 { String::new() } else { filter.severity.to_string() });
        put("initiatorId", filter.initiator_id.clone());
        put("targetId", filter.target_id.clone());
        put("correlationId", filter.correlation_id.clone());
        if fields.is_empty() { self } else { self.with("filter", Value::Object(fields)) }
    }

    /// Adds a range of positions as the detail `range`.
    pub(crate) fn with_range(self, range: Option<&proto::SeqRange>) -> Self {
        match range {
            Some(range) => self.with("range", json!({"fromSeq": range.from_seq, "toSeq": range.to_seq})),
            None => self,
        }
    }

    /// Returns the event that records this use of the log of `location`, ending with `outcome`.
    ///
    /// # Errors
    /// When the event does not validate (it always should: every part is bounded).
    pub(crate) fn event(&self, location: &Location, outcome: Option<&Error>) -> Result<AuditEvent> {
        let initiator = Initiator {
            id: if self.user.name.is_empty() { UNKNOWN_TOKEN.to_owned() } else { self.user.name.clone() },
            name: self.user.name.clone(),
            type_uri: INITIATOR_SERVICE_ID.to_owned(),
            credential_type: "token".to_owned(),
            host_address: self.user.address.clone(),
            host_agent: self.user.agent.clone(),
        };
        let mut builder = EventBuilder::new(self.action, Crn::collector(location), initiator);
        builder = match (&self.resource, self.action) {
            (_, Action::ConsoleLogin) => builder,
            (Some(name), _) => builder.target(name, name),
            (None, _) => builder.target(location.as_str(), location.as_str()),
        };
        if let Some(err) = outcome {
            builder = builder.failure(http_status(err), err.to_string());
        }
        if !self.user.request_id.is_empty() {
            builder = builder.correlation_id(self.user.request_id.clone());
        }
        if !self.detail.is_empty() {
            builder = builder.request_data(bounded_detail(&self.detail));
        }
        builder.build().map_err(|err| Error::NotRecorded(format!("the event does not validate: {err}")))
    }
}

/// Returns `detail`, or a note of its size when it is longer than [`MAX_DETAIL_BYTES`].
fn bounded_detail(detail: &JsonObject) -> JsonObject {
    let size = serde_json::to_string(detail).map_or(usize::MAX, |text| text.len());
    if size <= MAX_DETAIL_BYTES {
        return detail.clone();
    }
    let mut note = JsonObject::new();
    note.insert("truncated".to_owned(), json!(true));
    note.insert("bytes".to_owned(), json!(size));
    note
}

/// Returns the HTTP-equivalent status of a refused or failed call, as events carry it.
pub(crate) fn http_status(err: &Error) -> u16 {
    match err {
        Error::InvalidArgument(_) => 400,
        Error::Unauthenticated | Error::NoClientCertificate => 401,
        Error::PermissionDenied { .. } | Error::LocationDenied { .. } | Error::PublisherBound { .. } => 403,
        Error::CollectorNotFound(_)
        | Error::EventNotFound { .. }
        | Error::LeafNotFound(_)
        | Error::AlertRuleNotFound { .. } => 404,
        Error::CollectorExists(_) | Error::AlertRuleExists { .. } | Error::FailedPrecondition(_) => 409,
        Error::ResourceExhausted(_) => 429,
        Error::ShuttingDown | Error::NotRecorded(_) => 503,
        Error::Store(StoreError::Full(_)) => 507,
        Error::Store(StoreError::NoCollector(_)) => 404,
        Error::Store(StoreError::CollectorExists(_) | StoreError::Unsupported(_)) => 409,
        Error::Store(StoreError::Corrupt(_) | StoreError::Backend(_)) => 500,
    }
}

/// Records uses of the trail through the writer. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Usage {
    store: Arc<dyn EventStore>,
    writer: WriterHandle,
    /// The publisher id its events go under ([`publisher_id`]).
    publisher_id: String,
    /// Whether it records at all ([`crate::Config::record_use`]).
    enabled: bool,
    /// This process's epoch: its start in milliseconds, so that every start has a higher one.
    epoch: u64,
    /// The last seq used per location, held while a batch is handed to the writer, so that the
    /// writer's queue holds each location's seqs in order.
    seqs: Arc<tokio::sync::Mutex<HashMap<Location, u64>>>,
    /// Locations known to have a collector (collectors are never deleted).
    hosted: Arc<Mutex<HashSet<Location>>>,
}

impl Usage {
    /// Returns the recorder over `store`, writing through `writer` under `publisher_id`.
    pub(crate) fn new(store: Arc<dyn EventStore>, writer: WriterHandle, publisher_id: String) -> Self {
        let epoch = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(1).max(1);
        Self { store, writer, publisher_id, enabled: true, epoch, seqs: Arc::default(), hosted: Arc::default() }
    }

    /// Returns the recorder, recording nothing unless `enabled`.
    pub(crate) fn enabled(self, enabled: bool) -> Self {
        Self { enabled, ..self }
    }

    /// Records `used`, ended with `result`, in the log of its location, and returns once the
    /// event is durable; nothing is recorded for a location that is invalid or has no collector.
    ///
    /// This is the one call for every use, retention and hold changes included:
    /// `usage.record(Use::log(Action::RetentionUpdate, user, location).with(…), &result)`.
    ///
    /// # Errors
    /// [`Error::NotRecorded`] when the event cannot be stored: the caller must then refuse the use.
    pub(crate) async fn record<T>(&self, used: Use, result: &Result<T>) -> Result<()> {
        let Ok(location) = used.location.parse::<Location>() else {
            return Ok(());
        };
        if !self.enabled {
            return Ok(());
        }
        if !self.is_hosted(&location).await? {
            return Ok(());
        }
        let event = used.event(&location, result.as_ref().err())?;
        self.append(location, &event).await
    }

    /// Records `used` in the log of every location this collector hosts (a sign-in, which
    /// concerns them all); the location `used` names is ignored.
    ///
    /// # Errors
    /// [`Error::NotRecorded`] when one of the events cannot be stored.
    pub(crate) async fn record_everywhere<T>(&self, used: Use, result: &Result<T>) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let store = self.store.clone();
        let collectors = blocking(move || Ok(store.collectors()?)).await.map_err(not_recorded)?;
        for collector in collectors {
            let Ok(location) = collector.location.parse::<Location>() else {
                continue;
            };
            let event = used.event(&location, result.as_ref().err())?;
            self.append(location, &event).await?;
        }
        Ok(())
    }

    /// Returns whether `location` has a collector, asking the store once per location.
    async fn is_hosted(&self, location: &Location) -> Result<bool> {
        if self.hosted.lock().unwrap_or_else(PoisonError::into_inner).contains(location) {
            return Ok(true);
        }
        let (store, lookup) = (self.store.clone(), location.clone());
        let hosted = blocking(move || Ok(store.collector(&lookup)?.is_some())).await.map_err(not_recorded)?;
        if hosted {
            self.hosted.lock().unwrap_or_else(PoisonError::into_inner).insert(location.clone());
        }
        Ok(hosted)
    }

    /// Hands the event to the writer as a batch of its own and waits until it is durable.
    async fn append(&self, location: Location, event: &AuditEvent) -> Result<()> {
        let outcome = {
            let mut seqs = self.seqs.lock().await;
            let seq = seqs.entry(location.clone()).or_insert(0);
            *seq += 1;
            let batch = AppendBatch {
                location: location.clone(),
                publisher_id: self.publisher_id.clone(),
                epoch: self.epoch,
                credential: self.publisher_id.clone(),
                events: vec![NewEvent::new(*seq, event)],
                rejected_seqs: Vec::new(),
            };
            // A sequence of its own: one failed commit must not refuse every later use.
            self.writer.submit(batch, &Sequence::default()).await
        };
        let outcome = outcome.ok_or(Error::ShuttingDown).map_err(not_recorded)?;
        let outcome = outcome.await.map_err(|_| not_recorded(Error::ShuttingDown))?;
        let outcome = outcome.map_err(|err| not_recorded(err.into()))?;
        if outcome.accepted != 1 {
            warn!(location = %location, action = %event.action, "the trail did not keep a use of itself");
            return Err(Error::NotRecorded(format!("the store kept nothing for location `{location}`")));
        }
        Ok(())
    }
}

/// Returns why a use could not be recorded.
fn not_recorded(err: Error) -> Error {
    match err {
        Error::NotRecorded(_) => err,
        other => Error::NotRecorded(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::Fanout;
    use crate::indexer::Indexer;
    use crate::store::FileStore;
    use crate::writer::{GroupLimit, MAX_GROUP_BYTES, Writer};

    fn auditor() -> User {
        User {
            name: "auditor-1".into(),
            address: "192.0.2.7".into(),
            agent: "qtrail-cli/1".into(),
            request_id: "req-42".into(),
        }
    }

    /// A read becomes a valid event of the collector's own service, initiated by the token's
    /// name, on the location's log, with the filter asked for and the request id.
    #[test]
    fn a_read_is_a_valid_event_of_the_collector() {
        let location: Location = "us-east".parse().unwrap();
        let filter = proto::EventFilter { action: "quantum-computing.job".into(), ..Default::default() };
        let used = Use::log(Action::EventsRead, auditor(), "us-east").with_filter(Some(&filter));
        let event = used.event(&location, None).unwrap();
        event.validate().unwrap();
        assert_eq!(event.action.as_str(), "qtrail.events.read");
        assert_eq!(event.initiator.id, "auditor-1");
        assert_eq!(event.initiator.credential_type, "token");
        assert_eq!(event.initiator.host_address, "192.0.2.7");
        assert_eq!(event.correlation_id, "req-42");
        assert_eq!(event.target.crn.as_str(), "crn:v1:bluemix:public:qtrail:us-east::collector:log:us-east");
        assert_eq!(event.request_data.unwrap()["filter"], json!({"action": "quantum-computing.job"}));
        let cadf = qtrail_cadf::cadf_json::to_string(&used.event(&location, None).unwrap());
        assert!(cadf.contains("\"action\":\"read\""), "{cadf}");
    }

    /// A refused call is recorded as a failure with its status; a rule change targets the rule;
    /// a sign-in by an unknown token names no token.
    #[test]
    fn refusals_rules_and_unknown_tokens() {
        let location: Location = "us-east".parse().unwrap();
        let refused = Use::log(Action::EventsExport, auditor(), "us-east")
            .event(&location, Some(&Error::invalid("unknown filter.action `x`")))
            .unwrap();
        assert_eq!(
            (refused.reason.code, refused.reason.reason_for_failure.as_str()),
            (400, "unknown filter.action `x`")
        );
        assert_eq!(refused.outcome, qtrail_cadf::Outcome::Failure);
        let rule =
            Use::rule(Action::AlertRuleDelete, auditor(), "us-east", "fail burst/1").event(&location, None).unwrap();
        assert_eq!(rule.target.crn.resource_type(), "alert-rule");
        assert_eq!(rule.target.name, "fail burst/1");
        let stranger = User { name: String::new(), ..auditor() };
        let login =
            Use::log(Action::ConsoleLogin, stranger, "").event(&location, Some(&Error::Unauthenticated)).unwrap();
        assert_eq!(login.initiator.id, UNKNOWN_TOKEN);
        assert!(login.target.crn.is_instance());
    }

    /// Details are bounded: a filter of megabytes leaves a note of its size, and the event stays
    /// valid.
    #[test]
    fn details_are_bounded() {
        let location: Location = "us-east".parse().unwrap();
        let filter = proto::EventFilter { initiator_id: "x".repeat(100_000), ..Default::default() };
        let event = Use::log(Action::EventsRead, auditor(), "us-east").with_filter(Some(&filter));
        let event = event.event(&location, None).unwrap();
        assert_eq!(event.request_data.unwrap()["truncated"], json!(true));
        let long = User { agent: bounded(&"a".repeat(10_000)), request_id: request_id(Some("has space")), ..auditor() };
        let event = Use::log(Action::EventsRead, long, "us-east").event(&location, None).unwrap();
        assert_eq!(event.initiator.host_agent.len(), MAX_HEADER_BYTES);
        assert_ne!(event.correlation_id, "has space", "an implausible request id is replaced");
    }

    /// Recording goes through the writer into the location's chain under the reserved publisher,
    /// seqs from 1; a location without collector records nothing and refuses nothing.
    #[tokio::test]
    async fn uses_reach_the_chain_through_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::open(dir.path(), 1024 * 1024).unwrap());
        let location: Location = "us-east".parse().unwrap();
        store.create_collector(&location, prost_types::Timestamp::default()).unwrap();
        let (indexer, indexing) = Indexer::spawn(store.clone(), u64::MAX).unwrap();
        let limit = GroupLimit { batches: 64, bytes: MAX_GROUP_BYTES };
        let (writer, handle) = Writer::spawn(store.clone(), limit, Fanout::new(1024 * 1024), indexing).unwrap();
        let usage = Usage::new(store.clone(), handle, PUBLISHER_ID.to_owned());
        for _ in 0..3 {
            usage.record(Use::log(Action::EventsRead, auditor(), "us-east"), &Ok(())).await.unwrap();
        }
        usage.record(Use::log(Action::EventsRead, auditor(), "eu-de"), &Ok(())).await.unwrap();
        usage.record(Use::log(Action::EventsRead, auditor(), "NOT A LOCATION"), &Ok(())).await.unwrap();
        assert_eq!(store.last_seq(&location).unwrap(), 3);
        let state = store.publisher(&location, PUBLISHER_ID).unwrap().unwrap();
        assert_eq!((state.stored_seq, state.gaps.len()), (3, 0));
        writer.stop().await;
        indexer.stop().await;
        // With the writer gone, a use cannot be recorded, and says so.
        let refused = usage.record(Use::log(Action::EventsRead, auditor(), "us-east"), &Ok(())).await.unwrap_err();
        assert!(matches!(refused, Error::NotRecorded(_)), "{refused:?}");
        assert_eq!(tonic::Status::from(refused).code(), tonic::Code::Unavailable);
    }

    #[test]
    fn replicas_record_under_ids_of_their_own_that_no_publisher_may_take() {
        assert_eq!(publisher_id(None), "qtrail-collector");
        assert_eq!(publisher_id(Some("host-1")), "qtrail-collector/host-1");
        assert!(is_reserved("qtrail-collector"));
        assert!(is_reserved("qtrail-collector/host-1"));
        assert!(!is_reserved("qtrail-collector-2"), "only the id and its replicas' ids are reserved");
        assert!(!is_reserved("runtime-1"));
    }
}
