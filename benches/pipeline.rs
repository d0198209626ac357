//! The whole pipeline under load: signed WhatsApp webhooks posted to the real
//! edge, through ingest, conversations and stream, to an agent's WebSocket.
//! The load comes from `faro loadgen webhooks` (the binary built beside this
//! bench, run as a child process: the one load generator, also the tool
//! operators use), pointed at a cluster started here in-process with a
//! tenant of its own; its JSON gives the ack latency, the webhook →
//! WebSocket latency, the throughput of both and the Postgres check (every
//! acknowledged message stored exactly once, else the bench fails).
//!
//! `cargo bench --bench pipeline`; env: FARO_BENCH_N (webhooks),
//! FARO_BENCH_CONCURRENCY (closed loop) or FARO_BENCH_RATE (open loop, per
//! second), FARO_BENCH_MEDIA_EVERY (every Nth message an image or document),
//! FARO_BENCH_WORKERS / FARO_BENCH_BATCH (ingest), FARO_BENCH_LOG,
//! FARO_BENCH_OTLP=1 (export every span to a loopback OTLP collector),
//! FARO_BENCH_METRICS=0 (services without metrics listeners: nothing
//! recorded, for the cost of recording).
//! Everything — load generator, four services, Postgres, Redis — shares this
//! machine's cores, so the figures are a floor, not a ceiling.

#[allow(dead_code)]
#[path = "../tests/it/clients.rs"]
mod clients;
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../tests/it/configs.rs"]
mod configs;
#[path = "support/figures.rs"]
mod figures;
#[path = "support/otlp_sink.rs"]
mod otlp_sink;
#[allow(dead_code)]
#[path = "../tests/it/test_db.rs"]
mod test_db;

use figures::env;

/// One latency line from the loadgen's JSON summary (milliseconds).
fn line(name: &str, h: &serde_json::Value) {
    let ms = |k: &str| h[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "{name:<26} n={:<6} p50={:>7.2} ms  p90={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        h["count"],
        ms("p50_ms"),
        ms("p90_ms"),
        ms("p99_ms"),
        ms("max_ms"),
    );
}

async fn run(n: usize, concurrency: usize, rate: Option<usize>) {
    // Production defaults (faro's --ingest-workers, --ingest-batch) unless told otherwise.
    let c = cluster::Cluster::start_with(cluster::Options {
        ingest_workers: env("FARO_BENCH_WORKERS", 2),
        ingest_batch: env("FARO_BENCH_BATCH", 64),
        metrics: env("FARO_BENCH_METRICS", 1) != 0,
        ..cluster::Options::default()
    })
    .await;
    let tenant = c.tenant("bench").await;
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("pipeline-{}.json", uuid::Uuid::new_v4().simple()));
    let (edge, ws) = (
        c.edge.to_string(),
        format!("ws://{}/api/v1/messages/stream", c.edge),
    );
    let (n_arg, media) = (n.to_string(), env("FARO_BENCH_MEDIA_EVERY", 0).to_string());
    let mode = match rate {
        // Open loop: a fixed arrival rate, whatever the latency, as Meta sends.
        Some(r) => ["--rate".to_owned(), r.to_string()],
        // Closed loop: `concurrency` clients posting as fast as answers come.
        None => ["--concurrency".to_owned(), concurrency.to_string()],
    };
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_faro"))
        .args(["loadgen", "webhooks", "--edge", &edge, "--whatsapp"])
        .arg(&tenant.phone_number_id)
        // Many customers, as in a real inbox; a hot thread would serialize on its row lock.
        .args([
            "--customers",
            "1000",
            "--count",
            &n_arg,
            "--media-every",
            &media,
        ])
        .args(&mode)
        .args(["--ws-url", &ws, "--marker", "bench", "--drain-secs", "300"])
        .arg("--out")
        .arg(&out)
        .env("FARO_LOADGEN_APP_SECRET", &tenant.app_secret)
        .env("FARO_TOKEN", c.token(&tenant.id, 3600))
        .env("FARO_LOADGEN_DATABASE_URL", &c.db.owner_url)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .status()
        .await
        .expect("faro loadgen webhooks starts");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("the loadgen wrote its JSON"))
            .expect("JSON");
    let _ = std::fs::remove_file(&out);
    match rate {
        None => println!("\npipeline: {n} signed webhooks, {concurrency} concurrent clients"),
        Some(r) => println!("\npipeline: {n} signed webhooks at a fixed {r}/s"),
    }
    line("ack (HTTP 200)", &report["ack"]);
    line("webhook -> websocket", &report["e2e"]);
    println!(
        "throughput: {} acks/s, {} delivered/s; errors {}; lost {}, duplicated {}",
        report["acks_per_s"],
        report["delivered_per_s"],
        report["errors"],
        report["lost"],
        report["duplicated"]
    );
    assert!(
        status.success(),
        "faro loadgen webhooks failed (lost or duplicated messages, or errors): {report}"
    );
    assert_eq!(
        report["webhooks_acked"], n,
        "every webhook acknowledged: {report}"
    );
    assert_eq!(
        report["delivered"], n,
        "every message reached the agent: {report}"
    );
    assert_eq!(c.count("SELECT count(*) FROM messages").await, n as i64);
    c.stop().await;
}

fn main() {
    if let Ok(filter) = std::env::var("FARO_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    // `cargo test --benches` runs this with --bench absent: keep that cheap.
    let benching = std::env::args().any(|a| a == "--bench");
    let n = if benching {
        env("FARO_BENCH_N", 20_000)
    } else {
        200
    };
    let concurrency = env("FARO_BENCH_CONCURRENCY", 64);
    let rate = std::env::var("FARO_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let traces = if std::env::var("FARO_BENCH_OTLP").is_ok_and(|v| v == "1") {
            Some(otlp_sink::install().await)
        } else {
            None
        };
        run(n, concurrency, rate).await;
        if let Some((sink, provider)) = traces {
            tokio::task::spawn_blocking(move || provider.shutdown())
                .await
                .ok();
            println!(
                "traces: exported to a loopback OTLP collector, {} spans received",
                sink.0.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    });
}
