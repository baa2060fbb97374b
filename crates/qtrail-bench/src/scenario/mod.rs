//! The seven scenarios and what they share: a scratch directory, the report, and starting the
//! servers (as child processes, see [`crate::process`]) with known tokens and principals.

pub mod alerts;
pub mod ingest;
pub mod latency;
pub mod overhead;
pub mod postgres;
pub mod replicas;
pub mod scale;

use anyhow::Context as _;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::collector_admin_client::CollectorAdminClient;
use qtrail_server::tls::testing::TestPki;

use crate::events::LOCATION;
use crate::process::{Files, Server};
use crate::publish::{authed, connect_over};
use crate::report::Report;

/// The collector's publisher token in every benchmark.
pub const PUBLISHER_TOKEN: &str = "bench-publisher-token";
/// The collector's auditor token.
pub const AUDITOR_TOKEN: &str = "bench-auditor-token";
/// The collector's admin token.
pub const ADMIN_TOKEN: &str = "bench-admin-token";
/// The runtime's API key of the one principal.
pub const API_KEY: &str = "bench-api-key";

/// State shared by the scenarios of one run.
#[derive(Debug)]
pub struct Bench {
    /// Smaller N and shorter runs.
    pub quick: bool,
    /// Scratch space, removed at the end.
    scratch: tempfile::TempDir,
    /// Everything measured so far.
    pub report: Report,
    servers: usize,
}

impl Bench {
    /// Returns the context of a run, with scratch space under `scratch_parent`.
    ///
    /// # Errors
    /// When the scratch directory cannot be created.
    pub fn new(quick: bool, report: Report, scratch_parent: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(scratch_parent)?;
        let scratch = tempfile::Builder::new()
            .prefix("qtrail-bench-")
            .tempdir_in(scratch_parent)
            .context("cannot create the scratch directory")?;
        Ok(Self { quick, scratch, report, servers: 0 })
    }

    /// Returns a fresh directory for one server.
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn files(&mut self, name: &str) -> anyhow::Result<Files> {
        self.servers += 1;
        Files::new(self.scratch.path().join(format!("{:02}-{name}", self.servers)))
    }

    /// Returns the scratch directory.
    pub fn scratch(&self) -> &std::path::Path {
        self.scratch.path()
    }

    /// Picks the quick or the full value.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// Writes the tokens file into `files` (once) and returns the collector's flags.
fn collector_args(files: &Files) -> anyhow::Result<Vec<String>> {
    let tokens = format!(
        "[[token]]\ntoken = \"{PUBLISHER_TOKEN}\"\nrole = \"publisher\"\nname = \"bench-publisher\"\nlocations = [\"{LOCATION}\"]\n\n\
         [[token]]\ntoken = \"{AUDITOR_TOKEN}\"\nrole = \"auditor\"\nname = \"bench-auditor\"\n\n\
         [[token]]\ntoken = \"{ADMIN_TOKEN}\"\nrole = \"admin\"\nname = \"bench-admin\"\n"
    );
    std::fs::write(files.path("tokens.toml"), tokens)?;
    Ok(vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        files.arg("data"),
        "--tokens".into(),
        files.arg("tokens.toml"),
        "--addr-file".into(),
        files.arg("addr"),
    ])
}

/// Starts a collector on `files` (an existing store is kept) without creating a collector.
///
/// # Errors
/// When it does not start.
pub async fn start_collector_process(files: &Files) -> anyhow::Result<Server> {
    let args = collector_args(files)?;
    Server::start("collector", &args, &files.path("addr")).await
}

/// A collector's HTTP side, and how to reach it.
#[derive(Debug, Clone)]
pub struct Metrics {
    addr: std::net::SocketAddr,
    /// The test CA of a collector that serves mutual TLS.
    pki: Option<TestPki>,
}

/// Starts a collector service on a new store with its HTTP side (metrics) too, creates the
/// benchmark location's collector, and returns where its metrics are as well. With `pki`, it
/// serves mutual TLS with that test CA's certificates; `extra` are more flags.
///
/// # Errors
/// When it does not start or the collector cannot be created.
pub async fn start_collector_with_metrics(
    files: &Files,
    pki: Option<&TestPki>,
    extra: &[String],
) -> anyhow::Result<(Server, Metrics)> {
    let mut args = collector_args(files)?;
    args.extend_from_slice(extra);
    args.extend(["--http".into(), "127.0.0.1:0".into(), "--http-addr-file".into(), files.arg("http-addr")]);
    if let Some(pki) = pki {
        for (flag, path) in
            [("--tls-cert", &pki.server_cert), ("--tls-key", &pki.server_key), ("--tls-client-ca", &pki.ca)]
        {
            args.extend([flag.to_owned(), path.display().to_string()]);
        }
    }
    let mut server = Server::start("collector", &args, &files.path("addr")).await?;
    if let Some(pki) = pki {
        server = server.with_client_tls(pki.client(true));
    }
    // Written before the gRPC address file, so it is there.
    let http = qtrail_server::addr_file::read(&files.path("http-addr"))?.context("no http address file")?;
    create_location(&server).await?;
    Ok((server, Metrics { addr: http, pki: pki.cloned() }))
}

/// The collector's gauge of events the query indexes do not cover yet.
pub const INDEX_LAG: &str = "qtrail_collector_index_lag_events";

/// Waits until the query indexes of the collector whose HTTP side is at `http` cover every
/// stored event.
///
/// # Errors
/// When the gauge cannot be read, or the indexes are still behind after five minutes.
pub async fn indexes_caught_up(http: &Metrics) -> anyhow::Result<()> {
    let caught_up = qtrail_server::poll::until(std::time::Duration::from_secs(300), || async {
        match gauge(http, INDEX_LAG).await {
            Ok(lag) if lag > 0.0 => None,
            other => Some(other),
        }
    })
    .await;
    match caught_up {
        Some(lag) => lag.map(|_| ()),
        None => anyhow::bail!("the indexer did not catch up within 300 s"),
    }
}

/// Returns the value of the unlabelled gauge `name` on the `/metrics` page at `http`.
///
/// # Errors
/// When the page cannot be read or lacks the gauge.
pub async fn gauge(http: &Metrics, name: &str) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let page = match &http.pki {
        Some(pki) => pki.https_get(http.addr.port(), "/metrics", true).await?.1,
        None => {
            let mut stream = tokio::net::TcpStream::connect(http.addr).await?;
            stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").await?;
            let mut page = String::new();
            stream.read_to_string(&mut page).await?;
            page
        }
    };
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("no gauge {name} on /metrics"))
}

/// Starts a collector service on a new store and creates the benchmark location's collector.
///
/// # Errors
/// When it does not start or the collector cannot be created.
pub async fn start_collector(files: &Files) -> anyhow::Result<Server> {
    let server = start_collector_process(files).await?;
    create_location(&server).await?;
    Ok(server)
}

/// Creates the benchmark location's collector.
async fn create_location(server: &Server) -> anyhow::Result<()> {
    let mut admin = CollectorAdminClient::new(connect_over(&server.url(), &server.client_tls()).await?);
    admin
        .create_collector(authed(proto::CreateCollectorRequest { location: LOCATION.into() }, ADMIN_TOKEN))
        .await
        .context("cannot create the collector")?;
    Ok(())
}

/// Starts the ack-only ingest server.
///
/// # Errors
/// When it does not start.
pub async fn start_ceiling(files: &Files) -> anyhow::Result<Server> {
    let args = vec!["--listen".into(), "127.0.0.1:0".into(), "--addr-file".into(), files.arg("addr")];
    Server::start("ceiling", &args, &files.path("addr")).await
}

/// Starts the durable-append ceiling: the ack-only server appending each batch's events to
/// one file with one fdatasync per batch.
///
/// # Errors
/// When it does not start.
pub async fn start_durable_ceiling(files: &Files) -> anyhow::Result<Server> {
    let args = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--addr-file".into(),
        files.arg("addr"),
        "--append-to".into(),
        files.arg("events.bin"),
    ];
    Server::start("ceiling", &args, &files.path("addr")).await
}

/// Starts a runtime publishing to `collector_url`; with `discard_audit`, it audits nothing.
///
/// # Errors
/// When it does not start.
pub async fn start_runtime(files: &Files, collector_url: &str, discard_audit: bool) -> anyhow::Result<Server> {
    let principals = format!(
        "[[principal]]\napi_key = \"{API_KEY}\"\niam_id = \"IBMid-bench\"\nname = \"bench@example.com\"\naccount = \"acc-bench\"\n"
    );
    std::fs::write(files.path("principals.toml"), principals)?;
    let mut args: Vec<String> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--location".into(),
        LOCATION.into(),
        "--instance".into(),
        "inst-bench".into(),
        "--collector".into(),
        collector_url.into(),
        "--collector-token".into(),
        PUBLISHER_TOKEN.into(),
        "--principals".into(),
        files.arg("principals.toml"),
        "--data-dir".into(),
        files.arg("data"),
        "--addr-file".into(),
        files.arg("addr"),
        // The overhead scenario creates jobs faster than they run: it measures the calls, not
        // the job quota, which would refuse them.
        "--max-jobs-per-account".into(),
        "4000000000".into(),
        "--max-queued-jobs".into(),
        "4000000000".into(),
    ];
    if discard_audit {
        args.push("--discard-audit".into());
    }
    Server::start("runtime", &args, &files.path("addr")).await
}
