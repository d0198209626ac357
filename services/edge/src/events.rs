//! Live events as the JSON text frames browsers receive.

use chrono::SecondsFormat;
use faro_proto::{
    channel_name, conversation_event_kind_name,
    conversations::v1::{
        AccountEvent, Channel, Conversation, ConversationEvent, ConversationEventKind, Direction,
        Message, SenderType,
    },
    direction_name, from_timestamp, sender_type_name,
    stream::v1::{Event, TypingState, event::Kind},
};
use prost_types::Timestamp;
use serde_json::{Value, json};

pub(crate) fn time(t: Option<&Timestamp>) -> Value {
    from_timestamp(t).map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true))
    })
}

pub(crate) fn channel(raw: i32) -> &'static str {
    Channel::try_from(raw)
        .ok()
        .and_then(channel_name)
        .unwrap_or("unspecified")
}

pub(crate) fn message(m: &Message) -> Value {
    json!({
        "id": m.id,
        "conversation_id": m.conversation_id,
        "location_id": m.location_id,
        "channel": channel(m.channel),
        "channel_message_id": m.channel_message_id,
        "direction": direction_name(Direction::try_from(m.direction).unwrap_or_default()),
        "sender_type": sender_type_name(SenderType::try_from(m.sender_type).unwrap_or_default()),
        "message_type": m.message_type,
        "text": m.text,
        "media_urls": m.media_urls,
        "sender_id": m.sender_id,
        "recipient_id": m.recipient_id,
        "timestamp": time(m.timestamp.as_ref()),
        "delivered_at": time(m.delivered_at.as_ref()),
        "read_at": time(m.read_at.as_ref()),
        "created_at": time(m.created_at.as_ref()),
        "status": (!m.status.is_empty()).then_some(m.status.as_str()),
        "status_error": raw(&m.status_error_json),
        "played_at": time(m.played_at.as_ref()),
        "failed_at": time(m.failed_at.as_ref()),
        "reactions": m.reactions.iter().map(|r| json!({
            "reactor_id": r.reactor_id, "emoji": r.emoji, "timestamp": time(r.timestamp.as_ref()),
        })).collect::<Vec<_>>(),
        "edited_at": time(m.edited_at.as_ref()),
        "edit_history": m.edit_history.iter().map(|v| json!({
            "text": v.text, "replaced_at": time(v.replaced_at.as_ref()),
        })).collect::<Vec<_>>(),
        "deleted_at": time(m.deleted_at.as_ref()),
        "reply_to_channel_message_id": (!m.reply_to_channel_message_id.is_empty())
            .then_some(m.reply_to_channel_message_id.as_str()),
        "media": m.media.iter().map(|x| json!({
            "kind": x.kind, "id": x.id, "mime_type": x.mime_type, "sha256": x.sha256,
            "caption": x.caption, "filename": x.filename, "url": x.url,
        })).collect::<Vec<_>>(),
        "referral": raw(&m.referral_json),
        "forwarded": m.forwarded,
        "standby": m.standby,
    })
}

/// A conversation event: a system line in its thread (or a page-level notice
/// when `conversation_id` is null), never the customer speaking.
fn conversation_event(e: &ConversationEvent) -> Value {
    json!({
        "id": e.id,
        "conversation_id": (!e.conversation_id.is_empty()).then_some(e.conversation_id.as_str()),
        "location_id": e.location_id,
        "channel_account_id": e.channel_account_id,
        "channel": channel(e.channel),
        "customer_id": (!e.customer_id.is_empty()).then_some(e.customer_id.as_str()),
        "kind": ConversationEventKind::try_from(e.kind)
            .ok()
            .and_then(conversation_event_kind_name)
            .unwrap_or("unknown"),
        "timestamp": time(e.timestamp.as_ref()),
        "created_at": time(e.created_at.as_ref()),
        "raw": raw(&e.raw_json),
    })
}

/// Raw platform JSON carried as a string, embedded as JSON (null if absent).
pub(crate) fn raw(s: &str) -> Value {
    if s.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

/// A thread's customer-service window (issue 14) as agents see it: when
/// the customer last wrote, when the 24-hour window closes and the seconds
/// left then; null when the customer never wrote or the channel has none.
pub(crate) fn window(c: &Conversation) -> Value {
    let Some(closes) = c.window_closes_at.as_ref() else {
        return Value::Null;
    };
    let left = closes.seconds - chrono::Utc::now().timestamp();
    json!({
        "last_inbound_at": time(c.last_inbound_at.as_ref()),
        "closes_at": time(Some(closes)),
        "seconds_left": left.max(0),
    })
}

fn conversation(c: &Conversation) -> Value {
    json!({
        "id": c.id,
        "location_id": c.location_id,
        "channel": channel(c.channel),
        "customer_id": c.customer_id,
        "customer_name": c.customer_name,
        "customer_phone": c.customer_phone,
        "customer_user_id": c.customer_user_id,
        "status": c.status,
        "last_message_at": time(c.last_message_at.as_ref()),
        "window": window(c),
    })
}

/// An account event: what the platform said about the account, raw.
fn account_event(a: &AccountEvent) -> Value {
    json!({
        "id": a.id,
        "channel_account_id": a.channel_account_id,
        "channel": channel(a.channel),
        "external_account_id": a.external_account_id,
        "field": a.field,
        "value": raw(&a.value_json),
        "timestamp": time(a.timestamp.as_ref()),
        "received_at": time(a.received_at.as_ref()),
    })
}

/// The JSON frame for one event and its `type`; `None` for kinds this edge
/// does not know. Messages, the frames of nearly every event, are written
/// straight from the protobuf (`message_frame.rs`); the rest through a `Value`.
pub(crate) fn render(e: &Event) -> Option<(&'static str, String)> {
    match e.kind.as_ref()? {
        Kind::MessageCreated(mc) => {
            let kind = "message.created";
            let (m, c) = (mc.message.as_ref(), mc.conversation.as_ref());
            Some((kind, crate::message_frame::render(e, kind, m, c)))
        }
        Kind::MessageUpdated(mu) => {
            let kind = "message.updated";
            let (m, c) = (mu.message.as_ref(), mu.conversation.as_ref());
            Some((kind, crate::message_frame::render(e, kind, m, c)))
        }
        _ => render_as_value(e),
    }
}

/// [`render`] through a `serde_json::Value`, for every kind.
pub(crate) fn render_as_value(e: &Event) -> Option<(&'static str, String)> {
    let (kind, body) = match e.kind.as_ref()? {
        Kind::MessageCreated(mc) => (
            "message.created",
            json!({
                "message": mc.message.as_ref().map(message),
                "conversation": mc.conversation.as_ref().map(conversation),
            }),
        ),
        Kind::MessageUpdated(mu) => (
            "message.updated",
            json!({
                "message": mu.message.as_ref().map(message),
                "conversation": mu.conversation.as_ref().map(conversation),
            }),
        ),
        Kind::ConversationEvent(ce) => (
            "conversation.event",
            json!({
                "event": ce.event.as_ref().map(conversation_event),
                "conversation": ce.conversation.as_ref().map(conversation),
            }),
        ),
        Kind::AccountEvent(a) => ("account.event", json!({"account_event": account_event(a)})),
        Kind::ConversationUpdated(u) => (
            "conversation.updated",
            json!({
                "conversation": u.conversation.as_ref().map(|c| crate::inbox::conversation_json(c, false)),
                "agent_id": u.agent_id,
                "changed": u.changed,
                "last_read_message_id": (!u.last_read_message_id.is_empty())
                    .then_some(u.last_read_message_id.as_str()),
            }),
        ),
        Kind::Typing(t) => (
            "typing",
            json!({
                "conversation_id": t.conversation_id,
                "agent": t.agent,
                "state": match TypingState::try_from(t.state) {
                    Ok(TypingState::Start) => "start",
                    Ok(TypingState::Stop) => "stop",
                    _ => return None,
                },
            }),
        ),
    };
    let mut frame = json!({
        "type": kind,
        "id": e.id,
        "tenant_id": e.tenant_id,
        "location_id": e.location_id,
        "published_at": time(e.published_at.as_ref()),
        "position": (!e.epoch.is_empty()).then(|| format!("{}:{}", e.epoch, e.offset)),
    });
    if let (Value::Object(f), Value::Object(b)) = (&mut frame, body) {
        f.extend(b);
    }
    Some((kind, frame.to_string()))
}

/// The agent an ephemeral event comes from (its own sockets skip it).
pub(crate) fn sender(e: &Event) -> Option<String> {
    match e.kind.as_ref()? {
        Kind::Typing(t) => Some(t.agent.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use faro_proto::stream::v1::TypingIndicator;

    use super::*;

    fn typing(state: TypingState) -> Event {
        Event {
            id: "e".into(),
            tenant_id: "t".into(),
            location_id: "l".into(),
            kind: Some(Kind::Typing(TypingIndicator {
                conversation_id: "c".into(),
                agent: "agent-a".into(),
                state: state.into(),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn a_typing_indicator_is_a_typing_frame_without_a_position() {
        let (kind, json) = render(&typing(TypingState::Stop)).expect("rendered");
        let f: Value = serde_json::from_str(&json).expect("json");
        assert_eq!(kind, "typing");
        assert_eq!(
            (
                f["type"].as_str(),
                f["conversation_id"].as_str(),
                f["agent"].as_str()
            ),
            (Some("typing"), Some("c"), Some("agent-a"))
        );
        assert_eq!(
            (f["state"].as_str(), f["location_id"].as_str()),
            (Some("stop"), Some("l"))
        );
        assert!(f["position"].is_null());
        assert_eq!(
            sender(&typing(TypingState::Start)).as_deref(),
            Some("agent-a")
        );
        // A state this edge does not know is not shown.
        assert!(render(&typing(TypingState::Unspecified)).is_none());
    }
}
