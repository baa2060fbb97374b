//! The monitor's alarm webhook: a fork or a rollback posted once as a CloudEvents 1.0 structured
//! JSON document (`com.qtrail.tlog.fork` / `com.qtrail.tlog.rollback`, both notes in `data`),
//! signed per Standard Webhooks with the HMAC of the collector's alert deliveries, so that
//! `qtrail alerts receive` and any Standard Webhooks library verify it.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qtrail_collector::alerts::{rule::secret_key, webhook};
use qtrail_runtime::config::Secret;
use serde_json::json;

use crate::error::CliError;

/// How long one delivery may take: the monitor exits after it either way.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where alarms go, and the key they are signed with.
pub(super) struct Webhook {
    url: Uri,
    key: Vec<u8>,
}

impl Webhook {
    /// Checks `--webhook` and `--secret`.
    ///
    /// # Errors
    /// [`CliError::Usage`] for a URL that is not http, or a malformed secret.
    pub(super) fn new(url: &str, secret: Option<&Secret>) -> Result<Self, CliError> {
        let parsed: Uri = url.parse().map_err(|_| CliError::Usage(format!("--webhook `{url}` is not a URL")))?;
        if parsed.scheme_str() != Some("http") || parsed.host().is_none() {
            return Err(CliError::Usage(format!("--webhook `{url}` must be an http:// URL")));
        }
        let secret = secret.ok_or_else(|| CliError::Usage("--webhook needs --secret".into()))?;
        let key = secret_key(secret.expose())
            .map_err(|_| CliError::Usage("invalid --secret: `whsec_` and the base64 of 24 to 64 bytes".into()))?;
        Ok(Self { url: parsed, key })
    }

    /// Posts one alarm; a failed delivery is reported on stderr, not retried (the exit code
    /// carries the alarm too).
    pub(super) async fn post(&self, kind: &str, location: &str, detail: &str, seen: &str, newest: &str) {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let now = chrono::Utc::now();
        let body = json!({
            "specversion": "1.0",
            "type": format!("com.qtrail.tlog.{kind}"),
            "source": webhook::source(location),
            "id": id,
            "time": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "datacontenttype": "application/json",
            "data": {"location": location, "alarm": kind, "detail": detail, "seenNote": seen, "newestNote": newest},
        })
        .to_string();
        let signature = webhook::signature(&self.key, &id, now.timestamp(), &body);
        let request = Request::post(self.url.clone())
            .header("content-type", "application/cloudevents+json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", now.timestamp().to_string())
            .header("webhook-signature", signature)
            .body(Full::new(Bytes::from(body)));
        let client = Client::builder(TokioExecutor::new()).build_http();
        let outcome = match request {
            Ok(request) => match tokio::time::timeout(TIMEOUT, client.request(request)).await {
                Ok(Ok(response)) if response.status().is_success() => return,
                Ok(Ok(response)) => format!("answered {}", response.status()),
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no answer within {}s", TIMEOUT.as_secs()),
            },
            Err(err) => err.to_string(),
        };
        eprintln!("warning: the alarm was not delivered to {}: {outcome}", self.url);
    }
}
