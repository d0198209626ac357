//! The live frame of a new or changed message, written straight from the
//! protobuf by serde: every inbound message is rendered once, and building it
//! as a `serde_json::Value` (a map entry, a key and a copied string per field)
//! was a fifth of the edge's instructions per webhook (docs/BENCHMARKS.md).
//!
//! The bytes are those [`super::events::message`] gives through a `Value`:
//! keys in the same (sorted) order, the same values; a test holds the two
//! together. Fields are declared in alphabetical order for that reason.

use faro_proto::{
    conversations::v1::{Conversation, Direction, Message, SenderType},
    direction_name, sender_type_name,
    stream::v1::Event,
};
use prost_types::Timestamp;
use serde::Serialize;
use serde_json::Value;

use crate::events::{channel, raw};

/// RFC 3339 in milliseconds, as [`crate::events::time`] writes it.
fn time(t: Option<&Timestamp>) -> Option<String> {
    faro_proto::from_timestamp(t).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn some(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

#[derive(Serialize)]
struct Frame<'a> {
    conversation: Option<ConversationJson<'a>>,
    id: &'a str,
    location_id: &'a str,
    message: Option<MessageJson<'a>>,
    position: Option<String>,
    published_at: Option<String>,
    tenant_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct ConversationJson<'a> {
    channel: &'static str,
    customer_id: &'a str,
    customer_name: &'a str,
    customer_phone: &'a str,
    customer_user_id: &'a str,
    id: &'a str,
    last_message_at: Option<String>,
    location_id: &'a str,
    status: &'a str,
    window: Window,
}

/// [`crate::events::window`]'s shape; `null` when the thread has none.
#[derive(Serialize)]
#[serde(untagged)]
enum Window {
    None(()),
    Open {
        closes_at: Option<String>,
        last_inbound_at: Option<String>,
        seconds_left: i64,
    },
}

fn window(c: &Conversation) -> Window {
    let Some(closes) = c.window_closes_at.as_ref() else {
        return Window::None(());
    };
    Window::Open {
        closes_at: time(Some(closes)),
        last_inbound_at: time(c.last_inbound_at.as_ref()),
        seconds_left: (closes.seconds - chrono::Utc::now().timestamp()).max(0),
    }
}

#[derive(Serialize)]
struct MessageJson<'a> {
    channel: &'static str,
    channel_message_id: &'a str,
    conversation_id: &'a str,
    created_at: Option<String>,
    deleted_at: Option<String>,
    delivered_at: Option<String>,
    direction: &'static str,
    edit_history: Vec<Edit<'a>>,
    edited_at: Option<String>,
    failed_at: Option<String>,
    forwarded: bool,
    id: &'a str,
    location_id: &'a str,
    media: Vec<Media<'a>>,
    media_urls: &'a [String],
    message_type: &'a str,
    played_at: Option<String>,
    reactions: Vec<Reaction<'a>>,
    read_at: Option<String>,
    recipient_id: &'a str,
    referral: Value,
    reply_to_channel_message_id: Option<&'a str>,
    sender_id: &'a str,
    sender_type: &'static str,
    standby: bool,
    status: Option<&'a str>,
    status_error: Value,
    text: &'a str,
    timestamp: Option<String>,
}

#[derive(Serialize)]
struct Edit<'a> {
    replaced_at: Option<String>,
    text: &'a str,
}

#[derive(Serialize)]
struct Media<'a> {
    caption: &'a str,
    filename: &'a str,
    id: &'a str,
    kind: &'a str,
    mime_type: &'a str,
    sha256: &'a str,
    url: &'a str,
}

#[derive(Serialize)]
struct Reaction<'a> {
    emoji: &'a str,
    reactor_id: &'a str,
    timestamp: Option<String>,
}

fn message(m: &Message) -> MessageJson<'_> {
    MessageJson {
        channel: channel(m.channel),
        channel_message_id: &m.channel_message_id,
        conversation_id: &m.conversation_id,
        created_at: time(m.created_at.as_ref()),
        deleted_at: time(m.deleted_at.as_ref()),
        delivered_at: time(m.delivered_at.as_ref()),
        direction: direction_name(Direction::try_from(m.direction).unwrap_or_default()),
        edit_history: m
            .edit_history
            .iter()
            .map(|v| Edit {
                replaced_at: time(v.replaced_at.as_ref()),
                text: &v.text,
            })
            .collect(),
        edited_at: time(m.edited_at.as_ref()),
        failed_at: time(m.failed_at.as_ref()),
        forwarded: m.forwarded,
        id: &m.id,
        location_id: &m.location_id,
        media: m
            .media
            .iter()
            .map(|x| Media {
                caption: &x.caption,
                filename: &x.filename,
                id: &x.id,
                kind: &x.kind,
                mime_type: &x.mime_type,
                sha256: &x.sha256,
                url: &x.url,
            })
            .collect(),
        media_urls: &m.media_urls,
        message_type: &m.message_type,
        played_at: time(m.played_at.as_ref()),
        reactions: m
            .reactions
            .iter()
            .map(|r| Reaction {
                emoji: &r.emoji,
                reactor_id: &r.reactor_id,
                timestamp: time(r.timestamp.as_ref()),
            })
            .collect(),
        read_at: time(m.read_at.as_ref()),
        recipient_id: &m.recipient_id,
        referral: raw(&m.referral_json),
        reply_to_channel_message_id: some(&m.reply_to_channel_message_id),
        sender_id: &m.sender_id,
        sender_type: sender_type_name(SenderType::try_from(m.sender_type).unwrap_or_default()),
        standby: m.standby,
        status: some(&m.status),
        status_error: raw(&m.status_error_json),
        text: &m.text,
        timestamp: time(m.timestamp.as_ref()),
    }
}

fn conversation(c: &Conversation) -> ConversationJson<'_> {
    ConversationJson {
        channel: channel(c.channel),
        customer_id: &c.customer_id,
        customer_name: &c.customer_name,
        customer_phone: &c.customer_phone,
        customer_user_id: &c.customer_user_id,
        id: &c.id,
        last_message_at: time(c.last_message_at.as_ref()),
        location_id: &c.location_id,
        status: &c.status,
        window: window(c),
    }
}

/// The `message.created` or `message.updated` frame of `e`.
pub(crate) fn render(
    e: &Event,
    kind: &'static str,
    m: Option<&Message>,
    c: Option<&Conversation>,
) -> String {
    let frame = Frame {
        conversation: c.map(conversation),
        id: &e.id,
        location_id: &e.location_id,
        message: m.map(message),
        position: (!e.epoch.is_empty()).then(|| format!("{}:{}", e.epoch, e.offset)),
        published_at: time(e.published_at.as_ref()),
        tenant_id: &e.tenant_id,
        kind,
    };
    // Serializing borrowed strings, bools and `Value`s cannot fail.
    serde_json::to_string(&frame).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use faro_proto::conversations::v1::{MediaRef, MessageReaction, TextVersion};
    use faro_proto::stream::v1::{MessageCreated, event::Kind};

    use super::*;

    fn ts(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp {
            seconds,
            nanos: 123_000_000,
        })
    }

    /// Every field set, with characters JSON must escape.
    fn event() -> Event {
        let message = Message {
            id: "m\"1".into(),
            conversation_id: "c1".into(),
            location_id: "l1".into(),
            channel: 1,
            channel_message_id: "wamid.X\\".into(),
            direction: 1,
            sender_type: 1,
            message_type: "text".into(),
            text: "¡hola!\n\u{1}🏖️".into(),
            media_urls: vec!["https://x/1".into()],
            sender_id: "s".into(),
            recipient_id: "r".into(),
            timestamp: ts(1_700_000_000),
            delivered_at: ts(1_700_000_001),
            read_at: ts(1_700_000_002),
            created_at: ts(1_700_000_003),
            status: "read".into(),
            status_error_json: r#"{"code":1,"a":[true]}"#.into(),
            played_at: ts(1_700_000_004),
            failed_at: None,
            reactions: vec![MessageReaction {
                reactor_id: "r1".into(),
                emoji: "👍".into(),
                timestamp: ts(1_700_000_005),
            }],
            edited_at: ts(1_700_000_006),
            edit_history: vec![TextVersion {
                text: "old".into(),
                replaced_at: ts(1_700_000_007),
            }],
            deleted_at: None,
            reply_to_channel_message_id: "wamid.Y".into(),
            media: vec![MediaRef {
                kind: "image".into(),
                id: "i".into(),
                mime_type: "image/png".into(),
                sha256: "h".into(),
                caption: "c".into(),
                filename: "f".into(),
                url: "u".into(),
            }],
            referral_json: "not json".into(),
            forwarded: true,
            standby: true,
            ..Default::default()
        };
        let conversation = Conversation {
            id: "c1".into(),
            location_id: "l1".into(),
            channel: 1,
            customer_id: "cu".into(),
            customer_name: "Ana".into(),
            last_message_at: ts(1_700_000_000),
            status: "open".into(),
            last_inbound_at: ts(1_700_000_000),
            window_closes_at: ts(1_700_086_400),
            ..Default::default()
        };
        Event {
            id: "e1".into(),
            tenant_id: "t1".into(),
            location_id: "l1".into(),
            published_at: ts(1_700_000_010),
            offset: 7,
            epoch: "ep".into(),
            kind: Some(Kind::MessageCreated(MessageCreated {
                message: Some(message),
                conversation: Some(conversation),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn the_frame_is_byte_for_byte_the_one_built_as_a_value() {
        let e = event();
        let Some(Kind::MessageCreated(mc)) = e.kind.as_ref() else {
            unreachable!()
        };
        let fast = render(
            &e,
            "message.created",
            mc.message.as_ref(),
            mc.conversation.as_ref(),
        );
        let slow = crate::events::render_as_value(&e).expect("rendered").1;
        assert_eq!(fast, slow);
        let mut bare = e.clone();
        bare.epoch.clear();
        bare.kind = Some(Kind::MessageCreated(MessageCreated::default()));
        let fast = render(&bare, "message.created", None, None);
        assert_eq!(
            fast,
            crate::events::render_as_value(&bare).expect("rendered").1
        );
    }
}
