//! The real `qtrail-collector` and `qtrail-runtime` processes behind small wrappers: each writes
//! its tokens or principals file, passes the flags, and hands out authenticated clients, so that
//! a test reads as what it does to the pair rather than how to start it.
//!
//! Both wrappers keep their [`ServerProcess`] reachable for kills and restarts; a restart keeps
//! the port, so a runtime configured with the collector's URL finds it again.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use qtrail_proto::qtrail::audit::v1 as audit;
use qtrail_proto::qtrail::audit::v1::collector_admin_client::CollectorAdminClient;
use qtrail_proto::qtrail::audit::v1::event_query_client::EventQueryClient;
use qtrail_server::tls::ClientTls;
use qtrail_testkit::{ServerProcess, binary, http_get};
use tonic::Request;
use tonic::transport::Channel;

/// Collector token with the `admin` role.
pub const ADMIN_TOKEN: &str = "e2e-admin-token";
/// Collector token with the `auditor` role.
pub const AUDITOR_TOKEN: &str = "e2e-auditor-token";
/// Collector token with the `publisher` role, which runtimes use.
pub const PUBLISHER_TOKEN: &str = "e2e-publisher-token";

/// API key of alice (account `acc-alice`).
pub const ALICE_KEY: &str = "e2e-key-alice";
/// API key of bob (account `acc-bob`).
pub const BOB_KEY: &str = "e2e-key-bob";

/// How long one client call may take before it counts as unanswered.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Events per `QueryEvents` page, the most the collector serves.
const PAGE_SIZE: u32 = 1000;

/// Returns `message` as a request carrying `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().expect("tokens are printable ascii");
    request.metadata_mut().insert("authorization", value);
    request
}

/// Returns a channel to `url` that connects on first use and reconnects after the server
/// restarts, with a per-call timeout.
pub fn lazy_channel(url: &str) -> Channel {
    lazy_channel_over(url, &ClientTls::default())
}

/// As [`lazy_channel`], over TLS with `tls` for an `https://` URL.
pub fn lazy_channel_over(url: &str, tls: &ClientTls) -> Channel {
    tls.endpoint(url)
        .unwrap_or_else(|err| panic!("endpoint {url}: {err}"))
        .connect_timeout(Duration::from_secs(2))
        .timeout(CALL_TIMEOUT)
        .connect_lazy()
}

/// A `qtrail-collector` process with admin, auditor and publisher tokens.
#[derive(Debug)]
pub struct Collector {
    process: ServerProcess,
}

impl Collector {
    /// Starts a collector process named `name` whose store, tokens file and log live in `dir`.
    pub async fn start(name: &str, dir: &Path) -> Self {
        Self::start_with(name, dir, Vec::new(), None).await
    }

    /// As [`Collector::start`], with further flags; `tls` tells how clients reach a collector
    /// whose flags make it serve TLS.
    pub async fn start_with(name: &str, dir: &Path, extra_args: Vec<OsString>, tls: Option<ClientTls>) -> Self {
        let tokens = dir.join(format!("{name}-tokens.toml"));
        let text = format!(
            "[[token]]\ntoken = \"{ADMIN_TOKEN}\"\nrole = \"admin\"\nname = \"e2e-admin\"\n\n\
             [[token]]\ntoken = \"{AUDITOR_TOKEN}\"\nrole = \"auditor\"\nname = \"e2e-auditor\"\n\n\
             [[token]]\ntoken = \"{PUBLISHER_TOKEN}\"\nrole = \"publisher\"\nname = \"e2e-runtime\"\nlocations = [\"us-east\", \"eu-de\"]\n"
        );
        std::fs::write(&tokens, text).expect("write the tokens file");
        let args: Vec<OsString> = vec![
            "--data-dir".into(),
            dir.join(format!("{name}-data")).into(),
            "--tokens".into(),
            tokens.into(),
            // A collector killed with streams open should not make its restart wait.
            "--shutdown-grace-secs".into(),
            "2".into(),
        ];
        let binary = binary("qtrail-collector");
        let process = match tls {
            Some(tls) => ServerProcess::start_tls(name, binary, [args, extra_args].concat(), dir, tls, true).await,
            None => ServerProcess::start_with_http(name, binary, [args, extra_args].concat(), dir).await,
        };
        Self { process }
    }

    /// Returns the process, to kill, terminate or restart it.
    pub fn process(&mut self) -> &mut ServerProcess {
        &mut self.process
    }

    /// Returns the gRPC URL.
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// Returns the gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    /// Returns the address of the HTTP side (console, metrics).
    pub fn http_addr(&self) -> SocketAddr {
        self.process.http_addr()
    }

    fn channel(&self) -> Channel {
        lazy_channel_over(&self.url(), &self.process.client_tls())
    }

    /// Creates the collector of `location`.
    pub async fn create_collector(&self, location: &str) -> audit::Collector {
        let request = authed(audit::CreateCollectorRequest { location: location.to_owned() }, ADMIN_TOKEN);
        let created = CollectorAdminClient::new(self.channel()).create_collector(request).await;
        created.unwrap_or_else(|status| panic!("create collector {location}: {status}")).into_inner()
    }

    /// Returns every collector, by location.
    pub async fn collectors(&self) -> Vec<audit::Collector> {
        let request = authed(audit::ListCollectorsRequest {}, ADMIN_TOKEN);
        let listed = CollectorAdminClient::new(self.channel()).list_collectors(request).await;
        listed.unwrap_or_else(|status| panic!("list collectors: {status}")).into_inner().collectors
    }

    /// Returns the number of events stored for `location` (0 when it has no collector).
    pub async fn event_count(&self, location: &str) -> u64 {
        let request = authed(audit::GetCollectorRequest { location: location.to_owned() }, ADMIN_TOKEN);
        match CollectorAdminClient::new(self.channel()).get_collector(request).await {
            Ok(collector) => collector.into_inner().event_count,
            Err(status) if status.code() == tonic::Code::NotFound => 0,
            Err(status) => panic!("get collector {location}: {status}"),
        }
    }

    /// Returns the events of `location` in chain order that publishers stored: the trail's own
    /// use (`qtrail.*`, these very queries among them) is left out, so that the delivery checks
    /// count the publishers' events alone.
    pub async fn events(&self, location: &str) -> Vec<audit::StoredEvent> {
        let mut events = self.all_events(location).await;
        events.retain(|stored| !is_own_use(stored));
        events
    }

    /// Returns every event stored for `location`, in chain order.
    pub async fn all_events(&self, location: &str) -> Vec<audit::StoredEvent> {
        let mut client = EventQueryClient::new(self.channel()).max_decoding_message_size(64 * 1024 * 1024);
        let mut events = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = audit::QueryEventsRequest {
                location: location.to_owned(),
                filter: None,
                page_size: PAGE_SIZE,
                page_token,
                order: audit::Order::OldestFirst as i32,
            };
            let page = client
                .query_events(authed(request, AUDITOR_TOKEN))
                .await
                .unwrap_or_else(|status| panic!("query events of {location}: {status}"))
                .into_inner();
            events.extend(page.events);
            if page.next_page_token.is_empty() {
                return events;
            }
            page_token = page.next_page_token;
        }
    }

    /// Returns what the collector knows of the publishers of `location`, but its own (under which
    /// it records the trail's use, see [`Collector::events`]).
    pub async fn publishers(&self, location: &str) -> Vec<audit::PublisherState> {
        let request =
            authed(audit::ListPublishersRequest { location: location.to_owned(), ..Default::default() }, AUDITOR_TOKEN);
        let listed = EventQueryClient::new(self.channel()).list_publishers(request).await;
        let mut publishers =
            listed.unwrap_or_else(|status| panic!("list publishers of {location}: {status}")).into_inner().publishers;
        publishers.retain(|publisher| !is_own_publisher(&publisher.publisher_id));
        publishers
    }

    /// Verifies the whole chain of `location`.
    pub async fn verify_chain(&self, location: &str) -> audit::VerifyChainResponse {
        let request = authed(audit::VerifyChainRequest { location: location.to_owned(), range: None }, AUDITOR_TOKEN);
        let verified = EventQueryClient::new(self.channel()).verify_chain(request).await;
        verified.unwrap_or_else(|status| panic!("verify chain of {location}: {status}")).into_inner()
    }

    /// Returns the value of the metric series `name` whose labels include `labels`, from the
    /// collector's `/metrics` (0 when there is no such series yet).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_at(&self.process.http_url(), name, labels).await
    }

    /// Asserts that the chain of every location verifies and covers all its events: at least
    /// those stored before it was asked (the verification records itself on the trail too).
    pub async fn assert_every_chain_verifies(&self) {
        for collector in self.collectors().await {
            let verified = self.verify_chain(&collector.location).await;
            assert!(verified.ok, "chain of {} does not verify: {:?}", collector.location, verified.fault);
            assert!(verified.checked >= collector.event_count, "chain of {} checked in full", collector.location);
        }
    }
}

/// Returns whether `stored` records the trail's own use (an auditor's read, a sign-in …), not a
/// publisher's event.
pub fn is_own_use(stored: &audit::StoredEvent) -> bool {
    stored.event.as_ref().is_some_and(|event| event.action.starts_with("qtrail."))
}

/// Returns whether `publisher_id` is a collector's own, under which its use of the trail is
/// recorded.
pub fn is_own_publisher(publisher_id: &str) -> bool {
    publisher_id == "qtrail-collector" || publisher_id.starts_with("qtrail-collector/")
}

impl Collector {}

/// What a runtime process is started with.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Process name: its log is `<dir>/<name>.log`, its database `<dir>/<name>-data`.
    pub name: String,
    /// The runtime's location.
    pub location: String,
    /// Service instance id.
    pub instance: String,
    /// Where it publishes.
    pub collector_url: String,
    /// Further flags, e.g. `--outbox-max-events 20`.
    pub extra_args: Vec<String>,
    /// How clients reach a runtime whose flags make it serve TLS.
    pub tls: Option<ClientTls>,
    /// Serve the HTTP side (`/metrics`, `/receipts`) on a free port.
    pub http: bool,
}

impl RuntimeOptions {
    /// Returns the options of runtime `runtime` in `us-east` publishing to `collector_url`, with
    /// retries capped at 250 ms so that tests do not wait on backoff.
    pub fn new(collector_url: impl Into<String>) -> Self {
        Self {
            name: "runtime".to_owned(),
            location: "us-east".to_owned(),
            instance: "inst-e2e".to_owned(),
            collector_url: collector_url.into(),
            extra_args: vec!["--publish-backoff-max-ms".to_owned(), "250".to_owned()],
            tls: None,
            http: false,
        }
    }

    /// Adds flags.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra_args.extend(args.iter().map(|arg| (*arg).to_owned()));
        self
    }
}

/// A `qtrail-runtime` process with principals alice and bob.
#[derive(Debug)]
pub struct Runtime {
    process: ServerProcess,
}

impl Runtime {
    /// Starts a runtime process as `options` say, its files in `dir`.
    pub async fn start(options: RuntimeOptions, dir: &Path) -> Self {
        let name = &options.name;
        let principals = dir.join(format!("{name}-principals.toml"));
        let text = format!(
            "[[principal]]\napi_key = \"{ALICE_KEY}\"\niam_id = \"IBMid-alice\"\nname = \"alice@example.com\"\n\
             account = \"acc-alice\"\n\n\
             [[principal]]\napi_key = \"{BOB_KEY}\"\niam_id = \"IBMid-bob\"\nname = \"bob@example.com\"\n\
             account = \"acc-bob\"\n"
        );
        std::fs::write(&principals, text).expect("write the principals file");
        let mut args: Vec<OsString> = vec![
            "--location".into(),
            options.location.clone().into(),
            "--instance".into(),
            options.instance.clone().into(),
            "--collector".into(),
            options.collector_url.clone().into(),
            // Visible to `ps`, which is fine for a test token.
            "--collector-token".into(),
            PUBLISHER_TOKEN.into(),
            "--principals".into(),
            principals.into(),
            "--data-dir".into(),
            dir.join(format!("{name}-data")).into(),
        ];
        args.extend(options.extra_args.iter().map(OsString::from));
        let binary = binary("qtrail-runtime");
        let process = match options.tls {
            Some(tls) => ServerProcess::start_tls(name, binary, args, dir, tls, false).await,
            None if options.http => ServerProcess::start_with_http(name, binary, args, dir).await,
            None => ServerProcess::start(name, binary, args, dir).await,
        };
        Self { process }
    }

    /// Returns the base URL of the HTTP side (started with [`RuntimeOptions::http`]).
    pub fn http_url(&self) -> String {
        self.process.http_url()
    }

    /// Returns the process, to kill, terminate or restart it.
    pub fn process(&mut self) -> &mut ServerProcess {
        &mut self.process
    }

    /// Returns the gRPC URL.
    pub fn url(&self) -> String {
        self.process.url()
    }
}

/// Returns the value of the metric series `name` whose labels include `labels`, from the
/// `/metrics` of the HTTP side at `http_url` (0 when there is no such series yet).
pub async fn metric_at(http_url: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (status, text) = http_get(&format!("{http_url}/metrics")).await;
    assert_eq!(status, 200, "GET /metrics");
    let wanted: Vec<String> = labels.iter().map(|(key, value)| format!("{key}=\"{value}\"")).collect();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name && wanted.iter().all(|label| series_labels.contains(label.as_str()))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}
