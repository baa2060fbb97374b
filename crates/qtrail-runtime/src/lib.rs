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
//! [`audit`] (events of calls), [`config`] (the typed settings and the flags that give them),
//! [`error`] (the error type and its gRPC codes).
//!
//! [`run`] goes through three phases: `Prepared::open` reads and opens everything that can fail
//! start-up, `Prepared::start` starts the background work and builds the server, `Runtime::serve`
//! serves until the shutdown signal, and `Drain::finish` stops the parts in order.

pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod executor;
pub mod forwarded;
pub mod grpc;
pub mod health;
pub mod receipts;
pub mod refused;
pub mod service;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use qtrail_cadf::Crn;
use qtrail_proto::qtrail::runtime::v1::job_service_server::JobServiceServer;
use qtrail_proto::qtrail::runtime::v1::program_service_server::ProgramServiceServer;
use qtrail_publisher::{CommitMode, Outbox, OutboxLimits, Publisher, PublisherConfig};
use qtrail_server::http::MetricsToken;
use qtrail_server::incoming::{CappedIncoming, GrpcRouter};
use qtrail_server::tls::{self, LoadedServerTls, ServerTls};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

pub use config::Config;

use crate::audit::Auditor;
use crate::auth::Principals;
use crate::executor::{Executor, JobLimits, Unfinished};
use crate::grpc::Grpc;
use crate::receipts::ReceiptPolicy;
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
    let runtime = Prepared::open(listener, config).await?.start().await?;
    let (drain, served) = runtime.serve(shutdown).await;
    drain.finish().await;
    served.context("server failed")
}

/// Everything start-up reads and opens, before any background task runs: each step here can
/// still fail start-up with nothing to stop.
struct Prepared {
    config: Config,
    incoming: CappedIncoming,
    server: tonic::transport::Server,
    server_tls: Option<LoadedServerTls>,
    metrics_token: Option<MetricsToken>,
    principals: Principals,
    store: Store,
    outbox: Outbox,
    requeued: Vec<Unfinished>,
    publishing: PublisherConfig,
    http_listener: Option<TcpListener>,
}

impl Prepared {
    /// Checks the settings, reads the TLS and principals files, opens the database and its
    /// outbox and binds the HTTP side.
    async fn open(listener: TcpListener, config: Config) -> anyhow::Result<Self> {
        Crn::instance(&config.location, &config.account, &config.instance)
            .context("invalid --account or --instance: both must be printable ascii without spaces or `:`")?;
        // Read before anything starts: a bad certificate must stop start-up, never fall back to
        // plaintext.
        let server_tls = config.server_tls().context("failed to set up tls")?;
        let server_tls = server_tls.as_ref().map(ServerTls::load).transpose().context("failed to set up tls")?;
        let incoming = qtrail_server::incoming::incoming(listener, qtrail_server::incoming::MAX_GRPC_CONNECTIONS);
        let server = tls::grpc_server(server_tls.as_ref()).context("failed to set up tls")?;
        let metrics_token = config.metrics_token_file.as_deref().map(MetricsToken::load).transpose()?;
        let publishing = publishing(&config)?;
        let principals = Principals::load(&config.principals, &config.location, &config.instance)?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
        let store = Store::open(&config.data_dir)
            .with_context(|| format!("cannot open the database in {}", config.data_dir.display()))?;
        let limits = OutboxLimits { max_events: config.outbox_max_events, max_bytes: config.outbox_max_bytes };
        let outbox =
            Outbox::open(store.database(), &format!("runtime-{}", config.instance), limits, CommitMode::Grouped)
                .context("cannot open the audit outbox")?;
        let requeued = executor::requeue_unfinished(&store).context("cannot re-queue unfinished jobs")?;
        let http_listener = match config.http {
            Some(addr) => Some(
                qtrail_server::http::bind(addr).await.with_context(|| format!("cannot listen on {addr} for --http"))?,
            ),
            None => None,
        };
        Ok(Self {
            config,
            incoming,
            server,
            server_tls,
            metrics_token,
            principals,
            store,
            outbox,
            requeued,
            publishing,
            http_listener,
        })
    }

    /// Starts the publisher, the executor, metrics and the HTTP side, builds the gRPC server
    /// with every service SERVING, and writes the address files.
    async fn start(self) -> anyhow::Result<Runtime> {
        let publisher = Publisher::spawn(self.outbox.clone(), self.publishing)?;
        let limits = JobLimits {
            per_account: self.config.max_jobs_per_account as usize,
            total: self.config.max_queued_jobs as usize,
        };
        let executor = Executor::start_with(self.store.clone(), usize::from(self.config.max_concurrent_jobs), limits);
        for job in &self.requeued {
            executor.resume(&job.account, &job.job_id);
        }
        let auditor =
            Auditor::new(self.config.location.clone(), self.config.instance.clone(), self.config.account.clone());
        let service = RuntimeService::new(self.store, self.outbox.clone(), auditor, executor.clone());
        let mut service = service.with_audit_sink(self.config.audit_sink);
        if let (Some(receipts), ReceiptPolicy::Refuse) = (publisher.receipts(), self.config.on_receipt_failure) {
            service = service.refusing_on_receipt_failure(receipts.stats());
        }
        let service = Arc::new(service);
        let background = CancellationToken::new();
        let sources = telemetry::Sources {
            publisher: publisher.stats(),
            receipts: publisher.receipts().map(|receipts| receipts.stats()),
            outbox: self.outbox.clone(),
            service: service.clone(),
            data_dir: self.config.data_dir.clone(),
        };
        let metrics_task = tokio::spawn(telemetry::refresh_until(sources, background.clone()));
        let http_addr = self.http_listener.as_ref().map(TcpListener::local_addr).transpose();
        let http_addr = http_addr.context("http listener has no local address")?;
        let http_tls = self.server_tls.as_ref().map(LoadedServerTls::http);
        let http_task = self.http_listener.map(|listener| {
            let mut router = qtrail_server::http::base_router(self.metrics_token.clone());
            if let Some(receipts) = publisher.receipts() {
                router = router.merge(receipts::router(receipts.store(), self.metrics_token));
            }
            tokio::spawn(qtrail_server::http::serve(listener, router, http_tls, background.clone().cancelled_owned()))
        });
        let calls = TaskTracker::new();
        let grpc =
            Grpc::new(service, Arc::new(self.principals), self.config.trusted_proxies.clone().into(), calls.clone());

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<ProgramServiceServer<Grpc>>().await;
        health.set_serving::<JobServiceServer<Grpc>>().await;
        let health_stop = CancellationToken::new();
        let health_task = tokio::spawn(health::watch(health.clone(), self.outbox.clone(), health_stop.clone()));
        let router = self
            .server
            .layer(self.incoming.activity_layer())
            .add_service(health_service)
            .add_service(qtrail_server::reflection::v1()?)
            .add_service(qtrail_server::reflection::v1alpha()?)
            .add_service(Audited::new(ProgramServiceServer::new(grpc.clone()), grpc.clone()))
            .add_service(Audited::new(JobServiceServer::new(grpc.clone()), grpc));

        let addr = self.incoming.local_addr().context("listener has no local address")?;
        announce(&self.config, addr, http_addr)?;
        info!(
            addr = %addr,
            location = %self.config.location,
            instance = %self.config.instance,
            publisher_id = %self.outbox.publisher_id(),
            tls = tls::mode(self.server_tls.as_ref()),
            "runtime serving"
        );
        let drain = Drain {
            calls,
            executor,
            publisher,
            shutdown_flush: self.config.shutdown_flush(),
            background,
            metrics_task,
            http_task,
            outbox: self.outbox,
        };
        Ok(Runtime { router, incoming: self.incoming, health, health_stop, health_task, drain })
    }
}

/// Returns the publisher's settings: where the collector is and how to reach it.
fn publishing(config: &Config) -> anyhow::Result<PublisherConfig> {
    let collector_tls = config.collector_tls();
    let collector_tls = if collector_tls.is_set() {
        Some(collector_tls.config().context("failed to set up tls for the collector")?)
    } else {
        None
    };
    let mut publishing = PublisherConfig::new(config.collector.clone(), config.location.clone());
    publishing.failover_urls = config.failover_collectors.clone();
    publishing.token = config.collector_token.as_ref().map(|token| token.expose().to_owned());
    publishing.receipts = receipts::receipt_config(config)?;
    publishing.linger = Duration::from_millis(config.publish_linger_ms);
    publishing.backoff_max = Duration::from_millis(config.publish_backoff_max_ms);
    publishing.backoff_initial = publishing.backoff_initial.min(publishing.backoff_max);
    publishing.ack_timeout = Duration::from_millis(config.publish_ack_timeout_ms);
    publishing.tls = collector_tls;
    Ok(publishing)
}

/// Writes the address files, once the listeners are bound and every service is SERVING.
fn announce(config: &Config, addr: SocketAddr, http_addr: Option<SocketAddr>) -> anyhow::Result<()> {
    // The HTTP address goes first, so that whoever sees the gRPC address file finds both.
    if let (Some(path), Some(http_addr)) = (&config.http_addr_file, http_addr) {
        qtrail_server::addr_file::write(path, http_addr)
            .with_context(|| format!("cannot write the http address file {}", path.display()))?;
    }
    if let Some(path) = &config.addr_file {
        qtrail_server::addr_file::write(path, addr)
            .with_context(|| format!("cannot write the address file {}", path.display()))?;
    }
    Ok(())
}

/// A started runtime: the gRPC server ready to serve, and what its shutdown stops.
struct Runtime {
    router: GrpcRouter,
    incoming: CappedIncoming,
    health: HealthReporter,
    health_stop: CancellationToken,
    health_task: JoinHandle<()>,
    drain: Drain,
}

impl Runtime {
    /// Serves gRPC until `shutdown` completes; then reports NOT_SERVING and stops accepting
    /// calls, letting those in flight finish.
    async fn serve(self, shutdown: impl Future<Output = ()>) -> (Drain, Result<(), tonic::transport::Error>) {
        let Self { router, incoming, health, health_stop, health_task, drain } = self;
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
        (drain, served)
    }
}

/// What a shutdown stops once the server no longer accepts calls, in [`Drain::finish`]'s order.
struct Drain {
    calls: TaskTracker,
    executor: Executor,
    publisher: Publisher,
    shutdown_flush: Duration,
    background: CancellationToken,
    metrics_task: JoinHandle<()>,
    http_task: Option<JoinHandle<std::io::Result<()>>>,
    outbox: Outbox,
}

impl Drain {
    /// Waits for calls in flight, stops the executor (running jobs resume at the next start),
    /// gives the publisher the flush timeout to empty the outbox, then stops metrics and the
    /// HTTP side.
    async fn finish(self) {
        self.calls.close();
        self.calls.wait().await;
        self.executor.shutdown().await;
        let flushed = self.publisher.shutdown(self.shutdown_flush).await;
        self.background.cancel();
        let _ = self.metrics_task.await;
        if let Some(mut task) = self.http_task {
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
        let queued = self.outbox.depth().map(|depth| depth.events).unwrap_or_default();
        if flushed {
            info!("runtime stopped, audit outbox empty");
        } else {
            warn!(queued, "runtime stopped with audit events in the outbox, they are published at the next start");
        }
    }
}
