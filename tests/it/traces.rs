//! One signed webhook makes one trace, from the edge to the agent's
//! WebSocket: four real `faro` processes (edge, ingest, conversations,
//! stream), each exporting its spans by OTLP/gRPC to a collector written
//! here (a tonic server implementing the OTLP `TraceService`). The spans must
//! share one trace id and chain parent to child across the gRPC calls, the
//! Redis job, the pub/sub event and the edge's live feed.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as Any,
};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    cluster::{JWT_SECRET, TestDb, encryption_keys, whatsapp_text},
    log_hygiene::jwt,
    process::{Faro, free_addr, tenant_at, wait_listening},
};

/// A span as the collector received it.
#[derive(Clone)]
struct Got {
    service: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
}

impl std::fmt::Debug for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        write!(
            f,
            "{} {} trace={} id={} parent={}",
            self.service,
            self.name,
            hex(&self.trace),
            hex(&self.id),
            hex(&self.parent)
        )
    }
}

/// The OTLP collector: keeps every span and wakes the test on each export.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Got>>>,
    arrived: Arc<Notify>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = Vec::new();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Any::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                got.push(Got {
                    service: service.clone(),
                    name: span.name,
                    trace: span.trace_id,
                    id: span.span_id,
                    parent: span.parent_span_id,
                });
            }
        }
        self.spans.lock().expect("spans").extend(got);
        self.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn collector() -> (Collector, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let c = Collector::default();
    let service = TraceServiceServer::new(c.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (c, addr)
}

/// The spans of one trace, from `root` down, by name; waits (bounded) until
/// every name in `want` is there.
async fn trace_with(c: &Collector, want: &[&str]) -> Vec<Got> {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let arrived = c.arrived.notified();
            let spans = c.spans.lock().expect("spans").clone();
            if let Some(root) = spans.iter().find(|s| s.name == "webhook.receive") {
                let trace: Vec<Got> = spans
                    .iter()
                    .filter(|s| s.trace == root.trace)
                    .cloned()
                    .collect();
                if want.iter().all(|w| trace.iter().any(|s| s.name == *w)) {
                    return trace;
                }
            }
            arrived.await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        let spans = c.spans.lock().expect("spans");
        panic!("no trace holding {want:?}; the collector has {spans:#?}")
    })
}

/// The nearest ancestor of `span` named `name` (within its trace), if any.
fn ancestor<'a>(trace: &'a [Got], span: &Got, name: &str) -> Option<&'a Got> {
    let by_id: HashMap<&[u8], &Got> = trace.iter().map(|s| (s.id.as_slice(), s)).collect();
    let mut at = by_id.get(span.parent.as_slice())?;
    for _ in 0..trace.len() {
        if at.name == name {
            return Some(at);
        }
        at = by_id.get(at.parent.as_slice())?;
    }
    None
}

fn one<'a>(trace: &'a [Got], name: &str) -> &'a Got {
    let all: Vec<_> = trace.iter().filter(|s| s.name == name).collect();
    assert_eq!(all.len(), 1, "one {name} span in the trace: {trace:#?}");
    all[0]
}

#[tokio::test]
async fn one_webhook_is_one_trace_from_the_edge_to_the_websocket() {
    let (collector, otlp) = collector().await;
    let db = TestDb::create().await;
    let (conv, edge, ingest, stream) = (free_addr(), free_addr(), free_addr(), free_addr());
    let url = |a: SocketAddr| format!("http://{a}");
    let prefix = format!("faro-traces-{}:", uuid::Uuid::new_v4().simple());
    let _keys = crate::test_db::KeysGuard(prefix.clone());
    let keys = encryption_keys().join(",");
    let (listen, urls) = (
        [conv, edge, ingest, stream].map(|a| a.to_string()),
        [conv, ingest, stream].map(url),
    );
    let args = [
        "--conversations-listen",
        &listen[0],
        "--edge-listen",
        &listen[1],
        "--ingest-listen",
        &listen[2],
        "--stream-listen",
        &listen[3],
        "--conversations-url",
        &urls[0],
        "--ingest-url",
        &urls[1],
        "--stream-url",
        &urls[2],
        "--database-url",
        &db.owner_url,
        "--encryption-keys",
        &keys,
        "--redis-prefix",
        &prefix,
        "--jwt-secret",
        JWT_SECRET,
    ];
    let endpoint = url(otlp);
    let env = [
        ("FARO_PLAINTEXT", "true"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // The SDK's batch delay (5 s by default) would only slow the test.
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    let mut processes = Vec::new();
    for (service, addr) in [
        ("conversations", conv),
        ("stream", stream),
        ("ingest", ingest),
        ("edge", edge),
    ] {
        processes.push(Faro::spawn_env("traces", service, &args, &env));
        wait_listening(addr).await;
    }
    let t = tenant_at(&conv.to_string(), "traces").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{edge}/api/v1/messages/stream?access_token={}",
        jwt(&t.id)
    ))
    .await
    .expect("socket opens");

    let body = whatsapp_text(&t, "wamid.TRACE1", "34600000001", "hello", 1_700_000_000);
    let signature = faro_edge::sign_meta_payload(t.app_secret.as_bytes(), body.as_bytes());
    let answer = reqwest::Client::new()
        .post(format!("http://{edge}/api/v1/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(answer.status(), 200);
    let heard = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(frame)) = ws.next().await {
            if matches!(&frame, Message::Text(t) if t.contains("wamid.TRACE1")) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(heard, Ok(true), "the agent heard the message");

    let trace = trace_with(
        &collector,
        &[
            "webhook.receive",
            "ingest.submit",
            "worker.job",
            "conversations.store",
            "stream.publish",
            "stream.fanout",
            "ws.send",
        ],
    )
    .await;
    // Each hop is the service's own span, exported by that process.
    for (name, service) in [
        ("webhook.receive", "faro-edge"),
        ("ingest.submit", "faro-ingest"),
        ("worker.job", "faro-ingest"),
        ("conversations.store", "faro-conversations"),
        ("stream.publish", "faro-ingest"),
        ("stream.fanout", "faro-stream"),
        ("ws.send", "faro-edge"),
    ] {
        assert_eq!(one(&trace, name).service, service, "{name}");
    }
    let root = one(&trace, "webhook.receive");
    assert!(root.parent.is_empty(), "the webhook starts the trace");
    // Parent to child: across gRPC (metadata), the Redis job, the pub/sub
    // event and the stream's gRPC feed to the edge.
    for (child, parent) in [
        ("ingest.submit", "webhook.receive"),
        ("worker.job", "ingest.submit"),
        ("conversations.store", "worker.job"),
        ("stream.publish", "worker.job"),
        ("stream.fanout", "stream.publish"),
        ("ws.send", "stream.fanout"),
    ] {
        let c = one(&trace, child);
        let p = one(&trace, parent);
        assert_eq!(
            ancestor(&trace, c, parent).map(|a| &a.id),
            Some(&p.id),
            "{child} descends from {parent}: {trace:#?}"
        );
    }
    // Across the queue the job's context is the parent itself, not a guess.
    assert_eq!(
        one(&trace, "worker.job").parent,
        one(&trace, "ingest.submit").id
    );
    assert_eq!(
        one(&trace, "ws.send").parent,
        one(&trace, "stream.fanout").id
    );
    drop(ws);
    drop(processes);
    db.drop_db().await;
}
