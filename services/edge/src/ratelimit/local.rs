//! The per-address failure budget kept in this process, used only while Redis
//! cannot be asked. Refusing every unverified request then would refuse every
//! webhook too (each is unverified until its lookup), so instead each replica
//! enforces the budget on its own: a flood from one address stays bounded (by
//! the rate times the number of replicas) and costs no lookups past it.

use std::{net::IpAddr, sync::Mutex, time::Instant};

use hashlink::LruCache;

use super::Rate;

/// Addresses remembered at most; the least recently seen is forgotten first
/// (a forgotten address starts again with a full budget).
const CAPACITY: usize = 10_000;

pub(super) struct LocalBudget {
    epoch: Instant,
    /// Theoretical arrival time of each address's next failure, in µs since `epoch`.
    tats: Mutex<LruCache<IpAddr, u64>>,
}

impl LocalBudget {
    pub(super) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            tats: Mutex::new(LruCache::new(CAPACITY)),
        }
    }

    /// Records one failure of `ip`, even past its budget (debt).
    pub(super) fn spend(&self, ip: IpAddr, rate: Rate) {
        if rate.per_minute == 0 {
            return;
        }
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let tat = tats.get(&ip).copied().unwrap_or(now).max(now);
        tats.insert(ip, tat + rate.interval_us());
    }

    /// The same arithmetic as `gcra.lua` with no horizon: `Ok` if granted,
    /// else how long (µs) until one would be. Records a grant if `record`.
    pub(super) fn check(&self, ip: IpAddr, rate: Rate, record: bool) -> Result<(), u64> {
        if rate.per_minute == 0 {
            return Ok(());
        }
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let interval = rate.interval_us();
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let tat = tats.get(&ip).copied().unwrap_or(now).max(now);
        let new_tat = tat + interval;
        let allowed_at = new_tat.saturating_sub(u64::from(rate.burst) * interval);
        if allowed_at > now {
            return Err(allowed_at - now);
        }
        if record {
            tats.insert(ip, new_tat);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_per_address() {
        let b = LocalBudget::new();
        let rate = Rate {
            per_minute: 60,
            burst: 2,
        };
        let (one, two): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        assert!(b.check(one, rate, false).is_ok(), "looking spends nothing");
        assert!(b.check(one, rate, true).is_ok());
        assert!(b.check(one, rate, true).is_ok());
        let wait = b.check(one, rate, false).expect_err("the budget is spent");
        assert!(wait <= 1_000_000 && wait > 500_000, "{wait}");
        b.spend(one, rate);
        let wait = b.check(one, rate, false).expect_err("in debt");
        assert!(wait > 1_500_000, "a failure past the budget counts: {wait}");
        assert!(
            b.check(two, rate, true).is_ok(),
            "another address has its own"
        );
    }
}
