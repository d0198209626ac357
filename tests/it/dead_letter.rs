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

use uuid::Uuid;

use crate::cluster::{Cluster, Options, Tenant, whatsapp_text};

pub(crate) async fn dead_letters(c: &Cluster) -> Vec<HashMap<String, Bytes>> {
    let entries: Vec<(String, HashMap<String, Bytes>)> = c
        .redis
        .xrange(format!("{}ingest:dead", c.prefix), "-", "+", None)
        .await
        .expect("xrange");
    entries.into_iter().map(|(_, fields)| fields).collect()
}

#[tokio::test]
async fn jobs_that_cannot_be_processed_are_dead_lettered_whole() {
    let c = Cluster::start().await;
    let mut ingest = IngestServiceClient::connect(format!("http://{}", c.ingest))
        .await
        .expect("client");
    let route = Route {
        external_account_id: "P1".into(),
        tenant_id: "not-a-tenant".into(), // conversations refuses it: permanently
        location_id: "not-a-location".into(),
        channel_account_id: String::new(),
        channel: Channel::Whatsapp.into(),
    };
    let rejected = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":
        {"metadata":{"phone_number_id":"P1"},"messages":[{"from":"1","id":"wamid.X","timestamp":"1","type":"text","text":{"body":"hi"}}]}}]}]}"#;
    let unparseable = br#"{"object":"page","entry":[]}"#; // not a WhatsApp envelope
    for payload in [&rejected[..], &unparseable[..]] {
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
