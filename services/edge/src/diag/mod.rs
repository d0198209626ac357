//! Diagnostics for operators, behind `FARO_ADMIN_TOKEN` (routed through
//! `admin`, which authenticates and audits):
//!
//! - `GET /api/v1/webhooks/health` (`health.rs`): Redis, Postgres (through
//!   conversations), each service's gRPC health, the queue; 503 when a part
//!   is down.
//! - `GET /api/v1/webhooks/stats?platform=&hours=` (`stats.rs`): what every
//!   edge and ingest process counted, merged from Redis' minute buckets
//!   (`faro_proto::diag`).
//! - `GET /api/v1/webhooks/recent?limit=&status=` (`recent.rs`): the latest
//!   webhook attempts, refused ones included.
//!
//! This file is the recording side: what one webhook attempt leaves in the
//! process's tally, after its answer is decided and without waiting on Redis.

mod health;
mod recent;
mod stats;

use std::time::{Duration, Instant};

use faro_proto::diag::Diag;
use serde_json::json;

pub(crate) use health::health;
pub(crate) use recent::recent;
pub(crate) use stats::stats;

use crate::error::ApiError;

/// The platforms a query may name (the names the figures carry).
pub(crate) const PLATFORMS: [&str; 4] = ["whatsapp", "messenger", "instagram", "ycloud"];

/// Latency stages: the edge's answer (arrival to 200) and a job's arrival
/// to its events stored (ingest).
pub(crate) const STAGES: [&str; 2] = ["edge", "stored"];

/// Account ids in a refused body are whatever the sender wrote: shown cut.
const MAX_ACCOUNT_CHARS: usize = 64;

/// What one webhook attempt learned on its way, filled by `webhook::deliver`.
#[derive(Debug, Default)]
pub(crate) struct Attempt {
    /// Body bytes read (0 if refused before reading).
    pub bytes: usize,
    /// The first account the body named (once verified, the first verified
    /// one), and how many it named.
    pub account: Option<String>,
    pub accounts: usize,
    /// The tenant of the verified app's first route.
    pub tenant: Option<String>,
    /// When the signature verified.
    pub verified_at: Option<Instant>,
    /// The answer's request id, and whether the job was deferred by the
    /// tenant's rate.
    pub request_id: Option<String>,
    pub deferred: bool,
}

impl Attempt {
    pub(crate) fn named(&mut self, ids: &std::collections::BTreeSet<String>) {
        self.accounts = ids.len();
        self.account = ids
            .iter()
            .next()
            .map(|a| a.chars().take(MAX_ACCOUNT_CHARS).collect());
    }
}

/// The outcome of an answer, as `recent?status=` filters it.
pub(crate) fn outcome(status: u16, deferred: bool) -> &'static str {
    match status {
        200 if deferred => "deferred",
        200..=299 => "accepted",
        400..=499 => "rejected",
        _ => "failed",
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Counts one answered webhook POST: received; verified; accepted or
/// deferred (with the edge stage's latency); rejected (4xx) or an error
/// (5xx) by its code; and the attempt for the recent list.
pub(crate) fn record(
    diag: &Diag,
    platform: &'static str,
    arrived: Instant,
    status: u16,
    code: Option<&'static str>,
    attempt: &Attempt,
) {
    if !diag.is_on() {
        return;
    }
    let took = arrived.elapsed();
    diag.count(platform, "received", "", 1);
    if attempt.verified_at.is_some() {
        diag.count(platform, "verified", "", 1);
    }
    let outcome = outcome(status, attempt.deferred);
    match outcome {
        "accepted" | "deferred" => {
            diag.count(platform, outcome, "", 1);
            diag.latency(platform, "edge", took);
        }
        "rejected" => diag.count(platform, "rejected", code.unwrap_or("unknown"), 1),
        _ => diag.count(platform, "errors", code.unwrap_or("unknown"), 1),
    }
    let entry = json!({
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "platform": platform,
        "status": status,
        "outcome": outcome,
        "reason": code,
        "account": attempt.account,
        "accounts": attempt.accounts,
        "tenant": attempt.tenant,
        "bytes": attempt.bytes,
        "request_id": attempt.request_id,
        "timings_ms": {
            "total": ms(took),
            "verify": attempt.verified_at.map(|v| ms(v.duration_since(arrived))),
            "queue": attempt.verified_at.filter(|_| status == 200).map(|v| ms(v.elapsed())),
        },
    });
    diag.attempt(entry.to_string());
}

/// `name` parsed as an integer in `range`, or a 400 naming the parameter.
pub(crate) fn int_param(
    name: &str,
    value: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ApiError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_argument",
                format!(
                    "{name} must be an integer from {} to {}, got {value:?}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// The query's pairs, refusing a parameter not in `known` or given twice.
pub(crate) fn query_pairs(
    query: Option<&str>,
    known: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    for (n, (k, _)) in pairs.iter().enumerate() {
        if !known.contains(&k.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_argument",
                format!("unknown parameter {k:?}; known: {}", known.join(", ")),
            ));
        }
        if pairs[..n].iter().any(|(p, _)| p == k) {
            return Err(ApiError::bad_request(
                "invalid_argument",
                format!("parameter {k:?} given twice"),
            ));
        }
    }
    Ok(pairs)
}

/// A `platform` value, or a 400 naming the parameter.
pub(crate) fn platform_param(value: &str) -> Result<&'static str, ApiError> {
    PLATFORMS
        .iter()
        .find(|p| **p == value)
        .copied()
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_argument",
                format!(
                    "platform must be one of {}, got {value:?}",
                    PLATFORMS.join(", ")
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_read_strictly() {
        assert!(query_pairs(Some("hours=2&platform=whatsapp"), &["hours", "platform"]).is_ok());
        assert!(query_pairs(Some("hours=2&hours=3"), &["hours"]).is_err());
        assert!(query_pairs(Some("colour=red"), &["hours"]).is_err());
        assert_eq!(int_param("hours", "24", 1..=24).ok(), Some(24));
        for bad in ["0", "25", "-1", "two", ""] {
            let e = int_param("hours", bad, 1..=24).expect_err("refused");
            assert!(e.message.contains("hours"), "{}", e.message);
        }
        assert_eq!(platform_param("ycloud").ok(), Some("ycloud"));
        assert!(platform_param("facebook").is_err());
        assert_eq!(outcome(200, true), "deferred");
        assert_eq!(outcome(401, false), "rejected");
        assert_eq!(outcome(503, false), "failed");
    }
}
