//! Running a set of services in one process, and stopping them in stages.

mod start;

pub use start::{run, run_until, signal};

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, ValueEnum};
use faro_proto::mtls::{Identity, Tls};
use tokio::{
    net::{TcpListener, TcpSocket},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Service {
    Edge,
    Ingest,
    Conversations,
    Stream,
}

/// Every service's settings. Each service reads only its own; what a service
/// needs and lacks is reported when it starts.
#[derive(Args, Clone)]
pub struct ServeArgs {
    #[arg(
        long = "edge-listen",
        env = "FARO_EDGE_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub edge_listen: SocketAddr,
    #[arg(
        long = "ingest-listen",
        env = "FARO_INGEST_LISTEN",
        default_value = "127.0.0.1:7101"
    )]
    pub ingest_listen: SocketAddr,
    #[arg(
        long = "conversations-listen",
        env = "FARO_CONVERSATIONS_LISTEN",
        default_value = "127.0.0.1:7102"
    )]
    pub conversations_listen: SocketAddr,
    #[arg(
        long = "stream-listen",
        env = "FARO_STREAM_LISTEN",
        default_value = "127.0.0.1:7103"
    )]
    pub stream_listen: SocketAddr,

    /// Operator listener for the edge's `GET /metrics` (Prometheus text),
    /// apart from its public port; unset, not served.
    #[arg(long = "edge-metrics-listen", env = "FARO_EDGE_METRICS_LISTEN")]
    pub edge_metrics_listen: Option<SocketAddr>,
    /// Operator listener for ingest's `GET /metrics`; unset, not served.
    #[arg(long = "ingest-metrics-listen", env = "FARO_INGEST_METRICS_LISTEN")]
    pub ingest_metrics_listen: Option<SocketAddr>,
    /// Operator listener for conversations' `GET /metrics`; unset, not served.
    #[arg(
        long = "conversations-metrics-listen",
        env = "FARO_CONVERSATIONS_METRICS_LISTEN"
    )]
    pub conversations_metrics_listen: Option<SocketAddr>,
    /// Operator listener for stream's `GET /metrics`; unset, not served.
    #[arg(long = "stream-metrics-listen", env = "FARO_STREAM_METRICS_LISTEN")]
    pub stream_metrics_listen: Option<SocketAddr>,

    /// gRPC URL of the ingest service (used by the edge).
    #[arg(
        long = "ingest-url",
        env = "FARO_INGEST_URL",
        default_value = "http://127.0.0.1:7101"
    )]
    pub ingest_url: String,
    /// gRPC URL of the conversations service (used by the edge and ingest).
    #[arg(
        long = "conversations-url",
        env = "FARO_CONVERSATIONS_URL",
        default_value = "http://127.0.0.1:7102"
    )]
    pub conversations_url: String,
    /// gRPC URL of the stream service (used by the edge).
    #[arg(
        long = "stream-url",
        env = "FARO_STREAM_URL",
        default_value = "http://127.0.0.1:7103"
    )]
    pub stream_url: String,

    /// Postgres URL of the database owner (migrations); the service itself
    /// connects as faro_app unless FARO_APP_DATABASE_URL says otherwise.
    #[arg(long = "database-url", env = "DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long = "app-database-url", env = "FARO_APP_DATABASE_URL")]
    pub app_database_url: Option<String>,
    /// Run migrations before starting conversations.
    #[arg(long = "migrate", env = "FARO_MIGRATE")]
    pub migrate: bool,
    /// `<key-id>:<base64 of 32 bytes>`, comma separated; the first seals.
    #[arg(
        long = "encryption-keys",
        env = "FARO_ENCRYPTION_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub encryption_keys: Vec<String>,
    #[arg(
        long = "db-max-connections",
        env = "FARO_DB_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub db_max_connections: u32,
    /// Hours an event may wait for its message before it is dropped.
    #[arg(
        long = "pending-ttl-hours",
        env = "FARO_PENDING_TTL_HOURS",
        default_value_t = 168
    )]
    pub pending_ttl_hours: u64,
    /// Postgres URL of the pending-event sweeper (role faro_sweeper); default
    /// DATABASE_URL with that user.
    #[arg(
        long = "sweeper-database-url",
        env = "FARO_SWEEPER_DATABASE_URL",
        hide_env_values = true
    )]
    pub sweeper_database_url: Option<String>,

    #[arg(
        long = "redis-url",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Prefix of every Redis key, so deployments can share a Redis.
    #[arg(
        long = "redis-prefix",
        env = "FARO_REDIS_PREFIX",
        default_value = "faro:"
    )]
    pub redis_prefix: String,
    #[arg(
        long = "ingest-workers",
        env = "FARO_INGEST_WORKERS",
        default_value_t = 2
    )]
    pub ingest_workers: usize,
    #[arg(long = "ingest-batch", env = "FARO_INGEST_BATCH", default_value_t = 64)]
    pub ingest_batch: usize,
    /// A pending job idle this long (ms) is reclaimed from its (presumed dead) worker.
    #[arg(
        long = "claim-idle-ms",
        env = "FARO_CLAIM_IDLE_MS",
        default_value_t = 30_000
    )]
    pub claim_idle_ms: u64,
    #[arg(long = "consumer-name", env = "FARO_CONSUMER_NAME")]
    pub consumer_name: Option<String>,
    /// Deadline (ms) of each store call from ingest to conversations;
    /// claim-idle-ms must exceed twice this (one pass may call twice).
    #[arg(
        long = "store-deadline-ms",
        env = "FARO_STORE_DEADLINE_MS",
        default_value_t = 10_000
    )]
    pub store_deadline_ms: u64,
    /// Attempts a job gets before a transient failure dead-letters it.
    #[arg(
        long = "retry-attempts",
        env = "FARO_RETRY_ATTEMPTS",
        default_value_t = 5
    )]
    pub retry_attempts: u32,
    /// Cap (ms) of the first retry's delay, doubled on each further retry
    /// (full jitter): the defaults spread 5 attempts over about 4 minutes.
    #[arg(
        long = "retry-base-ms",
        env = "FARO_RETRY_BASE_MS",
        default_value_t = 15_000
    )]
    pub retry_base_ms: u64,
    /// The longest a retry waits (ms).
    #[arg(
        long = "retry-max-ms",
        env = "FARO_RETRY_MAX_MS",
        default_value_t = 300_000
    )]
    pub retry_max_ms: u64,
    #[arg(
        long = "subscriber-buffer",
        env = "FARO_SUBSCRIBER_BUFFER",
        default_value_t = 1024
    )]
    pub subscriber_buffer: usize,
    /// Each tenant's event history (for clients resuming from a position):
    /// at most this many events (ingest keeps it, stream reads it).
    #[arg(
        long = "history-max-events",
        env = "FARO_HISTORY_MAX_EVENTS",
        default_value_t = 10_000
    )]
    pub history_max_events: u64,
    /// ...and none older than this (seconds): a laptop asleep for an hour resumes.
    #[arg(
        long = "history-max-age-secs",
        env = "FARO_HISTORY_MAX_AGE_SECS",
        default_value_t = 3600
    )]
    pub history_max_age_secs: u64,

    /// HS256 secret for agents' JWTs, at least 32 bytes.
    #[arg(long = "jwt-secret", env = "FARO_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    #[arg(long = "max-body-bytes", env = "FARO_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,
    #[arg(long = "drain-ms", env = "FARO_DRAIN_MS", default_value_t = 10_000)]
    pub drain_ms: u64,
    /// How long the edge caches webhook routes and app secrets (ms); 0 disables.
    #[arg(
        long = "route-cache-ms",
        env = "FARO_ROUTE_CACHE_MS",
        default_value_t = 30_000
    )]
    pub route_cache_ms: u64,
    /// A WebSocket write slower than this (ms) drops the client.
    #[arg(
        long = "ws-write-timeout-ms",
        env = "FARO_WS_WRITE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub ws_write_timeout_ms: u64,
    /// Bytes of events queued for one WebSocket before it is closed with 4002.
    #[arg(long = "ws-queue-bytes", env = "FARO_WS_QUEUE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub ws_queue_bytes: usize,
    /// Open connections the edge holds at most.
    #[arg(
        long = "max-connections",
        env = "FARO_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_connections: usize,
    /// Open connections from one IP address at most.
    #[arg(
        long = "max-connections-per-ip",
        env = "FARO_MAX_CONNECTIONS_PER_IP",
        default_value_t = 1_000
    )]
    pub max_connections_per_ip: usize,
    /// Load balancers in front of the edge (addresses or CIDR networks,
    /// comma-separated): exempt from the per-address connection cap, and
    /// believed about the client in `X-Forwarded-For`. Unset, nobody is.
    #[arg(
        long = "trusted-proxies",
        env = "FARO_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_trusted_proxy
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A new connection must send its first byte within this many ms.
    #[arg(
        long = "first-byte-timeout-ms",
        env = "FARO_FIRST_BYTE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub first_byte_timeout_ms: u64,
    /// When set, agents' JWTs must carry this issuer (`iss`).
    #[arg(long = "jwt-issuer", env = "FARO_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// When set, agents' JWTs must carry this audience (`aud`).
    #[arg(long = "jwt-audience", env = "FARO_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The edge pings each WebSocket this often (ms) and drops one silent for twice as long.
    #[arg(long = "ws-ping-ms", env = "FARO_WS_PING_MS", default_value_t = 30_000)]
    pub ws_ping_ms: u64,
    /// Typing frames one WebSocket may send per window; the excess is dropped.
    #[arg(
        long = "ws-typing-max",
        env = "FARO_WS_TYPING_MAX",
        default_value_t = 10
    )]
    pub ws_typing_max: u32,
    /// The window of `ws-typing-max` (ms).
    #[arg(
        long = "ws-typing-window-ms",
        env = "FARO_WS_TYPING_WINDOW_MS",
        default_value_t = 5_000
    )]
    pub ws_typing_window_ms: u64,
    /// Bearer token for the edge's /api/v1/admin/ routes (at least 32 bytes);
    /// unset, those routes do not exist.
    #[arg(long = "admin-token", env = "FARO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub rates: crate::rate_args::RateArgs,
    #[command(flatten)]
    pub client_limits: crate::limits::ClientLimitArgs,
    #[command(flatten)]
    pub send: crate::send_args::SendArgs,

    #[command(flatten)]
    pub tls: crate::mtls::TlsArgs,
}

impl ServeArgs {
    pub fn edge(&self) -> anyhow::Result<faro_edge::Config> {
        let config = faro_edge::Config {
            conversations_url: self.conversations_url.clone(),
            ingest_url: self.ingest_url.clone(),
            stream_url: self.stream_url.clone(),
            jwt_secret: self
                .jwt_secret
                .clone()
                .context("the edge needs FARO_JWT_SECRET")?,
            max_body_bytes: self.max_body_bytes,
            drain_ms: self.drain_ms,
            route_cache_ms: self.route_cache_ms,
            ws_write_timeout_ms: self.ws_write_timeout_ms,
            ws_queue_bytes: self.ws_queue_bytes,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            trusted_proxies: faro_edge::TrustedProxies::new(self.trusted_proxies.clone()),
            first_byte_timeout_ms: self.first_byte_timeout_ms,
            jwt_issuer: self.jwt_issuer.clone(),
            jwt_audience: self.jwt_audience.clone(),
            ws_ping_ms: self.ws_ping_ms,
            ws_typing_max: self.ws_typing_max,
            ws_typing_window_ms: self.ws_typing_window_ms,
            admin_token: self.admin_token.clone(),
            redis_url: self.redis_url.clone(),
            key_prefix: self.redis_prefix.clone(),
            rate_limits: self.rates.limits(),
            client_limits: self.client_limits.edge(),
            tls: self.tls.load()?,
        };
        calls_as(&config.tls, Identity::Edge)?;
        config.validate()?;
        Ok(config)
    }

    pub fn ingest(&self) -> anyhow::Result<faro_ingest::Config> {
        let config = faro_ingest::Config {
            redis_url: self.redis_url.clone(),
            key_prefix: self.redis_prefix.clone(),
            conversations_url: self.conversations_url.clone(),
            workers: self.ingest_workers,
            batch_size: self.ingest_batch,
            claim_idle_ms: self.claim_idle_ms,
            consumer_name: self.consumer_name.clone(),
            history_max_events: self.history_max_events,
            history_max_age_secs: self.history_max_age_secs,
            store_deadline_ms: self.store_deadline_ms,
            retry_attempts: self.retry_attempts,
            retry_base_ms: self.retry_base_ms,
            retry_max_ms: self.retry_max_ms,
            tls: self.tls.load()?,
            send: self.send.config(),
        };
        calls_as(&config.tls, Identity::Ingest)?;
        config.validate()?;
        Ok(config)
    }

    pub fn conversations(&self) -> anyhow::Result<faro_conversations::Config> {
        let config = faro_conversations::Config {
            database_url: self
                .database_url
                .clone()
                .context("conversations needs DATABASE_URL")?,
            app_database_url: self.app_database_url.clone(),
            encryption_keys: self.encryption_keys.clone(),
            db_max_connections: self.db_max_connections,
            pending_ttl: std::time::Duration::from_secs(
                self.pending_ttl_hours.saturating_mul(3600),
            ),
            sweeper_database_url: self.sweeper_database_url.clone(),
            tls: self.tls.load()?,
        };
        faro_conversations::SecretBox::from_specs(&config.encryption_keys)
            .context("FARO_ENCRYPTION_KEYS")?;
        Ok(config)
    }

    pub fn stream(&self) -> anyhow::Result<faro_stream::Config> {
        let config = faro_stream::Config {
            redis_url: self.redis_url.clone(),
            key_prefix: self.redis_prefix.clone(),
            subscriber_buffer: self.subscriber_buffer,
            history_max_events: self.history_max_events,
            history_max_age_secs: self.history_max_age_secs,
            tls: self.tls.load()?,
        };
        config.validate()?;
        Ok(config)
    }
}

/// The edge and ingest call other services with the process's certificate,
/// and are authorized by the identity it names: with another one every call
/// would be refused, so the process does not start. (Hence, under mTLS, the
/// edge and ingest never share a process.)
fn calls_as(tls: &Option<Tls>, needed: Identity) -> anyhow::Result<()> {
    match tls {
        Some(tls) if tls.identity() != needed => anyhow::bail!(
            "the {needed} calls other services as itself: it needs a certificate naming \
             spiffe://faro/{needed}, and --tls-cert names spiffe://faro/{}; under mTLS run \
             the edge and ingest as separate processes",
            tls.identity()
        ),
        _ => Ok(()),
    }
}

fn parse_trusted_proxy(s: &str) -> Result<ipnet::IpNet, String> {
    faro_edge::TrustedProxies::parse_net(s).map_err(|e| e.to_string())
}
