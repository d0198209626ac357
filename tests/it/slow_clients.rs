//! No client can slow another: agents who stop reading, connections that never
//! send a byte, and clients that break the WebSocket protocol.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        client::IntoClientRequest,
        http::HeaderValue,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};

use crate::cluster::{Cluster, EdgeLimits, Options, whatsapp_text};

/// A WebSocket whose client never reads, behind a tiny receive buffer.
async fn stuck_socket(c: &Cluster, token: &str) -> WebSocketStream<TcpStream> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let tcp = socket.connect(c.edge).await.expect("connect");
    let mut req = format!("ws://{}/api/v1/messages/stream", c.edge)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("websocket opens");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

/// Reads until the server ends the socket; returns the close code it sent, if any.
async fn ended(mut ws: WebSocketStream<TcpStream>) -> Option<u16> {
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => panic!("the server never dropped a client that stopped reading"),
            frame = ws.next() => match frame {
                Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => return Some(code.into()),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[tokio::test]
async fn agents_who_stop_reading_do_not_delay_other_tenants() {
    let c = Cluster::start_with(Options {
        max_body_bytes: 256 * 1024,
        edge_limits: EdgeLimits {
            ws_write_timeout_ms: 2_000,
            ..EdgeLimits::default()
        },
        ..Options::default()
    })
    .await;
    let a = c.tenant("stuck").await;
    let b = c.tenant("reader").await;
    let token_a = c.token(&a.id, 3600);
    let mut stuck = Vec::new();
    for _ in 0..12 {
        stuck.push(stuck_socket(&c, &token_a).await);
    }
    // A's own agent who does read, concurrently, as a browser would.
    let mut reader_a = c.websocket(&token_a).await;
    let a_total = 120;
    let a_reader = tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < a_total {
            let e = reader_a.next_event().await;
            seen.insert(
                e["message"]["channel_message_id"]
                    .as_str()
                    .map(str::to_owned),
            );
        }
        seen.len()
    });
    let mut reader_b = c.websocket(&c.token(&b.id, 3600)).await;

    let big = "x".repeat(100_000);
    let now = chrono::Utc::now().timestamp();
    let mut latencies = Vec::new();
    for round in 0..12 {
        for i in 0..10 {
            let id = format!("wamid.A{round}-{i}");
            let (status, _) = c
                .post_signed(
                    &whatsapp_text(&a, &id, "15550001", &big, now),
                    &a.app_secret,
                )
                .await;
            assert_eq!(status, 200);
        }
        let id = format!("wamid.B{round}");
        let posted = Instant::now();
        let (status, _) = c
            .post_signed(
                &whatsapp_text(&b, &id, "15550002", "hello", now),
                &b.app_secret,
            )
            .await;
        assert_eq!(status, 200);
        let event = reader_b.next_event().await;
        latencies.push(posted.elapsed());
        assert_eq!(event["message"]["channel_message_id"], id.as_str());
    }
    latencies.sort();
    println!(
        "tenant B, webhook -> WebSocket with 12 stuck sockets of A: p50 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    // A's own reader missed nothing either.
    assert_eq!(a_reader.await.expect("A's reader"), a_total);
    // The stuck sockets were dropped: too slow (4002), or cut off when a write
    // missed its deadline (no close frame could be written).
    for ws in stuck {
        let code = ended(ws).await;
        assert!(matches!(code, None | Some(4002)), "closed with {code:?}");
    }
    c.stop().await;
}

#[tokio::test]
async fn silent_connections_are_closed_and_capped_per_address() {
    let c = Cluster::start_with(Options {
        edge_limits: EdgeLimits {
            max_connections_per_ip: 500,
            first_byte_timeout_ms: 1_500,
            ..EdgeLimits::default()
        },
        ..Options::default()
    })
    .await;
    let t = c.tenant("silent").await;
    // 2,000 connections from one address that never send a byte.
    let mut silent = Vec::new();
    for _ in 0..2000 {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind 127.0.0.2");
        silent.push(socket.connect(c.edge).await.expect("connect"));
    }
    // A valid webhook from another address still gets its 200.
    let body = whatsapp_text(
        &t,
        "wamid.silent-1",
        "15550003",
        "still here",
        1_700_000_000,
    );
    let (status, _) = c.post_signed(&body, &t.app_secret).await;
    assert_eq!(status, 200);
    // Past the per-address cap, connections are told 429 and closed at once;
    // the rest are closed, saying nothing, when their first byte does not come.
    // Every one of them ends.
    let mut refused = 0;
    for mut s in silent {
        let mut said = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut said))
            .await
            .expect("the edge closes a silent connection");
        if n.is_ok() && said.starts_with(b"HTTP/1.1 429 ") {
            refused += 1;
        } else {
            assert!(said.is_empty(), "a timed-out connection is told nothing");
        }
    }
    println!("silent connections refused past the per-address cap: {refused} of 2000");
    assert!(
        refused >= 1500,
        "the per-address cap refuses the excess at once"
    );
    c.stop().await;
}

/// Opens a WebSocket by hand, to send frames a library would refuse to send.
pub(crate) async fn raw_websocket(c: &Cluster, token: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(c.edge).await.expect("connect");
    let req = format!(
        "GET /api/v1/messages/stream HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n",
        c.edge
    );
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.expect("response");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// The close code of the next close frame the server sends.
async fn close_code(tcp: &mut TcpStream) -> u16 {
    let mut head = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(20), tcp.read_exact(&mut head))
        .await
        .expect("a frame within 20 s")
        .expect("frame");
    assert_eq!(head[0], 0x88, "a close frame");
    let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
    tcp.read_exact(&mut payload).await.expect("payload");
    u16::from_be_bytes([payload[0], payload[1]])
}

#[tokio::test]
async fn websocket_protocol_violations_get_their_close_codes() {
    let c = Cluster::start().await;
    let t = c.tenant("proto").await;
    let token = c.token(&t.id, 3600);

    // RFC 6455 §5.1: an unmasked client frame closes with 1002.
    let mut tcp = raw_websocket(&c, &token).await;
    tcp.write_all(&[0x81, 0x02, b'h', b'i'])
        .await
        .expect("write");
    assert_eq!(close_code(&mut tcp).await, 1002);

    // A masked frame is fine; the socket stays open and answers a ping.
    let mut tcp = raw_websocket(&c, &token).await;
    tcp.write_all(&[0x89, 0x80, 1, 2, 3, 4])
        .await
        .expect("ping");
    let mut pong = [0u8; 2];
    tcp.read_exact(&mut pong).await.expect("pong");
    assert_eq!(pong, [0x8a, 0x00]);

    // A message over the limit closes with 1009, not 1000.
    let mut ws = c.websocket(&token).await;
    ws.0.send(Message::text("x".repeat(100 * 1024)))
        .await
        .expect("send");
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.0.next())
            .await
            .expect("an answer within 20 s")
        {
            Some(Ok(Message::Close(Some(f)))) => break f.code,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, CloseCode::Size);
    c.stop().await;
}

#[tokio::test]
async fn oversized_headers_get_a_json_431() {
    let c = Cluster::start().await;
    let mut req = c.http.get(c.url("/healthz"));
    for i in 0..150 {
        req = req.header(format!("x-filler-{i}"), "y");
    }
    let resp = req.send().await.expect("edge answers");
    assert_eq!(resp.status().as_u16(), 431);
    let json: serde_json::Value = resp.json().await.expect("a JSON body");
    assert_eq!(json["error"]["code"], "headers_too_large");
    c.stop().await;
}
