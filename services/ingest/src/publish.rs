//! Publishing stored changes to the tenant's live channel.

use bytes::Bytes;
use faro_proto::{
    conversations::v1::StoredMessage,
    redis_keys::events_channel,
    stream::v1::{Event, MessageCreated, event::Kind},
    to_timestamp,
};
use fred::{clients::Client, interfaces::PubsubInterface};
use prost::Message;

use crate::queue::Keys;

pub(crate) fn message_event(stored: StoredMessage) -> Option<Event> {
    let message = stored.message?;
    Some(Event {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: message.tenant_id.clone(),
        location_id: message.location_id.clone(),
        published_at: Some(to_timestamp(chrono::Utc::now())),
        offset: 0,
        epoch: String::new(),
        kind: Some(Kind::MessageCreated(MessageCreated {
            message: Some(message),
            conversation: stored.conversation,
        })),
    })
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
