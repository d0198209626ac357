//! `faro loadgen report`: the results of several `faro loadgen sockets`
//! processes merged and timed against `faro loadgen publish`: for each marked
//! event, how long it took from being sent to reaching each socket (an HDR
//! histogram over every socket of every process), and how many never got it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::{read_json, write_json};

#[derive(Args)]
pub struct ReportArgs {
    /// A `faro loadgen publish` result; repeat for several.
    #[arg(long = "published", required = true)]
    published: Vec<PathBuf>,
    /// `faro loadgen sockets` results, one per process.
    #[arg(required = true)]
    sockets: Vec<PathBuf>,
    /// Where the report goes (JSON); standard output without it.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One published event: its number, how it went, when it was sent.
struct Sent {
    n: usize,
    via: String,
    at_us: u64,
}

fn sent(published: &Value) -> anyhow::Result<Vec<Sent>> {
    let via = published["via"].as_str().unwrap_or("?").to_owned();
    published["events"]
        .as_array()
        .context("a publish result has `events`")?
        .iter()
        .map(|e| {
            Ok(Sent {
                n: e["n"].as_u64().context("event `n`")?.try_into()?,
                via: via.clone(),
                at_us: e["published_unix_us"]
                    .as_u64()
                    .context("`published_unix_us`")?,
            })
        })
        .collect()
}

fn ms(us: u64) -> f64 {
    // Microseconds to milliseconds, to 0.1 ms.
    (us as f64 / 100.0).round() / 10.0
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let mut events = Vec::new();
    for p in &args.published {
        events.extend(sent(&read_json(p)?)?);
    }
    let clients = args
        .sockets
        .iter()
        .map(|p| read_json(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sum = |field: &str| {
        clients
            .iter()
            .filter_map(|c| c[field].as_u64())
            .sum::<u64>()
    };
    let connected = sum("connected");
    let mut rows = Vec::new();
    for e in &events {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
        let mut first = u64::MAX;
        for c in &clients {
            let receipts = c["receipts_unix_us"][e.n]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for at in receipts.iter().filter_map(Value::as_u64) {
                let latency = at.saturating_sub(e.at_us).max(1);
                first = first.min(latency);
                h.record(latency)?;
            }
        }
        let received = h.len();
        let max = h.max();
        let row = json!({
            "n": e.n, "via": e.via, "received": received,
            "missing": connected.saturating_sub(received),
            "first_ms": ms(if received == 0 { 0 } else { first }),
            "p50_ms": ms(h.value_at_quantile(0.5)), "p90_ms": ms(h.value_at_quantile(0.9)),
            "p99_ms": ms(h.value_at_quantile(0.99)), "max_ms": ms(max),
            // Deliveries per second over the time the last one took.
            "deliveries_per_s": if max == 0 { 0.0 } else { (received as f64 * 1e6 / max as f64).round() },
        });
        eprintln!(
            "event {} via {}: {}/{} sockets, first {} ms, p50 {} ms, p99 {} ms, max {} ms ({} deliveries/s)",
            e.n,
            e.via,
            received,
            connected,
            row["first_ms"],
            row["p50_ms"],
            row["p99_ms"],
            row["max_ms"],
            row["deliveries_per_s"]
        );
        rows.push(row);
    }
    write_json(
        args.out.as_deref(),
        &json!({
            "processes": clients.len(), "sockets": sum("sockets"), "connected": connected,
            "failed": sum("failed"), "events": rows,
        }),
    )
}
