//! The dead-letter queue as operators see it, in one place: the names of
//! platforms and error classes, reading a filter from text (CLI flags, query
//! parameters) and the JSON that `faro dlq` and the edge's admin routes print.
//! One reading, so that the CLI and the HTTP API can never disagree.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::{
    from_timestamp,
    ingest::v1::{
        DeadLetter, DeadLetterFilter, GetDeadLetterResponse, ListDeadLettersResponse, Provider,
        PurgeDeadLettersResponse, QueueStatsResponse, RetryDeadLettersResponse,
    },
    to_timestamp,
};

/// Why a job was dead-lettered, as a filterable word.
pub const ERROR_CLASSES: &[&str] = &[
    "undecodable",
    "unparseable",
    "refused",
    "rejected_parts",
    "exhausted",
    "other",
];

/// The platform names operators type; `None` for unspecified.
pub fn provider_name(p: Provider) -> Option<&'static str> {
    Some(match p {
        Provider::Unspecified => return None,
        Provider::WhatsappCloud => "whatsapp",
        Provider::Messenger => "messenger",
        Provider::Instagram => "instagram",
        Provider::Ycloud => "ycloud",
    })
}

/// `facebook` is accepted for Messenger, as in the webhook path.
pub fn provider_from_name(s: &str) -> Option<Provider> {
    Some(match s {
        "whatsapp" => Provider::WhatsappCloud,
        "messenger" | "facebook" => Provider::Messenger,
        "instagram" => Provider::Instagram,
        "ycloud" => Provider::Ycloud,
        _ => return None,
    })
}

/// A filter as text, each part optional.
#[derive(Debug, Default, Clone)]
pub struct FilterText<'a> {
    pub platform: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub error_class: Option<&'a str>,
    /// RFC 3339.
    pub since: Option<&'a str>,
    /// RFC 3339.
    pub until: Option<&'a str>,
}

/// The filter `text` names, or a message naming the part that is wrong.
pub fn parse_filter(text: &FilterText<'_>) -> Result<DeadLetterFilter, String> {
    let mut f = DeadLetterFilter::default();
    if let Some(p) = text.platform {
        f.provider = provider_from_name(p)
            .ok_or_else(|| {
                format!("platform {p:?} is not one of whatsapp, messenger, instagram, ycloud")
            })?
            .into();
    }
    if let Some(t) = text.tenant {
        if !is_uuid(t) {
            return Err(format!("tenant {t:?} is not a UUID"));
        }
        t.clone_into(&mut f.tenant_id);
    }
    if let Some(c) = text.error_class {
        if !ERROR_CLASSES.contains(&c) {
            return Err(format!(
                "error class {c:?} is not one of {}",
                ERROR_CLASSES.join(", ")
            ));
        }
        c.clone_into(&mut f.error_class);
    }
    let time = |name: &str, v: &str| {
        DateTime::parse_from_rfc3339(v)
            .map(|t| to_timestamp(t.with_timezone(&Utc)))
            .map_err(|_| format!("{name} {v:?} is not an RFC 3339 time"))
    };
    if let Some(s) = text.since {
        f.since = Some(time("since", s)?);
    }
    if let Some(u) = text.until {
        f.until = Some(time("until", u)?);
    }
    Ok(f)
}

/// A UUID in its usual hyphenated (or simple) text form.
pub fn is_uuid(s: &str) -> bool {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    hex.len() == 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && (s.len() == 32
            || (s.len() == 36 && [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-')))
}

/// True when the filter matches every entry.
pub fn filter_is_empty(f: &DeadLetterFilter) -> bool {
    f.provider == 0
        && f.tenant_id.is_empty()
        && f.error_class.is_empty()
        && f.since.is_none()
        && f.until.is_none()
}

fn time_json(t: Option<&prost_types::Timestamp>) -> Value {
    from_timestamp(t).map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

/// One dead letter, as listed.
pub fn dead_letter_json(d: &DeadLetter) -> Value {
    let rejected = (!d.rejected_json.is_empty())
        .then(|| serde_json::from_str::<Value>(&d.rejected_json).unwrap_or(Value::Null));
    json!({
        "id": d.id,
        "job_id": d.job_id,
        "dead_at": time_json(d.dead_at.as_ref()),
        "platform": provider_name(d.provider()),
        "tenant_ids": d.tenant_ids,
        "error_class": d.error_class,
        "explanation": d.explanation,
        "error": d.error,
        "rejected": rejected,
        "attempts": d.attempts,
        "received_at": time_json(d.received_at.as_ref()),
        "request_id": d.request_id,
        "payload_bytes": d.payload_bytes,
        "retryable": d.retryable,
    })
}

/// One dead letter with its payload: as JSON when it is JSON (webhooks are),
/// else as text.
pub fn dead_letter_detail_json(r: &GetDeadLetterResponse) -> Value {
    let mut v = r
        .dead_letter
        .as_ref()
        .map_or_else(|| json!({}), dead_letter_json);
    v["payload"] = serde_json::from_slice::<Value>(&r.payload)
        .unwrap_or_else(|_| json!(String::from_utf8_lossy(&r.payload)));
    v
}

pub fn list_json(r: &ListDeadLettersResponse) -> Value {
    json!({
        "dead_letters": r.dead_letters.iter().map(dead_letter_json).collect::<Vec<_>>(),
        "next_cursor": (!r.next_cursor.is_empty()).then_some(&r.next_cursor),
    })
}

pub fn retry_json(r: &RetryDeadLettersResponse) -> Value {
    let mut retried: Vec<_> = r.retried.iter().collect();
    retried.sort();
    let mut skipped: Vec<_> = r.skipped.iter().collect();
    skipped.sort();
    json!({
        "retried": retried.iter().map(|(id, job)| json!({"id": id, "job_id": job})).collect::<Vec<_>>(),
        "skipped": skipped.iter().map(|(id, why)| json!({"id": id, "reason": why})).collect::<Vec<_>>(),
    })
}

pub fn purge_json(r: &PurgeDeadLettersResponse) -> Value {
    json!({ "purged": r.purged })
}

pub fn stats_json(r: &QueueStatsResponse) -> Value {
    json!({
        "stream_length": r.stream_length,
        "pending": r.pending,
        "oldest_pending_age_ms": r.oldest_pending_age_ms,
        "scheduled_retries": r.scheduled_retries,
        "dead_letters": r.dead_letters,
        "consumers": r.consumers.iter()
            .map(|c| json!({"name": c.name, "pending": c.pending, "idle_ms": c.idle_ms}))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_read_from_text_and_bad_parts_are_named() {
        let f = parse_filter(&FilterText {
            platform: Some("facebook"),
            tenant: Some("0190b6a2-7c3e-7d2a-9a1b-0123456789ab"),
            error_class: Some("refused"),
            since: Some("2026-11-30T00:00:00Z"),
            until: None,
        })
        .expect("valid");
        assert_eq!(f.provider(), Provider::Messenger);
        assert!(!filter_is_empty(&f));
        assert!(filter_is_empty(
            &parse_filter(&FilterText::default()).expect("empty")
        ));
        for (text, named) in [
            (
                FilterText {
                    platform: Some("telegram"),
                    ..Default::default()
                },
                "platform",
            ),
            (
                FilterText {
                    tenant: Some("acme"),
                    ..Default::default()
                },
                "tenant",
            ),
            (
                FilterText {
                    error_class: Some("boom"),
                    ..Default::default()
                },
                "error class",
            ),
            (
                FilterText {
                    until: Some("yesterday"),
                    ..Default::default()
                },
                "until",
            ),
        ] {
            let e = parse_filter(&text).expect_err("refused");
            assert!(e.starts_with(named), "{e}");
        }
        assert!(!is_uuid("0190b6a2-7c3e-7d2a-9a1b-0123456789a"));
        assert!(!is_uuid("0190b6a2x7c3e-7d2a-9a1b-0123456789ab"));
    }
}
