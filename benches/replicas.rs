//! Throughput of the replicated layout against one replica of each: the same
//! signed-webhook load (closed loop, round-robin over the edges, one agent of
//! the tenant on every edge) against real `faro` processes laid out as
//! tests/it/replica_set.rs does: 1× each in plaintext, 1× each under mTLS,
//! and 2 edges, 2 ingests, 2 streams and one conversations under mTLS.
//! Layouts run interleaved (round 1 of each, then round 2, ...), so a
//! neighbour's load on this shared machine falls on all of them alike; each
//! run prints the load average before it, and each process's CPU time and
//! peak RSS (from /proc) for the resource requests in k8s/.
//!
//! `scripts/bench-replicas` (`cargo bench --bench replicas`: a release
//! `faro`); env: FARO_BENCH_N (webhooks per run), FARO_BENCH_ROUNDS,
//! FARO_BENCH_CONCURRENCY.

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
#[allow(dead_code)]
#[path = "../tests/it/process.rs"]
mod process;
#[allow(dead_code)]
#[path = "../tests/it/replica_set.rs"]
mod replica_set;
#[allow(dead_code)]
#[path = "../tests/it/test_db.rs"]
mod test_db;

use figures::env;
use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;

/// utime + stime of `pid`, in seconds (clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, s)| s);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// A field of /proc/<pid>/status in MiB (VmHWM: the peak RSS).
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run(name: &str, replicas: usize, tls: Option<&Path>, n: usize, concurrency: usize) {
    let load = load_average();
    let c = cluster::Cluster::start_with(cluster::Options {
        pki: tls.map(|dir| Arc::new(replica_set::pki_from(dir))),
        ingest: false,
        conversations: false,
        ..cluster::Options::default()
    })
    .await;
    let r = replica_set::start(
        &c,
        &replica_set::Layout {
            replicas,
            tls,
            env: &[("RUST_LOG", "warn")],
            ingest: &["--ingest-workers", "2", "--ingest-batch", "64"],
        },
    )
    .await;
    let tenant = c.tenant("bench").await;
    let mut agents = Vec::new();
    for &edge in &r.edges {
        let mut ws = c.websocket_at(edge, &c.token(&tenant.id, 3600)).await;
        agents.push(tokio::spawn(async move {
            let mut seen = 0;
            while seen < n {
                if ws.next_event().await["type"] == "message.created" {
                    seen += 1;
                }
            }
            Instant::now()
        }));
    }
    let cpu0: Vec<f64> = r.pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let start = Instant::now();
    let edges = &r.edges;
    let statuses: Vec<u16> = futures::stream::iter(0..n)
        .map(|i| {
            let id = format!("wamid.BENCH{i:08}");
            let customer = format!("52155500{:05}", i % 1000);
            let body = cluster::whatsapp_text(&tenant, &id, &customer, "¿Hay mesa?", i as i64);
            let (c, edge, secret) = (&c, edges[i % edges.len()], &tenant.app_secret);
            async move { c.post_signed_at(edge, &body, secret).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let acked = start.elapsed();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every webhook answered 200"
    );
    let mut last = start;
    for a in agents {
        let t = tokio::time::timeout(Duration::from_secs(300), a)
            .await
            .expect("every message reaches every agent")
            .expect("agent");
        last = last.max(t);
    }
    let delivered = last - start;
    let mut roles: BTreeMap<&str, (usize, f64, f64)> = BTreeMap::new();
    for ((role, pid), before) in r.pids.iter().zip(cpu0) {
        let e = roles.entry(*role).or_default();
        e.0 += 1;
        e.1 += cpu_seconds(*pid) - before;
        e.2 = e.2.max(status_mib(*pid, "VmHWM"));
    }
    let per_role: Vec<String> = roles
        .iter()
        .map(|(role, (k, cpu, rss))| {
            format!(
                "{role}x{k} {cpu:.1} cpu-s = {:.2} cores per 1k msg/s, peak RSS {rss:.0} MiB",
                cpu / (n as f64 / 1000.0)
            )
        })
        .collect();
    println!(
        "{name:<12} n={n} load({load}) {:>6.0} acks/s {:>6.0} delivered/s | {}",
        n as f64 / acked.as_secs_f64(),
        n as f64 / delivered.as_secs_f64(),
        per_role.join("; ")
    );
    assert_eq!(
        c.count("SELECT count(*) FROM messages").await,
        n as i64,
        "every message stored once"
    );
    drop(r);
    c.stop().await;
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: keep that cheap.
    let benching = std::env::args().any(|a| a == "--bench");
    let (n, rounds) = if benching {
        (env("FARO_BENCH_N", 10_000), env("FARO_BENCH_ROUNDS", 3))
    } else {
        (200, 1)
    };
    let concurrency = env("FARO_BENCH_CONCURRENCY", 64);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = replica_set::faro_certs();
        for round in 1..=rounds {
            println!("round {round}");
            run("1x plain", 1, None, n, concurrency).await;
            run("1x mTLS", 1, Some(&dir), n, concurrency).await;
            run("2x mTLS", 2, Some(&dir), n, concurrency).await;
        }
        std::fs::remove_dir_all(&dir).ok();
    });
}
