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

use crate::cluster::Cluster;

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
