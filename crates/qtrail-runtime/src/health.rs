//! Health as callers and load balancers see it: the runtime's services are SERVING only while
//! they can answer calls.
//!
//! No call is answered without its audit event, so once the outbox is full, or cannot be read
//! at all (the store failed), every call is refused UNAVAILABLE. A small task reads the outbox's
//! depth and reports NOT_SERVING for both services until it drains, so a load balancer sends
//! callers elsewhere instead of to a runtime that can only refuse them. Hostile programs cannot
//! starve this task: parsing is bounded and runs on blocking threads, never on the async ones.

use std::time::Duration;

use qtrail_proto::qtrail::runtime::v1::job_service_server::JobServiceServer;
use qtrail_proto::qtrail::runtime::v1::program_service_server::ProgramServiceServer;
use qtrail_publisher::Outbox;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::grpc::Grpc;

/// How often the outbox is looked at: a second of SERVING while full costs callers only
/// refusals they would get anyway.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Reports SERVING or NOT_SERVING for both services as the outbox fills and drains, until
/// `stop` is cancelled (then the caller reports NOT_SERVING for the shutdown).
pub async fn watch(health: HealthReporter, outbox: Outbox, stop: CancellationToken) {
    let mut interval = tokio::time::interval(CHECK_INTERVAL);
    let mut serving = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let now = can_serve(&outbox);
        if serving == Some(now) {
            continue;
        }
        if stop.is_cancelled() {
            return;
        }
        if now {
            health.set_serving::<ProgramServiceServer<Grpc>>().await;
            health.set_serving::<JobServiceServer<Grpc>>().await;
            if serving.is_some() {
                info!("audit outbox has room again, serving");
            }
        } else {
            health.set_not_serving::<ProgramServiceServer<Grpc>>().await;
            health.set_not_serving::<JobServiceServer<Grpc>>().await;
            warn!("audit outbox full or unreadable, calls are refused: health is not serving");
        }
        serving = Some(now);
    }
}

/// Returns whether a call's event would fit the outbox.
fn can_serve(outbox: &Outbox) -> bool {
    let limits = outbox.limits();
    match outbox.depth() {
        Ok(depth) => depth.events < limits.max_events && depth.bytes < limits.max_bytes,
        Err(err) => {
            warn!(error = %err, "cannot read the outbox depth for health");
            false
        }
    }
}
