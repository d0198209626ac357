//! A client over its address's connection cap is told why, as an HTTP
//! answer its HTTP client can read: a JSON 429 `too_many_connections`.
//! Found from outside: the refusal was written the moment the connection was
//! accepted, before the client's request, and hyper- and reqwest-based
//! clients (that is, most Rust and many other clients) reported "unexpected
//! message" or a reset instead of the answer.

use std::time::Duration;

use tokio::net::TcpSocket;

use crate::{
    cluster::Cluster,
    ratelimit_flood::{client_from, edge_with},
};

#[tokio::test]
async fn a_client_over_its_address_cap_reads_a_json_429() {
    let c = Cluster::start().await;
    let (edge, stop, task) = edge_with(
        &c,
        c.conversations,
        crate::cluster::redis_url(),
        crate::configs::rates_off(),
        |config| config.max_connections_per_ip = 1,
    )
    .await;
    // The address's one connection, held open (idle: the edge times it out
    // only after its first-byte timeout, 10 s).
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.3:0".parse().expect("addr"))
        .expect("bind");
    let held = socket.connect(edge).await.expect("connect");

    let http = client_from("127.0.0.3");
    let get = http
        .get(format!("http://{edge}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("a GET over the cap gets an answer, not a broken connection");
    assert_eq!(get.status().as_u16(), 429);
    let body: serde_json::Value = get.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");

    // A request with a body the edge never reads is answered too.
    let post = http
        .post(format!("http://{edge}/api/v1/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .body(vec![b' '; 64 * 1024])
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("a POST over the cap gets an answer, not a broken connection");
    assert_eq!(post.status().as_u16(), 429);
    let body: serde_json::Value = post.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");

    // Within the cap (another address) the edge serves as usual.
    let ok = client_from("127.0.0.4")
        .get(format!("http://{edge}/healthz"))
        .send()
        .await
        .expect("served");
    assert_eq!(ok.status().as_u16(), 200);
    drop(held);
    stop.cancel();
    task.await.expect("edge");
    c.stop().await;
}
