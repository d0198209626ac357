//! Whether an agent's tenant and the agent are enabled, asked of conversations
//! (`CheckAgentAccess`) before a JWT is served on REST, WebSocket, long-poll or
//! SSE, and cached like the routes: an LRU of (tenant, agent) with the route
//! cache's TTL (`FARO_ROUTE_CACHE_MS`). A JWT stays valid until it expires, so
//! disabling is the one way to stop a tenant or an agent early; it takes
//! effect on every edge within that TTL (0: on the next request). Already
//! open sockets are not closed (see ARCHITECTURE.md, "Disabling").

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use faro_proto::client::Traced;
use faro_proto::conversations::v1::{
    CheckAgentAccessRequest, conversations_service_client::ConversationsServiceClient,
};
use hashlink::LruCache;

use crate::{auth::Claims, error::ApiError};

/// Agents remembered; beyond it the least recently used one goes.
const MAX_ENTRIES: usize = 100_000;

type Key = (uuid::Uuid, String);

pub(crate) struct AccessCache {
    ttl: Duration,
    /// When each answer was read, and the refusal's reason (None: allowed).
    entries: Mutex<LruCache<Key, (Instant, Option<&'static str>)>>,
}

fn reason(r: &str) -> &'static str {
    match r {
        "tenant_disabled" => "tenant_disabled",
        _ => "agent_disabled",
    }
}

impl AccessCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(LruCache::new(MAX_ENTRIES)),
        }
    }

    fn cached(&self, key: &Key, now: Instant) -> Option<Option<&'static str>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some((at, refused)) if now.saturating_duration_since(*at) < self.ttl => Some(*refused),
            _ => None,
        }
    }

    fn remember(&self, key: Key, now: Instant, refused: Option<&'static str>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(key, (now, refused));
    }

    /// 401 when the tenant or the agent is disabled; 503 when conversations
    /// cannot answer and nothing is cached (fails closed).
    pub(crate) async fn check(
        &self,
        client: &ConversationsServiceClient<Traced>,
        claims: &Claims,
    ) -> Result<(), ApiError> {
        let key = (claims.tenant_id, claims.sub.clone());
        let now = Instant::now();
        let refused = match self.cached(&key, now) {
            Some(r) => r,
            None => {
                let answer = client
                    .clone()
                    .check_agent_access(CheckAgentAccessRequest {
                        tenant_id: claims.tenant_id.to_string(),
                        agent_id: claims.sub.clone(),
                    })
                    .await
                    .map_err(|s| ApiError::upstream("conversations", &s))?
                    .into_inner();
                let refused = (!answer.allowed).then(|| reason(&answer.reason));
                self.remember(key, now, refused);
                refused
            }
        };
        match refused {
            None => Ok(()),
            Some(code) => Err(ApiError::unauthorized(
                code,
                if code == "tenant_disabled" {
                    "this token's tenant is disabled"
                } else {
                    "this token's agent is disabled"
                },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_after_the_ttl_and_a_zero_ttl_keeps_none() {
        let cache = AccessCache::new(Duration::from_secs(30));
        let key = (uuid::Uuid::nil(), "a".to_owned());
        let now = Instant::now();
        cache.remember(key.clone(), now, Some("agent_disabled"));
        assert_eq!(cache.cached(&key, now), Some(Some("agent_disabled")));
        assert_eq!(cache.cached(&key, now + Duration::from_secs(31)), None);
        let none = AccessCache::new(Duration::ZERO);
        none.remember(key.clone(), now, None);
        assert_eq!(none.cached(&key, now), None);
    }
}
