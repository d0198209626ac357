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
    /// Deadline (milliseconds) of each store call to conversations, sent along
    /// so that conversations gives up on it too.
    pub store_deadline_ms: u64,

    /// Attempts a job gets, the first included, before a transient failure
    /// (unavailable, deadline exceeded, internal) dead-letters it.
    pub retry_attempts: u32,

    /// The cap (milliseconds) of the first retry's delay; each further retry
    /// doubles it, and the delay is drawn uniformly below the cap (full jitter).
    pub retry_base_ms: u64,

    /// No retry waits longer than this (milliseconds).
    pub retry_max_ms: u64,
    /// mTLS material for serving and for calling the other services;
    /// `None` is plaintext, which the `faro` binary allows only when told to.
    pub tls: Option<faro_proto::mtls::Tls>,
    /// Where and how agents' replies are sent.
    pub send: crate::SendConfig,
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
        if self.store_deadline_ms == 0 {
            return Err(Error::Config("store-deadline-ms must be at least 1".into()));
        }
        // One pass stores a chunk with up to STORE_PASS_ATTEMPTS calls, each
        // within the deadline; a live worker's jobs must not look abandoned.
        let pass = self
            .store_deadline_ms
            .saturating_mul(u64::from(crate::worker::STORE_PASS_ATTEMPTS))
            .saturating_add(
                u64::try_from(crate::worker::STORE_PASS_PAUSE.as_millis()).unwrap_or(u64::MAX),
            );
        if self.claim_idle_ms <= pass {
            return Err(Error::Config(format!(
                "claim-idle-ms ({}) must exceed one store pass: store-deadline-ms ({}) times {} attempts plus {} ms of pause = {pass} ms",
                self.claim_idle_ms,
                self.store_deadline_ms,
                crate::worker::STORE_PASS_ATTEMPTS,
                crate::worker::STORE_PASS_PAUSE.as_millis(),
            )));
        }
        if self.retry_attempts == 0 {
            return Err(Error::Config("retry-attempts must be at least 1".into()));
        }
        if self.retry_base_ms == 0 || self.retry_max_ms < self.retry_base_ms {
            return Err(Error::Config(
                "retry-base-ms must be at least 1 and retry-max-ms at least retry-base-ms".into(),
            ));
        }
        self.send.validate()?;
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

    pub(crate) fn store_deadline(&self) -> Duration {
        Duration::from_millis(self.store_deadline_ms)
    }

    pub(crate) fn retry_policy(&self) -> crate::retry::Policy {
        crate::retry::Policy {
            attempts: self.retry_attempts,
            base: Duration::from_millis(self.retry_base_ms),
            max: Duration::from_millis(self.retry_max_ms),
        }
    }

    pub(crate) fn consumer_name(&self) -> String {
        self.consumer_name
            .clone()
            .unwrap_or_else(|| format!("ingest-{}", uuid::Uuid::new_v4().simple()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "faro:".into(),
            conversations_url: "http://127.0.0.1:1".into(),
            workers: 1,
            batch_size: 64,
            claim_idle_ms: 30_000,
            consumer_name: None,
            history_max_events: 10_000,
            history_max_age_secs: 3600,
            store_deadline_ms: 10_000,
            retry_attempts: 5,
            retry_base_ms: 15_000,
            retry_max_ms: 300_000,
            tls: None,
            send: crate::SendConfig::default(),
        }
    }

    #[test]
    fn claim_idle_must_exceed_a_whole_store_pass() {
        assert!(config().validate().is_ok(), "the defaults hold");
        let pass = 10_000 * u64::from(crate::worker::STORE_PASS_ATTEMPTS) + 200;
        for (claim_idle_ms, ok) in [(pass, false), (pass + 1, true), (15_000, false)] {
            let c = Config {
                claim_idle_ms,
                ..config()
            };
            assert_eq!(c.validate().is_ok(), ok, "claim-idle-ms {claim_idle_ms}");
        }
    }

    #[test]
    fn retries_need_an_attempt_and_a_sane_backoff() {
        for c in [
            Config {
                retry_attempts: 0,
                ..config()
            },
            Config {
                retry_base_ms: 0,
                ..config()
            },
            Config {
                retry_max_ms: 1,
                ..config()
            },
            Config {
                store_deadline_ms: 0,
                ..config()
            },
        ] {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
