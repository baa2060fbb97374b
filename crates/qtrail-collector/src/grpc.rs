//! Thin gRPC adapters: each RPC takes the request apart, calls the service code (which never
//! sees tonic types), and maps the result back; errors become statuses only through
//! `From<Error> for Status`. Authorization runs before any handler, as an interceptor that
//! checks the bearer token's role and leaves the caller's token name in the request.

use std::pin::Pin;

use futures_util::Stream;
use qtrail_cadf::Action;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::collector_admin_server::CollectorAdmin;
use qtrail_proto::qtrail::audit::v1::event_query_server::EventQuery;
use qtrail_proto::qtrail::audit::v1::ingest_server::Ingest as IngestRpc;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use crate::access;
use crate::error::{Error, Result};
use crate::ingest::Ingest;
use crate::query::Query;
use crate::registry::Registry;
use crate::retention;
use crate::scope::Scope;
use crate::store::publisher;
use crate::tokens::{Caller, Role, Tokens};
use crate::usage::{Usage, Use, User};

/// Messages a streaming response buffers before the producer waits for the client.
pub(crate) const STREAM_BUFFER: usize = 16;

/// A server-streaming response body.
pub(crate) type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Returns the token name of an authorized request (set by [`Authorizer`]).
pub(crate) fn caller_name<T>(request: &Request<T>) -> String {
    request.extensions().get::<Caller>().map(|caller| caller.name.clone()).unwrap_or_default()
}

/// Returns the account scope of an authorized request's caller; without a caller (which the
/// [`Authorizer`] lets through to no handler) a scope that admits nothing.
pub(crate) fn caller_scope<T>(request: &Request<T>) -> Scope {
    request.extensions().get::<Caller>().map_or_else(|| Scope::accounts(Vec::new()), |caller| caller.scope.clone())
}

/// Refuses a request whose caller (admitted by [`Authorizer`]) is not of role `needed`.
///
/// # Errors
/// [`Error::PermissionDenied`].
pub(crate) fn require_role<T>(request: &Request<T>, needed: Role) -> Result<()> {
    match request.extensions().get::<Caller>() {
        Some(caller) if caller.role == needed => Ok(()),
        caller => Err(Error::PermissionDenied {
            name: caller.map(|caller| caller.name.clone()).unwrap_or_default(),
            role: caller.map_or("none", |caller| caller.role.as_str()),
            needed: needed.as_str(),
        }),
    }
}

/// Records an auditor's read in the access log.
pub(crate) fn log_read<T>(request: &Request<T>, call: &str, location: &str) {
    access::read(&caller_name(request), call, location);
}

/// Returns a response stream fed by a channel, mapping errors to statuses.
pub(crate) fn channel_stream<T: Send + 'static>(receiver: mpsc::Receiver<Result<T>>) -> ResponseStream<T> {
    Box::pin(ReceiverStream::new(receiver).map(|item| item.map_err(Status::from)))
}

/// Checks that a request carries a token of one role.
#[derive(Debug, Clone)]
pub(crate) struct Authorizer {
    tokens: std::sync::Arc<Tokens>,
    role: Role,
    /// A second role admitted, whose calls the service limits to reads.
    reader: Option<Role>,
}

impl Authorizer {
    /// Returns an interceptor admitting tokens of `role`.
    pub(crate) fn new(tokens: std::sync::Arc<Tokens>, role: Role) -> Self {
        Self { tokens, role, reader: None }
    }

    /// Also admits tokens of `reader`; the service refuses them its writes ([`require_role`]).
    pub(crate) fn with_reader(self, reader: Role) -> Self {
        Self { reader: Some(reader), ..self }
    }
}

impl tonic::service::Interceptor for Authorizer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = qtrail_server::auth::bearer_token(request.metadata());
        let caller = match (self.tokens.authorize(token, self.role), self.reader) {
            // The refusal names the service's own role, the one that may do everything.
            (Err(denied @ Error::PermissionDenied { .. }), Some(reader)) => {
                self.tokens.authorize(token, reader).map_err(|_| denied)
            }
            (authorized, _) => authorized,
        };
        let caller = caller.inspect_err(|err| {
            access::refused(self.role.as_str(), &err.to_string());
        })?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// `CollectorAdmin` over the [`Registry`].
#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    pub(crate) registry: Registry,
    /// Where retention policies and legal holds are kept (see [`crate::retention`]).
    pub(crate) store: std::sync::Arc<dyn crate::store::EventStore>,
    /// Records retention and hold changes on the trail before they are answered.
    pub(crate) usage: Usage,
}

#[tonic::async_trait]
impl CollectorAdmin for AdminService {
    async fn create_collector(
        &self,
        request: Request<proto::CreateCollectorRequest>,
    ) -> Result<Response<proto::Collector>, Status> {
        require_role(&request, Role::Admin)?;
        let caller = caller_name(&request);
        Ok(Response::new(self.registry.create(&request.into_inner().location, &caller).await?))
    }

    async fn get_collector(
        &self,
        request: Request<proto::GetCollectorRequest>,
    ) -> Result<Response<proto::Collector>, Status> {
        Ok(Response::new(self.registry.get(&request.into_inner().location).await?))
    }

    async fn list_collectors(
        &self,
        _request: Request<proto::ListCollectorsRequest>,
    ) -> Result<Response<proto::ListCollectorsResponse>, Status> {
        Ok(Response::new(proto::ListCollectorsResponse { collectors: self.registry.list().await? }))
    }

    async fn set_retention(
        &self,
        request: Request<proto::SetRetentionRequest>,
    ) -> Result<Response<proto::RetentionPolicy>, Status> {
        require_role(&request, Role::Admin)?;
        let caller = caller_name(&request);
        let asked = request.get_ref();
        let used =
            Use::log(Action::RetentionUpdate, User::of_grpc(&request), &asked.location).with("days", asked.days.into());
        let result = retention::set_retention(&self.store, &asked.location, asked.days, &caller).await;
        // A change that cannot be recorded is still made (it is durable already) but reported
        // as failed: the admin retries, and the retry is recorded.
        self.usage.record(used, &result).await?;
        Ok(Response::new(result?))
    }

    async fn get_retention(
        &self,
        request: Request<proto::GetRetentionRequest>,
    ) -> Result<Response<proto::RetentionPolicy>, Status> {
        require_role(&request, Role::Admin)?;
        Ok(Response::new(retention::retention(&self.store, &request.into_inner().location).await?))
    }

    async fn set_legal_hold(
        &self,
        request: Request<proto::SetLegalHoldRequest>,
    ) -> Result<Response<proto::LegalHold>, Status> {
        require_role(&request, Role::Admin)?;
        let caller = caller_name(&request);
        let asked = request.get_ref();
        let used = Use::log(Action::HoldUpdate, User::of_grpc(&request), &asked.location)
            .with("account", (!asked.account.is_empty()).then(|| asked.account.clone()).into())
            .with("on", asked.on.into())
            .with("reason", qtrail_cadf::text::escape_control(&asked.reason).into());
        let account_wide = asked.location.is_empty();
        let result = retention::set_hold(&self.store, request.into_inner(), &caller).await;
        // A hold on an account concerns every location: each log says so.
        if account_wide {
            self.usage.record_everywhere(used, &result).await?;
        } else {
            self.usage.record(used, &result).await?;
        }
        Ok(Response::new(result?))
    }

    async fn list_legal_holds(
        &self,
        request: Request<proto::ListLegalHoldsRequest>,
    ) -> Result<Response<proto::ListLegalHoldsResponse>, Status> {
        require_role(&request, Role::Admin)?;
        Ok(Response::new(proto::ListLegalHoldsResponse { holds: retention::holds(&self.store).await? }))
    }
}

/// `Ingest` over the ingest sessions.
#[derive(Debug, Clone)]
pub(crate) struct IngestService {
    pub(crate) ingest: Ingest,
    pub(crate) tasks: TaskTracker,
    /// Whether publisher ids are bound to the token name and the client certificate (mutual
    /// TLS), rather than to the token name alone.
    pub(crate) bind_to_client_cert: bool,
}

/// Returns the credential that binds the publisher ids of a Publish stream by `caller`: its
/// token name, or with `bind_to_client_cert` that name and the stream's client certificate.
///
/// # Errors
/// [`Error::NoClientCertificate`] when certificates bind but the stream presented none.
fn publish_credential<T>(request: &Request<T>, caller: &Caller, bind_to_client_cert: bool) -> Result<String> {
    if !bind_to_client_cert {
        return Ok(caller.name.clone());
    }
    // The leaf comes first; the rest of a chain says who signed it, not who is calling.
    let certificates = request.peer_certs().ok_or(Error::NoClientCertificate)?;
    let leaf = certificates.first().ok_or(Error::NoClientCertificate)?;
    Ok(publisher::cert_credential(&caller.name, leaf.as_ref()))
}

#[tonic::async_trait]
impl IngestRpc for IngestService {
    type PublishStream = ResponseStream<proto::PublishResponse>;

    /// `Ingest.Publish`: a session per stream, which decodes each event from its bytes once.
    async fn publish(
        &self,
        request: Request<Streaming<proto::PublishRequest>>,
    ) -> Result<Response<Self::PublishStream>, Status> {
        // Set by the interceptor, which refuses a request without a publisher token before this.
        let caller = request.extensions().get::<Caller>().cloned().unwrap_or_else(|| Caller {
            name: String::new(),
            role: Role::Publisher,
            locations: Vec::new(),
            scope: Scope::all(),
        });
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        match publish_credential(&request, &caller, self.bind_to_client_cert) {
            Ok(credential) => {
                self.tasks.spawn(self.ingest.clone().publish(caller, credential, request.into_inner(), sender));
            }
            Err(err) => {
                access::publish_refused(&caller.name, "", &err.to_string());
                // The channel is new and empty: the refusal fits, and ends the stream.
                let _ = sender.try_send(Err(err));
            }
        }
        Ok(Response::new(channel_stream(receiver)))
    }
}

/// Returns which leaf an inclusion proof asks for, as an event's detail.
fn inclusion_leaf(request: &proto::GetInclusionProofRequest) -> serde_json::Value {
    use proto::get_inclusion_proof_request::Leaf;
    match &request.leaf {
        Some(Leaf::LeafIndex(index)) => serde_json::json!({"leafIndex": index}),
        Some(Leaf::EventId(id)) => serde_json::json!({"eventId": id}),
        Some(Leaf::CorrelationId(id)) => serde_json::json!({"correlationId": id}),
        None => serde_json::Value::Null,
    }
}

/// `EventQuery` over [`Query`]; reads of events and proofs are recorded on the trail
/// ([`Usage`]) before they are answered.
#[derive(Debug, Clone)]
pub(crate) struct QueryService {
    pub(crate) query: Query,
    pub(crate) tasks: TaskTracker,
    pub(crate) usage: Usage,
}

impl QueryService {
    /// Records `used`, which ended with `result`, then returns `result`, or refuses the call when
    /// the use cannot be recorded.
    async fn recorded<T>(&self, used: Use, result: Result<T>) -> Result<T, Status> {
        self.usage.record(used, &result).await?;
        Ok(result?)
    }
}

#[tonic::async_trait]
impl EventQuery for QueryService {
    type TailEventsStream = ResponseStream<proto::TailEventsResponse>;
    type ExportEventsStream = ResponseStream<proto::ExportEventsResponse>;

    async fn query_events(
        &self,
        request: Request<proto::QueryEventsRequest>,
    ) -> Result<Response<proto::QueryEventsResponse>, Status> {
        log_read(&request, "QueryEvents", &request.get_ref().location);
        let asked = request.get_ref();
        let used = Use::log(Action::EventsRead, User::of_grpc(&request), &asked.location)
            .with_filter(asked.filter.as_ref())
            .with("pageSize", asked.page_size.into())
            .with("continued", (!asked.page_token.is_empty()).into());
        let scope = caller_scope(&request);
        let result = self.query.query_events(request.into_inner(), &scope).await;
        Ok(Response::new(self.recorded(used, result).await?))
    }

    async fn tail_events(
        &self,
        request: Request<proto::TailEventsRequest>,
    ) -> Result<Response<Self::TailEventsStream>, Status> {
        log_read(&request, "TailEvents", &request.get_ref().location);
        let asked = request.get_ref();
        // One event per tail (and per resume), never per event it delivers.
        let used = Use::log(Action::EventsTail, User::of_grpc(&request), &asked.location)
            .with_filter(asked.filter.as_ref())
            .with("fromSeq", asked.from_seq.into());
        let opened = self.query.open_tail(request.get_ref(), &caller_scope(&request)).await;
        let tail = self.recorded(used, opened).await?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        self.tasks.spawn(self.query.clone().tail(tail, sender));
        Ok(Response::new(channel_stream(receiver)))
    }

    async fn verify_chain(
        &self,
        request: Request<proto::VerifyChainRequest>,
    ) -> Result<Response<proto::VerifyChainResponse>, Status> {
        log_read(&request, "VerifyChain", &request.get_ref().location);
        let asked = request.get_ref();
        let used =
            Use::log(Action::EventsVerify, User::of_grpc(&request), &asked.location).with_range(asked.range.as_ref());
        let result = self.query.verify_chain(request.into_inner()).await;
        Ok(Response::new(self.recorded(used, result).await?))
    }

    async fn export_events(
        &self,
        request: Request<proto::ExportEventsRequest>,
    ) -> Result<Response<Self::ExportEventsStream>, Status> {
        log_read(&request, "ExportEvents", &request.get_ref().location);
        let asked = request.get_ref();
        let used = Use::log(Action::EventsExport, User::of_grpc(&request), &asked.location)
            .with_filter(asked.filter.as_ref())
            .with_range(asked.range.as_ref())
            .with("format", asked.format.into());
        let opened = self.query.open_export(request.get_ref(), &caller_scope(&request)).await;
        let export = self.recorded(used, opened).await?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        self.tasks.spawn(self.query.clone().export(export, sender));
        Ok(Response::new(channel_stream(receiver)))
    }

    async fn list_publishers(
        &self,
        request: Request<proto::ListPublishersRequest>,
    ) -> Result<Response<proto::ListPublishersResponse>, Status> {
        log_read(&request, "ListPublishers", &request.get_ref().location);
        Ok(Response::new(self.query.list_publishers(request.into_inner()).await?))
    }

    async fn list_checkpoints(
        &self,
        request: Request<proto::ListCheckpointsRequest>,
    ) -> Result<Response<proto::ListCheckpointsResponse>, Status> {
        log_read(&request, "ListCheckpoints", &request.get_ref().location);
        Ok(Response::new(self.query.list_checkpoints(request.into_inner()).await?))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<proto::GetConsistencyProofRequest>,
    ) -> Result<Response<proto::GetConsistencyProofResponse>, Status> {
        log_read(&request, "GetConsistencyProof", &request.get_ref().location);
        let asked = request.get_ref();
        let used = Use::log(Action::EventsProve, User::of_grpc(&request), &asked.location)
            .with("consistencyFrom", asked.old_size.into());
        let result = self.query.consistency_proof(request.into_inner()).await;
        Ok(Response::new(self.recorded(used, result).await?))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<proto::GetInclusionProofRequest>,
    ) -> Result<Response<proto::GetInclusionProofResponse>, Status> {
        log_read(&request, "GetInclusionProof", &request.get_ref().location);
        let used = Use::log(Action::EventsProve, User::of_grpc(&request), &request.get_ref().location)
            .with("proof", "inclusion".into())
            .with("leaf", inclusion_leaf(request.get_ref()));
        let scope = caller_scope(&request);
        let result = self.query.inclusion_proof(request.into_inner(), &scope).await;
        Ok(Response::new(self.recorded(used, result).await?))
    }
}
