//! `GET /api/v1/webhooks/health`: each part a webhook needs, checked at once
//! and each within [`CHECK_TIMEOUT`]: Redis (the edge's own connection),
//! Postgres (a routing lookup through conversations, since only
//! conversations talks to Postgres), the gRPC health of ingest,
//! conversations and stream, and the queue (ingest's `QueueStats`: depth,
//! pending, oldest pending age, workers alive: down when jobs wait and no
//! worker reads them). 200 when every part is `ok`
//! or `degraded`, 503 when one is `down`; the body names each part's state.

use std::time::{Duration, Instant};

use faro_proto::{conversations::v1::ResolveChannelAccountsRequest, ingest::v1::QueueStatsRequest};
use fred::interfaces::ClientLike;
use http::StatusCode;
use serde_json::{Map, Value as Json, json};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::State;

/// The longest one check may take; past it, its part is `down`.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A worker blocks on its read for a second at a time: one idle for longer
/// than this is taken for dead (the group keeps dead consumers' names).
/// Redis creates a consumer at its first job, so a queue that never had one
/// shows none: the queue is `down` only when jobs wait and no worker read.
const WORKER_IDLE_MS: u64 = 30_000;

/// Pending jobs older than this make the queue `degraded` (not `down`: it
/// still takes webhooks).
const OLDEST_PENDING_DEGRADED_MS: u64 = 60_000;

fn part(status: &str, started: Instant, mut extra: Map<String, Json>) -> Json {
    extra.insert("status".into(), status.into());
    extra.insert(
        "latency_ms".into(),
        json!((started.elapsed().as_secs_f64() * 1e6).round() / 1e3),
    );
    extra.into()
}

fn down(started: Instant, error: impl std::fmt::Display) -> Json {
    let mut m = Map::new();
    m.insert("error".into(), error.to_string().into());
    part("down", started, m)
}

async fn timed<F, T, E>(f: F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}

async fn redis(state: &State) -> Json {
    let started = Instant::now();
    let client = state.limiter.redis();
    if !client.is_connected() {
        return down(started, "not connected");
    }
    match timed(client.ping::<String>(None)).await {
        Ok(_) => part("ok", started, Map::new()),
        Err(e) => down(started, e),
    }
}

async fn postgres(state: &State) -> Json {
    let started = Instant::now();
    let mut conversations = state.conversations.clone();
    let lookup = conversations.resolve_channel_accounts(ResolveChannelAccountsRequest {
        channel: faro_proto::conversations::v1::Channel::Whatsapp.into(),
        external_account_ids: vec!["faro-health-probe".into()],
    });
    match timed(lookup).await {
        Ok(_) => part("ok", started, Map::new()),
        Err(e) => down(started, e),
    }
}

async fn grpc_health(channel: tonic::transport::Channel) -> Json {
    let started = Instant::now();
    let mut client = HealthClient::new(channel);
    match timed(client.check(HealthCheckRequest::default())).await {
        Ok(r) if r.get_ref().status() == ServingStatus::Serving => part("ok", started, Map::new()),
        Ok(r) => down(
            started,
            format!("health says {:?}", r.get_ref().status().as_str_name()),
        ),
        Err(e) => down(started, e),
    }
}

async fn queue(state: &State) -> Json {
    let started = Instant::now();
    let stats = match timed(state.ingest.clone().queue_stats(QueueStatsRequest {})).await {
        Ok(r) => r.into_inner(),
        Err(e) => return down(started, e),
    };
    let alive = stats
        .consumers
        .iter()
        .filter(|c| c.idle_ms < WORKER_IDLE_MS)
        .count();
    let waiting = stats.stream_length > 0 || stats.pending > 0;
    let status = if alive == 0 && waiting {
        "down"
    } else if stats.oldest_pending_age_ms > OLDEST_PENDING_DEGRADED_MS {
        "degraded"
    } else {
        "ok"
    };
    let figures = json!({
        "depth": stats.stream_length,
        "pending": stats.pending,
        "oldest_pending_age_ms": stats.oldest_pending_age_ms,
        "scheduled_retries": stats.scheduled_retries,
        "dead_letters": stats.dead_letters,
        "consumers": stats.consumers.len(),
        "workers_alive": alive,
    });
    let mut m = figures.as_object().cloned().unwrap_or_default();
    if alive == 0 && waiting {
        m.insert(
            "error".into(),
            format!(
                "jobs wait and no worker read the queue in the last {} s",
                WORKER_IDLE_MS / 1000
            )
            .into(),
        );
    }
    part(status, started, m)
}

/// The answer's status and body.
pub(crate) async fn health(state: &State) -> (StatusCode, Json) {
    let [ingest, conversations, stream] = state.upstreams.clone();
    let (redis, postgres, queue, ingest, conversations, stream) = tokio::join!(
        redis(state),
        postgres(state),
        queue(state),
        grpc_health(ingest),
        grpc_health(conversations),
        grpc_health(stream),
    );
    let parts = json!({
        "redis": redis,
        "postgres": postgres,
        "queue": queue,
        "ingest": ingest,
        "conversations": conversations,
        "stream": stream,
    });
    let states: Vec<&str> = parts
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|p| p["status"].as_str())
        .collect();
    let (code, overall) = if states.contains(&"down") {
        (StatusCode::SERVICE_UNAVAILABLE, "down")
    } else if states.contains(&"degraded") {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    let body = json!({
        "status": overall,
        "checked_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "components": parts,
    });
    (code, body)
}
