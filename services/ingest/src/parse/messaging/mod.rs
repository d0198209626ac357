//! Messenger (`object: page`) and Instagram (`object: instagram`) webhooks:
//! `entry[].id` is the Page or Instagram account, `entry[].messaging[]` the
//! items, timestamps in milliseconds. The two share one format with a few
//! Instagram-only fields (`is_deleted`, `read.mid`, story replies).

use chrono::{DateTime, Utc};
use faro_proto::{
    conversations::v1::{
        Channel, ConversationEventKind, DeliveryStatus, Direction, EventScope, InboundMessage,
        MessageDeletion, MessageEdit, Reaction, StatusUpdate, Watermark, channel_event::Kind,
    },
    ingest::v1::Route,
    to_timestamp,
};
use serde_json::{Value, json};

mod message;

use message::message;

use super::control::id_at;

use super::{
    Context, ParseError, Parsed, control, raw, scope, str_at, string_at, synthetic_id, unix_millis,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Messenger,
    Instagram,
}

impl Platform {
    fn object(self) -> &'static str {
        match self {
            Self::Messenger => "page",
            Self::Instagram => "instagram",
        }
    }

    fn channel(self) -> Channel {
        match self {
            Self::Messenger => Channel::FacebookMessenger,
            Self::Instagram => Channel::InstagramDm,
        }
    }
}

pub fn parse(root: &Value, platform: Platform, ctx: &Context<'_>) -> Result<Parsed, ParseError> {
    let object = str_at(root, "/object").unwrap_or_default();
    if object != platform.object() {
        return Err(ParseError::Envelope(format!(
            "object is {object:?}, expected {:?}",
            platform.object()
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
        let items = entry
            .get("messaging")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        // What another app's thread carries (handover protocol): still the
        // customer's words, or that app's replies.
        let standby = entry
            .get("standby")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        // Feed changes (comments, mentions) are delivered beside `messaging`
        // but are not this inbox's conversations.
        for key in ["changes"] {
            for other in entry
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.reject(format!("`{key}` items are not conversation events"), other);
            }
        }
        let (account, route) = ctx.account(entry.get("id"));
        let (Some(account), Some(route)) = (account.as_deref(), route) else {
            out.reject_unverified(account.as_deref(), items);
            out.reject_unverified(account.as_deref(), standby);
            continue;
        };
        for item in items {
            item_events(item, account, route, platform, ctx, &mut out);
        }
        for item in standby {
            let before = out.events.len();
            item_events(item, account, route, platform, ctx, &mut out);
            control::mark_standby(&mut out.events[before..]);
        }
    }
    Ok(out)
}

fn item_events(
    item: &Value,
    account: &str,
    route: &Route,
    platform: Platform,
    ctx: &Context<'_>,
    out: &mut Parsed,
) {
    let sender = id_at(item, "/sender/id");
    let recipient = id_at(item, "/recipient/id");
    let timestamp = unix_millis(item.get("timestamp")).unwrap_or(ctx.received_at);
    let ts = Some(to_timestamp(timestamp));
    // An echo is the business's own message: its customer is the recipient,
    // whatever id the business sends under (Instagram echoes may carry an id
    // other than `entry.id`). Otherwise the customer is whoever is not the
    // business account.
    let echo = crate::parse::at(item, "/message/is_echo").and_then(Value::as_bool) == Some(true);
    let customer = if echo || sender == account {
        recipient.clone()
    } else {
        sender.clone()
    };
    // Handover, opt-ins, policy enforcement, …: system lines, with or
    // without a customer, never the customer speaking.
    if let Some(kind) = control::kind(item) {
        control::push(out, route, account, kind, item, timestamp);
        return;
    }
    if sender.is_empty() || customer.is_empty() {
        // Conversations would refuse it, and with it the whole job.
        out.reject(
            "item has no sender or no customer (`sender.id`, `recipient.id`)",
            item,
        );
        return;
    }

    if let Some(r) = item.get("reaction")
        && let Some(target) = str_at(r, "/mid")
    {
        let removed = str_at(r, "/action") == Some("unreact");
        out.push(Kind::Reaction(Reaction {
            scope: scope(route),
            target_channel_message_id: target.to_owned(),
            reactor_id: sender,
            emoji: if removed {
                String::new()
            } else {
                str_at(r, "/emoji")
                    .or_else(|| str_at(r, "/reaction"))
                    .unwrap_or("❤")
                    .to_owned()
            },
            timestamp: ts,
        }));
        return;
    }
    if let Some(e) = item.get("message_edit")
        && let Some(target) = str_at(e, "/mid")
    {
        out.push(Kind::Edit(MessageEdit {
            scope: scope(route),
            target_channel_message_id: target.to_owned(),
            text: string_at(e, "/text"),
            timestamp: ts,
        }));
        return;
    }
    if let Some(d) = item.get("delivery") {
        // A delivery has no timestamp of its own (Meta documents none); its
        // watermark is when the messages were delivered. The receive time is
        // only a last resort: a retry of the webhook would move it.
        let mark = unix_millis(d.get("watermark"));
        let delivered = mark.unwrap_or(timestamp);
        let before = out.events.len();
        for mid in d
            .get("mids")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            out.push(status(
                route,
                mid,
                DeliveryStatus::Delivered,
                delivered,
                item,
            ));
        }
        if let Some(w) = mark {
            out.push(watermark(route, &customer, DeliveryStatus::Delivered, w));
        }
        if out.events.len() == before {
            out.reject(
                "delivery names no message (`mids`) and no `watermark`",
                item,
            );
        }
        return;
    }
    if let Some(r) = item.get("read") {
        let before = out.events.len();
        if let Some(mid) = str_at(r, "/mid") {
            out.push(status(route, mid, DeliveryStatus::Read, timestamp, item));
        }
        if let Some(w) = unix_millis(r.get("watermark")) {
            out.push(watermark(route, &customer, DeliveryStatus::Read, w));
        }
        if out.events.len() == before {
            out.reject("read names no message (`mid`) and no `watermark`", item);
        }
        return;
    }
    if let Some(m) = item.get("message") {
        if m.get("is_deleted").and_then(Value::as_bool) == Some(true)
            && let Some(target) = str_at(m, "/mid")
        {
            out.push(Kind::Deletion(MessageDeletion {
                scope: scope(route),
                target_channel_message_id: target.to_owned(),
                timestamp: ts,
            }));
            return;
        }
        let echo = echo || sender == account;
        if echo && !ctx.meta_app_id.is_empty() && id_at(m, "/app_id") == ctx.meta_app_id {
            // Sent by FARO itself through this app: already in the thread.
            out.ignored += 1;
            return;
        }
        let direction = if echo {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        out.push(Kind::Message(message(
            item, m, route, platform, &customer, direction, timestamp,
        )));
        return;
    }
    // Postbacks and referrals: a message of their kind. An event of a type
    // FARO does not know is no message at all: a conversation event, kept raw.
    let Some(kind) = ["postback", "referral"]
        .into_iter()
        .find(|k| item.get(*k).is_some())
    else {
        control::push(
            out,
            route,
            account,
            ConversationEventKind::Unknown,
            item,
            timestamp,
        );
        return;
    };
    let inner = item.get(kind).unwrap_or(&Value::Null);
    let id = str_at(inner, "/mid").map_or_else(|| synthetic_id(item), str::to_owned);
    out.push(Kind::Message(InboundMessage {
        tenant_id: route.tenant_id.clone(),
        location_id: route.location_id.clone(),
        channel_account_id: route.channel_account_id.clone(),
        channel: platform.channel().into(),
        customer_id: customer.clone(),
        channel_message_id: id,
        message_type: kind.to_owned(),
        text: string_at(inner, "/title"),
        direction: Direction::Inbound.into(),
        sender_id: sender,
        recipient_id: recipient,
        timestamp: ts,
        referral_json: match kind {
            "postback" => raw(inner.get("referral")),
            "referral" => inner.to_string(),
            _ => String::new(),
        },
        metadata_json: metadata(platform, item),
        ..Default::default()
    }));
}

fn metadata(platform: Platform, item: &Value) -> String {
    let provider = match platform {
        Platform::Messenger => "messenger",
        Platform::Instagram => "instagram",
    };
    json!({"provider": provider, "event": item}).to_string()
}

fn status(
    route: &Route,
    mid: &str,
    status: DeliveryStatus,
    at: DateTime<Utc>,
    item: &Value,
) -> Kind {
    Kind::Status(StatusUpdate {
        scope: scope(route),
        channel_message_id: mid.to_owned(),
        status: status.into(),
        timestamp: Some(to_timestamp(at)),
        error_json: String::new(),
        metadata_json: item.to_string(),
    })
}

fn watermark(route: &Route, customer: &str, status: DeliveryStatus, at: DateTime<Utc>) -> Kind {
    Kind::Watermark(Watermark {
        scope: Some(EventScope {
            tenant_id: route.tenant_id.clone(),
            location_id: route.location_id.clone(),
            channel: route.channel,
        }),
        customer_id: customer.to_owned(),
        status: status.into(),
        watermark: Some(to_timestamp(at)),
    })
}

#[cfg(test)]
mod tests {
    use faro_proto::conversations::v1::ChannelEvent;

    use super::*;

    /// The events' times, in order, for a payload received at `received_ms`.
    fn times(body: &Value, received_ms: i64) -> Vec<i64> {
        let routes = [Route {
            external_account_id: "P1".into(),
            channel: Channel::FacebookMessenger.into(),
            ..Default::default()
        }];
        let ctx = Context {
            routes: &routes,
            meta_app_id: "",
            received_at: DateTime::from_timestamp_millis(received_ms).expect("time"),
        };
        let parsed = parse(body, Platform::Messenger, &ctx).expect("parsed");
        parsed
            .events
            .iter()
            .map(|e: &ChannelEvent| match &e.kind {
                Some(Kind::Status(s)) => s.timestamp,
                Some(Kind::Watermark(w)) => w.watermark,
                other => panic!("unexpected {other:?}"),
            })
            .map(|t| {
                let t = t.expect("a time");
                t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
            })
            .collect()
    }

    #[test]
    fn a_story_attachment_keeps_its_story_media_url() {
        let routes = [Route {
            external_account_id: "IG1".into(),
            channel: Channel::InstagramDm.into(),
            ..Default::default()
        }];
        let ctx = Context {
            routes: &routes,
            meta_app_id: "",
            received_at: DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
        };
        let body = json!({"object": "instagram", "entry": [{"id": "IG1", "messaging": [{
            "sender": {"id": "U1"}, "recipient": {"id": "IG1"}, "timestamp": 1_749_416_389_000_i64,
            "message": {"mid": "m1", "attachments": [{"type": "story_mention",
                "payload": {"story_media_url": "https://lookaside.fbsbx.com/story"}}]}}]}]});
        let parsed = parse(&body, Platform::Instagram, &ctx).expect("parsed");
        let Some(Kind::Message(m)) = &parsed.events[0].kind else {
            panic!("a message: {parsed:?}");
        };
        assert_eq!(m.media[0].url, "https://lookaside.fbsbx.com/story");
        assert_eq!(m.media_urls, ["https://lookaside.fbsbx.com/story"]);
    }

    #[test]
    fn a_delivery_is_dated_by_its_watermark_not_by_its_receipt() {
        // Meta's documented delivery: no `timestamp`.
        let body = json!({"object": "page", "entry": [{"id": "P1", "messaging": [{
            "sender": {"id": "U1"}, "recipient": {"id": "P1"},
            "delivery": {"mids": ["mid.1"], "watermark": 1_458_668_856_253_i64}}]}]});
        let watermark = 1_458_668_856_253;
        assert_eq!(times(&body, 1_700_000_000_000), [watermark, watermark]);
        assert_eq!(
            times(&body, 1_700_000_999_000),
            [watermark, watermark],
            "a retry received later says the same"
        );
    }
}
