use crate::Error;

/// Configuration of the stream service.
#[derive(Clone, Debug)]
pub struct Config {
    pub redis_url: String,

    /// Prefix of every Redis key FARO uses.
    pub key_prefix: String,

    /// Events buffered per subscriber before it counts as too slow and is cut off.
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
