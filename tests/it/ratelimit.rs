//! Rate limits kept in Redis: a tenant over its webhook rate is paced (its
//! deliveries scheduled for later, still 200) or, past the horizon, refused
//! with 429 while other tenants pass; two edges on one Redis share a budget;
//! agents over their rate get 429. The flood of failed verifications is in
//! `ratelimit_flood.rs`.

use std::time::Duration;

use faro_edge::{Rate, RateLimits};
use fred::interfaces::SortedSetsInterface;
use tokio_util::sync::CancellationToken;

use crate::cluster::{
    Cluster, EdgeLimits, JWT_SECRET, Options, Tenant, edge_config, whatsapp_text,
};

fn limits(webhook_max_defer_ms: u64) -> RateLimits {
    RateLimits {
        webhook_max_defer_ms,
        ..RateLimits::default()
    }
}

/// `faro admin set-rate-limit` for `tenant`, as an operator runs it (not
/// blocking the runtime the services run on).
async fn set_rate(c: &Cluster, tenant: &Tenant, per_minute: u32, burst: u32) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_faro"))
        .args(["admin", "set-rate-limit", "--tenant", &tenant.id])
        .args(["--per-minute", &per_minute.to_string()])
        .args(["--burst", &burst.to_string()])
        .args([
            "--conversations-url",
            &format!("http://{}", c.conversations),
        ])
        .env("FARO_PLAINTEXT", "true")
        .output()
        .await
        .expect("faro admin runs");
    assert!(
        out.status.success(),
        "set-rate-limit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(printed["webhook_per_minute"], per_minute);
}

/// Posts `n` distinct signed messages for `tenant` to `edge`; the answers'
/// (status, `status` field or error code, `Retry-After`).
async fn send(
    c: &Cluster,
    edge: std::net::SocketAddr,
    tenant: &Tenant,
    tag: &str,
    n: usize,
) -> Vec<(u16, String, Option<String>)> {
    let mut answers = Vec::new();
    for i in 0..n {
        let body = whatsapp_text(
            tenant,
            &format!("wamid.{tag}-{i}"),
            "15550001",
            "hi",
            1_700_000_000 + i as i64,
        );
        let sig = faro_edge::sign_meta_payload(tenant.app_secret.as_bytes(), body.as_bytes());
        let resp = c
            .http
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
        let json: serde_json::Value = resp.json().await.expect("json body");
        let what = json["status"]
            .as_str()
            .or(json["error"]["code"].as_str())
            .unwrap_or_default()
            .to_owned();
        answers.push((status, what, retry_after));
    }
    answers
}

fn count(answers: &[(u16, String, Option<String>)], status: u16, what: &str) -> usize {
    answers
        .iter()
        .filter(|(s, w, _)| *s == status && w == what)
        .count()
}

async fn stored(c: &Cluster, tenant: &Tenant) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE tenant_id = $1::uuid")
        .bind(&tenant.id)
        .fetch_one(&c.db.owner)
        .await
        .expect("count")
}

/// Waits (bounded) until `tenant` has `n` messages stored.
async fn wait_stored(c: &Cluster, tenant: &Tenant, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stored(c, tenant).await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} messages stored for {}",
            tenant.id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored(c, tenant).await, n);
}

#[tokio::test]
async fn a_tenant_over_its_rate_is_paced_while_another_passes() {
    let c = Cluster::start_with(Options {
        rate_limits: limits(60_000),
        ..Options::default()
    })
    .await;
    let (noisy, quiet) = (c.tenant("noisy").await, c.tenant("quiet").await);
    // 120 a minute (one per 500 ms), 5 at once: the last slot is 7.5 s ahead.
    set_rate(&c, &noisy, 120, 5).await;

    let answers = send(&c, c.edge, &noisy, "noisy", 20).await;
    assert_eq!(count(&answers, 200, "queued"), 5, "the burst: {answers:?}");
    assert_eq!(
        count(&answers, 200, "deferred"),
        15,
        "the rest, paced: {answers:?}"
    );
    let scheduled: i64 = c
        .redis
        .zcard(faro_ingest::Keys::new(&c.prefix).retry)
        .await
        .expect("zcard");
    assert!(
        scheduled > 0,
        "deferred deliveries wait in ingest's schedule"
    );

    // The quiet tenant, on the default rate (burst 100), is not paced at all.
    let answers = send(&c, c.edge, &quiet, "quiet", 20).await;
    assert_eq!(count(&answers, 200, "queued"), 20, "{answers:?}");

    // Nothing is lost: every delivery is stored, the paced ones when due.
    wait_stored(&c, &quiet, 20).await;
    wait_stored(&c, &noisy, 20).await;
    c.stop().await;
}

#[tokio::test]
async fn past_the_horizon_a_delivery_is_refused_with_retry_after() {
    let c = Cluster::start_with(Options {
        rate_limits: limits(2_500),
        ..Options::default()
    })
    .await;
    let (noisy, quiet) = (c.tenant("noisy").await, c.tenant("quiet").await);
    // One a second, 2 at once: slots 1 s and 2 s ahead can be reserved.
    set_rate(&c, &noisy, 60, 2).await;
    let answers = send(&c, c.edge, &noisy, "noisy", 6).await;
    assert_eq!(count(&answers, 200, "queued"), 2, "{answers:?}");
    assert_eq!(count(&answers, 200, "deferred"), 2, "{answers:?}");
    assert_eq!(count(&answers, 429, "rate_limited"), 2, "{answers:?}");
    for (status, _, retry_after) in &answers {
        if *status == 429 {
            let secs: u64 = retry_after
                .as_deref()
                .expect("Retry-After")
                .parse()
                .expect("seconds");
            assert!((1..=60).contains(&secs), "Retry-After {secs}");
        }
    }
    let answers = send(&c, c.edge, &quiet, "quiet", 10).await;
    assert_eq!(count(&answers, 200, "queued"), 10, "{answers:?}");
    wait_stored(&c, &noisy, 4).await;
    wait_stored(&c, &quiet, 10).await;
    c.stop().await;
}

#[tokio::test]
async fn two_edges_on_one_redis_share_a_tenants_budget() {
    // No deferral: what is over the budget is refused, so it can be counted.
    let c = Cluster::start_with(Options {
        rate_limits: limits(0),
        ..Options::default()
    })
    .await;
    let t = c.tenant("shared").await;
    // One a minute, 6 at once: nothing refills during the test.
    set_rate(&c, &t, 1, 6).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let second = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let mut config = edge_config(c.conversations, c.ingest, c.stream, EdgeLimits::default());
    config.key_prefix = c.prefix.clone();
    config.rate_limits = limits(0);
    let edge = tokio::spawn(faro_edge::run(config, listener, stop.clone()));

    let mut answers = Vec::new();
    for i in 0..6 {
        answers.extend(send(&c, c.edge, &t, &format!("a{i}"), 1).await);
        answers.extend(send(&c, second, &t, &format!("b{i}"), 1).await);
    }
    assert_eq!(
        count(&answers, 200, "queued"),
        6,
        "one budget of 6: {answers:?}"
    );
    assert_eq!(count(&answers, 429, "rate_limited"), 6, "{answers:?}");
    wait_stored(&c, &t, 6).await;
    stop.cancel();
    edge.await.expect("join").expect("second edge runs");
    c.stop().await;
}

#[tokio::test]
async fn an_agent_over_its_rate_gets_429_on_rest_and_websocket() {
    let c = Cluster::start_with(Options {
        rate_limits: RateLimits {
            agent: Rate {
                per_minute: 1,
                burst: 3,
            },
            ..RateLimits::default()
        },
        ..Options::default()
    })
    .await;
    let t = c.tenant("agents").await;
    let poll = |token: String| {
        let c = &c;
        async move {
            let resp = c
                .http
                .get(c.url("/api/v1/messages/poll?timeout=0"))
                .bearer_auth(token)
                .send()
                .await
                .expect("edge answers");
            let status = resp.status().as_u16();
            let retry_after = resp.headers().get("retry-after").cloned();
            let json: serde_json::Value = resp.json().await.expect("json");
            (status, retry_after, json)
        }
    };
    let one = c.token(&t.id, 3600);
    for _ in 0..2 {
        assert_eq!(poll(one.clone()).await.0, 200);
    }
    // The third of the burst is a WebSocket connect.
    drop(c.websocket(&one).await);
    let (status, retry_after, json) = poll(one.clone()).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{json}"
    );
    assert!(retry_after.is_some(), "Retry-After is set");
    let refused = tokio_tungstenite::connect_async(
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/api/v1/messages/stream?access_token={one}",
            c.edge
        ))
        .expect("request"),
    )
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429)
        }
        other => panic!(
            "expected 429 before the upgrade, got {:?}",
            other.map(|_| ())
        ),
    }
    // Another agent of the same tenant has its own budget.
    let other = faro_edge::auth::JwtKeys::new(JWT_SECRET.as_bytes())
        .expect("keys")
        .issue(&faro_edge::auth::Claims {
            sub: "agent-2".into(),
            tenant_id: t.id.parse().expect("uuid"),
            location_ids: None,
            exp: u64::try_from(chrono::Utc::now().timestamp() + 3600).unwrap_or_default(),
        })
        .expect("token");
    assert_eq!(poll(other).await.0, 200);
    c.stop().await;
}

#[tokio::test]
async fn an_operator_sets_and_clears_a_tenants_rate_and_the_routes_carry_it() {
    use faro_proto::conversations::v1::{
        Channel, ResolveChannelAccountsRequest, TenantRateLimit,
        conversations_service_client::ConversationsServiceClient,
    };
    let c = Cluster::start().await;
    let t = c.tenant("operated").await;
    let mut admin = c.admin().await;
    let rate = |per_minute, burst| TenantRateLimit {
        tenant_id: t.id.clone(),
        webhook_per_minute: per_minute,
        webhook_burst: burst,
    };
    for (bad, why) in [
        (rate(100, 0), "a rate without a burst"),
        (rate(0, 5), "a burst without a rate"),
        (rate(60_000_001, 1), "more than one a microsecond"),
    ] {
        let e = admin.set_tenant_rate_limit(bad).await.expect_err(why);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{why}");
    }
    let mut unknown = rate(100, 10);
    unknown.tenant_id = uuid::Uuid::new_v4().to_string();
    let e = admin
        .set_tenant_rate_limit(unknown)
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), tonic::Code::NotFound);

    let mut api = ConversationsServiceClient::connect(format!("http://{}", c.conversations))
        .await
        .expect("conversations");
    let mut resolved = async || {
        let r = api
            .resolve_channel_accounts(ResolveChannelAccountsRequest {
                channel: Channel::Whatsapp.into(),
                external_account_ids: vec![t.phone_number_id.clone()],
            })
            .await
            .expect("resolve")
            .into_inner()
            .routes
            .remove(0);
        (r.webhook_per_minute, r.webhook_burst)
    };
    assert_eq!(resolved().await, (0, 0), "the default at first");
    set_rate(&c, &t, 300, 30).await;
    assert_eq!(resolved().await, (300, 30));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_faro"))
        .args(["admin", "set-rate-limit", "--tenant", &t.id, "--default"])
        .args([
            "--conversations-url",
            &format!("http://{}", c.conversations),
        ])
        .env("FARO_PLAINTEXT", "true")
        .output()
        .await
        .expect("faro admin runs");
    assert!(out.status.success());
    assert_eq!(resolved().await, (0, 0), "back to the default");
    c.stop().await;
}
