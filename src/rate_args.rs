//! The edge's rate-limit flags (kept apart from the other flags: one place to
//! read every limit and its default).

use clap::Args;
use faro_edge::{Rate, RateLimits};

/// Rates are per minute; a rate of 0 turns that limit off. A tenant's own
/// webhook rate (`faro admin set-rate-limit`) replaces the webhook default.
#[derive(Args, Clone, Debug)]
pub struct RateArgs {
    /// Verified webhooks a minute per tenant and platform (default rate).
    #[arg(
        long = "webhook-rate-per-min",
        env = "FARO_WEBHOOK_RATE_PER_MIN",
        default_value_t = 1_000
    )]
    pub webhook_per_minute: u32,
    /// Verified webhooks at once from rest per tenant and platform.
    #[arg(
        long = "webhook-burst",
        env = "FARO_WEBHOOK_BURST",
        default_value_t = 100
    )]
    pub webhook_burst: u32,
    /// How far ahead (ms) a webhook over its tenant's rate may be scheduled;
    /// beyond it the edge answers 429 and Meta retries.
    #[arg(
        long = "webhook-max-defer-ms",
        env = "FARO_WEBHOOK_MAX_DEFER_MS",
        default_value_t = 3_600_000
    )]
    pub webhook_max_defer_ms: u64,
    /// Requests failing verification a minute per client IP.
    #[arg(
        long = "unverified-rate-per-min",
        env = "FARO_UNVERIFIED_RATE_PER_MIN",
        default_value_t = 100
    )]
    pub unverified_per_minute: u32,
    /// Failures at once from rest per client IP.
    #[arg(
        long = "unverified-burst",
        env = "FARO_UNVERIFIED_BURST",
        default_value_t = 20
    )]
    pub unverified_burst: u32,
    /// REST requests and WebSocket connects a minute per agent.
    #[arg(
        long = "agent-rate-per-min",
        env = "FARO_AGENT_RATE_PER_MIN",
        default_value_t = 600
    )]
    pub agent_per_minute: u32,
    /// REST requests and WebSocket connects at once from rest per agent.
    #[arg(long = "agent-burst", env = "FARO_AGENT_BURST", default_value_t = 60)]
    pub agent_burst: u32,
}

impl RateArgs {
    pub fn limits(&self) -> RateLimits {
        RateLimits {
            webhook: Rate {
                per_minute: self.webhook_per_minute,
                burst: self.webhook_burst,
            },
            webhook_max_defer_ms: self.webhook_max_defer_ms,
            unverified: Rate {
                per_minute: self.unverified_per_minute,
                burst: self.unverified_burst,
            },
            agent: Rate {
                per_minute: self.agent_per_minute,
                burst: self.agent_burst,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        rates: RateArgs,
    }

    #[test]
    fn the_flags_default_to_the_documented_limits() {
        let cli = Cli::try_parse_from(["faro"]).expect("defaults");
        assert_eq!(cli.rates.limits(), RateLimits::default());
    }
}
