//! Publishing stored changes to the tenant's live channel.

use bytes::Bytes;
use faro_proto::{
    conversations::v1::{
        AccountEvent, StoreEventsResponse, StoredConversationEvent, StoredMessage,
    },
    redis_keys::{events_channel, events_history, events_meta},
    stream::v1::{ConversationEventAdded, Event, MessageCreated, MessageUpdated, event::Kind},
    to_timestamp,
};
use fred::{clients::Client, types::Value, types::scripts::Script};
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
        traceparent: String::new(),
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
        traceparent: String::new(),
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
        traceparent: String::new(),
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

/// Assigns a tenant's events their positions, keeps them in the tenant's
/// history and publishes them, atomically and in offset order, so that a
/// subscriber reading history and then the channel sees no gap.
///
/// KEYS: meta hash, history stream (one hash slot). ARGV: channel, max events,
/// max age (ms), an epoch for a tenant without one, then the encoded events.
/// Each event is encoded with `offset` and `epoch` unset (so absent on the
/// wire); the script appends both fields (5: varint, 6: bytes), and protobuf
/// decoding takes them as the event's. A missing meta hash means the history
/// was lost (or never existed): a new epoch starts and stale history goes.
/// Returns the epoch and the last offset assigned.
const PUBLISH_LUA: &str = r#"
local function varint(n)
  local out = {}
  while n >= 128 do
    out[#out + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = string.char(n)
  return table.concat(out)
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local max_events = tonumber(ARGV[2])
local max_age = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local suffix_epoch = string.char(50) .. varint(#epoch) .. epoch
local offset = 0
for i = 5, #ARGV do
  offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
  local bytes = ARGV[i] .. string.char(40) .. varint(offset) .. suffix_epoch
  local id = string.format('%d-0', offset)
  -- Approximate trimming frees whole radix nodes (100 entries) only: below
  -- that size it would never trim, so a small bound is kept exactly.
  if max_events >= 1000 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', max_events, id, 't', now, 'e', bytes)
  else
    redis.call('XADD', KEYS[2], 'MAXLEN', '=', max_events, id, 't', now, 'e', bytes)
  end
  redis.call('PUBLISH', ARGV[1], bytes)
end
-- The age bound: drop the oldest entries older than max age. The head is
-- read alone first: it is almost always fresh, and reading a page of
-- entries into Lua on every publish was most of Redis' time under load.
local cutoff = now - max_age
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
if first and tonumber(first[2][2]) < cutoff then
  while true do
    local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 64)
    local keep = nil
    for _, entry in ipairs(head) do
      if tonumber(entry[2][2]) >= cutoff then
        keep = entry[1]
        break
      end
    end
    if keep then
      redis.call('XTRIM', KEYS[2], 'MINID', keep)
      break
    end
    if #head == 0 then break end
    local ids = {}
    for _, entry in ipairs(head) do ids[#ids + 1] = entry[1] end
    redis.call('XDEL', KEYS[2], unpack(ids))
  end
end
-- An idle tenant's history goes away with its age bound.
redis.call('PEXPIRE', KEYS[2], max_age)
return {epoch, offset}
"#;

/// Where history is kept and for how long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HistoryBounds {
    pub max_events: u64,
    pub max_age_ms: u64,
}

/// The bounds both services accept (they read the same history).
pub(crate) fn validate_history(max_events: u64, max_age_secs: u64) -> Result<(), String> {
    if !(1..=10_000_000).contains(&max_events) {
        return Err("history-max-events must be 1..=10000000".into());
    }
    if !(1..=30 * 24 * 3600).contains(&max_age_secs) {
        return Err("history-max-age-secs must be 1..=2592000 (30 days)".into());
    }
    Ok(())
}

fn script() -> &'static Script {
    static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| Script::from_lua(PUBLISH_LUA))
}

/// Publishes every event, one script per tenant; fails if any publish fails,
/// so the caller does not ack. Within a tenant the events keep their order.
#[tracing::instrument(name = "stream.publish", skip_all, fields(events = events.len(), otel.kind = "producer"))]
pub(crate) async fn publish_all(
    client: &Client,
    keys: &Keys,
    bounds: HistoryBounds,
    events: Vec<Event>,
) -> Result<(), fred::error::Error> {
    let mut by_tenant: Vec<(String, Vec<Bytes>)> = Vec::new();
    // The stream's fan-out and the edge's WebSocket write continue from here.
    let traceparent = faro_proto::trace::traceparent();
    for mut e in events {
        if let Some(t) = &traceparent {
            e.traceparent.clone_from(t);
        }
        let bytes = Bytes::from(e.encode_to_vec());
        match by_tenant.iter_mut().find(|(t, _)| *t == e.tenant_id) {
            Some((_, list)) => list.push(bytes),
            None => by_tenant.push((e.tenant_id, vec![bytes])),
        }
    }
    let sends = by_tenant.into_iter().map(|(tenant, events)| async move {
        let channel = events_channel(&keys.prefix, &tenant);
        let keys = vec![
            events_meta(&keys.prefix, &tenant),
            events_history(&keys.prefix, &tenant),
        ];
        let mut args: Vec<Value> = vec![
            Value::from(channel),
            Value::from(i64::try_from(bounds.max_events).unwrap_or(i64::MAX)),
            Value::from(i64::try_from(bounds.max_age_ms).unwrap_or(i64::MAX)),
            Value::from(uuid::Uuid::new_v4().simple().to_string()),
        ];
        args.extend(events.into_iter().map(Value::Bytes));
        script()
            .evalsha_with_reload::<Value, _, _>(client, keys, args)
            .await
    });
    futures::future::try_join_all(sends).await?;
    Ok(())
}
