//! One send to a platform: the request each API expects (Meta's Graph API for
//! WhatsApp Cloud, Messenger and Instagram; YCloud's `sendDirectly`), and the
//! answer read as a platform message id, or an error classed transient
//! (retried) or permanent (the reply fails with it).

use faro_proto::conversations::v1::{ReplyContent, ReplyDelivery};
use serde_json::{Value, json};

use super::config::SendConfig;

/// Graph error codes that mean "later" rather than "never": API throttling
/// (4, 17, 32, 613), temporary errors (1, 2), Messenger/Instagram rate limit
/// (80007 and the 800xx family's), WhatsApp's throughput and rate limits
/// (130429, 131056) and its service being unavailable (131000, 131016, 133004).
const TRANSIENT_GRAPH_CODES: &[i64] = &[
    1, 2, 4, 17, 32, 613, 80007, 130429, 131000, 131016, 131056, 133004,
];

#[derive(Debug)]
pub(crate) enum Outcome {
    /// Accepted: the platform's id of the message (wamid, mid).
    Sent(String),
    /// Refused or not reached: the error as agents see it, and whether trying
    /// again may succeed.
    Failed { error: Value, transient: bool },
}

fn media_object(kind: &str, url: &str, caption: &str, filename: &str) -> Value {
    let mut o = json!({"link": url});
    if !caption.is_empty() {
        o["caption"] = json!(caption);
    }
    if kind == "document" && !filename.is_empty() {
        o["filename"] = json!(filename);
    }
    o
}

/// The WhatsApp message object: Cloud API and YCloud share its shape.
fn whatsapp_message(c: &ReplyContent) -> Value {
    if let Some(t) = &c.template {
        let mut template = json!({"name": t.name, "language": {"code": t.language}});
        if !t.parameters.is_empty() {
            let parameters: Vec<Value> = t
                .parameters
                .iter()
                .map(|p| json!({"type": "text", "text": p}))
                .collect();
            template["components"] = json!([{"type": "body", "parameters": parameters}]);
        }
        return json!({"type": "template", "template": template});
    }
    if let Some(m) = &c.media {
        let mut o = json!({"type": m.kind});
        o[m.kind.as_str()] = media_object(&m.kind, &m.url, &m.caption, &m.filename);
        return o;
    }
    json!({"type": "text", "text": {"body": c.text, "preview_url": false}})
}

/// Messenger's and Instagram's `message` object.
fn messaging_message(c: &ReplyContent) -> Value {
    if let Some(m) = &c.media {
        let kind = if m.kind == "document" {
            "file"
        } else {
            m.kind.as_str()
        };
        return json!({"attachment": {"type": kind, "payload": {"url": m.url, "is_reusable": false}}});
    }
    json!({"text": c.text})
}

/// The URL, auth header and body of one reply.
pub(crate) fn request(
    cfg: &SendConfig,
    d: &ReplyDelivery,
) -> (String, (&'static str, String), Value) {
    let content = d.content.clone().unwrap_or_default();
    let channel = d.message.as_ref().map(|m| m.channel).unwrap_or_default();
    let whatsapp = channel == faro_proto::conversations::v1::Channel::Whatsapp as i32;
    if d.provider == "ycloud" {
        let to = if d.recipient_id.starts_with('+') {
            d.recipient_id.clone()
        } else {
            format!("+{}", d.recipient_id)
        };
        let mut body = whatsapp_message(&content);
        body["from"] = json!(d.external_account_id);
        body["to"] = json!(to);
        if !d.reply_to_channel_message_id.is_empty() {
            body["context"] = json!({"message_id": d.reply_to_channel_message_id});
        }
        let url = format!("{}/whatsapp/messages/sendDirectly", cfg.ycloud_base_url);
        return (url, ("x-api-key", d.credential.clone()), body);
    }
    let url = format!(
        "{}/{}/{}/messages",
        cfg.graph_base_url, cfg.graph_api_version, d.external_account_id
    );
    let auth = ("authorization", format!("Bearer {}", d.credential));
    if whatsapp {
        let mut body = whatsapp_message(&content);
        body["messaging_product"] = json!("whatsapp");
        body["recipient_type"] = json!("individual");
        body["to"] = json!(d.recipient_id);
        if !d.reply_to_channel_message_id.is_empty() {
            body["context"] = json!({"message_id": d.reply_to_channel_message_id});
        }
        return (url, auth, body);
    }
    let mut body = json!({
        "recipient": {"id": d.recipient_id},
        "message": messaging_message(&content),
    });
    if d.tag.is_empty() {
        body["messaging_type"] = json!("RESPONSE");
    } else {
        body["messaging_type"] = json!("MESSAGE_TAG");
        body["tag"] = json!(d.tag);
    }
    if !d.reply_to_channel_message_id.is_empty() {
        body["reply_to"] = json!({"mid": d.reply_to_channel_message_id});
    }
    (url, auth, body)
}

/// The platform's message id in a success body.
fn message_id(provider: &str, body: &Value) -> Option<String> {
    let id = if provider == "ycloud" {
        body.get("wamid").or_else(|| body.get("id"))
    } else {
        body.pointer("/messages/0/id")
            .or_else(|| body.get("message_id"))
    };
    id.and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 512)
        .map(str::to_owned)
}

/// Reads an error answer: transient for 5xx, 429 and Graph's "later" codes.
pub(crate) fn classify(provider: &str, status: u16, body: &Value) -> Outcome {
    let code = body
        .pointer("/error/code")
        .and_then(Value::as_i64)
        .or_else(|| {
            body.pointer("/error/whatsappApiError/code")
                .and_then(Value::as_i64)
        });
    let transient =
        status >= 500 || status == 429 || code.is_some_and(|c| TRANSIENT_GRAPH_CODES.contains(&c));
    let error = json!({
        "provider": provider,
        "http_status": status,
        "error": body.get("error").cloned().unwrap_or_else(|| body.clone()),
    });
    Outcome::Failed { error, transient }
}

/// Sends once.
pub(crate) async fn send(http: &reqwest::Client, cfg: &SendConfig, d: &ReplyDelivery) -> Outcome {
    if d.credential.is_empty() {
        return Outcome::Failed {
            error: json!({"provider": d.provider, "error": {"message": "the channel account has no send credential"}}),
            transient: false,
        };
    }
    let (url, (header, value), body) = request(cfg, d);
    let answer = http
        .post(&url)
        .header(header, value)
        .json(&body)
        .send()
        .await;
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            let kind = if e.is_timeout() {
                "timeout"
            } else {
                "connection"
            };
            tracing::warn!(provider = d.provider, kind, "reply send did not complete");
            return Outcome::Failed {
                error: json!({"provider": d.provider, "error": {"message": format!("the platform was not reached ({kind})")}}),
                transient: true,
            };
        }
    };
    let status = response.status().as_u16();
    let text = match response.text().await {
        Ok(t) => t,
        Err(_) => {
            return Outcome::Failed {
                error: json!({"provider": d.provider, "http_status": status, "error": {"message": "the answer was cut off"}}),
                transient: true,
            };
        }
    };
    let body: Value = serde_json::from_str(&text).unwrap_or_else(
        |_| json!({"error": {"message": text.chars().take(1000).collect::<String>()}}),
    );
    if (200..300).contains(&status) {
        if let Some(id) = message_id(&d.provider, &body) {
            return Outcome::Sent(id);
        }
        return Outcome::Failed {
            error: json!({"provider": d.provider, "http_status": status, "error": {"message": "the platform accepted the message but named no id"}}),
            transient: false,
        };
    }
    classify(&d.provider, status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_graph_errors() {
        let transient = |status, code: i64| match classify(
            "graph",
            status,
            &json!({"error": {"code": code}}),
        ) {
            Outcome::Failed { transient, .. } => transient,
            Outcome::Sent(_) => unreachable!(),
        };
        assert!(transient(503, 0));
        assert!(transient(400, 130429));
        assert!(transient(400, 80007));
        assert!(transient(400, 613));
        assert!(!transient(401, 190));
        assert!(!transient(400, 131047));
        assert!(!transient(400, 131026));
        assert!(!transient(400, 551));
    }

    #[test]
    fn reads_message_ids() {
        let wa = json!({"messaging_product": "whatsapp", "messages": [{"id": "wamid.X"}]});
        assert_eq!(message_id("graph", &wa).as_deref(), Some("wamid.X"));
        let fb = json!({"recipient_id": "1", "message_id": "m_1"});
        assert_eq!(message_id("graph", &fb).as_deref(), Some("m_1"));
        let yc = json!({"id": "63f", "wamid": "wamid.Y", "status": "accepted"});
        assert_eq!(message_id("ycloud", &yc).as_deref(), Some("wamid.Y"));
    }
}
