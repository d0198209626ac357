//! Live delivery without gaps at the edge: resuming a WebSocket from a
//! position, long-poll and Server-Sent Events, all with the same promise.

use std::time::Duration;

use futures::StreamExt;
use tokio_tungstenite::tungstenite::{
    Message, client::IntoClientRequest, http::HeaderValue, protocol::frame::coding::CloseCode,
};

use crate::cluster::{Cluster, Tenant, Ws, whatsapp_text};

async fn post(c: &Cluster, t: &Tenant, id: &str) {
    let body = whatsapp_text(t, id, "15550001111", "hola", 1_749_416_100);
    assert_eq!(c.post_signed(&body, &t.app_secret).await.0, 200);
}

fn offset_of(e: &serde_json::Value) -> u64 {
    let p = e["position"].as_str().expect("a position");
    p.rsplit_once(':')
        .and_then(|(_, o)| o.parse().ok())
        .expect("<epoch>:<offset>")
}

fn id_of(e: &serde_json::Value) -> String {
    e["message"]["channel_message_id"]
        .as_str()
        .expect("a message event")
        .to_owned()
}

async fn websocket_since(c: &Cluster, token: &str, since: &str) -> Ws {
    let mut req = format!("ws://{}/api/v1/messages/stream?since={since}", c.edge)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket opens");
    Ws(ws)
}

#[tokio::test]
async fn a_reconnecting_agent_gets_exactly_what_it_missed_then_live_events() {
    let c = Cluster::start().await;
    let t = c.tenant("resume").await;
    let token = c.token(&t.id, 3600);
    let mut first = c.websocket(&token).await;
    post(&c, &t, "wamid.R0").await;
    let seen = first.next_event().await;
    let position = seen["position"]
        .as_str()
        .expect("events carry a position")
        .to_owned();
    drop(first);

    for i in 1..=5 {
        post(&c, &t, &format!("wamid.R{i}")).await;
    }
    c.drained().await;
    let mut again = websocket_since(&c, &token, &position).await;
    // Two workers store in parallel: the order is the order of publishing,
    // which the offsets give; the set is exactly what was missed.
    let (mut ids, mut offsets) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let e = again.next_event().await;
        offsets.push(offset_of(&e));
        ids.push(id_of(&e));
    }
    ids.sort();
    assert_eq!(
        ids,
        ["wamid.R1", "wamid.R2", "wamid.R3", "wamid.R4", "wamid.R5"]
    );
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");
    assert_eq!(offsets[0], offset_of(&seen) + 1, "right after the position");
    post(&c, &t, "wamid.R6").await;
    assert_eq!(
        id_of(&again.next_event().await),
        "wamid.R6",
        "then live, no duplicate"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_position_history_does_not_hold_is_not_recovered() {
    let c = Cluster::start().await;
    let t = c.tenant("stale").await;
    let token = c.token(&t.id, 3600);
    post(&c, &t, "wamid.S0").await;
    c.drained().await;
    let mut ws = websocket_since(&c, &token, "another-epoch:3").await;
    let frame = tokio::time::timeout(Duration::from_secs(20), ws.0.next())
        .await
        .expect("an answer within 20 s");
    match frame {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Library(4001)),
        other => panic!("expected close 4001, got {other:?}"),
    }
    // A malformed position is a 400 before any upgrade.
    let resp = c
        .http
        .get(c.url("/api/v1/messages/poll?since=nonsense"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("edge answers");
    assert_eq!(resp.status().as_u16(), 400);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["error"]["code"], "invalid_position");
    c.stop().await;
}

async fn poll(c: &Cluster, token: &str, query: &str) -> (u16, serde_json::Value) {
    let resp = c
        .http
        .get(c.url(&format!("/api/v1/messages/poll{query}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("edge answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn long_poll_answers_at_once_with_waiting_events_and_empty_after_its_timeout() {
    let c = Cluster::start().await;
    let t = c.tenant("poll").await;
    let token = c.token(&t.id, 3600);

    // No position yet: the first event to come, with its position.
    let waiting = {
        let (c_http, url, token) = (
            c.http.clone(),
            c.url("/api/v1/messages/poll?timeout=20"),
            token.clone(),
        );
        tokio::spawn(async move {
            let r = c_http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("edge");
            r.json::<serde_json::Value>().await.expect("json")
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    post(&c, &t, "wamid.P0").await;
    let first = waiting.await.expect("poll");
    assert_eq!(id_of(&first["events"][0]), "wamid.P0");
    let p0 = first["position"].as_str().expect("position").to_owned();

    for i in 1..=3 {
        post(&c, &t, &format!("wamid.P{i}")).await;
    }
    c.drained().await;
    let (status, got) = poll(&c, &token, &format!("?since={p0}&timeout=20")).await;
    assert_eq!(status, 200);
    let events = got["events"].as_array().expect("events");
    let mut ids: Vec<String> = events.iter().map(id_of).collect();
    ids.sort();
    assert_eq!(ids, ["wamid.P1", "wamid.P2", "wamid.P3"]);
    let offsets: Vec<u64> = events.iter().map(offset_of).collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");
    let p3 = got["position"].as_str().expect("position").to_owned();
    assert_eq!(
        events[2]["position"],
        p3.as_str(),
        "the last event's position"
    );

    // Nothing new: empty after the timeout, same position to poll from.
    let (status, got) = poll(&c, &token, &format!("?since={p3}&timeout=1")).await;
    assert_eq!(
        (status, got["events"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    assert_eq!(got["position"], p3.as_str());

    let (status, got) = poll(&c, &token, "?since=gone:1&timeout=1").await;
    assert_eq!(
        (status, got["error"]["code"].as_str()),
        (409, Some("not_recovered"))
    );
    let (status, _) = poll(&c, &token, "?timeout=31").await;
    assert_eq!(status, 400);
    let resp = c
        .http
        .get(c.url("/api/v1/messages/poll"))
        .send()
        .await
        .expect("edge");
    assert_eq!(resp.status().as_u16(), 401);
    c.stop().await;
}

/// Reads SSE events (id, event, data) until `n` have arrived (also used by `typing`).
pub async fn sse_events(
    resp: &mut reqwest::Response,
    n: usize,
) -> Vec<(String, String, serde_json::Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
            .await
            .expect("an event within 20 s")
            .expect("stream open")
            .expect("a chunk");
        buf.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.to_owned();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).expect("data is JSON"));
                }
            }
            if let Some(d) = data {
                out.push((id, event, d));
            }
        }
    }
    out
}

#[tokio::test]
async fn server_sent_events_resume_with_last_event_id() {
    let c = Cluster::start().await;
    let t = c.tenant("sse").await;
    let token = c.token(&t.id, 3600);
    let mut live = c
        .http
        .get(c.url("/api/v1/messages/events"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("edge answers");
    assert_eq!(live.status().as_u16(), 200);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    post(&c, &t, "wamid.E0").await;
    let got = sse_events(&mut live, 1).await;
    let (id0, kind, data) = &got[0];
    assert_eq!(
        (kind.as_str(), id_of(data)),
        ("message.created", "wamid.E0".into())
    );
    assert_eq!(data["position"], id0.as_str());
    drop(live);

    post(&c, &t, "wamid.E1").await;
    post(&c, &t, "wamid.E2").await;
    c.drained().await;
    let mut resumed = c
        .http
        .get(c.url("/api/v1/messages/events"))
        .bearer_auth(&token)
        .header("last-event-id", id0.as_str())
        .send()
        .await
        .expect("edge answers");
    post(&c, &t, "wamid.E3").await;
    let got = sse_events(&mut resumed, 3).await;
    let mut ids: Vec<String> = got.iter().map(|(_, _, d)| id_of(d)).collect();
    ids[..2].sort();
    assert_eq!(ids, ["wamid.E1", "wamid.E2", "wamid.E3"]);
    let offsets: Vec<u64> = got.iter().map(|(_, _, d)| offset_of(d)).collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");

    let stale = c
        .http
        .get(c.url("/api/v1/messages/events"))
        .bearer_auth(&token)
        .header("last-event-id", "gone:9")
        .send()
        .await
        .expect("edge answers");
    assert_eq!(stale.status().as_u16(), 409);
    c.stop().await;
}

#[tokio::test]
async fn two_edges_over_two_stream_services_each_deliver_every_event_once() {
    let c = Cluster::start().await;
    let t = c.tenant("twice").await;
    let stop = tokio_util::sync::CancellationToken::new();
    // A second stream service and a second edge on it, sharing Redis and the rest.
    let stream_l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stream2 = stream_l.local_addr().expect("addr");
    let stream_config = faro_stream::Config {
        redis_url: crate::cluster::redis_url(),
        key_prefix: c.prefix.clone(),
        subscriber_buffer: 1024,
        history_max_events: 10_000,
        history_max_age_secs: 3600,
        tls: None,
    };
    let s2 = tokio::spawn(faro_stream::run(stream_config, stream_l, stop.clone()));
    let edge_l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let edge2 = edge_l.local_addr().expect("addr");
    let config = crate::cluster::edge_config(
        c.conversations,
        c.ingest,
        stream2,
        crate::cluster::EdgeLimits::default(),
    );
    let e2 = tokio::spawn(faro_edge::run(config, edge_l, stop.clone()));

    let token = c.token(&t.id, 3600);
    let mut on_first = c.websocket(&token).await;
    let mut req = format!("ws://{edge2}/api/v1/messages/stream")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let mut on_second = loop {
        // The second stream service subscribes to Redis in the background.
        match tokio_tungstenite::connect_async(req.clone()).await {
            Ok((ws, _)) => break Ws(ws),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    for i in 0..10 {
        post(&c, &t, &format!("wamid.T{i}")).await;
    }
    let expected: Vec<String> = (0..10).map(|i| format!("wamid.T{i}")).collect();
    for ws in [&mut on_first, &mut on_second] {
        let mut got = Vec::new();
        for _ in 0..10 {
            got.push(id_of(&ws.next_event().await));
        }
        got.sort();
        assert_eq!(got, expected, "every event once, on each edge");
    }
    // And nothing more: a last event comes next, not a duplicate.
    post(&c, &t, "wamid.T10").await;
    assert_eq!(id_of(&on_first.next_event().await), "wamid.T10");
    assert_eq!(id_of(&on_second.next_event().await), "wamid.T10");
    stop.cancel();
    let _ = e2.await;
    let _ = s2.await;
    c.stop().await;
}
