//! The edge: FARO's only public surface, on hyper 1 without a web framework.
//!
//! - `GET|POST /api/v1/webhooks/{whatsapp,facebook,instagram}`: Meta's
//!   subscription handshake and signed deliveries; `POST /api/v1/webhooks/ycloud`:
//!   YCloud's signed deliveries. A delivery is answered 200 only once ingest
//!   confirms the raw payload is in Redis.
//! - `GET /api/v1/messages/stream`: a WebSocket of live events for the tenant
//!   of a JWT, validated before the upgrade; agents send `ping` and `typing`
//!   frames on it.
//! - `GET /api/v1/messages/poll`, `GET /api/v1/messages/events`: long-poll and
//!   Server-Sent Events fallbacks, same JWT.
//! - `/api/v1/conversations...`: the inbox (list, search, read, edit, mark
//!   read) for an agent's JWT; see `inbox`.
//! - `POST /api/v1/conversations/{id}/messages`: an agent's reply (`replies`),
//!   stored and queued by ingest, sent by its reply workers.
//! - `GET /healthz`: liveness; `GET /api/v1/openapi.json`: the description of
//!   all of these (`docs/openapi.json`, checked against `router::ROUTES`).
//! - `/api/v1/admin/...`: the dead-letter queue and queue figures, for an
//!   operator holding `FARO_ADMIN_TOKEN` (absent without one); see `admin`.
//! - `GET /api/v1/webhooks/{health,stats,recent}`: diagnostics, for the same
//!   operator; see `diag`.
//! - `GET /metrics` on a separate operator listener (`run_with_metrics`),
//!   never on the public one; see `metrics`.
//!
//! The edge holds no state of its own: routing data comes from conversations,
//! queueing from ingest and live events from stream, all over gRPC. Its one
//! direct use of Redis is the rate limits every replica shares (`ratelimit`).

mod access;
mod admin;
pub mod auth;
mod client_addr;
mod config;
mod conn_limits;
mod diag;
mod error;
mod events;
mod inbox;
mod limits;
mod live;
mod message_frame;
mod metrics;
mod ratelimit;
mod replies;
mod router;
mod routes;
mod server;
mod signature;
mod webhook;
mod ws;

use std::{sync::Arc, time::Duration};

use faro_proto::client::Traced;
use faro_proto::{
    conversations::v1::conversations_service_client::ConversationsServiceClient,
    ingest::v1::{
        ingest_service_client::IngestServiceClient, send_service_client::SendServiceClient,
    },
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use client_addr::TrustedProxies;
pub use config::Config;
pub use error::Error;
pub use limits::ClientLimits;
pub use ratelimit::{Rate, RateLimits};
pub use signature::{sign as sign_meta_payload, sign_ycloud};

/// What every request handler shares.
pub(crate) struct State {
    pub config: Config,
    pub jwt: auth::JwtKeys,
    pub conversations: ConversationsServiceClient<Traced>,
    pub ingest: IngestServiceClient<Traced>,
    /// Agents' replies: ingest stores, announces and queues them.
    pub send: SendServiceClient<Traced>,
    pub live: Arc<live::Hub>,
    /// Where conversations are, for agents' typing indicators.
    pub conversation_locations: Arc<ws::ConversationLocations>,
    pub routes: routes::RouteCache,
    /// Whether agents' tenants and agents are enabled, cached like the routes.
    pub access: access::AccessCache,
    /// Bounds the work done for webhooks whose signature is not verified yet.
    pub unverified: webhook::UnverifiedLimit,
    /// Rate limits shared with the other replicas through Redis.
    pub limiter: ratelimit::Limiter,
    /// WebSockets and requests in progress per tenant and agent, on this edge.
    pub slots: limits::AgentSlots,
    pub shutdown: CancellationToken,
    pub metrics: metrics::Metrics,
    /// Figures for the diagnostics, flushed to Redis (off without metrics).
    pub diag: faro_proto::diag::Diag,
    /// ingest, conversations and stream, for the health check.
    pub upstreams: [tonic::transport::Channel; 3],
}

impl State {
    /// An agent's JWT, validated, its tenant and agent enabled (within the
    /// access cache's TTL), and one of its requests spent.
    pub(crate) async fn agent_claims(&self, token: &str) -> Result<auth::Claims, error::ApiError> {
        let claims = self.jwt.validate(token)?;
        self.access.check(&self.conversations, &claims).await?;
        self.limiter
            .agent(&claims.tenant_id.to_string(), &claims.sub)
            .await?;
        Ok(claims)
    }
}

/// The first value of a query parameter, decoded.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A lazily connected channel built by the shared helper (connect timeout,
/// keep-alive, a deadline on every call; for the stream, on its opening).
fn channel(name: &str, url: &str, config: &Config) -> Result<tonic::transport::Channel, Error> {
    faro_proto::client::channel(name, url, UPSTREAM_TIMEOUT, config.tls.as_ref())
        .map_err(Error::Config)
}

/// A webhook waits at most this long on conversations or ingest; then it is a
/// 503 and Meta retries, rather than a connection held open indefinitely.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP and WebSocket on `listener` until `shutdown` fires, then stops
/// accepting, closes WebSockets with 1001 and drains requests in flight.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    run_with_metrics(config, listener, None, shutdown).await
}

/// [`run`], and `GET /metrics` (Prometheus text) on `metrics`, an operator
/// listener apart from the public one. Without it nothing is recorded: the
/// Prometheus figures and the diagnostics' counts (`diag`) are both off, so
/// that their cost can be measured (docs/BENCHMARKS.md); the diagnostics
/// routes still read what other processes recorded.
pub async fn run_with_metrics(
    config: Config,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate()?;
    let mut registry = faro_proto::metrics::Registry::default();
    let recorded = metrics::Metrics::new(&mut registry, metrics.is_some());
    let diag = match metrics {
        Some(_) => faro_proto::diag::Diag::start(&config.redis_url, &config.key_prefix)
            .map_err(Error::Config)?,
        None => faro_proto::diag::Diag::off(),
    };
    if let Some(l) = metrics {
        tokio::spawn(faro_proto::metrics::serve(
            Arc::new(registry),
            None,
            l,
            shutdown.clone(),
        ));
    }
    let upstreams = [
        channel("ingest", &config.ingest_url, &config)?,
        channel("conversations", &config.conversations_url, &config)?,
        channel("stream", &config.stream_url, &config)?,
    ];
    let conversations = faro_proto::client::conversations(upstreams[1].clone());
    let state = Arc::new(State {
        jwt: auth::JwtKeys::with_scope(
            config.jwt_secret.as_bytes(),
            config.jwt_issuer.as_deref(),
            config.jwt_audience.as_deref(),
        )?,
        conversation_locations: Arc::new(ws::ConversationLocations::new(conversations.clone())),
        conversations,
        ingest: faro_proto::client::ingest(upstreams[0].clone()),
        send: faro_proto::client::send(upstreams[0].clone()),
        live: live::Hub::new(
            faro_proto::client::stream(upstreams[2].clone()),
            config.ws_queue_bytes,
            recorded.clone(),
            shutdown.clone(),
        ),
        routes: routes::RouteCache::new(config.route_cache_ttl()),
        access: access::AccessCache::new(config.route_cache_ttl()),
        unverified: webhook::UnverifiedLimit::default(),
        limiter: ratelimit::Limiter::new(
            &config.redis_url,
            &config.key_prefix,
            config.rate_limits,
        )?,
        slots: limits::AgentSlots::new(&config.client_limits),
        shutdown: shutdown.clone(),
        metrics: recorded,
        diag,
        upstreams,
        config,
    });
    state.limiter.connect(shutdown.clone());
    tracing::info!(addr = ?listener.local_addr().ok(), "edge listening");
    let served = server::serve(state.clone(), listener, shutdown).await;
    // Drained: what the last requests counted is written before the end.
    state.diag.close().await;
    served
}
