//! The inbox RPCs called directly, as the edge (or an operator) does: bad
//! values are INVALID_ARGUMENT naming the field, a stale version is ABORTED,
//! and filters apply without the edge in between.

use faro_proto::conversations::v1::{
    Channel, ListConversationsRequest, ListMessagesRequest, MarkReadRequest,
    UpdateConversationRequest,
};
use tonic::Code;

use crate::{
    cluster::Cluster,
    inbox_support::{grpc, post, shop},
};

fn refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, field: &str) {
    let s = r.expect_err(field);
    assert_eq!(s.code(), code, "{field}: {s:?}");
    assert!(
        s.message().contains(field),
        "names {field}: {}",
        s.message()
    );
}

#[tokio::test]
async fn rpcs_name_what_is_wrong_and_filter_without_the_edge() {
    let c = Cluster::start().await;
    let s = shop(&c, "rpc").await;
    post(
        &c,
        &s.one,
        "wamid.G1",
        "15550001111",
        "Ann",
        "hi",
        1_700_000_100,
    )
    .await;
    post(
        &c,
        &s.two,
        "wamid.G2",
        "15550002222",
        "Bob",
        "hey",
        1_700_000_200,
    )
    .await;
    c.drained().await;
    let mut api = grpc(&c).await;
    let list = |r: ListConversationsRequest| ListConversationsRequest {
        tenant_id: s.id().into(),
        agent_id: "agent-1".into(),
        ..r
    };
    let ids = |v: Vec<faro_proto::conversations::v1::Conversation>| -> Vec<String> {
        v.into_iter().map(|c| c.customer_id).collect()
    };
    let got = api
        .list_conversations(list(ListConversationsRequest {
            channels: vec![Channel::Whatsapp.into()],
            filter_location_ids: vec![s.two.location_id.clone()],
            unread_only: true,
            ..Default::default()
        }))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(ids(got.conversations), ["15550002222"]);
    for (req, field) in [
        (
            ListConversationsRequest {
                channels: vec![99],
                ..Default::default()
            },
            "channel",
        ),
        (
            ListConversationsRequest {
                cursor: "x".into(),
                ..Default::default()
            },
            "cursor",
        ),
        (
            ListConversationsRequest {
                statuses: vec!["won".into()],
                ..Default::default()
            },
            "status",
        ),
        (
            ListConversationsRequest {
                assignee: "a".into(),
                unassigned: true,
                ..Default::default()
            },
            "unassigned",
        ),
        (
            ListConversationsRequest {
                query: "x".into(),
                ..Default::default()
            },
            "query",
        ),
    ] {
        refused(
            api.list_conversations(list(req)).await,
            Code::InvalidArgument,
            field,
        );
    }
    refused(
        api.list_conversations(ListConversationsRequest {
            tenant_id: s.id().into(),
            unread_only: true,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "agent_id",
    );
    let bob = api
        .list_conversations(list(ListConversationsRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .conversations[0]
        .id
        .clone();
    let update = |v: i64, status: &str| UpdateConversationRequest {
        tenant_id: s.id().into(),
        conversation_id: bob.clone(),
        agent_id: "agent-1".into(),
        expected_version: v,
        status: Some(status.into()),
        ..Default::default()
    };
    let done = api
        .update_conversation(update(1, "open"))
        .await
        .expect("edit")
        .into_inner();
    assert_eq!(
        (done.changed, done.changed_fields.clone()),
        (true, vec!["status".to_owned()])
    );
    refused(
        api.update_conversation(update(1, "quoted")).await,
        Code::Aborted,
        "version",
    );
    refused(
        api.update_conversation(update(0, "new")).await,
        Code::InvalidArgument,
        "status",
    );
    refused(
        api.mark_read(MarkReadRequest {
            tenant_id: s.id().into(),
            conversation_id: bob.clone(),
            agent_id: "agent-1".into(),
            message_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "message_id",
    );
    refused(
        api.list_messages(ListMessagesRequest {
            tenant_id: s.id().into(),
            conversation_id: bob.clone(),
            after: "AAAA".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "after",
    );
    c.stop().await;
}
