use std::time::Duration;

use clap::Args;

use crate::Error;

/// Configuration of the edge.
#[derive(Args, Clone)]
pub struct Config {
    #[arg(
        long = "conversations-url",
        env = "FARO_CONVERSATIONS_URL",
        default_value = "http://127.0.0.1:7102"
    )]
    pub conversations_url: String,

    #[arg(
        long = "ingest-url",
        env = "FARO_INGEST_URL",
        default_value = "http://127.0.0.1:7101"
    )]
    pub ingest_url: String,

    #[arg(
        long = "stream-url",
        env = "FARO_STREAM_URL",
        default_value = "http://127.0.0.1:7103"
    )]
    pub stream_url: String,

    /// HS256 secret for agents' JWTs; at least 32 bytes.
    #[arg(long = "jwt-secret", env = "FARO_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,

    /// Largest webhook body accepted, in bytes (413 beyond).
    #[arg(long = "max-body-bytes", env = "FARO_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How long shutdown waits for requests in flight, in milliseconds.
    #[arg(long = "drain-ms", env = "FARO_DRAIN_MS", default_value_t = 10_000)]
    pub drain_ms: u64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("conversations_url", &self.conversations_url)
            .field("ingest_url", &self.ingest_url)
            .field("stream_url", &self.stream_url)
            .field("jwt_secret", &"<redacted>")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("drain_ms", &self.drain_ms)
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
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(Error::Config(
                "max-body-bytes must be between 1 KiB and 64 MiB".into(),
            ));
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
        Ok(())
    }

    pub(crate) fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }
}
