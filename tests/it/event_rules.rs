//! The rules events follow once their message is stored: a delivery is dated
//! by the platform, never by when FARO heard of it; equal timestamps resolve
//! in arrival order; a failure keeps its error whatever the order; and an
//! event that changes nothing is not announced again.

use faro_proto::conversations::v1::Channel;
use serde_json::{Value, json};

use crate::{
    cluster::{Cluster, Ws, fixture},
    dead_letter::dead_letters,
    whatsapp::{META_APP, PHONE, SECRET, post, setup},
};

const CUSTOMER: &str = "16505551234";
const BUSINESS: &str = "15550783881";
const PAGE: &str = "107856318000001";
const PSID: &str = "6785432101234567";
const TEXT: &str = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzTEXT0000000000000100";
const IMAGE: &str = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzIMAGE000000000000300";

fn messenger_mid(suffix: &str) -> String {
    format!(
        "m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P{suffix}"
    )
}

fn millis(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time, got {v}")))
        .expect("rfc3339")
        .timestamp_millis()
}

/// A fixture's JSON, to derive variants of it.
fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).expect("fixture is JSON")
}

async fn post_json(c: &Cluster, platform: &str, body: &Value) {
    let status = c
        .post_meta(platform, body.to_string().as_bytes(), SECRET)
        .await;
    assert_eq!(status, 200, "{platform} webhook accepted");
}

/// The WhatsApp reaction fixture, by `id` at `at` (unix seconds) on `target`;
/// `None` removes the reaction (Meta sends no emoji then).
fn whatsapp_reaction(id: &str, target: &str, emoji: Option<&str>, at: i64) -> Value {
    let mut body = fixture_json("whatsapp/reaction.json");
    let m = &mut body["entry"][0]["changes"][0]["value"]["messages"][0];
    m["id"] = id.into();
    m["timestamp"] = at.to_string().into();
    m["reaction"] = match emoji {
        Some(e) => json!({"message_id": target, "emoji": e}),
        None => json!({"message_id": target}),
    };
    body
}

/// An outbound message (a Business-app echo) with `id`, for statuses to land on.
fn outbound(id: &str, at: i64) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "smb_message_echoes", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": BUSINESS, "phone_number_id": PHONE},
        "message_echoes": [{"from": BUSINESS, "to": CUSTOMER, "id": id, "timestamp": at.to_string(),
                            "type": "text", "text": {"body": "Confirmado ✅"}}]}}]}]})
}

/// A WhatsApp status fixture, re-aimed at message `id`.
fn whatsapp_status(name: &str, id: &str) -> Value {
    let mut body = fixture_json(&format!("whatsapp/{name}.json"));
    body["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] = id.into();
    body
}

#[tokio::test]
async fn a_messenger_delivery_is_dated_by_its_watermark_not_its_arrival() {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let app = c.app(META_APP, SECRET, "verify-alpha").await;
    c.connect(&alpha, Channel::FacebookMessenger, PAGE, &app)
        .await;
    let watermark = 1_749_416_402_587;
    let delivery = fixture_json("messenger/delivery_documented.json");
    let sent = messenger_mid("Ei5p");

    // The message is stored first; the delivery (no `timestamp`, as Meta documents it) follows.
    post_json(
        &c,
        "facebook",
        &fixture_json("messenger/echo_page_inbox.json"),
    )
    .await;
    c.drained().await;
    post_json(&c, "facebook", &delivery).await;
    c.drained().await;
    let m = c.message(&sent).await;
    assert_eq!(m["status"], "delivered");
    assert_eq!(millis(&m["delivered_at"]), watermark);

    // Meta retries the same delivery: nothing moves.
    post_json(&c, "facebook", &delivery).await;
    c.drained().await;
    assert_eq!(millis(&c.message(&sent).await["delivered_at"]), watermark);

    // The delivery arrives before its message: it waits, and is dated the same.
    let early = messenger_mid("EARLY");
    let mut d = delivery.clone();
    d["entry"][0]["messaging"][0]["delivery"]["mids"][0] = early.clone().into();
    post_json(&c, "facebook", &d).await;
    c.drained().await;
    let mut echo = fixture_json("messenger/echo_page_inbox.json");
    echo["entry"][0]["messaging"][0]["message"]["mid"] = early.clone().into();
    post_json(&c, "facebook", &echo).await;
    c.drained().await;
    assert_eq!(millis(&c.message(&early).await["delivered_at"]), watermark);
    c.stop().await;
}

#[tokio::test]
async fn reactions_within_one_second_resolve_in_arrival_order() {
    let (c, _) = setup().await;
    post(&c, "text").await;
    c.drained().await;
    let second = 1_749_416_396;
    // Three reactions by one person in one whole second, each its own webhook, in this order.
    let steps = [
        ("wamid.REACT-A", Some("👍"), "👍"),
        ("wamid.REACT-B", Some("❤️"), "❤️"),
        ("wamid.REACT-C", None, ""),
        ("wamid.REACT-D", Some("😮"), "😮"),
        ("wamid.REACT-E", Some(""), ""),
    ];
    for (id, emoji, expected) in steps {
        post_json(&c, "whatsapp", &whatsapp_reaction(id, TEXT, emoji, second)).await;
        c.drained().await;
        let m = c.message(TEXT).await;
        assert_eq!(m["reactions"][CUSTOMER]["emoji"], expected, "after {id}");
    }
    // Timestamps still decide first: an older reaction arriving late loses,
    // and Meta retrying the last one changes nothing.
    post_json(
        &c,
        "whatsapp",
        &whatsapp_reaction("wamid.REACT-OLD", TEXT, Some("🔥"), second - 1),
    )
    .await;
    post_json(
        &c,
        "whatsapp",
        &whatsapp_reaction("wamid.REACT-E", TEXT, Some(""), second),
    )
    .await;
    c.drained().await;
    assert_eq!(c.message(TEXT).await["reactions"][CUSTOMER]["emoji"], "");

    // The same for reactions that wait for their message: each is kept, the last wins.
    for (id, emoji) in [("wamid.WAIT-A", Some("👍")), ("wamid.WAIT-B", None)] {
        post_json(&c, "whatsapp", &whatsapp_reaction(id, IMAGE, emoji, second)).await;
        c.drained().await;
    }
    post(&c, "image").await;
    c.drained().await;
    assert_eq!(c.message(IMAGE).await["reactions"][CUSTOMER]["emoji"], "");
    assert_eq!(
        c.count("SELECT count(*) FROM pending_message_events").await,
        0
    );
    c.stop().await;
}

#[tokio::test]
async fn a_messenger_unreact_in_the_same_millisecond_removes_the_reaction() {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let app = c.app(META_APP, SECRET, "verify-alpha").await;
    c.connect(&alpha, Channel::FacebookMessenger, PAGE, &app)
        .await;
    post_json(&c, "facebook", &fixture_json("messenger/text.json")).await;
    c.drained().await;
    let react = fixture_json("messenger/reaction_react.json");
    let mut unreact = fixture_json("messenger/reaction_unreact.json");
    unreact["entry"][0]["messaging"][0]["timestamp"] =
        react["entry"][0]["messaging"][0]["timestamp"].clone();
    post_json(&c, "facebook", &react).await;
    c.drained().await;
    post_json(&c, "facebook", &unreact).await;
    c.drained().await;
    let m = c.message(&messenger_mid("Tx4w")).await;
    assert_eq!(
        m["reactions"][PSID]["emoji"], "",
        "the unreact wins the tie"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_failure_keeps_its_error_whatever_order_it_arrives_in() {
    let (c, _) = setup().await;
    let (read_first, failed_first) = ("wamid.OUT-READ-FIRST", "wamid.OUT-FAILED-FIRST");
    for id in [read_first, failed_first] {
        post_json(&c, "whatsapp", &outbound(id, 1_749_416_383)).await;
    }
    c.drained().await;
    for (id, order) in [
        (read_first, ["status_read", "status_failed"]),
        (failed_first, ["status_failed", "status_read"]),
    ] {
        for name in order {
            post_json(&c, "whatsapp", &whatsapp_status(name, id)).await;
            c.drained().await;
        }
    }
    for id in [read_first, failed_first] {
        let m = c.message(id).await;
        assert_eq!(m["status"], "read", "{id}: it was read, whatever failed");
        assert_eq!(millis(&m["read_at"]), 1_749_416_408_000, "{id}");
        assert_eq!(millis(&m["failed_at"]), 1_749_416_410_000, "{id}");
        assert_eq!(
            m["status_error"][0]["code"], 131_047,
            "{id}: Meta's error is kept"
        );
        assert_eq!(
            m["status_error"][0]["error_data"]["details"],
            "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
            "{id}"
        );
    }
    c.stop().await;
}

/// The next frame names `id`, as `kind`.
async fn expect_frame(ws: &mut Ws, kind: &str, id: &str) -> Value {
    let e = ws.next_event().await;
    assert_eq!(
        (
            e["type"].as_str(),
            e["message"]["channel_message_id"].as_str()
        ),
        (Some(kind), Some(id)),
        "unexpected frame {e}"
    );
    e
}

#[tokio::test]
async fn an_event_that_changes_nothing_is_not_announced() {
    let (c, _) = setup().await;
    let mut ws = c.websocket(&c.token(&c.count_tenant().await, 300)).await;
    let sent = "wamid.OUT-ANNOUNCED";
    post(&c, "text").await;
    c.drained().await;
    post_json(&c, "whatsapp", &outbound(sent, 1_749_416_383)).await;
    c.drained().await;
    expect_frame(&mut ws, "message.created", TEXT).await;
    expect_frame(&mut ws, "message.created", sent).await;

    // Each event twice (Meta retries): one frame for the change, none for the repeat.
    for _ in 0..2 {
        post(&c, "reaction").await;
        c.drained().await;
    }
    let e = expect_frame(&mut ws, "message.updated", TEXT).await;
    assert_eq!(e["message"]["reactions"][0]["emoji"], "👍");
    for _ in 0..2 {
        post_json(&c, "whatsapp", &whatsapp_status("status_read", sent)).await;
        c.drained().await;
    }
    let e = expect_frame(&mut ws, "message.updated", sent).await;
    assert_eq!(e["message"]["status"], "read");
    // A delivered after read still records when it was delivered: a change.
    post_json(&c, "whatsapp", &whatsapp_status("status_delivered", sent)).await;
    c.drained().await;
    expect_frame(&mut ws, "message.updated", sent).await;
    // An older reaction than the one shown changes nothing either.
    post_json(
        &c,
        "whatsapp",
        &whatsapp_reaction("wamid.REACT-OLD", TEXT, Some("🔥"), 1_749_416_300),
    )
    .await;
    c.drained().await;

    // The next frame is the next real news, not a repeat.
    let next = crate::cluster::whatsapp_text(
        &crate::cluster::Tenant {
            id: String::new(),
            location_id: String::new(),
            phone_number_id: PHONE.into(),
            app_secret: SECRET.into(),
        },
        "wamid.NEXT",
        CUSTOMER,
        "¿y el desayuno?",
        1_749_416_420,
    );
    assert_eq!(c.post_meta("whatsapp", next.as_bytes(), SECRET).await, 200);
    expect_frame(&mut ws, "message.created", "wamid.NEXT").await;
    assert!(dead_letters(&c).await.is_empty(), "nothing dead-lettered");
    c.stop().await;
}
