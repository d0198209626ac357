//! Every WhatsApp Cloud API kind, from fixtures written from Meta's reference,
//! posted through the real edge with a real signature and checked field by field.

use faro_proto::conversations::v1::Channel;
use serde_json::Value;

use crate::cluster::{Cluster, fixture};

pub const META_APP: &str = "1000000000000001";
pub const SECRET: &str = "meta-app-secret-for-fixtures";
pub const PHONE: &str = "106540352242922";
pub const PHONE_B: &str = "106540352242923";
const CUSTOMER: &str = "16505551234";
const BUSINESS: &str = "15550783881";

pub fn ts(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time, got {v}")))
        .expect("rfc3339")
        .timestamp()
}

/// A cluster with tenant alpha owning the WhatsApp number of the fixtures.
pub async fn setup() -> (Cluster, (String, String)) {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let app = c.app(META_APP, SECRET, "verify-alpha").await;
    c.connect(&alpha, Channel::Whatsapp, PHONE, &app).await;
    (c, alpha)
}

pub async fn post(c: &Cluster, name: &str) {
    let status = c
        .post_meta(
            "whatsapp",
            &fixture(&format!("whatsapp/{name}.json")),
            SECRET,
        )
        .await;
    assert_eq!(status, 200, "{name} accepted");
}

#[tokio::test]
async fn every_whatsapp_message_kind_is_stored_field_by_field() {
    let (c, alpha) = setup().await;
    let kinds = [
        "text",
        "text_reply_forwarded",
        "image",
        "audio_voice",
        "video",
        "document",
        "sticker",
        "location",
        "contacts",
        "interactive_button_reply",
        "interactive_list_reply",
        "interactive_nfm_reply",
        "button",
        "order",
        "system_number_changed",
        "system_identity_changed",
        "unsupported",
        "unknown_future_type",
        "referral_ctwa",
        "smb_message_echo",
    ];
    for k in kinds {
        post(&c, k).await;
    }
    c.drained().await;
    let id = |s: &str| format!("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQz{s}");

    // (fixture id suffix, message_type, text, unix time)
    let expected = [
        (
            "TEXT0000000000000100",
            "text",
            "¿Tienen habitación para el sábado? 🏖️",
            1_749_416_383,
        ),
        (
            "REPLYFWD000000000200",
            "text",
            "Perdón, os reenvío la pregunta: ¿queda algo libre? 🙏",
            1_749_416_384,
        ),
        (
            "IMAGE000000000000300",
            "image",
            "Así es la vista que buscamos 🌅",
            1_749_416_385,
        ),
        ("VOICE000000000000400", "audio", "", 1_749_416_386),
        (
            "VIDEO000000000000500",
            "video",
            "Vídeo de la terraza, ¿es esta habitación?",
            1_749_416_387,
        ),
        (
            "DOCUMENT000000000600",
            "document",
            "Mi DNI para el registro",
            1_749_416_388,
        ),
        ("STICKER0000000000700", "sticker", "", 1_749_416_389),
        (
            "BTNREPLY000000001000",
            "interactive",
            "Habitación doble",
            1_749_416_392,
        ),
        (
            "LISTREPLY00000001100",
            "interactive",
            "Sábado 14 de junio",
            1_749_416_393,
        ),
        ("NFMREPLY000000001200", "interactive", "Sent", 1_749_416_394),
        (
            "TPLBUTTON00000001300",
            "button",
            "Confirmar reserva",
            1_749_416_395,
        ),
        (
            "ORDER000000000001600",
            "order",
            "Quiero añadir estos extras a la reserva",
            1_749_416_398,
        ),
        (
            "SYSNUMBER00000001700",
            "system",
            "User Kerry Fisher changed from 16505551234 to 16505559876",
            1_749_416_399,
        ),
        (
            "SYSIDENTITY000001800",
            "system",
            "User Kerry Fisher's security code changed",
            1_749_416_400,
        ),
        ("UNSUPPORTED000001900", "unsupported", "", 1_749_416_401),
        ("HOLOGRAM000000002000", "unsupported", "", 1_749_416_402),
        (
            "CTWA0000000000002300",
            "text",
            "¡Hola! Quiero más información sobre la oferta de verano.",
            1_749_416_405,
        ),
    ];
    for (suffix, kind, text, at) in expected {
        let m = c.message(&id(suffix)).await;
        assert_eq!(m["message_type"], kind, "{suffix}");
        assert_eq!(m["text"].as_str().unwrap_or_default(), text, "{suffix}");
        assert_eq!(ts(&m["timestamp"]), at, "{suffix}");
        assert_eq!(m["tenant_id"], alpha.0.as_str(), "{suffix}");
        assert_eq!(m["location_id"], alpha.1.as_str(), "{suffix}");
        assert_eq!(m["channel"], "whatsapp");
        assert_eq!(m["direction"], "inbound");
        assert_eq!(m["sender_type"], "customer");
        assert_eq!(m["sender_id"], CUSTOMER);
        assert_eq!(m["recipient_id"], BUSINESS);
        assert_eq!(m["customer_id"], CUSTOMER);
        assert_eq!(
            m["metadata"]["event"]["id"],
            id(suffix).as_str(),
            "raw event kept"
        );
        assert_eq!(m["metadata"]["phone_number_id"], PHONE);
    }
    // One thread for the customer, named from contacts, with the business-scoped id.
    assert_eq!(c.count("SELECT count(*) FROM conversations").await, 1);
    let text = c.message(&id("TEXT0000000000000100")).await;
    assert_eq!(text["customer_name"], "Kerry Fisher");
    assert_eq!(text["customer_user_id"], "US.13491208655302741918");

    let reply = c.message(&id("REPLYFWD000000000200")).await;
    assert_eq!(
        reply["reply_to_channel_message_id"],
        id("TEXT0000000000000100").as_str()
    );
    assert_eq!(reply["forwarded"], true);

    let image = c.message(&id("IMAGE000000000000300")).await;
    assert_eq!(image["media"][0]["kind"], "image");
    assert_eq!(image["media"][0]["mime_type"], "image/jpeg");
    assert_eq!(
        image["media"][0]["sha256"],
        "kxI5BCIa/VLnobY8RBnJ4BNgPwMVykN8W7c6lTFU+kI="
    );
    assert!(
        image["media"][0]["id"]
            .as_str()
            .is_some_and(|s| s.starts_with("100338342138"))
    );

    let voice = c.message(&id("VOICE000000000000400")).await;
    assert_eq!(voice["media"][0]["kind"], "voice");
    assert_eq!(voice["media"][0]["id"], "1187430562298841");
    assert_eq!(voice["media"][0]["mime_type"], "audio/ogg; codecs=opus");

    let doc = c.message(&id("DOCUMENT000000000600")).await;
    assert_eq!(doc["media"][0]["filename"], "DNI_Kerry_Fisher.pdf");
    assert_eq!(doc["media"][0]["mime_type"], "application/pdf");

    let location = c.message(&id("LOCATION000000000800")).await;
    assert_eq!(location["message_type"], "location");
    assert!(
        location["text"]
            .as_str()
            .is_some_and(|t| t.contains("Carrer de la Marina"))
    );

    let contacts = c.message(&id("CONTACTS000000000900")).await;
    assert_eq!(contacts["message_type"], "contacts");
    assert!(!contacts["text"].as_str().unwrap_or_default().is_empty());

    let button = c.message(&id("BTNREPLY000000001000")).await;
    assert_eq!(
        button["reply_to_channel_message_id"],
        "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI3QzFFNEE5MEIyNUQzRjY4AA=="
    );

    let unknown = c.message(&id("HOLOGRAM000000002000")).await;
    assert_eq!(
        unknown["metadata"]["event"]["type"], "hologram",
        "the original kind is kept raw"
    );
    let unsupported = c.message(&id("UNSUPPORTED000001900")).await;
    assert_eq!(
        unsupported["metadata"]["event"]["errors"][0]["code"],
        131051
    );

    let ad = c.message(&id("CTWA0000000000002300")).await;
    assert_eq!(ad["referral"]["source_type"], "ad");
    assert_eq!(ad["referral"]["source_id"], "120226305854810726");
    assert!(ad["referral"]["ctwa_clid"].as_str().is_some());

    // A Business-app echo is the business's own outbound message in the thread.
    let echo = c.message(&id("ECHO0000000000002900")).await;
    assert_eq!(echo["direction"], "outbound");
    assert_eq!(echo["sender_type"], "agent");
    assert_eq!(echo["sender_id"], BUSINESS);
    assert_eq!(echo["recipient_id"], CUSTOMER);
    assert_eq!(echo["customer_id"], CUSTOMER);
    assert_eq!(echo["conversation_id"], text["conversation_id"]);
    c.stop().await;
}

#[tokio::test]
async fn one_post_for_two_tenants_stores_every_item_in_its_tenant() {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let bravo = c.bare_tenant("bravo").await;
    let app = c.app(META_APP, SECRET, "verify").await;
    c.connect(&alpha, Channel::Whatsapp, PHONE, &app).await;
    c.connect(&bravo, Channel::Whatsapp, PHONE_B, &app).await;
    let mut ws_b = c.websocket(&c.token(&bravo.0, 300)).await;

    post(&c, "batch_multi").await;
    c.drained().await;
    let id = |n: u8| format!("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzBATCH00000000000300{n}");
    for (n, tenant) in [(1, &alpha), (2, &alpha), (3, &bravo)] {
        let m = c.message(&id(n)).await;
        assert_eq!(m["tenant_id"], tenant.0.as_str(), "message {n}");
        assert_eq!(m["location_id"], tenant.1.as_str(), "message {n}");
    }
    assert_eq!(
        c.message(&id(1)).await["text"],
        "Somos dos adultos y un bebé 👶"
    );
    assert_eq!(c.message(&id(3)).await["customer_id"], "447700900123");
    // The status and the reaction name messages not stored yet: kept, each in its tenant.
    let pending: Vec<(String, String)> =
        sqlx::query_as("SELECT tenant_id::text, kind FROM pending_message_events ORDER BY kind")
            .fetch_all(&c.db.owner)
            .await
            .expect("pending");
    assert_eq!(
        pending,
        [
            (bravo.0.clone(), "reaction".to_owned()),
            (alpha.0.clone(), "status".to_owned())
        ]
    );
    assert_eq!(
        ws_b.next_event().await["message"]["channel_message_id"],
        id(3).as_str()
    );
    c.stop().await;
}
