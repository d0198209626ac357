//! Agents' live edits go through an outbox (migration 0018): an edit made
//! while ingest cannot announce it still reaches the agents' WebSockets once
//! ingest is back, with the same event id as the outbox row; normally the
//! edge's fast path announces it once and the row is gone.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    cluster::{Cluster, Options},
    configs::ingest_config,
    inbox_support::{call, token},
};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(c: &Cluster, token: &str) -> Ws {
    let mut req = format!("ws://{}/api/v1/messages/stream", c.edge)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket opens")
        .0
}

/// The `conversation.updated` frames that arrive within `wait`.
async fn updates(ws: &mut Ws, wait: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).expect("json frame");
            if v["type"] == "conversation.updated" {
                out.push(v);
            }
        }
    }
    out
}

/// A thread of the tenant's location, written as the owner (no webhook:
/// ingest may be down).
async fn thread(c: &Cluster, tenant: &str, location: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO conversations (tenant_id, id, location_id, channel, customer_id)
         VALUES ($1::uuid, $2, $3::uuid, 'whatsapp', '15551230000')",
    )
    .bind(tenant)
    .bind(id)
    .bind(location)
    .execute(&c.db.owner)
    .await
    .expect("thread");
    id
}

async fn outbox(c: &Cluster) -> Vec<String> {
    sqlx::query_scalar("SELECT id::text FROM conversation_outbox ORDER BY id")
        .fetch_all(&c.db.owner)
        .await
        .expect("outbox")
}

#[tokio::test]
async fn an_edit_made_while_ingest_is_down_reaches_agents_when_it_is_back() {
    let c = Cluster::start_with(Options {
        ingest: false,
        ..Options::default()
    })
    .await;
    let (tenant, location) = c.bare_tenant("omega").await;
    let id = thread(&c, &tenant, &location).await;
    let ana = token(&tenant, "ana", None);
    let mut ws = open(&c, &ana).await;
    let path = format!("/api/v1/conversations/{id}");
    let edit = call(
        &c,
        Method::PATCH,
        &path,
        &ana,
        &[],
        Some(json!({"status": "open"})),
    )
    .await;
    assert_eq!(edit.status, StatusCode::OK, "{}", edit.body);
    let pending = outbox(&c).await;
    assert_eq!(pending.len(), 1, "the edit's event waits in the outbox");
    assert!(
        updates(&mut ws, Duration::from_millis(500))
            .await
            .is_empty()
    );
    another_tenant_touches_none_of_it(&c).await;

    // ingest comes back where the edge expects it.
    let listener = TcpListener::bind(c.ingest).await.expect("ingest's address");
    let stop = CancellationToken::new();
    let config = ingest_config(&c.prefix, &format!("http://{}", c.conversations));
    let ingest = tokio::spawn(faro_ingest::run(config, listener, stop.clone()));
    let frames = updates(&mut ws, Duration::from_secs(8)).await;
    assert_eq!(frames.len(), 1, "announced once: {frames:?}");
    let f = &frames[0];
    assert_eq!(
        f["id"],
        pending[0].as_str(),
        "the frame's id is the outbox row's"
    );
    assert_eq!(f["conversation"]["status"], "open");
    assert_eq!(f["changed"], json!(["status"]));
    assert!(outbox(&c).await.is_empty(), "published rows are deleted");
    stop.cancel();
    let _ = ingest.await;
    c.stop().await;
}

#[tokio::test]
async fn with_ingest_up_an_edit_is_announced_once_and_leaves_no_outbox_row() {
    let c = Cluster::start().await;
    let (tenant, location) = c.bare_tenant("sigma").await;
    let id = thread(&c, &tenant, &location).await;
    let ana = token(&tenant, "ana", None);
    let mut ws = open(&c, &ana).await;
    let path = format!("/api/v1/conversations/{id}");
    let edit = call(
        &c,
        Method::PATCH,
        &path,
        &ana,
        &[],
        Some(json!({"add_tags": ["vip"]})),
    )
    .await;
    assert_eq!(edit.status, StatusCode::OK, "{}", edit.body);
    let read = call(
        &c,
        Method::POST,
        &format!("{path}/read"),
        &ana,
        &[],
        Some(json!({})),
    )
    .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    // Past the relay's minimum age and a poll: nothing is published twice.
    let frames = updates(&mut ws, Duration::from_secs(4)).await;
    let changed: Vec<&Value> = frames.iter().map(|f| &f["changed"]).collect();
    assert_eq!(changed, [&json!(["tags"])], "{frames:?}");
    assert!(outbox(&c).await.is_empty());
    c.stop().await;
}

/// As the service role with another tenant set, the outbox row is invisible
/// and untouchable.
async fn another_tenant_touches_none_of_it(c: &Cluster) {
    use sqlx::Connection;
    let (other, _) = c.bare_tenant("other").await;
    let mut app = sqlx::PgConnection::connect_with(&c.db.app_options())
        .await
        .expect("connect as faro_app");
    sqlx::query("SELECT set_config('faro.tenant_id', $1, false)")
        .bind(&other)
        .execute(&mut app)
        .await
        .expect("tenant set");
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM conversation_outbox")
        .fetch_one(&mut app)
        .await
        .expect("select");
    assert_eq!(seen, 0);
    let deleted = sqlx::query("DELETE FROM conversation_outbox")
        .execute(&mut app)
        .await
        .expect("delete");
    assert_eq!(deleted.rows_affected(), 0);
    let update = sqlx::query("UPDATE conversation_outbox SET claimed_until = now()")
        .execute(&mut app)
        .await
        .expect_err("no UPDATE grant");
    assert_eq!(
        update.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("42501")
    );
}
