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

use crate::{cluster::Cluster, whatsapp};

const PAGE: &str = "107856318000001";
const YCLOUD_SECRET: &str = "faro-test-ycloud-webhook-secret";

async fn dead_letters(c: &Cluster) -> Vec<HashMap<String, Bytes>> {
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

/// The dead letters that list parts of a stored job: (error, parts).
async fn rejected_parts(c: &Cluster) -> Vec<(String, Vec<serde_json::Value>)> {
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

fn reasons(parts: &[serde_json::Value]) -> Vec<String> {
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
