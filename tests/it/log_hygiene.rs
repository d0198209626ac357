//! What `faro` logs at info level holds no secret, token or message text:
//! a real `faro all` process with JSON logs serves a signed webhook, a forged
//! one, agents connecting with their JWT in a header and in the query string,
//! a long-poll, and admin calls with the right and a wrong token; then its
//! whole log is searched for every secret and text the test used.

use std::time::Duration;

use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    cluster::{JWT_SECRET, TestDb, encryption_keys, whatsapp_text},
    process::{Faro, free_addr, tenant_at, wait_listening},
};

const ADMIN_TOKEN: &str = "admin-token-of-the-log-hygiene-test-4f2a9c";
const WRONG_ADMIN_TOKEN: &str = "wrong-admin-token-of-the-log-hygiene-test-77e1";
const TEXT: &str = "my card number is 4111-1111-1111-1111";

pub(crate) fn jwt(tenant: &str) -> String {
    faro_edge::auth::JwtKeys::new(JWT_SECRET.as_bytes())
        .expect("keys")
        .issue(&faro_edge::auth::Claims {
            sub: "agent-logs".into(),
            tenant_id: tenant.parse().expect("uuid"),
            location_ids: None,
            exp: u64::try_from(chrono::Utc::now().timestamp() + 600).unwrap_or_default(),
        })
        .expect("token")
}

#[tokio::test]
async fn info_logs_hold_no_secret_token_or_message_text() {
    let db = TestDb::create().await;
    let (conv, edge, ingest, stream) = (free_addr(), free_addr(), free_addr(), free_addr());
    let url = |a: std::net::SocketAddr| format!("http://{a}");
    let prefix = format!("faro-logs-{}:", uuid::Uuid::new_v4().simple());
    let _keys = crate::test_db::KeysGuard(prefix.clone());
    let keys = encryption_keys().join(",");
    let faro = Faro::spawn(
        "log-hygiene",
        "all",
        &[
            // Info, plus the per-message events (debug, to keep the hot
            // path cheap): they too must hold nothing secret.
            "--log",
            "info,faro::event=debug",
            "--log-format",
            "json",
            "--edge-listen",
            &edge.to_string(),
            "--ingest-listen",
            &ingest.to_string(),
            "--conversations-listen",
            &conv.to_string(),
            "--stream-listen",
            &stream.to_string(),
            "--ingest-url",
            &url(ingest),
            "--conversations-url",
            &url(conv),
            "--stream-url",
            &url(stream),
            "--database-url",
            &db.owner_url,
            "--encryption-keys",
            &keys,
            "--redis-prefix",
            &prefix,
            "--jwt-secret",
            JWT_SECRET,
            "--admin-token",
            ADMIN_TOKEN,
        ],
    );
    wait_listening(conv).await;
    wait_listening(edge).await;
    let t = tenant_at(&conv.to_string(), "log-hygiene").await;
    let token = jwt(&t.id);
    let http = reqwest::Client::new();

    // An agent with its JWT in the query string, as browsers do.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{edge}/api/v1/messages/stream?access_token={token}"
    ))
    .await
    .expect("socket opens");

    // A signed webhook, and a forged one.
    let body = whatsapp_text(&t, "wamid.LOGS1", "34600000001", TEXT, 1_700_000_000);
    let signature = faro_edge::sign_meta_payload(t.app_secret.as_bytes(), body.as_bytes());
    let webhook = format!("http://{edge}/api/v1/webhooks/whatsapp");
    let post = |sig: String| {
        http.post(&webhook)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body.clone())
            .send()
    };
    assert_eq!(post(signature.clone()).await.expect("post").status(), 200);
    let forged = format!("sha256={}", "ab".repeat(32));
    assert_eq!(post(forged.clone()).await.expect("post").status(), 401);
    let heard = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(frame)) = ws.next().await {
            if let Message::Text(t) = frame
                && t.contains("wamid.LOGS1")
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(heard, Ok(true), "the agent heard the message");

    // A long-poll with the JWT in a header; admin calls, right and wrong.
    let poll = http
        .get(format!("http://{edge}/api/v1/messages/poll?timeout=0"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("poll");
    assert_eq!(poll.status(), 200);
    for (admin, expected) in [(ADMIN_TOKEN, 200), (WRONG_ADMIN_TOKEN, 401)] {
        let r = http
            .get(format!("http://{edge}/api/v1/admin/queue"))
            .bearer_auth(admin)
            .send()
            .await
            .expect("admin");
        assert_eq!(r.status().as_u16(), expected);
    }
    drop(ws);
    let log_path = faro.log.clone();
    drop(faro);

    let log = std::fs::read_to_string(&log_path).expect("the log");
    // The log says what happened (so its silence below is not an empty file).
    assert!(
        log.contains("admin call"),
        "audit lines are there ({log_path})"
    );
    assert!(log.lines().count() > 10, "a real log ({log_path})");
    let secret_key = keys.split_once(':').map(|(_, k)| k).unwrap_or(&keys);
    for (what, secret) in [
        ("the app secret", t.app_secret.as_str()),
        ("the agent's JWT", token.as_str()),
        ("the JWT secret", JWT_SECRET),
        ("the admin token", ADMIN_TOKEN),
        ("a wrong admin token", WRONG_ADMIN_TOKEN),
        ("the message text", TEXT),
        ("the webhook's signature", signature.as_str()),
        ("a forged signature", forged.as_str()),
        ("the encryption key", secret_key),
    ] {
        assert!(
            !log.contains(secret),
            "{what} is in the info log ({log_path})"
        );
    }
    seed_events_are_logged(&log, &t.id, &log_path);
    db.drop_db().await;
}

/// The seed's six event names, each with its fields, as a `event` field of
/// JSON log lines (target `faro::event`).
fn seed_events_are_logged(log: &str, tenant: &str, log_path: &str) {
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["target"] == "faro::event")
        .collect();
    for (event, fields) in [
        ("webhook.received", &["platform"][..]),
        (
            "webhook.verified",
            &["platform", "tenant", "account", "latency_ms"],
        ),
        (
            "webhook.enqueued",
            &["platform", "tenant", "request_id", "job_id", "latency_ms"],
        ),
        (
            "webhook.processed",
            &["platform", "tenant", "request_id", "job_id", "latency_ms"],
        ),
        ("message.stored", &["tenant", "message_id", "latency_ms"]),
        ("message.delivered", &["tenant", "event_id", "latency_ms"]),
    ] {
        let line = lines
            .iter()
            .find(|l| l["fields"]["event"] == event)
            .unwrap_or_else(|| panic!("no {event} event in the log ({log_path})"));
        for f in fields {
            assert!(
                !line["fields"][f].is_null(),
                "{event} has {f}: {line} ({log_path})"
            );
        }
        if fields.contains(&"tenant") {
            assert_eq!(line["fields"]["tenant"], tenant, "{event}'s tenant");
        }
        if fields.contains(&"platform") {
            assert_eq!(line["fields"]["platform"], "whatsapp", "{event}'s platform");
        }
    }
}
