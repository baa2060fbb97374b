//! Thin gRPC adapters: `ProgramService` and `JobService` over [`RuntimeService`].
//!
//! Each RPC reads who is calling and from where out of the request metadata, then runs the
//! service method on a blocking thread (it reads the database, and a changing call waits for an
//! fsync), awaits its event's durability and maps its error to a status. Calls are tracked, so a
//! shutdown can wait for every one of them to finish and record its event, even for callers that
//! hung up.

use std::sync::Arc;

use qtrail_proto::qtrail::runtime::v1 as pb;
use qtrail_proto::qtrail::runtime::v1::job_service_server::JobService;
use qtrail_proto::qtrail::runtime::v1::program_service_server::ProgramService;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use crate::auth::{CallContext, Caller, Principals, correlation_id};
use crate::forwarded::{Cidr, originating_address};
use crate::refused::TakenUp;
use crate::service::{Answer, RuntimeService};

/// Longest `user-agent` kept, in characters.
const MAX_USER_AGENT_CHARS: usize = 256;

/// The gRPC face of the runtime. Clones share the service.
#[derive(Debug, Clone)]
pub struct Grpc {
    service: Arc<RuntimeService>,
    principals: Arc<Principals>,
    /// Peers whose `x-forwarded-for` is believed.
    trusted_proxies: Arc<[Cidr]>,
    tracker: TaskTracker,
}

/// The headers [`Grpc::context`] reads: all a call's event needs of its request's metadata.
pub(crate) const CONTEXT_HEADERS: [&str; 4] = ["authorization", "x-forwarded-for", "user-agent", "x-correlation-id"];

impl Grpc {
    /// Returns adapters over `service` that authenticate callers against `principals`, believe
    /// `x-forwarded-for` only from `trusted_proxies`, and run calls on `tracker`.
    pub fn new(
        service: Arc<RuntimeService>,
        principals: Arc<Principals>,
        trusted_proxies: Arc<[Cidr]>,
        tracker: TaskTracker,
    ) -> Self {
        Self { service, principals, trusted_proxies, tracker }
    }

    /// Returns what the call knows about its caller, from the [`CONTEXT_HEADERS`] and the peer;
    /// never keeps the API key.
    pub(crate) fn context<T>(&self, request: &Request<T>) -> CallContext {
        let metadata = request.metadata();
        let caller = match qtrail_server::auth::bearer_token(metadata) {
            Some(key) => match self.principals.find(key) {
                Some(principal) => Caller::Principal(principal.clone()),
                None => Caller::UnknownKey,
            },
            // A header that is not a usable bearer token still presented a credential.
            None if metadata.contains_key("authorization") => Caller::UnknownKey,
            None => Caller::Anonymous,
        };
        let text = |name: &str| metadata.get(name).and_then(|value| value.to_str().ok());
        let forwarded: Vec<&str> =
            metadata.get_all("x-forwarded-for").iter().filter_map(|value| value.to_str().ok()).collect();
        let peer = request.remote_addr().map(|addr| addr.ip());
        let host_address =
            originating_address(peer, &forwarded, &self.trusted_proxies).map(|ip| ip.to_string()).unwrap_or_default();
        let user_agent = text("user-agent").unwrap_or_default().chars().take(MAX_USER_AGENT_CHARS).collect();
        CallContext { caller, host_address, user_agent, correlation_id: correlation_id(text("x-correlation-id")) }
    }

    async fn call<Req, Resp>(
        &self,
        request: Request<Req>,
        method: fn(&RuntimeService, &CallContext, Req) -> Answer<Resp>,
    ) -> std::result::Result<Response<Resp>, Status>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
    {
        if let Some(taken_up) = request.extensions().get::<TakenUp>() {
            taken_up.mark();
        }
        let ctx = self.context(&request);
        let message = request.into_inner();
        self.run(ctx, move |service, ctx| method(service, ctx, message)).await.map(Response::new)
    }

    /// Runs `body` for the call `ctx` and returns its result once its event is durable.
    pub(crate) async fn run<Resp>(
        &self,
        ctx: CallContext,
        body: impl FnOnce(&RuntimeService, &CallContext) -> Answer<Resp> + Send + 'static,
    ) -> std::result::Result<Resp, Status>
    where
        Resp: Send + 'static,
    {
        let service = self.service.clone();
        // A task of its own, tracked, so that a call whose caller hung up still runs to the end
        // and its event is durable before a shutdown proceeds. Only the method holds a thread;
        // the wait for its event's fsync does not.
        let call = self.tracker.spawn(async move {
            let settling = service.clone();
            let answer = tokio::task::spawn_blocking(move || body(&service, &ctx)).await.ok()?;
            Some(settling.settle(answer).await)
        });
        match call.await {
            Ok(Some(result)) => result.map_err(Status::from),
            Ok(None) | Err(_) => Err(Status::internal("call failed")),
        }
    }
}

#[tonic::async_trait]
impl ProgramService for Grpc {
    async fn create_program(
        &self,
        request: Request<pb::CreateProgramRequest>,
    ) -> std::result::Result<Response<pb::Program>, Status> {
        self.call(request, RuntimeService::create_program).await
    }

    async fn list_programs(
        &self,
        request: Request<pb::ListProgramsRequest>,
    ) -> std::result::Result<Response<pb::ListProgramsResponse>, Status> {
        self.call(request, RuntimeService::list_programs).await
    }

    async fn get_program(
        &self,
        request: Request<pb::GetProgramRequest>,
    ) -> std::result::Result<Response<pb::Program>, Status> {
        self.call(request, RuntimeService::get_program).await
    }

    async fn update_program(
        &self,
        request: Request<pb::UpdateProgramRequest>,
    ) -> std::result::Result<Response<pb::Program>, Status> {
        self.call(request, RuntimeService::update_program).await
    }

    async fn delete_program(
        &self,
        request: Request<pb::DeleteProgramRequest>,
    ) -> std::result::Result<Response<pb::DeleteProgramResponse>, Status> {
        self.call(request, RuntimeService::delete_program).await
    }
}

#[tonic::async_trait]
impl JobService for Grpc {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> std::result::Result<Response<pb::Job>, Status> {
        self.call(request, RuntimeService::create_job).await
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> std::result::Result<Response<pb::ListJobsResponse>, Status> {
        self.call(request, RuntimeService::list_jobs).await
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> std::result::Result<Response<pb::Job>, Status> {
        self.call(request, RuntimeService::get_job).await
    }

    async fn get_job_results(
        &self,
        request: Request<pb::GetJobResultsRequest>,
    ) -> std::result::Result<Response<pb::JobResults>, Status> {
        self.call(request, RuntimeService::get_job_results).await
    }

    async fn get_job_interim_results(
        &self,
        request: Request<pb::GetJobInterimResultsRequest>,
    ) -> std::result::Result<Response<pb::JobInterimResults>, Status> {
        self.call(request, RuntimeService::get_job_interim_results).await
    }

    async fn get_job_logs(
        &self,
        request: Request<pb::GetJobLogsRequest>,
    ) -> std::result::Result<Response<pb::JobLogs>, Status> {
        self.call(request, RuntimeService::get_job_logs).await
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> std::result::Result<Response<pb::Job>, Status> {
        self.call(request, RuntimeService::cancel_job).await
    }

    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> std::result::Result<Response<pb::DeleteJobResponse>, Status> {
        self.call(request, RuntimeService::delete_job).await
    }
}
