//! `qtrail up`: the whole system on one machine, in this process, on the embedded store (or the
//! PostgreSQL database `--store` names) — a collector service with the location's collector, a
//! runtime in that location, and the HTTP side (console and metrics) — until Ctrl-C.
//!
//! Each service gets a typed `Config` built here: the settings `up` chooses, over the
//! services' own environment layer (`Settings::from_env`), so `up` runs exactly what
//! `qtrail-collector` and `qtrail-runtime` would and honours their `QTRAIL_COLLECTOR_*` /
//! `QTRAIL_RUNTIME_*` environment variables for settings it leaves alone.
//!
//! The data directory holds, besides the two stores, the dev credentials written on first run
//! (random, mode 0600) and reused afterwards, the collector's checkpoint key (`checkpoint-key.pem`,
//! mode 0600, with its public half in `checkpoint-key.pub.pem`), the witness's key and state
//! (`witness-key.pem`, `witness/`, see [`witness`]), and `up.json`, written once
//! every server is ready and removed on a clean exit: the handshake for scripts, tests and the
//! other `qtrail` commands.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use qtrail_cadf::Location;
use qtrail_proto::qtrail::audit::v1::CreateCollectorRequest;
use qtrail_proto::qtrail::audit::v1::collector_admin_client::CollectorAdminClient;
use rand::RngCore;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::keys::{CHECKPOINT_PUBLIC_KEY, checkpoint_key};
use self::witness::UpWitness;
use crate::cli::{GlobalArgs, UpArgs};
use crate::connect::{UP_FILE, UpInfo, authorized};
use crate::error::CliError;

mod keys;
mod witness;

/// Location `up` runs when `--location` is not given.
pub const DEFAULT_LOCATION: &str = "us-east";

/// Service instance id of the local runtime.
const INSTANCE: &str = "qtrail-local";

/// How long each server may take to report SERVING.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The dev credentials of one data directory.
#[derive(Debug)]
struct DevCredentials {
    api_key: String,
    second_api_key: String,
    publisher_token: String,
    auditor_token: String,
    /// An auditor token scoped to bob's account (empty in a data directory written before).
    bob_auditor_token: String,
    admin_token: String,
}

/// Runs the services until Ctrl-C (SIGINT) or SIGTERM, then shuts them down in order: the
/// runtime first, so its publisher can flush the outbox into the still-running collector.
///
/// # Errors
/// Bad flags, an address in use, unusable files in the data directory, or a service that fails
/// to start.
pub async fn run(args: UpArgs, global: &GlobalArgs, out: &mut dyn Write) -> Result<(), CliError> {
    // `up` serves plaintext on loopback and reaches its own services that way; TLS settings
    // given to it would go unused or break them, which must not pass silently. Checked before
    // anything is written.
    if global.tls_ca.is_some() || global.tls_cert.is_some() || global.tls_key.is_some() {
        return Err(CliError::Usage(
            "qtrail up serves plaintext on loopback: --tls-ca, --tls-cert and --tls-key (QTRAIL_TLS_*) are for \
             the other commands"
                .into(),
        ));
    }
    if let Some(variable) = SERVICE_TLS_VARIABLES.iter().find(|name| std::env::var_os(name).is_some()) {
        return Err(CliError::Usage(format!(
            "qtrail up serves plaintext on loopback: unset {variable} (TLS is for services run on their own)"
        )));
    }
    let location_name = global.location.as_deref().unwrap_or(DEFAULT_LOCATION);
    let location: Location =
        location_name.parse().map_err(|err| CliError::Usage(format!("--location `{location_name}`: {err}")))?;
    let dir = global.data_dir.clone();
    create_private_dir(&dir)?;
    let credentials = DevCredentials::load_or_create(&dir, &location)?;
    let (checkpoint_key, log_key) = checkpoint_key(&dir)?;

    let collector_listener = bind("--collector-listen", &args.collector_listen).await?;
    let runtime_listener = bind("--runtime-listen", &args.runtime_listen).await?;
    let console_addr: SocketAddr = args.console_listen.parse().map_err(|_| {
        CliError::Usage(format!("--console-listen: `{}` is not an address such as 127.0.0.1:7480", args.console_listen))
    })?;
    let collector_url = url_of(&collector_listener)?;
    let runtime_url = url_of(&runtime_listener)?;

    let stop_collector = CancellationToken::new();
    let stop_runtime = CancellationToken::new();

    // The collector serves the console and /metrics itself; the address file tells us which
    // port it got when --console-listen asks for port 0.
    let console_addr_file = dir.join("console.addr");
    let _ = std::fs::remove_file(&console_addr_file);
    // Both services' settings are checked before either starts.
    let mut collector_config = collector_config(&dir, console_addr, &console_addr_file, &checkpoint_key)?;
    if let Some(url) = &args.store {
        collector_config.postgres = Some(postgres_store(url)?);
    }
    let runtime_config = runtime_config(&dir, &location, &collector_url, &credentials)?;
    let origin = format!("{}/{location}", collector_config.log_origin_prefix);
    let witness = UpWitness::start(&dir, log_key, &origin).await?;
    collector_config.witness_urls.push((witness.url.clone(), witness.key.clone()));
    let mut collector = tokio::spawn(qtrail_collector::run(
        collector_listener,
        collector_config,
        stop_collector.clone().cancelled_owned(),
    ));
    wait_ready("collector", &collector_url, &mut collector).await?;
    let console_url = match qtrail_server::addr_file::read(&console_addr_file) {
        Ok(Some(addr)) => format!("http://{addr}"),
        _ => return Err(CliError::Usage("the collector did not report its console address".into())),
    };
    create_collector(&collector_url, &credentials.admin_token, location.as_str()).await?;
    create_example_rule(&collector_url, &credentials.admin_token, location.as_str()).await?;

    let mut runtime =
        tokio::spawn(qtrail_runtime::run(runtime_listener, runtime_config, stop_runtime.clone().cancelled_owned()));
    wait_ready("runtime", &runtime_url, &mut runtime).await?;

    let info = UpInfo {
        runtime: runtime_url,
        collector: collector_url,
        console: console_url,
        location: location.to_string(),
        api_key: credentials.api_key.clone(),
        auditor_token: credentials.auditor_token.clone(),
        bob_auditor_token: Some(credentials.bob_auditor_token.clone()).filter(|token| !token.is_empty()),
        admin_token: credentials.admin_token.clone(),
        witness: Some(witness.url.clone()),
        witness_key: Some(witness.key.clone()),
    };
    write_private(&dir.join(UP_FILE), &serde_json::to_vec_pretty(&info).unwrap_or_default())?;
    print_banner(out, &info, &credentials, &dir)?;
    out.flush()?;

    // Run until a signal, or until a service stops on its own (which is an error).
    let failure = tokio::select! {
        () = qtrail_server::shutdown::signal() => None,
        result = &mut collector => Some(("collector", flatten(result))),
        result = &mut runtime => Some(("runtime", flatten(result))),
    };
    let _ = std::fs::remove_file(dir.join(UP_FILE));
    let _ = std::fs::remove_file(&console_addr_file);
    writeln!(out, "shutting down")?;

    stop_runtime.cancel();
    let runtime_result = if runtime.is_finished() && failure.is_some() { Ok(()) } else { flatten(runtime.await) };
    stop_collector.cancel();
    let collector_result = if collector.is_finished() && failure.is_some() { Ok(()) } else { flatten(collector.await) };
    // After the collector, whose last checkpoint it cosigns.
    witness.stop().await;

    if let Some((service, Err(err))) = failure {
        return Err(CliError::Usage(format!("the {service} stopped: {err:#}")));
    }
    if let Some((service, Ok(()))) = failure {
        return Err(CliError::Usage(format!("the {service} stopped unexpectedly")));
    }
    runtime_result.map_err(|err| CliError::Usage(format!("runtime: {err:#}")))?;
    collector_result.map_err(|err| CliError::Usage(format!("collector: {err:#}")))?;
    writeln!(out, "stopped")?;
    Ok(())
}

fn flatten(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    result.map_err(anyhow::Error::from).and_then(|inner| inner)
}

impl DevCredentials {
    /// Reads the credentials from `principals.toml` and `tokens.toml` in `dir`, writing both
    /// with fresh random secrets first if neither exists yet. The publisher token is made to
    /// name `location` (see [`grant_location`]).
    fn load_or_create(dir: &Path, location: &Location) -> Result<Self, CliError> {
        let principals = dir.join("principals.toml");
        let tokens = dir.join("tokens.toml");
        match (principals.exists(), tokens.exists()) {
            (true, true) => {
                let credentials = Self::load(&principals, &tokens)?;
                grant_location(&tokens, location)?;
                Ok(credentials)
            }
            (false, false) => {
                let credentials = Self {
                    api_key: random_secret("qk"),
                    second_api_key: random_secret("qk"),
                    publisher_token: random_secret("qt"),
                    auditor_token: random_secret("qt"),
                    bob_auditor_token: random_secret("qt"),
                    admin_token: random_secret("qt"),
                };
                write_private(&principals, credentials.principals_toml().as_bytes())?;
                write_private(&tokens, credentials.tokens_toml(location).as_bytes())?;
                Ok(credentials)
            }
            _ => Err(CliError::Usage(format!(
                "{} holds only one of principals.toml and tokens.toml: restore the other or remove both",
                dir.display()
            ))),
        }
    }

    fn principals_toml(&self) -> String {
        format!(
            "# Dev principals of `qtrail up` (runtime --principals). Secrets: keep this file private.\n\n\
             [[principal]]\napi_key = \"{}\"\niam_id = \"IBMid-dev-alice\"\nname = \"alice@example.com\"\naccount = \"acc-alice\"\n\n\
             [[principal]]\napi_key = \"{}\"\niam_id = \"IBMid-dev-bob\"\nname = \"bob@example.com\"\naccount = \"acc-bob\"\n",
            self.api_key, self.second_api_key
        )
    }

    fn tokens_toml(&self, location: &Location) -> String {
        format!(
            "{TOKENS_HEADER}\
             [[token]]\ntoken = \"{}\"\nrole = \"publisher\"\nname = \"runtime-local\"\nlocations = [\"{location}\"]\n\n\
             [[token]]\ntoken = \"{}\"\nrole = \"auditor\"\nname = \"auditor-local\"\n\n\
             [[token]]\ntoken = \"{}\"\nrole = \"admin\"\nname = \"admin-local\"\n\n\
             # Reads only the events of bob's account: his own calls and others' on his programs.\n\
             [[token]]\ntoken = \"{}\"\nrole = \"auditor\"\nname = \"auditor-bob\"\naccounts = [\"acc-bob\"]\n",
            self.publisher_token, self.auditor_token, self.admin_token, self.bob_auditor_token
        )
    }

    /// Reads existing files: the first two principals' keys and the first token of each role.
    fn load(principals: &Path, tokens: &Path) -> Result<Self, CliError> {
        let principals_table = read_toml(principals)?;
        let keys: Vec<String> = principals_table
            .get("principal")
            .and_then(toml::Value::as_array)
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| e.get("api_key").and_then(toml::Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let tokens_table = read_toml(tokens)?;
        let entries = tokens_table.get("token").and_then(toml::Value::as_array);
        let find = |key: &str, value: &str| {
            entries.and_then(|entries| entries.iter().find(|e| e.get(key).and_then(toml::Value::as_str) == Some(value)))
        };
        let token_of = |role: &str| -> Result<String, CliError> {
            find("role", role)
                .and_then(|e| e.get("token").and_then(toml::Value::as_str))
                .map(str::to_owned)
                .ok_or_else(|| CliError::Usage(format!("{} has no token with role `{role}`", tokens.display())))
        };
        let api_key = keys
            .first()
            .cloned()
            .ok_or_else(|| CliError::Usage(format!("{} lists no principal", principals.display())))?;
        Ok(Self {
            second_api_key: keys.get(1).cloned().unwrap_or_default(),
            api_key,
            publisher_token: token_of("publisher")?,
            auditor_token: token_of("auditor")?,
            bob_auditor_token: find("name", "auditor-bob")
                .and_then(|e| e.get("token").and_then(toml::Value::as_str))
                .unwrap_or_default()
                .to_owned(),
            admin_token: token_of("admin")?,
        })
    }
}

/// First lines of the tokens file `up` writes.
const TOKENS_HEADER: &str = "# Dev tokens of `qtrail up` (collector --tokens). Secrets: keep this file private.\n\n";

/// Makes the first publisher token of the tokens file at `path` name `location`, rewriting the
/// file only when it does not yet. The collector refuses a publisher token every location its
/// `locations` do not name, so a file written before tokens named locations (or a data
/// directory first brought up for another `--location`) would otherwise leave the runtime
/// unable to publish. Other entries and fields are kept; comments are not.
fn grant_location(path: &Path, location: &Location) -> Result<(), CliError> {
    let mut table = read_toml(path)?;
    let publisher = table
        .get_mut("token")
        .and_then(toml::Value::as_array_mut)
        .and_then(|entries| {
            entries.iter_mut().find(|entry| entry.get("role").and_then(toml::Value::as_str) == Some("publisher"))
        })
        .and_then(toml::Value::as_table_mut)
        .ok_or_else(|| CliError::Usage(format!("{} has no token with role `publisher`", path.display())))?;
    let locations = publisher.entry("locations").or_insert_with(|| toml::Value::Array(Vec::new()));
    let Some(locations) = locations.as_array_mut() else {
        return Err(CliError::Usage(format!("{}: `locations` of the publisher token is not a list", path.display())));
    };
    if locations.iter().any(|named| named.as_str() == Some(location.as_str())) {
        return Ok(());
    }
    locations.push(toml::Value::String(location.to_string()));
    let text = toml::to_string(&table).map_err(|err| CliError::Usage(format!("{}: {err}", path.display())))?;
    write_private(path, format!("{TOKENS_HEADER}{text}").as_bytes())
}

fn read_toml(path: &Path) -> Result<toml::Table, CliError> {
    qtrail_server::config::load_toml(path).map_err(|err| CliError::Usage(err.to_string()))
}

/// Returns `<prefix>_<64 hex digits>`: 256 random bits, recognisable by its prefix in a leak scan.
fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

fn create_private_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CliError::File { path: dir.display().to_string(), source })
}

/// Writes `bytes` to `path` readable by the owner only (mode 0600, also when replacing), so
/// that a crash leaves the old file or the new one, never a torn or world-readable one: into a
/// temporary file beside it, synced, renamed over it, and the directory synced so that the
/// rename itself is durable.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let file_error = |source| CliError::File { path: path.display().to_string(), source };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    // A leftover (an earlier crash, or someone else's file or link) keeps its owner and mode
    // when opened: never reuse one, create the file anew with O_EXCL.
    match std::fs::remove_file(&temporary) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(file_error(err)),
        _ => {}
    }
    let mut file: File =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary).map_err(file_error)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(file_error)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(file_error)?;
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(file_error)
}

async fn bind(flag: &str, addr: &str) -> Result<TcpListener, CliError> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|_| CliError::Usage(format!("{flag}: `{addr}` is not an address such as 127.0.0.1:7400")))?;
    TcpListener::bind(parsed)
        .await
        .map_err(|err| CliError::Usage(format!("{flag}: cannot listen on {addr}: {err} (pass another {flag})")))
}

fn url_of(listener: &TcpListener) -> Result<String, CliError> {
    let addr = listener.local_addr().map_err(CliError::Output)?;
    Ok(format!("http://{addr}"))
}

/// Returns the PostgreSQL store `--store` names, with the collector's pool and CA settings.
fn postgres_store(url: &str) -> Result<qtrail_collector::store::postgres::PgOptions, CliError> {
    use qtrail_collector::store::postgres::{PgOptions, is_postgres_url, redacted};
    if !is_postgres_url(url) {
        return Err(CliError::Usage(format!("--store `{}`: not a postgres:// url", redacted(url))));
    }
    let settings = qtrail_collector::config::Settings::from_env()
        .map_err(|err| CliError::Usage(format!("collector settings: {err}")))?;
    Ok(PgOptions { url: url.to_owned(), pool_size: settings.store_pool_size, ca: settings.store_ca })
}

fn collector_config(
    dir: &Path,
    console: SocketAddr,
    console_addr_file: &Path,
    checkpoint_key: &Path,
) -> Result<qtrail_collector::Config, CliError> {
    let tokens = qtrail_collector::tokens::Tokens::load(&dir.join("tokens.toml"))
        .context("failed to load the tokens file")
        .map_err(|err| CliError::Usage(format!("{err:#}")))?;
    let mut config = qtrail_collector::Config::new(dir.join("collector"), tokens);
    let settings = qtrail_collector::config::Settings::from_env()
        .map_err(|err| CliError::Usage(format!("collector settings: {err}")))?;
    settings.apply(&mut config).map_err(|err| CliError::Usage(format!("{err:#}")))?;
    config.http = Some(console);
    config.http_addr_file = Some(console_addr_file.to_owned());
    config.checkpoint_key = Some(checkpoint_key.to_owned());
    Ok(config)
}

/// The services' TLS settings, which `up` (plaintext on loopback) refuses rather than ignores.
const SERVICE_TLS_VARIABLES: [&str; 9] = [
    "QTRAIL_COLLECTOR_TLS_CERT",
    "QTRAIL_COLLECTOR_TLS_KEY",
    "QTRAIL_COLLECTOR_TLS_CLIENT_CA",
    "QTRAIL_RUNTIME_TLS_CERT",
    "QTRAIL_RUNTIME_TLS_KEY",
    "QTRAIL_RUNTIME_TLS_CLIENT_CA",
    "QTRAIL_RUNTIME_COLLECTOR_CA",
    "QTRAIL_RUNTIME_COLLECTOR_CERT",
    "QTRAIL_RUNTIME_COLLECTOR_KEY",
];

fn runtime_config(
    dir: &Path,
    location: &Location,
    collector_url: &str,
    credentials: &DevCredentials,
) -> Result<qtrail_runtime::Config, CliError> {
    let principals = dir.join("principals.toml");
    let mut config = qtrail_runtime::Config::new(
        location.clone(),
        INSTANCE.to_owned(),
        collector_url.to_owned(),
        principals,
        dir.join("runtime"),
    );
    let settings = qtrail_runtime::config::Settings::from_env()
        .map_err(|err| CliError::Usage(format!("runtime settings: {err}")))?;
    settings.apply(&mut config);
    config.collector_token = Some(qtrail_runtime::config::Secret::new(credentials.publisher_token.clone()));
    Ok(config)
}

/// Waits until `url` reports SERVING, failing early if the service's task ends first.
async fn wait_ready(
    service: &'static str,
    url: &str,
    task: &mut JoinHandle<anyhow::Result<()>>,
) -> Result<(), CliError> {
    tokio::select! {
        ready = qtrail_server::health::wait_serving(url, READY_TIMEOUT) => {
            if ready {
                return Ok(());
            }
            Err(CliError::Usage(format!("the {service} did not become ready within {READY_TIMEOUT:?}")))
        }
        result = &mut *task => {
            let detail = match flatten(result) {
                Ok(()) => "it stopped".to_owned(),
                Err(err) => format!("{err:#}"),
            };
            Err(CliError::Usage(format!("the {service} failed to start: {detail}")))
        }
    }
}

/// Creates the location's collector; one that exists already (a restart) is fine.
async fn create_collector(url: &str, admin_token: &str, location: &str) -> Result<(), CliError> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|err| CliError::Usage(err.to_string()))?
        .connect()
        .await
        .map_err(|err| CliError::Connect { service: "collector", url: url.to_owned(), detail: err.to_string() })?;
    let request = authorized(CreateCollectorRequest { location: location.to_owned() }, admin_token)?;
    match CollectorAdminClient::new(channel).create_collector(request).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(status) => Err(CliError::Rpc(status)),
    }
}

/// Name of the alert rule `up` creates.
pub const EXAMPLE_RULE: &str = "critical-calls";

/// Creates the example alert rule: every critical event, which is every delete and every call
/// refused for its key (401, 403), folded per 30 s; one that exists already is kept as it is.
async fn create_example_rule(url: &str, admin_token: &str, location: &str) -> Result<(), CliError> {
    use qtrail_proto::qtrail::audit::v1::{self as proto, alert_service_client::AlertServiceClient};
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|err| CliError::Usage(err.to_string()))?
        .connect()
        .await
        .map_err(|err| CliError::Connect { service: "collector", url: url.to_owned(), detail: err.to_string() })?;
    let rule = proto::AlertRule {
        location: location.to_owned(),
        name: EXAMPLE_RULE.to_owned(),
        filter: Some(proto::EventFilter { severity: proto::Severity::Critical as i32, ..Default::default() }),
        trigger: Some(proto::AlertTrigger { kind: Some(proto::alert_trigger::Kind::Each(proto::EachTrigger {})) }),
        cooldown: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
        ..Default::default()
    };
    let request = authorized(proto::CreateAlertRuleRequest { rule: Some(rule) }, admin_token)?;
    match AlertServiceClient::new(channel).create_alert_rule(request).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(status) => Err(CliError::Rpc(status)),
    }
}

fn print_banner(out: &mut dyn Write, info: &UpInfo, credentials: &DevCredentials, dir: &Path) -> std::io::Result<()> {
    let runtime_addr = info.runtime.trim_start_matches("http://");
    let collector_addr = info.collector.trim_start_matches("http://");
    let dir = dir.display();
    let location = &info.location;
    writeln!(out, "qtrail is up in {location} (data in {dir}/, Ctrl-C stops everything)")?;
    writeln!(out)?;
    writeln!(out, "  runtime    {}   gRPC: qtrail.runtime.v1.ProgramService, JobService", info.runtime)?;
    writeln!(
        out,
        "  collector  {}   gRPC: qtrail.audit.v1.CollectorAdmin, Ingest, EventQuery, AlertService",
        info.collector
    )?;
    writeln!(out, "  console    {}/console/{location}   sign in with the auditor token", info.console)?;
    writeln!(out, "  metrics    {}/metrics", info.console)?;
    if let (Some(url), Some(key)) = (&info.witness, &info.witness_key) {
        writeln!(out, "  witness    {url}   C2SP tlog-witness, key {key}")?;
    }
    writeln!(out)?;
    writeln!(out, "  api key (alice@example.com)  {}", credentials.api_key)?;
    writeln!(out, "  api key (bob@example.com)    {}", credentials.second_api_key)?;
    writeln!(out, "  auditor token                {}", credentials.auditor_token)?;
    if !credentials.bob_auditor_token.is_empty() {
        writeln!(out, "  auditor token (acc-bob only) {}", credentials.bob_auditor_token)?;
    }
    writeln!(out, "  admin token                  {}", credentials.admin_token)?;
    writeln!(out, "  (all in {dir}/up.json, principals.toml and tokens.toml, mode 0600)")?;
    writeln!(out)?;
    writeln!(out, "Try, from this directory:")?;
    writeln!(
        out,
        "  printf 'OPENQASM 2.0; include \"qelib1.inc\"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;' > bell.qasm"
    )?;
    writeln!(out, "  qtrail programs create --name bell --source-file bell.qasm")?;
    writeln!(out, "  qtrail jobs run <program id> --shots 1000 --wait")?;
    writeln!(out, "  qtrail events query --action quantum-computing.job")?;
    writeln!(out, "  qtrail events verify --public-key {dir}/{CHECKPOINT_PUBLIC_KEY}")?;
    if let Some(key) = &info.witness_key {
        writeln!(out, "  qtrail events verify --public-key {dir}/{CHECKPOINT_PUBLIC_KEY} --witness-key {key}")?;
    }
    writeln!(out, "  qtrail events export --format cadf-json -o events.jsonl")?;
    writeln!(out, "  qtrail alerts watch   # rule {EXAMPLE_RULE}: every delete and every refused key")?;
    writeln!(out, "or with grpcurl:")?;
    writeln!(out, "  grpcurl -plaintext {runtime_addr} list")?;
    writeln!(
        out,
        "  grpcurl -plaintext -H 'authorization: Bearer {}' -d '{{\"limit\": 10}}' {runtime_addr} qtrail.runtime.v1.ProgramService/ListPrograms",
        credentials.api_key
    )?;
    writeln!(
        out,
        "  grpcurl -plaintext -H 'authorization: Bearer {}' -d '{{\"location\": \"{location}\"}}' {collector_addr} qtrail.audit.v1.EventQuery/VerifyChain",
        credentials.auditor_token
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn private_files_are_created_anew_whatever_was_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let leftover = dir.path().join("tokens.toml.tmp");
        std::fs::write(&leftover, "old secrets").unwrap();
        std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o644)).unwrap();

        write_private(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!leftover.exists());

        // A link left in its place is removed, not written through.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "untouched").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &leftover).unwrap();
        write_private(&path, b"newer").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "newer");
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "untouched");
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_file());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    /// A tokens file written before tokens named locations gets the location `up` runs, and
    /// another location later; the secrets and other entries stay, the mode stays 0600.
    #[test]
    fn an_older_tokens_file_gets_the_locations_up_runs() {
        let dir = tempfile::tempdir().unwrap();
        let us_east: Location = "us-east".parse().unwrap();
        let created = DevCredentials::load_or_create(dir.path(), &us_east).unwrap();
        let tokens = dir.path().join("tokens.toml");
        let written = std::fs::read_to_string(&tokens).unwrap();
        assert!(written.contains("locations = [\"us-east\"]"), "{written}");

        // As an older `up` wrote it: no `locations`.
        let older = written.replace("locations = [\"us-east\"]\n", "");
        write_private(&tokens, older.as_bytes()).unwrap();
        let loaded = DevCredentials::load_or_create(dir.path(), &us_east).unwrap();
        assert_eq!(loaded.publisher_token, created.publisher_token);
        let eu_de: Location = "eu-de".parse().unwrap();
        DevCredentials::load_or_create(dir.path(), &eu_de).unwrap();
        let upgraded = qtrail_collector::tokens::Tokens::load(&tokens).unwrap();
        let publisher =
            upgraded.authorize(Some(&created.publisher_token), qtrail_collector::tokens::Role::Publisher).unwrap();
        assert_eq!(publisher.locations, vec![us_east, eu_de]);
        // Publisher, auditor, admin and bob's scoped auditor, which keeps its scope.
        assert_eq!(upgraded.len(), 4);
        let bob =
            upgraded.authorize(Some(&created.bob_auditor_token), qtrail_collector::tokens::Role::Auditor).unwrap();
        assert_eq!(bob.scope.listed(), Some(&["acc-bob".to_owned()][..]));
        let mode = std::fs::metadata(&tokens).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
