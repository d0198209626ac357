//! Isolation of every inbox route and RPC: another tenant's ids are 404
//! (NOT_FOUND) and change nothing; a location-limited agent never sees
//! another location's threads in lists, gets, messages or search.

use faro_proto::conversations::v1::{
    GetConversationRequest, ListConversationsRequest, ListMessagesRequest, MarkReadRequest,
    UpdateConversationRequest,
};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{
    cluster::Cluster,
    inbox_support::{call, customers, get, grpc, post, shop, token},
};

/// Every inbox route on thread `id` with `token`: each must answer 404.
async fn all_routes_404(c: &Cluster, id: &str, token: &str, what: &str) {
    let base = format!("/api/v1/conversations/{id}");
    let answers = [
        get(c, &base, token).await,
        get(c, &format!("{base}/messages"), token).await,
        call(
            c,
            Method::PATCH,
            &base,
            token,
            &[],
            Some(json!({"status": "open"})),
        )
        .await,
        call(
            c,
            Method::PATCH,
            &base,
            token,
            &[("if-match", "\"1\"")],
            Some(json!({"add_tags": ["x"]})),
        )
        .await,
        call(c, Method::POST, &format!("{base}/read"), token, &[], None).await,
    ];
    for (n, a) in answers.iter().enumerate() {
        assert_eq!(
            a.status,
            StatusCode::NOT_FOUND,
            "{what}: route {n}: {}",
            a.body
        );
        assert_eq!(a.body["error"]["code"], "not_found");
    }
}

/// What an intruder could have changed: version, status, tags, reads.
async fn fingerprint(c: &Cluster) -> (i64, i64) {
    let v: i64 = sqlx::query_scalar("SELECT COALESCE(sum(version), 0)::bigint FROM conversations")
        .fetch_one(&c.db.owner)
        .await
        .expect("versions");
    let reads: i64 = sqlx::query_scalar("SELECT count(*) FROM conversation_reads")
        .fetch_one(&c.db.owner)
        .await
        .expect("reads");
    (v, reads)
}

#[tokio::test]
async fn other_tenants_and_locations_get_404_and_change_nothing() {
    let c = Cluster::start().await;
    let a = shop(&c, "alpha").await;
    let b = shop(&c, "bravo").await;
    post(
        &c,
        &a.one,
        "wamid.A1",
        "15550001111",
        "Ann",
        "secret plans",
        1_700_000_100,
    )
    .await;
    post(
        &c,
        &a.two,
        "wamid.A2",
        "15550002222",
        "Bob",
        "branch talk",
        1_700_000_200,
    )
    .await;
    post(
        &c,
        &b.one,
        "wamid.B1",
        "15550003333",
        "Cara",
        "bravo's",
        1_700_000_300,
    )
    .await;
    c.drained().await;
    let owner = token(a.id(), "agent-1", None);
    let list = get(&c, "/api/v1/conversations", &owner).await.body;
    let one = list["conversations"][1]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let two = list["conversations"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let before = fingerprint(&c).await;

    // Tenant B with A's ids, and A's branch agent with location one's thread.
    let bravo = token(b.id(), "agent-1", None);
    let branch = token(a.id(), "agent-9", Some(&[a.two.location_id.as_str()]));
    all_routes_404(&c, &one, &bravo, "another tenant").await;
    all_routes_404(&c, &two, &bravo, "another tenant").await;
    all_routes_404(&c, &one, &branch, "another location").await;
    assert_eq!(fingerprint(&c).await, before, "nothing changed");
    // The branch agent's own thread is served.
    assert_eq!(
        get(&c, &format!("/api/v1/conversations/{two}"), &branch)
            .await
            .status,
        StatusCode::OK
    );

    // Lists and search: B sees only its own; the branch agent only location two,
    // even when it asks for location one or searches its text.
    assert_eq!(
        customers(&get(&c, "/api/v1/conversations", &bravo).await.body),
        ["15550003333"]
    );
    assert_eq!(
        customers(
            &get(&c, "/api/v1/conversations?query=secret", &bravo)
                .await
                .body
        ),
        Vec::<String>::new()
    );
    for q in [
        "",
        "?query=secret",
        "?query=15550001111",
        &format!("?location_id={}", a.one.location_id),
    ] {
        let seen = customers(
            &get(&c, &format!("/api/v1/conversations{q}"), &branch)
                .await
                .body,
        );
        assert!(!seen.contains(&"15550001111".to_owned()), "{q}: {seen:?}");
    }
    assert_eq!(
        customers(&get(&c, "/api/v1/conversations", &branch).await.body),
        ["15550002222"]
    );

    // The same over gRPC, as the edge calls it.
    let mut api = grpc(&c).await;
    let not_found = |r: Result<_, tonic::Status>, what: &str| match r {
        Err(s) if s.code() == tonic::Code::NotFound => {}
        Err(s) => panic!("{what}: {s:?}"),
        Ok(_) => panic!("{what}: served"),
    };
    for (tenant, locations, id, what) in [
        (b.id(), vec![], &one, "tenant B"),
        (
            a.id(),
            vec![a.two.location_id.clone()],
            &one,
            "location two",
        ),
    ] {
        not_found(
            api.get_conversation(GetConversationRequest {
                tenant_id: tenant.into(),
                conversation_id: id.clone(),
                location_ids: locations.clone(),
                agent_id: "x".into(),
            })
            .await
            .map(|_| ()),
            what,
        );
        not_found(
            api.list_messages(ListMessagesRequest {
                tenant_id: tenant.into(),
                conversation_id: id.clone(),
                location_ids: locations.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            what,
        );
        not_found(
            api.update_conversation(UpdateConversationRequest {
                tenant_id: tenant.into(),
                conversation_id: id.clone(),
                location_ids: locations.clone(),
                agent_id: "x".into(),
                status: Some("archived".into()),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            what,
        );
        not_found(
            api.mark_read(MarkReadRequest {
                tenant_id: tenant.into(),
                conversation_id: id.clone(),
                location_ids: locations.clone(),
                agent_id: "x".into(),
                message_id: String::new(),
            })
            .await
            .map(|_| ()),
            what,
        );
        let listed = api
            .list_conversations(ListConversationsRequest {
                tenant_id: tenant.into(),
                location_ids: locations.clone(),
                query: "secret".into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .conversations;
        assert!(
            listed.is_empty(),
            "{what}: search finds nothing of A's location one"
        );
    }
    assert_eq!(
        fingerprint(&c).await,
        before,
        "nothing changed over gRPC either"
    );
    c.stop().await;
}
