//! The script's arithmetic, against a real Redis (`REDIS_URL`, default
//! local), each test under a prefix of its own.

use fred::interfaces::KeysInterface;

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn limiter() -> (Limiter, String) {
    let prefix = format!("faro-edge-test:{}:", uuid::Uuid::new_v4().simple());
    let l = Limiter::new(&redis_url(), &prefix, RateLimits::default()).expect("limiter");
    l.client.init().await.expect("redis");
    (l, prefix)
}

fn per_second(burst: u32) -> Rate {
    Rate {
        per_minute: 60,
        burst,
    }
}

#[tokio::test]
async fn a_burst_is_granted_at_once_then_the_next_waits_one_interval() {
    let (l, p) = limiter().await;
    let key = || format!("{p}k");
    for n in 0..3 {
        let d = l.check(key(), per_second(3), Duration::ZERO, true).await;
        assert_eq!(d.expect("redis"), Decision::Now, "request {n} of the burst");
    }
    match l.check(key(), per_second(3), Duration::ZERO, true).await {
        Ok(Decision::Refused(wait)) => assert!(
            wait <= SECOND && wait > SECOND / 2,
            "the next slot is one interval after the burst, got {wait:?}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let ttl: i64 = l.client.pttl(key()).await.expect("pttl");
    assert!(
        (1..=3_001).contains(&ttl),
        "the key expires once it says nothing: {ttl} ms"
    );
}

#[tokio::test]
async fn looking_spends_nothing() {
    let (l, p) = limiter().await;
    let key = || format!("{p}k");
    for _ in 0..10 {
        let d = l.check(key(), per_second(2), Duration::ZERO, false).await;
        assert_eq!(d.expect("redis"), Decision::Now);
    }
    for _ in 0..2 {
        let d = l.check(key(), per_second(2), Duration::ZERO, true).await;
        assert_eq!(d.expect("redis"), Decision::Now);
    }
    let peek = l.check(key(), per_second(2), Duration::ZERO, false).await;
    assert!(matches!(peek, Ok(Decision::Refused(_))), "{peek:?}");
    let exists: i64 = l.client.exists(key()).await.expect("exists");
    assert_eq!(exists, 1);
}

#[tokio::test]
async fn failures_past_the_budget_put_an_address_in_debt() {
    let (l, _) = limiter().await;
    let ip: IpAddr = "192.0.2.1".parse().expect("ip");
    // Requests that all passed the look before any failed: each still counts.
    for _ in 0..25 {
        l.failed_verification(ip).await;
    }
    match l
        .check(l.ip_key(ip), l.limits.unverified, Duration::ZERO, false)
        .await
    {
        // 100 a minute: 0.6 s each; 5 past a burst of 20 is 3 s of debt.
        Ok(Decision::Refused(wait)) => assert!(wait > SECOND * 2, "in debt: {wait:?}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn over_the_rate_slots_are_reserved_one_interval_apart_up_to_the_horizon() {
    let (l, p) = limiter().await;
    let key = || format!("{p}k");
    let horizon = Duration::from_millis(3_500);
    for _ in 0..2 {
        let d = l.check(key(), per_second(2), horizon, true).await;
        assert_eq!(d.expect("redis"), Decision::Now);
    }
    for k in 1..=3u32 {
        match l.check(key(), per_second(2), horizon, true).await {
            Ok(Decision::Deferred(wait)) => assert!(
                wait <= SECOND * k && wait > SECOND * k - SECOND / 2,
                "slot {k} is {k} intervals ahead, got {wait:?}"
            ),
            other => panic!("slot {k}: expected a deferral, got {other:?}"),
        }
    }
    // The fourth slot (4 s ahead) lies past the horizon: refused, and not
    // reserved, so asking again gives the same answer.
    for _ in 0..2 {
        match l.check(key(), per_second(2), horizon, true).await {
            Ok(Decision::Refused(wait)) => {
                assert!(wait <= SECOND / 2, "granted again in ~0.5 s, got {wait:?}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_budget_refills_with_time_and_keys_are_independent() {
    let (l, p) = limiter().await;
    // One a second: the second call is refused unless a whole second
    // passed between two calls (never, on any machine), and a pause of a
    // little more than that refills it.
    let fast = Rate {
        per_minute: 60,
        burst: 1,
    };
    let a = || format!("{p}a");
    assert_eq!(
        l.check(a(), fast, Duration::ZERO, true)
            .await
            .expect("redis"),
        Decision::Now
    );
    let refused = l
        .check(a(), fast, Duration::ZERO, true)
        .await
        .expect("redis");
    assert!(
        matches!(refused, Decision::Refused(w) if w <= SECOND),
        "{refused:?}"
    );
    assert_eq!(
        l.check(format!("{p}b"), fast, Duration::ZERO, true)
            .await
            .expect("redis"),
        Decision::Now,
        "another key has its own budget"
    );
    tokio::time::sleep(SECOND + Duration::from_millis(50)).await;
    assert_eq!(
        l.check(a(), fast, Duration::ZERO, true)
            .await
            .expect("redis"),
        Decision::Now,
        "one interval later the budget is back"
    );
}

#[tokio::test]
async fn two_clients_share_one_budget() {
    let (one, p) = limiter().await;
    let two = Limiter::new(&redis_url(), &p, RateLimits::default()).expect("limiter");
    two.client.init().await.expect("redis");
    let key = || format!("{p}k");
    let mut granted = 0;
    for n in 0..10 {
        let l = if n % 2 == 0 { &one } else { &two };
        if l.check(key(), per_second(4), Duration::ZERO, true)
            .await
            .expect("redis")
            == Decision::Now
        {
            granted += 1;
        }
    }
    assert_eq!(granted, 4, "the burst is shared, not per client");
}

#[tokio::test]
async fn unlimited_rates_and_an_unconnected_client() {
    let l = Limiter::new(&redis_url(), "faro-edge-test:never:", RateLimits::default())
        .expect("limiter");
    let off = Rate {
        per_minute: 0,
        burst: 0,
    };
    assert_eq!(
        l.check("k".into(), off, Duration::ZERO, true)
            .await
            .expect("no redis needed"),
        Decision::Now
    );
    assert!(
        l.check("k".into(), per_second(1), Duration::ZERO, true)
            .await
            .is_err(),
        "no connection: an error at once, which each caller turns into open or closed"
    );
    // Unverified requests: this replica keeps the failure budget (burst 20).
    let ip: IpAddr = "127.0.0.9".parse().expect("ip");
    for _ in 0..20 {
        assert!(l.admit_unverified(ip).await.is_ok());
        l.failed_verification(ip).await;
    }
    let closed = l.admit_unverified(ip).await.expect_err("budget spent");
    assert_eq!(closed.status, StatusCode::TOO_MANY_REQUESTS);
    let other: IpAddr = "127.0.0.10".parse().expect("ip");
    assert!(l.admit_unverified(other).await.is_ok());
    assert_eq!(
        l.webhook("t", "whatsapp", per_second(1)).await,
        Decision::Now,
        "verified webhooks: open"
    );
    assert!(l.agent("t", "agent").await.is_ok(), "agents: open");
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    for (wait, secs) in [(1, 1), (1_000_000, 1), (1_000_001, 2), (59_999_999, 60)] {
        let e = too_many(Duration::from_micros(wait), "x");
        assert_eq!(
            (e.status, e.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, Some(secs))
        );
    }
}
