//! Webhook bodies for `faro loadgen webhooks`, shaped as each platform sends
//! them (the same shapes as the tests' fixtures and `faro dev`'s demo), and
//! the signature each platform puts on them. Every builder is here so the
//! shapes stay in one place when a platform changes.
//!
//! A message's id and text both carry `<marker>-<n>`, so whichever of the
//! two a live frame shows, the subscriber finds the message's number (a
//! Messenger or Instagram attachment has no text: its id carries it).

use serde_json::json;

/// Which platform a webhook comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    WhatsApp,
    Messenger,
    Instagram,
    YCloud,
}

impl Platform {
    /// The edge's path for the platform's webhooks.
    pub fn path(self) -> &'static str {
        match self {
            Self::WhatsApp => "/api/v1/webhooks/whatsapp",
            Self::Messenger => "/api/v1/webhooks/facebook",
            Self::Instagram => "/api/v1/webhooks/instagram",
            Self::YCloud => "/api/v1/webhooks/ycloud",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::WhatsApp => "whatsapp",
            Self::Messenger => "messenger",
            Self::Instagram => "instagram",
            Self::YCloud => "ycloud",
        }
    }
}

/// What a message carries besides text: customers send photos and
/// documents (a quote, a receipt) as often as words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    None,
    /// WhatsApp `image` with a media id and caption; Messenger/Instagram
    /// `image` attachment with a CDN URL.
    Image,
    /// WhatsApp `document` (PDF, media id, file name, caption);
    /// Messenger/Instagram `file` attachment.
    Document,
}

impl Media {
    /// `--media-every N`: message `n` is media when `n % N == N - 1`,
    /// images and documents in turn; 0 means text only.
    pub fn nth(n: usize, every: usize) -> Self {
        if every == 0 || n % every != every - 1 {
            Self::None
        } else if (n / every).is_multiple_of(2) {
            Self::Image
        } else {
            Self::Document
        }
    }
}

/// One inbound message: the account it is sent to, who sends it, its id.
pub struct Msg<'a> {
    pub account: &'a str,
    pub customer: usize,
    pub id: String,
    pub text: String,
    pub unix_ms: i64,
    pub media: Media,
}

/// The message id for message `n`: unique per run through `marker`.
pub fn message_id(platform: Platform, marker: &str, n: usize) -> String {
    match platform {
        Platform::WhatsApp | Platform::YCloud => format!("wamid.LG.{marker}-{n}"),
        Platform::Messenger => format!("m_LG.{marker}-{n}"),
        Platform::Instagram => format!("aWdfLG.{marker}-{n}"),
    }
}

/// A customer's phone (WhatsApp, YCloud) or page-scoped id (Messenger,
/// Instagram): digits, distinct per customer number.
fn customer_id(customer: usize) -> String {
    format!("52155{customer:08}")
}

/// A WhatsApp media id as Meta gives them (digits), distinct per message.
fn media_id(m: &Msg<'_>) -> String {
    let n: u64 =
        m.id.bytes()
            .fold(17, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    format!("{}", 1_000_000_000_000_000 + n % 1_000_000_000_000_000)
}

/// The `type` and its object of a WhatsApp (Cloud or YCloud) message;
/// YCloud adds a download `link` to media.
fn wa_content(m: &Msg<'_>, link: bool) -> (&'static str, serde_json::Value) {
    let id = media_id(m);
    let mut content = match m.media {
        Media::None => return ("text", json!({"body": m.text})),
        Media::Image => json!({"caption": m.text, "mime_type": "image/jpeg", "id": id,
                               "sha256": "kYa8V9IqUe9yZ1o3hq5iFv3Fh2nkBh6R8Q1nXyG0r0E="}),
        Media::Document => json!({"caption": m.text, "filename": format!("cotizacion-{id}.pdf"),
                                  "mime_type": "application/pdf", "id": id,
                                  "sha256": "3bXq0mR2m8Qy0d4nH6v1Wk0sJ5fE7tL9pA2cZ8uYb1M="}),
    };
    if link {
        content["link"] = json!(format!(
            "https://api.ycloud.com/v2/whatsapp/media/download/{id}"
        ));
    }
    match m.media {
        Media::Document => ("document", content),
        _ => ("image", content),
    }
}

fn wa_message(m: &Msg<'_>) -> serde_json::Value {
    let (kind, content) = wa_content(m, false);
    let mut message = json!({"from": customer_id(m.customer), "id": m.id,
                             "timestamp": (m.unix_ms / 1000).to_string(), "type": kind});
    message[kind] = content;
    message
}

/// A WhatsApp Cloud API webhook: one entry per account's messages (Meta
/// batches several messages, and several numbers, in one POST).
pub fn whatsapp(messages: &[Msg<'_>]) -> String {
    let mut entries: Vec<serde_json::Value> = Vec::new();
    for m in messages {
        let value = json!({
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000001", "phone_number_id": m.account},
            "contacts": [{"profile": {"name": format!("Cliente {}", m.customer)},
                          "wa_id": customer_id(m.customer)}],
            "messages": [wa_message(m)]
        });
        entries.push(json!({"id": "102290129340398",
                            "changes": [{"field": "messages", "value": value}]}));
    }
    json!({"object": "whatsapp_business_account", "entry": entries}).to_string()
}

/// A WhatsApp status (delivered) for an outbound message FARO never sent:
/// acknowledged and kept aside by FARO, never a stored message.
pub fn whatsapp_status(account: &str, status_id: &str, customer: usize, unix_ms: i64) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
    "field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000001", "phone_number_id": account},
        "statuses": [{"id": status_id, "status": "delivered",
                      "timestamp": (unix_ms / 1000).to_string(),
                      "recipient_id": customer_id(customer)}]
    }}]}]})
    .to_string()
}

/// A Messenger (`object: page`) or Instagram (`object: instagram`) text,
/// or an attachment (image or file on a CDN URL, no text).
pub fn messaging(platform: Platform, m: &Msg<'_>) -> String {
    let instagram = platform == Platform::Instagram;
    let object = if instagram { "instagram" } else { "page" };
    let cdn = if instagram {
        "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id="
    } else {
        "https://scontent.xx.fbcdn.net/v/t1.15752-9/"
    };
    let attachment = |kind: &str, name: &str| {
        json!([{"type": kind, "payload": {"url": format!("{cdn}{}{name}&oh=00_AfD1&oe=6790A1B2",
                                                         m.id.replace('.', "_"))}}])
    };
    let message = match m.media {
        Media::None => json!({"mid": m.id, "text": m.text}),
        Media::Image => {
            json!({"mid": m.id, "attachments": attachment("image", ".jpg?stp=dst-jpg")})
        }
        Media::Document => json!({"mid": m.id, "attachments": attachment("file", ".pdf?dl=1")}),
    };
    json!({"object": object, "entry": [{"id": m.account, "time": m.unix_ms, "messaging": [{
        "sender": {"id": customer_id(m.customer)}, "recipient": {"id": m.account},
        "timestamp": m.unix_ms, "message": message}]}]})
    .to_string()
}

/// A YCloud inbound WhatsApp message; `account` is the business number.
pub fn ycloud(m: &Msg<'_>) -> String {
    let at = chrono::DateTime::from_timestamp_millis(m.unix_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (kind, content) = wa_content(m, true);
    let mut message = json!({
        "id": format!("lg{}", m.id), "wamid": m.id, "wabaId": "102290129340398",
        "from": format!("+{}", customer_id(m.customer)),
        "customerProfile": {"name": format!("Cliente {}", m.customer)},
        "to": m.account, "sendTime": at, "type": kind});
    message[kind] = content;
    json!({"id": format!("evt_{}", m.id), "type": "whatsapp.inbound_message.received",
           "apiVersion": "v2", "createTime": at, "whatsappInboundMessage": message})
    .to_string()
}

/// The signature header a platform puts on `body`.
pub fn signature(
    platform: Platform,
    meta_secret: &str,
    ycloud_secret: &str,
    body: &[u8],
) -> (&'static str, String) {
    match platform {
        Platform::YCloud => (
            "ycloud-signature",
            faro_edge::sign_ycloud(
                ycloud_secret.as_bytes(),
                chrono::Utc::now().timestamp(),
                body,
            ),
        ),
        _ => (
            "x-hub-signature-256",
            faro_edge::sign_meta_payload(meta_secret.as_bytes(), body),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_body_carries_the_marked_id_and_is_json() {
        for media in [Media::None, Media::Image, Media::Document] {
            let m = Msg {
                account: "acc",
                customer: 3,
                id: message_id(Platform::Messenger, "lg", 7),
                text: "lg-7".into(),
                unix_ms: 1_749_416_383_000,
                media,
            };
            for body in [
                whatsapp(std::slice::from_ref(&m)),
                messaging(Platform::Messenger, &m),
                messaging(Platform::Instagram, &m),
                ycloud(&m),
            ] {
                let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                assert!(body.contains("m_LG.lg-7"), "{v}");
                assert_eq!(super::super::sockets::marked(&body, "lg"), Some(7));
            }
        }
    }

    #[test]
    fn media_bodies_name_their_kind_and_media_id() {
        let m = |media| Msg {
            account: "acc",
            customer: 1,
            id: message_id(Platform::WhatsApp, "lg", 9),
            text: "lg-9".into(),
            unix_ms: 1_749_416_383_000,
            media,
        };
        let (image, doc) = (m(Media::Image), m(Media::Document));
        let v: serde_json::Value =
            serde_json::from_str(&whatsapp(std::slice::from_ref(&image))).expect("JSON");
        let wa = &v["entry"][0]["changes"][0]["value"]["messages"][0];
        assert_eq!(wa["type"], "image", "{v}");
        assert!(
            wa["image"]["id"].as_str().is_some_and(|id| id.len() == 16),
            "{v}"
        );
        let v: serde_json::Value = serde_json::from_str(&ycloud(&doc)).expect("JSON");
        let y = &v["whatsappInboundMessage"];
        assert_eq!(y["type"], "document", "{v}");
        assert!(y["document"]["link"].as_str().is_some(), "{v}");
        let v: serde_json::Value =
            serde_json::from_str(&messaging(Platform::Instagram, &doc)).expect("JSON");
        let a = &v["entry"][0]["messaging"][0]["message"]["attachments"][0];
        assert_eq!(a["type"], "file", "{v}");
        assert_eq!(Media::nth(3, 4), Media::Image);
        assert_eq!(Media::nth(7, 4), Media::Document);
        assert_eq!(Media::nth(5, 4), Media::None);
        assert_eq!(Media::nth(5, 0), Media::None);
    }
}
