//! Behind a load balancer every connection comes from the balancer. The edge
//! believes `X-Forwarded-For` from the proxies it is told to trust, and only
//! from them: each client behind them keeps its own failure budget, and a
//! client that writes the header itself gains nothing.

use faro_edge::{Rate, RateLimits, TrustedProxies};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpSocket,
};

use crate::{
    cluster::{Cluster, whatsapp_text},
    ratelimit_flood::{client_from, edge_with},
};

/// Three failures, then 429 (one more a minute).
const FAILURES: Rate = Rate {
    per_minute: 1,
    burst: 3,
};

fn trusting_loopback(config: &mut faro_edge::Config) {
    let net = TrustedProxies::parse_net("127.0.0.1").expect("net");
    config.trusted_proxies = TrustedProxies::new(vec![net]);
}

/// Waits until the edge's rate limiter counts in Redis. It connects in the
/// background; until then each failure is counted in the edge's own memory,
/// and a budget split between the two let a fourth failure through (seen
/// once, under CI load). Probes from 127.0.0.3, whose budget nothing else
/// reads, until its count shows up in Redis.
async fn limiter_on_redis(c: &Cluster, edge: std::net::SocketAddr) {
    use fred::interfaces::KeysInterface;
    let key = format!("{}{{ip:127.0.0.3}}:rl:unverified", c.prefix);
    for _ in 0..100 {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            bad_post(edge, "127.0.0.3", ""),
        )
        .await
        .expect("the edge answers a probe within 5 s");
        let n: i64 = c.redis.exists(&key).await.expect("redis");
        if n == 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the edge's rate limiter never reached Redis");
}

/// Posts a webhook with a wrong signature from `from`, forwarded for `xff`.
async fn bad_post(edge: std::net::SocketAddr, from: &str, xff: &str) -> u16 {
    // No account is connected under this id: a failed verification either way.
    let t = crate::cluster::Tenant {
        id: String::new(),
        location_id: String::new(),
        phone_number_id: "pn-proxied".into(),
        app_secret: String::new(),
    };
    client_from(from)
        .post(format!("http://{edge}/api/v1/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .header("x-forwarded-for", xff)
        .body(whatsapp_text(
            &t,
            "wamid.p",
            "15550001",
            "hi",
            1_700_000_000,
        ))
        .send()
        .await
        .expect("edge answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_failure_budget() {
    let c = Cluster::start().await;
    let limits = RateLimits {
        unverified: FAILURES,
        ..crate::configs::rates_off()
    };
    let (edge, stop, task) = edge_with(
        &c,
        c.conversations,
        crate::cluster::redis_url(),
        limits,
        trusting_loopback,
    )
    .await;

    limiter_on_redis(&c, edge).await;

    // Through the proxy (127.0.0.1): the client wrote 198.51.100.1 itself,
    // the proxy appended the address it saw, 203.0.113.7.
    let mut seven = Vec::new();
    for _ in 0..5 {
        seven.push(bad_post(edge, "127.0.0.1", "198.51.100.1, 203.0.113.7").await);
    }
    assert_eq!(seven, [401, 401, 401, 429, 429]);
    // Another client behind the same proxy still has its whole budget, even
    // claiming the same spoofed address on the left.
    assert_eq!(
        bad_post(edge, "127.0.0.1", "198.51.100.1, 203.0.113.8").await,
        401
    );

    // Not a proxy (127.0.0.2): its header is ignored, so changing it does
    // not buy a fresh budget.
    let mut direct = Vec::new();
    for i in 0..5 {
        let xff = format!("203.0.113.{}", 100 + i);
        direct.push(bad_post(edge, "127.0.0.2", &xff).await);
    }
    assert_eq!(direct, [401, 401, 401, 429, 429]);

    stop.cancel();
    task.await.expect("edge");
    c.stop().await;
}

/// Opens a connection from `from` and asks for `/healthz` on it: the status.
async fn health_on_new_connection(
    edge: std::net::SocketAddr,
    from: &str,
) -> (tokio::net::TcpStream, u16) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind");
    let mut s = socket.connect(edge).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: faro\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.expect("status line");
    let status = std::str::from_utf8(&buf[9..12])
        .expect("utf-8")
        .parse()
        .expect("status");
    (s, status)
}

#[tokio::test]
async fn a_trusted_proxys_connections_are_not_capped_per_address() {
    let c = Cluster::start().await;
    let (edge, stop, task) = edge_with(
        &c,
        c.conversations,
        crate::cluster::redis_url(),
        crate::configs::rates_off(),
        |config| {
            trusting_loopback(config);
            config.max_connections_per_ip = 2;
        },
    )
    .await;
    let mut held = Vec::new();
    let mut proxy = Vec::new();
    for _ in 0..5 {
        let (s, status) = health_on_new_connection(edge, "127.0.0.1").await;
        proxy.push(status);
        held.push(s);
    }
    assert_eq!(proxy, [200; 5], "the proxy's connections are all served");
    let mut direct = Vec::new();
    for _ in 0..3 {
        let (s, status) = health_on_new_connection(edge, "127.0.0.2").await;
        direct.push(status);
        held.push(s);
    }
    assert_eq!(direct, [200, 200, 429], "anyone else is capped at 2");
    drop(held);
    stop.cancel();
    task.await.expect("edge");
    c.stop().await;
}
