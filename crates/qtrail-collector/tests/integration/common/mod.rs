//! Shared test harness: a real collector on port 0 over a temp dir, clients with tokens, event
//! builders and polling helpers.

#![allow(dead_code, unreachable_pub)]

pub mod http;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message as _;
use qtrail_cadf::{Action, AuditEvent, Crn, EventBuilder, EventTime, Initiator, Location};
use qtrail_collector::Config;
use qtrail_collector::tokens::{Role, TokenEntry, Tokens};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::collector_admin_client::CollectorAdminClient;
use qtrail_proto::qtrail::audit::v1::event_query_client::EventQueryClient;
use qtrail_proto::qtrail::audit::v1::ingest_client::IngestClient;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Streaming};

pub const PUBLISHER: &str = "publisher-secret";
/// A second publisher token, of another runtime (`runtime-eu-de`).
pub const OTHER_PUBLISHER: &str = "other-publisher-secret";
/// A publisher token of `eu-de` alone (`runtime-eu-de-only`).
pub const EU_DE_PUBLISHER: &str = "eu-de-publisher-secret";
pub const AUDITOR: &str = "auditor-secret";
/// An auditor token that reads only the events of account `acc-bob` (`auditor-bob`).
pub const BOB_AUDITOR: &str = "bob-auditor-secret";

/// Every location the tests publish to with [`PUBLISHER`].
pub const TEST_LOCATIONS: [&str; 8] = ["us-east", "eu-de", "jp-tok", "au-syd", "br-sao", "ca-tor", "in-che", "kr-seo"];
pub const ADMIN: &str = "admin-secret";

/// Returns the tokens every test server accepts.
pub fn tokens() -> Tokens {
    let entry = |token: &str, role, name: &str| TokenEntry::new(token, role, name);
    let locations = |names: &[&str]| names.iter().map(|name| name.parse().expect("location")).collect::<Vec<_>>();
    Tokens::from_entries([
        entry(PUBLISHER, Role::Publisher, "runtime-us-east").with_locations(locations(&TEST_LOCATIONS)),
        entry(OTHER_PUBLISHER, Role::Publisher, "runtime-eu-de").with_locations(locations(&["us-east", "eu-de"])),
        entry(EU_DE_PUBLISHER, Role::Publisher, "runtime-eu-de-only").with_locations(locations(&["eu-de"])),
        entry(AUDITOR, Role::Auditor, "alice"),
        entry(BOB_AUDITOR, Role::Auditor, "auditor-bob").with_accounts(["acc-bob"]),
        entry(ADMIN, Role::Admin, "ops"),
    ])
    .expect("valid tokens")
}

/// A collector served in-process on an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Address of the HTTP side, when started with one.
    pub http_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// TLS of the clients [`TestServer::channel`] makes, for a collector serving TLS: they
    /// then connect to `https://localhost` with these files. Plaintext when `None`.
    pub client_tls: Option<qtrail_server::tls::ClientTls>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a collector over `data_dir`.
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(Config::for_test(data_dir, tokens())).await
    }

    /// Starts a collector with `config`.
    pub async fn start_with(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let data_dir = config.data_dir.clone();
        let (shutdown, signal) = oneshot::channel::<()>();
        let handle = tokio::spawn(qtrail_collector::run(listener, config, async move {
            let _ = signal.await;
        }));
        Self { addr, http_addr: None, data_dir, client_tls: None, shutdown: Some(shutdown), handle: Some(handle) }
    }

    /// Starts a collector over `data_dir` with its HTTP side (console, metrics) on a free port.
    pub async fn start_with_http(data_dir: &Path) -> Self {
        Self::start_with_http_config(Config::for_test(data_dir, tokens())).await
    }

    /// Starts a collector with `config` and its HTTP side on a free port.
    pub async fn start_with_http_config(mut config: Config) -> Self {
        let addr_file = config.data_dir.join("http.addr");
        let _ = std::fs::remove_file(&addr_file);
        config.http = Some("127.0.0.1:0".parse().expect("an address"));
        config.http_addr_file = Some(addr_file.clone());
        let mut server = Self::start_with(config).await;
        let written = wait_until(Duration::from_secs(30), || async {
            qtrail_server::addr_file::read(&addr_file).ok().flatten().is_some()
        })
        .await;
        assert!(written, "the http address file is written");
        server.http_addr = qtrail_server::addr_file::read(&addr_file).expect("readable address file");
        server
    }

    /// Returns an HTTP client of the HTTP side, not signed in.
    pub fn http(&self) -> http::HttpClient {
        http::HttpClient::new(self.http_addr.expect("started with an http side"))
    }

    /// Asks the collector to shut down and waits until it has.
    pub async fn stop(mut self) {
        self.stop_inner().await.expect("collector stops cleanly");
    }

    /// Asks the collector to shut down without waiting.
    pub fn begin_stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Waits for a stop begun with [`TestServer::begin_stop`].
    pub async fn stop_inner(&mut self) -> anyhow::Result<()> {
        self.begin_stop();
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), handle).await.expect("stops within 30 s").expect("no panic")
    }

    pub async fn channel(&self) -> Channel {
        // The listener was bound before `run` started, so a connection waits in its backlog
        // rather than failing: one attempt, bounded, instead of a retry loop.
        let endpoint = match &self.client_tls {
            Some(tls) => tls.endpoint(&format!("https://localhost:{}", self.addr.port())).expect("tls endpoint"),
            None => Channel::from_shared(format!("http://{}", self.addr)).expect("uri"),
        };
        let connected = tokio::time::timeout(Duration::from_secs(10), endpoint.connect()).await;
        connected.expect("connects within 10 s").unwrap_or_else(|err| panic!("cannot connect: {err}"))
    }

    pub async fn admin(&self) -> CollectorAdminClient<Channel> {
        CollectorAdminClient::new(self.channel().await)
    }

    pub async fn query(&self) -> EventQueryClient<Channel> {
        EventQueryClient::new(self.channel().await).max_decoding_message_size(64 * 1024 * 1024)
    }

    pub async fn ingest(&self) -> IngestClient<Channel> {
        IngestClient::new(self.channel().await).max_encoding_message_size(64 * 1024 * 1024)
    }

    /// Creates the collector of `location` with the admin token.
    pub async fn create_collector(&self, location: &str) -> proto::Collector {
        let request = authed(proto::CreateCollectorRequest { location: location.into() }, ADMIN);
        self.admin().await.create_collector(request).await.expect("collector created").into_inner()
    }

    /// Returns the collector of `location`.
    pub async fn collector(&self, location: &str) -> proto::Collector {
        let request = authed(proto::GetCollectorRequest { location: location.into() }, ADMIN);
        self.admin().await.get_collector(request).await.expect("collector").into_inner()
    }

    /// Opens a Publish stream and sends its Hello; returns the stream and the Welcome.
    pub async fn open_publisher(&self, publisher_id: &str, location: &str, epoch: u64) -> (PublishStream, u64) {
        self.open_publisher_as(PUBLISHER, publisher_id, location, epoch).await
    }

    /// Opens a Publish stream with `token` and sends its Hello; returns the stream and the
    /// Welcome.
    pub async fn open_publisher_as(
        &self,
        token: &str,
        publisher_id: &str,
        location: &str,
        epoch: u64,
    ) -> (PublishStream, u64) {
        let mut stream = PublishStream::open_with_token(self, token).await.expect("stream opens");
        stream.send_hello(publisher_id, location, epoch).await;
        let stored_seq = match stream.next().await.expect("welcome").kind {
            Some(proto::publish_response::Kind::Welcome(welcome)) => welcome.stored_seq,
            other => panic!("expected a welcome, got {other:?}"),
        };
        (stream, stored_seq)
    }

    /// Publishes `events` (with publisher seqs from `first_seq`) in one batch on a fresh stream
    /// and returns the Ack.
    pub async fn publish(&self, location: &str, events: &[AuditEvent], first_seq: u64) -> proto::Ack {
        let (mut stream, _) = self.open_publisher("pub-1", location, 1).await;
        let ack = stream.publish(1, events, first_seq).await;
        stream.close();
        ack
    }

    /// Returns what the collector knows of each publisher of `location` (the first page), with
    /// the auditor token.
    pub async fn publishers(&self, location: &str) -> Vec<proto::PublisherState> {
        let request = authed(proto::ListPublishersRequest { location: location.into(), ..Default::default() }, AUDITOR);
        self.query().await.list_publishers(request).await.expect("publishers").into_inner().publishers
    }

    /// Returns every stored event of `location`, oldest first.
    pub async fn all_events(&self, location: &str) -> Vec<proto::StoredEvent> {
        let mut client = self.query().await;
        let mut events = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = authed(
                proto::QueryEventsRequest {
                    location: location.into(),
                    page_size: 1000,
                    page_token: page_token.clone(),
                    order: proto::Order::OldestFirst as i32,
                    ..Default::default()
                },
                AUDITOR,
            );
            let page = client.query_events(request).await.expect("query").into_inner();
            events.extend(page.events);
            if page.next_page_token.is_empty() {
                return events;
            }
            page_token = page.next_page_token;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_stop();
    }
}

/// A client side of `Ingest.Publish`.
pub struct PublishStream {
    sender: Option<mpsc::Sender<proto::PublishRequest>>,
    responses: Streaming<proto::PublishResponse>,
}

impl PublishStream {
    pub async fn open(server: &TestServer) -> Self {
        Self::open_with_token(server, PUBLISHER).await.expect("stream opens")
    }

    pub async fn open_with_token(server: &TestServer, token: &str) -> Result<Self, tonic::Status> {
        let (sender, receiver) = mpsc::channel(64);
        let request = authed(ReceiverStream::new(receiver), token);
        let responses = server.ingest().await.publish(request).await?.into_inner();
        Ok(Self { sender: Some(sender), responses })
    }

    pub async fn send(&mut self, request: proto::PublishRequest) {
        // The server may have failed the stream already; the failure shows on `next`.
        let _ = self.sender.as_ref().expect("open").send(request).await;
    }

    pub async fn send_hello(&mut self, publisher_id: &str, location: &str, epoch: u64) {
        let hello = proto::Hello { publisher_id: publisher_id.into(), location: location.into(), epoch };
        self.send(proto::PublishRequest { kind: Some(proto::publish_request::Kind::Hello(hello)) }).await;
    }

    pub async fn send_batch(&mut self, batch_seq: u64, events: Vec<proto::PublishedEvent>) {
        let batch = proto::Batch { batch_seq, events };
        self.send(proto::PublishRequest { kind: Some(proto::publish_request::Kind::Batch(batch)) }).await;
    }

    /// Sends `events` as batch `batch_seq` and returns its Ack.
    pub async fn publish(&mut self, batch_seq: u64, events: &[AuditEvent], first_seq: u64) -> proto::Ack {
        self.send_batch(batch_seq, published(events, first_seq)).await;
        self.next_ack().await
    }

    pub async fn next(&mut self) -> Result<proto::PublishResponse, tonic::Status> {
        match tokio::time::timeout(Duration::from_secs(30), self.responses.message()).await.expect("answer in time") {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(tonic::Status::cancelled("stream ended")),
            Err(status) => Err(status),
        }
    }

    pub async fn next_ack(&mut self) -> proto::Ack {
        match self.next().await.expect("ack").kind {
            Some(proto::publish_response::Kind::Ack(ack)) => ack,
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    /// Returns the status that ends the stream, skipping any Acks before it.
    pub async fn error(&mut self) -> tonic::Status {
        loop {
            match self.next().await {
                Ok(_) => continue,
                Err(status) => return status,
            }
        }
    }

    /// Half-closes the stream.
    pub fn close(&mut self) {
        self.sender = None;
    }
}

/// Sends `messages` on a Publish stream with the publisher token, each as one gRPC message of
/// exactly those bytes (whatever they are), then half-closes, and returns the responses up to
/// the status that ends the stream (`Ok` for a clean end).
pub async fn publish_raw(
    server: &TestServer,
    messages: Vec<Vec<u8>>,
) -> (Vec<proto::PublishResponse>, Result<(), tonic::Status>) {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.expect("channel ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/qtrail.audit.v1.Ingest/Publish");
    let request = authed(tokio_stream::iter(messages), PUBLISHER);
    let mut responses = match grpc.streaming(request, path, RawCodec).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), Err(status)),
    };
    let mut received = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), responses.message()).await.expect("answer in time");
        match next {
            Ok(Some(response)) => received.push(response),
            Ok(None) => return (received, Ok(())),
            Err(status) => return (received, Err(status)),
        }
    }
}

/// Sends requests as the bytes given, reads responses as protobuf: for requests no well-behaved
/// client would send.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = proto::PublishResponse;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<proto::PublishResponse>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

#[derive(Debug, Clone, Copy)]
struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

/// Returns events as published events with seqs from `first_seq`.
pub fn published(events: &[AuditEvent], first_seq: u64) -> Vec<proto::PublishedEvent> {
    events
        .iter()
        .enumerate()
        .map(|(i, event)| proto::PublishedEvent {
            seq: first_seq + i as u64,
            event: proto::AuditEvent::from(event).encode_to_vec().into(),
        })
        .collect()
}

/// Returns `message` with `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request
}

/// Returns a valid event of `location`; `i` varies its action, target, initiator and time.
pub fn event(location: &str, i: usize) -> AuditEvent {
    let location: Location = location.parse().expect("location");
    let source = Crn::instance(&location, "acc-1", "inst-1").expect("crn");
    let actions = [Action::JobCreate, Action::JobRead, Action::ProgramCreate, Action::JobCancel];
    let initiator = Initiator {
        id: format!("IBMid-{}", i % 3),
        name: "alice@example.com".into(),
        type_uri: qtrail_cadf::event::INITIATOR_USER.into(),
        credential_type: "apikey".into(),
        host_address: "192.0.2.7".into(),
        host_agent: "qtrail-tests".into(),
    };
    EventBuilder::new(actions[i % actions.len()], source, initiator)
        .target(&format!("r-{i}"), "")
        .event_time(EventTime::from_unix_millis(1_700_000_000_000 + i as i64 * 1000).expect("time"))
        .build()
        .expect("valid event")
}

/// Returns `count` events of `location`, starting at variant `from`.
pub fn events(location: &str, from: usize, count: usize) -> Vec<AuditEvent> {
    (from..from + count).map(|i| event(location, i)).collect()
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    qtrail_server::poll::holds(timeout, check).await
}
