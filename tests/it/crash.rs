//! Nothing answered 200 is lost or duplicated when a process dies: ingest runs
//! as a real `faro ingest` process here and is killed with SIGKILL.

use std::{net::SocketAddr, time::Duration};

use fred::interfaces::{SortedSetsInterface, StreamsInterface};
use fred::types::Value;
use sqlx::{Postgres, Transaction};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

use crate::{
    cluster::{Cluster, Options, Tenant, whatsapp_text},
    process::{Faro, wait_listening},
};

/// A `faro ingest` process serving on `listen` and storing through `conversations_url`.
fn spawn_ingest(c: &Cluster, listen: SocketAddr, conversations_url: &str) -> Faro {
    crate::process::spawn_ingest(
        c,
        listen,
        conversations_url,
        &[
            "--claim-idle-ms",
            "4000",
            "--store-deadline-ms",
            "1800",
            "--retry-attempts",
            "20",
            "--retry-base-ms",
            "50",
            "--retry-max-ms",
            "1000",
            "--ingest-workers",
            "2",
        ],
    )
}

/// A `faro conversations` process serving on `listen` for the test's database.
fn spawn_conversations(c: &Cluster, listen: SocketAddr) -> Faro {
    crate::process::spawn_conversations(c, listen, crate::process::PLAINTEXT)
}

/// Jobs read by a worker and not yet acknowledged (XPENDING).
pub(crate) async fn pending(c: &Cluster) -> i64 {
    let summary: Value = c
        .redis
        .xpending(faro_ingest::Keys::new(&c.prefix).jobs, "workers", ())
        .await
        .expect("xpending");
    summary
        .into_array()
        .first()
        .and_then(Value::as_i64)
        .unwrap_or_default()
}

/// Jobs waiting in the retry set.
pub(crate) async fn scheduled(c: &Cluster) -> i64 {
    c.redis
        .zcard(faro_ingest::Keys::new(&c.prefix).retry)
        .await
        .expect("zcard")
}

/// Jobs dead-lettered: a redelivery must be a no-op, never a rejection.
async fn dead_letters(c: &Cluster) -> i64 {
    c.redis
        .xlen(faro_ingest::Keys::new(&c.prefix).dead)
        .await
        .expect("xlen")
}

/// Holds every message insert (reads still pass) until the transaction ends:
/// a worker's store call is then in flight, inside conversations, for as long
/// as the test wants.
pub(crate) async fn hold_stores(c: &Cluster) -> Transaction<'static, Postgres> {
    let mut tx = c.db.owner.begin().await.expect("begin");
    sqlx::query("LOCK TABLE messages IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .expect("lock messages");
    tx
}

/// Waits until a store call is blocked on [`hold_stores`]' lock.
pub(crate) async fn store_in_flight(c: &Cluster) {
    for _ in 0..400 {
        let waiting = c
            .count(
                "SELECT count(*) FROM pg_locks WHERE NOT granted
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND relation = 'messages'::regclass",
            )
            .await;
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no store call reached the database within 20 s");
}

/// Jobs a worker had read (pending, unacknowledged) when its process was
/// killed are reclaimed by another process and stored exactly once.
#[tokio::test]
async fn jobs_held_by_a_killed_ingest_process_are_stored_exactly_once() {
    let c = Cluster::start_with(Options {
        ingest: false,
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let mut ws = c.websocket(&c.token(&a.id, 300)).await;

    // A conversations address that accepts and never answers: the first
    // process's workers read the jobs and hang while storing them.
    let blackhole = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let blackhole_url = format!("http://{}", blackhole.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = blackhole.accept().await {
            held.push(s);
        }
    });
    let first = spawn_ingest(&c, c.ingest, &blackhole_url);
    wait_listening(c.ingest).await;

    const N: usize = 20;
    for i in 0..N {
        let body = whatsapp_text(
            &a,
            &format!("wamid.K{i}"),
            "16315551181",
            &format!("msg {i}"),
            1_700_000_000 + i as i64,
        );
        let (status, _) = c.post_signed(&body, &a.app_secret).await;
        assert_eq!(status, 200, "webhook {i} queued");
    }
    // Each blocked worker holds the batch it read; the rest wait in the stream.
    let mut held = 0;
    for _ in 0..400 {
        held = pending(&c).await;
        if held >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        held >= 2,
        "both workers of the first process hold jobs unacknowledged ({held})"
    );
    first.kill();
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 0);

    let second = spawn_ingest(&c, c.ingest, &format!("http://{}", c.conversations));
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, N as i64);
    assert_eq!(
        c.count("SELECT count(DISTINCT channel_message_id) FROM messages")
            .await,
        N as i64
    );
    assert_eq!(pending(&c).await, 0);

    // Reclaimed jobs are announced too: the agent sees every message.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < N {
        let e = ws.next_event().await;
        seen.insert(
            e["message"]["channel_message_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(seen.len(), N);
    second.kill();
    hold.abort();
    c.stop().await;
}

/// A TCP proxy whose replies can be held back: requests still reach the
/// target, its answers wait in the proxy. A worker behind it has its store
/// committed by conversations but never hears so.
struct ReplyGate {
    addr: SocketAddr,
    hold: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ReplyGate {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (hold, held) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                });
                let mut held = held.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                        if held.wait_for(|h| !h).await.is_err()
                            || to_client.write_all(&buf[..n]).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, hold, task }
    }

    fn hold_replies(&self) {
        self.hold.send_replace(true);
    }
}

impl Drop for ReplyGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A job stored by a worker that died before acknowledging it is stored
/// again by the next worker (a no-op: the unique key) and announced again:
/// the first worker never got to publish it.
#[tokio::test]
async fn a_job_stored_by_an_ingest_process_killed_before_its_ack_is_announced() {
    let c = Cluster::start_with(Options {
        ingest: false,
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let mut ws = c.websocket(&c.token(&a.id, 300)).await;
    let gate = ReplyGate::start(c.conversations).await;
    let first = spawn_ingest(&c, c.ingest, &format!("http://{}", gate.addr));
    wait_listening(c.ingest).await;

    let held = hold_stores(&c).await;
    let body = whatsapp_text(&a, "wamid.S1", "16315551181", "stored", 1_700_000_000);
    assert_eq!(c.post_signed(&body, &a.app_secret).await.0, 200);
    store_in_flight(&c).await;
    // The store is inside conversations: let it commit, but keep its answer.
    gate.hold_replies();
    held.commit().await.expect("release the lock");
    for _ in 0..400 {
        if c.count("SELECT count(*) FROM messages").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 1, "stored");
    assert_eq!(pending(&c).await, 1, "stored but not acknowledged");
    first.kill();

    let second = spawn_ingest(&c, c.ingest, &format!("http://{}", c.conversations));
    c.drained().await;
    let e = ws.next_event().await;
    assert_eq!(e["type"], "message.created", "{e}");
    assert_eq!(e["message"]["channel_message_id"], "wamid.S1", "{e}");
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 1);
    assert_eq!(dead_letters(&c).await, 0, "the second store was a no-op");
    second.kill();
    c.stop().await;
}

/// Posts webhooks `range` one after another; returns the ids answered 200
/// and how many got 503.
async fn post(c: &Cluster, a: &Tenant, range: std::ops::Range<i64>) -> (Vec<String>, usize) {
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for i in range {
        let id = format!("wamid.K{i:04}");
        let body = whatsapp_text(
            a,
            &id,
            "16315551181",
            &format!("msg {i}"),
            1_700_000_000 + i,
        );
        match c.post_signed(&body, &a.app_secret).await.0 {
            200 => accepted.push(id),
            503 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    (accepted, refused)
}

/// Every message stored, oldest first.
async fn stored_ids(c: &Cluster) -> Vec<String> {
    sqlx::query_scalar("SELECT channel_message_id FROM messages ORDER BY \"timestamp\"")
        .fetch_all(&c.db.owner)
        .await
        .expect("ids")
}

/// Ingest killed while a store is in flight and webhooks keep arriving: every
/// webhook answered 200 is stored exactly once after a restart; the others
/// got a non-200 (Meta would retry them) and queued nothing.
#[tokio::test]
async fn webhooks_answered_200_survive_ingest_being_killed_mid_stream() {
    let c = Cluster::start_with(Options {
        ingest: false,
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let conversations_url = format!("http://{}", c.conversations);
    let first = spawn_ingest(&c, c.ingest, &conversations_url);
    wait_listening(c.ingest).await;

    let held = hold_stores(&c).await;
    let (mut accepted, refused) = post(&c, &a, 0..60).await;
    assert_eq!((accepted.len(), refused), (60, 0));
    store_in_flight(&c).await;
    assert!(
        pending(&c).await > 0,
        "the jobs being stored are not acknowledged yet"
    );
    first.kill();
    assert!(pending(&c).await > 0, "a killed worker's jobs stay pending");
    let (more, refused) = post(&c, &a, 60..120).await;
    assert!(refused > 0, "posts after the kill are refused with 503");
    accepted.extend(more);
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 0);
    held.commit().await.expect("release the lock");

    let second = spawn_ingest(&c, c.ingest, &conversations_url);
    c.drained().await;
    assert_eq!(
        stored_ids(&c).await,
        accepted,
        "exactly the accepted webhooks, once each"
    );
    assert_eq!(dead_letters(&c).await, 0);
    second.kill();
    c.stop().await;
}

/// conversations (the only writer to Postgres) killed while a store is in
/// flight and webhooks keep arriving: its open transaction rolls back, the
/// workers retry or leave the jobs pending, and after a restart every webhook
/// answered 200 is stored exactly once.
#[tokio::test]
async fn webhooks_answered_200_survive_conversations_being_killed_mid_stream() {
    let c = Cluster::start_with(Options {
        conversations: false,
        claim_idle_ms: 4_000,
        ingest_batch: 4,
        ..Options::default()
    })
    .await;
    let first = spawn_conversations(&c, c.conversations);
    wait_listening(c.conversations).await;
    let a = c.tenant("alpha").await;

    let held = hold_stores(&c).await;
    let (mut accepted, _) = post(&c, &a, 0..75).await;
    store_in_flight(&c).await;
    assert!(
        pending(&c).await > 0,
        "the jobs being stored are not acknowledged yet"
    );
    first.kill();
    // The edge caches the route, so webhooks keep being accepted while conversations is down.
    let (more, _) = post(&c, &a, 75..150).await;
    accepted.extend(more);
    assert_eq!(accepted.len(), 150);
    held.commit().await.expect("release the lock");
    assert_eq!(
        c.count("SELECT count(*) FROM messages").await,
        0,
        "the killed process's transaction did not commit"
    );
    assert!(
        pending(&c).await + scheduled(&c).await > 0,
        "nothing was acknowledged unstored: pending, or scheduled for a retry"
    );

    let second = spawn_conversations(&c, c.conversations);
    c.drained().await;
    assert_eq!(
        stored_ids(&c).await,
        accepted,
        "exactly the accepted webhooks, once each"
    );
    assert_eq!(dead_letters(&c).await, 0);
    second.kill();
    c.stop().await;
}
