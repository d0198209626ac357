//! A short-lived cache of webhook routes (account → tenant, location, app
//! secret), so that a webhook costs no conversations call in the common case.
//!
//! Unknown accounts are cached too (briefly), so a flood naming made-up
//! accounts cannot turn into a flood of database lookups. When a signature
//! fails against cached routes the caller asks again with `fresh`: an app
//! secret rotated in the last TTL must not cost Meta a rejected delivery.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use faro_proto::conversations::v1::{
    Channel, ChannelRoute, ResolveChannelAccountsRequest,
    conversations_service_client::ConversationsServiceClient,
};
use tonic::transport::Channel as GrpcChannel;

/// Entries kept before the cache is cleared wholesale (a crude bound).
const MAX_ENTRIES: usize = 100_000;
/// A `fresh` lookup still uses entries this young: bad signatures naming a
/// real account must not become one database lookup each.
const MIN_REFRESH: Duration = Duration::from_secs(1);

type Key = (i32, String);

pub(crate) struct RouteCache {
    ttl: Duration,
    entries: Mutex<HashMap<Key, (Instant, Option<ChannelRoute>)>>,
}

impl RouteCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, Option<ChannelRoute>)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        let max_age = if fresh {
            MIN_REFRESH.min(self.ttl)
        } else {
            self.ttl
        };
        {
            let entries = self.lock();
            for id in ids {
                match entries.get(&(channel as i32, id.clone())) {
                    Some((at, route)) if now.duration_since(*at) < max_age => {
                        found.extend(route.clone());
                    }
                    _ => missing.push(id.clone()),
                }
            }
        }
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
        if !self.ttl.is_zero() {
            let mut entries = self.lock();
            if entries.len() > MAX_ENTRIES {
                entries.clear();
            }
            for id in missing {
                let route = routes.iter().find(|r| r.external_account_id == id).cloned();
                entries.insert((channel as i32, id), (now, route));
            }
        }
        found.extend(routes);
        Ok(found)
    }
}
