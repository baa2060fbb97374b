//! The qtrail collector service.
//!
//! Hosts at most one collector per location ([`registry`]), receives events from publishers
//! over a streaming RPC and stores each batch durably before acknowledging it ([`ingest`],
//! [`writer`]), keeps every location's events in a SHA-256 hash chain in an embedded store
//! ([`store`]) whose query indexes follow the chain (`indexer`), and serves auditors: queries,
//! tails, chain verification ([`chain`]) and exports ([`query`]), and runs alert rules over the
//! stored events ([`alerts`]). Tokens with roles guard each service ([`tokens`]).
//!
//! [`run`] serves gRPC on one listener and, when configured, an HTTP side with the web console
//! ([`console`]), Prometheus metrics ([`meters`]) and `/healthz` on another, until its shutdown
//! future completes; then it stops accepting on both, lets Publish streams acknowledge the
//! batches they have, ends tails and live views, waits for the writer to commit what is queued,
//! stops the indexer and closes the store. It goes through three phases: `Prepared::open` reads
//! and binds everything that can fail start-up, `Prepared::start` starts the store's tasks and
//! builds both servers, `Collector::serve` serves until the shutdown signal or a server failing,
//! and `Drain::finish` stops the parts in order.

mod access;
pub mod alerts;
pub mod archive;
pub mod chain;
mod checkpointer;
mod components;
pub mod config;
mod console;
mod cosignatures;
pub mod error;
mod fanout;
pub mod filter;
mod grpc;
mod indexer;
pub mod ingest;
mod lifecycle;
mod merkle;
mod meters;
pub mod query;
pub mod registry;
mod replica;
pub mod retention;
pub mod scope;
pub mod store;
mod tiles;
pub mod tokens;
mod usage;
pub mod witness;
pub mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use qtrail_proto::limits::MAX_MESSAGE_BYTES;
use qtrail_proto::qtrail::audit::v1::alert_service_server::AlertServiceServer;
use qtrail_proto::qtrail::audit::v1::collector_admin_server::CollectorAdminServer;
use qtrail_proto::qtrail::audit::v1::event_query_server::EventQueryServer;
use qtrail_proto::qtrail::audit::v1::ingest_server::IngestServer;
use qtrail_server::http::MetricsToken;
use qtrail_server::incoming::{ActivityLayer, CappedIncoming, GrpcRouter};
use qtrail_server::tls::{self, LoadedServerTls, ServerTls};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::interceptor::InterceptedService;
use tonic_health::server::HealthReporter;
use tracing::{error, info, warn};

pub use config::Config;
pub use error::{Error, Result};

use crate::alerts::{AlertRpc, AlertStore};
use crate::fanout::Fanout;
use crate::grpc::{AdminService, Authorizer, IngestService, QueryService};
use crate::indexer::Indexer;
use crate::lifecycle::Lifecycle;
use crate::store::EventStore;
use crate::tokens::Role;
use crate::writer::{GroupLimit, Writer};

/// Serves the collector on `listener` until `shutdown` completes, then shuts down gracefully.
///
/// # Errors
/// When the store cannot be opened (for instance because another process holds it), the
/// address file cannot be written, or the server fails.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let collector = Prepared::open(listener, config).await?.start().await?;
    let (drain, served, http_served) = collector.serve(shutdown).await;
    drain.finish().await;
    served.context("gRPC server failed")?;
    http_served.context("http server failed")?;
    info!("collector stopped");
    Ok(())
}

/// Everything start-up reads, binds and opens before any task runs: each step here can still
/// fail start-up with nothing to undo.
struct Prepared {
    config: Config,
    local_addr: SocketAddr,
    incoming: CappedIncoming,
    server: tonic::transport::Server,
    tls: Option<LoadedServerTls>,
    metrics_token: Option<MetricsToken>,
    checkpoint_keys: Option<checkpointer::Keys>,
    witness: Option<Arc<witness::Witness>>,
    witnesses: Option<cosignatures::Witnesses>,
    http_listener: Option<TcpListener>,
    store: Arc<dyn EventStore>,
    alert_state: Arc<AlertStore>,
    alert_tls: tokio_rustls::TlsConnector,
}

impl Prepared {
    /// Checks the settings, reads the TLS, metrics token and checkpoint key files, binds the
    /// HTTP side and opens the store.
    async fn open(listener: TcpListener, config: Config) -> anyhow::Result<Self> {
        let local_addr = listener.local_addr().context("failed to read the bound address")?;
        let incoming = qtrail_server::incoming::incoming(listener, qtrail_server::incoming::MAX_GRPC_CONNECTIONS);
        // Read before anything starts: a bad certificate must stop start-up, never fall back to
        // plaintext.
        let tls = config.tls.as_ref().map(ServerTls::load).transpose().context("failed to set up tls")?;
        // Without mutual TLS there is no certificate to bind to: refused rather than ignored.
        if config.bind_publishers_to_client_cert && config.tls.as_ref().is_none_or(|tls| tls.client_ca.is_none()) {
            anyhow::bail!("--bind-publishers-to-client-cert needs mutual tls: give --tls-client-ca too");
        }
        let server = tls::grpc_server(tls.as_ref()).context("failed to set up tls")?;
        let metrics_token = config.metrics_token_file.as_deref().map(MetricsToken::load).transpose()?;
        let previous = config.previous_checkpoint_public_keys.iter().map(|path| checkpointer::load_previous_key(path));
        let previous = previous.collect::<anyhow::Result<Vec<_>>>()?;
        let checkpoint_keys = match config.checkpoint_key.as_deref().map(checkpointer::load_key).transpose()? {
            Some(current) => Some(checkpointer::Keys { current, previous }),
            None if previous.is_empty() => None,
            None => anyhow::bail!("a previous checkpoint public key needs a checkpoint key to sign with"),
        };
        if checkpoint_keys.is_some() && config.checkpoint_interval.is_zero() {
            anyhow::bail!("the checkpoint interval must be longer than zero");
        }
        let witness = components::open_witness(&config)?;
        let witnesses = cosignatures::Witnesses::new(&config.witness_urls)?;
        if witnesses.is_some() && checkpoint_keys.is_none() {
            anyhow::bail!("--witness-url needs a checkpoint key: there is nothing to cosign without one");
        }
        // Bound before anything starts, so that a taken port fails start-up with nothing to undo.
        let http_listener = match config.http {
            Some(addr) => Some(
                qtrail_server::http::bind(addr)
                    .await
                    .with_context(|| format!("failed to listen for http on {addr}"))?,
            ),
            None => None,
        };
        let store = components::open_store(&config).await?;
        let alert_tls = alerts::webhook::tls_connector(config.alert_tls_ca.as_deref())?;
        let alert_state = Arc::new(components::open_alert_state(&config).await?);
        Ok(Self {
            config,
            local_addr,
            incoming,
            server,
            tls,
            metrics_token,
            checkpoint_keys,
            witness,
            witnesses,
            http_listener,
            store,
            alert_state,
            alert_tls,
        })
    }

    /// Starts the indexer and the writer, builds the HTTP side and the gRPC server with every
    /// service SERVING, writes the address files and, once nothing can fail start-up any more,
    /// starts the checkpointer and the disk gauge.
    async fn start(self) -> anyhow::Result<Collector> {
        let Self {
            config,
            local_addr,
            incoming,
            server,
            tls,
            metrics_token,
            checkpoint_keys,
            witness,
            witnesses,
            http_listener,
            store,
            alert_state,
            alert_tls,
        } = self;
        // Opened before anything starts: a bad archive URL stops start-up.
        let archiver = components::open_archiver(&config, &store)?;
        let committed = Fanout::new(config.tail_buffer_bytes);
        let (indexer, indexer_handle) =
            Indexer::spawn(store.clone(), config.snapshot_every).context("failed to start the indexer")?;
        let replica_id = config.replica_id.clone().unwrap_or_else(replica::default_replica_id);
        let replica = replica::Replica::start(config.shared_store_url(), &replica_id, store.clone(), &committed)
            .await
            .context("failed to start the replica")?;
        let (writer, writer_handle) = Writer::spawn(
            store.clone(),
            GroupLimit { batches: config.group_commit_batches, bytes: writer::MAX_GROUP_BYTES },
            replica.publish.clone(),
            indexer_handle,
        )
        .context("failed to start the writer")?;
        let lifecycle = Lifecycle::new();
        let tasks = TaskTracker::new();
        if config.tokens.is_empty() {
            warn!("the tokens file lists no tokens: every call except health and reflection will be refused");
        }
        let tokens = Arc::new(config.tokens.clone());
        let registry = registry::Registry::new(store.clone());
        count_stored(&registry).await;
        if archiver.is_none() {
            // Nothing expires before it is archived: a policy cannot take effect (see `retention`).
            retention::warn_without_archive(store.as_ref());
        }
        let note_key = checkpoint_keys.as_ref().map(|keys| (config.log_origin_prefix.clone(), keys.public_keys()));
        let query = query::Query::new(store.clone(), committed.clone(), lifecycle.clone(), config.tail_stall, note_key);
        let own_id = usage::publisher_id(config.shared_store_url().map(|_| replica_id.as_str()));
        let usage = usage::Usage::new(store.clone(), writer_handle.clone(), own_id).enabled(config.record_use);
        let stop_background = CancellationToken::new();
        let (alerts, evaluator) = components::start_alerts(
            &config,
            store.clone(),
            alert_state.clone(),
            alert_tls,
            &lifecycle,
            &stop_background,
        )?;

        // The HTTP side: metrics, health and the console, over the same service code as gRPC.
        let console = console::Console {
            query: query.clone(),
            registry: registry.clone(),
            alerts: alerts.clone(),
            alert_state,
            tokens: tokens.clone(),
            sessions: components::console_sessions(&config, &tokens)?,
            sign_ins: console::SignInLimiter::default(),
            tasks: tasks.clone(),
            https: tls.is_some(),
            usage: usage.clone(),
        };
        let tiles = components::tile_server(&config, store.clone(), tokens.clone(), checkpoint_keys.as_ref());
        let http = HttpSide::build(http_listener, console, tiles, witness, metrics_token, &tls)?;

        let admin = AdminService { registry, store: store.clone(), usage: usage.clone() };
        let ingest = IngestService {
            ingest: ingest::Ingest::new(store.clone(), writer_handle, lifecycle.clone()),
            tasks: tasks.clone(),
            bind_to_client_cert: config.bind_publishers_to_client_cert,
        };
        let query = QueryService { query, tasks: tasks.clone(), usage: usage.clone() };
        let alerts = AlertRpc { alerts, tasks: tasks.clone(), usage };
        let services = Services { admin, ingest, query, alerts };
        let (router, health) = grpc_router(server, incoming.activity_layer(), tokens, services).await?;

        // The listeners are bound and every service is SERVING: connections made from now on
        // queue until the server accepts them, so this is the moment to tell whoever waits.
        if let Err(err) = announce(&config, local_addr, http.as_ref().map(|http| http.addr)) {
            writer.stop().await;
            indexer.stop().await;
            replica.stop().await;
            return Err(err);
        }
        info!(
            addr = %local_addr,
            data_dir = %config.data_dir.display(),
            replica = %replica_id,
            tls = tls::mode(tls.as_ref()),
            bind_publishers_to_client_cert = config.bind_publishers_to_client_cert,
            "collector listening"
        );
        // Started once nothing can fail start-up any more, so that no early return leaves them
        // running.
        let checkpoints = checkpoint_keys.map(|keys| {
            tokio::spawn(checkpointer::run(
                store.clone(),
                keys,
                config.log_origin_prefix.clone(),
                witnesses,
                config.checkpoint_interval,
                replica.leadership.clone(),
                stop_background.clone(),
            ))
        });
        if let (Some(archiver), Some(settings)) = (archiver, &config.archive) {
            tokio::spawn(archiver.clone().run(stop_background.clone()));
            // Sweeps as often as the archiver runs: a range becomes prunable once archived.
            let clock = retention::Clock { every: settings.every, ahead: settings.retention_clock_ahead };
            tokio::spawn(retention::run(store.clone(), archiver, clock, stop_background.clone()));
        }
        let disk = tokio::spawn(meters::watch_disk(config.data_dir.clone(), stop_background.clone()));
        let evaluator = alerts::spawn(evaluator, &committed, replica.leadership.role(), stop_background.clone());
        let drain = Drain {
            lifecycle: lifecycle.clone(),
            tasks,
            writer,
            indexer,
            stop_background,
            disk,
            checkpoints,
            evaluator,
            replica,
            store,
        };
        Ok(Collector { router, incoming, health, http, lifecycle, grace: config.shutdown_grace, drain })
    }
}

/// Sets the stored-events gauge of every location hosted here, from the registry's counts.
async fn count_stored(registry: &registry::Registry) {
    match registry.list().await {
        Ok(collectors) => {
            for collector in collectors {
                meters::events_stored(&collector.location, collector.event_count);
            }
        }
        Err(err) => warn!(error = %err, "failed to read the collectors for metrics"),
    }
}

/// The gRPC services, before their token checks.
struct Services {
    admin: AdminService,
    ingest: IngestService,
    query: QueryService,
    alerts: AlertRpc,
}

/// Returns the gRPC router of the four services behind their token checks, with health and
/// reflection, and the health reporter that says every service is SERVING.
async fn grpc_router(
    server: tonic::transport::Server,
    activity: ActivityLayer,
    tokens: Arc<tokens::Tokens>,
    services: Services,
) -> anyhow::Result<(GrpcRouter, HealthReporter)> {
    let Services { admin, ingest, query, alerts } = services;
    // Auditors may list the collectors (as the console shows them), so that a client can find the
    // one location a collector hosts; creating one stays the admin's.
    let admin_auth = Authorizer::new(tokens.clone(), Role::Admin).with_reader(Role::Auditor);
    let admin = InterceptedService::new(CollectorAdminServer::new(admin), admin_auth);
    let ingest = IngestServer::new(ingest)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let ingest = InterceptedService::new(ingest, Authorizer::new(tokens.clone(), Role::Publisher));
    let query = InterceptedService::new(EventQueryServer::new(query), Authorizer::new(tokens.clone(), Role::Auditor));
    // Admins write rules; auditors read them and watch the firings.
    let alerts_auth = Authorizer::new(tokens, Role::Admin).with_reader(Role::Auditor);
    let alerts = InterceptedService::new(AlertServiceServer::new(alerts), alerts_auth);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CollectorAdminServer<AdminService>>().await;
    health.set_serving::<IngestServer<IngestService>>().await;
    health.set_serving::<EventQueryServer<QueryService>>().await;
    health.set_serving::<AlertServiceServer<AlertRpc>>().await;
    let router = server
        .layer(activity)
        .add_service(health_service)
        .add_service(qtrail_server::reflection::v1().context("failed to build reflection v1")?)
        .add_service(qtrail_server::reflection::v1alpha().context("failed to build reflection v1alpha")?)
        .add_service(admin)
        .add_service(ingest)
        .add_service(query)
        .add_service(alerts);
    Ok((router, health))
}

/// Writes the address files: the HTTP address first, so that whoever sees the gRPC address file
/// finds both.
fn announce(config: &Config, addr: SocketAddr, http_addr: Option<SocketAddr>) -> anyhow::Result<()> {
    let addr_files = [(config.http_addr_file.as_ref(), http_addr), (config.addr_file.as_ref(), Some(addr))];
    for (file, addr) in addr_files {
        let (Some(file), Some(addr)) = (file, addr) else {
            continue;
        };
        qtrail_server::addr_file::write(file, addr)
            .with_context(|| format!("failed to write the address file {}", file.display()))?;
    }
    Ok(())
}

/// The HTTP side, bound and routed: the console, the transparency log's tiles, `/metrics` and
/// `/healthz`.
struct HttpSide {
    listener: TcpListener,
    addr: SocketAddr,
    router: axum::Router,
    tls: Option<LoadedServerTls>,
}

impl HttpSide {
    /// Returns the HTTP side on `listener`, or none without one.
    fn build(
        listener: Option<TcpListener>,
        console: console::Console,
        tiles: tiles::TileServer,
        witness: Option<Arc<witness::Witness>>,
        metrics_token: Option<MetricsToken>,
        tls: &Option<LoadedServerTls>,
    ) -> anyhow::Result<Option<Self>> {
        let Some(listener) = listener else {
            return Ok(None);
        };
        let addr = listener.local_addr().context("failed to read the bound http address")?;
        let mut router =
            qtrail_server::http::base_router(metrics_token).merge(tiles::router(tiles)).merge(console::router(console));
        if let Some(witness) = witness {
            router = router.merge(witness::http::router(witness));
        }
        Ok(Some(Self { listener, addr, router, tls: tls.clone() }))
    }

    /// Serves until `lifecycle` stops, and stops it when serving ends by failing.
    async fn serve(self, lifecycle: Lifecycle) -> std::io::Result<()> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let addr = self.addr;
        info!(addr = %addr, console = %format!("{scheme}://{addr}/"), "console and metrics listening");
        let stopping = lifecycle.clone();
        let http_tls = self.tls.as_ref().map(LoadedServerTls::http);
        let served =
            qtrail_server::http::serve(self.listener, self.router, http_tls, async move { stopping.stopping().await })
                .await;
        lifecycle.stop();
        served
    }
}

/// A started collector: both servers ready to serve, and what its shutdown stops.
struct Collector {
    router: GrpcRouter,
    incoming: CappedIncoming,
    health: HealthReporter,
    http: Option<HttpSide>,
    lifecycle: Lifecycle,
    grace: Duration,
    drain: Drain,
}

impl Collector {
    /// Serves gRPC and the HTTP side until `shutdown` completes or either server ends (by
    /// failing), which stops the other one too; then waits for connections to close, at most
    /// the grace period.
    async fn serve(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> (Drain, Result<(), tonic::transport::Error>, std::io::Result<()>) {
        let Self { router, incoming, health, http, lifecycle, grace, drain } = self;
        let http_serve = {
            let lifecycle = lifecycle.clone();
            async move {
                match http {
                    Some(http) => http.serve(lifecycle).await,
                    None => Ok(()),
                }
            }
        };
        let signal = {
            let lifecycle = lifecycle.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    () = lifecycle.stopping() => {}
                }
                info!("shutting down: acknowledging in-flight batches, ending streams");
                health.set_not_serving::<IngestServer<IngestService>>().await;
                lifecycle.stop();
            }
        };
        let serve = {
            let lifecycle = lifecycle.clone();
            async move {
                let served = router.serve_with_incoming_shutdown(incoming, signal).await;
                lifecycle.stop();
                served
            }
        };
        let grace_over = async move {
            lifecycle.stopping().await;
            tokio::time::sleep(grace).await;
        };
        // Connections close once their calls end; a client that stops reading could hold one
        // open forever, so after the grace period the collector stops waiting for it.
        let (served, http_served) = tokio::select! {
            served = async { tokio::join!(serve, http_serve) } => served,
            () = grace_over => {
                warn!(grace_secs = grace.as_secs_f64(), "connections still open after the grace period, closing anyway");
                (Ok(()), Ok(()))
            }
        };
        (drain, served, http_served)
    }
}

/// What a shutdown stops once the servers are done, in [`Drain::finish`]'s order.
struct Drain {
    lifecycle: Lifecycle,
    tasks: TaskTracker,
    writer: Writer,
    indexer: Indexer,
    stop_background: CancellationToken,
    disk: JoinHandle<()>,
    checkpoints: Option<JoinHandle<()>>,
    evaluator: JoinHandle<()>,
    replica: replica::Replica,
    store: Arc<dyn EventStore>,
}

impl Drain {
    /// Ends the streams and waits for them, stops the writer, then the indexer, then takes the
    /// final checkpoint and closes the store.
    async fn finish(self) {
        // Streams end on `stop`; wait for them, so that every Ack is sent and nothing else
        // submits to the writer; `abort` makes any still waiting on a client give up.
        self.lifecycle.abort();
        self.tasks.close();
        self.tasks.wait().await;
        self.writer.stop().await;
        self.indexer.stop().await;
        // The writer has stopped: the checkpointer's last checkpoint covers everything stored.
        self.stop_background.cancel();
        let _ = self.disk.await;
        let _ = self.evaluator.await;
        if let Some(task) = self.checkpoints
            && let Err(err) = task.await
        {
            error!(error = %err, "the checkpoint task failed");
        }
        // After the last checkpoint, which the leader signs still holding the lock.
        self.replica.stop().await;
        // Last, so that the next start replays nothing: the checkpoint above is in it too.
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.snapshot(0)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => warn!(error = %err, "cannot write the state snapshot, the next start replays the log"),
            Err(err) => error!(error = %err, "the state snapshot task failed"),
        }
        drop(self.store);
    }
}
