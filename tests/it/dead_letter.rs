//! Jobs no worker can ever process are kept whole, with their error, in the
//! dead-letter stream (so an operator can re-drive them after a fix), and they
//! stop blocking nothing: the queue drains.

use std::collections::HashMap;

use bytes::Bytes;
use faro_proto::{
    conversations::v1::Channel,
    ingest::v1::{Job, Provider, Route, SubmitRequest, ingest_service_client::IngestServiceClient},
};
use fred::interfaces::StreamsInterface;
use prost::Message;
use serde_json::json;

use crate::whatsapp;
use uuid::Uuid;

const PAGE: &str = "107856318000001";
const YCLOUD_SECRET: &str = "faro-test-ycloud-webhook-secret";

use crate::cluster::{Cluster, Options, Tenant, whatsapp_text};

pub(crate) async fn dead_letters(c: &Cluster) -> Vec<HashMap<String, Bytes>> {
    let entries: Vec<(String, HashMap<String, Bytes>)> = c
        .redis
        .xrange(faro_ingest::Keys::new(&c.prefix).dead, "-", "+", None)
        .await
        .expect("xrange");
    entries.into_iter().map(|(_, fields)| fields).collect()
}

/// A route conversations refuses permanently (its ids are not UUIDs), and two
/// payloads that can never be stored: one it refuses (InvalidArgument) and
/// one that is not a WhatsApp envelope at all.
pub(crate) fn never_storable() -> (Route, [&'static [u8]; 2]) {
    let route = Route {
        external_account_id: "P1".into(),
        tenant_id: "not-a-tenant".into(),
        location_id: "not-a-location".into(),
        channel_account_id: String::new(),
        channel: Channel::Whatsapp.into(),
    };
    let refused = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":
        {"metadata":{"phone_number_id":"P1"},"messages":[{"from":"1","id":"wamid.X","timestamp":"1","type":"text","text":{"body":"hi"}}]}}]}]}"#;
    (route, [refused, br#"{"object":"page","entry":[]}"#])
}

#[tokio::test]
async fn jobs_that_cannot_be_processed_are_dead_lettered_whole() {
    let c = Cluster::start().await;
    let mut ingest = IngestServiceClient::connect(format!("http://{}", c.ingest))
        .await
        .expect("client");
    let (route, [rejected, unparseable]) = never_storable();
    for payload in [rejected, unparseable] {
        ingest
            .submit(SubmitRequest {
                provider: Provider::WhatsappCloud.into(),
                payload: payload.to_vec(),
                routes: vec![route.clone()],
                ..Default::default()
            })
            .await
            .expect("queued");
    }
    c.drained().await;
    let dead = dead_letters(&c).await;
    assert_eq!(dead.len(), 2);
    let mut payloads: Vec<Vec<u8>> = dead
        .iter()
        .map(|fields| {
            assert!(!fields["error"].is_empty(), "the error is kept");
            let job = Job::decode(fields["job"].clone()).expect("the job is kept whole");
            job.submission.expect("submission").payload
        })
        .collect();
    payloads.sort();
    let mut expected = vec![rejected.to_vec(), unparseable.to_vec()];
    expected.sort();
    assert_eq!(payloads, expected);
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 0);
    c.stop().await;
}

/// Holds the only worker inside a store (the messages table locked) so that
/// whatever is posted meanwhile queues up and is read as one batch.
struct Hold(sqlx::Transaction<'static, sqlx::Postgres>);

impl Hold {
    async fn start(c: &Cluster, plug: &Tenant, plug_id: &str) -> Self {
        let mut tx = c.db.owner.begin().await.expect("begin");
        sqlx::query("LOCK TABLE messages IN SHARE MODE")
            .execute(&mut *tx)
            .await
            .expect("lock");
        let body = whatsapp_text(plug, plug_id, "16505550000", "plug", 1_749_416_000);
        assert_eq!(c.post_signed(&body, &plug.app_secret).await.0, 200);
        // The worker has read the plug once its insert waits for the lock.
        for _ in 0..600 {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks
                 WHERE NOT granted AND relation = 'messages'::regclass
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_one(&c.db.owner)
            .await
            .expect("pg_locks");
            if waiting > 0 {
                return Self(tx);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the worker never reached the store");
    }

    async fn release(self) {
        self.0.rollback().await.expect("release");
    }
}

/// Conversations stores a batch tenant by tenant, in tenant id order. When
/// it commits the first tenant's part and then rejects the second's, the
/// worker retries job by job: the first job's message comes back already
/// stored, and must still be announced; only the second job is dead-lettered.
#[tokio::test]
async fn a_batch_retried_job_by_job_announces_what_the_first_call_stored() {
    let c = Cluster::start_with(Options {
        ingest_workers: 1,
        ..Options::default()
    })
    .await;
    let x = c.tenant("alpha").await;
    let y = c.tenant("bravo").await;
    let (good, bad) = if x.id.parse::<Uuid>().expect("uuid") < y.id.parse::<Uuid>().expect("uuid") {
        (x, y)
    } else {
        (y, x)
    };
    // The second tenant's part is refused by the database, after the first committed.
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION reject_for_test() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'refused for the test' USING ERRCODE = 'check_violation'; END $$;
         CREATE TRIGGER reject_for_test BEFORE INSERT ON messages FOR EACH ROW
         WHEN (NEW.tenant_id = '{}') EXECUTE FUNCTION reject_for_test();",
        bad.id
    ))
    .execute(&c.db.owner)
    .await
    .expect("trigger");
    let mut ws = c.websocket(&c.token(&good.id, 300)).await;

    let hold = Hold::start(&c, &good, "wamid.PLUG").await;
    // The good job also reacts to the plug: a change the first call commits too.
    let mut body: serde_json::Value = serde_json::from_str(&whatsapp_text(
        &good,
        "wamid.GOOD",
        "16505551234",
        "hola",
        1_749_416_100,
    ))
    .expect("json");
    let messages = &mut body["entry"][0]["changes"][0]["value"]["messages"];
    let reaction = serde_json::json!({"from": "16505550000", "id": "wamid.GOOD-REACTION",
        "timestamp": "1749416101", "type": "reaction",
        "reaction": {"message_id": "wamid.PLUG", "emoji": "👍"}});
    messages.as_array_mut().expect("messages").push(reaction);
    let body = body.to_string();
    assert_eq!(c.post_signed(&body, &good.app_secret).await.0, 200);
    let body = whatsapp_text(&bad, "wamid.BAD", "16505551234", "hola", 1_749_416_100);
    assert_eq!(c.post_signed(&body, &bad.app_secret).await.0, 200);
    hold.release().await;
    c.drained().await;

    let stored: Vec<String> =
        sqlx::query_scalar("SELECT channel_message_id FROM messages ORDER BY channel_message_id")
            .fetch_all(&c.db.owner)
            .await
            .expect("stored");
    assert_eq!(stored, ["wamid.GOOD", "wamid.PLUG"]);
    let dead = dead_letters(&c).await;
    assert_eq!(dead.len(), 1, "only the refused job");
    let job = Job::decode(dead[0]["job"].clone()).expect("job");
    let payload = job.submission.expect("submission").payload;
    assert!(String::from_utf8_lossy(&payload).contains("wamid.BAD"));

    assert_eq!(
        c.message("wamid.PLUG").await["reactions"]["16505550000"]["emoji"],
        "👍"
    );

    // The agent hears of the plug, then of GOOD and the reaction, before anything posted later.
    let body = whatsapp_text(&good, "wamid.AFTER", "16505551234", "?", 1_749_416_200);
    assert_eq!(c.post_signed(&body, &good.app_secret).await.0, 200);
    for (kind, id) in [
        ("message.created", "wamid.PLUG"),
        ("message.created", "wamid.GOOD"),
        ("message.updated", "wamid.PLUG"),
        ("message.created", "wamid.AFTER"),
    ] {
        let e = ws.next_event().await;
        assert_eq!(
            (
                e["type"].as_str(),
                e["message"]["channel_message_id"].as_str()
            ),
            (Some(kind), Some(id)),
            "unexpected frame {e}"
        );
    }
    c.stop().await;
}

/// A message posted again — alone, or in a batch with new ones — is a
/// duplicate of nothing: stored once, announced once, never dead-lettered.
#[tokio::test]
async fn a_redelivered_webhook_is_stored_once_and_never_dead_lettered() {
    let c = Cluster::start_with(Options {
        ingest_workers: 1,
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let mut ws = c.websocket(&c.token(&a.id, 300)).await;
    let first = whatsapp_text(&a, "wamid.FIRST", "16505551234", "hola", 1_749_416_100);
    assert_eq!(c.post_signed(&first, &a.app_secret).await.0, 200);
    c.drained().await;
    assert_eq!(c.post_signed(&first, &a.app_secret).await.0, 200);
    c.drained().await;

    let hold = Hold::start(&c, &a, "wamid.PLUG").await;
    let second = whatsapp_text(&a, "wamid.SECOND", "16505551234", "¿hay?", 1_749_416_200);
    for body in [&first, &second] {
        assert_eq!(c.post_signed(body, &a.app_secret).await.0, 200);
    }
    hold.release().await;
    c.drained().await;

    assert!(dead_letters(&c).await.is_empty(), "nothing dead-lettered");
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 3);
    for id in ["wamid.FIRST", "wamid.PLUG", "wamid.SECOND"] {
        let e = ws.next_event().await;
        assert_eq!(e["type"], "message.created");
        assert_eq!(e["message"]["channel_message_id"], id);
    }
    c.stop().await;
}

/// The dead letters that list parts of a stored job: (error, parts).
pub(crate) async fn rejected_parts(c: &Cluster) -> Vec<(String, Vec<serde_json::Value>)> {
    dead_letters(c)
        .await
        .into_iter()
        .map(|fields| {
            let job = Job::decode(fields["job"].clone()).expect("the job is kept whole");
            assert!(job.submission.is_some());
            let parts: Vec<serde_json::Value> = fields
                .get("rejected")
                .map(|r| serde_json::from_slice(r).expect("rejected is JSON"))
                .unwrap_or_default();
            (
                String::from_utf8_lossy(&fields["error"]).into_owned(),
                parts,
            )
        })
        .collect()
}

pub(crate) fn reasons(parts: &[serde_json::Value]) -> Vec<String> {
    parts
        .iter()
        .map(|p| p["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_numeric_phone_number_id_is_routed_and_stored() {
    let (c, _alpha) = whatsapp::setup().await;
    let number: u64 = whatsapp::PHONE.parse().expect("digits");
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [
        {"field": "messages", "value": {"metadata": {"phone_number_id": number},
         "messages": [{"from": "16505551234", "id": "wamid.NUMERIC", "timestamp": "1749416383",
                       "type": "text", "text": {"body": "hi"}}]}}]}]});
    let status = c
        .post_meta("whatsapp", body.to_string().as_bytes(), whatsapp::SECRET)
        .await;
    assert_eq!(status, 200, "the edge routes a numeric id");
    c.drained().await;
    assert_eq!(c.message("wamid.NUMERIC").await["text"], "hi");
    assert!(dead_letters(&c).await.is_empty());
    c.stop().await;
}

#[tokio::test]
async fn a_whatsapp_message_without_a_sender_is_dead_lettered_alone() {
    let (c, _alpha) = whatsapp::setup().await;
    // Two contacts, so no single contact can stand in for the missing `from`.
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [
    {"field": "messages", "value": {"metadata": {"phone_number_id": whatsapp::PHONE},
     "contacts": [{"wa_id": "16505551234"}, {"wa_id": "16505551235"}],
     "messages": [
        {"from": "16505551234", "id": "wamid.GOOD", "timestamp": "1749416383",
         "type": "text", "text": {"body": "hello"}},
        {"id": "wamid.NOBODY", "timestamp": "1749416384", "type": "text", "text": {"body": "who?"}}
     ]}}]}]});
    let status = c
        .post_meta("whatsapp", body.to_string().as_bytes(), whatsapp::SECRET)
        .await;
    assert_eq!(status, 200);
    c.drained().await;
    assert_eq!(c.message("wamid.GOOD").await["customer_id"], "16505551234");
    assert_eq!(
        c.count("SELECT count(*) FROM messages WHERE channel_message_id = 'wamid.NOBODY'")
            .await,
        0
    );
    assert_eq!(
        c.count("SELECT count(*) FROM conversations WHERE customer_id = 'unknown'")
            .await,
        0,
        "no shared placeholder customer"
    );
    let dead = rejected_parts(&c).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (error, parts) = &dead[0];
    assert!(error.contains("no customer"), "{error}");
    assert_eq!(parts.len(), 1, "only that message: {parts:?}");
    assert_eq!(parts[0]["part"]["id"], "wamid.NOBODY");
    c.stop().await;
}

#[tokio::test]
async fn every_part_of_a_verified_whatsapp_webhook_is_stored_or_dead_lettered() {
    let (c, _alpha) = whatsapp::setup().await;
    // One connected number, one the signing app has but no tenant connected,
    // an account notice and a status kind FARO does not know.
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [
        {"field": "messages", "value": {"metadata": {"phone_number_id": whatsapp::PHONE},
         "messages": [{"from": "16505551234", "id": "wamid.KEPT", "timestamp": "1749416383",
                       "type": "text", "text": {"body": "kept"}}],
         "statuses": [{"id": "wamid.OUT", "status": "deleted", "timestamp": "1749416384"}]}},
        {"field": "messages", "value": {"metadata": {"phone_number_id": whatsapp::PHONE_B},
         "messages": [{"from": "16505551234", "id": "wamid.ELSEWHERE", "timestamp": "1749416383",
                       "type": "text", "text": {"body": "not ours"}}]}},
        {"field": "message_template_status_update", "value": {"event": "APPROVED"}}
    ]}]});
    let status = c
        .post_meta("whatsapp", body.to_string().as_bytes(), whatsapp::SECRET)
        .await;
    assert_eq!(status, 200);
    c.drained().await;
    assert_eq!(c.message("wamid.KEPT").await["text"], "kept");
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 1);
    let dead = rejected_parts(&c).await;
    assert_eq!(dead.len(), 1, "one dead letter for the job: {dead:?}");
    let mut why = reasons(&dead[0].1);
    why.sort();
    assert_eq!(why.len(), 3, "{why:?}");
    assert!(why[0].contains("was not verified"), "{why:?}");
    assert!(why[1].contains("not a conversation event"), "{why:?}");
    assert!(why[2].contains("unknown status"), "{why:?}");
    c.stop().await;
}

#[tokio::test]
async fn messenger_items_that_cannot_be_stored_do_not_sink_their_neighbours() {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let app = c
        .app(whatsapp::META_APP, whatsapp::SECRET, "verify-alpha")
        .await;
    c.connect(&alpha, Channel::FacebookMessenger, PAGE, &app)
        .await;
    let body = json!({"object": "page", "entry": [{"id": PAGE, "time": 1749416383317_u64, "messaging": [
        {"sender": {"id": "6785432101234567"}, "recipient": {"id": PAGE}, "timestamp": 1749416383000_u64,
         "message": {"mid": "m_GOOD", "text": "hello"}},
        {"recipient": {"id": PAGE}, "timestamp": 1749416383001_u64,
         "message": {"mid": "m_NOSENDER", "text": "from nobody"}},
        {"sender": {"id": "6785432101234567"}, "recipient": {"id": PAGE},
         "delivery": {"seq": 1}}
    ], "changes": [{"field": "feed", "value": {"item": "comment"}}]}]});
    let status = c
        .post_meta("facebook", body.to_string().as_bytes(), whatsapp::SECRET)
        .await;
    assert_eq!(status, 200);
    c.drained().await;
    assert_eq!(c.message("m_GOOD").await["text"], "hello");
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 1);
    let dead = rejected_parts(&c).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let why = reasons(&dead[0].1);
    assert_eq!(why.len(), 3, "{why:?}");
    assert!(why[0].contains("not conversation events"), "{why:?}");
    assert!(why[1].contains("no sender"), "{why:?}");
    assert!(why[2].contains("delivery names no message"), "{why:?}");
    c.stop().await;
}

#[tokio::test]
async fn a_ycloud_message_without_a_sender_is_dead_lettered() {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let app = c.app("ycloud-endpoint-1", YCLOUD_SECRET, "unused").await;
    c.connect(&alpha, Channel::Whatsapp, "+15550783881", &app)
        .await;
    let body = json!({"id": "evt_1", "type": "whatsapp.inbound_message.received",
        "whatsappInboundMessage": {"wamid": "wamid.Y", "to": "+15550783881", "type": "text",
                                   "text": {"body": "who?"}}});
    let body = body.to_string().into_bytes();
    let sig = faro_edge::sign_ycloud(
        YCLOUD_SECRET.as_bytes(),
        chrono::Utc::now().timestamp(),
        &body,
    );
    let (status, _) = c
        .post_raw("ycloud", &body, ("ycloud-signature", &sig))
        .await;
    assert_eq!(status, 200);
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 0);
    let dead = rejected_parts(&c).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(reasons(&dead[0].1)[0].contains("no customer"), "{dead:?}");
    c.stop().await;
}
