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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Redis of the test's own; killed when dropped, even if the test fails.
struct OwnRedis(Child);

impl OwnRedis {
    async fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = Self(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not listen on {port}");
    }
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
