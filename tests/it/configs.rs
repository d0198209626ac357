//! The services' configurations as tests build them.

use std::net::SocketAddr;

use crate::cluster::{JWT_SECRET, redis_url};

/// The edge's connection and WebSocket limits, as tests set them.
#[derive(Clone, Copy)]
pub struct EdgeLimits {
    pub ws_write_timeout_ms: u64,
    pub ws_queue_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub first_byte_timeout_ms: u64,
    pub ws_ping_ms: u64,
    pub ws_typing_max: u32,
    pub ws_typing_window_ms: u64,
    /// What one client may hold (tests' agents share one `sub`: generous).
    pub client: faro_edge::ClientLimits,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            ws_write_timeout_ms: 10_000,
            ws_queue_bytes: 4 * 1024 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            first_byte_timeout_ms: 10_000,
            ws_ping_ms: 30_000,
            ws_typing_max: 10,
            ws_typing_window_ms: 5_000,
            client: faro_edge::ClientLimits {
                ws_per_agent: 1_000,
                rest_per_agent: 1_000,
                ..faro_edge::ClientLimits::default()
            },
        }
    }
}

/// The edge's configuration in tests, wired to the other services.
pub fn edge_config(
    conversations: SocketAddr,
    ingest: SocketAddr,
    stream: SocketAddr,
    limits: EdgeLimits,
) -> faro_edge::Config {
    faro_edge::Config {
        conversations_url: format!("http://{conversations}"),
        ingest_url: format!("http://{ingest}"),
        stream_url: format!("http://{stream}"),
        jwt_secret: JWT_SECRET.into(),
        max_body_bytes: 64 * 1024,
        drain_ms: 2_000,
        route_cache_ms: 30_000,
        ws_write_timeout_ms: limits.ws_write_timeout_ms,
        ws_queue_bytes: limits.ws_queue_bytes,
        max_connections: limits.max_connections,
        max_connections_per_ip: limits.max_connections_per_ip,
        trusted_proxies: faro_edge::TrustedProxies::default(),
        first_byte_timeout_ms: limits.first_byte_timeout_ms,
        jwt_issuer: None,
        jwt_audience: None,
        admin_token: None,
        ws_ping_ms: limits.ws_ping_ms,
        ws_typing_max: limits.ws_typing_max,
        ws_typing_window_ms: limits.ws_typing_window_ms,
        redis_url: redis_url(),
        // The cluster sets its own prefix; an edge built alone gets a fresh one.
        key_prefix: format!("faro-it-edge:{}:", uuid::Uuid::new_v4().simple()),
        rate_limits: rates_off(),
        client_limits: limits.client,
        tls: None,
    }
}

/// Rate limits off: most tests send more than a tenant's burst, or fail
/// verification on purpose from one address; `ratelimit.rs` turns them on.
pub fn rates_off() -> faro_edge::RateLimits {
    let off = faro_edge::Rate {
        per_minute: 0,
        burst: 0,
    };
    faro_edge::RateLimits {
        webhook: off,
        unverified: off,
        agent: off,
        ..faro_edge::RateLimits::default()
    }
}

pub fn ingest_config(prefix: &str, conversations_url: &str) -> faro_ingest::Config {
    faro_ingest::Config {
        redis_url: redis_url(),
        key_prefix: prefix.to_owned(),
        conversations_url: conversations_url.to_owned(),
        workers: 2,
        batch_size: 32,
        claim_idle_ms: 30_000,
        consumer_name: None,
        history_max_events: 10_000,
        history_max_age_secs: 3600,
        store_deadline_ms: 10_000,
        // Outages in tests last seconds: retry quickly, and long enough to outlast them.
        retry_attempts: 20,
        retry_base_ms: 50,
        retry_max_ms: 1_000,
        tls: None,
        // Replies go nowhere unless a test points them at its fake platform.
        send: faro_ingest::SendConfig {
            graph_base_url: "http://127.0.0.1:9".into(),
            ycloud_base_url: "http://127.0.0.1:9".into(),
            timeout_ms: 2_000,
            attempts: 3,
            retry_base_ms: 20,
            retry_max_ms: 200,
            ..faro_ingest::SendConfig::default()
        },
    }
}
