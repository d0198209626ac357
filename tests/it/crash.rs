//! Nothing answered 200 is lost or duplicated when a process dies: ingest runs
//! as a real `faro ingest` process here and is killed with SIGKILL.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use fred::interfaces::StreamsInterface;
use fred::types::Value;
use tokio::net::{TcpListener, TcpStream};

use crate::cluster::{Cluster, Options, Tenant, redis_url, whatsapp_text};

/// A `faro <service>` process with these flags; its log goes under the target dir.
fn spawn_faro(c: &Cluster, service: &str, args: &[&str]) -> Child {
    let log = format!(
        "{}/{}-{service}-{}.log",
        env!("CARGO_TARGET_TMPDIR"),
        c.db.name,
        uuid::Uuid::new_v4().simple()
    );
    Command::new(env!("CARGO_BIN_EXE_faro"))
        .arg(service)
        .args(args)
        .env("RUST_LOG", "info,faro_ingest=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_or_else(|_| Stdio::null(), Stdio::from))
        .spawn()
        .unwrap_or_else(|e| panic!("faro {service} starts: {e}"))
}

/// A `faro ingest` process serving on `listen` and storing through `conversations_url`.
fn spawn_ingest(c: &Cluster, listen: SocketAddr, conversations_url: &str) -> Child {
    let (listen, redis) = (listen.to_string(), redis_url());
    spawn_faro(
        c,
        "ingest",
        &[
            "--ingest-listen",
            &listen,
            "--conversations-url",
            conversations_url,
            "--redis-url",
            &redis,
            "--redis-prefix",
            &c.prefix,
            "--claim-idle-ms",
            "1000",
            "--ingest-workers",
            "2",
        ],
    )
}

/// A `faro conversations` process serving on `listen` for the test's database.
fn spawn_conversations(c: &Cluster, listen: SocketAddr) -> Child {
    let (listen, keys) = (
        listen.to_string(),
        crate::cluster::encryption_keys().join(","),
    );
    spawn_faro(
        c,
        "conversations",
        &[
            "--conversations-listen",
            &listen,
            "--database-url",
            &c.db.owner_url,
            "--encryption-keys",
            &keys,
        ],
    )
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ingest did not listen on {addr}");
}

async fn pending(c: &Cluster) -> i64 {
    let summary: Value = c
        .redis
        .xpending(format!("{}ingest:jobs", c.prefix), "workers", ())
        .await
        .expect("xpending");
    summary
        .into_array()
        .first()
        .and_then(Value::as_i64)
        .unwrap_or_default()
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
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
    kill(first);
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
    kill(second);
    hold.abort();
    c.stop().await;
}

/// Posts `n` webhooks one after another, killing `victim` before post
/// `n / 2`; returns the ids answered 200 and how many got 503.
async fn post_through_a_kill(
    c: &Cluster,
    a: &Tenant,
    n: i64,
    victim: Child,
) -> (Vec<String>, usize) {
    let (mut accepted, mut refused) = (Vec::new(), 0);
    let mut victim = Some(victim);
    for i in 0..n {
        if i == n / 2 {
            kill(victim.take().expect("running"));
        }
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

/// Ingest killed at an arbitrary moment while webhooks keep arriving: every
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

    let (accepted, refused) = post_through_a_kill(&c, &a, 120, first).await;
    assert!(refused > 0, "posts after the kill are refused with 503");
    assert!(accepted.len() >= 60, "posts before the kill are accepted");
    let second = spawn_ingest(&c, c.ingest, &conversations_url);
    c.drained().await;
    assert_eq!(
        stored_ids(&c).await,
        accepted,
        "exactly the accepted webhooks, once each"
    );
    kill(second);
    c.stop().await;
}

/// conversations (the only writer to Postgres) killed while webhooks keep
/// arriving and workers keep storing: its open transactions roll back, the
/// workers retry or leave the jobs pending, and after a restart every webhook
/// answered 200 is stored exactly once.
#[tokio::test]
async fn webhooks_answered_200_survive_conversations_being_killed_mid_stream() {
    let c = Cluster::start_with(Options {
        conversations: false,
        claim_idle_ms: 1_000,
        ingest_batch: 4,
        ..Options::default()
    })
    .await;
    let first = spawn_conversations(&c, c.conversations);
    wait_listening(c.conversations).await;
    let a = c.tenant("alpha").await;

    // The edge caches the route, so webhooks keep being accepted while conversations is down.
    let (accepted, refused) = post_through_a_kill(&c, &a, 150, first).await;
    assert_eq!((accepted.len(), refused), (150, 0));
    assert!(
        c.count("SELECT count(*) FROM messages").await < 150,
        "some webhooks were still queued when conversations died"
    );
    let second = spawn_conversations(&c, c.conversations);
    c.drained().await;
    assert_eq!(
        stored_ids(&c).await,
        accepted,
        "exactly the accepted webhooks, once each"
    );
    kill(second);
    c.stop().await;
}
