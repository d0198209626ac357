//! The platforms' rules, checked before a reply is stored (issue 14): a 422
//! naming the rule, and nothing sent.

use chrono::Duration;
use serde_json::json;

use crate::replies_support::{Platform, start};

#[tokio::test]
async fn outside_the_window_whatsapp_takes_only_templates() {
    let s = start().await;
    let t = s
        .thread(Platform::WhatsApp, false, Duration::hours(30))
        .await;
    let (status, body) = s.reply(&t, "text", json!({"text": "are you there?"})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("window_closed")),
        "{body}"
    );
    let template =
        json!({"template": {"name": "order_update", "language": "es", "parameters": ["A-17"]}});
    let (status, body) = s.reply(&t, "tpl", template).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["window"]["seconds_left"], 0);
    assert_eq!(body["message"]["message_type"], "template");
    let got = s.fake.wait_requests(1).await;
    assert_eq!(got[0].body["type"], "template");
    assert_eq!(got[0].body["template"]["name"], "order_update");
    assert_eq!(got[0].body["template"]["language"]["code"], "es");
    assert_eq!(
        got[0].body["template"]["components"][0]["parameters"][0]["text"],
        "A-17"
    );
    s.replies_drained().await;
    assert_eq!(
        s.fake.requests().len(),
        1,
        "the refused text was never sent"
    );
    s.cluster.stop().await;
}

#[tokio::test]
async fn messenger_past_the_window_needs_human_agent_and_within_seven_days() {
    let s = start().await;
    let plain = s
        .thread(Platform::Messenger, false, Duration::hours(30))
        .await;
    let (status, body) = s
        .reply(&plain, "k", json!({"text": "sorry for the wait"}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("window_closed")),
        "{body}"
    );

    let tagged = s
        .thread(Platform::Messenger, true, Duration::hours(30))
        .await;
    let (status, body) = s
        .reply(&tagged, "k", json!({"text": "sorry for the wait"}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["window"]["human_agent_enabled"], true);
    let left = body["window"]["human_agent_seconds_left"]
        .as_i64()
        .expect("left");
    assert!(left > 5 * 86_400, "{left}");
    let got = s.fake.wait_requests(1).await;
    assert_eq!(got[0].body["messaging_type"], "MESSAGE_TAG");
    assert_eq!(got[0].body["tag"], "HUMAN_AGENT");

    let stale = s.thread(Platform::Messenger, true, Duration::days(8)).await;
    let (status, body) = s.reply(&stale, "k", json!({"text": "hello again"})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("human_agent_window_closed")),
        "{body}"
    );
    s.replies_drained().await;
    assert_eq!(s.fake.requests().len(), 1);
    s.cluster.stop().await;
}

#[tokio::test]
async fn lengths_and_content_are_checked_per_platform() {
    let s = start().await;
    let ig = s
        .thread(Platform::Instagram, false, Duration::hours(1))
        .await;
    // 501 two-byte characters: 1,002 bytes, over Instagram's 1,000.
    let (status, body) = s.reply(&ig, "long", json!({"text": "é".repeat(501)})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("text_too_long")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("bytes")
    );
    let (status, body) = s.reply(&ig, "fits", json!({"text": "é".repeat(500)})).await;
    assert_eq!(status, 202, "{body}");
    let template = json!({"template": {"name": "t", "language": "en"}});
    let (status, body) = s.reply(&ig, "tpl", template).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("unsupported_content")),
        "{body}"
    );

    let wa = s
        .thread(Platform::WhatsApp, false, Duration::hours(1))
        .await;
    let (status, body) = s
        .reply(&wa, "long", json!({"text": "a".repeat(4097)}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("text_too_long")),
        "{body}"
    );
    let fb = s
        .thread(Platform::Messenger, false, Duration::hours(1))
        .await;
    let (status, body) = s
        .reply(&fb, "long", json!({"text": "a".repeat(2001)}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("text_too_long")),
        "{body}"
    );
    let media = json!({"media": {"kind": "image", "url": "https://cdn.example/p.jpg"}});
    let (status, body) = s.reply(&fb, "img", media).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = s
        .reply(
            &fb,
            "bad",
            json!({"text": "a", "media": {"kind": "image", "url": "x"}}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_reply")),
        "{body}"
    );

    let got = s.fake.wait_requests(2).await;
    s.replies_drained().await;
    assert_eq!(
        s.fake.requests().len(),
        2,
        "only the two accepted replies were sent"
    );
    let image = got
        .iter()
        .find(|r| r.path.contains(&fb.account))
        .expect("the image");
    assert_eq!(image.body["message"]["attachment"]["type"], "image");
    assert_eq!(
        image.body["message"]["attachment"]["payload"]["url"],
        "https://cdn.example/p.jpg"
    );
    s.cluster.stop().await;
}
