//! Where to connect and with which credentials: flags, then environment variables (both via
//! clap), then the `up.json` handshake file that `qtrail up` writes into its data directory.

use std::path::Path;
use std::time::Duration;

use qtrail_server::tls::{ClientTls, TlsError, error_chain};
use serde::{Deserialize, Serialize};
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::cli::{GlobalArgs, OutputFormat};
use crate::error::CliError;

/// The handshake file `qtrail up` writes once every server is ready: addresses and dev
/// credentials for scripts, tests and the other `qtrail` commands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpInfo {
    /// Runtime gRPC URL.
    pub runtime: String,
    /// Collector gRPC URL.
    pub collector: String,
    /// Web console URL.
    pub console: String,
    /// Location of the collector and the runtime.
    pub location: String,
    /// API key of the dev principal.
    pub api_key: String,
    /// Collector token with the auditor role.
    pub auditor_token: String,
    /// Collector token with the auditor role scoped to bob's account (`auditor-bob`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bob_auditor_token: Option<String>,
    /// Collector token with the admin role.
    pub admin_token: String,
    /// Submission prefix of the witness `up` runs (C2SP tlog-witness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<String>,
    /// Cosignature verifier key of that witness, for `qtrail events verify --witness-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_key: Option<String>,
}

/// Name of the handshake file in the data directory.
pub const UP_FILE: &str = "up.json";

impl UpInfo {
    /// Reads `dir/up.json`; `Ok(None)` when there is none.
    ///
    /// # Errors
    /// [`CliError::File`] when it exists but cannot be read or parsed.
    pub fn load(dir: &Path) -> Result<Option<Self>, CliError> {
        let path = dir.join(UP_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CliError::File { path: path.display().to_string(), source }),
        };
        serde_json::from_str(&text).map(Some).map_err(|err| CliError::File {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, err),
        })
    }
}

/// Resolved settings of one invocation.
#[derive(Debug)]
pub struct Settings {
    /// Output format.
    pub output: OutputFormat,
    runtime: Option<String>,
    collector: Option<String>,
    api_key: Option<String>,
    token: Option<String>,
    location: Option<String>,
    up: Option<UpInfo>,
    tls: ClientTls,
}

/// How long to wait for a TCP connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Settings {
    /// Combines the global flags (and their environment variables) with the data directory's
    /// `up.json`, which fills whatever the flags leave unset.
    ///
    /// # Errors
    /// [`CliError::File`] for an unreadable `up.json`.
    pub fn resolve(global: &GlobalArgs) -> Result<Self, CliError> {
        Ok(Settings {
            output: global.output,
            runtime: global.runtime.clone(),
            collector: global.collector.clone(),
            api_key: global.api_key.clone(),
            token: global.token.clone(),
            location: global.location.clone(),
            up: UpInfo::load(&global.data_dir)?,
            tls: ClientTls { ca: global.tls_ca.clone(), cert: global.tls_cert.clone(), key: global.tls_key.clone() },
        })
    }

    fn missing(what: &str, flag: &str, env: &str) -> CliError {
        CliError::Usage(format!("no {what}: pass {flag}, set {env}, or start `qtrail up` in this directory"))
    }

    /// Returns the location to read events of.
    ///
    /// # Errors
    /// [`CliError::Usage`] when neither flags nor `up.json` name one.
    pub fn location(&self) -> Result<String, CliError> {
        self.configured_location().ok_or_else(|| Self::missing("location", "--location", "QTRAIL_LOCATION"))
    }

    /// Returns the location the flags or `up.json` name, in that order, if any.
    pub fn configured_location(&self) -> Option<String> {
        self.location.clone().or_else(|| self.up.as_ref().map(|up| up.location.clone()))
    }

    /// Returns the runtime API key.
    ///
    /// # Errors
    /// [`CliError::Usage`] when none is configured.
    pub fn api_key(&self) -> Result<String, CliError> {
        self.api_key
            .clone()
            .or_else(|| self.up.as_ref().map(|up| up.api_key.clone()))
            .ok_or_else(|| Self::missing("api key", "--api-key", "QTRAIL_API_KEY"))
    }

    /// Returns the collector token for `events` commands: `--token`, else up.json's auditor token.
    ///
    /// # Errors
    /// [`CliError::Usage`] when none is configured.
    pub fn auditor_token(&self) -> Result<String, CliError> {
        self.token
            .clone()
            .or_else(|| self.up.as_ref().map(|up| up.auditor_token.clone()))
            .ok_or_else(|| Self::missing("collector token", "--token", "QTRAIL_TOKEN"))
    }

    /// Returns the collector token for `collectors` commands: `--token`, else up.json's admin
    /// token.
    ///
    /// # Errors
    /// [`CliError::Usage`] when none is configured.
    pub fn admin_token(&self) -> Result<String, CliError> {
        self.token
            .clone()
            .or_else(|| self.up.as_ref().map(|up| up.admin_token.clone()))
            .ok_or_else(|| Self::missing("collector token", "--token", "QTRAIL_TOKEN"))
    }

    /// Connects to the runtime.
    ///
    /// # Errors
    /// [`CliError::Usage`] without an address, [`CliError::Connect`] when unreachable.
    pub async fn runtime_channel(&self) -> Result<Channel, CliError> {
        let url = self
            .runtime
            .clone()
            .or_else(|| self.up.as_ref().map(|up| up.runtime.clone()))
            .ok_or_else(|| Self::missing("runtime address", "--runtime", "QTRAIL_RUNTIME"))?;
        connect("runtime", &url, &self.tls).await
    }

    /// Connects to the collector.
    ///
    /// # Errors
    /// [`CliError::Usage`] without an address, [`CliError::Connect`] when unreachable.
    pub async fn collector_channel(&self) -> Result<Channel, CliError> {
        let url = self
            .collector
            .clone()
            .or_else(|| self.up.as_ref().map(|up| up.collector.clone()))
            .ok_or_else(|| Self::missing("collector address", "--collector", "QTRAIL_COLLECTOR"))?;
        connect("collector", &url, &self.tls).await
    }
}

async fn connect(service: &'static str, url: &str, tls: &ClientTls) -> Result<Channel, CliError> {
    let connect_error = |detail: String| CliError::Connect { service, url: url.to_owned(), detail };
    let endpoint = tls
        .endpoint(url)
        .map_err(|err| match err {
            TlsError::Url { detail, .. } => CliError::Usage(format!("invalid {service} address `{url}`: {detail}")),
            other => CliError::Usage(other.to_string()),
        })?
        .connect_timeout(CONNECT_TIMEOUT);
    // Transport errors hide the useful part (connection refused, an unknown certificate
    // issuer) in their sources.
    endpoint.connect().await.map_err(|err| connect_error(error_chain(&err)))
}

/// Wraps `message` in a request carrying `authorization: Bearer <token>`.
///
/// # Errors
/// [`CliError::Usage`] when the token cannot be sent as a header.
pub fn authorized<T>(message: T, token: &str) -> Result<Request<T>, CliError> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| CliError::Usage("the token holds characters a header cannot carry".into()))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}
