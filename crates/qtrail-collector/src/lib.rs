//! The qtrail collector service.
//!
//! Hosts at most one collector per location ([`registry`]), receives events from publishers
//! over a streaming RPC and stores each batch durably before acknowledging it ([`ingest`],
//! [`writer`]), keeps every location's events in a SHA-256 hash chain in an embedded store
//! ([`store`]), and serves auditors: queries, tails, chain verification ([`chain`]) and exports
//! ([`query`]). Tokens with roles guard each service ([`tokens`]).
//!
//! [`run`] serves everything on one listener until its shutdown future completes, then stops
//! accepting, lets Publish streams acknowledge the batches they have, ends tails, waits for the
//! writer to commit what is queued, and closes the store.

pub mod chain;
pub mod config;
pub mod error;
pub mod filter;
mod grpc;
pub mod ingest;
mod lifecycle;
pub mod query;
pub mod registry;
pub mod store;
pub mod tokens;
pub mod writer;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use qtrail_proto::limits::MAX_MESSAGE_BYTES;
use qtrail_proto::qtrail::audit::v1::collector_admin_server::CollectorAdminServer;
use qtrail_proto::qtrail::audit::v1::event_query_server::EventQueryServer;
use qtrail_proto::qtrail::audit::v1::ingest_server::IngestServer;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::task::TaskTracker;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

pub use config::Config;
pub use error::{Error, Result};

use crate::grpc::{AdminService, Authorizer, IngestService, QueryService};
use crate::lifecycle::Lifecycle;
use crate::store::{EventStore, RedbStore};
use crate::tokens::Role;
use crate::writer::{COMMITTED_BUFFER, Writer};

/// Serves the collector on `listener` until `shutdown` completes, then shuts down gracefully.
///
/// # Errors
/// When the store cannot be opened (for instance because another process holds it), the
/// address file cannot be written, or the server fails.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let local_addr = listener.local_addr().context("failed to read the bound address")?;
    let store: Arc<dyn EventStore> = Arc::new(
        RedbStore::open(&config.data_dir, config.cache_bytes)
            .with_context(|| format!("failed to open the store in {}", config.data_dir.display()))?,
    );
    let (committed, _) = broadcast::channel(COMMITTED_BUFFER);
    let (writer, writer_handle) = Writer::spawn(store.clone(), config.group_commit_batches, committed.clone())
        .context("failed to start the writer")?;
    let lifecycle = Lifecycle::new();
    let tasks = TaskTracker::new();
    if config.tokens.is_empty() {
        warn!("the tokens file lists no tokens: every call except health and reflection will be refused");
    }
    let tokens = Arc::new(config.tokens);

    let admin = AdminService { registry: registry::Registry::new(store.clone()) };
    let ingest = IngestService {
        ingest: ingest::Ingest::new(store.clone(), writer_handle, lifecycle.clone()),
        tasks: tasks.clone(),
    };
    let query =
        QueryService { query: query::Query::new(store.clone(), committed, lifecycle.clone()), tasks: tasks.clone() };
    let admin = InterceptedService::new(CollectorAdminServer::new(admin), Authorizer::new(tokens.clone(), Role::Admin));
    let ingest = InterceptedService::new(
        IngestServer::new(ingest)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        Authorizer::new(tokens.clone(), Role::Publisher),
    );
    let query = InterceptedService::new(EventQueryServer::new(query), Authorizer::new(tokens, Role::Auditor));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CollectorAdminServer<AdminService>>().await;
    health.set_serving::<IngestServer<IngestService>>().await;
    health.set_serving::<EventQueryServer<QueryService>>().await;
    let router = Server::builder()
        .add_service(health_service)
        .add_service(qtrail_server::reflection::v1().context("failed to build reflection v1")?)
        .add_service(qtrail_server::reflection::v1alpha().context("failed to build reflection v1alpha")?)
        .add_service(admin)
        .add_service(ingest)
        .add_service(query);

    // The listener is bound and every service is SERVING: connections made from now on queue
    // until the server accepts them, so this is the moment to tell whoever waits.
    if let Some(addr_file) = &config.addr_file
        && let Err(err) = qtrail_server::addr_file::write(addr_file, local_addr)
    {
        writer.stop().await;
        return Err(err).with_context(|| format!("failed to write the address file {}", addr_file.display()));
    }
    info!(addr = %local_addr, data_dir = %config.data_dir.display(), "collector listening");

    let signal = {
        let lifecycle = lifecycle.clone();
        async move {
            shutdown.await;
            info!("shutting down: acknowledging in-flight batches, ending streams");
            health.set_not_serving::<IngestServer<IngestService>>().await;
            lifecycle.stop();
        }
    };
    let serve = router.serve_with_incoming_shutdown(TcpIncoming::from(listener), signal);
    let grace = config.shutdown_grace;
    let grace_over = {
        let lifecycle = lifecycle.clone();
        async move {
            lifecycle.stopping().await;
            tokio::time::sleep(grace).await;
        }
    };
    // Connections close once their calls end; a client that stops reading could hold one open
    // forever, so after the grace period the collector stops waiting for it.
    let served = tokio::select! {
        served = serve => served,
        () = grace_over => {
            warn!(grace_secs = grace.as_secs_f64(), "connections still open after the grace period, closing anyway");
            Ok(())
        }
    };
    // Streams end on `stop`; wait for them, so that every Ack is sent and nothing else submits
    // to the writer; `abort` makes any still waiting on a client give up.
    lifecycle.abort();
    tasks.close();
    tasks.wait().await;
    writer.stop().await;
    drop(store);
    served.context("gRPC server failed")?;
    info!("collector stopped");
    Ok(())
}
