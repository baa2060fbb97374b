//! `qtrail alerts receive`: a small webhook receiver for demos and tests. It checks each
//! delivery's Standard Webhooks signature (and that its timestamp is within five minutes), answers
//! 401 to a bad one, and prints each good delivery as one JSON line: the `webhook-id`, the
//! timestamp and the CloudEvent.

use std::io::Write;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::cli::AlertReceiveArgs;
use crate::error::CliError;
use crate::output::write_json_line;

/// How far a delivery's timestamp may be from now (the Standard Webhooks default).
const TOLERANCE_SECS: u64 = 5 * 60;

#[derive(Clone)]
struct Receiver {
    key: Arc<Vec<u8>>,
    deliveries: mpsc::Sender<Value>,
}

/// Receives deliveries until Ctrl-C or `--count`.
///
/// # Errors
/// [`CliError::Usage`] for a bad secret or an address that cannot be bound.
pub(super) async fn receive(args: AlertReceiveArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let key = qtrail_collector::alerts::rule::secret_key(args.secret.expose())
        .map_err(|_| CliError::Usage("invalid --secret: `whsec_` and the base64 of 24 to 64 bytes".into()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|err| CliError::Usage(format!("cannot listen on {}: {err}", args.listen)))?;
    let addr = listener.local_addr()?;
    if let Some(file) = &args.addr_file {
        qtrail_server::addr_file::write(file, addr)
            .map_err(|err| CliError::Usage(format!("cannot write {}: {err}", file.display())))?;
    }
    eprintln!("receiving webhooks on http://{addr}/");
    let (deliveries, mut received) = mpsc::channel(64);
    let app = axum::Router::new().fallback(delivery).with_state(Receiver { key: Arc::new(key), deliveries });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut seen = 0;
    while args.count.is_none_or(|count| seen < count) {
        tokio::select! {
            line = received.recv() => {
                let Some(line) = line else { break };
                write_json_line(out, &line)?;
                out.flush()?;
                seen += 1;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    server.abort();
    Ok(())
}

async fn delivery(State(receiver): State<Receiver>, method: Method, headers: HeaderMap, body: Bytes) -> StatusCode {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED;
    }
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let (id, timestamp, signatures) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let Ok(timestamp) = timestamp.parse::<i64>() else {
        return StatusCode::UNAUTHORIZED;
    };
    if chrono::Utc::now().timestamp().abs_diff(timestamp) > TOLERANCE_SECS {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(body) = std::str::from_utf8(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if !qtrail_collector::alerts::webhook::verify(&receiver.key, id, timestamp, body, signatures) {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(event) = serde_json::from_str::<Value>(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let line = json!({ "webhookId": id, "timestamp": timestamp, "event": event });
    match receiver.deliveries.send(line).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timestamp_far_off_is_refused_without_overflow() {
        let (deliveries, _lines) = mpsc::channel(1);
        let receiver = Receiver { key: Arc::new(vec![7; 32]), deliveries };
        for timestamp in [i64::MIN, i64::MAX, 0] {
            let mut headers = HeaderMap::new();
            headers.insert("webhook-id", "msg_1".parse().unwrap());
            headers.insert("webhook-timestamp", timestamp.to_string().parse().unwrap());
            headers.insert("webhook-signature", "v1,AAAA".parse().unwrap());
            let status = delivery(State(receiver.clone()), Method::POST, headers, Bytes::from_static(b"{}")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{timestamp}");
        }
    }
}
