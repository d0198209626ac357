//! One tenant's upstream subscription: read it as fast as it comes, and
//! resume it from the last delivered position when it breaks.

use std::{sync::Arc, time::Duration};

use faro_proto::client::Traced;
use faro_proto::stream::v1::{
    Event, Position, SubscribeRequest, stream_service_client::StreamServiceClient,
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Streaming};

use super::{Hub, RESYNC, SHUTTING_DOWN};

/// Every location: the edge filters per client.
pub(super) async fn subscribe(
    client: &StreamServiceClient<Traced>,
    tenant: &str,
    since: Option<Position>,
) -> Result<Streaming<Event>, tonic::Status> {
    Ok(client
        .clone()
        .subscribe(SubscribeRequest {
            tenant_id: tenant.to_owned(),
            location_ids: Vec::new(),
            since,
        })
        .await?
        .into_inner())
}

/// How long a broken feed keeps trying to resume before its clients are told
/// to reload: a stream service restart takes seconds, not minutes.
const RESUME_FOR: Duration = Duration::from_secs(30);

pub(super) async fn run(
    hub: Arc<Hub>,
    tenant: String,
    mut stream: Streaming<Event>,
    stop: CancellationToken,
) {
    let mut last: Option<Position> = None;
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => {
                if hub.shutdown.is_cancelled() {
                    hub.end_tenant(&tenant, SHUTTING_DOWN);
                }
                return;
            }
            next = stream.message() => next,
        };
        match next {
            Ok(Some(event)) => {
                if !event.epoch.is_empty() {
                    last = Some(Position {
                        epoch: event.epoch.clone(),
                        offset: event.offset,
                    });
                }
                hub.dispatch(&tenant, &event);
            }
            Ok(None) if hub.shutdown.is_cancelled() => {
                hub.end_tenant(&tenant, SHUTTING_DOWN);
                return;
            }
            other => {
                let why = match &other {
                    Err(s) => format!("{:?}", s.code()),
                    _ => "ended".to_owned(),
                };
                tracing::info!(%tenant, why, "live feed broken; resuming from its last position");
                match resume(&hub, &tenant, last.clone(), &stop).await {
                    Some(s) => stream = s,
                    None => {
                        hub.end_tenant(&tenant, RESYNC);
                        return;
                    }
                }
            }
        }
    }
}

/// Subscribes again after `last`; `None` when that cannot be done without a
/// gap (no position yet, history lost) or the stream service stays away.
async fn resume(
    hub: &Hub,
    tenant: &str,
    last: Option<Position>,
    stop: &CancellationToken,
) -> Option<Streaming<Event>> {
    let last = last?;
    let deadline = tokio::time::Instant::now() + RESUME_FOR;
    let mut backoff = Duration::from_millis(50);
    loop {
        match subscribe(&hub.client, tenant, Some(last.clone())).await {
            Ok(s) => return Some(s),
            Err(s) if s.code() == Code::OutOfRange => return None,
            Err(s) => tracing::debug!(%tenant, code = ?s.code(), "live feed not resumed yet"),
        }
        if tokio::time::Instant::now() + backoff > deadline {
            return None;
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
