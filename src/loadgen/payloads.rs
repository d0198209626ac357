//! Webhook bodies for `faro loadgen webhooks`, shaped as each platform sends
//! them (the same shapes as the tests' fixtures and `faro dev`'s demo), and
//! the signature each platform puts on them. Every builder is here so the
//! shapes stay in one place when a platform changes.
//!
//! A message's id and text both carry `<marker>-<n>`, so whichever of the
//! two a live frame shows, the subscriber finds the message's number.

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

/// One inbound message: the account it is sent to, who sends it, its id.
pub struct Msg<'a> {
    pub account: &'a str,
    pub customer: usize,
    pub id: String,
    pub text: String,
    pub unix_ms: i64,
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

fn wa_message(m: &Msg<'_>) -> serde_json::Value {
    json!({"from": customer_id(m.customer), "id": m.id, "timestamp": (m.unix_ms / 1000).to_string(),
           "type": "text", "text": {"body": m.text}})
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

/// A Messenger (`object: page`) or Instagram (`object: instagram`) text.
pub fn messaging(platform: Platform, m: &Msg<'_>) -> String {
    let object = if platform == Platform::Instagram {
        "instagram"
    } else {
        "page"
    };
    json!({"object": object, "entry": [{"id": m.account, "time": m.unix_ms, "messaging": [{
        "sender": {"id": customer_id(m.customer)}, "recipient": {"id": m.account},
        "timestamp": m.unix_ms, "message": {"mid": m.id, "text": m.text}}]}]})
    .to_string()
}

/// A YCloud inbound WhatsApp message; `account` is the business number.
pub fn ycloud(m: &Msg<'_>) -> String {
    let at = chrono::DateTime::from_timestamp_millis(m.unix_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({"id": format!("evt_{}", m.id), "type": "whatsapp.inbound_message.received",
           "apiVersion": "v2", "createTime": at, "whatsappInboundMessage": {
               "id": format!("lg{}", m.id), "wamid": m.id, "wabaId": "102290129340398",
               "from": format!("+{}", customer_id(m.customer)),
               "customerProfile": {"name": format!("Cliente {}", m.customer)},
               "to": m.account, "sendTime": at, "type": "text", "text": {"body": m.text}}})
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
        let m = Msg {
            account: "acc",
            customer: 3,
            id: message_id(Platform::Messenger, "lg", 7),
            text: "lg-7".into(),
            unix_ms: 1_749_416_383_000,
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
