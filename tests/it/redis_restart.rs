//! Redis restarted without persistence, so everything in it is lost. Agents
//! are told events may have been missed (close 4001: reload, reconnect), and
//! ingest recreates its consumer group and keeps taking webhooks. The test
//! kills a Redis of its own, so other tests are not disturbed.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::cluster::{Cluster, Options, whatsapp_text};

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Redis of the test's own; killed when dropped, even if the test fails.
pub(crate) struct OwnRedis(Child);

impl OwnRedis {
    /// Without persistence: a restart loses everything.
    pub(crate) async fn start(port: u16) -> Self {
        Self::start_with(port, &["--save", "", "--appendonly", "no"]).await
    }

    /// With an append-only file in `dir`, written through on every write:
    /// what it held survives a kill.
    pub(crate) async fn start_persistent(port: u16, dir: &str) -> Self {
        let args = [
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            dir,
        ];
        Self::start_with(port, &args).await
    }

    /// With the given settings (persistence, a directory) on `port`.
    pub(crate) async fn start_with(port: u16, settings: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(settings)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = Self(child);
        // Listening is not ready: while it replays its append-only file,
        // Redis accepts connections but answers LOADING to every command.
        for _ in 0..800 {
            if answers_ping(port).await {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not answer PING on {port}");
    }
}

/// Whether Redis on `port` answers PING with PONG (not LOADING, not silence).
async fn answers_ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if conn.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut reply)).await;
    matches!(read, Ok(Ok(n)) if reply[..n].starts_with(b"+PONG"))
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_redis_restart_is_announced_to_agents_and_ingest_recovers() {
    let port = free_port();
    let redis = OwnRedis::start(port).await;
    let c = Cluster::start_with(Options {
        redis_url: Some(format!("redis://127.0.0.1:{port}")),
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let mut ws = c.websocket(&c.token(&a.id, 300)).await;
    let (status, _) = c
        .post_signed(
            &whatsapp_text(&a, "wamid.R1", "1", "before", 1_700_000_000),
            &a.app_secret,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        ws.next_event().await["message"]["channel_message_id"],
        "wamid.R1"
    );

    drop(redis); // SIGKILL: nothing in it survives
    let redis = OwnRedis::start(port).await;

    // Whatever was published while Redis was away is gone: the agent is told.
    let close = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = ws.0.next().await {
            if let Ok(Message::Close(Some(frame))) = frame {
                return Some(u16::from(frame.code));
            }
        }
        None
    })
    .await
    .expect("the agent hears within 30 s");
    assert_eq!(close, Some(4001));

    // Ingest finds its group gone (NOGROUP), recreates it and carries on.
    let body = whatsapp_text(&a, "wamid.R2", "1", "after", 1_700_000_100);
    let mut status = 0;
    for _ in 0..200 {
        status = c.post_signed(&body, &a.app_secret).await.0;
        if status == 200 {
            break;
        }
        assert_eq!(
            status, 503,
            "while Redis reconnects the edge asks Meta to retry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
    c.drained().await;
    let ids: Vec<String> = sqlx::query_scalar("SELECT channel_message_id FROM messages ORDER BY 1")
        .fetch_all(&c.db.owner)
        .await
        .expect("ids");
    assert_eq!(ids, ["wamid.R1", "wamid.R2"]);
    c.stop().await;
    drop(redis);
}

/// `faro all` as a real process; killed when dropped, even if the test fails.
struct Faro(Child);

impl Drop for Faro {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The serving status grpc.health.v1 reports for the whole server at `addr`.
async fn health(addr: &str) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(r.into_inner().status)
}

fn agent_token(tenant: &str) -> String {
    faro_edge::auth::JwtKeys::new(crate::cluster::JWT_SECRET.as_bytes())
        .expect("keys")
        .issue(&faro_edge::auth::Claims {
            sub: "agent-1".into(),
            tenant_id: tenant.parse().expect("uuid"),
            location_ids: None,
            exp: u64::try_from(chrono::Utc::now().timestamp() + 300).unwrap_or_default(),
        })
        .expect("token")
}

/// Redis is down when `faro all` starts: the process stays up, the edge
/// answers webhooks 503 (so Meta retries) rather than refusing connections,
/// ingest and stream report NOT_SERVING, and once a Redis listens the same
/// process takes webhooks and delivers live events without a restart.
#[tokio::test]
async fn faro_starts_without_redis_and_serves_once_it_comes() {
    use tonic_health::pb::health_check_response::ServingStatus;

    let db = crate::cluster::TestDb::create().await;
    let redis_port = free_port();
    let [edge, ingest, conversations, stream] =
        [(); 4].map(|()| format!("127.0.0.1:{}", free_port()));
    let log = format!(
        "{}/{}-all-no-redis.log",
        env!("CARGO_TARGET_TMPDIR"),
        db.name
    );
    let keys = crate::cluster::encryption_keys().join(",");
    let mut faro = Faro(
        Command::new(env!("CARGO_BIN_EXE_faro"))
            .arg("all")
            .env("FARO_PLAINTEXT", "true")
            .args(["--edge-listen", &edge, "--ingest-listen", &ingest])
            .args([
                "--conversations-listen",
                &conversations,
                "--stream-listen",
                &stream,
            ])
            .args(["--ingest-url", &format!("http://{ingest}")])
            .args(["--conversations-url", &format!("http://{conversations}")])
            .args(["--stream-url", &format!("http://{stream}")])
            .args(["--database-url", &db.owner_url, "--encryption-keys", &keys])
            .args(["--jwt-secret", crate::cluster::JWT_SECRET])
            .args(["--redis-url", &format!("redis://127.0.0.1:{redis_port}")])
            .env("RUST_LOG", "info")
            // As in-process tests: the rate limits have their own tests.
            .env("FARO_WEBHOOK_RATE_PER_MIN", "0")
            .env("FARO_UNVERIFIED_RATE_PER_MIN", "0")
            .env("FARO_AGENT_RATE_PER_MIN", "0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_or_else(|_| Stdio::null(), Stdio::from))
            .spawn()
            .expect("faro all starts"),
    );
    let mut up = false;
    for _ in 0..400 {
        if let Ok(Some(status)) = faro.0.try_wait() {
            panic!("faro all exited without Redis ({status}); see {log}");
        }
        if tokio::net::TcpStream::connect(&edge).await.is_ok()
            && tokio::net::TcpStream::connect(&conversations).await.is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "faro all listens without Redis; see {log}");

    // A tenant with a WhatsApp number: conversations needs no Redis.
    let a = crate::process::tenant_at(&conversations.to_string(), "no-redis").await;
    let (tenant, secret) = (a.id.clone(), a.app_secret.clone());
    let http = reqwest::Client::new();
    let post = |id: &str| {
        let body = whatsapp_text(&a, id, "34600000001", "hola", 1_700_000_000);
        let sig = faro_edge::sign_meta_payload(secret.as_bytes(), body.as_bytes());
        let req = http
            .post(format!("http://{edge}/api/v1/webhooks/whatsapp"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body);
        async move {
            let r = req.send().await.expect("the edge answers");
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };

    let (status, json) = post("wamid.NOREDIS1").await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{json}"
    );
    for addr in [&ingest, &stream] {
        assert_eq!(
            health(addr).await,
            Some(ServingStatus::NotServing as i32),
            "{addr} without Redis"
        );
    }
    let refused = tokio_tungstenite::connect_async(format!(
        "ws://{edge}/api/v1/messages/stream?access_token={}",
        agent_token(&tenant)
    ))
    .await
    .expect_err("no live events without Redis");
    assert!(
        matches!(&refused, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 503),
        "{refused}"
    );
    assert!(faro.0.try_wait().expect("wait").is_none(), "still running");

    let redis = OwnRedis::start(redis_port).await;
    let mut status = 0;
    for _ in 0..600 {
        status = post("wamid.NOREDIS1").await.0;
        if status == 200 {
            break;
        }
        assert_eq!(
            status, 503,
            "until Redis is reached, Meta is asked to retry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "see {log}");
    for addr in [&ingest, &stream] {
        let mut serving = None;
        for _ in 0..400 {
            serving = health(addr).await;
            if serving == Some(ServingStatus::Serving as i32) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(serving, Some(ServingStatus::Serving as i32), "{addr}");
    }

    // Live events flow too: the stream subscribed to the late Redis.
    let url = format!(
        "ws://{edge}/api/v1/messages/stream?access_token={}",
        agent_token(&tenant)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the WebSocket opens");
    assert_eq!(post("wamid.NOREDIS2").await.0, 200);
    let event = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(frame) = ws.next().await {
            if let Ok(Message::Text(t)) = frame {
                let v: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                if v["message"]["channel_message_id"] == "wamid.NOREDIS2" {
                    return v;
                }
            }
        }
        panic!("socket closed");
    })
    .await
    .expect("the event within 20 s");
    assert_eq!(event["type"], "message.created");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&db.owner)
        .await
        .expect("count");
    assert!(stored >= 1);
    drop(faro);
    drop(redis);
    db.drop_db().await;
}
