//! WhatsApp Cloud API webhooks (`object: whatsapp_business_account`).
//!
//! Walks every entry, every change and every message: Meta batches, and peers
//! that read only `entry[0].changes[0].messages[0]` lose the rest.

use chrono::{DateTime, Utc};
use faro_proto::{
    conversations::v1::{Channel, Direction, InboundMessage},
    ingest::v1::Route,
    to_timestamp,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ParseError, Parsed, synthetic_id, unix_seconds};

#[derive(Deserialize)]
struct Envelope {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    field: String,
    #[serde(default)]
    value: Value,
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The message text an agent reads first: the body of a text, a caption otherwise.
fn text_of(kind: &str, m: &Value) -> String {
    let pointer = match kind {
        "text" => "/text/body",
        "image" | "video" | "document" => {
            return str_at(m, &format!("/{kind}/caption"))
                .unwrap_or_default()
                .to_owned();
        }
        _ => return String::new(),
    };
    str_at(m, pointer).unwrap_or_default().to_owned()
}

pub fn parse(
    payload: &[u8],
    routes: &[Route],
    received_at: DateTime<Utc>,
) -> Result<Parsed, ParseError> {
    let envelope: Envelope =
        serde_json::from_slice(payload).map_err(|e| ParseError::Malformed(e.to_string()))?;
    if envelope.object != "whatsapp_business_account" {
        return Err(ParseError::Envelope(format!(
            "object is {:?}, expected \"whatsapp_business_account\"",
            envelope.object
        )));
    }
    let mut out = Parsed::default();
    for entry in &envelope.entry {
        for change in entry.changes.iter().filter(|c| c.field == "messages") {
            parse_change(&entry.id, &change.value, routes, received_at, &mut out);
        }
    }
    Ok(out)
}

fn parse_change(
    waba_id: &Value,
    value: &Value,
    routes: &[Route],
    received_at: DateTime<Utc>,
    out: &mut Parsed,
) {
    let messages = value.get("messages").and_then(Value::as_array);
    let statuses = value.get("statuses").and_then(Value::as_array);
    let count = messages.map_or(0, Vec::len);
    out.skipped += statuses.map_or(0, Vec::len);
    let Some(phone_number_id) = str_at(value, "/metadata/phone_number_id") else {
        out.untrusted += count;
        return;
    };
    let Some(route) = routes
        .iter()
        .find(|r| r.external_account_id == phone_number_id)
    else {
        out.untrusted += count;
        return;
    };
    let business_number =
        str_at(value, "/metadata/display_phone_number").unwrap_or(phone_number_id);
    let contacts = value.get("contacts").and_then(Value::as_array);
    for m in messages.into_iter().flatten() {
        let from = str_at(m, "/from").unwrap_or_default();
        let contact = contacts.and_then(|cs| {
            cs.iter()
                .find(|c| str_at(c, "/wa_id") == Some(from))
                .or_else(|| (cs.len() == 1).then(|| &cs[0]))
        });
        let customer = if from.is_empty() {
            contact
                .and_then(|c| str_at(c, "/wa_id"))
                .unwrap_or("unknown")
        } else {
            from
        };
        let kind = str_at(m, "/type").unwrap_or("unsupported");
        let id = str_at(m, "/id").map_or_else(|| synthetic_id(m), str::to_owned);
        let timestamp = unix_seconds(m.get("timestamp")).unwrap_or(received_at);
        out.messages.push(InboundMessage {
            tenant_id: route.tenant_id.clone(),
            location_id: route.location_id.clone(),
            channel_account_id: route.channel_account_id.clone(),
            channel: Channel::Whatsapp.into(),
            customer_id: customer.to_owned(),
            customer_name: contact
                .and_then(|c| str_at(c, "/profile/name"))
                .unwrap_or_default()
                .to_owned(),
            customer_phone: customer.to_owned(),
            channel_message_id: id,
            message_type: kind.to_owned(),
            text: text_of(kind, m),
            direction: Direction::Inbound.into(),
            sender_id: customer.to_owned(),
            recipient_id: business_number.to_owned(),
            timestamp: Some(to_timestamp(timestamp)),
            media_urls: Vec::new(),
            metadata_json: json!({
                "provider": "whatsapp_cloud",
                "waba_id": waba_id,
                "phone_number_id": phone_number_id,
                "contact": contact,
                "event": m,
            })
            .to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str) -> Route {
        Route {
            external_account_id: id.into(),
            tenant_id: "t".into(),
            location_id: "l".into(),
            channel_account_id: "c".into(),
            channel: Channel::Whatsapp.into(),
        }
    }

    #[test]
    fn every_message_of_every_change_of_every_entry() {
        let body = json!({"object": "whatsapp_business_account", "entry": [
            {"id": "W1", "changes": [{"field": "messages", "value": {
                "metadata": {"phone_number_id": "P1", "display_phone_number": "15550001"},
                "contacts": [{"wa_id": "111", "profile": {"name": "Ana"}}, {"wa_id": "222"}],
                "messages": [
                    {"from": "111", "id": "m1", "timestamp": "1700000000", "type": "text", "text": {"body": "hola 👋"}},
                    {"from": "222", "id": "m2", "timestamp": "1700000001", "type": "sticker", "sticker": {}}
                ]}}]},
            {"id": "W2", "changes": [{"field": "messages", "value": {
                "metadata": {"phone_number_id": "P2"},
                "messages": [{"from": "333", "id": "m3", "timestamp": 1700000002, "type": "text", "text": {"body": "x"}}],
                "statuses": [{"id": "m0", "status": "read"}]}}]},
            {"id": "W3", "changes": [{"field": "messages", "value": {
                "metadata": {"phone_number_id": "NOT-OURS"},
                "messages": [{"from": "9", "id": "m9", "type": "text", "text": {"body": "spoof"}}]}}]}
        ]});
        let parsed = parse(
            body.to_string().as_bytes(),
            &[route("P1"), route("P2")],
            Utc::now(),
        )
        .expect("parses");
        let ids: Vec<_> = parsed
            .messages
            .iter()
            .map(|m| m.channel_message_id.as_str())
            .collect();
        assert_eq!(ids, ["m1", "m2", "m3"]);
        assert_eq!(parsed.messages[0].text, "hola 👋");
        assert_eq!(parsed.messages[0].customer_name, "Ana");
        assert_eq!(parsed.messages[1].message_type, "sticker");
        assert_eq!(parsed.messages[1].text, "");
        assert_eq!(
            parsed.messages[2].timestamp.as_ref().map(|t| t.seconds),
            Some(1_700_000_002)
        );
        assert_eq!((parsed.skipped, parsed.untrusted), (1, 1));
    }

    #[test]
    fn tolerates_missing_parts() {
        let body = json!({"object": "whatsapp_business_account", "entry": [
            {"changes": [{"field": "messages", "value": {"metadata": {"phone_number_id": "P1"},
                "messages": [{"type": "mystery"}, 42, {"id": "x", "timestamp": "garbage"}]}}]},
            {"changes": [{"field": "account_update", "value": {}}]},
            {}
        ]});
        let now = Utc::now();
        let parsed = parse(body.to_string().as_bytes(), &[route("P1")], now).expect("parses");
        assert_eq!(parsed.messages.len(), 3);
        assert!(
            parsed.messages[0]
                .channel_message_id
                .starts_with("faro-sha256-")
        );
        assert_eq!(parsed.messages[0].customer_id, "unknown");
        assert_eq!(
            parsed.messages[2].timestamp.as_ref().map(|t| t.seconds),
            Some(now.timestamp())
        );
    }

    #[test]
    fn rejects_what_is_not_a_whatsapp_envelope() {
        assert!(matches!(
            parse(b"nope", &[], Utc::now()),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse(br#"{"object":"page","entry":[]}"#, &[], Utc::now()),
            Err(ParseError::Envelope(_))
        ));
        assert!(
            parse(
                br#"{"object":"whatsapp_business_account","entry":"x"}"#,
                &[],
                Utc::now()
            )
            .is_err()
        );
    }
}
