use crate::Error;

/// Configuration of the stream service.
#[derive(Clone, Debug)]
pub struct Config {
    pub redis_url: String,

    /// Prefix of every Redis key FARO uses.
    pub key_prefix: String,

    /// Events buffered per subscriber before it counts as too slow and is cut off.
    pub subscriber_buffer: usize,

    /// The tenant history's bounds, as ingest keeps it (the same values):
    /// at most this many events...
    pub history_max_events: u64,

    /// ...none older than this (seconds).
    pub history_max_age_secs: u64,
    /// mTLS material for serving and for calling the other services;
    /// `None` is plaintext, which the `faro` binary allows only when told to.
    pub tls: Option<faro_proto::mtls::Tls>,
}

impl Config {
    pub fn validate(&self) -> Result<(), Error> {
        if !(1..=1_000_000).contains(&self.subscriber_buffer) {
            return Err(Error::Config(
                "subscriber-buffer must be 1..=1000000".into(),
            ));
        }
        if !(1..=10_000_000).contains(&self.history_max_events) {
            return Err(Error::Config(
                "history-max-events must be 1..=10000000".into(),
            ));
        }
        if !(1..=30 * 24 * 3600).contains(&self.history_max_age_secs) {
            return Err(Error::Config(
                "history-max-age-secs must be 1..=2592000 (30 days)".into(),
            ));
        }
        if !self.redis_url.starts_with("redis://") && !self.redis_url.starts_with("rediss://") {
            return Err(Error::Config(
                "REDIS_URL must start with redis:// or rediss://".into(),
            ));
        }
        Ok(())
    }

    /// The most events one replay or catch-up reads: history's size bound,
    /// with room for approximate trimming and for events published meanwhile.
    pub(crate) fn replay_bound(&self) -> usize {
        usize::try_from(self.history_max_events)
            .unwrap_or(usize::MAX)
            .saturating_add(2 * crate::history::PAGE)
    }
}
