//! Redis dies mid-run and comes back from its append-only file. Real
//! processes: a Redis of the test's own (AOF, `appendfsync always`),
//! `faro conversations`, and `faro run` with the edge, ingest and stream.
//!
//! 5,000 signed webhooks are posted while Redis is SIGKILLed and restarted.
//! While it is down the edge answers 503, never 200; every webhook answered
//! 200 is stored exactly once and heard by an agent. Conversations is frozen
//! (SIGSTOP) from just before the kill until an agent's socket is open again,
//! so that many acknowledged jobs are still in Redis when it dies (what the
//! AOF must keep), and so that store calls time out and are retried while
//! conversations still holds them (each then commits unheard: see
//! `late_commit`). The socket opened before the kill lives through it: the
//! stream service resumes from the history the AOF kept.
//! Finally ingest, started on a durable Redis, did not warn about it (see
//! `redis_check` for one that does).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    cluster::{JWT_SECRET, TestDb, encryption_keys, whatsapp_text},
    process::{Faro, free_addr, tenant_at, wait_listening},
    redis_restart::{OwnRedis, free_port},
};

const WEBHOOKS: usize = 5_000;
const IN_FLIGHT: usize = 16;
const UP: u8 = 0;
const DOWN: u8 = 1;
const BACK: u8 = 2;
use crate::redis_check::LOSSY_WARNING;

fn agent_url(edge: &str, tenant: &str) -> String {
    let token = faro_edge::auth::JwtKeys::new(JWT_SECRET.as_bytes())
        .expect("keys")
        .issue(&faro_edge::auth::Claims {
            sub: "agent-1".into(),
            tenant_id: tenant.parse().expect("uuid"),
            location_ids: None,
            exp: u64::try_from(chrono::Utc::now().timestamp() + 600).unwrap_or_default(),
        })
        .expect("token");
    format!("ws://{edge}/api/v1/messages/stream?access_token={token}")
}

/// What one agent socket heard: message ids, and its close code.
#[derive(Default)]
struct Heard {
    ids: std::sync::Mutex<HashSet<String>>,
    closed: tokio::sync::Notify,
    close_code: std::sync::Mutex<Option<u16>>,
}

/// Opens a socket (retrying while the edge answers 503) and records what it hears.
async fn listen(url: String) -> Arc<Heard> {
    let mut opened = None;
    for _ in 0..600 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await {
            opened = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ws = opened.expect("the socket opens within 30 s");
    let heard = Arc::new(Heard::default());
    let h = heard.clone();
    tokio::spawn(async move {
        while let Some(frame) = ws.next().await {
            match frame {
                Ok(Message::Text(t)) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                    if let Some(id) = v["message"]["channel_message_id"].as_str() {
                        h.ids.lock().expect("lock").insert(id.to_owned());
                    }
                }
                Ok(Message::Close(c)) => {
                    *h.close_code.lock().expect("lock") = c.map(|c| u16::from(c.code));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        h.closed.notify_waiters();
        h.closed.notify_one();
    });
    heard
}

struct Outcome {
    status: u16,
    started: u8,
    ended: u8,
}

async fn durable_redis(port: u16, dir: &str) -> OwnRedis {
    OwnRedis::start_with(
        port,
        &[
            "--dir",
            dir,
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
        ],
    )
    .await
}

#[tokio::test]
async fn redis_killed_mid_run_loses_no_acknowledged_webhook_and_the_edge_says_503_meanwhile() {
    let dir = format!(
        "{}/redis-dies-{}",
        env!("CARGO_TARGET_TMPDIR"),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::create_dir_all(&dir).expect("redis dir");
    let port = free_port();
    let redis_url = format!("redis://127.0.0.1:{port}");
    let mut redis = Some(durable_redis(port, &dir).await);
    let db = TestDb::create().await;
    let (conv, edge, ingest, stream) = (free_addr(), free_addr(), free_addr(), free_addr());
    let conversations = Faro::spawn(
        "redis-dies",
        "conversations",
        &[
            "--conversations-listen",
            &conv.to_string(),
            "--database-url",
            &db.owner_url,
            "--encryption-keys",
            &encryption_keys().join(","),
        ],
    );
    let url = |a: std::net::SocketAddr| format!("http://{a}");
    let front = Faro::spawn(
        "redis-dies",
        "run",
        &[
            "--service",
            "edge",
            "--service",
            "ingest",
            "--service",
            "stream",
            "--edge-listen",
            &edge.to_string(),
            "--ingest-listen",
            &ingest.to_string(),
            "--stream-listen",
            &stream.to_string(),
            "--ingest-url",
            &url(ingest),
            "--conversations-url",
            &url(conv),
            "--stream-url",
            &url(stream),
            "--redis-url",
            &redis_url,
            "--redis-prefix",
            "faro-dies:",
            "--jwt-secret",
            JWT_SECRET,
            // The route stays cached while conversations is frozen.
            "--route-cache-ms",
            "600000",
            "--claim-idle-ms",
            "5000",
            // claim-idle-ms must exceed a store pass (two calls and a pause).
            "--store-deadline-ms",
            "2000",
        ],
    );
    wait_listening(conv).await;
    wait_listening(edge).await;
    let a = tenant_at(&conv.to_string(), "redis-dies").await;
    let first_socket = listen(agent_url(&edge.to_string(), &a.id)).await;

    let phase = Arc::new(AtomicU8::new(UP));
    let acked = Arc::new(AtomicUsize::new(0));
    let refused_while_down = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let post = {
        let (http, a, phase, acked, refused) = (
            http.clone(),
            a.clone(),
            phase.clone(),
            acked.clone(),
            refused_while_down.clone(),
        );
        let endpoint = format!("http://{edge}/api/v1/webhooks/whatsapp");
        move |id: String| {
            let body = whatsapp_text(&a, &id, "34600000001", "hola", 1_700_000_000);
            let sig = faro_edge::sign_meta_payload(a.app_secret.as_bytes(), body.as_bytes());
            let req = http
                .post(&endpoint)
                .header("content-type", "application/json")
                .header("x-hub-signature-256", sig)
                .body(body);
            let (phase, acked, refused) = (phase.clone(), acked.clone(), refused.clone());
            async move {
                let started = phase.load(Ordering::SeqCst);
                let status = req.send().await.map_or(0, |r| r.status().as_u16());
                let ended = phase.load(Ordering::SeqCst);
                if status == 200 {
                    acked.fetch_add(1, Ordering::SeqCst);
                } else if started == DOWN && ended == DOWN {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                (
                    id,
                    Outcome {
                        status,
                        started,
                        ended,
                    },
                )
            }
        }
    };
    let ids: Vec<String> = (0..WEBHOOKS).map(|n| format!("wamid.RD{n:05}")).collect();
    // The last third waits until Redis is down: the edge answers thousands of
    // webhooks a second, so without this gate the run can be
    // over before the kill and nothing is ever posted while Redis is down.
    let gated = {
        let (post, phase) = (post.clone(), phase.clone());
        move |(n, id): (usize, String)| {
            let (post, phase) = (post.clone(), phase.clone());
            async move {
                if n >= 2 * WEBHOOKS / 3 {
                    while phase.load(Ordering::SeqCst) == UP {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                post(id).await
            }
        }
    };
    let poster = tokio::spawn(
        futures::stream::iter(ids.clone().into_iter().enumerate())
            .map(gated)
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<_>>(),
    );

    // Mid-run: freeze conversations, kill Redis, let the edge refuse a
    // while, bring Redis back, reopen a socket, thaw conversations.
    while acked.load(Ordering::SeqCst) < WEBHOOKS / 3 {
        assert!(!poster.is_finished(), "the run ended before the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    conversations.signal("STOP");
    // Lets a store answered just before the freeze publish and ack.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(redis.take()); // SIGKILL, reaped
    phase.store(DOWN, Ordering::SeqCst);
    let down_at = std::time::Instant::now();
    // Each refusal waits out ingest's 5 s Redis command timeout; on a loaded
    // machine (the whole suite in parallel on two cores) that takes a while.
    // The bound only turns a hang into a failure.
    for _ in 0..1800 {
        if refused_while_down.load(Ordering::SeqCst) >= IN_FLIGHT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused_count = refused_while_down.load(Ordering::SeqCst);
    assert!(
        refused_count >= IN_FLIGHT,
        "the edge refused webhooks while Redis was down: {refused_count} in {:?} (see {})",
        down_at.elapsed(),
        front.log
    );
    eprintln!(
        "redis dies: {IN_FLIGHT} refusals while down took {:?}",
        down_at.elapsed()
    );
    let restarted = durable_redis(port, &dir).await;
    phase.store(BACK, Ordering::SeqCst);
    // The history came back with the append-only file: the old socket is not
    // told to reload; the stream service resumes it from its last position.
    let probe = crate::cluster::redis(&redis_url).await;
    for _ in 0..600 {
        let patterns: i64 = fred::interfaces::PubsubInterface::pubsub_numpat(&probe)
            .await
            .unwrap_or(0);
        if patterns >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second_socket = listen(agent_url(&edge.to_string(), &a.id)).await;
    conversations.signal("CONT");

    let outcomes = poster.await.expect("poster");
    let mut first_run: HashMap<String, u16> = HashMap::new();
    for (id, o) in &outcomes {
        assert!(
            o.status == 200 || o.status == 503,
            "{id}: {} (see {} and {})",
            o.status,
            front.log,
            conversations.log
        );
        if o.started == DOWN && o.ended == DOWN {
            assert_eq!(o.status, 503, "{id} answered while Redis was down");
        }
        first_run.insert(id.clone(), o.status);
    }
    let acked_first: HashSet<String> = first_run
        .iter()
        .filter(|(_, s)| **s == 200)
        .map(|(id, _)| id.clone())
        .collect();
    // As Meta does: what was refused is sent again until accepted.
    let refused: Vec<String> = ids
        .iter()
        .filter(|id| !acked_first.contains(*id))
        .cloned()
        .collect();
    for id in &refused {
        let mut status = 0;
        for _ in 0..200 {
            status = post(id.clone()).await.1.status;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, 200, "{id} accepted once Redis is back");
    }

    // Stored exactly once, every one of them.
    let mut stored: Vec<(String, i64)> = Vec::new();
    for _ in 0..1200 {
        stored = sqlx::query_as(
            "SELECT channel_message_id, count(*) FROM messages GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&db.owner)
        .await
        .expect("stored");
        if stored.len() == WEBHOOKS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored_ids: HashSet<&String> = stored.iter().map(|(id, _)| id).collect();
    let missing: Vec<&String> = ids.iter().filter(|id| !stored_ids.contains(id)).collect();
    assert!(
        missing.is_empty() && stored.len() == WEBHOOKS,
        "{} acknowledged webhooks lost, e.g. {:?}, of which {} acked in the first run (see {})",
        missing.len(),
        missing.first(),
        missing
            .iter()
            .filter(|id| acked_first.contains(**id))
            .count(),
        front.log
    );
    assert!(stored.iter().all(|(_, n)| *n == 1), "none twice");

    let all_stored_at = std::time::Instant::now();
    let heard_all = || {
        let first = first_socket.ids.lock().expect("lock");
        let second = second_socket.ids.lock().expect("lock");
        first.union(&second).cloned().collect::<HashSet<String>>()
    };
    // Announced late is still announced: a job whose store timed out while
    // conversations was frozen (its worker gave up, and Redis was down so no
    // retry could be scheduled) is stored when conversations thaws but only
    // announced when a worker reclaims it, after `claim-idle-ms`. The bound
    // only turns a hang into a failure.
    for _ in 0..600 {
        if heard_all().len() == WEBHOOKS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let heard = heard_all();
    let unheard: Vec<&String> = ids.iter().filter(|id| !heard.contains(*id)).collect();
    assert!(
        unheard.is_empty(),
        "{} stored webhooks never announced within {:?}, e.g. {:?} (see {})",
        unheard.len(),
        all_stored_at.elapsed(),
        unheard.first(),
        front.log
    );
    eprintln!(
        "redis dies: the last announced {:?} after the last stored",
        all_stored_at.elapsed()
    );
    eprintln!(
        "redis dies: {} of {} stored webhooks heard by an agent (old socket closed with {:?})",
        heard.len(),
        ids.len(),
        first_socket.close_code.lock().expect("lock")
    );
    eprintln!(
        "redis dies: {} acked in the first run, {} refused and re-sent, {} heard on the socket that lived through it",
        acked_first.len(),
        refused.len(),
        first_socket.ids.lock().expect("lock").len()
    );

    let log = std::fs::read_to_string(&front.log).unwrap_or_default();
    assert!(
        !log.contains(LOSSY_WARNING),
        "a durable Redis is not warned about"
    );
    drop(front);
    drop(conversations);
    drop(restarted);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(&dir);
}
