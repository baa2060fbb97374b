//! What a child process of the harness serves (`qtrail-bench serve <role> …`): the collector or
//! the runtime through their libraries' `run`, configured by their binaries' own flags (which
//! end in the typed `Config`, as in the binaries), or the ingest servers that are the ceilings
//! of the ingest benchmark: ack-only, or appending each batch's events to one file with one
//! fdatasync per batch (the durable-append ceiling).

use anyhow::Context as _;
use clap::Parser as _;
use qtrail_proto::limits::MAX_MESSAGE_BYTES;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::ingest_server::{Ingest, IngestServer};
use qtrail_proto::qtrail::audit::v1::publish_request::Kind;
use qtrail_proto::qtrail::audit::v1::publish_response::Kind as ResponseKind;
use qtrail_publisher::AuditSink;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Roles a child process can serve.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Role {
    /// `qtrail_collector::run`, flags as `qtrail-collector`.
    Collector,
    /// `qtrail_runtime::run`, flags as `qtrail-runtime` plus `--discard-audit`.
    Runtime,
    /// The ack-only ingest server: `--listen ADDR --addr-file F`; with `--append-to FILE`, the
    /// durable-append ceiling.
    Ceiling,
}

/// Flags of the runtime child: `qtrail-runtime`'s, plus the benchmark-only audit sink.
#[derive(Debug, clap::Parser)]
#[command(name = "qtrail-runtime")]
struct RuntimeArgs {
    /// Discard audit events: the unaudited baseline.
    #[arg(long)]
    discard_audit: bool,
    #[command(flatten)]
    flags: qtrail_runtime::config::Flags,
}

/// Flags of the ceiling child.
#[derive(Debug, clap::Parser)]
#[command(name = "qtrail-bench-ceiling")]
struct CeilingArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    #[arg(long)]
    addr_file: std::path::PathBuf,
    /// Append every batch's events to this file, one fdatasync per batch, before its Ack.
    #[arg(long)]
    append_to: Option<std::path::PathBuf>,
}

/// Serves `role` with `args` until SIGTERM or SIGINT.
///
/// # Errors
/// Bad flags, or the server failing.
pub async fn serve(role: Role, args: Vec<String>) -> anyhow::Result<()> {
    qtrail_server::telemetry::init(false);
    match role {
        Role::Collector => {
            let flags = qtrail_collector::config::Flags::try_parse_from(
                std::iter::once("qtrail-collector".into()).chain(args),
            )?;
            let config = flags.config()?;
            let listener = tokio::net::TcpListener::bind(flags.listen).await.context("cannot listen")?;
            qtrail_collector::run(listener, config, qtrail_server::shutdown::signal()).await
        }
        Role::Runtime => {
            let args = RuntimeArgs::try_parse_from(std::iter::once("qtrail-runtime".into()).chain(args))?;
            let listener = tokio::net::TcpListener::bind(args.flags.listen).await.context("cannot listen")?;
            let mut config = args.flags.config();
            if args.discard_audit {
                config.audit_sink = AuditSink::discard();
            }
            qtrail_runtime::run(listener, config, qtrail_server::shutdown::signal()).await
        }
        Role::Ceiling => {
            let args = CeilingArgs::try_parse_from(std::iter::once("ceiling".into()).chain(args))?;
            let listener = tokio::net::TcpListener::bind(args.listen).await.context("cannot listen")?;
            let addr = listener.local_addr()?;
            let file = match &args.append_to {
                Some(path) => Some(std::sync::Arc::new(std::sync::Mutex::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .with_context(|| format!("cannot open {}", path.display()))?,
                ))),
                None => None,
            };
            let server = IngestServer::new(Ceiling { file })
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            // The listener is bound: connections queue until the server accepts them.
            qtrail_server::addr_file::write(&args.addr_file, addr)?;
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming_shutdown(
                    // As the collector does: without it, small Acks wait for delayed ACKs.
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    qtrail_server::shutdown::signal(),
                )
                .await
                .context("ceiling server failed")
        }
    }
}

/// The ingest ceiling: the `Ingest.Publish` protocol answered at once, every event "accepted",
/// so the cost is tonic, prost and loopback alone. It reads requests as the collector does, on
/// the same generated server: each event stays the bytes it came as, which the ceiling never
/// decodes. With a file, each batch's event bytes are appended to it and made durable with one
/// fdatasync before the Ack: the least any durable store must do.
#[derive(Debug, Clone)]
pub struct Ceiling {
    file: Option<std::sync::Arc<std::sync::Mutex<std::fs::File>>>,
}

/// Appends the events of `batch` to `file` and makes them durable.
fn append_durably(file: &std::sync::Mutex<std::fs::File>, batch: &proto::Batch) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut bytes = Vec::with_capacity(batch.events.iter().map(|event| event.event.len()).sum());
    for event in &batch.events {
        bytes.extend_from_slice(&event.event);
    }
    let mut file = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    file.write_all(&bytes)?;
    file.sync_data()
}

/// The responses of one ceiling stream.
type CeilingResponses = ReceiverStream<Result<proto::PublishResponse, Status>>;

#[tonic::async_trait]
impl Ingest for Ceiling {
    type PublishStream = CeilingResponses;

    async fn publish(
        &self,
        request: Request<Streaming<proto::PublishRequest>>,
    ) -> Result<Response<CeilingResponses>, Status> {
        let mut inbound = request.into_inner();
        let (sender, receiver) = mpsc::channel(16);
        let file = self.file.clone();
        tokio::spawn(async move {
            while let Some(Ok(request)) = inbound.next().await {
                let kind = match request.kind {
                    Some(Kind::Hello(_)) => ResponseKind::Welcome(proto::Welcome { stored_seq: 0 }),
                    Some(Kind::Batch(batch)) => {
                        let Ok(batch) = durable(file.clone(), batch).await else {
                            break;
                        };
                        ResponseKind::Ack(proto::Ack {
                            batch_seq: batch.batch_seq,
                            accepted: u32::try_from(batch.events.len()).unwrap_or(u32::MAX),
                            duplicates: 0,
                            rejected: Vec::new(),
                            stored: Vec::new(),
                        })
                    }
                    None => break,
                };
                if sender.send(Ok(proto::PublishResponse { kind: Some(kind) })).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Makes `batch` durable in `file`, if any, on a blocking thread; the stream ends on failure.
async fn durable(
    file: Option<std::sync::Arc<std::sync::Mutex<std::fs::File>>>,
    batch: proto::Batch,
) -> anyhow::Result<proto::Batch> {
    let Some(file) = file else {
        return Ok(batch);
    };
    tokio::task::spawn_blocking(move || append_durably(&file, &batch).map(|()| batch)).await?.context("append failed")
}
