//! The end of `faro loadgen webhooks`: the progress line while it runs, the
//! wait for the last frames, the Postgres check (every acknowledged message
//! stored exactly once), the table and the JSON.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::json;
use sqlx::Connection;

use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{
    sockets, unix_micros,
    webhooks::{Shared, WebhooksArgs},
    write_json,
};

/// One tenant's agent socket: every frame's `<marker>-<n>` is a delivery.
pub(super) async fn subscribe(
    ws: sockets::Ws,
    marker: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut ws = ws;
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => return,
            frame = ws.next() => frame,
        };
        match frame {
            Some(Ok(Message::Text(text))) => {
                let at = unix_micros();
                if let Some(n) = sockets::marked(text.as_str(), &marker) {
                    shared.seen(n, at);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                shared.error("websocket ended".into());
                return;
            }
        }
    }
}

/// One line to stderr every second: a load run is watched, not waited on.
pub(super) async fn progress(shared: Arc<Shared>) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let errors: usize = super::webhooks::errors(&shared).values().sum();
        eprintln!(
            "loadgen: {:.0} s: {} webhooks sent, {} acked, {} messages delivered, {errors} errors",
            started.elapsed().as_secs_f64(),
            shared.webhooks_sent.load(Ordering::Relaxed),
            shared.webhooks_acked.load(Ordering::Relaxed),
            shared.delivered.load(Ordering::Relaxed),
        );
    }
}

fn ms(us: u64) -> f64 {
    (us as f64 / 100.0).round() / 10.0
}

fn summary(h: &Histogram<u64>) -> serde_json::Value {
    json!({"count": h.len(), "p50_ms": ms(h.value_at_quantile(0.5)), "p90_ms": ms(h.value_at_quantile(0.9)),
           "p99_ms": ms(h.value_at_quantile(0.99)), "max_ms": ms(h.max())})
}

/// Counts the stored rows of `ids`: (distinct ids found, extra copies).
async fn stored(url: &str, ids: &[String]) -> anyhow::Result<(usize, u64)> {
    let mut db = sqlx::PgConnection::connect(url)
        .await
        .context("--database-url")?;
    let (mut found, mut extra) = (0, 0);
    for chunk in ids.chunks(10_000) {
        let counts: Vec<i64> = sqlx::query_scalar(
            "SELECT count(*) FROM messages WHERE channel_message_id = ANY($1) GROUP BY channel_message_id",
        )
        .bind(chunk)
        .fetch_all(&mut db)
        .await
        .context("counting the stored messages")?;
        found += counts.len();
        extra += counts
            .iter()
            .map(|c| u64::try_from(c - 1).unwrap_or_default())
            .sum::<u64>();
    }
    db.close().await?;
    Ok((found, extra))
}

pub(super) async fn finish(
    args: &WebhooksArgs,
    shared: &Shared,
    load_secs: f64,
    subscribed: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let drain = Duration::from_secs(args.drain_secs);
    let acked = shared.messages_acked.load(Ordering::Relaxed);
    // Bounded: a lost frame must not hang the run.
    while subscribed
        && shared.delivered.load(Ordering::Relaxed) < acked
        && started.elapsed() < drain
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let delivered_secs = load_secs + started.elapsed().as_secs_f64();
    let ids = super::webhooks::acked_ids(shared);
    let mut check = serde_json::Value::Null;
    let (mut lost, mut duplicated) = (0, 0);
    let mut stored_secs = None;
    if let Some(url) = &args.database_url {
        loop {
            let (found, extra) = stored(url, &ids).await?;
            (lost, duplicated) = (ids.len() - found, extra);
            if lost == 0 || started.elapsed() >= drain {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // When the check first found them all: after the last frame when
        // subscribed (so a floor of the store rate), else within 0.1 s.
        stored_secs = Some(load_secs + started.elapsed().as_secs_f64());
        check = json!({"stored": ids.len() - lost, "lost": lost, "duplicated": duplicated});
    }
    let (ack, e2e) = (
        summary(&super::webhooks::histogram_of(&shared.ack)),
        summary(&super::webhooks::histogram_of(&shared.e2e)),
    );
    let webhooks_acked = shared.webhooks_acked.load(Ordering::Relaxed);
    let per_s = |n: usize, secs: f64| {
        if secs > 0.0 {
            (n as f64 / secs).round()
        } else {
            0.0
        }
    };
    let errors = super::webhooks::errors(shared);
    let report = json!({
        "mode": if args.rate_given() { "open" } else { "closed" },
        "load_secs": load_secs,
        "webhooks_sent": shared.webhooks_sent.load(Ordering::Relaxed),
        "webhooks_acked": webhooks_acked,
        "sent": shared.messages_sent.load(Ordering::Relaxed),
        "acked": acked,
        "delivered": if subscribed { json!(delivered) } else { serde_json::Value::Null },
        "acks_per_s": per_s(webhooks_acked, load_secs),
        "delivered_per_s": per_s(delivered, delivered_secs),
        "stored_per_s": stored_secs.map(|secs| per_s(ids.len() - lost, secs)),
        "rate": args.rate,
        "concurrency": (!args.rate_given()).then_some(args.concurrency),
        "media_every": args.media_every,
        "batch": args.batch,
        "ack": ack, "e2e": if subscribed { e2e.clone() } else { serde_json::Value::Null },
        "errors": errors,
        "database": check,
        "lost": if args.database_url.is_some() { json!(lost) } else { serde_json::Value::Null },
        "duplicated": if args.database_url.is_some() { json!(duplicated) } else { serde_json::Value::Null },
    });
    let row = |name: &str, h: &serde_json::Value| {
        let cell = |k: &str| {
            h[k].as_f64()
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
        };
        format!(
            "{name:<14} {:>8} {:>8} {:>8} {:>8}",
            cell("p50_ms"),
            cell("p90_ms"),
            cell("p99_ms"),
            cell("max_ms")
        )
    };
    eprintln!(
        "\n{:<14} {:>8} {:>8} {:>8} {:>8}\n{}\n{}",
        "latency (ms)",
        "p50",
        "p90",
        "p99",
        "max",
        row("ack", &ack),
        row("end to end", &report["e2e"]),
    );
    eprintln!(
        "webhooks: {} sent, {webhooks_acked} acked ({} acks/s); messages: {} sent, {acked} acked, \
         {delivered} delivered ({} delivered/s)",
        report["webhooks_sent"], report["acks_per_s"], report["sent"], report["delivered_per_s"],
    );
    eprintln!("errors by status: {}", json!(errors));
    if args.database_url.is_some() {
        eprintln!("postgres: lost {lost}, duplicated {duplicated}");
    }
    write_json(args.out.as_deref(), &report)?;
    anyhow::ensure!(
        lost == 0 && duplicated == 0,
        "{lost} acknowledged messages lost, {duplicated} stored more than once"
    );
    Ok(())
}
