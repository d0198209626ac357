use std::time::Duration;

use crate::Error;

/// Configuration of the edge.
#[derive(Clone)]
pub struct Config {
    pub conversations_url: String,
    pub ingest_url: String,
    pub stream_url: String,

    /// HS256 secret for agents' JWTs; at least 32 bytes.
    pub jwt_secret: String,

    /// Largest webhook body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,

    /// How long shutdown waits for requests in flight, in milliseconds.
    pub drain_ms: u64,

    /// How long webhook routes (and app secrets) are cached, in milliseconds;
    /// 0 disables the cache. A failed signature always re-asks.
    pub route_cache_ms: u64,

    /// A WebSocket write that takes longer than this drops the client, in
    /// milliseconds.
    pub ws_write_timeout_ms: u64,

    /// Bytes of events queued for one WebSocket before it is closed with 4002.
    pub ws_queue_bytes: usize,

    /// Open connections at most; beyond it the edge stops accepting (the
    /// kernel's backlog holds the rest) until one closes.
    pub max_connections: usize,

    /// Open connections from one IP address at most; more are closed at once.
    /// Behind a load balancer every client has its address: set it to
    /// `max_connections` there.
    pub max_connections_per_ip: usize,

    /// Load balancers and proxies in front of the edge: their connections are
    /// exempt from the per-address cap, and per-address budgets go by the
    /// client they name in `X-Forwarded-For`.
    pub trusted_proxies: crate::TrustedProxies,

    /// A connection must send its first byte within this many milliseconds.
    pub first_byte_timeout_ms: u64,
    /// When set, agents' JWTs must carry this `iss`.
    pub jwt_issuer: Option<String>,

    /// When set, agents' JWTs must carry this `aud`; when unset, a token
    /// naming any audience is refused.
    pub jwt_audience: Option<String>,

    /// The edge pings each WebSocket this often (milliseconds) and drops one
    /// silent for twice as long.
    pub ws_ping_ms: u64,

    /// Typing frames one WebSocket may send per `ws_typing_window_ms`; the
    /// excess is dropped (with one `rate_limited` error frame per window).
    pub ws_typing_max: u32,

    /// The window of `ws_typing_max`, in milliseconds.
    pub ws_typing_window_ms: u64,

    /// The operator's bearer token for `/api/v1/admin/` (at least 32 bytes,
    /// not the JWT secret); unset, those routes answer 404.
    pub admin_token: Option<String>,

    /// Redis holding the rate limits every replica shares; the edge starts
    /// without it (see `ratelimit`).
    pub redis_url: String,
    /// Prefix of every Redis key, as for ingest and stream.
    pub key_prefix: String,
    pub rate_limits: crate::RateLimits,
    /// What one client may make the edge hold (`crate::limits`).
    pub client_limits: crate::ClientLimits,
    /// mTLS material for serving and for calling the other services;
    /// `None` is plaintext, which the `faro` binary allows only when told to.
    pub tls: Option<faro_proto::mtls::Tls>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("conversations_url", &self.conversations_url)
            .field("ingest_url", &self.ingest_url)
            .field("stream_url", &self.stream_url)
            .field("tls", &self.tls)
            .field("jwt_secret", &"<redacted>")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("drain_ms", &self.drain_ms)
            .field("route_cache_ms", &self.route_cache_ms)
            .field("ws_write_timeout_ms", &self.ws_write_timeout_ms)
            .field("ws_queue_bytes", &self.ws_queue_bytes)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("first_byte_timeout_ms", &self.first_byte_timeout_ms)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("ws_ping_ms", &self.ws_ping_ms)
            .field("ws_typing_max", &self.ws_typing_max)
            .field("ws_typing_window_ms", &self.ws_typing_window_ms)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("redis_url", &"<redacted>")
            .field("key_prefix", &self.key_prefix)
            .field("rate_limits", &self.rate_limits)
            .field("client_limits", &self.client_limits)
            .finish()
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), Error> {
        if self.jwt_secret.len() < 32 {
            return Err(Error::Config(
                "FARO_JWT_SECRET must be at least 32 bytes".into(),
            ));
        }
        for (name, v) in [
            ("FARO_JWT_ISSUER", &self.jwt_issuer),
            ("FARO_JWT_AUDIENCE", &self.jwt_audience),
        ] {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(Error::Config(format!("{name} must not be empty when set")));
            }
        }
        if let Some(t) = &self.admin_token {
            if t.len() < 32 {
                return Err(Error::Config(
                    "FARO_ADMIN_TOKEN must be at least 32 bytes when set".into(),
                ));
            }
            if *t == self.jwt_secret {
                return Err(Error::Config(
                    "FARO_ADMIN_TOKEN must differ from FARO_JWT_SECRET".into(),
                ));
            }
        }
        let max = faro_proto::MAX_WEBHOOK_BYTES;
        if !(1024..=max).contains(&self.max_body_bytes) {
            return Err(Error::Config(format!(
                "max-body-bytes must be between 1024 and {max} (what ingest accepts)"
            )));
        }
        for (name, url) in [
            ("conversations", &self.conversations_url),
            ("ingest", &self.ingest_url),
            ("stream", &self.stream_url),
        ] {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(Error::Config(format!(
                    "{name} url must be http(s)://, got {url:?}"
                )));
            }
        }
        if self.ws_ping_ms < 100 {
            return Err(Error::Config("ws-ping-ms must be at least 100".into()));
        }
        if !(1..=1_000).contains(&self.ws_typing_max)
            || !(100..=3_600_000).contains(&self.ws_typing_window_ms)
        {
            return Err(Error::Config(
                "ws-typing-max must be 1..=1000 and ws-typing-window-ms 100..=3600000".into(),
            ));
        }
        if self.ws_write_timeout_ms == 0 || self.first_byte_timeout_ms == 0 {
            return Err(Error::Config(
                "ws-write-timeout-ms and first-byte-timeout-ms must be positive".into(),
            ));
        }
        if self.ws_queue_bytes < 64 * 1024 {
            return Err(Error::Config(
                "ws-queue-bytes must be at least 65536 (one large event)".into(),
            ));
        }
        if self.max_connections_per_ip == 0 || self.max_connections_per_ip > self.max_connections {
            return Err(Error::Config(
                "max-connections-per-ip must be between 1 and max-connections".into(),
            ));
        }
        self.rate_limits.validate()?;
        self.client_limits.validate()
    }

    pub(crate) fn ws_limits(&self) -> crate::ws::Limits {
        crate::ws::Limits {
            write_timeout: Duration::from_millis(self.ws_write_timeout_ms),
            ping_every: Duration::from_millis(self.ws_ping_ms),
            typing: crate::ws::TypingLimit {
                max: self.ws_typing_max,
                window: Duration::from_millis(self.ws_typing_window_ms),
            },
            max_client_frame: self.client_limits.ws_max_frame_bytes,
        }
    }

    pub(crate) fn first_byte_timeout(&self) -> Duration {
        Duration::from_millis(self.first_byte_timeout_ms)
    }

    pub(crate) fn route_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.route_cache_ms)
    }

    pub(crate) fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            conversations_url: "http://127.0.0.1:7102".into(),
            ingest_url: "http://127.0.0.1:7101".into(),
            stream_url: "http://127.0.0.1:7103".into(),
            jwt_secret: "s".repeat(32),
            max_body_bytes: 64 * 1024,
            drain_ms: 1_000,
            route_cache_ms: 30_000,
            ws_write_timeout_ms: 10_000,
            ws_queue_bytes: 4 * 1024 * 1024,
            max_connections: 100,
            max_connections_per_ip: 10,
            trusted_proxies: crate::TrustedProxies::default(),
            first_byte_timeout_ms: 10_000,
            jwt_issuer: None,
            jwt_audience: None,
            ws_ping_ms: 30_000,
            ws_typing_max: 10,
            ws_typing_window_ms: 5_000,
            admin_token: None,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "faro:".into(),
            rate_limits: crate::RateLimits::default(),
            client_limits: crate::ClientLimits::default(),
            tls: None,
        }
    }

    #[test]
    fn typing_limits_are_checked_at_start() {
        assert!(config().validate().is_ok());
        for (max, window) in [(0, 5_000), (1_001, 5_000), (10, 99), (10, 3_600_001)] {
            let c = Config {
                ws_typing_max: max,
                ws_typing_window_ms: window,
                ..config()
            };
            let err = c.validate().expect_err("refused").to_string();
            assert!(err.contains("ws-typing"), "{err}");
        }
        let limits = config().ws_limits().typing;
        assert_eq!((limits.max, limits.window), (10, Duration::from_secs(5)));
    }
}
