//! The WebSocket's authentication happens before the upgrade.

use base64::Engine;
use futures::StreamExt;
use tokio_tungstenite::tungstenite::{
    Error as WsError, client::IntoClientRequest, http::HeaderValue,
};

use crate::cluster::{Cluster, whatsapp_text};

async fn refused(c: &Cluster, token_header: Option<&str>, query: &str) -> (u16, serde_json::Value) {
    let mut req = format!("ws://{}/api/v1/messages/stream{query}", c.edge)
        .into_client_request()
        .expect("request");
    if let Some(t) = token_header {
        req.headers_mut()
            .insert("authorization", HeaderValue::from_str(t).expect("header"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Err(WsError::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            (
                resp.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or_default(),
            )
        }
        Ok(_) => panic!("the upgrade must be refused"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn websocket_requires_a_valid_jwt() {
    let c = Cluster::start().await;
    let a = c.tenant("alpha").await;

    let (status, json) = refused(&c, None, "").await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (401, Some("missing_token"))
    );
    let (status, json) = refused(&c, Some("Bearer not.a.jwt"), "").await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let expired = c.token(&a.id, -3600);
    let (status, json) = refused(&c, Some(&format!("Bearer {expired}")), "").await;
    assert_eq!(
        (status, json["error"]["message"].as_str()),
        (401, Some("token expired"))
    );
    let forged = faro_edge::auth::JwtKeys::new(&[1u8; 32])
        .expect("keys")
        .issue(&faro_edge::auth::Claims {
            sub: "x".into(),
            tenant_id: a.id.parse().expect("uuid"),
            location_ids: None,
            exp: u64::try_from(chrono::Utc::now().timestamp() + 60).unwrap_or_default(),
        })
        .expect("token");
    let (status, _) = refused(&c, Some(&format!("Bearer {forged}")), "").await;
    assert_eq!(status, 401);
    // `alg: none`, unsigned, with otherwise valid claims.
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(serde_json::json!({"sub": "x", "tenant_id": a.id,
                               "exp": chrono::Utc::now().timestamp() + 60}))
    );
    let (status, _) = refused(&c, Some(&format!("Bearer {unsigned}")), "").await;
    assert_eq!(status, 401, "alg none is refused");

    // A browser: the token as a subprotocol, `faro.v1` echoed back.
    let token = c.token(&a.id, 300);
    let mut req = format!("ws://{}/api/v1/messages/stream", c.edge)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("faro.v1, bearer.{token}")).expect("header"),
    );
    let (mut browser, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("faro.v1")
    );
    // Or as a query parameter.
    let req = format!(
        "ws://{}/api/v1/messages/stream?access_token={token}",
        c.edge
    )
    .into_client_request()
    .expect("request");
    let (mut by_query, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");

    let (status, _) = c
        .post_signed(
            &whatsapp_text(&a, "wamid.W1", "1", "hi", 1_700_000_000),
            &a.app_secret,
        )
        .await;
    assert_eq!(status, 200);
    for ws in [&mut browser, &mut by_query] {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(20), ws.next())
            .await
            .expect("event in time")
            .expect("open")
            .expect("frame");
        let event: serde_json::Value =
            serde_json::from_str(frame.to_text().expect("text")).expect("json");
        assert_eq!(event["message"]["channel_message_id"], "wamid.W1");
    }
    c.stop().await;
}

/// The heartbeat with a short interval: a client that answers pings (any
/// reading client does) stays; one that never reads is dropped with 1001
/// after two silent intervals.
#[tokio::test]
async fn a_client_that_never_answers_pings_is_dropped_and_one_that_does_stays() {
    use crate::cluster::{EdgeLimits, Options};
    let c = Cluster::start_with(Options {
        edge_limits: EdgeLimits {
            ws_ping_ms: 200,
            ..EdgeLimits::default()
        },
        ..Options::default()
    })
    .await;
    let a = c.tenant("heartbeat").await;
    let token = c.token(&a.id, 300);
    // Read by hand later: a library client would answer the pings.
    let mut silent = crate::slow_clients::raw_websocket(&c, &token).await;
    let mut alive = c.websocket(&token).await;
    // The live client reads (and so answers every ping) for five intervals.
    let answering = tokio::time::timeout(std::time::Duration::from_millis(1000), async {
        while alive.0.next().await.is_some() {}
    })
    .await;
    assert!(answering.is_err(), "the answering client was not dropped");
    // It still gets events.
    let (status, _) = c
        .post_signed(
            &whatsapp_text(&a, "wamid.HB1", "1", "hi", 1_700_000_000),
            &a.app_secret,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        alive.next_event().await["message"]["channel_message_id"],
        "wamid.HB1"
    );
    // The silent one was closed for its silence (pings, then 1001).
    // One deadline for the whole wait: pings keep coming until the close.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        use tokio::io::AsyncReadExt;
        loop {
            let mut head = [0u8; 2];
            silent.read_exact(&mut head).await.expect("a frame");
            let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
            silent.read_exact(&mut payload).await.expect("its payload");
            if head[0] == 0x88 {
                break (
                    u16::from_be_bytes([payload[0], payload[1]]),
                    String::from_utf8_lossy(&payload[2..]).into_owned(),
                );
            }
            assert_eq!(head[0], 0x89, "only pings before the close");
        }
    });
    let (code, reason) = closed.await.expect("closed within 20 s");
    assert_eq!((code, reason.as_str()), (1001, "ping timeout"));
    c.stop().await;
}
