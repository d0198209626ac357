//! What conversations returns of a conversation event, first and on a
//! redelivery: the worker announces only what it is given back.

use faro_proto::conversations::v1::{
    Channel, ChannelEvent, ConversationEvent, ConversationEventKind, StoreEventsRequest,
    channel_event::Kind, conversations_service_client::ConversationsServiceClient,
};

use crate::conversation_events::{PSID, setup};

/// Conversations returns a conversation event when it stores it, and again
/// only for a redelivery (an earlier attempt may have stored it unannounced).
#[tokio::test]
async fn a_conversation_event_is_returned_once_and_again_only_for_a_redelivery() {
    let (c, alpha) = setup().await;
    let account: String = sqlx::query_scalar(
        "SELECT id::text FROM channel_accounts WHERE channel = 'facebook_messenger'",
    )
    .fetch_one(&c.db.owner)
    .await
    .expect("account");
    let event = ChannelEvent {
        kind: Some(Kind::ConversationEvent(ConversationEvent {
            tenant_id: alpha.0.clone(),
            location_id: alpha.1.clone(),
            channel_account_id: account,
            channel: Channel::FacebookMessenger.into(),
            customer_id: PSID.into(),
            kind: ConversationEventKind::GamePlay.into(),
            event_key: "faro-sha256-game".into(),
            timestamp: Some(faro_proto::to_timestamp(
                chrono::DateTime::from_timestamp(1_749_416_500, 0).expect("time"),
            )),
            raw_json: r#"{"game_play": {"score": 1}}"#.into(),
            ..Default::default()
        })),
        arrival: None,
    };
    let mut api = ConversationsServiceClient::connect(format!("http://{}", c.conversations))
        .await
        .expect("client");
    let mut returned = Vec::new();
    for redelivered in [false, false, true] {
        let r = api
            .store_events(StoreEventsRequest {
                events: vec![event.clone()],
                redelivered,
            })
            .await
            .expect("stored")
            .into_inner();
        returned.push(r.conversation_events.len());
        if let Some(e) = r.conversation_events.first() {
            let thread = e.conversation.as_ref().expect("its thread");
            assert_eq!(thread.customer_id, PSID);
            assert!(
                thread.last_message_at.is_none(),
                "an event is not a message"
            );
        }
    }
    assert_eq!(returned, [1, 0, 1]);
    assert_eq!(c.count("SELECT count(*) FROM conversation_events").await, 1);
    c.stop().await;
}
