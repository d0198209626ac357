//! What one agent or tenant may hold open on an edge: WebSockets per agent and
//! per tenant, long-polls and event streams per agent. Over a bound: a JSON
//! 429 before anything is upgraded or joined; a slot frees when its socket or
//! request ends.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{
    Error as WsError, Message, client::IntoClientRequest, http::HeaderValue,
};

use crate::cluster::{Cluster, EdgeLimits, JWT_SECRET, Options, Ws};

async fn cluster(client: faro_edge::ClientLimits) -> Cluster {
    Cluster::start_with(Options {
        edge_limits: EdgeLimits {
            client,
            ..EdgeLimits::default()
        },
        ..Options::default()
    })
    .await
}

/// A token for agent `sub` of `tenant`.
fn token(tenant: &str, sub: &str) -> String {
    faro_edge::auth::JwtKeys::new(JWT_SECRET.as_bytes())
        .expect("keys")
        .issue(&faro_edge::auth::Claims {
            sub: sub.into(),
            tenant_id: tenant.parse().expect("uuid"),
            location_ids: None,
            exp: u64::try_from(chrono::Utc::now().timestamp() + 600).unwrap_or_default(),
        })
        .expect("token")
}

/// Opens a WebSocket: `Ok` once upgraded, or the refusal's status and JSON.
async fn open(c: &Cluster, token: &str) -> Result<Ws, (u16, serde_json::Value)> {
    let mut req = format!("ws://{}/api/v1/messages/stream", c.edge)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(Ws(ws)),
        Err(WsError::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            Err((
                resp.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or_default(),
            ))
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn assert_429(refused: Result<Ws, (u16, serde_json::Value)>, scope: &str) {
    let Err((status, json)) = refused else {
        panic!("a WebSocket over the {scope} bound was upgraded");
    };
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (429, Some("too_many_websockets")),
        "{json}"
    );
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(scope), "{message}");
}

/// Closes a socket and waits until the server has closed the connection.
async fn close(mut ws: Ws) {
    ws.0.send(Message::Close(None)).await.expect("close");
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(_)) = ws.0.next().await {}
    })
    .await
    .expect("closed within 20 s");
}

#[tokio::test]
async fn websockets_are_bounded_per_agent_and_per_tenant() {
    let c = cluster(faro_edge::ClientLimits {
        ws_per_tenant: 3,
        ws_per_agent: 2,
        ..faro_edge::ClientLimits::default()
    })
    .await;
    let t = c.tenant("ws-caps").await;
    let other = c.tenant("ws-caps-other").await;
    let (a, b) = (token(&t.id, "agent-a"), token(&t.id, "agent-b"));

    let a1 = open(&c, &a).await.expect("first of agent a");
    let _a2 = open(&c, &a).await.expect("second of agent a");
    assert_429(open(&c, &a).await, "agent");
    let _b1 = open(&c, &b).await.expect("agent b: the tenant's third");
    assert_429(open(&c, &b).await, "tenant");
    // Another tenant is not affected, even with the same agent name.
    let _o = open(&c, &token(&other.id, "agent-a"))
        .await
        .expect("another tenant");

    // A closed socket frees its slots: agent a may open another.
    close(a1).await;
    let mut a3 = open(&c, &a).await.expect("a slot was freed");

    // The sockets within the bounds work.
    let (status, _) = c
        .post_signed(
            &crate::cluster::whatsapp_text(&t, "wamid.CAP1", "1", "hi", 1_700_000_000),
            &t.app_secret,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        a3.next_event().await["message"]["channel_message_id"],
        "wamid.CAP1"
    );
    c.stop().await;
}

#[tokio::test]
async fn long_polls_and_event_streams_are_bounded_per_agent() {
    let c = cluster(faro_edge::ClientLimits {
        rest_per_agent: 2,
        ..faro_edge::ClientLimits::default()
    })
    .await;
    let t = c.tenant("rest-caps").await;
    let (a, b) = (token(&t.id, "agent-a"), token(&t.id, "agent-b"));
    let get = |path: &str, token: &str| c.http.get(c.url(path)).bearer_auth(token).send();
    // An event stream and a long-poll in progress: agent a's two slots.
    let sse = get("/api/v1/messages/events", &a).await.expect("sse");
    assert_eq!(sse.status().as_u16(), 200);
    let poll = tokio::spawn(get("/api/v1/messages/poll?timeout=30", &a));
    // Wait until the long-poll holds its slot: a third request is refused.
    let refused = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let r = get("/api/v1/messages/poll?timeout=0", &a)
                .await
                .expect("poll");
            if r.status().as_u16() == 429 {
                return r;
            }
            assert_eq!(
                r.status().as_u16(),
                200,
                "under the bound, a poll is served"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a third request in progress is refused within 20 s");
    let json: serde_json::Value = refused.json().await.expect("JSON");
    assert_eq!(json["error"]["code"], "too_many_requests_in_progress");
    // Another agent of the tenant is not affected.
    let r = get("/api/v1/messages/poll?timeout=0", &b)
        .await
        .expect("poll");
    assert_eq!(r.status().as_u16(), 200);

    // The long-poll's answer frees its slot.
    let (status, _) = c
        .post_signed(
            &crate::cluster::whatsapp_text(&t, "wamid.REST1", "1", "hi", 1_700_000_000),
            &t.app_secret,
        )
        .await;
    assert_eq!(status, 200);
    let answered = poll.await.expect("joined").expect("poll answered");
    assert_eq!(answered.status().as_u16(), 200);
    let r = get("/api/v1/messages/poll?timeout=0", &a)
        .await
        .expect("poll");
    assert_eq!(
        r.status().as_u16(),
        200,
        "the finished long-poll's slot is free"
    );

    // A dropped event stream frees its slot too (once the server sees it go).
    drop(sse);
    let _sse2 = get("/api/v1/messages/events", &a).await.expect("sse");
    let freed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let r = get("/api/v1/messages/events", &a).await.expect("sse");
            if r.status().as_u16() == 200 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the dropped stream's slot frees within 20 s");
    drop(freed);
    c.stop().await;
}
