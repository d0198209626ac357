//! An orderly stop (SIGTERM) of a real `faro` process ends even while clients
//! hold calls open that would never end by themselves.

use std::time::Duration;

use faro_proto::{
    redis_keys,
    stream::v1::{Event, SubscribeRequest, stream_service_client::StreamServiceClient},
};
use fred::interfaces::{ClientLike, PubsubInterface};
use prost::Message;

use faro_proto::conversations::v1::{
    ListConversationsRequest, conversations_service_client::ConversationsServiceClient,
};
use tokio::net::TcpStream;

use crate::{
    cluster::{Cluster, Options, encryption_keys, redis, redis_url, whatsapp_text},
    crash::{hold_stores, pending, store_in_flight},
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
            since: None,
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

/// Stopping `faro run` with ingest and conversations in one process: ingest
/// stops first and its worker finishes the batch in hand, storing it through
/// conversations, which is still serving until then.
#[tokio::test]
async fn a_stopping_process_stops_ingest_before_the_conversations_it_stores_through() {
    let c = Cluster::start_with(Options {
        ingest: false,
        conversations: false,
        ..Options::default()
    })
    .await;
    let (ingest, conversations) = (c.ingest.to_string(), c.conversations.to_string());
    let (redis_url, keys) = (redis_url(), encryption_keys().join(","));
    let conversations_url = format!("http://{conversations}");
    let mut both = Faro::spawn(
        &c.db.name,
        "run",
        &[
            "--service",
            "ingest",
            "--service",
            "conversations",
            "--ingest-listen",
            &ingest,
            "--conversations-listen",
            &conversations,
            "--conversations-url",
            &conversations_url,
            "--database-url",
            &c.db.owner_url,
            "--encryption-keys",
            &keys,
            "--redis-url",
            &redis_url,
            "--redis-prefix",
            &c.prefix,
        ],
    );
    wait_listening(c.ingest).await;
    wait_listening(c.conversations).await;
    let a = c.tenant("alpha").await;

    // A worker is storing a job when the signal arrives.
    let held = hold_stores(&c).await;
    let body = whatsapp_text(&a, "wamid.T1", "16315551181", "in hand", 1_700_000_000);
    assert_eq!(c.post_signed(&body, &a.app_secret).await.0, 200);
    store_in_flight(&c).await;
    both.terminate();
    // Ingest stops taking work (its listener closes) ...
    for _ in 0..400 {
        if TcpStream::connect(c.ingest).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        TcpStream::connect(c.ingest).await.is_err(),
        "ingest stopped"
    );
    // ... while conversations keeps serving the worker's batch.
    let threads = ConversationsServiceClient::connect(conversations_url)
        .await
        .expect("conversations still accepts")
        .list_conversations(ListConversationsRequest {
            tenant_id: a.id.clone(),
            ..Default::default()
        })
        .await
        .expect("conversations still serves")
        .into_inner()
        .conversations;
    assert!(threads.is_empty(), "nothing stored yet");

    held.commit().await.expect("release the lock");
    let status = both.exited(Duration::from_secs(60)).await;
    assert!(status.success(), "exits cleanly: {status:?}");
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 1);
    assert_eq!(pending(&c).await, 0, "the batch in hand was acknowledged");
    c.stop().await;
}
