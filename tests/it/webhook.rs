//! The walking skeleton end to end, and every way a webhook can be refused.

use crate::cluster::{Cluster, Options, whatsapp_text};

#[tokio::test]
async fn signed_text_reaches_the_tenants_websocket_and_is_stored_once() {
    let c = Cluster::start().await;
    let a = c.tenant("alpha").await;
    let b = c.tenant("bravo").await;
    let mut ws_a = c.websocket(&c.token(&a.id, 300)).await;
    let mut ws_b = c.websocket(&c.token(&b.id, 300)).await;

    // Meta escapes non-ASCII as \uXXXX and signs those exact bytes.
    let text = "¿Tienen cupo el sábado? 👍 café";
    let body = whatsapp_text(&a, "wamid.A1", "16315551181", text, 1_700_000_000)
        .replace('¿', "\\u00bf")
        .replace('á', "\\u00e1");
    let (status, json) = c.post_signed(&body, &a.app_secret).await;
    assert_eq!((status, json["status"].as_str()), (200, Some("queued")));

    let event = ws_a.next_event().await;
    assert_eq!(event["type"], "message.created");
    assert_eq!(event["tenant_id"], a.id);
    assert_eq!(event["location_id"], a.location_id);
    let m = &event["message"];
    assert_eq!(m["text"], text);
    assert_eq!(m["channel"], "whatsapp");
    assert_eq!(m["channel_message_id"], "wamid.A1");
    assert_eq!(m["direction"], "inbound");
    assert_eq!(m["sender_type"], "customer");
    assert_eq!(m["message_type"], "text");
    assert_eq!(m["sender_id"], "16315551181");
    assert_eq!(m["timestamp"], "2023-11-14T22:13:20.000Z");
    assert_eq!(event["conversation"]["customer_name"], "Kerry Fisher");
    assert_eq!(event["conversation"]["customer_id"], "16315551181");

    // The same delivery again (Meta retries): 200, still one row, no second event.
    let (status, _) = c.post_signed(&body, &a.app_secret).await;
    assert_eq!(status, 200);
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 1);
    assert_eq!(c.count("SELECT count(*) FROM conversations").await, 1);
    assert!(
        crate::dead_letter::dead_letters(&c).await.is_empty(),
        "a redelivery is stored as nothing, not rejected"
    );
    let row: (
        String,
        String,
        String,
        chrono::DateTime<chrono::Utc>,
        String,
    ) = sqlx::query_as(
        "SELECT m.tenant_id::text, m.text, m.sender_id, m.\"timestamp\", m.metadata->'event'->>'id'
         FROM messages m",
    )
    .fetch_one(&c.db.owner)
    .await
    .expect("row");
    assert_eq!(row.0, a.id);
    assert_eq!(row.1, text);
    assert_eq!(row.2, "16315551181");
    assert_eq!(row.3.timestamp(), 1_700_000_000);
    assert_eq!(row.4, "wamid.A1");

    // A's next event is its next message, not the duplicate; B's first event is
    // its own message, never A's.
    let (status, _) = c
        .post_signed(
            &whatsapp_text(&a, "wamid.A2", "16315551181", "second", 1_700_000_100),
            &a.app_secret,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        ws_a.next_event().await["message"]["channel_message_id"],
        "wamid.A2"
    );
    let (status, _) = c
        .post_signed(
            &whatsapp_text(&b, "wamid.B1", "447700900123", "hello", 1_700_000_200),
            &b.app_secret,
        )
        .await;
    assert_eq!(status, 200);
    let event_b = ws_b.next_event().await;
    assert_eq!(event_b["message"]["channel_message_id"], "wamid.B1");
    assert_eq!(event_b["tenant_id"], b.id);

    c.drained().await;
    let last: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT last_message_at FROM conversations WHERE customer_id = '16315551181'",
    )
    .fetch_one(&c.db.owner)
    .await
    .expect("thread");
    assert_eq!(last.timestamp(), 1_700_000_100);
    c.stop().await;
}

#[tokio::test]
async fn refused_webhooks_answer_json_errors_and_queue_nothing() {
    let c = Cluster::start_with(Options {
        max_body_bytes: 4096,
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let b = c.tenant("bravo").await;
    let body = whatsapp_text(&a, "wamid.X", "111", "hi", 1_700_000_000);

    let (status, json) = c.post_webhook(body.as_bytes(), None).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (401, Some("missing_signature"))
    );

    let (status, json) = c.post_webhook(body.as_bytes(), Some("sha256=nothex")).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );

    let wrong = faro_edge::sign_meta_payload(b"not-the-secret", body.as_bytes());
    let (status, json) = c.post_webhook(body.as_bytes(), Some(&wrong)).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );

    // Signed by another (registered) app: B's secret does not vouch for A's number.
    let (status, json) = c.post_signed(&body, &b.app_secret).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );

    // A re-serialized body no longer matches the signature over the original bytes.
    let sig = faro_edge::sign_meta_payload(a.app_secret.as_bytes(), body.as_bytes());
    let reserialized =
        serde_json::to_vec_pretty(&serde_json::from_str::<serde_json::Value>(&body).expect("json"))
            .expect("json");
    let (status, _) = c.post_webhook(&reserialized, Some(&sig)).await;
    assert_eq!(status, 401);

    let (status, json) = c.post_signed("this is not json", &a.app_secret).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );

    let unknown = body.replace(&a.phone_number_id, "not-connected");
    let (status, json) = c.post_signed(&unknown, &a.app_secret).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (401, Some("unknown_account"))
    );

    let huge = whatsapp_text(&a, "wamid.BIG", "111", &"x".repeat(8192), 1_700_000_000);
    let (status, json) = c.post_signed(&huge, &a.app_secret).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );

    let resp = c
        .http
        .put(c.url("/api/v1/webhooks/whatsapp"))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 405);
    let resp = c.http.get(c.url("/nope")).send().await.expect("answer");
    assert_eq!(resp.status().as_u16(), 404);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["error"]["code"], "not_found");

    assert_eq!(
        c.jobs_added().await,
        0,
        "a refused webhook must queue nothing"
    );
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 0);
    assert_eq!(c.count("SELECT count(*) FROM conversations").await, 0);

    // And a good one still goes through, proving the checks above could pass.
    let (status, _) = c.post_signed(&body, &a.app_secret).await;
    assert_eq!(status, 200);
    assert_eq!(c.jobs_added().await, 1);
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 1);
    c.stop().await;
}

#[tokio::test]
async fn verification_handshake_needs_a_registered_verify_token() {
    let c = Cluster::start().await;
    let _a = c.tenant("alpha").await;
    let get = |q: &'static str| {
        let url = c.url(&format!("/api/v1/webhooks/whatsapp?{q}"));
        let http = c.http.clone();
        async move {
            let r = http.get(url).send().await.expect("answer");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    };
    let (status, body) =
        get("hub.mode=subscribe&hub.verify_token=verify-alpha&hub.challenge=1158201444").await;
    assert_eq!((status, body.as_str()), (200, "1158201444"));

    let (status, body) = get("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1").await;
    assert_eq!(status, 403);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json error");
    assert_eq!(json["error"]["code"], "verification_failed");

    let (status, _) =
        get("hub.mode=unsubscribe&hub.verify_token=verify-alpha&hub.challenge=1").await;
    assert_eq!(status, 403);
    let (status, _) = get("hub.mode=subscribe&hub.challenge=1").await;
    assert_eq!(status, 403);
    let (status, _) = get("hub.mode=subscribe&hub.verify_token=verify-alpha").await;
    assert_eq!(status, 400);
    c.stop().await;
}

/// A webhook at the size limit, batching hundreds of long messages, fits
/// every hop: edge → ingest → Redis → conversations. Past tonic's default
/// 4 MiB message limit the store call would fail and be retried forever.
#[tokio::test]
async fn a_webhook_at_the_size_limit_is_stored_whole() {
    let c = Cluster::start_with(Options {
        max_body_bytes: faro_proto::MAX_WEBHOOK_BYTES,
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let text = "¿Tienen habitación? ".repeat(190); // ~4 KB, WhatsApp's longest text
    let messages: Vec<serde_json::Value> = (0..600)
        .map(|i| {
            serde_json::json!({"from": "111", "id": format!("wamid.BIG{i}"), "timestamp": "1700000000",
                               "type": "text", "text": {"body": text}})
        })
        .collect();
    let body = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [
        {"field": "messages", "value": {"metadata": {"phone_number_id": a.phone_number_id}, "messages": messages}}]}]})
    .to_string();
    assert!(body.len() > 2 * 1024 * 1024 && body.len() < faro_proto::MAX_WEBHOOK_BYTES);
    let (status, _) = c.post_signed(&body, &a.app_secret).await;
    assert_eq!(status, 200);
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 600);
    c.stop().await;
}
