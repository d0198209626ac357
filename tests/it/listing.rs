//! The conversations API over real gRPC: threads newest first, messages in the
//! platform's order (not arrival order), and one tenant never sees another's.

use faro_proto::conversations::v1::{
    ListConversationsRequest, ListMessagesRequest,
    conversations_service_client::ConversationsServiceClient,
};

use crate::cluster::{Cluster, whatsapp_text};

#[tokio::test]
async fn threads_list_newest_first_and_messages_in_platform_order() {
    let c = Cluster::start().await;
    let a = c.tenant("alpha").await;
    let b = c.tenant("bravo").await;
    // Arrival order differs from the platform's order: the reply is delivered first.
    for (id, from, text, at) in [
        ("wamid.L2", "111", "second", 1_700_000_200),
        ("wamid.L1", "111", "first", 1_700_000_100),
        ("wamid.L3", "222", "other thread", 1_700_000_150),
    ] {
        let (status, _) = c
            .post_signed(&whatsapp_text(&a, id, from, text, at), &a.app_secret)
            .await;
        assert_eq!(status, 200);
    }
    let (status, _) = c
        .post_signed(
            &whatsapp_text(&b, "wamid.B1", "333", "bravo's", 1_700_000_300),
            &b.app_secret,
        )
        .await;
    assert_eq!(status, 200);
    c.drained().await;

    let mut api = ConversationsServiceClient::connect(format!("http://{}", c.conversations))
        .await
        .expect("client");
    let threads = api
        .list_conversations(ListConversationsRequest {
            tenant_id: a.id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .conversations;
    let customers: Vec<&str> = threads.iter().map(|t| t.customer_id.as_str()).collect();
    assert_eq!(
        customers,
        ["111", "222"],
        "newest thread first, and only alpha's"
    );
    assert_eq!(
        threads[0].last_message_at.map(|t| t.seconds),
        Some(1_700_000_200)
    );

    let messages = api
        .list_messages(ListMessagesRequest {
            tenant_id: a.id.clone(),
            conversation_id: threads[0].id.clone(),
            limit: 0,
        })
        .await
        .expect("messages")
        .into_inner()
        .messages;
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["first", "second"],
        "ordered by the platform's timestamp"
    );

    // Bravo asking for alpha's thread gets nothing: the database filters it.
    let foreign = api
        .list_messages(ListMessagesRequest {
            tenant_id: b.id.clone(),
            conversation_id: threads[0].id.clone(),
            limit: 0,
        })
        .await
        .expect("messages")
        .into_inner()
        .messages;
    assert!(foreign.is_empty());
    let bad = api
        .list_conversations(ListConversationsRequest {
            tenant_id: "not-a-uuid".into(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    c.stop().await;
}
