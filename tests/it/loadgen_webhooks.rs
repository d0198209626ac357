//! `faro loadgen webhooks` as a real process against a cluster: a few
//! hundred signed webhooks of every platform (WhatsApp batched entries and
//! statuses, Messenger, Instagram, YCloud; every fifth message an image or
//! document, or an attachment) for two tenants, open and closed
//! loop (the second with tenants it provisions itself); its report must say every message was acknowledged, reached its
//! tenant's agent socket, and is stored exactly once. A load tool that
//! miscounted would publish false figures; this keeps it honest. No timing
//! is asserted.

use std::{path::Path, time::Duration};

use faro_proto::conversations::v1::Channel;

use crate::{cluster::Cluster, process::Faro, test_db::JWT_SECRET};

const SECRET: &str = "loadgen-meta-app-secret";
const YCLOUD_SECRET: &str = "loadgen-ycloud-endpoint-secret";
const PAGE: &str = "107856318000777";
const IG: &str = "17841400000000777";
const YCLOUD_NUMBER: &str = "+15550783777";

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("written")).expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_webhooks_reports_every_message_acked_delivered_and_stored_once() {
    let c = Cluster::start().await;
    let app = c.app("loadgen-meta-app", SECRET, "verify-loadgen").await;
    let ycloud = c.app("loadgen-ycloud", YCLOUD_SECRET, "unused").await;
    let a = c.bare_tenant("loadgen-a").await;
    let b = c.bare_tenant("loadgen-b").await;
    c.connect(&a, Channel::Whatsapp, "pn-loadgen-a", &app).await;
    c.connect(&a, Channel::FacebookMessenger, PAGE, &app).await;
    c.connect(&b, Channel::Whatsapp, "pn-loadgen-b", &app).await;
    c.connect(&b, Channel::InstagramDm, IG, &app).await;
    c.connect(&b, Channel::Whatsapp, YCLOUD_NUMBER, &ycloud)
        .await;
    let tokens = format!("{},{}", c.token(&a.0, 600), c.token(&b.0, 600));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "loadgen-webhooks-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let (edge, ws) = (
        c.edge.to_string(),
        format!("ws://{}/api/v1/messages/stream", c.edge),
    );
    let conversations = format!("http://{}", c.conversations);
    let common = [
        "--edge",
        &edge,
        "--app-secret",
        SECRET,
        "--ycloud-secret",
        YCLOUD_SECRET,
        "--customers",
        "7",
        "--batch",
        "3",
        "--status-every",
        "4",
        "--media-every",
        "5",
        "--count",
        "150",
        "--ws-url",
        &ws,
        "--database-url",
        &c.db.owner_url,
        "--drain-secs",
        "20",
    ];
    // Open loop at a fixed rate to the accounts above: 5 accounts, 2 of them
    // WhatsApp with 30 webhooks each, the statuses in rounds 3, 7, …, 27, the
    // other 23 carrying 3 messages; 90 single messages on the other three.
    let given = [
        "--rate",
        "400",
        "--whatsapp",
        "pn-loadgen-a,pn-loadgen-b",
        "--messenger",
        PAGE,
        "--instagram",
        IG,
        "--ycloud",
        YCLOUD_NUMBER,
        "--token",
        &tokens,
    ];
    // Closed loop from four workers to two tenants it provisions itself:
    // 8 accounts (2 WhatsApp with 19 webhooks each, 4 of them statuses),
    // 19 webhooks on the next four, 18 on the last two.
    let provisioned = [
        "--concurrency",
        "4",
        "--provision-tenants",
        "2",
        "--conversations-url",
        &conversations,
        "--jwt-secret",
        JWT_SECRET,
    ];
    for (marker, mode, expected) in [
        ("itlgo", &given[..], 2 * 23 * 3 + 90),
        ("itlgc", &provisioned[..], 2 * 15 * 3 + 4 * 19 + 2 * 18),
    ] {
        let out = dir.join(format!("{marker}.json"));
        let out_arg = out.to_string_lossy().into_owned();
        let mut args = vec!["webhooks", "--marker", marker, "--out", &out_arg];
        args.extend(common);
        args.extend(mode);
        let mut p = Faro::spawn(&c.db.name, "loadgen", &args);
        let status = p.exited(Duration::from_secs(60)).await;
        assert!(
            status.success(),
            "faro loadgen webhooks ({marker}): see {}",
            p.log
        );
        let r = json(&out);
        assert_eq!(r["webhooks_sent"], 150, "{r}");
        assert_eq!(r["webhooks_acked"], 150, "{r}");
        assert_eq!(r["errors"], serde_json::json!({}), "{r}");
        assert_eq!(r["sent"], expected, "{r}");
        assert_eq!(r["acked"], expected, "{r}");
        assert_eq!(
            r["delivered"], expected,
            "every message reached its tenant's socket: {r}"
        );
        assert_eq!(r["database"]["stored"], expected, "{r}");
        assert_eq!(
            (r["lost"].as_u64(), r["duplicated"].as_u64()),
            (Some(0), Some(0)),
            "{r}"
        );
    }
    // Messages 4, 9, 14, … of each run are media: 45 of 228, then 40 of 202.
    assert_eq!(
        c.count(
            "SELECT count(*) FROM messages WHERE message_type IN ('image', 'document', 'file')"
        )
        .await,
        45 + 40,
        "every fifth message was stored as an image, a document or a file"
    );
    let _ = std::fs::remove_dir_all(&dir);
    c.stop().await;
}
