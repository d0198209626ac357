//! Events that are not messages (handover, opt-ins, account linking, game
//! plays, policy enforcement, app roles, unknown types) are conversation
//! events: system lines, never the customer speaking; events without a sender
//! never sink their neighbours; messages delivered on `standby` are stored.
//! All from fixtures written from Meta's docs, through the real edge with real
//! signatures.

use faro_proto::conversations::v1::{
    Channel, ConversationEventKind, ListConversationEventsRequest,
    conversations_service_client::ConversationsServiceClient,
};
use fred::interfaces::StreamsInterface;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::{
    cluster::{Cluster, Ws, fixture},
    whatsapp::{META_APP, PHONE, SECRET},
};

const PAGE: &str = "107856318000001";
pub(crate) const PSID: &str = "6785432101234567";
const IG: &str = "17841400000000001";
const MID: &str =
    "m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P";

/// A cluster with tenant alpha owning the fixtures' Page, Instagram account
/// and WhatsApp number.
pub(crate) async fn setup() -> (Cluster, (String, String)) {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let app = c.app(META_APP, SECRET, "verify-alpha").await;
    c.connect(&alpha, Channel::FacebookMessenger, PAGE, &app)
        .await;
    c.connect(&alpha, Channel::InstagramDm, IG, &app).await;
    c.connect(&alpha, Channel::Whatsapp, PHONE, &app).await;
    (c, alpha)
}

async fn post(c: &Cluster, platform: &str, file: &str) {
    let status = c.post_meta(platform, &fixture(file), SECRET).await;
    assert_eq!(status, 200, "{file} accepted");
}

async fn dead_letters(c: &Cluster) -> i64 {
    c.redis
        .xlen(faro_ingest::Keys::new(&c.prefix).dead)
        .await
        .expect("xlen")
}

/// Every stored conversation event: (kind, customer or "", has a thread).
async fn stored_events(c: &Cluster) -> Vec<(String, String, bool)> {
    sqlx::query_as(
        "SELECT e.kind, coalesce(c.customer_id, ''), e.conversation_id IS NOT NULL
         FROM conversation_events e
         LEFT JOIN conversations c ON c.tenant_id = e.tenant_id AND c.id = e.conversation_id
         ORDER BY e.\"timestamp\", e.id",
    )
    .fetch_all(&c.db.owner)
    .await
    .expect("conversation_events")
}

/// Frames until the `message.created` of `mid`, which is returned last.
async fn frames_until(ws: &mut Ws, mid: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let e = ws.next_event().await;
        let done = e["type"] == "message.created" && e["message"]["channel_message_id"] == mid;
        frames.push(e);
        if done {
            return frames;
        }
    }
}

/// A sentinel message from another customer, so that a test can read the
/// socket up to a known point without waiting for an absence.
fn sentinel(n: u64) -> (String, String) {
    let mid = format!("{MID}Snt{n}");
    let body = serde_json::json!({"object": "page", "entry": [{"id": PAGE, "time": 1_749_416_900_000_u64 + n,
        "messaging": [{"sender": {"id": "9000000000000009"}, "recipient": {"id": PAGE},
                       "timestamp": 1_749_416_900_000_u64 + n,
                       "message": {"mid": mid, "text": "sentinel"}}]}]});
    (mid, body.to_string())
}

const CUSTOMER_EVENTS: [(&str, &str); 7] = [
    ("messenger/pass_thread_control.json", "pass_thread_control"),
    ("messenger/take_thread_control.json", "take_thread_control"),
    (
        "messenger/request_thread_control.json",
        "request_thread_control",
    ),
    ("messenger/account_linking.json", "account_linking"),
    ("messenger/optin.json", "optin"),
    ("messenger/game_play.json", "game_play"),
    ("messenger/unknown_event.json", "unknown"),
];

const PAGE_EVENTS: [(&str, &str); 4] = [
    ("messenger/app_roles.json", "app_roles"),
    ("messenger/optin_checkbox_user_ref.json", "optin"),
    ("messenger/policy_enforcement.json", "policy_enforcement"),
    (
        "messenger/policy_enforcement_legacy.json",
        "policy_enforcement",
    ),
];

#[tokio::test]
async fn control_events_are_system_lines_never_the_customer_speaking() {
    let (c, alpha) = setup().await;
    let mut ws = c.websocket(&c.token(&alpha.0, 300)).await;
    post(&c, "facebook", "messenger/text.json").await;
    c.drained().await;
    let text = frames_until(&mut ws, &format!("{MID}Tx4w")).await;
    let thread = text[0]["conversation"]["id"].clone();
    let last_message_at = text[0]["conversation"]["last_message_at"].clone();

    // Every control event, each one later than the text.
    for (file, _) in CUSTOMER_EVENTS.iter().chain(&PAGE_EVENTS) {
        post(&c, "facebook", file).await;
    }
    post(&c, "instagram", "instagram/pass_thread_control.json").await;
    c.drained().await;
    let (mid, body) = sentinel(1);
    assert_eq!(c.post_meta("facebook", body.as_bytes(), SECRET).await, 200);
    c.drained().await;

    assert_eq!(
        c.count("SELECT count(*) FROM messages").await,
        2,
        "only the text and the sentinel are messages"
    );
    assert_eq!(dead_letters(&c).await, 0, "nothing dead-lettered");
    let mut stored = stored_events(&c).await;
    stored.sort();
    let mut expected: Vec<(String, String, bool)> = CUSTOMER_EVENTS
        .iter()
        .map(|(_, k)| ((*k).to_owned(), PSID.to_owned(), true))
        .chain(
            PAGE_EVENTS
                .iter()
                .map(|(_, k)| ((*k).to_owned(), String::new(), false)),
        )
        .collect();
    expected.push((
        "pass_thread_control".into(),
        "1234567890123456".into(),
        true,
    ));
    expected.sort();
    assert_eq!(stored, expected, "typed, threaded when there is a customer");
    let raw: Value = sqlx::query_scalar(
        "SELECT raw FROM conversation_events WHERE kind = 'pass_thread_control' ORDER BY \"timestamp\" LIMIT 1",
    )
    .fetch_one(&c.db.owner)
    .await
    .expect("raw");
    assert_eq!(raw["pass_thread_control"]["new_owner_app_id"], META_APP);

    // The thread did not move: events are not messages.
    let moved: Value = sqlx::query_scalar(
        "SELECT to_jsonb(last_message_at) FROM conversations WHERE customer_id = $1 AND channel = 'facebook_messenger'",
    )
    .bind(PSID)
    .fetch_one(&c.db.owner)
    .await
    .expect("thread");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(moved.as_str().unwrap_or_default())
            .expect("time")
            .timestamp_millis(),
        1_749_416_383_000,
        "last_message_at is still the text's"
    );
    assert_eq!(last_message_at, "2025-06-08T20:59:43.000Z");

    // Announced as conversation.event, never message.created.
    let frames = frames_until(&mut ws, &mid).await;
    let (created, events): (Vec<&Value>, Vec<&Value>) =
        frames.iter().partition(|f| f["type"] == "message.created");
    assert_eq!(created.len(), 1, "only the sentinel: {frames:?}");
    assert_eq!(events.len(), 12, "{frames:?}");
    for e in &events {
        assert_eq!(e["type"], "conversation.event", "{e}");
        let threaded = e["event"]["conversation_id"].is_string();
        assert_eq!(threaded, e["conversation"].is_object(), "{e}");
        if e["event"]["customer_id"] == PSID {
            assert_eq!(e["event"]["conversation_id"], thread, "{e}");
            assert_eq!(e["conversation"]["last_message_at"], last_message_at);
        }
    }
    let mut kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["kind"].as_str().unwrap_or_default())
        .collect();
    kinds.sort_unstable();
    let mut want: Vec<&str> = expected.iter().map(|e| e.0.as_str()).collect();
    want.sort_unstable();
    assert_eq!(kinds, want);

    // Listed through the API: the thread's system lines, and the page's.
    let mut api = ConversationsServiceClient::connect(format!("http://{}", c.conversations))
        .await
        .expect("client");
    let listed = api
        .list_conversation_events(ListConversationEventsRequest {
            tenant_id: alpha.0.clone(),
            conversation_id: thread.as_str().unwrap_or_default().to_owned(),
            limit: 0,
        })
        .await
        .expect("list")
        .into_inner()
        .events;
    let kinds: Vec<i32> = listed.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            ConversationEventKind::PassThreadControl,
            ConversationEventKind::TakeThreadControl,
            ConversationEventKind::RequestThreadControl,
            ConversationEventKind::AccountLinking,
            ConversationEventKind::Optin,
            ConversationEventKind::GamePlay,
            ConversationEventKind::Unknown,
        ]
        .map(i32::from),
        "oldest first"
    );
    let page_level = api
        .list_conversation_events(ListConversationEventsRequest {
            tenant_id: alpha.0.clone(),
            conversation_id: String::new(),
            limit: 0,
        })
        .await
        .expect("list")
        .into_inner()
        .events;
    assert_eq!(page_level.len(), 4);
    assert!(page_level.iter().all(|e| e.conversation_id.is_empty()));

    // Posting everything again changes nothing and announces nothing.
    for (file, _) in CUSTOMER_EVENTS.iter().chain(&PAGE_EVENTS) {
        post(&c, "facebook", file).await;
    }
    c.drained().await;
    let mut again = stored_events(&c).await;
    again.sort();
    assert_eq!(again, expected, "a re-post stores nothing");
    let (mid, body) = sentinel(2);
    assert_eq!(c.post_meta("facebook", body.as_bytes(), SECRET).await, 200);
    c.drained().await;
    let frames = frames_until(&mut ws, &mid).await;
    assert_eq!(frames.len(), 1, "a re-post announces nothing: {frames:?}");
    c.stop().await;
}

#[tokio::test]
async fn events_without_a_sender_never_sink_a_customer_message() {
    let (c, alpha) = setup().await;
    let mut ws = c.websocket(&c.token(&alpha.0, 300)).await;
    // One POST: a customer's message beside policy enforcement (both keys), a
    // checkbox opt-in known only by user_ref, and app roles.
    post(&c, "facebook", "messenger/mixed_no_sender.json").await;
    c.drained().await;
    let mid = format!("{MID}Mx1m");
    assert_eq!(c.message(&mid).await["text"], "Is the shop open on Sunday?");
    let frames = frames_until(&mut ws, &mid).await;
    assert_eq!(
        frames.last().expect("a frame")["message"]["text"],
        "Is the shop open on Sunday?"
    );
    assert_eq!(dead_letters(&c).await, 0, "no part dead-lettered");
    let page_level: Vec<(String, String, bool)> = stored_events(&c)
        .await
        .into_iter()
        .filter(|e| !e.2)
        .collect();
    assert_eq!(
        page_level,
        [
            "policy_enforcement",
            "policy_enforcement",
            "optin",
            "app_roles"
        ]
        .map(|k| (k.to_owned(), String::new(), false)),
        "stored page-level, each with its raw event"
    );
    c.stop().await;
}

#[tokio::test]
async fn standby_messages_are_stored_and_announced_marked_standby() {
    let (c, alpha) = setup().await;
    let mut ws = c.websocket(&c.token(&alpha.0, 300)).await;
    for (platform, file) in [
        ("facebook", "messenger/standby_text.json"),
        ("facebook", "messenger/standby_echo.json"),
        ("instagram", "instagram/standby_text.json"),
        ("whatsapp", "whatsapp/standby.json"),
    ] {
        post(&c, platform, file).await;
    }
    c.drained().await;
    let ig = "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDAwMDAwMDAxOjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI1OTk5Njc2ODOjStandbyText01ZDZD";
    let wa_in = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzSTANDBY000000003000";
    let wa_echo = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJTVEFOREJZRUNITzAwMDEA";
    // (id, direction, customer, text starts with)
    for (id, direction, customer, text) in [
        (
            format!("{MID}Sb1t"),
            "inbound",
            PSID,
            "Hello? I asked the bot",
        ),
        (
            format!("{MID}Sb2e"),
            "outbound",
            PSID,
            "I am the shop assistant bot",
        ),
        (
            ig.to_owned(),
            "inbound",
            "1234567890123456",
            "Can someone from the shop",
        ),
        (wa_in.to_owned(), "inbound", "16505551234", "¿Puedo hablar"),
        (
            wa_echo.to_owned(),
            "outbound",
            "16505551234",
            "Soy el asistente",
        ),
    ] {
        let m = c.message(&id).await;
        assert_eq!(m["standby"], true, "{id}");
        assert_eq!(m["direction"], direction, "{id}");
        assert_eq!(m["customer_id"], customer, "{id}");
        assert!(
            m["text"].as_str().is_some_and(|t| t.starts_with(text)),
            "{id}: {m}"
        );
    }
    assert_eq!(dead_letters(&c).await, 0);
    let (mid, body) = sentinel(1);
    assert_eq!(c.post_meta("facebook", body.as_bytes(), SECRET).await, 200);
    c.drained().await;
    let frames = frames_until(&mut ws, &mid).await;
    let standby: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "message.created" && f["message"]["standby"] == true)
        .collect();
    assert_eq!(standby.len(), 5, "announced like any message: {frames:?}");

    // A re-post changes nothing.
    for (platform, file) in [
        ("facebook", "messenger/standby_text.json"),
        ("whatsapp", "whatsapp/standby.json"),
    ] {
        post(&c, platform, file).await;
    }
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 6);
    assert_eq!(
        c.count("SELECT count(*) FROM messages WHERE standby").await,
        5
    );
    c.stop().await;
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_conversation_events() {
    let c = Cluster::start().await;
    let a = c.bare_tenant("alpha").await;
    let b = c.bare_tenant("bravo").await;
    let app = c.app(META_APP, SECRET, "verify").await;
    c.connect(&a, Channel::FacebookMessenger, PAGE, &app).await;
    c.connect(&b, Channel::InstagramDm, IG, &app).await;
    post(&c, "facebook", "messenger/pass_thread_control.json").await;
    post(&c, "facebook", "messenger/policy_enforcement.json").await;
    post(&c, "instagram", "instagram/pass_thread_control.json").await;
    c.drained().await;
    assert_eq!(
        c.count("SELECT count(DISTINCT tenant_id) FROM conversation_events")
            .await,
        2,
        "the owner sees both tenants' rows, so the checks below can fail"
    );

    let mut conn = PgConnection::connect_with(&c.db.app_options())
        .await
        .expect("connect as faro_app");
    let sql = "SELECT count(*) FILTER (WHERE tenant_id::text = $1),
                      count(*) FILTER (WHERE tenant_id::text IS DISTINCT FROM $1)
               FROM conversation_events";
    for (me, mine) in [(&a.0, 2_i64), (&b.0, 1)] {
        let mut tx = conn.begin().await.expect("begin");
        sqlx::query("SELECT set_config('faro.tenant_id', $1, true)")
            .bind(me)
            .execute(&mut *tx)
            .await
            .expect("set tenant");
        let seen: (i64, i64) = sqlx::query_as(sql)
            .bind(me)
            .fetch_one(&mut *tx)
            .await
            .expect("select");
        assert_eq!(seen, (mine, 0), "a session of {me} sees only its own rows");
        // Writing a row for the other tenant is refused by the policy.
        let other = if me == &a.0 { &b } else { &a };
        let err = sqlx::query(
            "INSERT INTO conversation_events (tenant_id, id, location_id, channel_account_id,
                    channel, kind, event_key, \"timestamp\", raw)
             SELECT tenant_id, gen_random_uuid(), location_id, id, channel, 'unknown', 'x', now(), '{}'
             FROM channel_accounts LIMIT 1",
        )
        .execute(&mut *tx)
        .await;
        // The session sees only its own account, so it writes its own row…
        assert!(err.is_ok(), "{err:?}");
        let err = sqlx::query(
            "INSERT INTO conversation_events (tenant_id, id, location_id, channel_account_id,
                    channel, kind, event_key, \"timestamp\", raw)
             VALUES ($1::uuid, gen_random_uuid(), $2::uuid, gen_random_uuid(), 'instagram_dm',
                     'unknown', 'y', now(), '{}')",
        )
        .bind(&other.0)
        .bind(&other.1)
        .execute(&mut *tx)
        .await
        .expect_err("…and never another tenant's");
        assert_eq!(
            err.as_database_error().and_then(|d| d.code()).as_deref(),
            Some("42501"),
            "{err}"
        );
        tx.rollback().await.ok();
    }
    let mut tx = conn.begin().await.expect("begin");
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM conversation_events")
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    assert_eq!(none, 0, "invisible without a tenant");
    tx.rollback().await.ok();
    conn.close().await.ok();
    c.stop().await;
}
