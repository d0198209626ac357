//! Who a thread is with (issue 7): WhatsApp username adopters known only by
//! their business-scoped user id (BSUID), linked to their phone when a later
//! message carries both; groups as their own threads; history shared by a
//! Business-app number; Instagram echoes, shares and second-based timestamps.
//! Fixtures from the platforms' docs, through the real edge, really signed.

use faro_proto::conversations::v1::Channel;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::{
    cluster::{Cluster, fixture},
    dead_letter::{dead_letters, reasons, rejected_parts},
    whatsapp::{META_APP, SECRET, post, setup, ts},
};

const ANA: &str = "US.24680135792468013579";
const BEN: &str = "GB.97531086429753108642";
const ANA_PHONE: &str = "16505550101";
const KERRY: &str = "16505551234";
const GROUP: &str = "Y2FwaV9ncm91cDoxNTU1MDc4Mzg4MToxMjAzNjMwMjU2NDg3NjU0MzIx";
const IG: &str = "17841400000000001";
const IGSID: &str = "1234567890123456";
const YCLOUD_NUMBER: &str = "+15550783881";
const YCLOUD_SECRET: &str = "faro-test-ycloud-webhook-secret";

fn wamid(s: &str) -> String {
    format!("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQz{s}")
}

/// Every conversation: (customer_id, customer_name, customer_phone, customer_user_id).
async fn threads(c: &Cluster) -> Vec<(String, Option<String>, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT customer_id, customer_name, customer_phone, customer_user_id
         FROM conversations ORDER BY customer_id",
    )
    .fetch_all(&c.db.owner)
    .await
    .expect("threads")
}

fn thread(
    id: &str,
    name: Option<&str>,
    phone: Option<&str>,
    user: Option<&str>,
) -> (String, Option<String>, Option<String>, Option<String>) {
    (
        id.to_owned(),
        name.map(str::to_owned),
        phone.map(str::to_owned),
        user.map(str::to_owned),
    )
}

#[tokio::test]
async fn username_adopters_are_threaded_by_bsuid_never_merged_and_linked_to_their_phone() {
    let (c, _alpha) = setup().await;
    // Two username adopters in one change: `from` and `wa_id` are empty.
    post(&c, "bsuid_two_usernames").await;
    c.drained().await;
    assert!(dead_letters(&c).await.is_empty(), "nobody dead-lettered");
    let ana = c.message(&wamid("BSUIDA000000000003101")).await;
    let ben = c.message(&wamid("BSUIDB000000000003102")).await;
    assert_eq!(ana["customer_id"], ANA);
    assert_eq!(ana["sender_id"], ANA);
    assert_eq!(ben["customer_id"], BEN);
    assert_ne!(ana["conversation_id"], ben["conversation_id"]);
    assert_eq!(
        threads(&c).await,
        [
            thread(BEN, Some("Ben Hall"), None, Some(BEN)),
            thread(ANA, Some("Ana Costa"), None, Some(ANA)),
        ],
        "each named after themselves, no shared placeholder"
    );

    // Ana writes again, now with her phone too: her thread learns it.
    post(&c, "bsuid_linked_phone").await;
    // Kerry (phone and another BSUID) is someone else.
    post(&c, "text").await;
    c.drained().await;
    let linked = c.message(&wamid("BSUIDLINK00000003201")).await;
    assert_eq!(linked["conversation_id"], ana["conversation_id"]);
    let expected = [
        thread(
            KERRY,
            Some("Kerry Fisher"),
            Some(KERRY),
            Some("US.13491208655302741918"),
        ),
        thread(BEN, Some("Ben Hall"), None, Some(BEN)),
        thread(ANA, Some("Ana Costa"), Some(ANA_PHONE), Some(ANA)),
    ];
    assert_eq!(threads(&c).await, expected);

    // Re-posting everything changes nothing.
    for f in ["bsuid_two_usernames", "bsuid_linked_phone", "text"] {
        post(&c, f).await;
    }
    c.drained().await;
    assert_eq!(threads(&c).await, expected);
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 4);
    assert!(dead_letters(&c).await.is_empty());
    c.stop().await;
}

#[tokio::test]
async fn a_bsuid_only_message_finds_the_thread_its_phone_opened() {
    let (c, _alpha) = setup().await;
    // Ana's phone and BSUID first, then her BSUID alone.
    post(&c, "bsuid_linked_phone").await;
    c.drained().await;
    post(&c, "bsuid_two_usernames").await;
    c.drained().await;
    let first = c.message(&wamid("BSUIDLINK00000003201")).await;
    let later = c.message(&wamid("BSUIDA000000000003101")).await;
    assert_eq!(first["customer_id"], ANA_PHONE);
    assert_eq!(later["conversation_id"], first["conversation_id"]);
    assert_eq!(c.count("SELECT count(*) FROM conversations").await, 2);
    c.stop().await;
}

#[tokio::test]
async fn echoes_reactions_and_statuses_addressed_by_bsuid_apply() {
    let (c, _alpha) = setup().await;
    post(&c, "bsuid_two_usernames").await;
    c.drained().await;
    post(&c, "bsuid_reaction_echo_status").await;
    c.drained().await;
    assert!(dead_letters(&c).await.is_empty(), "nothing dead-lettered");
    let ana = c.message(&wamid("BSUIDA000000000003101")).await;
    let echo = c
        .message("wamid.HBgLMTY1MDU1NTEyMzQVAgARGBQzBSUIDECHO000003301")
        .await;
    assert_eq!(echo["direction"], "outbound");
    assert_eq!(echo["recipient_id"], ANA);
    assert_eq!(echo["conversation_id"], ana["conversation_id"]);
    assert_eq!(echo["reactions"][ANA]["emoji"], "👍");
    assert_eq!(echo["status"], "read");
    assert_eq!(c.count("SELECT count(*) FROM conversations").await, 2);
    c.stop().await;
}

#[tokio::test]
async fn a_group_is_its_own_conversation_and_keeps_each_sender() {
    let (c, _alpha) = setup().await;
    post(&c, "text").await;
    post(&c, "group_text").await;
    c.drained().await;
    let one = c.message(&wamid("TEXT0000000000000100")).await;
    let group = c.message(&wamid("GROUP00000000003401")).await;
    assert_ne!(group["conversation_id"], one["conversation_id"]);
    assert_eq!(group["customer_id"], GROUP);
    assert_eq!(group["sender_id"], KERRY, "the member who wrote it");
    assert_eq!(group["direction"], "inbound");
    assert_eq!(
        group["customer_name"],
        Value::Null,
        "a group is not named after a member"
    );
    assert_eq!(one["customer_name"], "Kerry Fisher");
    c.stop().await;
}

#[tokio::test]
async fn shared_history_is_stored_with_its_original_times_and_a_refusal_is_kept() {
    let (c, _alpha) = setup().await;
    post(&c, "history").await;
    post(&c, "history_declined").await;
    c.drained().await;
    let asked = c.message(&wamid("HISTORYIN000003501")).await;
    let answered = c
        .message("wamid.HBgLMTY1MDU1NTEyMzQVAgARGBQzHISTORYOUT00003502")
        .await;
    assert_eq!(ts(&asked["timestamp"]), 1_739_230_955);
    assert_eq!(ts(&answered["timestamp"]), 1_739_231_010);
    assert_eq!(asked["direction"], "inbound");
    assert_eq!(asked["customer_id"], KERRY);
    assert_eq!(answered["direction"], "outbound");
    assert_eq!(answered["conversation_id"], asked["conversation_id"]);
    assert_eq!(asked["metadata"]["history"]["chunk"]["phase"], 0);
    let dead = rejected_parts(&c).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let why = reasons(&dead[0].1);
    assert!(why[0].contains("history sync error"), "{why:?}");
    c.stop().await;
}

async fn post_instagram(c: &Cluster, name: &str) {
    let status = c
        .post_meta(
            "instagram",
            &fixture(&format!("instagram/{name}.json")),
            SECRET,
        )
        .await;
    assert_eq!(status, 200, "{name} accepted");
}

fn ig_mid(suffix: &str) -> String {
    format!(
        "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDAwMDAwMDAxOjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI1OTk5Njc2ODOjMyNjk0MDUxODI3MzY1MDE5{suffix}"
    )
}

async fn instagram(posts: &[&str]) -> Cluster {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let app = c.app(META_APP, SECRET, "verify-alpha").await;
    c.connect(&alpha, Channel::InstagramDm, IG, &app).await;
    for f in posts {
        post_instagram(&c, f).await;
    }
    c.drained().await;
    c
}

#[tokio::test]
async fn an_instagram_echo_belongs_to_its_recipient_whatever_id_it_is_sent_under() {
    let c = instagram(&["text", "echo_business_scoped_sender"]).await;
    let text = c.message(&ig_mid("MjgzNzQ2ZDZD")).await;
    let echo = c.message(&ig_mid("ECHO2ZDZD")).await;
    assert_eq!(echo["direction"], "outbound");
    assert_eq!(echo["customer_id"], IGSID);
    assert_eq!(echo["conversation_id"], text["conversation_id"]);
    c.stop().await;
}

#[tokio::test]
async fn an_instagram_post_share_keeps_the_post_media_id() {
    let c = instagram(&["share"]).await;
    let share = c.message(&ig_mid("MzE1NDIyZDZD")).await;
    assert_eq!(share["media"][0]["id"], "18139494541428835");
    assert_eq!(share["media"][1]["id"], "18139494541428835");
    c.stop().await;
}

#[tokio::test]
async fn the_instagram_dashboard_sample_timestamp_in_seconds_is_read_as_seconds() {
    let c = instagram(&["test_sample_seconds"]).await;
    let sample = c.message("random_mid").await;
    assert_eq!(ts(&sample["timestamp"]), 1_527_459_824);
    c.stop().await;
}

async fn post_ycloud(c: &Cluster, name: &str) {
    let body = fixture(&format!("ycloud/{name}.json"));
    let sig = faro_edge::sign_ycloud(
        YCLOUD_SECRET.as_bytes(),
        chrono::Utc::now().timestamp(),
        &body,
    );
    let (status, _) = c
        .post_raw("ycloud", &body, ("ycloud-signature", &sig))
        .await;
    assert_eq!(status, 200, "{name} accepted");
}

#[tokio::test]
async fn ycloud_bsuid_customers_and_groups_get_their_own_threads() {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let app = c.app("ycloud-endpoint-1", YCLOUD_SECRET, "unused").await;
    c.connect(&alpha, Channel::Whatsapp, YCLOUD_NUMBER, &app)
        .await;
    for f in ["inbound_text", "inbound_bsuid", "group_inbound_text"] {
        post_ycloud(&c, f).await;
    }
    c.drained().await;
    assert!(dead_letters(&c).await.is_empty());
    let ana = c
        .message("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQlNVSUQwMDAwMDAwMDAwMDEA")
        .await;
    assert_eq!(ana["customer_id"], ANA);
    assert_eq!(ana["customer_user_id"], ANA);
    let group = c
        .message("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzR1JPVVAwMDAwMDAwMDAwMDEA")
        .await;
    assert_eq!(group["customer_id"], "Y2FwaV9ncm91cDpFWEFNUExFX0dST1VQX0lE");
    assert_eq!(group["sender_id"], KERRY);
    assert_eq!(c.count("SELECT count(*) FROM conversations").await, 3);
    c.stop().await;
}

/// One WhatsApp message for `StoreEvents`, from a customer with these ids.
fn inbound(
    tenant: &(String, String),
    id: &str,
    phone: &str,
    user: &str,
) -> faro_proto::conversations::v1::ChannelEvent {
    use faro_proto::conversations::v1::{
        ChannelEvent, Direction, InboundMessage, channel_event::Kind,
    };
    ChannelEvent {
        kind: Some(Kind::Message(InboundMessage {
            tenant_id: tenant.0.clone(),
            location_id: tenant.1.clone(),
            channel: Channel::Whatsapp.into(),
            customer_id: if phone.is_empty() { user } else { phone }.to_owned(),
            customer_phone: phone.to_owned(),
            customer_user_id: user.to_owned(),
            channel_message_id: id.to_owned(),
            message_type: "text".into(),
            text: "hi".into(),
            direction: Direction::Inbound.into(),
            timestamp: Some(faro_proto::to_timestamp(
                chrono::DateTime::from_timestamp(1_749_416_383, 0).expect("time"),
            )),
            ..Default::default()
        })),
        arrival: None,
    }
}

#[tokio::test]
async fn one_new_customer_seen_under_two_ids_at_once_gets_one_thread() {
    use faro_proto::conversations::v1::{
        StoreEventsRequest, conversations_service_client::ConversationsServiceClient,
    };
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let url = format!("http://{}", c.conversations);
    let mut calls = Vec::new();
    for n in 0..24 {
        let (user, phone) = (format!("US.{n:020}"), format!("1650555{n:04}"));
        for (id, phone) in [
            (format!("wamid.U{n}"), String::new()),
            (format!("wamid.PU{n}"), phone),
        ] {
            let event = inbound(&alpha, &id, &phone, &user);
            let url = url.clone();
            calls.push(tokio::spawn(async move {
                let mut client = ConversationsServiceClient::connect(url)
                    .await
                    .expect("connect");
                client
                    .store_events(StoreEventsRequest {
                        events: vec![event],
                        redelivered: false,
                    })
                    .await
                    .expect("stored");
            }));
        }
    }
    for call in calls {
        call.await.expect("call");
    }
    assert_eq!(
        c.count("SELECT count(*) FROM conversations").await,
        24,
        "one thread per customer"
    );
    assert_eq!(
        c.count("SELECT count(*) FROM conversations WHERE customer_phone IS NULL")
            .await,
        0,
        "each thread learnt the phone"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_customer_is_never_named_after_another_customers_contact() {
    let (c, _alpha) = setup().await;
    // The lone contact entry is Kerry's; the message is from someone else.
    let body = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "W",
        "changes": [{"field": "messages", "value": {
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": crate::whatsapp::PHONE},
            "contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": KERRY}],
            "messages": [{"from": "16505559999", "id": "wamid.OTHER", "timestamp": "1749416383",
                          "type": "text", "text": {"body": "hi"}}]}}]}]});
    let status = c
        .post_meta("whatsapp", body.to_string().as_bytes(), SECRET)
        .await;
    assert_eq!(status, 200);
    c.drained().await;
    let m = c.message("wamid.OTHER").await;
    assert_eq!(m["customer_id"], "16505559999");
    assert_eq!(m["customer_name"], Value::Null);
    assert_eq!(m["customer_user_id"], Value::Null);
    c.stop().await;
}

/// The lookup by phone or BSUID reads the threads it finds, not the
/// location's inbox: written as one `OR` across the three id columns, the
/// planner walked every thread of the (tenant, location, channel) per id
/// (found under load, issue 15; 2,000 threads here, 100,000 in a big inbox).
#[tokio::test]
async fn the_customer_lookup_probes_its_indexes_not_the_whole_inbox() {
    let (c, (tenant, location)) = setup().await;
    sqlx::query(
        "INSERT INTO conversations (tenant_id, id, location_id, channel, customer_id,
                                    customer_phone, customer_user_id, last_message_at)
         SELECT $1::uuid, gen_random_uuid(), $2::uuid, 'whatsapp', '1650555' || n,
                '1650555' || n, CASE WHEN n % 2 = 0 THEN 'US.' || n END,
                now() - n * interval '1 second'
         FROM generate_series(1000, 2999) AS n",
    )
    .bind(&tenant)
    .bind(&location)
    .execute(&c.db.owner)
    .await
    .expect("seed threads");
    sqlx::query("ANALYZE conversations")
        .execute(&c.db.owner)
        .await
        .expect("analyze");
    let mut conn = PgConnection::connect_with(&c.db.app_options())
        .await
        .expect("connect as faro_app");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("SELECT set_config('faro.tenant_id', $1, true)")
        .bind(&tenant)
        .execute(&mut *tx)
        .await
        .expect("set tenant");
    let location: uuid::Uuid = location.parse().expect("location id");
    // A known phone, a known BSUID and an id nobody has.
    let ids = ["16505551500", "US.2000", "16505559999"];
    let (plan,): (Value,) = sqlx::query_as(&format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {}",
        faro_conversations::CUSTOMER_LOOKUP_SQL
    ))
    .bind(uuid::Uuid::parse_str(&tenant).expect("tenant id"))
    .bind(vec![location; ids.len()])
    .bind(vec!["whatsapp"; ids.len()])
    .bind(ids.to_vec())
    .fetch_one(&mut *tx)
    .await
    .expect("explain the lookup");
    // Rows the plan read from `conversations` plus rows any node threw away.
    fn read(node: &Value) -> u64 {
        let n = |k: &str| node.get(k).and_then(Value::as_u64).unwrap_or(0);
        let scanned = if node["Relation Name"] == "conversations" {
            n("Actual Rows") * n("Actual Loops").max(1)
        } else {
            0
        };
        let thrown: u64 = node
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("Rows Removed by"))
            .filter_map(|(_, v)| v.as_u64())
            .sum();
        scanned
            + thrown
            + node
                .get("Plans")
                .and_then(Value::as_array)
                .map_or(0, |ps| ps.iter().map(read).sum())
    }
    let root = &plan[0]["Plan"];
    assert_eq!(root["Actual Rows"], 2, "two threads found: {plan:#}");
    let rows = read(root);
    assert!(
        rows < 20,
        "the lookup read {rows} thread rows for 3 ids: {plan:#}"
    );
    tx.rollback().await.expect("rollback");
    conn.close().await.expect("close");
    c.stop().await;
}
