//! `faro loadgen`, the many-sockets benchmark's client (scripts/bench-sockets),
//! run as real processes against a cluster: every socket it opens gets every
//! marked event, relayed or through a webhook, and its report says so. A
//! benchmark tool that lost or misattributed events would publish false
//! figures without anyone noticing; this keeps it honest (and compiling).

use std::{path::Path, time::Duration};

use crate::{cluster::Cluster, process::Faro};

const SOCKETS: u64 = 50;

/// Runs `faro loadgen <args>` to completion (at most 30 s) and expects success.
async fn loadgen(tag: &str, args: &[&str]) {
    let mut p = Faro::spawn(tag, "loadgen", args);
    let status = p.exited(Duration::from_secs(30)).await;
    assert!(status.success(), "faro loadgen {args:?}: see {}", p.log);
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("written")).expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_sockets_get_every_marked_event_and_the_report_counts_them() {
    let c = Cluster::start().await;
    let t = c.tenant("loadgen").await;
    let token = c.token(&t.id, 600);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("loadgen-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (ready, out) = (file("ready.json"), file("sockets.json"));
    let (relay, webhook, report) = (
        file("relay.json"),
        file("webhook.json"),
        file("report.json"),
    );
    let (url, sockets) = (
        format!("ws://{}/api/v1/messages/stream", c.edge),
        SOCKETS.to_string(),
    );
    let mut client = Faro::spawn(
        &c.db.name,
        "loadgen",
        &[
            "sockets",
            "--url",
            &url,
            "--token",
            &token,
            "--sockets",
            &sockets,
            "--source",
            "127.0.0.1,127.0.0.2",
            "--marker",
            "itlg",
            "--events",
            "2",
            "--ready-file",
            &ready,
            "--out",
            &out,
            "--wait-secs",
            "30",
        ],
    );
    for _ in 0..400 {
        if Path::new(&ready).exists() || !client.running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        json(Path::new(&ready))["connected"],
        SOCKETS,
        "log: {}",
        client.log
    );

    let (stream, edge) = (format!("http://{}", c.stream), c.edge.to_string());
    loadgen(
        &c.db.name,
        &[
            "publish",
            "--via",
            "relay",
            "--stream-url",
            &stream,
            "--tenant",
            &t.id,
            "--location",
            &t.location_id,
            "--marker",
            "itlg",
            "--out",
            &relay,
        ],
    )
    .await;
    loadgen(
        &c.db.name,
        &[
            "publish",
            "--via",
            "webhook",
            "--edge",
            &edge,
            "--app-secret",
            &t.app_secret,
            "--phone-number-id",
            &t.phone_number_id,
            "--marker",
            "itlg",
            "--first",
            "1",
            "--out",
            &webhook,
        ],
    )
    .await;
    let status = client.exited(Duration::from_secs(30)).await;
    assert!(status.success(), "log: {}", client.log);
    loadgen(
        &c.db.name,
        &[
            "report",
            "--published",
            &relay,
            "--published",
            &webhook,
            &out,
            "--out",
            &report,
        ],
    )
    .await;

    let report = json(Path::new(&report));
    assert_eq!(report["connected"], SOCKETS);
    let events = report["events"].as_array().expect("events");
    assert_eq!(events.len(), 2);
    for (e, via) in events.iter().zip(["relay", "webhook"]) {
        assert_eq!(e["via"], via);
        assert_eq!(
            e["received"], SOCKETS,
            "every socket got {via}'s event: {e}"
        );
        assert_eq!(e["missing"], 0);
        assert!(e["max_ms"].as_f64().expect("max") >= e["p50_ms"].as_f64().expect("p50"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    c.stop().await;
}
