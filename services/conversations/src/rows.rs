//! Database rows and their protobuf forms, in one place.

use chrono::{DateTime, Utc};
use faro_proto::{
    channel_from_name, channel_name,
    conversations::v1::{self as pb, Channel, Direction, SenderType},
    to_timestamp,
};
use serde_json::Value;
use uuid::Uuid;

use crate::Error;

pub(crate) fn require_channel(raw: i32) -> Result<&'static str, Error> {
    Channel::try_from(raw)
        .ok()
        .and_then(channel_name)
        .ok_or_else(|| Error::invalid("channel must be set"))
}

pub(crate) const CONVERSATION_COLUMNS: &str = "c.id, c.tenant_id, c.location_id, c.channel, \
    c.customer_id, c.customer_name, c.customer_phone, c.customer_email, c.channel_conversation_id, \
    c.source_type, c.status, c.assigned_to_user_id, c.lead_status, c.tags, c.last_message_at, \
    c.created_at, c.updated_at, c.customer_user_id, c.version, c.last_inbound_at";

#[derive(Clone, sqlx::FromRow, serde::Deserialize)]
pub(crate) struct ConversationRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub location_id: Uuid,
    pub channel: String,
    pub customer_id: String,
    pub customer_name: Option<String>,
    pub customer_phone: Option<String>,
    pub customer_email: Option<String>,
    pub channel_conversation_id: Option<String>,
    pub source_type: String,
    pub status: String,
    pub assigned_to_user_id: Option<String>,
    pub lead_status: Option<String>,
    pub tags: Vec<String>,
    pub last_message_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub customer_user_id: Option<String>,
    pub version: i64,
    pub last_inbound_at: Option<DateTime<Utc>>,
}

impl From<ConversationRow> for pb::Conversation {
    fn from(r: ConversationRow) -> Self {
        Self {
            id: r.id.to_string(),
            tenant_id: r.tenant_id.to_string(),
            location_id: r.location_id.to_string(),
            channel: channel_from_name(&r.channel).into(),
            customer_id: r.customer_id,
            customer_name: r.customer_name.unwrap_or_default(),
            customer_phone: r.customer_phone.unwrap_or_default(),
            customer_email: r.customer_email.unwrap_or_default(),
            channel_conversation_id: r.channel_conversation_id.unwrap_or_default(),
            source_type: r.source_type,
            status: r.status,
            assigned_to_user_id: r.assigned_to_user_id.unwrap_or_default(),
            lead_status: r.lead_status.unwrap_or_default(),
            tags: r.tags,
            last_message_at: r.last_message_at.map(to_timestamp),
            created_at: Some(to_timestamp(r.created_at)),
            updated_at: Some(to_timestamp(r.updated_at)),
            customer_user_id: r.customer_user_id.unwrap_or_default(),
            version: r.version,
            last_inbound_at: r.last_inbound_at.map(to_timestamp),
            window_closes_at: r
                .last_inbound_at
                .filter(|_| crate::replies::rules::has_window(&r.channel))
                .map(|t| to_timestamp(t + crate::replies::rules::STANDARD_WINDOW)),
            ..Default::default()
        }
    }
}

/// A message's own columns (alias `m`), written once for the two lists below.
macro_rules! message_fields {
    () => {
        "m.id, m.conversation_id, m.tenant_id, m.channel, m.channel_message_id, m.sender_type, \
         m.direction, m.message_type, m.text, m.media_urls, m.sender_id, m.recipient_id, \
         m.\"timestamp\", m.delivered_at, m.read_at, m.created_at, m.status, m.status_error, \
         m.played_at, m.failed_at, m.reactions, m.edited_at, m.edit_history, m.deleted_at, \
         m.reply_to_channel_message_id, m.media, m.referral, m.forwarded, m.standby"
    };
}
pub(crate) use message_fields;

/// Message columns, with the location taken from the joined thread (alias `c`).
pub(crate) const MESSAGE_COLUMNS: &str = concat!("c.location_id, ", message_fields!());

/// The same, for `INSERT INTO messages AS m … RETURNING`, where no join is possible.
pub(crate) const RETURNED_MESSAGE_COLUMNS: &str = concat!(
    "(SELECT c.location_id FROM conversations c \
      WHERE c.tenant_id = m.tenant_id AND c.id = m.conversation_id) AS location_id, ",
    message_fields!()
);

#[derive(Clone, sqlx::FromRow)]
pub(crate) struct MessageRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub tenant_id: Uuid,
    pub location_id: Uuid,
    pub channel: String,
    pub channel_message_id: String,
    pub sender_type: String,
    pub direction: String,
    pub message_type: String,
    pub text: Option<String>,
    pub media_urls: Vec<String>,
    pub sender_id: Option<String>,
    pub recipient_id: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub status: Option<String>,
    pub status_error: Option<Value>,
    pub played_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub reactions: Value,
    pub edited_at: Option<DateTime<Utc>>,
    pub edit_history: Value,
    pub deleted_at: Option<DateTime<Utc>>,
    pub reply_to_channel_message_id: Option<String>,
    pub media: Value,
    pub referral: Option<Value>,
    pub forwarded: bool,
    pub standby: bool,
}

fn json_time(v: &Value) -> Option<prost_types::Timestamp> {
    let t = DateTime::parse_from_rfc3339(v.as_str()?).ok()?;
    Some(to_timestamp(t.with_timezone(&Utc)))
}

fn json_str(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Current reactions, oldest first; removals are not shown.
fn reactions(v: &Value) -> Vec<pb::MessageReaction> {
    let mut out: Vec<pb::MessageReaction> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, r)| !json_str(r, "emoji").is_empty())
        .map(|(who, r)| pb::MessageReaction {
            reactor_id: who.clone(),
            emoji: json_str(r, "emoji"),
            timestamp: r.get("timestamp").and_then(json_time),
        })
        .collect();
    out.sort_by_key(|r| r.timestamp.map(|t| (t.seconds, t.nanos)));
    out
}

fn edit_history(v: &Value) -> Vec<pb::TextVersion> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|e| pb::TextVersion {
            text: json_str(e, "text"),
            replaced_at: e.get("replaced_at").and_then(json_time),
        })
        .collect()
}

pub(crate) fn media_to_json(media: &[pb::MediaRef]) -> Value {
    Value::Array(
        media
            .iter()
            .map(|m| {
                serde_json::json!({"kind": m.kind, "id": m.id, "mime_type": m.mime_type,
                    "sha256": m.sha256, "caption": m.caption, "filename": m.filename, "url": m.url})
            })
            .collect(),
    )
}

fn media(v: &Value) -> Vec<pb::MediaRef> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|m| pb::MediaRef {
            kind: json_str(m, "kind"),
            id: json_str(m, "id"),
            mime_type: json_str(m, "mime_type"),
            sha256: json_str(m, "sha256"),
            caption: json_str(m, "caption"),
            filename: json_str(m, "filename"),
            url: json_str(m, "url"),
        })
        .collect()
}

impl From<MessageRow> for pb::Message {
    fn from(r: MessageRow) -> Self {
        let sender_type = match r.sender_type.as_str() {
            "customer" => SenderType::Customer,
            "agent" => SenderType::Agent,
            _ => SenderType::Unspecified,
        };
        let direction = match r.direction.as_str() {
            "inbound" => Direction::Inbound,
            "outbound" => Direction::Outbound,
            _ => Direction::Unspecified,
        };
        Self {
            id: r.id.to_string(),
            conversation_id: r.conversation_id.to_string(),
            tenant_id: r.tenant_id.to_string(),
            location_id: r.location_id.to_string(),
            channel: channel_from_name(&r.channel).into(),
            channel_message_id: r.channel_message_id,
            sender_type: sender_type.into(),
            direction: direction.into(),
            message_type: r.message_type,
            text: r.text.unwrap_or_default(),
            media_urls: r.media_urls,
            sender_id: r.sender_id.unwrap_or_default(),
            recipient_id: r.recipient_id.unwrap_or_default(),
            timestamp: Some(to_timestamp(r.timestamp)),
            delivered_at: r.delivered_at.map(to_timestamp),
            read_at: r.read_at.map(to_timestamp),
            created_at: Some(to_timestamp(r.created_at)),
            status: r.status.unwrap_or_default(),
            status_error_json: r.status_error.map(|e| e.to_string()).unwrap_or_default(),
            played_at: r.played_at.map(to_timestamp),
            failed_at: r.failed_at.map(to_timestamp),
            reactions: reactions(&r.reactions),
            edited_at: r.edited_at.map(to_timestamp),
            edit_history: edit_history(&r.edit_history),
            deleted_at: r.deleted_at.map(to_timestamp),
            reply_to_channel_message_id: r.reply_to_channel_message_id.unwrap_or_default(),
            media: media(&r.media),
            referral_json: r.referral.map(|v| v.to_string()).unwrap_or_default(),
            forwarded: r.forwarded,
            standby: r.standby,
        }
    }
}
