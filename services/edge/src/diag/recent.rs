//! `GET /api/v1/webhooks/recent?limit=&status=`: the latest webhook attempts
//! any edge saw (flushed once a second to a stream capped at about
//! `faro_proto::diag::RECENT_MAX`), newest first, refused ones included: time,
//! platform, status, outcome, reason, the first account the body named, the
//! tenant once verified, size and timings. Never a body, a header or a
//! signature.

use std::collections::HashMap;

use faro_proto::diag::{RECENT_MAX, recent_key};
use fred::{interfaces::ClientLike, prelude::StreamsInterface};
use serde_json::{Value as Json, json};

use super::{int_param, query_pairs, stats::unavailable};
use crate::{State, error::ApiError};

/// What `status=` may ask for (the attempts' `outcome`).
const OUTCOMES: [&str; 4] = ["accepted", "deferred", "rejected", "failed"];

pub(crate) async fn recent(state: &State, query: Option<&str>) -> Result<Json, ApiError> {
    let mut limit = 50;
    let mut status: Option<String> = None;
    for (k, v) in query_pairs(query, &["limit", "status"])? {
        match k.as_str() {
            "limit" => limit = int_param("limit", &v, 1..=RECENT_MAX as i64)?,
            _ if OUTCOMES.contains(&v.as_str()) => status = Some(v),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_argument",
                    format!("status must be one of {}, got {v:?}", OUTCOMES.join(", ")),
                ));
            }
        }
    }
    let redis = state.limiter.redis();
    if !redis.is_connected() {
        return Err(unavailable("not connected"));
    }
    // The stream is trimmed approximately: read a little past its bound.
    let entries: Vec<(String, HashMap<String, String>)> = redis
        .xrevrange_values(
            recent_key(&state.config.key_prefix),
            "+",
            "-",
            Some(2 * RECENT_MAX as u64),
        )
        .await
        .map_err(|e| unavailable(&e.to_string()))?;
    let attempts: Vec<Json> = entries
        .into_iter()
        .filter_map(|(_, fields)| serde_json::from_str::<Json>(fields.get("a")?).ok())
        .filter(|a| status.as_deref().is_none_or(|s| a["outcome"] == s))
        .take(usize::try_from(limit).unwrap_or(50))
        .collect();
    Ok(json!({"attempts": attempts}))
}
