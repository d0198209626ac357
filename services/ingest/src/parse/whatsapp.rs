//! WhatsApp Cloud API webhooks (`object: whatsapp_business_account`).
//!
//! Every entry, change, message and status is walked: Meta batches, and peers
//! that read only `entry[0].changes[0].messages[0]` lose the rest. The message
//! body rules are shared with YCloud, whose inbound messages mirror Meta's.

use chrono::{DateTime, Utc};
use faro_proto::{
    conversations::v1::{
        Channel, DeliveryStatus, Direction, InboundMessage, MediaRef, MessageDeletion, MessageEdit,
        Reaction, StatusUpdate, channel_event::Kind,
    },
    ingest::v1::Route,
    to_timestamp,
};
use serde_json::Value;

use super::{
    Context, ParseError, Parsed, account, control,
    customers::{Meta, history, thread_message},
    raw, scope, str_at, string_at, synthetic_id, unix_seconds,
};

/// The readable part of a message: what an agent sees before opening it.
pub(crate) struct Body {
    pub message_type: String,
    pub text: String,
    pub media: Vec<MediaRef>,
    pub reply_to: String,
    pub forwarded: bool,
    pub referral: String,
}

fn media_ref(kind: &str, o: &Value) -> MediaRef {
    let voice = kind == "audio" && o.get("voice").and_then(Value::as_bool) == Some(true);
    MediaRef {
        kind: if voice { "voice".into() } else { kind.into() },
        id: string_at(o, "/id"),
        mime_type: string_at(o, "/mime_type"),
        sha256: string_at(o, "/sha256"),
        caption: string_at(o, "/caption"),
        filename: string_at(o, "/filename"),
        url: str_at(o, "/url")
            .or_else(|| str_at(o, "/link"))
            .unwrap_or_default()
            .to_owned(),
    }
}

fn location_text(l: &Value) -> String {
    let named: Vec<&str> = [str_at(l, "/name"), str_at(l, "/address")]
        .into_iter()
        .flatten()
        .collect();
    if !named.is_empty() {
        return named.join(", ");
    }
    match (l.get("latitude"), l.get("longitude")) {
        (Some(lat), Some(lon)) => format!("{lat}, {lon}"),
        _ => String::new(),
    }
}

fn contacts_text(cs: Option<&Value>) -> String {
    cs.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| str_at(c, "/name/formatted_name"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Types this version understands; anything else is kept as `unsupported`.
const KNOWN: &[&str] = &[
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "button",
    "order",
    "system",
    "unsupported",
];

pub(crate) fn body(m: &Value) -> Body {
    let kind = str_at(m, "/type").unwrap_or("unsupported");
    let inner = m.get(kind).unwrap_or(&Value::Null);
    let mut media = Vec::new();
    let text = match kind {
        "text" => string_at(inner, "/body"),
        "image" | "video" | "document" | "sticker" | "audio" => {
            media.push(media_ref(kind, inner));
            string_at(inner, "/caption")
        }
        "location" => location_text(inner),
        "contacts" => contacts_text(m.get("contacts")),
        "interactive" => str_at(inner, "/button_reply/title")
            .or_else(|| str_at(inner, "/list_reply/title"))
            .or_else(|| str_at(inner, "/nfm_reply/body"))
            .unwrap_or_default()
            .to_owned(),
        "button" => string_at(inner, "/text"),
        "order" => string_at(inner, "/text"),
        "system" => string_at(inner, "/body"),
        _ => String::new(),
    };
    let forwarded = ["/context/forwarded", "/context/frequently_forwarded"]
        .iter()
        .any(|p| crate::parse::at(m, p).and_then(Value::as_bool) == Some(true));
    Body {
        message_type: if KNOWN.contains(&kind) {
            kind
        } else {
            "unsupported"
        }
        .to_owned(),
        text,
        media,
        reply_to: string_at(m, "/context/id"),
        forwarded,
        referral: raw(m.get("referral")),
    }
}

/// Who the message is with, from the business's point of view.
pub(crate) struct Party<'a> {
    /// The thread's customer: the phone number (`wa_id`), the business-scoped
    /// user id (BSUID) when Meta withholds the phone of a username adopter, or
    /// the group a group message was written in.
    pub customer: &'a str,
    pub customer_name: &'a str,
    pub customer_phone: &'a str,
    pub customer_user_id: &'a str,
    /// Who wrote an inbound message: the customer, or in a group the member.
    pub author: &'a str,
    pub business: &'a str,
    pub direction: Direction,
}

/// Turns one message object into its event: a message, or a reaction, edit or
/// revoke aimed at another message.
pub(crate) fn message_event(
    m: &Value,
    route: &Route,
    party: &Party<'_>,
    timestamp: DateTime<Utc>,
    metadata: Value,
    out: &mut Parsed,
) {
    let ts = Some(to_timestamp(timestamp));
    match str_at(m, "/type") {
        Some("reaction") => {
            if let Some(target) = str_at(m, "/reaction/message_id") {
                let reactor = match party.direction {
                    Direction::Outbound => party.business,
                    _ => party.author,
                };
                out.push(Kind::Reaction(Reaction {
                    scope: scope(route),
                    target_channel_message_id: target.to_owned(),
                    reactor_id: reactor.to_owned(),
                    emoji: string_at(m, "/reaction/emoji"),
                    timestamp: ts,
                }));
                return;
            }
        }
        Some("edit") => {
            if let Some(target) = str_at(m, "/edit/original_message_id") {
                let edited = crate::parse::at(m, "/edit/message").map(body);
                out.push(Kind::Edit(MessageEdit {
                    scope: scope(route),
                    target_channel_message_id: target.to_owned(),
                    text: edited.map(|b| b.text).unwrap_or_default(),
                    timestamp: ts,
                }));
                return;
            }
        }
        Some("revoke") => {
            if let Some(target) = str_at(m, "/revoke/original_message_id") {
                out.push(Kind::Deletion(MessageDeletion {
                    scope: scope(route),
                    target_channel_message_id: target.to_owned(),
                    timestamp: ts,
                }));
                return;
            }
        }
        _ => {}
    }
    // Everything else, including a reaction/edit/revoke missing its target, is a message.
    let b = body(m);
    let (sender, recipient) = match party.direction {
        Direction::Outbound => (party.business, party.customer),
        _ => (party.author, party.business),
    };
    out.push(Kind::Message(InboundMessage {
        tenant_id: route.tenant_id.clone(),
        location_id: route.location_id.clone(),
        channel_account_id: route.channel_account_id.clone(),
        channel: Channel::Whatsapp.into(),
        customer_id: party.customer.to_owned(),
        customer_name: party.customer_name.to_owned(),
        customer_phone: party.customer_phone.to_owned(),
        channel_message_id: str_at(m, "/id").map_or_else(|| synthetic_id(m), str::to_owned),
        message_type: b.message_type,
        text: b.text,
        direction: party.direction.into(),
        sender_id: sender.to_owned(),
        recipient_id: recipient.to_owned(),
        timestamp: ts,
        media_urls: b
            .media
            .iter()
            .map(|m| m.url.clone())
            .filter(|u| !u.is_empty())
            .collect(),
        metadata_json: metadata.to_string(),
        reply_to_channel_message_id: b.reply_to,
        media: b.media,
        referral_json: b.referral,
        customer_user_id: party.customer_user_id.to_owned(),
        forwarded: b.forwarded,
        // Set by the caller for what arrived on `standby`.
        standby: false,
    }));
}

pub(crate) fn delivery_status(s: &str) -> Option<DeliveryStatus> {
    Some(match s {
        "sent" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "played" => DeliveryStatus::Played,
        "failed" => DeliveryStatus::Failed,
        _ => return None,
    })
}

pub fn parse(root: &Value, ctx: &Context<'_>) -> Result<Parsed, ParseError> {
    let object = str_at(root, "/object").unwrap_or_default();
    if object != "whatsapp_business_account" {
        return Err(ParseError::Envelope(format!(
            "object is {object:?}, expected \"whatsapp_business_account\""
        )));
    }
    let mut out = Parsed::default();
    for entry in root
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !entry.is_object() {
            out.reject("entry is not an object", entry);
            continue;
        }
        let waba = entry.get("id").cloned().unwrap_or(Value::Null);
        for change in entry
            .get("changes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let value = change.get("value").unwrap_or(&Value::Null);
            match str_at(change, "/field") {
                Some("messages") => {
                    messages(&waba, value, "messages", Direction::Inbound, ctx, &mut out)
                }
                Some("history") => history(&waba, value, ctx, &mut out),
                Some("smb_message_echoes") => {
                    messages(
                        &waba,
                        value,
                        "message_echoes",
                        Direction::Outbound,
                        ctx,
                        &mut out,
                    );
                }
                Some("standby") => standby(&waba, value, ctx, &mut out),
                // Account notices (templates, quality, alerts, …) have no
                // thread to go in: account events, routed by the WABA.
                Some(field) => account::whatsapp_change(entry, change, field, ctx, &mut out),
                None => out.reject("the change has no field: not a conversation event", change),
            }
        }
    }
    Ok(out)
}

pub(crate) fn items<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn messages(
    waba: &Value,
    value: &Value,
    key: &str,
    direction: Direction,
    ctx: &Context<'_>,
    out: &mut Parsed,
) {
    for k in [key, "statuses"] {
        if let Some(v) = value.get(k).filter(|v| !v.is_array()) {
            out.reject(format!("`{k}` is not an array"), v);
        }
    }
    let messages = items(value, key);
    let statuses = items(value, "statuses");
    let (phone_number_id, route) =
        ctx.account(crate::parse::at(value, "/metadata/phone_number_id"));
    let Some(route) = route else {
        out.reject_unverified(phone_number_id.as_deref(), messages);
        out.reject_unverified(phone_number_id.as_deref(), statuses);
        return;
    };
    let phone_number_id = phone_number_id.as_deref().unwrap_or_default();
    let business = str_at(value, "/metadata/display_phone_number").unwrap_or(phone_number_id);
    for e in items(value, "errors") {
        out.reject("an error notice from the platform, not a message", e);
    }
    let contacts = items(value, "contacts");
    let meta = Meta {
        waba,
        phone_number_id,
        business,
    };
    for m in messages {
        thread_message(m, contacts, direction, route, &meta, None, ctx, out);
    }
    for s in statuses {
        let Some(status) = str_at(s, "/status").and_then(delivery_status) else {
            out.reject(
                format!(
                    "unknown status {:?}",
                    str_at(s, "/status").unwrap_or_default()
                ),
                s,
            );
            continue;
        };
        let Some(id) = str_at(s, "/id") else {
            out.reject("status names no message (`id`)", s);
            continue;
        };
        out.push(Kind::Status(StatusUpdate {
            scope: scope(route),
            channel_message_id: id.to_owned(),
            status: status.into(),
            timestamp: Some(to_timestamp(
                unix_seconds(s.get("timestamp")).unwrap_or(ctx.received_at),
            )),
            error_json: raw(s.get("errors")),
            metadata_json: s.to_string(),
        }));
    }
}

/// `field: standby`: the conversation another sender (Meta's business agent)
/// handles. Its `messages` are the customer's words and its `message_echoes`
/// that sender's replies: both stored, marked standby; its `statuses` apply
/// as any others.
fn standby(waba: &Value, value: &Value, ctx: &Context<'_>, out: &mut Parsed) {
    let before = out.events.len();
    messages(waba, value, "messages", Direction::Inbound, ctx, out);
    if value.get("message_echoes").is_some() {
        // Only the echoes (and what identifies them): the rest was read above.
        let mut echoes = value.clone();
        if let Some(o) = echoes.as_object_mut() {
            for key in ["messages", "statuses", "errors"] {
                o.remove(key);
            }
        }
        messages(
            waba,
            &echoes,
            "message_echoes",
            Direction::Outbound,
            ctx,
            out,
        );
    }
    control::mark_standby(&mut out.events[before..]);
}
