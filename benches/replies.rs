//! Agents' replies under load (issue 14): `POST /api/v1/conversations/{id}/messages`
//! at a fixed rate, through ingest's reply queue and worker, to a fake Graph
//! API on loopback. Measures POST → the fake platform receiving the send, and
//! the POST's own answer.
//!
//! `cargo bench --bench replies`; env: FARO_BENCH_RATE (replies a second,
//! default 100), FARO_BENCH_N (replies, default 10 s worth), FARO_BENCH_THREADS
//! (conversations the replies spread over, default 50), FARO_BENCH_IN_FLIGHT
//! (requests open at once, default 256; latency is still timed from when each
//! reply was due), FARO_BENCH_WARMUP (replies sent at the same rate before
//! the measured ones, default 2 s worth, reported apart: see `run`),
//! FARO_BENCH_HISTORY and FARO_BENCH_OTHER_THREADS (the past
//! each tenant is given before the run, see `history`). Everything shares
//! this machine's cores, so the figures are a floor, not a ceiling.
//!
//! It prints how many replies each CreateReply transaction stored (from
//! conversations' `/metrics`). It also prints the CPU each reply cost, which load on the machine
//! barely changes (unlike latency): this process (edge, ingest,
//! conversations, stream, the load generator and the fake platform, all
//! in-process) and the Postgres backends serving this bench's database, from
//! /proc between the first POST and the last send received.

#[allow(dead_code)]
#[path = "../tests/it/clients.rs"]
mod clients;
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../tests/it/configs.rs"]
mod configs;
#[allow(dead_code)]
#[path = "../tests/it/fake_platform.rs"]
mod fake_platform;
#[path = "support/figures.rs"]
mod figures;
#[allow(dead_code)]
#[path = "../tests/it/replies_support.rs"]
mod replies_support;
#[allow(dead_code)]
#[path = "../tests/it/test_db.rs"]
mod test_db;

use figures::{env, report};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;

/// CPU time (user + system) of a process so far, in milliseconds.
fn cpu_ms(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // After the command name (which may hold spaces): fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|r| r.1).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks * 10.0 // USER_HZ is 100 on Linux
}

/// The machine's Redis servers (the bench's queues and pub/sub live in one
/// of them; nothing else should be using them while it runs).
fn redis_pids() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "redis-server")
        })
        .collect()
}

/// Which reply a request to the fake platform sends ("reply {i}").
fn index_of(r: &fake_platform::Recorded) -> usize {
    r.body["text"]["body"]
        .as_str()
        .and_then(|b| b.strip_prefix("reply "))
        .and_then(|i| i.parse().ok())
        .expect("a bench reply")
}

/// (this process, the bench database's Postgres backends, Redis) CPU so far.
async fn cpu_now(db: &sqlx::PgPool) -> (f64, f64, f64) {
    let pids: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            .fetch_all(db)
            .await
            .unwrap_or_default();
    let pg = pids.iter().map(|p| cpu_ms(&p.to_string())).sum();
    let redis = redis_pids().iter().map(|p| cpu_ms(p)).sum();
    (cpu_ms("self"), pg, redis)
}

async fn run(n: usize, warm_up: usize, rate: usize, threads: usize, in_flight: usize) {
    let s = replies_support::start().await;
    let mut open = Vec::new();
    for _ in 0..threads {
        open.push(
            s.thread(
                replies_support::Platform::WhatsApp,
                false,
                chrono::Duration::hours(1),
            )
            .await,
        );
    }
    // Timed from when the reply was due, not when a connection was free:
    // a server that falls behind shows its queue (no coordinated omission).
    let post = |i: usize, t0: Instant| {
        let (s, t) = (&s, &open[i % threads]);
        async move {
            let (status, _) = s
                .reply(
                    t,
                    &format!("bench-{i}"),
                    json!({"text": format!("reply {i}")}),
                )
                .await;
            (i, t0, t0.elapsed(), status)
        }
    };
    history(&s.cluster.db.owner).await;
    // Open loop over `range`: a fixed arrival rate, whatever the latency; at
    // most `in_flight` requests (connections) at once, as an agent's browsers
    // would not open thousands: the edge caps connections per address.
    let drive = |range: std::ops::Range<usize>| {
        let post = &post;
        async move {
            let start = Instant::now();
            let first = range.start;
            let due = |i: usize| start + Duration::from_secs_f64((i - first) as f64 / rate as f64);
            let mut pending = futures::stream::FuturesUnordered::new();
            let mut next = range.start;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut posted = Vec::with_capacity(range.len());
            while next < range.end || !pending.is_empty() {
                tokio::select! {
                    _ = tick.tick(), if next < range.end => {
                        while next < range.end && due(next) <= Instant::now() && pending.len() < in_flight {
                            pending.push(post(next, due(next)));
                            next += 1;
                        }
                    }
                    Some(r) = pending.next(), if !pending.is_empty() => posted.push(r),
                }
            }
            (start, posted)
        }
    };
    // The warm-up: the same load for `warm_up` replies first (numbered after
    // the measured ones), all sent before the run starts, so that the run
    // measures the steady state, not pools filling, connections opening and
    // each new database connection planning the reply functions' statements.
    let (_, warm) = drive(n..n + warm_up).await;
    let warm_refused = warm.iter().filter(|p| p.3 != 202).count();
    let warm_got = s
        .fake
        .wait_requests_for(warm_up - warm_refused, Duration::from_secs(300))
        .await;
    let mut warm_e2e = Histogram::<u64>::new(3).expect("histogram");
    for r in &warm_got {
        if let Some((_, t0, _, _)) = warm.iter().find(|p| p.0 == index_of(r)) {
            warm_e2e
                .record(r.at.saturating_duration_since(*t0).as_micros() as u64)
                .ok();
        }
    }
    let batches_before = batches(&s.cluster).await;
    let cpu_before = cpu_now(&s.cluster.db.owner).await;
    let (start, posted) = drive(0..n).await;
    let refused = posted.iter().filter(|p| p.3 != 202).count();
    let got: Vec<_> = s
        .fake
        .wait_requests_for(
            warm_up - warm_refused + n - refused,
            Duration::from_secs(300),
        )
        .await
        .into_iter()
        .filter(|r| index_of(r) < n)
        .collect();
    let elapsed = start.elapsed();
    let cpu_after = cpu_now(&s.cluster.db.owner).await;
    let mut sent_at = vec![None; n];
    for (i, t0, _, _) in &posted {
        sent_at[*i] = Some(*t0);
    }
    let mut e2e = Histogram::<u64>::new(3).expect("histogram");
    // The same by the second each reply was due: whether a tail is the
    // warm-up, a stall, or spread over the run.
    let mut by_second: Vec<Histogram<u64>> = Vec::new();
    for r in &got {
        let i = index_of(r);
        let t0 = sent_at[i].expect("posted");
        let us = r.at.saturating_duration_since(t0).as_micros() as u64;
        e2e.record(us).ok();
        let second = t0.saturating_duration_since(start).as_secs() as usize;
        while by_second.len() <= second {
            by_second.push(Histogram::new(3).expect("histogram"));
        }
        by_second[second].record(us).ok();
    }
    let mut answer = Histogram::<u64>::new(3).expect("histogram");
    for (_, _, d, _) in posted {
        answer.record(d.as_micros() as u64).ok();
    }
    println!(
        "\nreplies: {n} at a fixed {rate}/s over {threads} conversations, after {warm_up} to warm up (refused: {warm_refused})"
    );
    println!("refused (not 202, e.g. 503 when overloaded): {refused}");
    report("POST answer (202)", &answer);
    report("POST -> platform receives", &e2e);
    report("(the warm-up's, apart)", &warm_e2e);
    let p99s: Vec<String> = by_second
        .iter()
        .map(|h| format!("{:.0}", h.value_at_quantile(0.99) as f64 / 1000.0))
        .collect();
    println!(
        "POST -> platform p99 by the second due (ms): {}",
        p99s.join(" ")
    );
    println!("throughput: {:.0} sent/s", n as f64 / elapsed.as_secs_f64());
    println!(
        "cpu per reply: {:.2} ms this process, {:.2} ms postgres (this database's backends, summed at each end), {:.2} ms redis",
        (cpu_after.0 - cpu_before.0) / n as f64,
        (cpu_after.1 - cpu_before.1).max(0.0) / n as f64,
        (cpu_after.2 - cpu_before.2).max(0.0) / n as f64,
    );
    if let (Some((sum0, count0)), Some((sum1, count1))) =
        (batches_before, batches(&s.cluster).await)
    {
        let (sum, count) = (sum1 - sum0, count1 - count0);
        println!(
            "replies per CreateReply transaction: {:.2} ({count} transactions)",
            sum / count.max(1.0)
        );
    }
    s.cluster.stop().await;
}

/// Gives every tenant a past, then analyses, so the bench measures a
/// database in its steady state: each bench thread gets FARO_BENCH_HISTORY
/// older messages (default 200) and each tenant FARO_BENCH_OTHER_THREADS
/// other threads of ten messages (default 20). Without it every table holds
/// one row a tenant when the statements are first planned, and the plans
/// cached then (a tenant's whole thread scanned to update one message) are
/// kept for the whole run, as they would be for a fresh deployment until
/// autovacuum's first ANALYZE. The past's agent messages were replies: their
/// idempotency keys are kept too (an empty `reply_requests` was planned as a
/// sequential scan, which every later look-up then paid as the table grew).
async fn history(db: &sqlx::PgPool) {
    let per_thread = env("FARO_BENCH_HISTORY", 200) as i32;
    let others = env("FARO_BENCH_OTHER_THREADS", 20) as i32;
    let statements = [
        "INSERT INTO conversations (tenant_id, id, location_id, channel, customer_id, customer_name,
                                    last_message_at, created_at, updated_at)
         SELECT c.tenant_id, gen_random_uuid(), c.location_id, c.channel, c.customer_id || '-' || g,
                'customer ' || g, now() - interval '3 days', now() - interval '9 days',
                now() - interval '3 days'
         FROM conversations c, generate_series(1, $1) g",
        "INSERT INTO messages (tenant_id, id, conversation_id, sender_type, text, direction, channel,
                               channel_message_id, message_type, sender_id, recipient_id, \"timestamp\",
                               status)
         SELECT c.tenant_id, gen_random_uuid(), c.id,
                CASE WHEN g % 2 = 0 THEN 'customer' ELSE 'agent' END, 'earlier message ' || g,
                CASE WHEN g % 2 = 0 THEN 'inbound' ELSE 'outbound' END, c.channel,
                'history-' || c.id || '-' || g, 'text', NULL, NULL,
                now() - interval '2 days' - g * interval '1 minute',
                CASE WHEN g % 2 = 0 THEN NULL ELSE 'read' END
         FROM conversations c,
              generate_series(1, CASE WHEN c.customer_id LIKE '%-%' THEN 10 ELSE $1 END) g",
        "INSERT INTO reply_requests (tenant_id, idempotency_key, request_hash, message_id)
         SELECT tenant_id, 'history-' || id, '\\x00', id FROM messages WHERE direction = 'outbound'",
        "ANALYZE",
    ];
    let [threads, messages, keys, analyze] = statements;
    let run = |q: sqlx::query::Query<'static, sqlx::Postgres, _>| async move {
        q.execute(db).await.expect("bench history");
    };
    run(sqlx::query(threads).bind(others)).await;
    run(sqlx::query(messages).bind(per_thread)).await;
    run(sqlx::query(keys)).await;
    run(sqlx::query(analyze)).await;
}

/// conversations' reply batches (`conversations_reply_batch_calls` sum and
/// count), from its metrics endpoint: whether replies were stored together.
async fn batches(c: &cluster::Cluster) -> Option<(f64, f64)> {
    let text = c
        .http
        .get(format!("http://{}/metrics", c.metrics.conversations))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    Some((
        value("conversations_reply_batch_calls_sum")?,
        value("conversations_reply_batch_calls_count")?,
    ))
}

fn main() {
    if let Ok(filter) = std::env::var("FARO_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let benching = std::env::args().any(|a| a == "--bench");
    let rate = env("FARO_BENCH_RATE", 100);
    let n = if benching {
        env("FARO_BENCH_N", rate * 10)
    } else {
        50
    };
    let threads = env("FARO_BENCH_THREADS", 50);
    let in_flight = env("FARO_BENCH_IN_FLIGHT", 256).max(1);
    let warm_up = if benching {
        env("FARO_BENCH_WARMUP", rate * 2)
    } else {
        0
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run(n, warm_up, rate, threads.min(n).max(1), in_flight));
}
