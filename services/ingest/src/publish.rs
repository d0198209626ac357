//! Publishing stored changes to the tenant's live channel.

use bytes::Bytes;
use faro_proto::{
    conversations::v1::{
        AccountEvent, StoreEventsResponse, StoredConversationEvent, StoredMessage,
    },
    redis_keys::events_channel,
    stream::v1::{ConversationEventAdded, Event, MessageCreated, MessageUpdated, event::Kind},
    to_timestamp,
};
use fred::{clients::Client, interfaces::PubsubInterface};
use prost::Message;

use crate::queue::Keys;

fn event(stored: StoredMessage, created: bool) -> Option<Event> {
    let message = stored.message?;
    let (tenant_id, location_id) = (message.tenant_id.clone(), message.location_id.clone());
    let kind = if created {
        Kind::MessageCreated(MessageCreated {
            message: Some(message),
            conversation: stored.conversation,
        })
    } else {
        Kind::MessageUpdated(MessageUpdated {
            message: Some(message),
            conversation: stored.conversation,
        })
    };
    Some(Event {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id,
        location_id,
        published_at: Some(to_timestamp(chrono::Utc::now())),
        offset: 0,
        epoch: String::new(),
        kind: Some(kind),
    })
}

/// A conversation event as a system line for agents: never `message.created`.
fn conversation_event(stored: StoredConversationEvent) -> Option<Event> {
    let e = stored.event?;
    Some(Event {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: e.tenant_id.clone(),
        location_id: e.location_id.clone(),
        published_at: Some(to_timestamp(chrono::Utc::now())),
        offset: 0,
        epoch: String::new(),
        kind: Some(Kind::ConversationEvent(ConversationEventAdded {
            event: Some(e),
            conversation: stored.conversation,
        })),
    })
}

/// An account event agents are told about (template status or quality, a
/// number's quality), addressed to its account's location.
fn account_event(a: AccountEvent) -> Option<Event> {
    if !crate::parse::account::announced(&a.field) {
        return None;
    }
    Some(Event {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: a.tenant_id.clone(),
        location_id: a.location_id.clone(),
        published_at: Some(to_timestamp(chrono::Utc::now())),
        offset: 0,
        epoch: String::new(),
        kind: Some(Kind::AccountEvent(a)),
    })
}

/// What agents must hear about: new messages (all of them again for a
/// redelivered job), every message whose state changed, new conversation
/// events (conversations returns only those, or all for a redelivery), and the
/// announced account events stored (again, for a redelivered job).
pub(crate) fn events_of(outcome: StoreEventsResponse, redelivered: bool) -> Vec<Event> {
    let created = outcome
        .stored
        .into_iter()
        .filter(|s| s.inserted || redelivered)
        .filter_map(|s| event(s, true));
    let updated = outcome.updated.into_iter().filter_map(|s| event(s, false));
    let events = outcome
        .conversation_events
        .into_iter()
        .filter_map(conversation_event);
    let accounts = outcome.account_events.into_iter().filter_map(account_event);
    created
        .chain(updated)
        .chain(events)
        .chain(accounts)
        .collect()
}

/// Publishes every event; fails if any publish fails, so the caller does not ack.
pub(crate) async fn publish_all(
    client: &Client,
    keys: &Keys,
    events: Vec<Event>,
) -> Result<(), fred::error::Error> {
    let sends = events.into_iter().map(|e| {
        let channel = events_channel(&keys.prefix, &e.tenant_id);
        let bytes = Bytes::from(e.encode_to_vec());
        async move { client.publish::<i64, _, _>(channel, bytes).await }
    });
    futures::future::try_join_all(sends).await?;
    Ok(())
}
