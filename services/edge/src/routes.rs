//! A short-lived cache of webhook routes (account → tenant, location, app
//! secret), so that a webhook costs no conversations call in the common case.
//!
//! Unknown accounts are cached too (briefly), so a flood naming made-up
//! accounts cannot turn into a flood of database lookups. When a signature
//! fails against cached routes the caller asks again with `fresh`: an app
//! secret rotated in the last TTL must not cost Meta a rejected delivery.
//!
//! Both are LRUs with a TTL per entry, and separate: a flood of fresh
//! made-up ids evicts only other unknown ids, never the routes of connected
//! accounts (a wholesale clear, or one shared LRU, would send every real
//! account back to the database at once).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use faro_proto::client::Traced as GrpcChannel;
use faro_proto::conversations::v1::{
    Channel, ChannelRoute, ResolveChannelAccountsRequest,
    conversations_service_client::ConversationsServiceClient,
};
use hashlink::LruCache;

/// Entries kept of each kind; beyond it the least recently used one goes.
const MAX_ENTRIES: usize = 100_000;
/// A `fresh` lookup still uses entries this young: bad signatures naming a
/// real account must not become one database lookup each.
const MIN_REFRESH: Duration = Duration::from_secs(1);

type Key = (i32, String);

struct Entries {
    /// Connected accounts: their route, and when it was read.
    known: LruCache<Key, (Instant, ChannelRoute)>,
    /// Accounts found not connected, and when.
    unknown: LruCache<Key, Instant>,
}

pub(crate) struct RouteCache {
    ttl: Duration,
    entries: Mutex<Entries>,
}

impl RouteCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self::with_capacity(ttl, MAX_ENTRIES)
    }

    fn with_capacity(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            entries: Mutex::new(Entries {
                known: LruCache::new(capacity.max(1)),
                unknown: LruCache::new(capacity.max(1)),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
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
        let age = |at: Instant| now.saturating_duration_since(at);
        for id in ids {
            let key = (channel as i32, id.clone());
            if let Some((at, route)) = entries.known.get(&key) {
                if age(*at) < max_age {
                    found.push(route.clone());
                    continue;
                }
                if age(*at) >= self.ttl {
                    entries.known.remove(&key);
                }
            } else if let Some(at) = entries.unknown.get(&key) {
                if age(*at) < max_age {
                    continue;
                }
                if age(*at) >= self.ttl {
                    entries.unknown.remove(&key);
                }
            }
            missing.push(id.clone());
        }
        (found, missing)
    }

    fn remember(
        &self,
        channel: Channel,
        missing: Vec<String>,
        routes: &[ChannelRoute],
        now: Instant,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        for id in missing {
            let key = (channel as i32, id);
            match routes.iter().find(|r| r.external_account_id == key.1) {
                Some(route) => {
                    entries.unknown.remove(&key);
                    entries.known.insert(key, (now, route.clone()));
                }
                None => {
                    entries.known.remove(&key);
                    entries.unknown.insert(key, now);
                }
            }
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
    fn a_flood_of_unknown_ids_never_evicts_a_connected_account() {
        let ttl = Duration::from_secs(30);
        let cache = RouteCache::with_capacity(ttl, 3);
        let now = Instant::now();
        let ch = Channel::Whatsapp;
        cache.remember(ch, ids(&["real"]), &[route("real")], now);
        for n in 0..10 {
            let junk = format!("junk-{n}");
            let (_, missing) = cache.cached(ch, &ids(&[&junk]), now, ttl);
            assert_eq!(missing, [junk]);
            cache.remember(ch, missing, &[], now);
        }
        // The real account was not used meanwhile, and is still cached.
        let (found, missing) = cache.cached(ch, &ids(&["real"]), now, ttl);
        assert_eq!((found.len(), missing.len()), (1, 0));
        assert_eq!(cache.lock().unknown.len(), 3, "unknown ids are bounded");
        // Unknown accounts are remembered as unknown: no lookup while fresh.
        let (found, missing) = cache.cached(ch, &ids(&["junk-9"]), now, ttl);
        assert!(found.is_empty() && missing.is_empty());
        // The least recently used junk was evicted, not the whole cache.
        let (_, missing) = cache.cached(ch, &ids(&["junk-0", "junk-8"]), now, ttl);
        assert_eq!(missing, ["junk-0"]);
        // An account connected since it was found unknown is found on refresh.
        cache.remember(ch, ids(&["junk-8"]), &[route("junk-8")], now);
        let (found, _) = cache.cached(ch, &ids(&["junk-8"]), now, ttl);
        assert_eq!(found.len(), 1);
        assert!(
            cache
                .lock()
                .unknown
                .peek(&(ch as i32, "junk-8".into()))
                .is_none()
        );
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
        let (_, missing) =
            cache.cached(ch, &ids(&["a"]), then + Duration::from_secs(2), MIN_REFRESH);
        assert_eq!(missing, ["a"], "a fresh lookup asks again");
        let (_, missing) = cache.cached(ch, &ids(&["a"]), then + ttl, ttl);
        assert_eq!(missing, ["a"]);
        assert_eq!(cache.lock().known.len(), 0, "an expired entry is removed");
        // Channels are separate keys.
        cache.remember(ch, ids(&["a"]), &[route("a")], then);
        let (_, missing) = cache.cached(Channel::InstagramDm, &ids(&["a"]), then, ttl);
        assert_eq!(missing, ["a"]);
    }
}
