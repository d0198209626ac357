//! The stream service's own Redis connection drops (cut, or Redis killed and
//! restarted with its data): subscribers go on from history, without loss,
//! without duplicates and without DATA_LOSS.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    cluster::{Cluster, Options, whatsapp_text},
    positions::{message_id, next, post, subscribe},
};

/// A TCP proxy to the shared Redis that the test can cut: every connection
/// through it is closed, and new ones are closed on arrival, until restored.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (c, conns, s) = (cut.clone(), connections.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut down, _) = tokio::select! {
                    () = s.cancelled() => return,
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let token = conns.lock().expect("lock").clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                    }
                });
            }
        });
        Self {
            port,
            cut,
            connections,
            stop,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut token = self.connections.lock().expect("lock");
        token.cancel();
        *token = CancellationToken::new();
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.connections.lock().expect("lock").cancel();
    }
}

#[tokio::test]
async fn a_stream_redis_reconnect_resumes_subscribers_without_loss() {
    let upstream = crate::cluster::redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = Proxy::start(upstream).await;
    let c = Cluster::start_with(Options {
        stream_redis_url: Some(format!("redis://127.0.0.1:{}", proxy.port)),
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let mut live = subscribe(&c, &a.id, None).await.expect("subscribed");
    post(&c, &a, "wamid.X0").await;
    let first = next(&mut live).await;

    // The stream service loses Redis; ingest (its own connection) goes on.
    proxy.cut();
    for i in 1..=5 {
        post(&c, &a, &format!("wamid.X{i}")).await;
        c.drained().await; // one at a time: offsets in this order
    }
    proxy.restore();

    // After reconnecting, the stream service reads what it missed from history.
    for i in 1..=5 {
        let e = next(&mut live).await;
        assert_eq!(e.offset, first.offset + i);
        assert_eq!(message_id(&e), format!("wamid.X{i}"));
    }
    post(&c, &a, "wamid.X6").await;
    let e = next(&mut live).await;
    assert_eq!(e.offset, first.offset + 6, "then live, no duplicate");
    c.stop().await;
}

#[tokio::test]
async fn a_stream_redis_restart_with_history_kept_costs_subscribers_nothing() {
    use crate::redis_restart::{OwnRedis, free_port};

    let port = free_port();
    let dir = format!(
        "{}/positions-aof-{}",
        env!("CARGO_TARGET_TMPDIR"),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::create_dir_all(&dir).expect("redis dir");
    let redis = OwnRedis::start_persistent(port, &dir).await;
    let c = Cluster::start_with(Options {
        redis_url: Some(format!("redis://127.0.0.1:{port}")),
        ..Options::default()
    })
    .await;
    let a = c.tenant("alpha").await;
    let mut live = subscribe(&c, &a.id, None).await.expect("subscribed");
    post(&c, &a, "wamid.A0").await;
    let first = next(&mut live).await;

    drop(redis); // SIGKILL; the append-only file keeps the history
    let redis = OwnRedis::start_persistent(port, &dir).await;

    for i in 1..=3 {
        let body = whatsapp_text(&a, &format!("wamid.A{i}"), "1", "x", 1_700_000_000);
        let mut status = 0;
        for _ in 0..200 {
            status = c.post_signed(&body, &a.app_secret).await.0;
            if status == 200 {
                break;
            }
            assert_eq!(status, 503, "while Redis reconnects the edge asks to retry");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, 200);
        c.drained().await;
    }
    // The same epoch goes on: no DATA_LOSS, nothing lost, nothing twice.
    for i in 1..=3 {
        let e = next(&mut live).await;
        assert_eq!(e.epoch, first.epoch);
        assert_eq!(e.offset, first.offset + i);
        assert_eq!(message_id(&e), format!("wamid.A{i}"));
    }
    c.stop().await;
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}
