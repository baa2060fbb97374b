//! The client side of gRPC health: whether a server is ready. Used by `qtrail up` and the
//! end-to-end harness to wait for servers they start.

use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::tls::ClientTls;

/// Returns true when the server at `url` (e.g. `http://127.0.0.1:7400`) answers the overall
/// `grpc.health.v1.Health/Check` with SERVING within about a second.
pub async fn is_serving(url: &str) -> bool {
    is_serving_over(url, &ClientTls::default()).await
}

/// As [`is_serving`], for a server reached with `tls` (an `https://` URL).
pub async fn is_serving_over(url: &str, tls: &ClientTls) -> bool {
    match tls.endpoint(url) {
        Ok(endpoint) => endpoint_is_serving(endpoint).await,
        Err(_) => false,
    }
}

async fn endpoint_is_serving(endpoint: Endpoint) -> bool {
    let Ok(channel) = endpoint.connect_timeout(Duration::from_secs(1)).timeout(Duration::from_secs(1)).connect().await
    else {
        return false;
    };
    let response = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
    response.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

/// Polls [`is_serving`] until it holds or `timeout` passes; returns whether it held.
pub async fn wait_serving(url: &str, timeout: Duration) -> bool {
    wait_serving_over(url, &ClientTls::default(), timeout).await
}

/// Polls [`is_serving_over`] until it holds or `timeout` passes; returns whether it held. The
/// TLS files are read once, not at every poll.
pub async fn wait_serving_over(url: &str, tls: &ClientTls, timeout: Duration) -> bool {
    let Ok(endpoint) = tls.endpoint(url) else {
        return false;
    };
    crate::poll::holds(timeout, || endpoint_is_serving(endpoint.clone())).await
}
