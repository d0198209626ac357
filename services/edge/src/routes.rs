//! A short-lived cache of webhook routes (account → tenant, location, app
//! secret), so that a webhook costs no conversations call in the common case.
//!
//! Unknown accounts are cached too (briefly), so a flood naming made-up
//! accounts cannot turn into a flood of database lookups. When a signature
//! fails against cached routes the caller asks again with `fresh`: an app
//! secret rotated in the last TTL must not cost Meta a rejected delivery.
//!
//! The cache is an LRU with a TTL per entry: a flood of fresh made-up ids
//! evicts only the least recently used entries, never the routes of the
//! accounts that are delivering right now (a wholesale clear would send every
//! real account back to the database at once).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use faro_proto::conversations::v1::{
    Channel, ChannelRoute, ResolveChannelAccountsRequest,
    conversations_service_client::ConversationsServiceClient,
};
use hashlink::LruCache;
use tonic::transport::Channel as GrpcChannel;

/// Entries kept; beyond it the least recently used one goes.
const MAX_ENTRIES: usize = 100_000;
/// A `fresh` lookup still uses entries this young: bad signatures naming a
/// real account must not become one database lookup each.
const MIN_REFRESH: Duration = Duration::from_secs(1);

type Key = (i32, String);

/// A route, or the knowledge that the account is not connected, and when.
type Entry = (Instant, Option<ChannelRoute>);

pub(crate) struct RouteCache {
    ttl: Duration,
    entries: Mutex<LruCache<Key, Entry>>,
}

impl RouteCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self::with_capacity(ttl, MAX_ENTRIES)
    }

    fn with_capacity(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            entries: Mutex::new(LruCache::new(capacity.max(1))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached routes of `ids` younger than `max_age`, and the ids to ask for.
    fn cached(
        &self,
        channel: Channel,
        ids: &[String],
        now: Instant,
        max_age: Duration,
    ) -> (Vec<ChannelRoute>, Vec<String>) {
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        let mut entries = self.lock();
        for id in ids {
            let key = (channel as i32, id.clone());
            match entries.get(&key) {
                Some((at, route)) if now.saturating_duration_since(*at) < max_age => {
                    found.extend(route.clone());
                }
                Some((at, _)) if now.saturating_duration_since(*at) >= self.ttl => {
                    entries.remove(&key);
                    missing.push(id.clone());
                }
                _ => missing.push(id.clone()),
            }
        }
        (found, missing)
    }

    fn remember(&self, channel: Channel, missing: Vec<String>, routes: &[ChannelRoute], now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        for id in missing {
            let route = routes.iter().find(|r| r.external_account_id == id).cloned();
            entries.insert((channel as i32, id), (now, route));
        }
    }

    /// The routes of the accounts that are connected; unknown ones are absent.
    pub(crate) async fn resolve(
        &self,
        client: &ConversationsServiceClient<GrpcChannel>,
        channel: Channel,
        ids: &[String],
        fresh: bool,
    ) -> Result<Vec<ChannelRoute>, tonic::Status> {
        let now = Instant::now();
        let max_age = if fresh {
            MIN_REFRESH.min(self.ttl)
        } else {
            self.ttl
        };
        let (mut found, missing) = self.cached(channel, ids, now, max_age);
        if missing.is_empty() {
            return Ok(found);
        }
        let routes = client
            .clone()
            .resolve_channel_accounts(ResolveChannelAccountsRequest {
                channel: channel.into(),
                external_account_ids: missing.clone(),
            })
            .await?
            .into_inner()
            .routes;
        self.remember(channel, missing, &routes, now);
        found.extend(routes);
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn route(id: &str) -> ChannelRoute {
        ChannelRoute {
            external_account_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_flood_of_unknown_ids_evicts_the_least_recently_used_not_everything() {
        let ttl = Duration::from_secs(30);
        let cache = RouteCache::with_capacity(ttl, 3);
        let now = Instant::now();
        let ch = Channel::Whatsapp;
        cache.remember(ch, ids(&["real"]), &[route("real")], now);
        for n in 0..10 {
            // The real account keeps delivering between the junk.
            let (found, missing) = cache.cached(ch, &ids(&["real"]), now, ttl);
            assert_eq!((found.len(), missing.len()), (1, 0), "after {n} junk ids");
            let junk = format!("junk-{n}");
            let (_, missing) = cache.cached(ch, &ids(&[&junk]), now, ttl);
            assert_eq!(missing, [junk.clone()]);
            cache.remember(ch, missing, &[], now);
        }
        assert_eq!(cache.lock().len(), 3);
        // Unknown accounts are remembered as unknown: no lookup while fresh.
        let (found, missing) = cache.cached(ch, &ids(&["junk-9"]), now, ttl);
        assert!(found.is_empty() && missing.is_empty());
        // The oldest junk was evicted.
        let (_, missing) = cache.cached(ch, &ids(&["junk-0"]), now, ttl);
        assert_eq!(missing, ["junk-0"]);
    }

    #[test]
    fn entries_expire_after_the_ttl_and_fresh_lookups_use_only_young_ones() {
        let ttl = Duration::from_secs(30);
        let cache = RouteCache::with_capacity(ttl, 10);
        let then = Instant::now();
        let ch = Channel::Whatsapp;
        cache.remember(ch, ids(&["a"]), &[route("a")], then);
        let (found, _) = cache.cached(ch, &ids(&["a"]), then + Duration::from_secs(29), ttl);
        assert_eq!(found.len(), 1);
        let (_, missing) = cache.cached(ch, &ids(&["a"]), then + Duration::from_secs(2), MIN_REFRESH);
        assert_eq!(missing, ["a"], "a fresh lookup asks again");
        let (_, missing) = cache.cached(ch, &ids(&["a"]), then + ttl, ttl);
        assert_eq!(missing, ["a"]);
        assert_eq!(cache.lock().len(), 0, "an expired entry is removed");
        // Channels are separate keys.
        cache.remember(ch, ids(&["a"]), &[route("a")], then);
        let (_, missing) = cache.cached(Channel::InstagramDm, &ids(&["a"]), then, ttl);
        assert_eq!(missing, ["a"]);
    }
}
