//! The conversations API over real gRPC: threads newest first, messages in the
//! platform's order (not arrival order), and one tenant never sees another's.

use faro_proto::conversations::v1::{
    ListConversationsRequest, ListMessagesRequest,
    conversations_service_client::ConversationsServiceClient,
};

use sqlx::{Connection, PgConnection};

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
            ..Default::default()
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

    // Bravo asking for alpha's thread finds no such thread.
    let foreign = api
        .list_messages(ListMessagesRequest {
            tenant_id: b.id.clone(),
            conversation_id: threads[0].id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("another tenant's thread");
    assert_eq!(foreign.code(), tonic::Code::NotFound);
    // That query also names the tenant; the database filters on its own: as
    // the service's role, a query naming only alpha's thread finds its rows
    // with alpha set and none with bravo set.
    let thread = threads[0].id.parse::<uuid::Uuid>().expect("uuid");
    let mut conn = PgConnection::connect_with(&c.db.app_options())
        .await
        .expect("connect as faro_app");
    for (tenant, expected) in [(&a.id, (1, 2)), (&b.id, (0, 0))] {
        let mut tx = conn.begin().await.expect("begin");
        sqlx::query("SELECT set_config('faro.tenant_id', $1, true)")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .expect("set tenant");
        let seen: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM conversations WHERE id = $1),
                    (SELECT count(*) FROM messages WHERE conversation_id = $1)",
        )
        .bind(thread)
        .fetch_one(&mut *tx)
        .await
        .expect("select");
        assert_eq!(seen, expected, "rows of alpha's thread seen by {tenant}");
        tx.rollback().await.expect("rollback");
    }
    conn.close().await.ok();
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
