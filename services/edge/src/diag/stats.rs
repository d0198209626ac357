//! `GET /api/v1/webhooks/stats?platform=&hours=`: the minute buckets every
//! edge and ingest process flushed (`faro_proto::diag`) over the last
//! `hours` (1..=24, default 1), summed, per platform and in total.
//!
//! Counts: `received`, `verified`, `accepted`, `deferred`, `rejected` (4xx,
//! by code) and `errors` (5xx, by code) at the edges; `processed` (jobs
//! stored and acknowledged), `failed` (store failures scheduled for a retry)
//! and `dead_letters` (by class) in ingest. Latencies per stage (`edge`:
//! arrival to 200; `stored`: arrival to the job's events stored) as count,
//! p50 and p99, each quantile the upper bound (ms) of the bucket it falls in.

use std::collections::{BTreeMap, HashMap};

use faro_proto::diag::{BOUNDS_MS, RETAIN_HOURS, bucket_key};
use fred::{interfaces::ClientLike, prelude::HashesInterface, types::Value};
use http::StatusCode;
use serde_json::{Map, Value as Json, json};

use super::{PLATFORMS, STAGES, int_param, platform_param, query_pairs};
use crate::{State, error::ApiError};

/// Counts with a detail (`name|detail` fields), shown as objects.
const DETAILED: [&str; 3] = ["rejected", "errors", "dead_letters"];
/// Plain counts, shown as numbers (zero when absent).
const PLAIN: [&str; 6] = [
    "received",
    "verified",
    "accepted",
    "deferred",
    "processed",
    "failed",
];

pub(crate) fn unavailable(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("redis is unavailable: {what}"),
    )
}

pub(crate) async fn stats(state: &State, query: Option<&str>) -> Result<Json, ApiError> {
    let mut platform = None;
    let mut hours = 1;
    for (k, v) in query_pairs(query, &["platform", "hours"])? {
        match k.as_str() {
            "platform" => platform = Some(platform_param(&v)?),
            _ => hours = int_param("hours", &v, 1..=RETAIN_HOURS)?,
        }
    }
    let redis = state.limiter.redis();
    if !redis.is_connected() {
        return Err(unavailable("not connected"));
    }
    let now = chrono::Utc::now();
    let last = now.timestamp().div_euclid(60);
    let first = last - hours * 60 + 1;
    let pipe = redis.pipeline();
    for minute in first..=last {
        let () = pipe
            .hgetall(bucket_key(&state.config.key_prefix, minute))
            .await
            .map_err(|e| unavailable(&e.to_string()))?;
    }
    let buckets: Vec<Value> = pipe.all().await.map_err(|e| unavailable(&e.to_string()))?;
    let mut sum: HashMap<String, i64> = HashMap::new();
    for b in buckets {
        let fields: HashMap<String, i64> = b.convert().unwrap_or_default();
        for (f, n) in fields {
            *sum.entry(f).or_default() += n;
        }
    }
    let shown: Vec<&str> = platform.map_or_else(|| PLATFORMS.to_vec(), |p| vec![p]);
    let mut platforms = Map::new();
    for p in &shown {
        platforms.insert((*p).to_owned(), figures(&sum, &[*p]));
    }
    let since = chrono::DateTime::from_timestamp(first * 60, 0).unwrap_or(now);
    Ok(json!({
        "window": {
            "hours": hours,
            "since": since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "until": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "bucket_seconds": 60,
        },
        "platforms": platforms,
        "total": figures(&sum, &shown),
    }))
}

/// The figures of `platforms` summed.
fn figures(sum: &HashMap<String, i64>, platforms: &[&str]) -> Json {
    let mut out = Map::new();
    for name in PLAIN {
        let n: i64 = platforms
            .iter()
            .map(|p| sum.get(&format!("{p}|{name}")).copied().unwrap_or(0))
            .sum();
        out.insert(name.to_owned(), n.into());
    }
    for name in DETAILED {
        let mut by: BTreeMap<String, i64> = BTreeMap::new();
        for (f, n) in sum {
            let mut parts = f.splitn(3, '|');
            if let (Some(p), Some(fname), Some(detail)) = (parts.next(), parts.next(), parts.next())
                && fname == name
                && platforms.contains(&p)
            {
                *by.entry(detail.to_owned()).or_default() += n;
            }
        }
        out.insert(name.to_owned(), json!(by));
    }
    let mut latency = Map::new();
    for stage in STAGES {
        let mut counts = vec![0i64; BOUNDS_MS.len() + 1];
        for p in platforms {
            for (i, c) in counts.iter_mut().enumerate() {
                *c += sum
                    .get(&format!("{p}|lat|{stage}|{i}"))
                    .copied()
                    .unwrap_or(0);
            }
        }
        latency.insert(
            stage.to_owned(),
            json!({
                "count": counts.iter().sum::<i64>(),
                "p50": quantile(&counts, 0.50),
                "p99": quantile(&counts, 0.99),
            }),
        );
    }
    out.insert("latency_ms".to_owned(), latency.into());
    out.into()
}

/// The upper bound (ms) of the bucket holding quantile `q`; the last bound
/// for what lies beyond it; `None` without observations.
fn quantile(counts: &[i64], q: f64) -> Option<u64> {
    let total: i64 = counts.iter().sum();
    if total <= 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as i64).max(1);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(BOUNDS_MS[i.min(BOUNDS_MS.len() - 1)]);
        }
    }
    BOUNDS_MS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_merged_buckets() {
        let mut counts = vec![0i64; BOUNDS_MS.len() + 1];
        assert_eq!(quantile(&counts, 0.5), None);
        counts[2] = 98; // ≤ 5 ms
        counts[9] = 2; // ≤ 1 s
        assert_eq!(quantile(&counts, 0.5), Some(5));
        assert_eq!(quantile(&counts, 0.99), Some(1_000));
        counts[BOUNDS_MS.len()] = 1_000;
        assert_eq!(quantile(&counts, 0.99), BOUNDS_MS.last().copied());
    }

    #[test]
    fn figures_sum_the_platforms_asked_for() {
        let sum: HashMap<String, i64> = [
            ("whatsapp|received", 3),
            ("ycloud|received", 1),
            ("whatsapp|rejected|invalid_signature", 2),
            ("whatsapp|dead_letters|permanent", 1),
            ("whatsapp|lat|edge|3", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let w = figures(&sum, &["whatsapp"]);
        assert_eq!(w["received"], 3);
        assert_eq!(w["rejected"]["invalid_signature"], 2);
        assert_eq!(w["dead_letters"]["permanent"], 1);
        assert_eq!(w["latency_ms"]["edge"]["p50"], 10);
        assert_eq!(figures(&sum, &PLATFORMS)["received"], 4);
    }
}
