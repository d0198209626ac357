//! What happens to a reply after it is accepted (issue 14): transient errors
//! retried, permanent ones failing it visibly, the platform's statuses moving
//! it, and its echo recognised as the same message.

use chrono::Duration;
use serde_json::{Value, json};

use crate::replies_support::{Platform, start, start_with};

/// The next live event of `kind` about message `id`.
async fn event_for(ws: &mut crate::cluster::Ws, kind: &str, id: &str) -> Value {
    loop {
        let e = ws.next_event().await;
        if e["type"] == kind && e["message"]["id"] == id {
            return e;
        }
    }
}

#[tokio::test]
async fn server_errors_are_retried_then_the_reply_is_sent() {
    let s = start_with(4).await;
    let t = s
        .thread(Platform::WhatsApp, false, Duration::hours(1))
        .await;
    let unavailable =
        json!({"error": {"message": "Service temporarily unavailable", "code": 131016}});
    s.fake.script([
        (503, unavailable.clone()),
        (500, json!({"error": {"message": "oops"}})),
        (
            400,
            json!({"error": {"code": 130429, "message": "Rate limit hit"}}),
        ),
    ]);
    let (status, body) = s.reply(&t, "k", json!({"text": "hi"})).await;
    assert_eq!(status, 202, "{body}");
    let (_, error, id) = s
        .wait_status(body["message"]["id"].as_str().expect("id"), "sent")
        .await;
    assert!(error.is_none());
    assert_eq!(id, "wamid.fake4");
    assert_eq!(
        s.fake.requests().len(),
        4,
        "three failures, then the send that worked"
    );
    s.cluster.stop().await;
}

#[tokio::test]
async fn a_permanent_error_fails_the_reply_visibly_in_the_api_and_live() {
    let s = start().await;
    let t = s
        .thread(Platform::WhatsApp, false, Duration::hours(1))
        .await;
    let mut ws = s.cluster.websocket(&t.token).await;
    let refused = json!({"error": {"message": "Message failed to send because more than 24 hours have passed",
                                   "type": "OAuthException", "code": 131047, "fbtrace_id": "Az"}});
    s.fake.script([(400, refused)]);
    let (status, body) = s.reply(&t, "k", json!({"text": "hi"})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["message"]["id"].as_str().expect("id").to_owned();
    let created = event_for(&mut ws, "message.created", &id).await;
    assert_eq!(created["message"]["status"], "pending");
    let updated = event_for(&mut ws, "message.updated", &id).await;
    assert_eq!(updated["message"]["status"], "failed", "{updated}");
    assert_eq!(updated["message"]["status_error"]["error"]["code"], 131047);
    assert_eq!(updated["message"]["status_error"]["http_status"], 400);
    // The API's answer to the same request is the reply as it is now.
    let (status, again) = s.reply(&t, "k", json!({"text": "hi"})).await;
    assert_eq!(status, 200);
    assert_eq!(again["message"]["status"], "failed");
    assert_eq!(again["message"]["status_error"]["error"]["code"], 131047);
    s.replies_drained().await;
    assert_eq!(
        s.fake.requests().len(),
        1,
        "a permanent error is not retried"
    );
    s.cluster.stop().await;
}

#[tokio::test]
async fn a_status_webhook_moves_a_sent_reply_and_echoes_are_not_second_messages() {
    let s = start().await;
    let wa = s
        .thread(Platform::WhatsApp, false, Duration::hours(1))
        .await;
    let (_, body) = s.reply(&wa, "k", json!({"text": "on its way"})).await;
    let id = body["message"]["id"].as_str().expect("id").to_owned();
    // The fake platform's first answer names the message `wamid.fake1`.
    let (_, _, wamid) = s.wait_status(&id, "sent").await;
    assert_eq!(wamid, "wamid.fake1", "the reply carries the platform's id");
    let status = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA-1", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001234", "phone_number_id": wa.account},
        "statuses": [{"id": "wamid.fake1", "status": "delivered", "timestamp": chrono::Utc::now().timestamp().to_string(),
                      "recipient_id": wa.customer}]}}]}]});
    let code = s
        .cluster
        .post_meta("whatsapp", status.to_string().as_bytes(), &wa.secret)
        .await;
    assert_eq!(code, 200);
    s.wait_status(&id, "delivered").await;

    for (n, p) in [(2, Platform::Messenger), (3, Platform::Instagram)] {
        let t = s.thread(p, false, Duration::hours(1)).await;
        let (_, body) = s.reply(&t, "k", json!({"text": "hello"})).await;
        let (_, _, mid) = s
            .wait_status(body["message"]["id"].as_str().expect("id"), "sent")
            .await;
        assert_eq!(mid, format!("m_fake{n}"));
        let ms = chrono::Utc::now().timestamp_millis();
        // Messenger's echo names our app; Instagram's echo names none.
        let mut message = json!({"mid": format!("m_fake{n}"), "text": "hello", "is_echo": true});
        if p == Platform::Messenger {
            message["app_id"] = json!(t.app);
        }
        let echo = json!({"object": if p == Platform::Messenger { "page" } else { "instagram" },
            "entry": [{"id": t.account, "time": ms, "messaging": [{"sender": {"id": t.account},
            "recipient": {"id": t.customer}, "timestamp": ms, "message": message}]}]});
        let platform = if p == Platform::Messenger {
            "facebook"
        } else {
            "instagram"
        };
        let code = s
            .cluster
            .post_meta(platform, echo.to_string().as_bytes(), &t.secret)
            .await;
        assert_eq!(code, 200);
        s.cluster.drained().await;
        assert_eq!(
            s.count_messages(&t).await,
            2,
            "{p:?}: the inbound message and the reply, once"
        );
    }
    s.cluster.stop().await;
}

#[tokio::test]
async fn an_echo_that_beats_the_platforms_answer_is_merged_into_the_reply() {
    let s = start().await;
    let t = s
        .thread(Platform::Instagram, false, Duration::hours(1))
        .await;
    let mut ws = s.cluster.websocket(&t.token).await;
    // Instagram has the reply (and echoes it) before FARO learns its id.
    let gate = s.fake.hold_answers();
    let (status, body) = s.reply(&t, "k", json!({"text": "on its way"})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["message"]["id"].as_str().expect("id").to_owned();
    s.fake.wait_requests(1).await;
    let ms = chrono::Utc::now().timestamp_millis();
    let echo = json!({"object": "instagram", "entry": [{"id": t.account, "time": ms, "messaging": [{
        "sender": {"id": t.account}, "recipient": {"id": t.customer}, "timestamp": ms,
        "message": {"mid": "m_fake1", "text": "on its way", "is_echo": true}}]}]});
    let code = s
        .cluster
        .post_meta("instagram", echo.to_string().as_bytes(), &t.secret)
        .await;
    assert_eq!(code, 200);
    s.cluster.drained().await;
    let stored_echo = loop {
        let e = ws.next_event().await;
        if e["type"] == "message.created" && e["message"]["channel_message_id"] == "m_fake1" {
            break e["message"]["id"].as_str().expect("echo id").to_owned();
        }
    };
    assert_eq!(s.count_messages(&t).await, 3, "the echo is stored first");
    gate.open();
    let (_, _, mid) = s.wait_status(&id, "sent").await;
    assert_eq!(mid, "m_fake1", "the reply holds the platform's id");
    assert_eq!(
        s.count_messages(&t).await,
        2,
        "the inbound message and the reply: the echo is merged"
    );
    // Agents are told: the echo is gone, the reply is sent.
    let gone = event_for(&mut ws, "message.updated", &stored_echo).await;
    assert!(gone["message"]["deleted_at"].is_string(), "{gone}");
    let sent = event_for(&mut ws, "message.updated", &id).await;
    assert_eq!(sent["message"]["channel_message_id"], "m_fake1", "{sent}");
    s.replies_drained().await;
    assert_eq!(s.fake.requests().len(), 1, "sent once");
    s.cluster.stop().await;
}

/// A Messenger watermark says every message the page sent before it was
/// delivered (or read). A reply still `pending` was not sent (or the send is
/// not recorded yet): the watermark does not cover it. Before migration 0026
/// it did, and the reply showed `delivered`; its send then failing left it
/// `delivered`, since a failure is recorded on a pending reply only.
#[tokio::test]
async fn a_messenger_watermark_does_not_mark_a_pending_reply() {
    let s = start().await;
    let t = s
        .thread(Platform::Messenger, false, Duration::hours(1))
        .await;
    let refused = json!({"error": {"message": "(#551) This person isn't available right now.",
                                   "type": "OAuthException", "code": 551, "fbtrace_id": "Az"}});
    s.fake.script([(400, refused)]);
    let gate = s.fake.hold_answers();
    let (status, body) = s.reply(&t, "k", json!({"text": "hi"})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["message"]["id"].as_str().expect("id").to_owned();
    s.fake.wait_requests(1).await;
    // Delivered and read up to now: after the reply was stored.
    let ms = chrono::Utc::now().timestamp_millis() + 1_000;
    for (kind, field) in [("delivery", "watermark"), ("read", "watermark")] {
        let mark = json!({"object": "page", "entry": [{"id": t.account, "time": ms, "messaging": [{
            "sender": {"id": t.customer}, "recipient": {"id": t.account}, "timestamp": ms,
            kind: {field: ms}}]}]});
        let code = s
            .cluster
            .post_meta("facebook", mark.to_string().as_bytes(), &t.secret)
            .await;
        assert_eq!(code, 200, "{kind}");
    }
    s.cluster.drained().await;
    let (still,): (Option<String>,) =
        sqlx::query_as("SELECT status FROM messages WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&s.cluster.db.owner)
            .await
            .expect("the reply");
    assert_eq!(
        still.as_deref(),
        Some("pending"),
        "not sent yet: not delivered"
    );
    gate.open();
    let (_, error, _) = s.wait_status(&id, "failed").await;
    assert_eq!(error.expect("the platform's error")["error"]["code"], 551);
    s.replies_drained().await;
    s.cluster.stop().await;
}
