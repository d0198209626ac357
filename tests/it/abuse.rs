//! Abuse from one address (127.0.0.2) while valid traffic flows from another
//! (127.0.0.1): 10,000 idle connections, bodies of 100,000 nested arrays or
//! naming 10,000 accounts, 1 MB WebSocket frames, requests with 10,000
//! headers. Each is refused with a clear status, every valid webhook sent
//! meanwhile gets its 200 and is stored, and the edge's peak resident memory
//! stays under [`EDGE_PEAK_RSS_MIB`].
//!
//! The edge runs as a `faro edge` child process (the other services
//! in-process, as in every test) so that its memory is its own: the bound is
//! on its `VmHWM` (peak RSS since start) in `/proc/<pid>/status`.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::{
    cluster::{Cluster, Tenant, whatsapp_text},
    process::Edge,
};

/// The bound on the edge's peak resident memory under any of these attacks
/// (a debug build; README, "Limits under abuse"). Its baseline is about 25 MiB.
const EDGE_PEAK_RSS_MIB: u64 = 64;

/// Prints the edge's memory and asserts its peak stayed under the bound.
fn assert_memory_bounded(edge: &Edge, attack: &str) {
    let (peak, now) = (edge.status_mib("VmHWM"), edge.status_mib("VmRSS"));
    println!(
        "edge memory after {attack}: peak {peak} MiB, now {now} MiB (bound {EDGE_PEAK_RSS_MIB} MiB)"
    );
    assert!(
        peak < EDGE_PEAK_RSS_MIB,
        "{attack}: the edge's peak RSS {peak} MiB is over {EDGE_PEAK_RSS_MIB} MiB"
    );
}

const ATTACKER: [u8; 4] = [127, 0, 0, 2];

/// An HTTP client whose connections come from the attacker's address.
fn attacker_http() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ATTACKER))
        .build()
        .expect("client")
}

/// A TCP connection from the attacker's address.
async fn attacker_tcp(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((ATTACKER, 0)))
        .expect("bind 127.0.0.2");
    socket.connect(addr).await.expect("connect")
}

/// Reads one HTTP/1.1 response (a head, then `content-length` bytes).
async fn read_response(tcp: &mut TcpStream) -> (u16, serde_json::Value) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.expect("response");
        assert!(
            n > 0,
            "closed before a response: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head[9..12].parse().expect("status code");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("content-length"));
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.expect("body");
        assert!(n > 0, "closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or_default();
    (status, body)
}

type Attack = Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Valid traffic: 10 signed webhooks from 127.0.0.1, each answered 200.
async fn valid_traffic(edge: &Edge, t: &Tenant, tag: &str) -> Vec<String> {
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let ids: Vec<String> = (0..10).map(|i| format!("wamid.{tag}-{i}")).collect();
    for id in &ids {
        let body = whatsapp_text(t, id, "15550009", "valid", now);
        let sig = faro_edge::sign_meta_payload(t.app_secret.as_bytes(), body.as_bytes());
        let resp = http
            .post(format!("http://{}/api/v1/webhooks/whatsapp", edge.addr))
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
            .await
            .expect("the edge answers valid traffic");
        assert_eq!(resp.status().as_u16(), 200, "a valid webhook during {tag}");
    }
    ids
}

/// Every valid webhook is stored, and nothing else was queued.
async fn only_valid_stored(c: &Cluster, ids: &[String], tag: &str) {
    c.drained().await;
    for id in ids {
        assert_eq!(c.message(id).await["channel_message_id"], id.as_str());
    }
    assert_eq!(
        c.jobs_added().await,
        ids.len() as i64,
        "{tag}: only the valid webhooks were queued"
    );
}

/// Runs `attack` from 4 workers until the valid traffic, begun once the first
/// attack was refused, has all been answered (and at least `min_attacks` ran).
/// Each attack asserts its own refusal.
async fn under_attack(
    c: &Cluster,
    edge: &Edge,
    t: &Tenant,
    tag: &str,
    min_attacks: usize,
    attack: Attack,
) {
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(tokio::sync::Notify::new());
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (attack, done, sent, first) =
                (attack.clone(), done.clone(), sent.clone(), first.clone());
            tokio::spawn(async move {
                let mut mine = 0;
                loop {
                    let i = sent.fetch_add(1, Ordering::SeqCst);
                    if done.load(Ordering::SeqCst) && i >= min_attacks {
                        return mine;
                    }
                    attack(i).await;
                    mine += 1;
                    first.notify_one();
                }
            })
        })
        .collect();
    // A hang bound: an attack that is not refused panics its worker (see above).
    tokio::time::timeout(Duration::from_secs(30), first.notified())
        .await
        .unwrap_or_else(|_| panic!("{tag}: no attack was refused as expected within 30 s"));
    let ids = valid_traffic(edge, t, tag).await;
    done.store(true, Ordering::SeqCst);
    let mut attacks = 0;
    for w in workers {
        attacks += w.await.expect("attack worker");
    }
    println!("{tag}: {attacks} attacks refused while 10 valid webhooks passed");
    only_valid_stored(c, &ids, tag).await;
}

#[tokio::test]
async fn ten_thousand_idle_connections_from_one_address() {
    let c = Cluster::start().await;
    let t = c.tenant("idle").await;
    // The default per-address cap (1,000); nothing times out during the test.
    let edge = Edge::start(&c, &["--first-byte-timeout-ms", "120000"]).await;
    // In batches that fit the listen backlog (1,024), each followed by a
    // request from 127.0.0.1 on a new connection: the backlog is first in,
    // first out, so its answer means the batch was accepted, and no SYN is
    // dropped (a dropped SYN costs the client a second before it retries).
    let mut conns = Vec::with_capacity(10_000);
    for _ in 0..10 {
        for _ in 0..1_000 {
            conns.push(attacker_tcp(edge.addr).await);
        }
        let mut tcp = TcpStream::connect(edge.addr).await.expect("connect");
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let (status, json) = read_response(&mut tcp).await;
        assert_eq!((status, json["status"].as_str()), (200, Some("ok")));
    }
    // Every connection waits for what the edge says: a JSON 429 and a close
    // past the cap, nothing (yet) within it.
    let (refused_tx, mut refused_rx) = tokio::sync::mpsc::unbounded_channel();
    let readers: Vec<_> = conns
        .into_iter()
        .map(|mut tcp| {
            let refused_tx = refused_tx.clone();
            tokio::spawn(async move {
                let (status, json) = read_response(&mut tcp).await;
                let mut rest = Vec::new();
                let eof = tcp.read_to_end(&mut rest).await.map(|_| rest.is_empty());
                let _ =
                    refused_tx.send((status, json["error"]["code"].clone(), eof.unwrap_or(true)));
            })
        })
        .collect();
    drop(refused_tx);
    let ids = valid_traffic(&edge, &t, "idle").await;
    only_valid_stored(&c, &ids, "idle").await;
    let mut refused = 0;
    while refused < 9_000 {
        let (status, code, closed) =
            tokio::time::timeout(Duration::from_secs(60), refused_rx.recv())
                .await
                .expect("9,000 refusals within 60 s")
                .expect("a reader");
        assert_eq!(
            (status, code.as_str(), closed),
            (429, Some("too_many_connections"), true)
        );
        refused += 1;
    }
    // The other 1,000 are held, silent: none of their readers has finished.
    let finished = readers.iter().filter(|r| r.is_finished()).count();
    assert_eq!(
        finished, 9_000,
        "exactly the connections past the cap were refused"
    );
    assert!(refused_rx.try_recv().is_err());
    for r in readers {
        r.abort();
    }
    assert_memory_bounded(&edge, "10,000 idle connections");
    c.stop().await;
}

/// A signed POST of `body` to `edge` from the attacker's address, expecting
/// `status` and the error `code`.
async fn post_refused(
    http: &reqwest::Client,
    edge: SocketAddr,
    body: Arc<String>,
    secret: &str,
    status: u16,
    code: &str,
) {
    let sig = faro_edge::sign_meta_payload(secret.as_bytes(), body.as_bytes());
    let resp = http
        .post(format!("http://{edge}/api/v1/webhooks/whatsapp"))
        .header("x-hub-signature-256", sig)
        .body(body.as_bytes().to_vec())
        .send()
        .await
        .expect("the edge answers");
    assert_eq!(resp.status().as_u16(), status);
    let json: serde_json::Value = resp.json().await.expect("a JSON error");
    assert_eq!(json["error"]["code"], code, "{json}");
}

#[tokio::test]
async fn bodies_of_a_hundred_thousand_nested_arrays() {
    let c = Cluster::start().await;
    let t = c.tenant("nested").await;
    let edge = Edge::start(&c, &[]).await;
    // Signed with the tenant's own secret and naming its account: even a
    // verified body this deep is refused (ingest could not parse it).
    let n = 100_000;
    let body = Arc::new(format!(
        r#"{{"entry":[{{"id":"{}","changes":[]}}],"x":{}{}}}"#,
        t.phone_number_id,
        "[".repeat(n),
        "]".repeat(n)
    ));
    let (http, secret, addr) = (attacker_http(), t.app_secret.clone(), edge.addr);
    let attack: Attack = Arc::new(move |_| {
        let (http, body, secret) = (http.clone(), body.clone(), secret.clone());
        Box::pin(
            async move { post_refused(&http, addr, body, &secret, 400, "json_too_deep").await },
        )
    });
    under_attack(&c, &edge, &t, "nested", 40, attack).await;
    assert_memory_bounded(&edge, "100,000 nested arrays");
    c.stop().await;
}

#[tokio::test]
async fn bodies_naming_ten_thousand_accounts() {
    let c = Cluster::start().await;
    let t = c.tenant("accounts").await;
    let edge = Edge::start(&c, &[]).await;
    // One entry whose 10,000 changes each name another number.
    let changes: Vec<String> = (0..10_000)
        .map(|i| format!(r#"{{"value":{{"metadata":{{"phone_number_id":"{i}"}}}}}}"#))
        .collect();
    let accounts = Arc::new(format!(
        r#"{{"entry":[{{"changes":[{}]}}]}}"#,
        changes.join(",")
    ));
    // 10,000 entries, all naming the tenant's one number.
    let entry = format!(r#"{{"id":"{}","changes":[]}}"#, t.phone_number_id);
    let entries = Arc::new(format!(
        r#"{{"entry":[{}]}}"#,
        vec![entry; 10_000].join(",")
    ));
    let (http, secret, addr) = (attacker_http(), t.app_secret.clone(), edge.addr);
    let attack: Attack = Arc::new(move |i| {
        let (http, secret) = (http.clone(), secret.clone());
        let (body, code) = if i % 2 == 0 {
            (accounts.clone(), "too_many_accounts")
        } else {
            (entries.clone(), "too_many_entries")
        };
        Box::pin(async move { post_refused(&http, addr, body, &secret, 400, code).await })
    });
    under_attack(&c, &edge, &t, "accounts", 40, attack).await;
    assert_memory_bounded(&edge, "10,000 accounts");
    c.stop().await;
}

/// A WebSocket opened by hand from the attacker's address (101 read).
async fn attacker_websocket(edge: SocketAddr, token: &str) -> TcpStream {
    let mut tcp = attacker_tcp(edge).await;
    let req = format!(
        "GET /api/v1/messages/stream HTTP/1.1\r\nHost: {edge}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
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

/// A masked client text frame of `len` bytes.
fn client_frame(len: usize) -> Vec<u8> {
    let mut f = vec![0x81];
    match len {
        0..=125 => f.push(0x80 | len as u8),
        126..=65535 => {
            f.push(0x80 | 126);
            f.extend((len as u16).to_be_bytes());
        }
        _ => {
            f.push(0x80 | 127);
            f.extend((len as u64).to_be_bytes());
        }
    }
    f.extend([0, 0, 0, 0]); // a zero mask: the payload goes as is
    f.extend(std::iter::repeat_n(b'x', len));
    f
}

/// The next frame's opcode byte and payload.
async fn read_frame(tcp: &mut tokio::net::tcp::OwnedReadHalf) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(20), tcp.read_exact(&mut head))
        .await
        .expect("a frame within 20 s")
        .expect("a frame");
    let len = match head[1] & 0x7f {
        126 => usize::from(tcp.read_u16().await.expect("length")),
        127 => usize::try_from(tcp.read_u64().await.expect("length")).expect("fits"),
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.expect("its payload");
    (head[0], payload)
}

#[tokio::test]
async fn one_megabyte_websocket_frames() {
    let c = Cluster::start().await;
    let t = c.tenant("frames").await;
    let edge = Edge::start(&c, &["--ws-max-frame-bytes", "8192"]).await;
    let token = c.token(&t.id, 3600);

    // At the bound a frame is read: not JSON, it gets an `error` frame, and
    // the socket stays and answers a ping.
    let (mut rx, mut tx) = attacker_websocket(edge.addr, &token).await.into_split();
    tx.write_all(&client_frame(8192)).await.expect("write");
    tx.write_all(&[0x89, 0x80, 0, 0, 0, 0]).await.expect("ping");
    let (opcode, error) = read_frame(&mut rx).await;
    let error: serde_json::Value = serde_json::from_slice(&error).expect("JSON");
    assert_eq!(
        (opcode, error["type"].as_str()),
        (0x81, Some("error")),
        "{error}"
    );
    assert_eq!(read_frame(&mut rx).await, (0x8a, Vec::new()), "a pong");

    let (addr, token) = (edge.addr, Arc::new(token));
    let attack: Attack = Arc::new(move |_| {
        let token = token.clone();
        Box::pin(async move {
            let (mut rx, mut tx) = attacker_websocket(addr, &token).await.into_split();
            // Written whole and concurrently, as an attacker would; the edge
            // refuses it from its header, so the write may fail midway.
            let writer = tokio::spawn(async move {
                let _ = tx.write_all(&client_frame(1024 * 1024)).await;
                tx
            });
            // The tenant's live events (the valid traffic's) may come first.
            let (opcode, payload) = loop {
                match read_frame(&mut rx).await {
                    (0x81, _) => continue,
                    frame => break frame,
                }
            };
            assert_eq!(opcode, 0x88, "a close frame");
            assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
            drop(writer.await);
        })
    });
    under_attack(&c, &edge, &t, "frames", 40, attack).await;
    assert_memory_bounded(&edge, "1 MB WebSocket frames");
    c.stop().await;
}

#[tokio::test]
async fn requests_with_ten_thousand_headers() {
    let c = Cluster::start().await;
    let t = c.tenant("headers").await;
    let edge = Edge::start(&c, &[]).await;
    let mut request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", edge.addr);
    for i in 0..10_000 {
        request.push_str(&format!("x-filler-{i}: y\r\n"));
    }
    request.push_str("\r\n");
    let (addr, request) = (edge.addr, Arc::new(request));
    let attack: Attack = Arc::new(move |_| {
        let request = request.clone();
        Box::pin(async move {
            let mut tcp = attacker_tcp(addr).await;
            // Past hyper's 512 header slots the answer is hyper's bare 431,
            // sent (and the connection closed) before the whole head is read:
            // the write may fail, and the close may reset the connection.
            let _ = tcp.write_all(request.as_bytes()).await;
            let mut head = [0u8; 12];
            if tcp.read_exact(&mut head).await.is_ok() {
                assert_eq!(&head[9..12], b"431", "{}", String::from_utf8_lossy(&head));
            }
        })
    });
    under_attack(&c, &edge, &t, "headers", 40, attack).await;
    assert_memory_bounded(&edge, "10,000 headers");
    c.stop().await;
}
