//! Rate limits shared by every edge replica: one GCRA script (`gcra.lua`) run
//! in Redis on Redis' clock, so two edges behind a load balancer spend one
//! budget. Three limits use it:
//!
//! - **verified webhooks, per tenant and platform** (a tenant may have its own
//!   rate, set with `faro admin set-rate-limit` and carried on its routes).
//!   Over the limit a delivery is *deferred*, not refused: the script reserves
//!   the tenant's next free slot and the job waits in ingest's schedule until
//!   then, so a flooding tenant is paced at its rate while the others pass.
//!   Only a delivery whose slot lies beyond `webhook_max_defer_ms` is a 429
//!   (Meta retries). Redis unreachable: granted (fail open), since the
//!   delivery 503s anyway if it cannot be queued.
//! - **requests that fail verification, per client IP**: the budget is looked
//!   at (not spent) before any work, and spent by each failure; an address
//!   over it is refused at once, before the body is read or an account looked
//!   up. Redis unreachable: not let through unbounded (fail closed) — each
//!   replica then keeps the budget itself, in memory (`local.rs`), since
//!   refusing every unverified request would refuse every webhook too.
//! - **agents (JWT `sub` and tenant)**: each REST request and WebSocket
//!   connect spends one. Redis unreachable: granted (the agent is
//!   authenticated; connection caps still bound it).
//!
//! The edge starts without Redis: the client connects in the background and,
//! until it has, every check fails at once (and is treated as above).

use std::{net::IpAddr, sync::LazyLock, time::Duration};

use fred::{
    clients::Client,
    interfaces::ClientLike,
    prelude::{Builder, Config as RedisConfig, ReconnectPolicy},
    types::{Value, scripts::Script},
};
use http::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::{Error, error::ApiError};

mod local;
#[cfg(test)]
mod tests;

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::from_lua(include_str!("gcra.lua")));

/// A limiter that cannot answer within this is treated as unreachable: a
/// webhook must not wait seconds on a rate check.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// How far into debt failures may put an address (a horizon for the script
/// that every failure fits in).
const MAX_DEBT: Duration = Duration::from_secs(24 * 3600);

/// A rate: `per_minute` requests a minute on average, `burst` of them at once
/// from rest. `per_minute == 0` means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    fn interval_us(self) -> u64 {
        60_000_000 / u64::from(self.per_minute.max(1))
    }

    fn validate(self, name: &str) -> Result<(), Error> {
        if self.per_minute > 60_000_000 {
            return Err(Error::Config(format!(
                "{name}: at most 60000000 a minute (one a microsecond)"
            )));
        }
        if self.per_minute > 0 && self.burst == 0 {
            return Err(Error::Config(format!(
                "{name}: the burst must be at least 1"
            )));
        }
        Ok(())
    }
}

/// The edge's rate limits (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Verified webhooks per tenant and platform, unless the tenant has its own.
    pub webhook: Rate,
    /// How far ahead (ms) a verified webhook over its tenant's rate may be
    /// scheduled; beyond it the answer is 429 and Meta retries later.
    pub webhook_max_defer_ms: u64,
    /// Requests that fail verification, per client IP.
    pub unverified: Rate,
    /// REST requests and WebSocket connects per agent.
    pub agent: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            webhook: Rate {
                per_minute: 1_000,
                burst: 100,
            },
            webhook_max_defer_ms: 3_600_000,
            unverified: Rate {
                per_minute: 100,
                burst: 20,
            },
            agent: Rate {
                per_minute: 600,
                burst: 60,
            },
        }
    }
}

impl RateLimits {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        self.webhook.validate("webhook rate")?;
        self.unverified.validate("unverified rate")?;
        self.agent.validate("agent rate")?;
        if self.webhook_max_defer_ms > 24 * 3_600_000 {
            return Err(Error::Config(
                "webhook-max-defer-ms must be at most 86400000 (one day)".into(),
            ));
        }
        Ok(())
    }
}

/// What the limiter says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Within the budget: go ahead now.
    Now,
    /// Over the rate, but a slot is reserved this far ahead.
    Deferred(Duration),
    /// Over the budget; a request would be granted after this long.
    Refused(Duration),
}

/// The shared limiter: a Redis client of its own and the configured rates.
pub(crate) struct Limiter {
    client: Client,
    prefix: String,
    limits: RateLimits,
    /// The failure budget per address while Redis cannot be asked.
    local: local::LocalBudget,
}

impl Limiter {
    /// A limiter whose client is not connected yet; see [`Limiter::connect`].
    pub(crate) fn new(url: &str, prefix: &str, limits: RateLimits) -> Result<Self, Error> {
        let config =
            RedisConfig::from_url(url).map_err(|e| Error::Config(format!("REDIS_URL: {e}")))?;
        let client = Builder::from_config(config)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
            .build()
            .map_err(|e| Error::Config(format!("REDIS_URL: {e}")))?;
        Ok(Self {
            client,
            prefix: prefix.to_owned(),
            limits,
            local: local::LocalBudget::new(),
        })
    }

    /// Connects in the background, retrying with backoff until Redis answers
    /// or `stop` fires; the client's reconnect policy takes over from there.
    pub(crate) fn connect(&self, stop: CancellationToken) {
        let client = self.client.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                let attempt = tokio::select! {
                    () = stop.cancelled() => return,
                    r = client.init() => r,
                };
                match attempt {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "rate limiter: redis unreachable; retrying")
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            stop.cancelled().await;
            let _ = client.quit().await;
        });
    }

    /// Runs the script on `key`. Fails at once while the client is not
    /// connected, rather than queueing behind a reconnect.
    pub(crate) async fn check(
        &self,
        key: String,
        rate: Rate,
        horizon: Duration,
        record: bool,
    ) -> Result<Decision, fred::error::Error> {
        if rate.per_minute == 0 {
            return Ok(Decision::Now);
        }
        if !self.client.is_connected() {
            return Err(fred::error::Error::new(
                fred::error::ErrorKind::IO,
                "not connected",
            ));
        }
        let horizon_us = u64::try_from(horizon.as_micros()).unwrap_or(u64::MAX);
        let args: Vec<Value> = vec![
            rate.interval_us().to_string().into(),
            rate.burst.to_string().into(),
            horizon_us.to_string().into(),
            if record { "1" } else { "0" }.into(),
        ];
        let (granted, wait): (i64, i64) = GCRA
            .evalsha_with_reload(&self.client, vec![key], args)
            .await?;
        let wait = Duration::from_micros(u64::try_from(wait).unwrap_or(0));
        Ok(match (granted, wait.is_zero()) {
            (1, true) => Decision::Now,
            (1, false) => Decision::Deferred(wait),
            _ => Decision::Refused(wait),
        })
    }

    /// Before any work for an unverified request: refuses (429) an address
    /// whose failures used up its budget. Spends nothing. Without Redis, this
    /// replica's own count of the address's failures decides.
    pub(crate) async fn admit_unverified(&self, ip: IpAddr) -> Result<(), ApiError> {
        let rate = self.limits.unverified;
        let wait = match self
            .check(self.ip_key(ip), rate, Duration::ZERO, false)
            .await
        {
            Ok(Decision::Refused(wait)) => Some(wait),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "rate limiter unavailable; local failure budget used");
                self.local
                    .check(ip, rate, false)
                    .err()
                    .map(Duration::from_micros)
            }
        };
        match wait {
            Some(wait) => Err(too_many(
                wait,
                "too many requests from this address failed verification",
            )),
            None => Ok(()),
        }
    }

    /// Spends one of the address's failures (in this replica's own count
    /// when Redis cannot be asked). Always recorded, even past the budget:
    /// requests that passed the look together, before any of them failed,
    /// put the address in debt, so a flood gets no more through than the
    /// budget plus the requests it has in flight.
    pub(crate) async fn failed_verification(&self, ip: IpAddr) {
        let rate = self.limits.unverified;
        if let Err(e) = self.check(self.ip_key(ip), rate, MAX_DEBT, true).await {
            tracing::debug!(error = %e, "rate limiter unavailable; failure counted locally");
            self.local.spend(ip, rate);
        }
    }

    /// A verified delivery for `tenant` on `platform`, at `rate` (its own or
    /// the default): now, deferred, or refused. Open when Redis is not.
    pub(crate) async fn webhook(&self, tenant: &str, platform: &str, rate: Rate) -> Decision {
        let key = format!("{}{{t:{tenant}}}:rl:webhook:{platform}", self.prefix);
        let horizon = Duration::from_millis(self.limits.webhook_max_defer_ms);
        self.check(key, rate, horizon, true)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, tenant, "rate limiter unavailable; webhook let through");
                Decision::Now
            })
    }

    /// The edge's Redis connection, for the diagnostics' reads and health
    /// check (the same Redis every replica shares).
    pub(crate) fn redis(&self) -> &Client {
        &self.client
    }

    /// The default rate of verified webhooks.
    pub(crate) fn webhook_rate(&self) -> Rate {
        self.limits.webhook
    }

    /// One REST request or WebSocket connect by an agent; 429 over its rate.
    pub(crate) async fn agent(&self, tenant: &str, sub: &str) -> Result<(), ApiError> {
        let key = format!("{}{{t:{tenant}}}:rl:agent:{sub}", self.prefix);
        match self
            .check(key, self.limits.agent, Duration::ZERO, true)
            .await
        {
            Ok(Decision::Refused(wait)) => Err(too_many(wait, "too many requests by this agent")),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "rate limiter unavailable; agent let through");
                Ok(())
            }
        }
    }

    fn ip_key(&self, ip: IpAddr) -> String {
        // One tag per address: addresses spread over a cluster's slots.
        format!("{}{{ip:{ip}}}:rl:unverified", self.prefix)
    }
}

/// A 429 whose `Retry-After` is `wait`, rounded up to whole seconds.
pub(crate) fn too_many(wait: Duration, message: &str) -> ApiError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
    e.retry_after = Some(secs.max(1));
    e
}
