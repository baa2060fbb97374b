//! qtrail-runtime: the audited Qiskit Runtime-style service.
//!
//! It serves `qtrail.runtime.v1.ProgramService` and `JobService`: OpenQASM 2 programs, and jobs
//! that run them on a built-in state-vector simulator. Every call, refused and failed ones
//! included, produces exactly one CADF audit event, committed to an outbox in the same redb
//! transaction as the call's state change and streamed to the collector of the runtime's
//! location by `qtrail-publisher`.
//!
//! Layout: [`service`] (the domain, no transport types), [`grpc`] (thin adapters), [`store`]
//! (programs, jobs), [`executor`] (simulator and job queue), [`auth`] (principals, callers),
//! [`forwarded`] (the caller's address, through trusted proxies), [`refused`] (requests that do
//! not decode),
//! [`audit`] (events of calls), [`config`] (flags), [`error`] (the error type and its gRPC codes).

pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod executor;
pub mod forwarded;
pub mod grpc;
pub mod health;
pub mod refused;
pub mod service;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use qtrail_cadf::Crn;
use qtrail_proto::qtrail::runtime::v1::job_service_server::JobServiceServer;
use qtrail_proto::qtrail::runtime::v1::program_service_server::ProgramServiceServer;
use qtrail_publisher::{CommitMode, Outbox, OutboxLimits, Publisher, PublisherConfig};
use qtrail_server::http::MetricsToken;
use qtrail_server::tls::{self, LoadedServerTls, ServerTls};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::Config;

use crate::audit::Auditor;
use crate::auth::Principals;
use crate::executor::{Executor, JobLimits};
use crate::grpc::Grpc;
use crate::refused::Audited;
use crate::service::RuntimeService;
use crate::store::Store;

/// How long a shutdown waits for the HTTP side's connections (metrics scrapes) to finish.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// Serves the runtime on `listener` until `shutdown` completes, then stops accepting calls,
/// lets calls in flight finish, stops the executor (running jobs resume at the next start) and
/// gives the publisher `config.shutdown_flush_ms` to empty the outbox.
///
/// # Errors
/// A bad principals file, account or instance, a data directory that cannot be opened, or a
/// server failure.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    Crn::instance(&config.location, &config.account, &config.instance)
        .context("invalid --account or --instance: both must be printable ascii without spaces or `:`")?;
    // Read before anything starts: a bad certificate must stop start-up, never fall back to
    // plaintext.
    let server_tls = config.server_tls().context("failed to set up tls")?;
    let server_tls = server_tls.as_ref().map(ServerTls::load).transpose().context("failed to set up tls")?;
    let incoming = qtrail_server::incoming::incoming(listener, qtrail_server::incoming::MAX_GRPC_CONNECTIONS);
    let mut server =
        tls::grpc_server(server_tls.as_ref()).context("failed to set up tls")?.layer(incoming.activity_layer());
    let http_tls = server_tls.as_ref().map(LoadedServerTls::http);
    let metrics_token = config.metrics_token_file.as_deref().map(MetricsToken::load).transpose()?;
    let collector_tls = config.collector_tls();
    let collector_tls = if collector_tls.is_set() {
        Some(collector_tls.config().context("failed to set up tls for the collector")?)
    } else {
        None
    };
    let principals = Principals::load(&config.principals, &config.location, &config.instance)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let store = Store::open(&config.data_dir)
        .with_context(|| format!("cannot open the database in {}", config.data_dir.display()))?;
    let limits = OutboxLimits { max_events: config.outbox_max_events, max_bytes: config.outbox_max_bytes };
    let outbox = Outbox::open(store.database(), &format!("runtime-{}", config.instance), limits, CommitMode::Grouped)
        .context("cannot open the audit outbox")?;

    // Everything that can fail comes before the first background task is spawned.
    let requeued = executor::requeue_unfinished(&store).context("cannot re-queue unfinished jobs")?;
    let mut publishing = PublisherConfig::new(config.collector.clone(), config.location.clone());
    publishing.token = config.collector_token.as_ref().map(|token| token.expose().to_owned());
    publishing.linger = Duration::from_millis(config.publish_linger_ms);
    publishing.backoff_max = Duration::from_millis(config.publish_backoff_max_ms);
    publishing.backoff_initial = publishing.backoff_initial.min(publishing.backoff_max);
    publishing.ack_timeout = Duration::from_millis(config.publish_ack_timeout_ms);
    publishing.tls = collector_tls;
    let publisher = Publisher::spawn(outbox.clone(), publishing)?;
    let http_listener = match config.http {
        Some(addr) => {
            Some(qtrail_server::http::bind(addr).await.with_context(|| format!("cannot listen on {addr} for --http"))?)
        }
        None => None,
    };
    let http_addr = http_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .context("http listener has no local address")?;

    let limits =
        JobLimits { per_account: config.max_jobs_per_account as usize, total: config.max_queued_jobs as usize };
    let executor = Executor::start_with(store.clone(), usize::from(config.max_concurrent_jobs), limits);
    for job in &requeued {
        executor.resume(&job.account, &job.job_id);
    }
    let auditor = Auditor::new(config.location.clone(), config.instance.clone(), config.account.clone());
    let service = RuntimeService::new(store, outbox.clone(), auditor, executor.clone());
    #[cfg(feature = "bench")]
    let service = service.with_audit_sink(config.audit_sink);
    let service = Arc::new(service);
    let background = CancellationToken::new();
    let sources = telemetry::Sources {
        publisher: publisher.stats(),
        outbox: outbox.clone(),
        service: service.clone(),
        data_dir: config.data_dir.clone(),
    };
    let metrics_task = tokio::spawn(telemetry::refresh_until(sources, background.clone()));
    let http_task = http_listener.map(|listener| {
        let router = qtrail_server::http::base_router(metrics_token);
        tokio::spawn(qtrail_server::http::serve(listener, router, http_tls, background.clone().cancelled_owned()))
    });
    let calls = TaskTracker::new();
    let grpc = Grpc::new(service, Arc::new(principals), config.trusted_proxies.clone().into(), calls.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ProgramServiceServer<Grpc>>().await;
    health.set_serving::<JobServiceServer<Grpc>>().await;
    let health_stop = CancellationToken::new();
    let health_task = tokio::spawn(health::watch(health.clone(), outbox.clone(), health_stop.clone()));
    let router = server
        .add_service(health_service)
        .add_service(qtrail_server::reflection::v1()?)
        .add_service(qtrail_server::reflection::v1alpha()?)
        .add_service(Audited::new(ProgramServiceServer::new(grpc.clone()), grpc.clone()))
        .add_service(Audited::new(JobServiceServer::new(grpc.clone()), grpc));

    let addr = incoming.local_addr().context("listener has no local address")?;
    // The HTTP address goes first, so that whoever sees the gRPC address file finds both.
    if let (Some(path), Some(http_addr)) = (&config.http_addr_file, http_addr) {
        qtrail_server::addr_file::write(path, http_addr)
            .with_context(|| format!("cannot write the http address file {}", path.display()))?;
    }
    if let Some(path) = &config.addr_file {
        qtrail_server::addr_file::write(path, addr)
            .with_context(|| format!("cannot write the address file {}", path.display()))?;
    }
    info!(
        addr = %addr,
        location = %config.location,
        instance = %config.instance,
        publisher_id = %outbox.publisher_id(),
        tls = tls::mode(server_tls.as_ref()),
        "runtime serving"
    );
    let stopping = async {
        shutdown.await;
        // The watcher must not report SERVING again once the shutdown has said otherwise.
        health_stop.cancel();
        let _ = health_task.await;
        health.set_not_serving::<ProgramServiceServer<Grpc>>().await;
        health.set_not_serving::<JobServiceServer<Grpc>>().await;
        info!("runtime shutting down, draining calls");
    };
    let served = router.serve_with_incoming_shutdown(incoming, stopping).await;

    calls.close();
    calls.wait().await;
    executor.shutdown().await;
    let flushed = publisher.shutdown(config.shutdown_flush()).await;
    background.cancel();
    let _ = metrics_task.await;
    if let Some(mut task) = http_task {
        // A client that never finishes its request would otherwise hold the exit for good.
        match tokio::time::timeout(HTTP_DRAIN, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => warn!(error = %err, "http side failed"),
            Ok(Err(err)) => warn!(error = %err, "http side panicked"),
            Err(_) => {
                warn!(waited_secs = HTTP_DRAIN.as_secs(), "http connections still open, closing them");
                task.abort();
            }
        }
    }
    let queued = outbox.depth().map(|depth| depth.events).unwrap_or_default();
    if flushed {
        info!("runtime stopped, audit outbox empty");
    } else {
        warn!(queued, "runtime stopped with audit events in the outbox, they are published at the next start");
    }
    served.context("server failed")
}
