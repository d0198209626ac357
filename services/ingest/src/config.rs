use std::time::Duration;

use crate::Error;

/// Configuration of the ingest service.
#[derive(Clone, Debug)]
pub struct Config {
    pub redis_url: String,

    /// Prefix of every Redis key FARO uses, so deployments (and tests) can share a Redis.
    pub key_prefix: String,

    /// gRPC URL of the conversations service.
    pub conversations_url: String,

    /// Worker tasks in this process; each has its own Redis connection.
    pub workers: usize,

    /// Jobs read per batch; their messages are stored in one call.
    pub batch_size: usize,

    /// A pending job idle this long (milliseconds) is presumed abandoned by a dead
    /// worker and reclaimed. Must exceed the longest time a batch can take.
    pub claim_idle_ms: u64,

    /// Consumer name in the group; default: a random one per process.
    pub consumer_name: Option<String>,

    /// Each tenant's event history (for clients resuming from a position)
    /// keeps at most this many events...
    pub history_max_events: u64,

    /// ...and none older than this (seconds): defaults cover a laptop that
    /// slept an hour.
    pub history_max_age_secs: u64,
}

impl Config {
    pub fn validate(&self) -> Result<(), Error> {
        if self.workers == 0 {
            return Err(Error::Config("ingest-workers must be at least 1".into()));
        }
        if !(1..=1000).contains(&self.batch_size) {
            return Err(Error::Config("ingest-batch must be 1..=1000".into()));
        }
        if self.claim_idle_ms < 1000 {
            return Err(Error::Config(
                "claim-idle-ms below 1000 would steal jobs still being processed".into(),
            ));
        }
        crate::publish::validate_history(self.history_max_events, self.history_max_age_secs)
            .map_err(Error::Config)?;
        if !self.redis_url.starts_with("redis://") && !self.redis_url.starts_with("rediss://") {
            return Err(Error::Config(
                "REDIS_URL must start with redis:// or rediss://".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn claim_idle(&self) -> Duration {
        Duration::from_millis(self.claim_idle_ms)
    }

    pub(crate) fn history(&self) -> crate::publish::HistoryBounds {
        crate::publish::HistoryBounds {
            max_events: self.history_max_events,
            max_age_ms: self.history_max_age_secs.saturating_mul(1000),
        }
    }

    pub(crate) fn consumer_name(&self) -> String {
        self.consumer_name
            .clone()
            .unwrap_or_else(|| format!("ingest-{}", uuid::Uuid::new_v4().simple()))
    }
}
