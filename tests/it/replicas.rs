//! Several replicas of every service, as Kubernetes runs them but without
//! Kubernetes: two edges, two ingests, one conversations and two streams, all
//! real `faro` processes holding certificates that `faro certs` made (mTLS
//! on every gRPC call). Signed webhooks go round-robin to both edges, agents
//! listen on both: every message is stored once, every agent gets each of
//! its tenant's messages once, whichever edge Meta happened to reach; and
//! every gRPC process refuses a caller without a certificate and a caller
//! whose identity may not call the RPC.

use std::{collections::HashMap, sync::Arc, time::Duration};

use faro_proto::{
    conversations::v1::{
        StoreEventsRequest, conversations_service_client::ConversationsServiceClient,
    },
    ingest::v1::{SubmitRequest, ingest_service_client::IngestServiceClient},
    mtls::Identity,
    stream::v1::{SubscribeRequest, stream_service_client::StreamServiceClient},
};
use futures::StreamExt;
use tonic::transport::{Certificate, ClientTlsConfig};

use crate::{
    cluster::{Cluster, Options, Tenant, Ws, whatsapp_text},
    mtls::{denied, health},
    replica_set::{self, Layout, ReplicaSet, faro_certs, pki_from},
};

/// Webhooks sent in all, alternating tenants and edges.
const WEBHOOKS: usize = 3_000;
/// Webhooks in flight at once (Meta retries in parallel too).
const IN_FLIGHT: usize = 32;

/// An agent's count of each message id it was sent, until `last` arrives.
async fn listen(mut ws: Ws, last: String) -> HashMap<String, u32> {
    let mut seen = HashMap::new();
    loop {
        let event = ws.next_event().await;
        if event["type"] != "message.created" {
            continue;
        }
        let id = event["message"]["channel_message_id"]
            .as_str()
            .expect("a message id")
            .to_owned();
        let done = id == last;
        *seen.entry(id).or_default() += 1;
        if done {
            return seen;
        }
    }
}

fn webhook(t: &Tenant, id: &str, i: usize) -> String {
    let from = format!("5215550{:05}", i % 40);
    whatsapp_text(t, id, &from, "hola", 1_700_000_000 + i as i64)
}

#[tokio::test]
async fn two_replicas_of_each_service_store_and_deliver_every_message_once() {
    let dir = tokio::task::spawn_blocking(faro_certs).await.expect("join");
    let pki = Arc::new(pki_from(&dir));
    let c = Cluster::start_with(Options {
        pki: Some(pki.clone()),
        ingest: false,
        conversations: false,
        ..Options::default()
    })
    .await;
    let r = replica_set::start(
        &c,
        &Layout {
            replicas: 2,
            tls: Some(&dir),
            env: &[],
            ingest: &["--ingest-workers", "2"],
        },
    )
    .await;
    let tenants = [c.tenant("replica-a").await, c.tenant("replica-b").await];

    // One agent of each tenant on each edge.
    let mut agents = Vec::new();
    for (n, t) in tenants.iter().enumerate() {
        for &edge in &r.edges {
            let ws = c.websocket_at(edge, &c.token(&t.id, 600)).await;
            agents.push((n, tokio::spawn(listen(ws, format!("wamid.END-{n}")))));
        }
    }

    let statuses: Vec<u16> = futures::stream::iter(0..WEBHOOKS)
        .map(|i| {
            let (t, edge) = (&tenants[i % 2], r.edges[(i / 2) % 2]);
            let body = webhook(t, &format!("wamid.R{i}"), i);
            let c = &c;
            async move { c.post_signed_at(edge, &body, &t.app_secret).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let refused = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(refused, 0, "webhooks not answered 200: {refused}");
    c.drained().await;
    // Stored and published: a last message per tenant, queued after all the
    // others, marks the end of each agent's stream.
    for (n, t) in tenants.iter().enumerate() {
        let body = webhook(t, &format!("wamid.END-{n}"), WEBHOOKS + n);
        assert_eq!(
            c.post_signed_at(r.edges[n], &body, &t.app_secret).await,
            200
        );
    }
    for (n, agent) in agents {
        let seen = tokio::time::timeout(Duration::from_secs(60), agent)
            .await
            .expect("an agent's stream ends within 60 s")
            .expect("agent task");
        let twice: Vec<_> = seen.iter().filter(|(_, k)| **k > 1).collect();
        assert!(twice.is_empty(), "tenant {n}'s agent got {twice:?} twice");
        assert_eq!(
            seen.len(),
            WEBHOOKS / 2 + 1,
            "tenant {n}'s agent got {} of {} messages",
            seen.len(),
            WEBHOOKS / 2 + 1
        );
        assert!(seen.keys().all(|id| {
            let i: usize = id.trim_start_matches("wamid.R").parse().unwrap_or(n);
            i % 2 == n
        }));
    }
    c.drained().await;
    let stored = c.count("SELECT count(*) FROM messages").await;
    let distinct = c
        .count("SELECT count(DISTINCT channel_message_id) FROM messages")
        .await;
    assert_eq!(distinct, stored, "a message stored twice");
    assert_eq!(stored, WEBHOOKS as i64 + 2, "every message stored once");

    for (role, pid) in &r.pids {
        // A child that exited stays a zombie (state Z) until it is reaped.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").and_then(|(_, s)| s.chars().next());
        assert!(
            matches!(state, Some(s) if s != 'Z'),
            "the {role} process {pid} died under the load"
        );
    }
    refusals(&c, &r, &tenants[0]).await;
    c.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Every replica refuses a caller without a client certificate (at the
/// handshake) and a caller whose identity may not call the RPC; each edge
/// refuses an unsigned webhook.
async fn refusals(c: &Cluster, r: &ReplicaSet, t: &Tenant) {
    let ca = Certificate::from_pem(&c.pki.as_ref().expect("pki").ca);
    let processes = [c.conversations]
        .into_iter()
        .chain(r.ingests.iter().copied())
        .chain(r.streams.iter().copied());
    for addr in processes {
        let anonymous = ClientTlsConfig::new().ca_certificate(ca.clone());
        health(addr, Some(anonymous))
            .await
            .expect_err("no client certificate");
        health(addr, None).await.expect_err("plaintext");
    }
    let edge = c.grpc(c.conversations, Identity::Edge).await;
    denied(
        "edge → StoreEvents",
        ConversationsServiceClient::new(edge)
            .store_events(StoreEventsRequest::default())
            .await,
    );
    for &addr in &r.ingests {
        let as_stream = c.grpc(addr, Identity::Stream).await;
        denied(
            "stream → Submit",
            IngestServiceClient::new(as_stream)
                .submit(SubmitRequest::default())
                .await,
        );
    }
    for &addr in &r.streams {
        let as_ingest = c.grpc(addr, Identity::Ingest).await;
        denied(
            "ingest → Subscribe",
            StreamServiceClient::new(as_ingest)
                .subscribe(SubscribeRequest::default())
                .await,
        );
    }
    for &edge in &r.edges {
        let body = webhook(t, "wamid.FORGED", 0);
        assert_eq!(c.post_signed_at(edge, &body, "not-the-secret").await, 401);
    }
}
