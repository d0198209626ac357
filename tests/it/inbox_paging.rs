//! Keyset pages walked while new threads arrive: every thread that existed
//! when the walk began is seen exactly once, and no thread twice.

use std::collections::HashSet;

use faro_proto::conversations::v1::ListConversationsRequest;

use crate::{
    cluster::Cluster,
    inbox_support::{grpc, post, shop},
};

#[tokio::test]
async fn a_walk_while_threads_arrive_skips_and_repeats_nothing() {
    let c = Cluster::start().await;
    let s = shop(&c, "paging").await;
    // Equal timestamps in pairs, so the id breaks ties on page boundaries.
    for n in 0..30 {
        post(
            &c,
            &s.one,
            &format!("wamid.P{n}"),
            &format!("1555000{n:04}"),
            "Pat",
            "hi",
            1_700_000_000 + n / 2,
        )
        .await;
    }
    c.drained().await;
    let existing: HashSet<String> = (0..30).map(|n| format!("1555000{n:04}")).collect();
    let mut api = grpc(&c).await;

    // New customers keep writing while the walk goes on: newer ones (they
    // sort above the cursor) and late deliveries with old platform times
    // (they sort among the pages still to come).
    let arriving = {
        let c2 = (c.edge, s.one.clone());
        let http = c.http.clone();
        tokio::spawn(async move {
            for n in 0..20i64 {
                let ts = if n % 2 == 0 {
                    1_800_000_000 + n
                } else {
                    1_600_000_000 + n
                };
                let body = crate::inbox_support::text(
                    &c2.1,
                    &format!("wamid.N{n}"),
                    &format!("1666000{n:04}"),
                    "New",
                    "hello",
                    ts,
                );
                let sig = faro_edge::sign_meta_payload(c2.1.app_secret.as_bytes(), body.as_bytes());
                let r = http
                    .post(format!("http://{}/api/v1/webhooks/whatsapp", c2.0))
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", sig)
                    .body(body)
                    .send()
                    .await
                    .expect("edge");
                assert_eq!(r.status(), 200);
            }
        })
    };
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = api
            .list_conversations(ListConversationsRequest {
                tenant_id: s.id().into(),
                limit: 4,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        seen.extend(page.conversations.iter().map(|c| c.customer_id.clone()));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
        tokio::task::yield_now().await;
    }
    arriving.await.expect("posting");
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no thread twice: {seen:?}");
    assert!(
        existing.is_subset(&unique),
        "every thread that existed is seen"
    );
    c.stop().await;
}
