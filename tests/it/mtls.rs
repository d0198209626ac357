//! Service-to-service authentication: with mTLS on, the pipeline works end to
//! end, a client without a certificate or with one from another CA is refused
//! at the handshake, and each identity may call only the RPCs its row in the
//! authorization table names.

use std::{net::SocketAddr, path::PathBuf, process::Command, sync::Arc, time::Duration};

use faro_proto::{
    conversations::v1::{
        CreateTenantRequest, ListConversationsRequest, StoreEventsRequest,
        admin_service_client::AdminServiceClient,
        conversations_service_client::ConversationsServiceClient,
    },
    ingest::v1::{QueueStatsRequest, SubmitRequest, ingest_service_client::IngestServiceClient},
    mtls::{Identity, Tls, certs::DevPki},
    stream::v1::{SubscribeRequest, stream_service_client::StreamServiceClient},
};
use tonic::{
    Code,
    transport::{Certificate, ClientTlsConfig, Endpoint},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    cluster::{Cluster, Options, whatsapp_text},
    process::{Faro, free_addr, wait_listening},
};

async fn mtls_cluster() -> Cluster {
    let pki = DevPki::generate(&[]).expect("certificates");
    Cluster::start_with(Options {
        pki: Some(Arc::new(pki)),
        ..Options::default()
    })
    .await
}

/// A health check at `addr` with `tls` as the client's TLS (or plaintext).
/// (Also the replicas test's: an unauthenticated caller fails here.)
pub(crate) async fn health(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).expect("tls config");
    }
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(drop)
        .map_err(|s| format!("{s:?}"))
}

#[tokio::test]
async fn a_signed_webhook_is_stored_and_announced_over_mtls() {
    let c = mtls_cluster().await;
    let t = c.tenant("mtls").await;
    let mut ws = c.websocket(&c.token(&t.id, 300)).await;
    let body = whatsapp_text(&t, "wamid.MTLS1", "5215550001111", "hola", 1_700_000_000);
    let (status, json) = c.post_signed(&body, &t.app_secret).await;
    assert_eq!(status, 200, "{json}");
    let event = ws.next_event().await;
    assert_eq!(event["message"]["channel_message_id"], "wamid.MTLS1");
    assert_eq!(c.message("wamid.MTLS1").await["tenant_id"], t.id.as_str());
    c.stop().await;
}

#[tokio::test]
async fn a_client_without_a_certificate_or_from_another_ca_is_refused() {
    let c = mtls_cluster().await;
    let pki = c.pki.clone().expect("pki");
    let ca = Certificate::from_pem(&pki.ca);
    let other = DevPki::generate(&[]).expect("another CA");
    let foreign = other
        .issued
        .iter()
        .find(|i| i.identity == Identity::Operator)
        .expect("operator");
    for addr in [c.conversations, c.ingest, c.stream] {
        // The server's certificate verifies, but the client shows none.
        let anonymous = ClientTlsConfig::new().ca_certificate(ca.clone());
        let err = health(addr, Some(anonymous)).await.expect_err("no cert");
        assert!(
            !err.contains("PermissionDenied") && !err.contains("Unauthenticated"),
            "refused at the handshake, not by a handler or the layer: {err}"
        );
        // A valid-looking certificate of the right name, signed by another CA.
        let forged = ClientTlsConfig::new().ca_certificate(ca.clone()).identity(
            tonic::transport::Identity::from_pem(&foreign.cert, &foreign.key),
        );
        health(addr, Some(forged)).await.expect_err("another CA");
        // No TLS at all.
        health(addr, None).await.expect_err("plaintext");
        // The same call with a certificate from the cluster's CA succeeds.
        let stream = pki.tls(Identity::Stream).client();
        health(addr, Some(stream))
            .await
            .expect("any identity checks health");
    }
    c.stop().await;
}

pub(crate) fn denied<T: std::fmt::Debug>(what: &str, r: Result<T, tonic::Status>) {
    match r {
        Err(s) => assert_eq!(s.code(), Code::PermissionDenied, "{what}: {s:?}"),
        Ok(v) => panic!("{what} was allowed: {v:?}"),
    }
}

#[tokio::test]
async fn each_identity_may_call_only_its_own_rpcs() {
    let c = mtls_cluster().await;
    let cluster = &c;
    let conv = |who| async move { cluster.grpc(cluster.conversations, who).await };

    let mut as_edge = ConversationsServiceClient::new(conv(Identity::Edge).await);
    denied(
        "edge → StoreEvents",
        as_edge.store_events(StoreEventsRequest::default()).await,
    );
    let mut admin_as_edge = AdminServiceClient::new(conv(Identity::Edge).await);
    denied(
        "edge → CreateTenant",
        admin_as_edge
            .create_tenant(CreateTenantRequest { name: "x".into() })
            .await,
    );
    let mut admin_as_ingest = AdminServiceClient::new(conv(Identity::Ingest).await);
    denied(
        "ingest → CreateTenant",
        admin_as_ingest
            .create_tenant(CreateTenantRequest { name: "x".into() })
            .await,
    );
    let mut as_ingest = ConversationsServiceClient::new(conv(Identity::Ingest).await);
    denied(
        "ingest → ListConversations",
        as_ingest
            .list_conversations(ListConversationsRequest::default())
            .await,
    );
    let mut admin_as_operator = AdminServiceClient::new(conv(Identity::Operator).await);
    let tenant = admin_as_operator
        .create_tenant(CreateTenantRequest {
            name: "by the operator".into(),
        })
        .await
        .expect("the operator administers")
        .into_inner();
    assert!(!tenant.id.is_empty());
    // The allowed caller gets past authorization to the handler (which may
    // still refuse the empty request, but not for who is calling).
    let mut as_ingest = ConversationsServiceClient::new(conv(Identity::Ingest).await);
    if let Err(s) = as_ingest.store_events(StoreEventsRequest::default()).await {
        assert_ne!(s.code(), Code::PermissionDenied, "{s:?}");
    }

    let mut ingest_as_stream = IngestServiceClient::new(c.grpc(c.ingest, Identity::Stream).await);
    denied(
        "stream → Submit",
        ingest_as_stream.submit(SubmitRequest::default()).await,
    );
    let mut ingest_as_operator =
        IngestServiceClient::new(c.grpc(c.ingest, Identity::Operator).await);
    denied(
        "operator → Submit",
        ingest_as_operator.submit(SubmitRequest::default()).await,
    );
    ingest_as_operator
        .queue_stats(QueueStatsRequest::default())
        .await
        .expect("the operator reads queue figures");

    let mut stream_as_ingest = StreamServiceClient::new(c.grpc(c.stream, Identity::Ingest).await);
    denied(
        "ingest → Subscribe",
        stream_as_ingest
            .subscribe(SubscribeRequest::default())
            .await,
    );
    c.stop().await;
}

/// `faro certs` writes the files grpcurl and the services load; the
/// operator's certificate lists services, no certificate lists nothing.
#[tokio::test]
async fn grpcurl_with_the_operator_certificate_lists_services() {
    let c = mtls_cluster().await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("certs-{}", uuid::Uuid::new_v4().simple()));
    let pki = c.pki.clone().expect("pki");
    pki.write(&dir).expect("written");
    // What the process would load from those files is what it was given.
    let loaded = Tls::load(
        &dir.join("ca.pem"),
        &dir.join("operator.pem"),
        &dir.join("operator-key.pem"),
    )
    .expect("loads");
    assert_eq!(loaded.identity(), Identity::Operator);

    let addr = c.conversations.to_string();
    let d = dir.clone();
    let (with, without) = tokio::task::spawn_blocking(move || {
        let path = |f: &str| d.join(f).display().to_string();
        let with = Command::new(crate::grpcurl::grpcurl())
            .args(["-cacert", &path("ca.pem")])
            .args(["-cert", &path("operator.pem")])
            .args(["-key", &path("operator-key.pem")])
            .args([&addr, "list"])
            .output()
            .expect("grpcurl runs");
        let without = Command::new(crate::grpcurl::grpcurl())
            .args(["-cacert", &path("ca.pem"), &addr, "list"])
            .output()
            .expect("grpcurl runs");
        (with, without)
    })
    .await
    .expect("join");
    let listed = String::from_utf8_lossy(&with.stdout);
    assert!(
        with.status.success() && listed.contains("faro.conversations.v1.AdminService"),
        "{listed} {}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(
        !without.status.success(),
        "no client certificate, no listing"
    );
    std::fs::remove_dir_all(&dir).ok();
    c.stop().await;
}

/// The binary refuses to serve gRPC unauthenticated unless told to.
#[tokio::test]
async fn a_service_without_tls_or_plaintext_refuses_to_start() {
    let listen = free_addr().to_string();
    // No FARO_PLAINTEXT, no FARO_TLS_* (the test's own environment has none).
    let mut stream = Faro::spawn_env("mtls", "stream", &["--stream-listen", &listen], &[]);
    let status = stream.exited(Duration::from_secs(30)).await;
    assert!(!status.success());
    let err = std::fs::read_to_string(&stream.log).expect("log");
    assert!(
        err.contains("--plaintext") && err.contains("--tls-ca"),
        "{err}"
    );
}

fn faro(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_faro"))
        .args(args)
        .env_remove("FARO_PLAINTEXT")
        .env("RUST_LOG", "warn")
        .output()
        .expect("faro runs")
}

/// The binary end to end: `faro certs` writes the files, a `faro stream`
/// process serves with its own, `faro health` (the Kubernetes probe) checks it
/// with the operator's and fails without one, and an ingest holding the
/// edge's certificate refuses to start (it would call as the wrong identity).
#[tokio::test]
async fn faro_certs_make_a_working_deployment_of_real_processes() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("certs-{}", uuid::Uuid::new_v4().simple()));
    let d = dir.display().to_string();
    let out =
        tokio::task::spawn_blocking(move || faro(&["certs", "--out", &d, "--dns", "faro.test"]))
            .await
            .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        printed["files"].as_array().map(Vec::len),
        Some(11),
        "{printed}"
    );
    let path = |f: &str| dir.join(f).display().to_string();

    let addr = free_addr();
    let listen = addr.to_string();
    let (ca, cert, key) = (path("ca.pem"), path("stream.pem"), path("stream-key.pem"));
    let _stream = Faro::spawn_env(
        "mtls",
        "stream",
        &["--stream-listen", &listen],
        &[
            ("FARO_TLS_CA", &ca),
            ("FARO_TLS_CERT", &cert),
            ("FARO_TLS_KEY", &key),
            (
                "FARO_REDIS_PREFIX",
                &format!("faro-it:{}:", uuid::Uuid::new_v4().simple()),
            ),
        ],
    );
    wait_listening(addr).await;
    let url = format!("https://{addr}");
    let (u, c, o, k) = (
        url.clone(),
        path("ca.pem"),
        path("operator.pem"),
        path("operator-key.pem"),
    );
    let (ok, anonymous) = tokio::task::spawn_blocking(move || {
        let tls = ["--tls-ca", &c, "--tls-cert", &o, "--tls-key", &k];
        let mut ok = faro(&[&["health", "--url", &u][..], &tls[..]].concat());
        // The stream may still be finding Redis (NOT_SERVING): a bounded wait.
        for _ in 0..100 {
            if ok.status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            ok = faro(&[&["health", "--url", &u][..], &tls[..]].concat());
        }
        let anonymous = faro(&[
            "health",
            "--url",
            &u.replace("https", "http"),
            "--plaintext",
        ]);
        (ok, anonymous)
    })
    .await
    .expect("join");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("SERVING"));
    assert!(!anonymous.status.success(), "a plaintext probe is refused");

    let (c, e, k) = (path("ca.pem"), path("edge.pem"), path("edge-key.pem"));
    let wrong = tokio::task::spawn_blocking(move || {
        faro(&[
            "ingest",
            "--tls-ca",
            &c,
            "--tls-cert",
            &e,
            "--tls-key",
            &k,
            "--ingest-listen",
            "127.0.0.1:0",
        ])
    })
    .await
    .expect("join");
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("spiffe://faro/ingest"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
