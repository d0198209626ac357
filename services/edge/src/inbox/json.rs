//! Threads as the REST API and live frames show them, in the seed's field
//! names (the columns of `conversations`).

use chrono::SecondsFormat;
use faro_proto::{
    channel_name,
    conversations::v1::{Channel, Conversation},
    from_timestamp,
};
use prost_types::Timestamp;
use serde_json::{Value, json};

pub(crate) fn time(t: Option<&Timestamp>) -> Value {
    from_timestamp(t).map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(SecondsFormat::Micros, true))
    })
}

fn opt(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_owned())
    }
}

/// A whole thread. `reader` adds the asking agent's unread count and read
/// marker (a live frame goes to every agent and carries neither).
pub(crate) fn conversation(c: &Conversation, reader: bool) -> Value {
    let mut v = json!({
        "id": c.id,
        "tenant_id": c.tenant_id,
        "location_id": c.location_id,
        "channel": Channel::try_from(c.channel).ok().and_then(channel_name).unwrap_or("unspecified"),
        "customer_id": c.customer_id,
        "customer_name": opt(&c.customer_name),
        "customer_phone": opt(&c.customer_phone),
        "customer_email": opt(&c.customer_email),
        "customer_user_id": opt(&c.customer_user_id),
        "channel_conversation_id": opt(&c.channel_conversation_id),
        "source_type": c.source_type,
        "status": c.status,
        "assigned_to_user_id": opt(&c.assigned_to_user_id),
        "lead_status": opt(&c.lead_status),
        "tags": c.tags,
        "roi_links": c.roi_links.iter().map(|l| json!({
            "kind": l.kind, "external_id": l.external_id, "source": l.source, "url": l.url,
        })).collect::<Vec<_>>(),
        "last_message_at": time(c.last_message_at.as_ref()),
        "created_at": time(c.created_at.as_ref()),
        "updated_at": time(c.updated_at.as_ref()),
        "version": c.version,
        "window": crate::events::window(c),
    });
    if reader && let Value::Object(o) = &mut v {
        o.insert("unread_count".into(), c.unread_count.into());
        o.insert("last_read_message_id".into(), opt(&c.last_read_message_id));
    }
    v
}
