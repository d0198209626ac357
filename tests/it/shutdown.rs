//! An orderly stop (SIGTERM) of a real `faro` process ends even while clients
//! hold calls open that would never end by themselves.

use std::time::Duration;

use faro_proto::{
    redis_keys,
    stream::v1::{Event, SubscribeRequest, stream_service_client::StreamServiceClient},
};
use fred::interfaces::{ClientLike, PubsubInterface};
use prost::Message;

use crate::{
    cluster::{redis, redis_url},
    process::{Faro, free_addr, wait_listening},
};

/// An edge's live subscription is a server stream that never ends: the stream
/// process must end it when told to stop, not wait for it.
#[tokio::test]
async fn a_stream_process_told_to_stop_ends_live_subscriptions_and_exits() {
    let prefix = format!("faro-it:{}:", uuid::Uuid::new_v4().simple());
    let (addr, redis_url) = (free_addr(), redis_url());
    let listen = addr.to_string();
    let mut stream = Faro::spawn(
        "shutdown",
        "stream",
        &[
            "--stream-listen",
            &listen,
            "--redis-url",
            &redis_url,
            "--redis-prefix",
            &prefix,
        ],
    );
    wait_listening(addr).await;

    let tenant = uuid::Uuid::new_v4().to_string();
    let mut client = StreamServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("client");
    let mut live = client
        .subscribe(SubscribeRequest {
            tenant_id: tenant.clone(),
            location_ids: vec![],
        })
        .await
        .expect("subscribed")
        .into_inner();
    // The subscription is live: an event published now reaches it.
    let publisher = redis(&redis_url).await;
    let event = Event {
        id: "e1".into(),
        tenant_id: tenant.clone(),
        ..Default::default()
    };
    let received = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let _: i64 = publisher
                .publish(
                    redis_keys::events_channel(&prefix, &tenant),
                    event.encode_to_vec(),
                )
                .await
                .expect("publish");
            if let Ok(Ok(m)) =
                tokio::time::timeout(Duration::from_millis(200), live.message()).await
            {
                return m;
            }
        }
    })
    .await
    .expect("the subscription hears an event within 20 s");
    assert_eq!(received.map(|e| e.id), Some("e1".into()));
    publisher.quit().await.ok();

    stream.terminate();
    let status = stream.exited(Duration::from_secs(60)).await;
    assert!(status.success(), "exits cleanly: {status:?}");
    // Ended by the service (a clean end of stream), not cut by the process exiting.
    let mut ended = None;
    while ended.is_none() {
        match tokio::time::timeout(Duration::from_secs(20), live.message())
            .await
            .expect("the stream ends, not hangs")
        {
            Ok(Some(e)) => assert_eq!(e.id, "e1", "only the probe event"),
            other => ended = Some(other.map(|_| ())),
        }
    }
    assert_eq!(
        ended.and_then(Result::ok),
        Some(()),
        "the subscription ended cleanly"
    );
}
