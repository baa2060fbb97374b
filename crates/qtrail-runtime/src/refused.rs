//! Calls refused before their handler runs: a request body that does not decode.
//!
//! tonic decodes a request before the service method sees it, and answers a body that is not
//! the method's message (a string field holding invalid UTF-8, a truncated field) INTERNAL on its
//! own, with no audit event. [`Audited`] wraps each generated server: it marks every request, the
//! handler clears the mark when it takes the call up ([`TakenUp`]), and a request answered with
//! an error while still marked never reached the service. For a decode failure (the only cause
//! of INTERNAL there) the call is answered INVALID_ARGUMENT and audited like any refused call:
//! the action is known from the method path, the caller from the headers.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use qtrail_cadf::Action;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Code, Status};

use crate::audit::AuditRecord;
use crate::error::Error;
use crate::grpc::{CONTEXT_HEADERS, Grpc};

/// Set on a request by [`Audited`]; marked once a handler takes the call up.
#[derive(Debug, Clone, Default)]
pub struct TakenUp(Arc<AtomicBool>);

impl TakenUp {
    /// Records that the handler runs the call (and so records its event).
    pub fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_marked(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Returns the action of a runtime method path, e.g. `/qtrail.runtime.v1.JobService/GetJob`.
pub fn action_of(path: &str) -> Option<Action> {
    let action = match path.strip_prefix("/qtrail.runtime.v1.")? {
        "ProgramService/CreateProgram" => Action::ProgramCreate,
        "ProgramService/ListPrograms" | "ProgramService/GetProgram" => Action::ProgramRead,
        "ProgramService/UpdateProgram" => Action::ProgramUpdate,
        "ProgramService/DeleteProgram" => Action::ProgramDelete,
        "JobService/CreateJob" => Action::JobCreate,
        "JobService/ListJobs"
        | "JobService/GetJob"
        | "JobService/GetJobResults"
        | "JobService/GetJobInterimResults"
        | "JobService/GetJobLogs" => Action::JobRead,
        "JobService/CancelJob" => Action::JobCancel,
        "JobService/DeleteJob" => Action::JobDelete,
        _ => return None,
    };
    Some(action)
}

/// A generated runtime server whose undecodable requests are refused INVALID_ARGUMENT and
/// audited.
#[derive(Debug, Clone)]
pub struct Audited<S> {
    inner: S,
    grpc: Grpc,
}

impl<S> Audited<S> {
    /// Wraps `inner`, whose calls `grpc` serves.
    pub fn new(inner: S, grpc: Grpc) -> Self {
        Self { inner, grpc }
    }
}

impl<S: NamedService> NamedService for Audited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Audited<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let Some(action) = action_of(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        let taken_up = TakenUp::default();
        request.extensions_mut().insert(taken_up.clone());
        // What the event needs about the caller, kept in case the handler never sees the call:
        // only the headers it reads, since this runs for every call.
        let mut headers = http::HeaderMap::new();
        for name in CONTEXT_HEADERS {
            for value in request.headers().get_all(name) {
                headers.append(name, value.clone());
            }
        }
        let mut head = tonic::Request::from_parts(MetadataMap::from_headers(headers), tonic::Extensions::default(), ());
        if let Some(info) = request.extensions().get::<TcpConnectInfo>() {
            head.extensions_mut().insert(info.clone());
        }
        if let Some(info) = request.extensions().get::<tonic::transport::server::TlsConnectInfo<TcpConnectInfo>>() {
            head.extensions_mut().insert(info.clone());
        }
        let grpc = self.grpc.clone();
        let answering = self.inner.call(request);
        Box::pin(async move {
            let response = answering.await?;
            if taken_up.is_marked() {
                return Ok(response);
            }
            let Some(status) = response.extensions().get::<Status>() else {
                return Ok(response);
            };
            if status.code() != Code::Internal {
                return Ok(response);
            }
            let err = Error::Undecodable(undecodable_reason(status.message()));
            let ctx = grpc.context(&head);
            let refused = grpc
                .run(ctx, move |service, ctx| service.refuse_before_handler(ctx, AuditRecord::new(action), err))
                .await;
            let status = match refused {
                Ok(never) => match never {},
                Err(status) => status,
            };
            Ok(status.into_http())
        })
    }
}

/// Returns why a body did not decode, without tonic's and prost's capitalised prefix.
fn undecodable_reason(message: &str) -> String {
    let detail = message.strip_prefix("failed to decode Protobuf message: ").unwrap_or(message);
    format!("cannot decode the message ({detail})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runtime_method_has_its_action() {
        assert_eq!(action_of("/qtrail.runtime.v1.JobService/GetJobResults"), Some(Action::JobRead));
        assert_eq!(action_of("/qtrail.runtime.v1.ProgramService/UpdateProgram"), Some(Action::ProgramUpdate));
        assert_eq!(action_of("/qtrail.runtime.v1.JobService/CancelJob"), Some(Action::JobCancel));
        assert_eq!(action_of("/qtrail.runtime.v1.JobService/Nope"), None);
        assert_eq!(action_of("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            undecodable_reason("failed to decode Protobuf message: GetJobRequest.id: invalid string value"),
            "cannot decode the message (GetJobRequest.id: invalid string value)"
        );
    }
}
