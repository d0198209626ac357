//! The per-tenant rate of verified webhooks: which slot a delivery gets.

use std::time::Duration;

use faro_proto::conversations::v1::ChannelRoute;

use super::Platform;
use crate::{
    State,
    error::ApiError,
    ratelimit::{Decision, Rate, too_many},
};

/// A tenant's own rate if it has one, else the default.
fn rate_of(route: &ChannelRoute, default: Rate) -> Rate {
    if route.webhook_per_minute == 0 {
        return default;
    }
    Rate {
        per_minute: route.webhook_per_minute,
        burst: route.webhook_burst.max(1),
    }
}

/// How long a verified delivery waits before it is processed: zero within
/// its tenants' rates, the latest reserved slot when over (deferred), or a
/// 429 when a tenant's next slot lies past the horizon. A body naming several
/// tenants (a shared app) spends one of each's; if any refuses, the whole
/// delivery is refused, since Meta retries it whole.
pub(super) async fn delay(
    state: &State,
    platform: Platform,
    routes: &[ChannelRoute],
) -> Result<Duration, ApiError> {
    let default = state.limiter.webhook_rate();
    let mut tenants: Vec<(&str, Rate)> = routes
        .iter()
        .map(|r| (r.tenant_id.as_str(), rate_of(r, default)))
        .collect();
    tenants.sort_unstable_by_key(|(t, _)| *t);
    tenants.dedup_by_key(|(t, _)| *t);
    let decisions = futures::future::join_all(
        tenants
            .iter()
            .map(|(t, rate)| state.limiter.webhook(t, platform.name(), *rate)),
    )
    .await;
    let mut delay = Duration::ZERO;
    let mut refused: Option<Duration> = None;
    for d in decisions {
        match d {
            Decision::Now => {}
            Decision::Deferred(wait) => delay = delay.max(wait),
            Decision::Refused(wait) => refused = Some(refused.unwrap_or_default().max(wait)),
        }
    }
    match refused {
        Some(wait) => Err(too_many(
            wait,
            "the tenant is over its webhook rate; retry later",
        )),
        None => Ok(delay),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_own_rate_replaces_the_default() {
        let default = Rate {
            per_minute: 1_000,
            burst: 100,
        };
        let mut r = ChannelRoute::default();
        assert_eq!(rate_of(&r, default), default);
        r.webhook_per_minute = 60;
        assert_eq!(
            rate_of(&r, default),
            Rate {
                per_minute: 60,
                burst: 1
            }
        );
        r.webhook_burst = 5;
        assert_eq!(rate_of(&r, default).burst, 5);
    }
}
