//! Webhook deliveries: the CloudEvents 1.0 body, the Standard Webhooks signature, the HTTP POST,
//! and one worker per channel that retries with exponential backoff and jitter.
//!
//! Each channel (a rule's webhook) has its own worker and its own bounded list of pending
//! deliveries in the alert state, so a dead or hanging endpoint only ever holds its own worker
//! (for at most the attempt timeout per try): ingest, evaluation and other channels go on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use prost::bytes::Bytes;
use qtrail_cadf::crn::SERVICE_NAME;
use qtrail_proto::qtrail::audit::v1 as proto;
use rand::Rng as _;
use tokio::net::TcpStream;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::backend::AlertStore;
use super::evaluator::now_millis;
use super::meters;
use super::rule::{Channel, Rule};
use super::state::Delivery;
use crate::ingest::blocking;

/// First wait between attempts; it doubles per attempt up to the configured cap.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Shortest retry horizon meant for production: below it the collector warns at start-up.
pub const MIN_RETRY_HORIZON: Duration = Duration::from_secs(24 * 3600);
/// Most bytes of an endpoint's answer read: only its status counts.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How deliveries are made and retried.
#[derive(Clone)]
pub(crate) struct RetryPolicy {
    /// Longest wait between attempts.
    pub(crate) cap: Duration,
    /// How long a delivery is retried before it is `failed`.
    pub(crate) horizon: Duration,
    /// How long one attempt may take.
    pub(crate) timeout: Duration,
    /// The TLS client of https webhooks.
    pub(crate) tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("cap", &self.cap)
            .field("horizon", &self.horizon)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Returns the log source CRN of a location: the `source` of its notifications.
pub fn source(location: &str) -> String {
    format!("crn:v1:bluemix:public:{SERVICE_NAME}:{location}::::")
}

/// Returns the CloudEvents 1.0 structured JSON body of a firing, its events in AT-JSON.
pub(crate) fn body(firing: &proto::AlertFiring) -> String {
    let kind = if firing.kind == proto::FiringKind::Resolved as i32 { "resolved" } else { "fired" };
    let events: Vec<serde_json::Value> = firing
        .events
        .iter()
        .filter_map(|record| crate::query::decode(record).ok())
        .map(|event| qtrail_cadf::at_json::to_value(&event))
        .collect();
    let time = firing.time.as_ref().map(|time| {
        chrono::DateTime::from_timestamp(time.seconds, u32::try_from(time.nanos).unwrap_or(0))
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    });
    serde_json::json!({
        "specversion": "1.0",
        "id": firing.webhook_id,
        "type": format!("com.qtrail.alert.{kind}"),
        "source": source(&firing.location),
        "subject": firing.rule,
        "time": time,
        "datacontenttype": "application/json",
        "data": {
            "rule": firing.rule,
            "location": firing.location,
            "firing": firing.number,
            "count": firing.count,
            "cursor": firing.cursor,
            "events": events,
        },
    })
    .to_string()
}

/// Returns the `webhook-signature` value: `v1,` and the base64 HMAC-SHA256 of
/// `id.timestamp.body` under the secret's bytes (Standard Webhooks).
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(tag.as_ref()))
}

/// Returns whether a `webhook-signature` header (space-separated `v1,<base64>` entries) holds a
/// valid signature of `id.timestamp.body` under `key`; compared in constant time.
pub fn verify(key: &[u8], id: &str, timestamp: i64, body: &str, header: &str) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let signed = format!("{id}.{timestamp}.{body}");
    header
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|tag| STANDARD.decode(tag).ok())
        .any(|tag| ring::hmac::verify(&key, signed.as_bytes(), &tag).is_ok())
}

/// The running channel workers, by rule key.
#[derive(Debug, Clone)]
pub(crate) struct Channels {
    state: Arc<AlertStore>,
    policy: RetryPolicy,
    stop: CancellationToken,
    workers: Arc<Mutex<HashMap<String, Worker>>>,
    /// The workers' tasks, so that shutdown waits for them to let go of the alert state.
    tasks: TaskTracker,
    /// Tells watches the number of each firing whose delivery changed state.
    changes: broadcast::Sender<u64>,
}

#[derive(Debug)]
struct Worker {
    channel: Channel,
    wake: Arc<Notify>,
    stop: CancellationToken,
}

impl Channels {
    /// Returns no workers yet; all of them stop with `stop`.
    pub(crate) fn new(
        state: Arc<AlertStore>,
        policy: RetryPolicy,
        stop: CancellationToken,
        changes: broadcast::Sender<u64>,
    ) -> Self {
        Self { state, policy, stop, workers: Arc::default(), tasks: TaskTracker::new(), changes }
    }

    /// Stops every worker and waits for them.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Runs one worker per rule with a webhook: starts the missing ones, restarts those whose
    /// channel changed, stops those of rules gone or without webhook.
    pub(crate) fn sync(&self, rules: &[Rule]) {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let wanted: HashMap<String, &Channel> =
            rules.iter().filter_map(|rule| rule.channel.as_ref().map(|channel| (rule.key(), channel))).collect();
        workers.retain(|key, worker| {
            let keep = wanted.get(key).is_some_and(|channel| **channel == worker.channel);
            if !keep {
                worker.stop.cancel();
            }
            keep
        });
        for (key, channel) in wanted {
            if workers.contains_key(&key) {
                continue;
            }
            let worker = Worker { channel: channel.clone(), wake: Arc::default(), stop: self.stop.child_token() };
            let task = WorkerTask {
                rule: key.clone(),
                channel: channel.clone(),
                state: self.state.clone(),
                policy: self.policy.clone(),
                wake: worker.wake.clone(),
                stop: worker.stop.clone(),
                changes: self.changes.clone(),
            };
            self.tasks.spawn(task.run());
            workers.insert(key, worker);
        }
    }

    /// Tells a channel's worker that it has a new delivery.
    pub(crate) fn wake(&self, rule: &str) {
        if let Some(worker) = self.workers.lock().unwrap_or_else(PoisonError::into_inner).get(rule) {
            worker.wake.notify_one();
        }
    }
}

/// One channel's worker.
struct WorkerTask {
    rule: String,
    channel: Channel,
    state: Arc<AlertStore>,
    policy: RetryPolicy,
    wake: Arc<Notify>,
    stop: CancellationToken,
    changes: broadcast::Sender<u64>,
}

impl WorkerTask {
    async fn run(self) {
        self.serve().await;
        // A stopped channel holds nothing: its rule or webhook is gone (its deliveries failed
        // with it), or the collector stops.
        meters::queue_depth(&self.rule, 0);
    }

    async fn serve(&self) {
        loop {
            let (state, rule) = (self.state.clone(), self.rule.clone());
            let next = blocking(move || {
                let depth = state.pending_count(&rule)?;
                Ok((state.next_delivery(&rule)?, depth))
            })
            .await;
            let next = match next {
                Ok((next, depth)) => {
                    meters::queue_depth(&self.rule, depth);
                    next
                }
                Err(err) => {
                    warn!(rule = %self.rule, error = %err, "failed to read the pending deliveries");
                    None
                }
            };
            let wait = match &next {
                None => Duration::from_secs(3600),
                Some(delivery) => millis_until(delivery.next_attempt),
            };
            if !wait.is_zero() {
                tokio::select! {
                    () = self.wake.notified() => continue,
                    () = tokio::time::sleep(wait) => continue,
                    () = self.stop.cancelled() => return,
                }
            }
            let Some(delivery) = next else { continue };
            let attempted = tokio::select! {
                attempted = self.attempt(delivery) => attempted,
                () = self.stop.cancelled() => return,
            };
            let (state, number) = (self.state.clone(), attempted.number);
            match blocking(move || state.record(&attempted)).await {
                // Without watches listening there is no one to tell.
                Ok(()) => drop(self.changes.send(number)),
                Err(err) => warn!(rule = %self.rule, error = %err, "failed to record a delivery attempt"),
            }
        }
    }

    /// Makes one attempt and returns the delivery as it stands after it.
    async fn attempt(&self, mut delivery: Delivery) -> Delivery {
        delivery.attempts += 1;
        let posted = post(&self.channel, &delivery, &self.policy.tls);
        let result = tokio::time::timeout(self.policy.timeout, posted).await;
        // Taken once the answer is in: the latency and the next attempt count from here.
        let now = now_millis();
        let failure = match result {
            Ok(Ok(status)) if (200..300).contains(&status) => None,
            Ok(Ok(status)) => Some(format!("the endpoint answered {status}")),
            Ok(Err(err)) => Some(err),
            Err(_) => Some(format!("no answer within {} s", self.policy.timeout.as_secs_f64())),
        };
        let Some(failure) = failure else {
            delivery.state = proto::DeliveryState::Delivered as i32;
            delivery.last_error.clear();
            meters::attempt(&self.rule, "delivered");
            meters::delivered_after(&self.rule, now.saturating_sub(delivery.created) as f64 / 1000.0);
            debug!(rule = %self.rule, webhook_id = %delivery.webhook_id, attempts = delivery.attempts, "webhook delivered");
            return delivery;
        };
        let horizon = i64::try_from(self.policy.horizon.as_millis()).unwrap_or(i64::MAX);
        let backoff = backoff(delivery.attempts, self.policy.cap);
        let next = now.saturating_add(i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX));
        if next.saturating_sub(delivery.created) > horizon {
            delivery.state = proto::DeliveryState::Failed as i32;
            meters::attempt(&self.rule, "failed");
            warn!(rule = %self.rule, webhook_id = %delivery.webhook_id, attempts = delivery.attempts, error = %failure, "webhook delivery failed for good");
        } else {
            delivery.next_attempt = next;
            meters::attempt(&self.rule, "retry");
            debug!(rule = %self.rule, webhook_id = %delivery.webhook_id, attempts = delivery.attempts, error = %failure, retry_in_secs = backoff.as_secs_f64(), "webhook delivery will be retried");
        }
        delivery.last_error = failure;
        delivery
    }
}

/// Returns the wait after `attempts` failed attempts: doubling from [`FIRST_BACKOFF`] up to
/// `cap`, then a random part of it taken off (up to half), so that channels failing together
/// do not retry in step.
fn backoff(attempts: u32, cap: Duration) -> Duration {
    let full = FIRST_BACKOFF.saturating_mul(1 << attempts.saturating_sub(1).min(30)).min(cap);
    full.mul_f64(1.0 - rand::rng().random_range(0.0..0.5))
}

fn millis_until(at: i64) -> Duration {
    Duration::from_millis(u64::try_from(at.saturating_sub(now_millis())).unwrap_or(0))
}

/// Posts a delivery; returns the HTTP status, or why there is none (never quoting the secret).
async fn post(channel: &Channel, delivery: &Delivery, tls: &tokio_rustls::TlsConnector) -> Result<u16, String> {
    let uri: axum::http::Uri = channel.url.parse().map_err(|_| "invalid url".to_owned())?;
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|err| format!("connect failed: {err}"))?;
    let timestamp = chrono::Utc::now().timestamp();
    let authority = uri.authority().map(|authority| authority.as_str().to_owned()).unwrap_or_default();
    let request = axum::http::Request::post(uri.path_and_query().map_or("/", |path| path.as_str()))
        .header("host", authority)
        .header("content-type", "application/cloudevents+json; charset=utf-8")
        .header("user-agent", concat!("qtrail-collector/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", &delivery.webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature(&channel.key, &delivery.webhook_id, timestamp, &delivery.body))
        .body(Full::new(Bytes::from(delivery.body.clone())))
        .map_err(|err| format!("bad request: {err}"))?;
    if https {
        let name = rustls_pki_types::ServerName::try_from(host).map_err(|_| "invalid tls server name".to_owned())?;
        let tls = tls.connect(name, tcp).await.map_err(|err| format!("tls failed: {err}"))?;
        send(TokioIo::new(tls), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
}

async fn send<T>(io: T, request: axum::http::Request<Full<Bytes>>) -> Result<u16, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|err| format!("http failed: {err}"))?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|err| format!("http failed: {err}"));
    let status = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            // Up to 64 KiB of the body is read (and dropped) so that a short answer ends the
            // connection cleanly; an endpoint sending more cannot make the collector read it.
            let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect().await;
            Ok(status)
        }
        Err(err) => Err(err),
    };
    driver.abort();
    status
}

/// Returns the TLS client of https webhooks: the Mozilla roots, and the CA certificates in
/// `extra_ca` (PEM) if given.
///
/// # Errors
/// When `extra_ca` cannot be read or holds no certificate.
pub(crate) fn tls_connector(extra_ca: Option<&std::path::Path>) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use anyhow::Context as _;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_ca {
        let certificates = CertificateDer::pem_file_iter(path)
            .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("failed to read the alert tls CA file {}", path.display()))?;
        anyhow::ensure!(!certificates.is_empty(), "the alert tls CA file {} holds no certificate", path.display());
        for certificate in certificates {
            roots.add(certificate).with_context(|| format!("unusable certificate in {}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_standard_webhooks_says() {
        // The Standard Webhooks specification's own example.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let header = "v1,bm90IGl0 v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert!(verify(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, header));
        assert!(!verify(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, header));
    }

    #[test]
    fn the_source_is_a_crn_of_the_location() {
        let crn: qtrail_cadf::Crn = source("us-east").parse().unwrap();
        assert_eq!((crn.service_name(), crn.location(), crn.scope()), ("quantum-computing", "us-east", ""));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let cap = Duration::from_secs(60);
        for attempts in 1..40 {
            let wait = backoff(attempts, cap);
            let full = FIRST_BACKOFF.saturating_mul(1 << (attempts - 1).min(30)).min(cap);
            assert!(wait <= full && wait >= full / 2, "{attempts}: {wait:?}");
        }
    }

    #[tokio::test]
    async fn an_endless_answer_is_not_read_to_its_end() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
            let chunk = format!("{:x}\r\n{}\r\n", 8192, "x".repeat(8192));
            while socket.write_all(chunk.as_bytes()).await.is_ok() {}
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let request = axum::http::Request::post("/").header("host", "h").body(Full::new(Bytes::new())).unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(10), send(TokioIo::new(tcp), request)).await;
        assert_eq!(sent.expect("the answer's body kept the attempt"), Ok(200));
    }
}
