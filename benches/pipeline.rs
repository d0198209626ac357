//! The whole pipeline under load: signed WhatsApp webhooks posted to the real
//! edge by many concurrent clients, through ingest, conversations and stream,
//! to an agent's WebSocket. Measures the edge's answer (ack) latency, the
//! webhook → WebSocket latency and the throughput of both.
//!
//! `cargo bench --bench pipeline`; env: FARO_BENCH_N (webhooks),
//! FARO_BENCH_CONCURRENCY (closed loop) or FARO_BENCH_RATE (open loop, per
//! second), FARO_BENCH_WORKERS / FARO_BENCH_BATCH (ingest), FARO_BENCH_LOG,
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

use figures::{env, report};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use hdrhistogram::Histogram;

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
    let mut ws = c.websocket(&c.token(&tenant.id, 3600)).await;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();

    // The agent: records when each message arrives.
    let expected = n;
    let sent_rx = sent.clone();
    let agent = tokio::spawn(async move {
        let mut e2e = Histogram::<u64>::new(3).expect("histogram");
        let mut seen = 0;
        while seen < expected {
            let event = ws.next_event().await;
            let id = event["message"]["channel_message_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(t0) = sent_rx.lock().expect("lock").get(&id) {
                e2e.record(t0.elapsed().as_micros() as u64).ok();
                seen += 1;
            }
        }
        (e2e, Instant::now())
    });

    let bodies: Vec<(String, String)> = (0..n)
        .map(|i| {
            let id = format!("wamid.BENCH{i:08}");
            // Many customers, as in a real inbox; a hot thread would serialize on its row lock.
            let customer = format!("52155500{:05}", i % 1000);
            let body = cluster::whatsapp_text(
                &tenant,
                &id,
                &customer,
                "¿Hay mesa para 4 a las 21h? 🍷",
                1_700_000_000 + i as i64,
            );
            (id, body)
        })
        .collect();
    let post = |(id, body): (String, String)| {
        let (c, sent, secret) = (&c, sent.clone(), tenant.app_secret.clone());
        async move {
            let sig = faro_edge::sign_meta_payload(secret.as_bytes(), body.as_bytes());
            let t0 = Instant::now();
            sent.lock().expect("lock").insert(id, t0);
            let (status, _) = c.post_webhook(body.as_bytes(), Some(&sig)).await;
            assert_eq!(status, 200);
            t0.elapsed()
        }
    };
    let start = Instant::now();
    let acks: Vec<Duration> = match rate {
        // Closed loop: `concurrency` clients posting as fast as answers come.
        None => {
            futures::stream::iter(bodies)
                .map(post)
                .buffer_unordered(concurrency)
                .collect()
                .await
        }
        // Open loop: a fixed arrival rate, whatever the latency, as Meta sends.
        Some(rate) => {
            let mut pending = futures::stream::FuturesUnordered::new();
            let mut bodies = bodies.into_iter();
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut acks = Vec::with_capacity(n);
            let mut due = 0.0_f64;
            'send: loop {
                tokio::select! {
                    _ = tick.tick() => {
                        due += rate as f64 / 1000.0;
                        while due >= 1.0 {
                            due -= 1.0;
                            match bodies.next() {
                                Some(b) => pending.push(post(b)),
                                None => break 'send,
                            }
                        }
                    }
                    Some(d) = pending.next(), if !pending.is_empty() => acks.push(d),
                }
            }
            while let Some(d) = pending.next().await {
                acks.push(d);
            }
            acks
        }
    };
    let acked = start.elapsed();
    let (e2e, last) = tokio::time::timeout(Duration::from_secs(300), agent)
        .await
        .expect("every message reaches the agent")
        .expect("agent task");
    let delivered = last - start;

    let mut ack = Histogram::<u64>::new(3).expect("histogram");
    for d in acks {
        ack.record(d.as_micros() as u64).ok();
    }
    match rate {
        None => println!("\npipeline: {n} signed webhooks, {concurrency} concurrent clients"),
        Some(r) => println!("\npipeline: {n} signed webhooks at a fixed {r}/s"),
    }
    report("ack (HTTP 200)", &ack);
    report("webhook -> websocket", &e2e);
    println!(
        "throughput: {:.0} acks/s, {:.0} delivered/s",
        n as f64 / acked.as_secs_f64(),
        n as f64 / delivered.as_secs_f64()
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
