//! One Messenger or Instagram message item (text, attachments, quick replies,
//! story replies, shares, echoes) as an inbound message.

use chrono::{DateTime, Utc};
use faro_proto::{
    conversations::v1::{Direction, InboundMessage, MediaRef},
    ingest::v1::Route,
    to_timestamp,
};
use serde_json::Value;

use super::{Platform, id_at, metadata};
use crate::parse::{raw, str_at, string_at, synthetic_id};

/// The platform's id of what an attachment shows: a reel, a shared post
/// (`ig_post_media_id`, in both the `share` and the `ig_post` form), a story.
fn attachment_id(a: &Value) -> String {
    [
        "/payload/reel_video_id",
        "/payload/ig_post_media_id",
        "/payload/story_id",
        "/payload/id",
    ]
    .iter()
    .map(|p| id_at(a, p))
    .find(|id| !id.is_empty())
    .unwrap_or_default()
}

pub(super) fn message(
    item: &Value,
    m: &Value,
    route: &Route,
    platform: Platform,
    customer: &str,
    direction: Direction,
    timestamp: DateTime<Utc>,
) -> InboundMessage {
    let attachments = m
        .get("attachments")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mut media: Vec<MediaRef> = attachments
        .iter()
        .map(|a| MediaRef {
            kind: string_at(a, "/type"),
            url: str_at(a, "/payload/url")
                .or_else(|| str_at(a, "/url"))
                .or_else(|| str_at(a, "/payload/story_media_url"))
                .unwrap_or_default()
                .to_owned(),
            caption: str_at(a, "/title")
                .or_else(|| str_at(a, "/payload/title"))
                .unwrap_or_default()
                .to_owned(),
            id: attachment_id(a),
            ..Default::default()
        })
        .collect();
    let story = crate::parse::at(m, "/reply_to/story");
    if let Some(s) = story {
        media.push(MediaRef {
            kind: "story".into(),
            id: id_at(s, "/id"),
            url: str_at(s, "/url")
                .or_else(|| str_at(s, "/story_media_url"))
                .unwrap_or_default()
                .to_owned(),
            ..Default::default()
        });
    }
    let message_type = if story.is_some() {
        "story_reply".to_owned()
    } else if let Some(first) = attachments.first() {
        str_at(first, "/type").unwrap_or("attachment").to_owned()
    } else if m.get("quick_reply").is_some() {
        "quick_reply".to_owned()
    } else if m.get("text").is_some() {
        "text".to_owned()
    } else {
        "unsupported".to_owned()
    };
    let text = str_at(m, "/text")
        .or_else(|| attachments.first().and_then(|a| str_at(a, "/title")))
        .unwrap_or_default()
        .to_owned();
    let (sender, recipient) = (id_at(item, "/sender/id"), id_at(item, "/recipient/id"));
    InboundMessage {
        tenant_id: route.tenant_id.clone(),
        location_id: route.location_id.clone(),
        channel_account_id: route.channel_account_id.clone(),
        channel: platform.channel().into(),
        customer_id: customer.to_owned(),
        channel_message_id: str_at(m, "/mid").map_or_else(|| synthetic_id(item), str::to_owned),
        message_type,
        text,
        direction: direction.into(),
        sender_id: sender,
        recipient_id: recipient,
        timestamp: Some(to_timestamp(timestamp)),
        media_urls: media
            .iter()
            .map(|m| m.url.clone())
            .filter(|u| !u.is_empty())
            .collect(),
        metadata_json: metadata(platform, item),
        reply_to_channel_message_id: string_at(m, "/reply_to/mid"),
        media,
        referral_json: raw(m.get("referral")),
        ..Default::default()
    }
}
