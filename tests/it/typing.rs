//! Client frames on the agents' WebSocket: `ping` → `pong`, and typing
//! indicators relayed to the tenant's other agents who may see the
//! conversation, on every edge, never stored; bad frames answered with an
//! `error` frame on a socket that stays usable; the per-socket rate limit.
//!
//! "Did not receive" is shown without waiting: after the frame in question, a
//! later frame the client is entitled to is sent on the same tenant channel,
//! and it must be the next one the client reads (one Redis channel, one
//! order).

use std::{net::SocketAddr, time::Duration};

use faro_proto::{
    conversations::v1::{self as pb, Channel},
    stream::v1::{
        HistoryRequest, Position, event::Kind, stream_service_client::StreamServiceClient,
    },
};
use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cluster::{Cluster, EdgeLimits, JWT_SECRET, Options, Tenant, Ws, whatsapp_text};

fn token(sub: &str, tenant: &str, locations: Option<&[&str]>) -> String {
    let exp = chrono::Utc::now().timestamp() + 600;
    faro_edge::auth::JwtKeys::new(JWT_SECRET.as_bytes())
        .expect("keys")
        .issue(&faro_edge::auth::Claims {
            sub: sub.into(),
            tenant_id: tenant.parse().expect("uuid"),
            location_ids: locations.map(|l| l.iter().map(|l| l.parse().expect("uuid")).collect()),
            exp: u64::try_from(exp).unwrap_or_default(),
        })
        .expect("token")
}

/// An agent's WebSocket on the edge at `edge`; retried while a freshly
/// started stream service is still subscribing to Redis (503).
async fn open(edge: SocketAddr, token: &str) -> Ws {
    let mut req = format!("ws://{edge}/api/v1/messages/stream")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    for _ in 0..200 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(req.clone()).await {
            return Ws(ws);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the edge at {edge} accepts no WebSocket within 10 s");
}

async fn send(ws: &mut Ws, frame: &Value) {
    ws.0.send(Message::text(frame.to_string()))
        .await
        .expect("frame sent");
}

fn typing(conversation: &str, state: &str) -> Value {
    json!({"type": "typing", "conversation_id": conversation, "state": state})
}

/// The next frame must be `agent`'s typing `state` in `conversation`.
async fn expect_typing(ws: &mut Ws, agent: &str, conversation: &str, state: &str) -> Value {
    let f = ws.next_event().await;
    assert_eq!(
        (
            f["type"].as_str(),
            f["agent"].as_str(),
            f["conversation_id"].as_str(),
            f["state"].as_str()
        ),
        (Some("typing"), Some(agent), Some(conversation), Some(state)),
        "{f}"
    );
    f
}

async fn expect_error(ws: &mut Ws, code: &str) -> Value {
    let f = ws.next_event().await;
    assert_eq!(
        (f["type"].as_str(), f["code"].as_str()),
        (Some("error"), Some(code)),
        "{f}"
    );
    assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()), "{f}");
    f
}

/// Stores one message for `t`'s number and returns its conversation's id.
async fn conversation(c: &Cluster, t: &Tenant, message_id: &str) -> String {
    let (status, _) = c
        .post_signed(
            &whatsapp_text(t, message_id, "15550009999", "hello", 1_700_000_000),
            &t.app_secret,
        )
        .await;
    assert_eq!(status, 200);
    c.drained().await;
    c.message(message_id).await["conversation_id"]
        .as_str()
        .expect("a conversation")
        .to_owned()
}

/// A second location of `t`'s tenant with a number of its own.
async fn second_location(c: &Cluster, t: &Tenant) -> Tenant {
    let location = c
        .admin()
        .await
        .create_location(pb::CreateLocationRequest {
            tenant_id: t.id.clone(),
            name: "branch".into(),
        })
        .await
        .expect("location")
        .into_inner()
        .id;
    let suffix = Uuid::new_v4().simple().to_string();
    let secret = format!("secret-{suffix}");
    let app = c
        .app(
            &format!("app-{suffix}"),
            &secret,
            &format!("verify-{suffix}"),
        )
        .await;
    let number = format!("pn-branch-{}", &suffix[..8]);
    c.connect(
        &(t.id.clone(), location.clone()),
        Channel::Whatsapp,
        &number,
        &app,
    )
    .await;
    Tenant {
        id: t.id.clone(),
        location_id: location,
        phone_number_id: number,
        app_secret: secret,
    }
}

/// A second stream service and a second edge on it, sharing Redis and the rest.
async fn second_edge(c: &Cluster, stop: &CancellationToken) -> SocketAddr {
    let stream_l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stream = stream_l.local_addr().expect("addr");
    let config = faro_stream::Config {
        redis_url: crate::cluster::redis_url(),
        key_prefix: c.prefix.clone(),
        subscriber_buffer: 1024,
        history_max_events: 10_000,
        history_max_age_secs: 3600,
        tls: None,
    };
    tokio::spawn(faro_stream::run(config, stream_l, stop.clone()));
    let edge_l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let edge = edge_l.local_addr().expect("addr");
    let config =
        crate::cluster::edge_config(c.conversations, c.ingest, stream, EdgeLimits::default());
    tokio::spawn(faro_edge::run(config, edge_l, stop.clone()));
    edge
}

#[tokio::test]
async fn typing_reaches_the_tenants_other_agents_on_every_edge_and_no_one_else() {
    let c = Cluster::start().await;
    let t = c.tenant("typing").await;
    let branch = second_location(&c, &t).await;
    let other = c.tenant("other").await;
    let main_conv = conversation(&c, &t, "wamid.TY1").await;
    let branch_conv = conversation(&c, &branch, "wamid.TY2").await;
    let other_conv = conversation(&c, &other, "wamid.TY3").await;
    let stop = CancellationToken::new();
    let edge2 = second_edge(&c, &stop).await;

    let mut a = c.websocket(&token("agent-a", &t.id, None)).await;
    let mut b = c.websocket(&token("agent-b", &t.id, None)).await;
    let mut b_far = open(edge2, &token("agent-b-far", &t.id, None)).await;
    let branch_only = [branch.location_id.as_str()];
    let mut limited = c
        .websocket(&token("agent-l", &t.id, Some(&branch_only)))
        .await;
    let mut foreign = c.websocket(&token("agent-c", &other.id, None)).await;
    let mut foreign_peer = c.websocket(&token("agent-c2", &other.id, None)).await;

    send(&mut a, &typing(&main_conv, "start")).await;
    for ws in [&mut b, &mut b_far] {
        let f = expect_typing(ws, "agent-a", &main_conv, "start").await;
        assert_eq!(f["tenant_id"], t.id.as_str());
        assert_eq!(f["location_id"], t.location_id.as_str());
        assert!(f["position"].is_null(), "ephemeral: no position: {f}");
    }
    // B answers: A reads B's frame first, so it never got its own.
    send(&mut b, &typing(&main_conv, "stop")).await;
    expect_typing(&mut a, "agent-b", &main_conv, "stop").await;
    expect_typing(&mut b_far, "agent-b", &main_conv, "stop").await;
    // The agent limited to the branch: its first frame is about the branch,
    // not the main location's conversation typed in before.
    send(&mut a, &typing(&branch_conv, "start")).await;
    expect_typing(&mut limited, "agent-a", &branch_conv, "start").await;
    expect_typing(&mut b, "agent-a", &branch_conv, "start").await;
    expect_typing(&mut b_far, "agent-a", &branch_conv, "start").await;
    // The other tenant hears only its own agents.
    send(&mut foreign_peer, &typing(&other_conv, "start")).await;
    expect_typing(&mut foreign, "agent-c2", &other_conv, "start").await;

    // Never trusted: another tenant's conversation, or one outside the
    // agent's locations, is refused alike, and nothing is relayed.
    send(&mut a, &typing(&other_conv, "start")).await;
    expect_error(&mut a, "conversation_not_found").await;
    send(&mut limited, &typing(&main_conv, "start")).await;
    expect_error(&mut limited, "conversation_not_found").await;
    send(&mut a, &typing(&main_conv, "stop")).await;
    expect_typing(&mut b, "agent-a", &main_conv, "stop").await;
    expect_typing(&mut b_far, "agent-a", &main_conv, "stop").await;
    send(&mut foreign_peer, &typing(&other_conv, "stop")).await;
    expect_typing(&mut foreign, "agent-c2", &other_conv, "stop").await;

    // Not stored: the next message takes the next offset after the two
    // stored before, and history holds the messages alone.
    let (status, _) = c
        .post_signed(
            &whatsapp_text(&t, "wamid.TY4", "15550009999", "again", 1_700_000_100),
            &t.app_secret,
        )
        .await;
    assert_eq!(status, 200);
    let m = b.next_event().await;
    assert_eq!(m["type"], "message.created", "{m}");
    let position = m["position"].as_str().expect("a position");
    assert!(position.ends_with(":3"), "{position}");
    let history = StreamServiceClient::connect(format!("http://{}", c.stream))
        .await
        .expect("stream client")
        .history(HistoryRequest {
            tenant_id: t.id.clone(),
            location_ids: Vec::new(),
            since: Some(Position {
                epoch: position.rsplit_once(':').expect("epoch").0.to_owned(),
                offset: 0,
            }),
            limit: 0,
        })
        .await
        .expect("history")
        .into_inner();
    let kinds: Vec<bool> = history
        .events
        .iter()
        .map(|e| matches!(e.kind, Some(Kind::MessageCreated(_))))
        .collect();
    assert_eq!(kinds, [true, true, true]);
    stop.cancel();
    c.stop().await;
}

#[tokio::test]
async fn ping_gets_a_pong_and_bad_frames_an_error_on_a_socket_that_stays_usable() {
    let c = Cluster::start().await;
    let t = c.tenant("frames").await;
    let mut ws = c.websocket(&token("agent-a", &t.id, None)).await;

    send(&mut ws, &json!({"type": "ping"})).await;
    let pong = ws.next_event().await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert!(pong.get("id").is_none(), "{pong}");
    send(&mut ws, &json!({"type": "ping", "id": "p-1"})).await;
    let pong = ws.next_event().await;
    assert_eq!(
        (pong["type"].as_str(), pong["id"].as_str()),
        (Some("pong"), Some("p-1"))
    );

    ws.0.send(Message::text("{not json")).await.expect("sent");
    expect_error(&mut ws, "invalid_json").await;
    send(&mut ws, &json!({"type": "dance", "id": 7})).await;
    let e = expect_error(&mut ws, "unknown_type").await;
    assert_eq!(e["id"], 7);
    send(&mut ws, &json!({"state": "start"})).await;
    expect_error(&mut ws, "invalid_frame").await;
    send(&mut ws, &typing("not-a-uuid", "start")).await;
    expect_error(&mut ws, "invalid_conversation_id").await;
    send(&mut ws, &typing(&Uuid::new_v4().to_string(), "maybe")).await;
    expect_error(&mut ws, "invalid_state").await;
    ws.0.send(Message::binary(b"{\"type\":\"ping\"}".to_vec()))
        .await
        .expect("sent");
    expect_error(&mut ws, "binary_frame").await;
    send(&mut ws, &typing(&Uuid::new_v4().to_string(), "start")).await;
    expect_error(&mut ws, "conversation_not_found").await;

    // Still open and still fed.
    send(&mut ws, &json!({"type": "ping", "id": 2})).await;
    assert_eq!(ws.next_event().await["id"], 2);
    let (status, _) = c
        .post_signed(
            &whatsapp_text(&t, "wamid.FR1", "15550009999", "hi", 1_700_000_000),
            &t.app_secret,
        )
        .await;
    assert_eq!(status, 200);
    let m = ws.next_event().await;
    assert_eq!(m["message"]["channel_message_id"], "wamid.FR1", "{m}");
    c.stop().await;
}

#[tokio::test]
async fn typing_past_the_limit_is_dropped_with_one_error() {
    let c = Cluster::start_with(Options {
        edge_limits: EdgeLimits {
            ws_typing_max: 3,
            // Far longer than the test: the window never renews during it.
            ws_typing_window_ms: 3_600_000,
            ..EdgeLimits::default()
        },
        ..Options::default()
    })
    .await;
    let t = c.tenant("limited").await;
    let conv = conversation(&c, &t, "wamid.RL1").await;
    let mut a = c.websocket(&token("agent-a", &t.id, None)).await;
    let mut b = c.websocket(&token("agent-b", &t.id, None)).await;
    let mut d = c.websocket(&token("agent-d", &t.id, None)).await;

    let states = ["start", "stop", "start", "stop", "start", "stop"];
    for s in states {
        send(&mut a, &typing(&conv, s)).await;
    }
    send(&mut a, &json!({"type": "ping", "id": "after"})).await;
    // One error for the excess, then the pong: the other two dropped silently.
    expect_error(&mut a, "rate_limited").await;
    assert_eq!(a.next_event().await["id"], "after");
    // B heard the first three, then D's, nothing of A's excess between.
    for s in &states[..3] {
        expect_typing(&mut b, "agent-a", &conv, s).await;
    }
    send(&mut d, &typing(&conv, "start")).await;
    expect_typing(&mut b, "agent-d", &conv, "start").await;
    // The limit is per socket: another socket of the same agent is not limited by it.
    let mut a2 = c.websocket(&token("agent-a", &t.id, None)).await;
    send(&mut a2, &typing(&conv, "stop")).await;
    expect_typing(&mut b, "agent-a", &conv, "stop").await;
    c.stop().await;
}

/// Typing is for WebSockets: long-poll and SSE clients resume by position,
/// and an ephemeral event has none.
#[tokio::test]
async fn typing_never_reaches_server_sent_events_clients() {
    let c = Cluster::start().await;
    let t = c.tenant("sse-typing").await;
    let conv = conversation(&c, &t, "wamid.SS1").await;
    let mut a = c.websocket(&token("agent-a", &t.id, None)).await;
    let mut b = c.websocket(&token("agent-b", &t.id, None)).await;
    // The response starts once the client has joined the live feed.
    let mut sse = c
        .http
        .get(c.url("/api/v1/messages/events"))
        .bearer_auth(token("agent-s", &t.id, None))
        .send()
        .await
        .expect("edge answers");
    assert_eq!(sse.status().as_u16(), 200);
    send(&mut a, &typing(&conv, "start")).await;
    expect_typing(&mut b, "agent-a", &conv, "start").await;
    let (status, _) = c
        .post_signed(
            &whatsapp_text(&t, "wamid.SS2", "15550009999", "next", 1_700_000_100),
            &t.app_secret,
        )
        .await;
    assert_eq!(status, 200);
    let events = crate::live::sse_events(&mut sse, 1).await;
    let (_, kind, data) = &events[0];
    assert_eq!(kind, "message.created", "{data}");
    assert_eq!(data["message"]["channel_message_id"], "wamid.SS2");
    c.stop().await;
}
