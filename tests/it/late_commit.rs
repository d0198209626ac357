//! A store call that times out may still have committed: conversations
//! carries on with a request whose answer is late, or whose caller has given
//! up. The worker's quick second call then finds the messages stored
//! already, and they must be announced all the same (found by the Redis-dies
//! test: 74 of 5,000 stored webhooks were never heard by an agent after a
//! frozen conversations thawed).

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::{
    cluster::{Cluster, Options, whatsapp_text},
    process::{Faro, spawn_ingest, wait_listening},
};

/// A TCP proxy to conversations that can hold its answers back (requests
/// still pass): a store commits, and its caller does not hear it.
struct AnswerHold {
    port: u16,
    held: watch::Sender<bool>,
}

impl AnswerHold {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (held, watching) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let mut watching = watching.clone();
                tokio::spawn(async move {
                    let (mut client, mut server) = (client, server);
                    let (mut from_client, mut to_client) = client.split();
                    let (mut from_server, mut to_server) = server.split();
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                            let open = watching.wait_for(|held| !held).await.is_ok();
                            if !open || to_client.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        () = up => {}
                        () = down => {}
                    }
                });
            }
        });
        Self { port, held }
    }

    fn hold(&self, held: bool) {
        self.held.send_replace(held);
    }
}

/// Waits until `line` is in `faro`'s log (at most 20 s: a hang, not a timing claim).
async fn logged(faro: &Faro, line: &str) {
    for _ in 0..1000 {
        if std::fs::read_to_string(&faro.log).is_ok_and(|l| l.contains(line)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{line:?} never logged (see {})", faro.log);
}

#[tokio::test]
async fn a_message_committed_after_its_store_deadline_is_still_announced() {
    let c = Cluster::start_with(Options {
        ingest: false,
        ..Options::default()
    })
    .await;
    let proxy = AnswerHold::start(c.conversations).await;
    let ingest = spawn_ingest(
        &c,
        c.ingest,
        &format!("http://127.0.0.1:{}", proxy.port),
        &["--ingest-workers", "1", "--store-deadline-ms", "1000"],
    );
    wait_listening(c.ingest).await;
    let a = c.tenant("alpha").await;
    let mut ws = c.websocket(&c.token(&a.id, 600)).await;
    // Opens the worker's connection to conversations.
    let warm = whatsapp_text(&a, "wamid.WARM", "34600000001", "hola", 1_699_999_999);
    assert_eq!(c.post_signed(&warm, &a.app_secret).await.0, 200);
    assert_eq!(
        ws.next_event().await["message"]["channel_message_id"],
        "wamid.WARM"
    );

    proxy.hold(true);
    let body = whatsapp_text(&a, "wamid.LATE1", "34600000001", "hola", 1_700_000_000);
    assert_eq!(c.post_signed(&body, &a.app_secret).await.0, 200);
    // Stored by the first call, whose answer the worker never hears.
    for _ in 0..400 {
        if c.count("SELECT count(*) FROM messages").await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    logged(&ingest, "store failed; retrying").await;
    // The second call finds the message stored already.
    proxy.hold(false);

    let event = ws.next_event().await;
    assert_eq!(event["type"], "message.created", "{event}");
    assert_eq!(event["message"]["channel_message_id"], "wamid.LATE1");
    assert_eq!(
        c.count("SELECT count(*) FROM messages").await,
        2,
        "stored once each"
    );
    drop(ingest);
    c.stop().await;
}
