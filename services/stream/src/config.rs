use clap::Args;

use crate::Error;

/// Configuration of the stream service.
#[derive(Args, Clone, Debug)]
pub struct Config {
    #[arg(
        long = "redis-url",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// Prefix of every Redis key FARO uses.
    #[arg(
        long = "redis-prefix",
        env = "FARO_REDIS_PREFIX",
        default_value = "faro:"
    )]
    pub key_prefix: String,

    /// Events buffered per subscriber before it counts as too slow and is cut off.
    #[arg(
        long = "subscriber-buffer",
        env = "FARO_SUBSCRIBER_BUFFER",
        default_value_t = 1024
    )]
    pub subscriber_buffer: usize,
}

impl Config {
    pub fn validate(&self) -> Result<(), Error> {
        if !(1..=1_000_000).contains(&self.subscriber_buffer) {
            return Err(Error::Config(
                "subscriber-buffer must be 1..=1000000".into(),
            ));
        }
        if !self.redis_url.starts_with("redis://") && !self.redis_url.starts_with("rediss://") {
            return Err(Error::Config(
                "REDIS_URL must start with redis:// or rediss://".into(),
            ));
        }
        Ok(())
    }
}
