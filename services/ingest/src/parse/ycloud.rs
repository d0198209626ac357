//! YCloud, a WhatsApp BSP: `{id: "evt_…", type, apiVersion, createTime, …}`.
//! Inbound messages mirror Meta's message objects, so they go through the
//! WhatsApp body rules; `whatsapp.message.updated` carries delivery statuses.
//! Accounts are the business's E.164 number (`to` inbound, `from` outbound).

use faro_proto::{
    conversations::v1::{Direction, StatusUpdate, channel_event::Kind},
    to_timestamp,
};
use serde_json::{Value, json};

use super::{
    Context, ParseError, Parsed, account, rfc3339, scope, str_at,
    whatsapp::{Party, delivery_status, message_event},
};

/// WhatsApp ids have no `+`; keep one thread whichever way a number arrives.
fn wa_id(number: &str) -> &str {
    number.trim_start_matches('+')
}

pub fn parse(root: &Value, ctx: &Context<'_>) -> Result<Parsed, ParseError> {
    let (Some(event_type), Some(event_id)) = (str_at(root, "/type"), str_at(root, "/id")) else {
        return Err(ParseError::Envelope(
            "a YCloud event needs `id` and `type`".into(),
        ));
    };
    let mut out = Parsed::default();
    let created = rfc3339(root.get("createTime")).unwrap_or(ctx.received_at);
    match event_type {
        "whatsapp.inbound_message.received" | "whatsapp.group.inbound_message.received" => {
            let m = root.get("whatsappInboundMessage").unwrap_or(&Value::Null);
            let (business, route) = ctx.account(m.get("to"));
            let (Some(business), Some(route)) = (business.as_deref(), route) else {
                out.reject_unverified(business.as_deref(), std::slice::from_ref(root));
                return Ok(out);
            };
            // The phone when YCloud shares it, else the business-scoped user id.
            let phone = str_at(m, "/from").map(wa_id).filter(|f| !f.is_empty());
            let user = str_at(m, "/fromUserId");
            let Some(from) = phone.or(user) else {
                out.reject("message has no customer (`from` or `fromUserId`)", root);
                return Ok(out);
            };
            // Meta's shape, keyed by the WhatsApp message id (what statuses name).
            let mut normalized = m.clone();
            if let (Some(obj), Some(wamid)) = (normalized.as_object_mut(), str_at(m, "/wamid")) {
                obj.insert("id".into(), Value::String(wamid.to_owned()));
            }
            let party = match str_at(m, "/groupId") {
                // A group is its own thread; the member only signs the message.
                Some(group) => Party {
                    customer: group,
                    customer_name: "",
                    customer_phone: "",
                    customer_user_id: "",
                    author: from,
                    business,
                    direction: Direction::Inbound,
                },
                None => Party {
                    customer: from,
                    customer_name: str_at(m, "/customerProfile/name").unwrap_or_default(),
                    customer_phone: phone.unwrap_or_default(),
                    customer_user_id: user.unwrap_or_default(),
                    author: from,
                    business,
                    direction: Direction::Inbound,
                },
            };
            let timestamp = rfc3339(m.get("sendTime")).unwrap_or(created);
            let metadata = json!({"provider": "ycloud", "event_id": event_id, "event": m});
            message_event(&normalized, route, &party, timestamp, metadata, &mut out);
        }
        "whatsapp.message.updated" => {
            let m = root.get("whatsappMessage").unwrap_or(&Value::Null);
            let (business, route) = ctx.account(m.get("from"));
            let Some(route) = route else {
                out.reject_unverified(business.as_deref(), std::slice::from_ref(root));
                return Ok(out);
            };
            let (Some(status), Some(wamid)) = (
                str_at(m, "/status").and_then(delivery_status),
                str_at(m, "/wamid"),
            ) else {
                out.reject("status is unknown or names no message (`wamid`)", root);
                return Ok(out);
            };
            let at = match str_at(m, "/status") {
                Some("delivered") => m.get("deliverTime"),
                Some("read") => m.get("readTime"),
                Some("sent") => m.get("sendTime"),
                _ => None,
            };
            let error = match str_at(m, "/status") {
                Some("failed") => json!({
                    "code": m.get("errorCode"),
                    "message": m.get("errorMessage"),
                    "whatsapp_api_error": m.get("whatsappApiError"),
                })
                .to_string(),
                _ => String::new(),
            };
            out.push(Kind::Status(StatusUpdate {
                scope: scope(route),
                channel_message_id: wamid.to_owned(),
                status: status.into(),
                timestamp: Some(to_timestamp(rfc3339(at).unwrap_or(created))),
                error_json: error,
                metadata_json: json!({"provider": "ycloud", "event_id": event_id, "event": m})
                    .to_string(),
            }));
        }
        // Templates, a number's quality or name, …: account events.
        other => {
            if !account::ycloud_event(root, other, event_id, created, ctx, &mut out) {
                out.reject(
                    format!("event type {other:?} is not a conversation event"),
                    root,
                );
            }
        }
    }
    Ok(out)
}
