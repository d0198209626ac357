//! Typing indicators: an agent's `typing` frame, checked, limited and relayed
//! to the tenant's other agents, on every edge.
//!
//! The client names only the conversation. Its tenant is the JWT's, and its
//! location is looked up (conversations' `GetConversation`, under the
//! tenant's row-level security; cached here, since a thread never changes
//! location): a conversation of another tenant, or outside the agent's
//! locations, is refused alike, so neither one's existence shows. The edge
//! then asks the stream service to `Relay` it: published on the tenant's
//! Redis channel without a position, it reaches every stream process and
//! every edge, whose hubs hand it to the WebSockets of that tenant allowed to
//! see the location, except the sender's own (`crate::live`). Nothing is
//! stored.
//!
//! Each socket may send at most `max` typing frames per `window`; the excess
//! is dropped, and the first frame dropped in a window is answered with one
//! `rate_limited` error. The limit is counted before any lookup, so made-up
//! conversation ids cost at most `max` lookups per window.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use faro_proto::client::Traced;
use faro_proto::{
    conversations::v1::{
        GetConversationRequest, conversations_service_client::ConversationsServiceClient,
    },
    stream::v1::{
        RelayRequest, TypingIndicator, TypingState as PbState, relay_request,
        stream_service_client::StreamServiceClient,
    },
};
use hashlink::LruCache;
use tonic::Code;
use uuid::Uuid;

use super::client_frames::{FrameError, TypingState};

/// Conversations whose location is remembered, at most.
const CACHED_CONVERSATIONS: usize = 10_000;

/// Where each conversation is, as conversations says; shared by every socket.
pub(crate) struct ConversationLocations {
    client: ConversationsServiceClient<Traced>,
    /// (tenant, conversation) → location. Only found ones: a thread created a
    /// moment later must not stay unknown.
    cache: Mutex<LruCache<(String, Uuid), String>>,
}

impl ConversationLocations {
    pub(crate) fn new(client: ConversationsServiceClient<Traced>) -> Self {
        Self {
            client,
            cache: Mutex::new(LruCache::new(CACHED_CONVERSATIONS)),
        }
    }

    fn cached(&self, key: &(String, Uuid)) -> Option<String> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).cloned()
    }

    /// The location of the tenant's conversation; `None` if the tenant has
    /// no such conversation.
    pub(crate) async fn location(
        &self,
        tenant: &str,
        conversation: Uuid,
    ) -> Result<Option<String>, tonic::Status> {
        let key = (tenant.to_owned(), conversation);
        if let Some(location) = self.cached(&key) {
            return Ok(Some(location));
        }
        let found = self
            .client
            .clone()
            .get_conversation(GetConversationRequest {
                tenant_id: tenant.to_owned(),
                conversation_id: conversation.to_string(),
                ..Default::default()
            })
            .await;
        match found {
            Ok(c) => {
                let location = c.into_inner().location_id;
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.insert(key, location.clone());
                Ok(Some(location))
            }
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }
}

/// How many typing frames one socket may send, per how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TypingLimit {
    pub max: u32,
    pub window: Duration,
}

/// A fixed window: at most `max` frames from its first frame on, for `window`.
#[derive(Debug)]
struct Window {
    limit: TypingLimit,
    started: Option<Instant>,
    count: u32,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Admit,
    /// Dropped; `tell` for the first dropped in its window.
    Drop {
        tell: bool,
    },
}

impl Window {
    fn new(limit: TypingLimit) -> Self {
        Self {
            limit,
            started: None,
            count: 0,
        }
    }

    fn admit(&mut self, now: Instant) -> Verdict {
        if self
            .started
            .is_none_or(|s| now.saturating_duration_since(s) >= self.limit.window)
        {
            self.started = Some(now);
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count <= self.limit.max {
            Verdict::Admit
        } else {
            Verdict::Drop {
                tell: self.count == self.limit.max + 1,
            }
        }
    }
}

/// One socket's typing indicators: who sends them, and how many it may.
pub(crate) struct Typing {
    tenant: String,
    /// The JWT's `sub`.
    agent: String,
    /// The JWT's locations; empty: all of the tenant's.
    locations: HashSet<String>,
    window: Window,
    conversations: Arc<ConversationLocations>,
    stream: StreamServiceClient<Traced>,
}

fn unavailable(what: &str, s: &tonic::Status) -> FrameError {
    tracing::warn!(code = ?s.code(), message = s.message(), what, "typing indicator not relayed");
    FrameError::new(
        "unavailable",
        "typing indicator not relayed: the service is unavailable, try again",
    )
}

impl Typing {
    pub(crate) fn new(
        tenant: String,
        agent: String,
        locations: HashSet<String>,
        limit: TypingLimit,
        conversations: Arc<ConversationLocations>,
        stream: StreamServiceClient<Traced>,
    ) -> Self {
        Self {
            tenant,
            agent,
            locations,
            window: Window::new(limit),
            conversations,
            stream,
        }
    }

    /// Relays one typing frame. `Ok(false)`: dropped silently (over the
    /// limit, and the client was told already in this window).
    pub(crate) async fn relay(
        &mut self,
        conversation: Uuid,
        state: TypingState,
    ) -> Result<bool, FrameError> {
        match self.window.admit(Instant::now()) {
            Verdict::Admit => {}
            Verdict::Drop { tell: false } => return Ok(false),
            Verdict::Drop { tell: true } => {
                let TypingLimit { max, window } = self.window.limit;
                return Err(FrameError::new(
                    "rate_limited",
                    format!(
                        "at most {max} typing frames per {} ms: the excess is dropped",
                        window.as_millis()
                    ),
                ));
            }
        }
        let location = self
            .conversations
            .location(&self.tenant, conversation)
            .await
            .map_err(|s| unavailable("conversations", &s))?;
        let Some(location) =
            location.filter(|l| self.locations.is_empty() || self.locations.contains(l))
        else {
            return Err(FrameError::new(
                "conversation_not_found",
                "no conversation with this id in your locations",
            ));
        };
        let state = match state {
            TypingState::Start => PbState::Start,
            TypingState::Stop => PbState::Stop,
        };
        self.stream
            .relay(RelayRequest {
                tenant_id: self.tenant.clone(),
                location_id: location,
                kind: Some(relay_request::Kind::Typing(TypingIndicator {
                    conversation_id: conversation.to_string(),
                    agent: self.agent.clone(),
                    state: state.into(),
                })),
            })
            .await
            .map_err(|s| unavailable("stream", &s))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_admits_max_then_tells_once_then_drops_until_it_ends() {
        let mut w = Window::new(TypingLimit {
            max: 2,
            window: Duration::from_secs(5),
        });
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(w.admit(at(0)), Verdict::Admit);
        assert_eq!(w.admit(at(10)), Verdict::Admit);
        assert_eq!(w.admit(at(20)), Verdict::Drop { tell: true });
        assert_eq!(w.admit(at(30)), Verdict::Drop { tell: false });
        assert_eq!(w.admit(at(4_999)), Verdict::Drop { tell: false });
        // A new window from the first frame after the old one ended.
        assert_eq!(w.admit(at(5_000)), Verdict::Admit);
        assert_eq!(w.admit(at(5_001)), Verdict::Admit);
        assert_eq!(w.admit(at(5_002)), Verdict::Drop { tell: true });
    }
}
