//! Replies sent through each platform (issue 14): the right path, body and
//! credential at a fake Graph API / YCloud API; idempotency; isolation.

use chrono::Duration;
use serde_json::json;

use crate::{
    cluster::JWT_SECRET,
    replies_support::{Platform, start},
};

#[tokio::test]
async fn a_text_reply_goes_out_on_each_platform_with_its_path_body_and_credential() {
    let s = start().await;
    let platforms = [
        Platform::WhatsApp,
        Platform::Messenger,
        Platform::Instagram,
        Platform::YCloud,
    ];
    for (n, p) in platforms.into_iter().enumerate() {
        let t = s.thread(p, false, Duration::hours(1)).await;
        let (status, body) = s
            .reply(&t, &format!("k-{n}"), json!({"text": "Sí, la tenemos 🙂"}))
            .await;
        assert_eq!(status, 202, "{p:?}: {body}");
        let message = &body["message"];
        assert_eq!(message["status"], "pending", "{p:?}");
        assert_eq!(message["direction"], "outbound");
        assert_eq!(message["sender_type"], "agent");
        let left = body["window"]["seconds_left"].as_i64().expect("time left");
        assert!((82_000..=82_800).contains(&left), "{p:?}: {left}");

        let got = s.fake.wait_requests(n + 1).await;
        let r = &got[n];
        let id = message["id"].as_str().expect("id");
        let (_, _, platform_id) = s.wait_status(id, "sent").await;
        match p {
            Platform::WhatsApp => {
                assert_eq!(r.path, format!("/v23.0/{}/messages", t.account));
                assert_eq!(
                    r.authorization.as_deref(),
                    Some(format!("Bearer {}", t.credential).as_str())
                );
                assert_eq!(r.body["messaging_product"], "whatsapp");
                assert_eq!(r.body["to"], t.customer);
                assert_eq!(r.body["type"], "text");
                assert_eq!(r.body["text"]["body"], "Sí, la tenemos 🙂");
                assert!(platform_id.starts_with("wamid.fake"), "{platform_id}");
            }
            Platform::Messenger | Platform::Instagram => {
                assert_eq!(r.path, format!("/v23.0/{}/messages", t.account));
                assert_eq!(
                    r.authorization.as_deref(),
                    Some(format!("Bearer {}", t.credential).as_str())
                );
                assert_eq!(r.body["recipient"]["id"], t.customer);
                assert_eq!(r.body["messaging_type"], "RESPONSE");
                assert!(r.body.get("tag").is_none());
                assert_eq!(r.body["message"]["text"], "Sí, la tenemos 🙂");
                assert!(platform_id.starts_with("m_fake"), "{platform_id}");
            }
            Platform::YCloud => {
                assert_eq!(r.path, "/v2/whatsapp/messages/sendDirectly");
                assert_eq!(r.api_key.as_deref(), Some(t.credential.as_str()));
                assert!(r.authorization.is_none());
                assert_eq!(r.body["from"], t.account);
                assert_eq!(r.body["to"], t.customer);
                assert_eq!(r.body["text"]["body"], "Sí, la tenemos 🙂");
                assert!(platform_id.starts_with("wamid.fake"), "{platform_id}");
            }
        }
    }
    s.cluster.stop().await;
}

#[tokio::test]
async fn the_same_idempotency_key_twice_sends_once_and_answers_the_first_reply() {
    let s = start().await;
    let t = s
        .thread(Platform::WhatsApp, false, Duration::hours(2))
        .await;
    let (first, a) = s.reply(&t, "same-key", json!({"text": "one"})).await;
    let (second, b) = s.reply(&t, "same-key", json!({"text": "one"})).await;
    assert_eq!((first, second), (202, 200), "{a} {b}");
    assert_eq!(a["message"]["id"], b["message"]["id"]);
    assert_eq!(b["replayed"], true);
    s.wait_status(a["message"]["id"].as_str().expect("id"), "sent")
        .await;
    let (third, c) = s.reply(&t, "same-key", json!({"text": "one"})).await;
    assert_eq!(
        (third, &c["message"]["status"]),
        (200, &json!("sent")),
        "{c}"
    );
    // Another body under a used key is refused, not sent.
    let (reused, d) = s.reply(&t, "same-key", json!({"text": "two"})).await;
    assert_eq!(
        (reused, &d["error"]["code"]),
        (422, &json!("idempotency_key_reused")),
        "{d}"
    );
    s.replies_drained().await;
    assert_eq!(s.fake.requests().len(), 1, "sent once");
    assert_eq!(
        s.count_messages(&t).await,
        2,
        "the inbound message and one reply"
    );
    s.cluster.stop().await;
}

#[tokio::test]
async fn requests_racing_with_one_idempotency_key_store_and_send_one_reply() {
    let s = start().await;
    let t = s
        .thread(Platform::WhatsApp, false, Duration::hours(2))
        .await;
    let answers =
        futures::future::join_all((0..8).map(|_| s.reply(&t, "raced-key", json!({"text": "one"}))))
            .await;
    let mut ids = std::collections::HashSet::new();
    for (status, body) in &answers {
        assert!([200, 202].contains(status), "{status} {body}");
        ids.insert(body["message"]["id"].clone());
    }
    assert_eq!(
        ids.len(),
        1,
        "every answer names the one reply: {answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|a| a.0 == 202).count(),
        1,
        "one request created it"
    );
    s.replies_drained().await;
    assert_eq!(s.fake.requests().len(), 1, "sent once");
    assert_eq!(s.count_messages(&t).await, 2);
    s.cluster.stop().await;
}

#[tokio::test]
async fn another_tenants_or_locations_conversation_is_404_and_nothing_is_sent() {
    let s = start().await;
    let a = s
        .thread(Platform::WhatsApp, false, Duration::hours(1))
        .await;
    let b = s
        .thread(Platform::Messenger, false, Duration::hours(1))
        .await;
    for (token, conversation) in [
        (&a.token, b.conversation.as_str()),
        (&a.token, "0193d6f5-0000-7000-8000-000000000000"),
        (&a.token, "not-a-uuid"),
    ] {
        let (status, body) = s
            .reply_to(token, conversation, "k", json!({"text": "x"}))
            .await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (404, &json!("not_found")),
            "{body}"
        );
    }
    // An agent of B's tenant limited to another location does not find it either.
    let limited = faro_edge::auth::JwtKeys::new(JWT_SECRET.as_bytes())
        .expect("keys")
        .issue(&faro_edge::auth::Claims {
            sub: "agent-2".into(),
            tenant_id: b.tenant.parse().expect("uuid"),
            location_ids: Some(vec![uuid::Uuid::now_v7()]),
            exp: u64::try_from(chrono::Utc::now().timestamp() + 600).expect("exp"),
        })
        .expect("token");
    let (status, _) = s
        .reply_to(&limited, &b.conversation, "k", json!({"text": "x"}))
        .await;
    assert_eq!(status, 404);
    // Without a key, or a token, nothing happens either.
    let (status, body) = s
        .cluster
        .http
        .post(s.cluster.url(&format!(
            "/api/v1/conversations/{}/messages",
            b.conversation
        )))
        .bearer_auth(&b.token)
        .json(&json!({"text": "x"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .expect("answer");
    assert_eq!(status, 400);
    let body: serde_json::Value = body.json().await.expect("json");
    assert_eq!(body["error"]["code"], "idempotency_key_required");
    let (status, _) = s
        .reply_to("not-a-jwt", &b.conversation, "k", json!({"text": "x"}))
        .await;
    assert_eq!(status, 401);
    s.replies_drained().await;
    assert!(s.fake.requests().is_empty(), "nothing sent");
    assert_eq!(
        s.count_messages(&b).await,
        1,
        "no reply stored in B's thread"
    );
    s.cluster.stop().await;
}

#[tokio::test]
async fn a_websocket_send_frame_replies_like_the_http_route() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let s = start().await;
    let t = s
        .thread(Platform::Messenger, false, Duration::hours(1))
        .await;
    let mut ws = s.cluster.websocket(&t.token).await;
    let frame = json!({"type": "send", "id": "s-1", "conversation_id": t.conversation,
                       "idempotency_key": "ws-1", "text": "from the socket"});
    ws.0.send(Message::text(frame.to_string()))
        .await
        .expect("sent");
    let answer = loop {
        let e = ws.next_event().await;
        if e["type"] == "sent" || e["type"] == "error" {
            break e;
        }
    };
    assert_eq!(answer["type"], "sent", "{answer}");
    assert_eq!(answer["id"], "s-1");
    assert_eq!(answer["message"]["status"], "pending");
    let got = s.fake.wait_requests(1).await;
    assert_eq!(got[0].body["message"]["text"], "from the socket");
    // A broken rule comes back as an error frame naming it.
    let long = json!({"type": "send", "id": 2, "conversation_id": t.conversation,
                      "idempotency_key": "ws-2", "text": "a".repeat(2001)});
    ws.0.send(Message::text(long.to_string()))
        .await
        .expect("sent");
    let refused = loop {
        let e = ws.next_event().await;
        if e["type"] == "error" {
            break e;
        }
    };
    assert_eq!(
        (&refused["code"], &refused["id"]),
        (&json!("text_too_long"), &json!(2)),
        "{refused}"
    );
    s.cluster.stop().await;
}
