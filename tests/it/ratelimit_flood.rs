//! A flood of webhooks that fail verification, from one address: past its
//! budget it is refused before any work, so the routing lookups it costs are
//! bounded (counted by a proxy in front of conversations), while valid
//! traffic from another address passes. And without Redis the edge still
//! starts, lets verified webhooks through and bounds failures on its own.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use faro_edge::{Rate, RateLimits};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::cluster::{Cluster, EdgeLimits, Options, edge_config, whatsapp_text};

/// A gRPC proxy in front of `upstream` counting `ResolveChannelAccounts` calls.
async fn counting_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{upstream}"))
        .expect("endpoint")
        .connect_lazy();
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counted = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (channel, calls) = (channel.clone(), counted.clone());
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    if req.uri().path().ends_with("/ResolveChannelAccounts") {
                        calls.fetch_add(1, Ordering::SeqCst);
                    }
                    channel.clone().oneshot(req.map(tonic::body::Body::new))
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, calls)
}

pub(crate) fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

/// Posts `body` with signature `sig` to `edge`: (status, error code, Retry-After).
pub(crate) async fn post(
    http: &reqwest::Client,
    edge: SocketAddr,
    body: String,
    sig: &str,
) -> (u16, String, Option<String>) {
    let resp = http
        .post(format!("http://{edge}/api/v1/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .expect("edge answers");
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let json: serde_json::Value = resp.json().await.unwrap_or_default();
    let code = json["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code, retry_after)
}

/// An edge of the test's own in front of the cluster's ingest and stream.
async fn edge(
    c: &Cluster,
    conversations: SocketAddr,
    redis_url: String,
    limits: RateLimits,
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    edge_with(c, conversations, redis_url, limits, |_| {}).await
}

/// [`edge`], with the rest of its configuration set by `tweak`.
pub(crate) async fn edge_with(
    c: &Cluster,
    conversations: SocketAddr,
    redis_url: String,
    limits: RateLimits,
    tweak: impl FnOnce(&mut faro_edge::Config),
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = edge_config(conversations, c.ingest, c.stream, EdgeLimits::default());
    config.key_prefix = c.prefix.clone();
    config.redis_url = redis_url;
    config.rate_limits = limits;
    tweak(&mut config);
    let stop = CancellationToken::new();
    let t = stop.clone();
    let task = tokio::spawn(async move {
        faro_edge::run(config, listener, t)
            .await
            .expect("edge runs");
    });
    (addr, stop, task)
}

const FLOOD: usize = 400;
const FLOOD_CONCURRENCY: usize = 8;
/// The default burst; a slower refill than the default's (100 a minute), so
/// that the bound below hardly depends on how long the flood takes.
const FAILURES: Rate = Rate {
    per_minute: 60,
    burst: 20,
};

#[tokio::test]
async fn a_bad_signature_flood_is_cut_off_before_any_lookup_and_valid_traffic_passes() {
    let c = Cluster::start().await;
    let t = c.tenant("flooded").await;
    let (proxy, calls) = counting_proxy(c.conversations).await;
    let limits = RateLimits {
        unverified: FAILURES,
        ..RateLimits::default()
    };
    let (edge_addr, stop, task) = edge(&c, proxy, crate::cluster::redis_url(), limits).await;
    let valid = client_from("127.0.0.1");
    // Warm the route cache with one valid delivery, so that what follows
    // counts only the flood's lookups.
    let body = whatsapp_text(&t, "wamid.valid-warm", "15550001", "hi", 1_700_000_000);
    let sig = faro_edge::sign_meta_payload(t.app_secret.as_bytes(), body.as_bytes());
    assert_eq!(post(&valid, edge_addr, body, &sig).await.0, 200);
    let before = calls.load(Ordering::SeqCst);
    let started = std::time::Instant::now();

    // The flood: each body names an account nobody connected (a lookup each,
    // which the route cache cannot answer), with a signature that is wrong.
    let flood = tokio::spawn({
        let http = client_from("127.0.0.2");
        async move {
            let mut answers = Vec::new();
            let mut handles = Vec::new();
            for w in 0..FLOOD_CONCURRENCY {
                let http = http.clone();
                handles.push(tokio::spawn(async move {
                    let mut answers = Vec::new();
                    for i in (w..FLOOD).step_by(FLOOD_CONCURRENCY) {
                        let body = format!(
                            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"W","changes":[{{"field":"messages","value":{{"metadata":{{"phone_number_id":"pn-junk-{i}"}}}}}}]}}]}}"#
                        );
                        let sig = format!("sha256={}", "0".repeat(64));
                        answers.push(post(&http, edge_addr, body, &sig).await);
                    }
                    answers
                }));
            }
            for h in handles {
                answers.extend(h.await.expect("flooder"));
            }
            answers
        }
    });
    // Meanwhile, valid deliveries from another address.
    let mut valid_answers = Vec::new();
    for i in 0..30 {
        let body = whatsapp_text(
            &t,
            &format!("wamid.valid-{i}"),
            "15550001",
            "hi",
            1_700_000_001 + i,
        );
        let sig = faro_edge::sign_meta_payload(t.app_secret.as_bytes(), body.as_bytes());
        valid_answers.push(post(&valid, edge_addr, body, &sig).await.0);
    }
    let flood = flood.await.expect("flood");
    let lookups = calls.load(Ordering::SeqCst) - before;
    let refilled = usize::try_from(started.elapsed().as_secs()).unwrap_or(usize::MAX) + 1;

    assert!(
        valid_answers.iter().all(|s| *s == 200),
        "valid traffic passes: {valid_answers:?}"
    );
    let failed = flood.iter().filter(|(s, ..)| *s == 401).count();
    let limited: Vec<_> = flood.iter().filter(|(s, ..)| *s == 429).collect();
    assert_eq!(failed + limited.len(), FLOOD, "only 401 or 429: {flood:?}");
    assert!(
        limited
            .iter()
            .all(|(_, code, ra)| code == "rate_limited" && ra.is_some()),
        "429 with a JSON error and Retry-After"
    );
    // The burst, the requests already past the check when it ran out (one per
    // flooding connection), what refills while the flood lasts (one a
    // second), and one for the valid traffic's cache (not expected).
    let bound = FAILURES.burst as usize + FLOOD_CONCURRENCY + refilled + 1;
    assert!(
        failed <= bound && lookups <= bound,
        "{failed} failures worked on and {lookups} lookups made for {FLOOD} bad requests (bound {bound})"
    );
    println!(
        "flood of {FLOOD}: {failed} worked on, {} refused at once, {lookups} lookups",
        limited.len()
    );
    stop.cancel();
    task.await.expect("edge");
    c.stop().await;
}

#[tokio::test]
async fn without_redis_the_edge_starts_passes_verified_webhooks_and_bounds_failures_itself() {
    let c = Cluster::start_with(Options::default()).await;
    let t = c.tenant("no-redis").await;
    // A port where no Redis listens.
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_url = format!("redis://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let limits = RateLimits {
        webhook: Rate {
            per_minute: 1,
            burst: 1,
        },
        unverified: Rate {
            per_minute: 1,
            burst: 3,
        },
        ..RateLimits::default()
    };
    let (edge_addr, stop, task) = edge(&c, c.conversations, dead_url, limits).await;
    let http = client_from("127.0.0.1");
    // Verified: let through (open), even past the tenant's burst of 1.
    for i in 0..3 {
        let body = whatsapp_text(
            &t,
            &format!("wamid.nr-{i}"),
            "15550001",
            "hi",
            1_700_000_000 + i,
        );
        let sig = faro_edge::sign_meta_payload(t.app_secret.as_bytes(), body.as_bytes());
        assert_eq!(
            post(&http, edge_addr, body, &sig).await.0,
            200,
            "delivery {i}"
        );
    }
    // Failing verification: this edge keeps the budget of 3 itself.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let body = whatsapp_text(&t, "wamid.nr-bad", "15550001", "hi", 1_700_000_000);
        let sig = format!("sha256={}", "0".repeat(64));
        statuses.push(post(&http, edge_addr, body, &sig).await.0);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429]);
    stop.cancel();
    task.await.expect("edge");
    c.stop().await;
}
