//! What the queue holds now: the figures an operator watches (`QueueStats`,
//! and the `ingest_queue_*` gauges, read on each scrape). Read with plain commands, so a missing stream
//! or group (nothing queued yet, or Redis restarted empty) reads as zeros.

use faro_proto::ingest::v1::{ConsumerStats, QueueStatsResponse};
use fred::{
    clients::Client,
    interfaces::{ClientLike, SortedSetsInterface, StreamsInterface},
    types::{ClusterHash, CustomCommand, Value},
};

use crate::{
    Error,
    queue::{GROUP, Keys},
};

/// `hash`: where the key is among the arguments, for Redis Cluster.
fn command(name: &'static str, hash: ClusterHash) -> CustomCommand {
    CustomCommand::new_static(name, hash, false)
}

fn int(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// The milliseconds part of a stream id.
fn id_millis(v: &Value) -> Option<u64> {
    v.as_str()?.split_once('-')?.0.parse().ok()
}

/// `[k1, v1, k2, v2, ...]` or a map, as pairs.
fn pairs(v: Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(m) => m
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
            .collect(),
        other => {
            let mut flat = other.into_array().into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                if let Some(k) = k.as_string() {
                    out.push((k, v));
                }
            }
            out
        }
    }
}

fn nogroup(e: &fred::error::Error) -> bool {
    e.details().starts_with("NOGROUP") || e.details().contains("no such key")
}

pub(crate) async fn queue_stats(client: &Client, keys: &Keys) -> Result<QueueStatsResponse, Error> {
    let mut out = QueueStatsResponse {
        stream_length: client.xlen(&keys.jobs).await?,
        dead_letters: client.xlen(&keys.dead).await?,
        // Jobs waiting in the retry set for their next attempt.
        scheduled_retries: client.zcard(&keys.retry).await?,
        ..Default::default()
    };
    // Summary form: [count, smallest id, greatest id, [[consumer, count], ...]].
    let summary: Value = match client
        .custom(
            command("XPENDING", ClusterHash::FirstKey),
            vec![keys.jobs.as_str(), GROUP],
        )
        .await
    {
        Ok(v) => v,
        Err(e) if nogroup(&e) => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    let summary = summary.into_array();
    out.pending = summary.first().map_or(0, int);
    if out.pending > 0
        && let Some(oldest) = summary.get(1).and_then(id_millis)
    {
        // Redis's clock, not ours: the id was stamped by it.
        let time: Value = client
            .custom(command("TIME", ClusterHash::Random), Vec::<Value>::new())
            .await?;
        let time = time.into_array();
        let now_ms = time.first().map_or(0, int) * 1000 + time.get(1).map_or(0, int) / 1000;
        out.oldest_pending_age_ms = now_ms.saturating_sub(oldest);
    }
    let consumers: Value = client
        .custom(
            command("XINFO", ClusterHash::Offset(1)),
            vec!["CONSUMERS", keys.jobs.as_str(), GROUP],
        )
        .await?;
    for c in consumers.into_array() {
        let mut s = ConsumerStats::default();
        for (k, v) in pairs(c) {
            match k.as_str() {
                "name" => s.name = v.as_string().unwrap_or_default(),
                "pending" => s.pending = int(&v),
                "idle" => s.idle_ms = int(&v),
                _ => {}
            }
        }
        out.consumers.push(s);
    }
    out.consumers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
