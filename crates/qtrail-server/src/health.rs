//! The client side of gRPC health: whether a server is ready. Used by `qtrail up` and the
//! end-to-end harness to wait for servers they start.

use std::time::Duration;

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
    let Ok(endpoint) = tls.endpoint(url) else {
        return false;
    };
    let Ok(channel) = endpoint.connect_timeout(Duration::from_secs(1)).timeout(Duration::from_secs(1)).connect().await
    else {
        return false;
    };
    let response = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
    response.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

/// Polls [`is_serving`] until it holds or `timeout` passes; returns whether it held.
pub async fn wait_serving(url: &str, timeout: Duration) -> bool {
    crate::poll::holds(timeout, || is_serving(url)).await
}

/// Polls [`is_serving_over`] until it holds or `timeout` passes; returns whether it held.
pub async fn wait_serving_over(url: &str, tls: &ClientTls, timeout: Duration) -> bool {
    crate::poll::holds(timeout, || is_serving_over(url, tls)).await
}
