//! The edge's diagnostics (`/api/v1/webhooks/{health,stats,recent}`), from
//! outside: figures that two edges and ingest recorded into one Redis prefix
//! are read back through either edge; the health check follows a Redis of
//! the test's own down and up; only the admin token opens the routes.

use std::{net::SocketAddr, time::Duration};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    cluster::{Cluster, EdgeLimits, Options, Tenant, edge_config, redis_url, whatsapp_text},
    metrics::senderless,
    process::wait_listening,
    redis_restart::{OwnRedis, free_port},
};

const ADMIN_TOKEN: &str = "faro-diagnostics-admin-token-0123456789ab";

/// A second edge process's worth (in-process) in front of `c`'s services,
/// with the admin token, recording into `c`'s prefix on `redis`.
async fn second_edge(c: &Cluster, redis: &str, stop: &CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = edge_config(c.conversations, c.ingest, c.stream, EdgeLimits::default());
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.key_prefix = c.prefix.clone();
    config.redis_url = redis.into();
    tokio::spawn(faro_edge::run_with_metrics(
        config,
        listener,
        Some(metrics),
        stop.clone(),
    ));
    wait_listening(addr).await;
    addr
}

async fn get(c: &Cluster, edge: SocketAddr, path: &str, auth: Option<&str>) -> (u16, Value) {
    let mut req = c.http.get(format!("http://{edge}{path}"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.expect("the edge answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn admin(c: &Cluster, edge: SocketAddr, path: &str) -> (u16, Value) {
    get(c, edge, path, Some(&format!("Bearer {ADMIN_TOKEN}"))).await
}

/// Asks until `done` holds, at most 30 s (figures are flushed once a second):
/// a bound on a hang, not a timing claim. Returns the last answer.
async fn until(
    c: &Cluster,
    edge: SocketAddr,
    path: &str,
    done: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let mut last = (0, Value::Null);
    for _ in 0..300 {
        last = admin(c, edge, path).await;
        if done(last.0, &last.1) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// Posts `body` signed with `secret` to the WhatsApp webhook of `edge`.
async fn post(c: &Cluster, edge: SocketAddr, body: &str, secret: Option<&str>) -> u16 {
    let mut req = c
        .http
        .post(format!("http://{edge}/api/v1/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(s) = secret {
        req = req.header(
            "x-hub-signature-256",
            faro_edge::sign_meta_payload(s.as_bytes(), body.as_bytes()),
        );
    }
    req.send().await.expect("edge answers").status().as_u16()
}

fn text(t: &Tenant, n: u32) -> String {
    whatsapp_text(
        t,
        &format!("wamid.DIAG{n}"),
        "16505550000",
        &format!("diagnostic secret text {n}"),
        1_700_000_000 + i64::from(n),
    )
}

#[tokio::test]
async fn stats_and_recent_count_what_two_edges_and_ingest_saw() {
    let c = Cluster::start().await;
    let t = c.tenant("diag").await;
    let stop = CancellationToken::new();
    let other = second_edge(&c, &redis_url(), &stop).await;
    // The cluster's edge: two valid, one bad signature.
    for n in 1..=2 {
        assert_eq!(
            post(&c, c.edge, &text(&t, n), Some(&t.app_secret)).await,
            200
        );
    }
    assert_eq!(
        post(&c, c.edge, &text(&t, 3), Some("not-the-secret")).await,
        401
    );
    // The second edge: one valid, one poison (dead-lettered in part), one bad
    // signature, one without a signature.
    assert_eq!(
        post(&c, other, &text(&t, 4), Some(&t.app_secret)).await,
        200
    );
    assert_eq!(
        post(&c, other, &senderless(&t), Some(&t.app_secret)).await,
        200
    );
    assert_eq!(
        post(&c, other, &text(&t, 5), Some("not-the-secret")).await,
        401
    );
    assert_eq!(post(&c, other, &text(&t, 6), None).await, 401);

    let path = "/api/v1/webhooks/stats?platform=whatsapp&hours=2";
    let (status, stats) = until(&c, other, path, |_, v| {
        let w = &v["platforms"]["whatsapp"];
        w["received"] == 7 && w["processed"] == 4 && w["dead_letters"]["partial"] == 1
    })
    .await;
    assert_eq!(status, 200, "{stats}");
    let w = &stats["platforms"]["whatsapp"];
    assert_eq!(w["received"], 7, "{stats}");
    assert_eq!(w["verified"], 4, "{stats}");
    assert_eq!(w["accepted"], 4, "{stats}");
    assert_eq!(w["rejected"]["invalid_signature"], 2, "{stats}");
    assert_eq!(w["rejected"]["missing_signature"], 1, "{stats}");
    assert_eq!(w["processed"], 4, "{stats}");
    assert_eq!(w["dead_letters"]["partial"], 1, "{stats}");
    assert_eq!(w["latency_ms"]["edge"]["count"], 4, "{stats}");
    assert!(w["latency_ms"]["edge"]["p99"].as_u64().is_some(), "{stats}");
    assert!(
        w["latency_ms"]["stored"]["count"].as_u64() >= Some(3),
        "{stats}"
    );
    assert_eq!(stats["total"]["received"], 7, "only WhatsApp was asked for");
    assert_eq!(stats["window"]["hours"], 2);
    // Both edges read the same figures.
    let (_, all) = admin(&c, other, "/api/v1/webhooks/stats").await;
    assert_eq!(all["platforms"]["whatsapp"]["received"], 7, "{all}");
    assert_eq!(all["platforms"]["ycloud"]["received"], 0, "{all}");

    let (status, recent) = until(&c, other, "/api/v1/webhooks/recent?limit=100", |_, v| {
        v["attempts"].as_array().is_some_and(|a| a.len() >= 7)
    })
    .await;
    assert_eq!(status, 200, "{recent}");
    let attempts = recent["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 7, "{recent}");
    let accepted = attempts.iter().filter(|a| a["outcome"] == "accepted");
    for a in accepted {
        assert_eq!(a["account"], t.phone_number_id.as_str(), "{a}");
        assert_eq!(a["tenant"], t.id.as_str(), "{a}");
        assert!(a["bytes"].as_u64() > Some(0), "{a}");
        assert!(a["timings_ms"]["total"].as_f64().is_some(), "{a}");
        assert!(a["request_id"].is_string(), "{a}");
    }
    let (_, rejected) = admin(&c, other, "/api/v1/webhooks/recent?status=rejected&limit=2").await;
    let rejected = rejected["attempts"].as_array().expect("attempts").clone();
    assert_eq!(rejected.len(), 2, "limit holds");
    assert!(
        rejected
            .iter()
            .all(|a| a["status"] == 401 && a["reason"].is_string() && a["tenant"].is_null()),
        "{rejected:?}"
    );
    let (_, three) = admin(&c, other, "/api/v1/webhooks/recent?status=rejected").await;
    assert_eq!(three["attempts"].as_array().map(Vec::len), Some(3));
    // No body, no secret, no signature in what an operator reads.
    let shown = recent.to_string();
    for secret in ["diagnostic secret text", t.app_secret.as_str(), "sha256="] {
        assert!(!shown.contains(secret), "{secret:?} shown: {shown}");
    }

    // Parameters are checked and named.
    for (query, named) in [
        ("stats?hours=0", "hours"),
        ("stats?hours=25", "hours"),
        ("stats?platform=telegram", "platform"),
        ("stats?colour=red", "colour"),
        ("recent?limit=0", "limit"),
        ("recent?limit=many", "limit"),
        ("recent?status=lost", "status"),
    ] {
        let (status, body) = admin(&c, other, &format!("/api/v1/webhooks/{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{query}: {body}");
    }
    stop.cancel();
    c.stop().await;
}

#[tokio::test]
async fn only_the_admin_token_opens_the_diagnostics() {
    let c = Cluster::start().await;
    let t = c.tenant("diag-auth").await;
    let stop = CancellationToken::new();
    let edge = second_edge(&c, &redis_url(), &stop).await;
    let jwt = format!("Bearer {}", c.token(&t.id, 300));
    for route in ["health", "stats", "recent"] {
        let path = format!("/api/v1/webhooks/{route}");
        for (what, auth) in [
            ("no credential", None),
            (
                "a wrong token",
                Some("Bearer not-the-admin-token-0123456789abcdef"),
            ),
            ("an agent JWT", Some(jwt.as_str())),
        ] {
            let (status, body) = get(&c, edge, &path, auth).await;
            assert_eq!(status, 401, "{path} with {what}: {body}");
            assert!(body["error"]["code"].is_string(), "{body}");
        }
        // The cluster's edge has no admin token: the routes do not exist.
        let (status, body) = get(&c, c.edge, &path, Some(&format!("Bearer {ADMIN_TOKEN}"))).await;
        assert_eq!(status, 404, "{path} without a configured token: {body}");
        assert_eq!(body["error"]["code"], "not_found");
        let (status, _) = admin(&c, edge, &path).await;
        assert_eq!(status, 200, "{path} with the admin token");
    }
    stop.cancel();
    c.stop().await;
}

#[tokio::test]
async fn health_is_503_while_redis_is_down_and_200_once_it_is_back() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let redis = OwnRedis::start(port).await;
    let c = Cluster::start_with(Options {
        redis_url: Some(url.clone()),
        ..Options::default()
    })
    .await;
    let stop = CancellationToken::new();
    let edge = second_edge(&c, &url, &stop).await;
    let path = "/api/v1/webhooks/health";
    // A worker is known to Redis from its first job.
    let t = c.tenant("diag-health").await;
    assert_eq!(post(&c, edge, &text(&t, 1), Some(&t.app_secret)).await, 200);
    let (status, body) = until(&c, edge, path, |s, v| {
        s == 200 && v["components"]["queue"]["workers_alive"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    for part in [
        "redis",
        "postgres",
        "queue",
        "ingest",
        "conversations",
        "stream",
    ] {
        assert_eq!(body["components"][part]["status"], "ok", "{part}: {body}");
    }

    drop(redis); // SIGKILL
    let (status, body) = until(&c, edge, path, |s, _| s == 503).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "down", "{body}");
    assert_eq!(body["components"]["redis"]["status"], "down", "{body}");
    assert!(body["components"]["redis"]["error"].is_string(), "{body}");
    assert_eq!(body["components"]["postgres"]["status"], "ok", "{body}");

    let _redis = OwnRedis::start(port).await;
    let (status, body) = until(&c, edge, path, |s, _| s == 200).await;
    assert_eq!(status, 200, "back once Redis is: {body}");
    assert_eq!(body["components"]["redis"]["status"], "ok", "{body}");
    stop.cancel();
    c.stop().await;
}
