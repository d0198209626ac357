//! Messenger, Instagram and YCloud, from fixtures written from their docs,
//! through the real edge with real signatures; plus the handshake and
//! signature checks of every webhook endpoint.

use faro_proto::conversations::v1::Channel;

use crate::{
    cluster::{Cluster, fixture},
    whatsapp::{META_APP, SECRET, ts},
};

const PAGE: &str = "107856318000001";
const IG: &str = "17841400000000001";
const PSID: &str = "6785432101234567";
const IGSID: &str = "1234567890123456";
const YCLOUD_NUMBER: &str = "+15550783881";
const YCLOUD_SECRET: &str = "faro-test-ycloud-webhook-secret";

async fn setup() -> (Cluster, (String, String)) {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let app = c.app(META_APP, SECRET, "verify-alpha").await;
    c.connect(&alpha, Channel::FacebookMessenger, PAGE, &app)
        .await;
    c.connect(&alpha, Channel::InstagramDm, IG, &app).await;
    let ycloud = c
        .app("ycloud-endpoint-1", YCLOUD_SECRET, "unused-by-ycloud")
        .await;
    c.connect(&alpha, Channel::Whatsapp, YCLOUD_NUMBER, &ycloud)
        .await;
    (c, alpha)
}

async fn post(c: &Cluster, platform: &str, dir: &str, name: &str) {
    let status = c
        .post_meta(platform, &fixture(&format!("{dir}/{name}.json")), SECRET)
        .await;
    assert_eq!(status, 200, "{dir}/{name} accepted");
}

fn mid(suffix: &str) -> String {
    format!(
        "m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P{suffix}"
    )
}

#[tokio::test]
async fn every_messenger_kind_is_stored_field_by_field() {
    let (c, alpha) = setup().await;
    for k in [
        "text",
        "quick_reply",
        "reply_to",
        "attachment_image",
        "attachment_video",
        "attachment_audio",
        "attachment_file",
        "attachment_location",
        "attachment_fallback_share",
        "postback_get_started",
        "referral",
        "echo_own_app",
        "echo_page_inbox",
    ] {
        post(&c, "facebook", "messenger", k).await;
    }
    c.drained().await;
    // (mid suffix, message_type, ms timestamp)
    for (suffix, kind, at) in [
        ("Tx4w", "text", 1_749_416_383_000_i64),
        ("Qr7k", "quick_reply", 1_749_416_384_000),
        ("Rp2c", "text", 1_749_416_385_000),
        ("Im5v", "image", 1_749_416_386_000),
        ("Vd8n", "video", 1_749_416_387_000),
        ("Au3q", "audio", 1_749_416_388_000),
        ("Fl6d", "file", 1_749_416_389_000),
        ("Lc9h", "location", 1_749_416_390_000),
        ("Fb1s", "fallback", 1_749_416_391_000),
        ("Pb4g", "postback", 1_749_416_392_000),
    ] {
        let m = c.message(&mid(suffix)).await;
        assert_eq!(m["message_type"], kind, "{suffix}");
        assert_eq!(m["channel"], "facebook_messenger");
        assert_eq!(m["direction"], "inbound");
        assert_eq!(m["customer_id"], PSID);
        assert_eq!(m["sender_id"], PSID);
        assert_eq!(m["recipient_id"], PAGE);
        assert_eq!(m["tenant_id"], alpha.0.as_str());
        let t = chrono::DateTime::parse_from_rfc3339(m["timestamp"].as_str().unwrap_or_default())
            .expect("time");
        assert_eq!(
            t.timestamp_millis(),
            at,
            "{suffix}: milliseconds, not seconds"
        );
    }
    let text = c.message(&mid("Tx4w")).await;
    assert_eq!(
        text["text"],
        "Hi 👋 is the walnut dining table still available?"
    );
    let reply = c.message(&mid("Rp2c")).await;
    assert_eq!(reply["reply_to_channel_message_id"], mid("Tx4w").as_str());
    let image = c.message(&mid("Im5v")).await;
    assert_eq!(image["media"][0]["kind"], "image");
    assert!(
        image["media"][0]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://scontent"))
    );
    let quick = c.message(&mid("Qr7k")).await;
    assert_eq!(quick["text"], "Home delivery");
    assert_eq!(
        quick["metadata"]["event"]["message"]["quick_reply"]["payload"],
        "DELIVERY_OPTION_HOME"
    );
    let postback = c.message(&mid("Pb4g")).await;
    assert_eq!(postback["text"], "Get Started");
    assert_eq!(postback["referral"]["ref"], "spring_sale_2025");
    let referral: serde_json::Value =
        sqlx::query_scalar("SELECT referral FROM messages WHERE message_type = 'referral'")
            .fetch_one(&c.db.owner)
            .await
            .expect("a standalone referral is kept");
    assert_eq!(referral["ad_id"], "120210456789012345");

    // Our own app's echo is ours already; a human's reply from the Page inbox belongs in the thread.
    let ours: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE channel_message_id = $1")
            .bind(mid("Eo2a"))
            .fetch_one(&c.db.owner)
            .await
            .expect("count");
    assert_eq!(ours, 0);
    let human = c.message(&mid("Ei5p")).await;
    assert_eq!(human["direction"], "outbound");
    assert_eq!(human["sender_type"], "agent");
    assert_eq!(human["customer_id"], PSID);
    assert_eq!(human["conversation_id"], text["conversation_id"]);

    // Reactions and edits apply to their message.
    for k in ["reaction_react", "message_edit"] {
        post(&c, "facebook", "messenger", k).await;
    }
    c.drained().await;
    let text = c.message(&mid("Tx4w")).await;
    assert_eq!(text["reactions"][PSID]["emoji"], "❤️");
    assert_eq!(
        text["text"],
        "Hi 👋 is the walnut dining table (180 cm) still available?"
    );
    assert_eq!(
        text["edit_history"][0]["text"],
        "Hi 👋 is the walnut dining table still available?"
    );
    post(&c, "facebook", "messenger", "reaction_unreact").await;
    c.drained().await;
    assert_eq!(
        c.message(&mid("Tx4w")).await["reactions"][PSID]["emoji"],
        ""
    );

    // One POST, two entries, three items: a message stored, a delivery and a
    // reaction for our own (unstored) echo kept until it arrives.
    post(&c, "facebook", "messenger", "batch_multi").await;
    c.drained().await;
    let batched = c.message(&mid("Bt8m")).await;
    assert_eq!(
        batched["text"],
        "Perfect, thank you! I'll come by on Friday around 5pm."
    );
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM pending_message_events WHERE target_channel_message_id = $1 ORDER BY kind",
    )
    .bind(mid("Eo2a"))
    .fetch_all(&c.db.owner)
    .await
    .expect("pending");
    assert_eq!(kinds, ["reaction", "status"]);
    c.stop().await;
}

#[tokio::test]
async fn messenger_watermarks_mark_earlier_outbound_messages_only() {
    let (c, _) = setup().await;
    post(&c, "facebook", "messenger", "echo_page_inbox").await; // outbound at …401000 ms
    let later = String::from_utf8(fixture("messenger/echo_page_inbox.json"))
        .expect("utf8")
        .replace(&mid("Ei5p"), &mid("LATER"))
        .replace("1749416401000", "1749416409000");
    assert_eq!(c.post_meta("facebook", later.as_bytes(), SECRET).await, 200);
    c.drained().await;
    // Delivered up to …402000 and read up to …403000: only the first message.
    let delivered = String::from_utf8(fixture("messenger/delivery_no_mids.json"))
        .expect("utf8")
        .replace("1749416397612", "1749416402000");
    let read = String::from_utf8(fixture("messenger/read.json"))
        .expect("utf8")
        .replace("1749416398735", "1749416403000");
    assert_eq!(c.post_meta("facebook", read.as_bytes(), SECRET).await, 200);
    assert_eq!(
        c.post_meta("facebook", delivered.as_bytes(), SECRET).await,
        200
    );
    c.drained().await;
    let first = c.message(&mid("Ei5p")).await;
    assert_eq!(
        first["status"], "read",
        "read watermark wins over the later-arriving delivery"
    );
    assert_eq!(
        first["read_at"].as_str().map(|_| ts(&first["read_at"])),
        Some(1_749_416_403)
    );
    let second = c.message(&mid("LATER")).await;
    assert!(
        second["status"].is_null(),
        "a message after the watermarks is untouched"
    );
    // Delivery mids name a message not stored: kept for when it arrives.
    post(&c, "facebook", "messenger", "delivery").await;
    c.drained().await;
    assert_eq!(
        c.count("SELECT count(*) FROM pending_message_events WHERE kind = 'status'")
            .await,
        1
    );
    c.stop().await;
}

fn ig_mid(suffix: &str) -> String {
    format!(
        "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDAwMDAwMDAxOjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI1OTk5Njc2ODOjMyNjk0MDUxODI3MzY1MDE5{suffix}"
    )
}

#[tokio::test]
async fn every_instagram_kind_is_stored_field_by_field() {
    let (c, alpha) = setup().await;
    for k in [
        "text",
        "attachment_image",
        "attachment_video",
        "attachment_audio",
        "share",
        "ig_reel",
        "story_mention",
        "story_reply",
        "reply_to_message",
        "postback",
        "quick_reply",
        "echo",
    ] {
        post(&c, "instagram", "instagram", k).await;
    }
    c.drained().await;
    for (suffix, kind) in [
        ("MjgzNzQ2ZDZD", "text"),
        ("MjkxNjY1ZDZD", "image"),
        ("Mjk5NTg0ZDZD", "video"),
        ("MzA3NTAzZDZD", "audio"),
        ("MzE1NDIyZDZD", "share"),
        ("MzIzMzQxZDZD", "ig_reel"),
        ("MzMxMjYwZDZD", "story_mention"),
        ("MzM5MTc5ZDZD", "story_reply"),
        ("MzQ3MDk4ZDZD", "text"),
        ("MzYyOTM2ZDZD", "postback"),
        ("MzcwODU1ZDZD", "quick_reply"),
    ] {
        let m = c.message(&ig_mid(suffix)).await;
        assert_eq!(m["message_type"], kind, "{suffix}");
        assert_eq!(m["channel"], "instagram_dm");
        assert_eq!(m["customer_id"], IGSID);
        assert_eq!(m["direction"], "inbound");
        assert_eq!(m["tenant_id"], alpha.0.as_str());
    }
    let text = c.message(&ig_mid("MjgzNzQ2ZDZD")).await;
    assert_eq!(
        text["text"],
        "Hey! Do you ship the walnut dining table to Canada? 🇨🇦"
    );
    assert_eq!(ts(&text["timestamp"]), 1_749_416_383);
    let story = c.message(&ig_mid("MzM5MTc5ZDZD")).await;
    assert_eq!(
        story["text"],
        "Love this colour! Is it available in oak too?"
    );
    assert_eq!(story["media"][0]["kind"], "story");
    assert!(
        story["media"][0]["url"]
            .as_str()
            .is_some_and(|u| u.contains("lookaside"))
    );
    let mention = c.message(&ig_mid("MzMxMjYwZDZD")).await;
    assert_eq!(mention["media"][0]["kind"], "story_mention");
    let reply = c.message(&ig_mid("MzQ3MDk4ZDZD")).await;
    assert!(
        reply["reply_to_channel_message_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("aWdf"))
    );
    let echo = c.message(&ig_mid("MzU1MDE3ZDZD")).await;
    assert_eq!(echo["direction"], "outbound");
    assert_eq!(echo["sender_id"], IG);
    assert_eq!(echo["customer_id"], IGSID);

    // Reaction, unreact, edit, unsend and seen: applied to their message, or kept.
    for k in ["reaction", "message_edit", "deleted", "seen"] {
        post(&c, "instagram", "instagram", k).await;
    }
    c.drained().await;
    let text = c.message(&ig_mid("MjgzNzQ2ZDZD")).await;
    assert_eq!(text["reactions"][IGSID]["emoji"], "❤️");
    assert_eq!(
        text["text"],
        "Hey! Do you ship the walnut dining table to Toronto, Canada? 🇨🇦"
    );
    assert_eq!(ts(&text["deleted_at"]), 1_749_416_395);
    assert_eq!(
        c.count("SELECT count(*) FROM pending_message_events WHERE kind = 'status'")
            .await,
        1
    );
    post(&c, "instagram", "instagram", "unreact").await;
    c.drained().await;
    assert_eq!(
        c.message(&ig_mid("MjgzNzQ2ZDZD")).await["reactions"][IGSID]["emoji"],
        ""
    );
    c.stop().await;
}

#[tokio::test]
async fn ycloud_is_verified_with_its_signed_timestamp_and_stored() {
    let (c, alpha) = setup().await;
    let body = fixture("ycloud/inbound_text.json");
    // Our signer reproduces the vector computed from YCloud's documented scheme.
    assert_eq!(
        faro_edge::sign_ycloud(YCLOUD_SECRET.as_bytes(), 1_749_416_384, &body),
        "t=1749416384,s=5b97ac512d6f98c49a5135f55415685fc70e80e236116b4453033ecda78f1d27"
    );
    let now = chrono::Utc::now().timestamp();
    let stale = faro_edge::sign_ycloud(YCLOUD_SECRET.as_bytes(), now - 301, &body);
    let (status, json) = c
        .post_raw("ycloud", &body, ("ycloud-signature", &stale))
        .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (401, Some("stale_signature"))
    );
    let wrong = faro_edge::sign_ycloud(b"another-endpoint-secret", now, &body);
    let (status, json) = c
        .post_raw("ycloud", &body, ("ycloud-signature", &wrong))
        .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );
    // Meta's signature scheme does not open YCloud's door.
    let meta = faro_edge::sign_meta_payload(YCLOUD_SECRET.as_bytes(), &body);
    let (status, _) = c
        .post_raw("ycloud", &body, ("x-hub-signature-256", &meta))
        .await;
    assert_eq!(status, 401);
    assert_eq!(c.jobs_added().await, 0);

    for name in [
        "inbound_text",
        "inbound_image",
        "inbound_reaction",
        "message_updated_delivered",
        "message_updated_read",
        "message_updated_failed",
    ] {
        let body = fixture(&format!("ycloud/{name}.json"));
        let sig = faro_edge::sign_ycloud(
            YCLOUD_SECRET.as_bytes(),
            chrono::Utc::now().timestamp(),
            &body,
        );
        let (status, _) = c
            .post_raw("ycloud", &body, ("ycloud-signature", &sig))
            .await;
        assert_eq!(status, 200, "{name}");
    }
    c.drained().await;
    let m = c
        .message("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzRUIwQzc2RjlBMkI4RDVFMDFBNAA=")
        .await;
    assert_eq!(
        m["text"],
        "¡Hola! ¿Tienen la mesa de nogal de 180 cm? Gracias 🙏"
    );
    assert_eq!(m["customer_id"], "16505551234");
    assert_eq!(m["customer_name"], "Kerry Fisher");
    assert_eq!(m["recipient_id"], YCLOUD_NUMBER);
    assert_eq!(m["tenant_id"], alpha.0.as_str());
    assert_eq!(m["metadata"]["provider"], "ycloud");
    assert_eq!(ts(&m["timestamp"]), 1_749_416_382);
    let image: serde_json::Value =
        sqlx::query_scalar("SELECT media FROM messages WHERE message_type = 'image'")
            .fetch_one(&c.db.owner)
            .await
            .expect("image");
    assert!(
        image[0]["url"].as_str().is_some_and(|u| !u.is_empty()),
        "YCloud's link is kept"
    );
    // The reaction and statuses name our outbound messages, not stored here: kept.
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM pending_message_events ORDER BY kind")
            .fetch_all(&c.db.owner)
            .await
            .expect("pending");
    assert_eq!(kinds, ["reaction", "status", "status", "status"]);
    c.stop().await;
}

#[tokio::test]
async fn every_endpoint_checks_its_handshake_and_signature() {
    let (c, _) = setup().await;
    for platform in ["facebook", "instagram"] {
        let get = |token: &str| {
            c.http
                .get(c.url(&format!("/api/v1/webhooks/{platform}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=77")))
                .send()
        };
        let ok = get("verify-alpha").await.expect("answer");
        assert_eq!(ok.status().as_u16(), 200, "{platform}");
        assert_eq!(ok.text().await.expect("body"), "77");
        assert_eq!(
            get("nope").await.expect("answer").status().as_u16(),
            403,
            "{platform}"
        );
    }
    // This Meta app has no WhatsApp number here, and the YCloud endpoint's
    // token is a placeholder: neither opens the WhatsApp handshake.
    for token in ["verify-alpha", "unused-by-ycloud"] {
        let get = c
            .http
            .get(c.url(&format!("/api/v1/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=77")))
            .send()
            .await
            .expect("answer");
        assert_eq!(get.status().as_u16(), 403, "{token}");
    }
    let get = c
        .http
        .get(c.url("/api/v1/webhooks/ycloud?hub.mode=subscribe"))
        .send()
        .await
        .expect("answer");
    assert_eq!(get.status().as_u16(), 405);

    for (platform, body) in [
        ("facebook", fixture("messenger/text.json")),
        ("instagram", fixture("instagram/text.json")),
    ] {
        assert_eq!(
            c.post_meta(platform, &body, "not-the-secret").await,
            401,
            "{platform}"
        );
        assert_eq!(
            c.post_meta(platform, &body, YCLOUD_SECRET).await,
            401,
            "another app's secret on {platform}"
        );
        let (status, json) = c.post_raw(platform, &body, ("x-other", "1")).await;
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (401, Some("missing_signature"))
        );
        // A Messenger body on the Instagram route (and back) names no account there.
        let other = if platform == "facebook" {
            "instagram"
        } else {
            "facebook"
        };
        assert_eq!(c.post_meta(other, &body, SECRET).await, 401);
    }
    assert_eq!(c.jobs_added().await, 0, "nothing refused was queued");
    c.stop().await;
}
