//! The conversation shows its customer-service window (issue 14): in the
//! API, and live when the customer's new message reopens or extends it.

use chrono::{Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::replies_support::{Platform, Thread, start};

async fn conversation(s: &crate::replies_support::Setup, t: &Thread) -> Value {
    let r = s
        .cluster
        .http
        .get(
            s.cluster
                .url(&format!("/api/v1/conversations/{}", t.conversation)),
        )
        .bearer_auth(&t.token)
        .send()
        .await
        .expect("edge answers");
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.expect("json")
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The window's instants, to the second (WhatsApp's timestamps are seconds).
fn instants(w: &Value) -> (String, String) {
    let at = |k: &str| {
        let s = w[k].as_str().unwrap_or_else(|| panic!("{k} in {w}"));
        let t = chrono::DateTime::parse_from_rfc3339(s).expect("rfc3339");
        rfc3339(t.with_timezone(&Utc))
    };
    (at("last_inbound_at"), at("closes_at"))
}

#[tokio::test]
async fn the_window_is_shown_and_a_new_customer_message_moves_it_live() {
    let s = start().await;
    let opened = Utc::now() - Duration::hours(30);
    let t = s
        .thread(Platform::WhatsApp, false, Duration::hours(30))
        .await;
    let before = conversation(&s, &t).await;
    let (last, closes) = instants(&before["window"]);
    let last = chrono::DateTime::parse_from_rfc3339(&last).expect("rfc3339");
    let closes = chrono::DateTime::parse_from_rfc3339(&closes).expect("rfc3339");
    assert!(
        (last.with_timezone(&Utc) - opened).num_seconds().abs() <= 5,
        "the customer's message: {before}"
    );
    assert_eq!(closes - last, Duration::hours(24));
    assert_eq!(before["window"]["seconds_left"], 0, "closed after 24 h");

    let mut ws = s.cluster.websocket(&t.token).await;
    let now = Utc::now();
    let webhook = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA-1",
        "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001234", "phone_number_id": t.account},
        "contacts": [{"profile": {"name": "Kerry"}, "wa_id": t.customer}],
        "messages": [{"from": t.customer, "id": "wamid.again", "timestamp": now.timestamp().to_string(),
                      "type": "text", "text": {"body": "still there?"}}]}}]}]});
    let code = s
        .cluster
        .post_meta("whatsapp", webhook.to_string().as_bytes(), &t.secret)
        .await;
    assert_eq!(code, 200);
    let created = loop {
        let e = ws.next_event().await;
        if e["type"] == "message.created" && e["message"]["channel_message_id"] == "wamid.again" {
            break e;
        }
    };
    let live = &created["conversation"]["window"];
    assert_eq!(
        instants(live),
        (rfc3339(now), rfc3339(now + Duration::hours(24))),
        "the live frame carries the reopened window: {created}"
    );
    let left = live["seconds_left"].as_i64().expect("seconds_left");
    assert!((86_000..=86_400).contains(&left), "{left}");
    let after = conversation(&s, &t).await;
    assert_eq!(instants(&after["window"]), instants(live), "{after}");

    // Our own reply is no customer message: the window stays.
    let (status, body) = s.reply(&t, "k", json!({"text": "yes"})).await;
    assert_eq!(status, 202, "{body}");
    let reply = loop {
        let e = ws.next_event().await;
        if e["type"] == "message.created" && e["message"]["id"] == body["message"]["id"] {
            break e;
        }
    };
    assert_eq!(instants(&reply["conversation"]["window"]), instants(live));
    s.cluster.stop().await;
}
