//! `PATCH /api/v1/conversations/{id}` and `POST .../read`. A body is a JSON
//! object of known fields, each checked with its name in the refusal; the
//! version the agent saw comes as `If-Match` (a stale one: 412) or as
//! `version` in the body (stale: 409), so two agents' concurrent edits never
//! silently overwrite each other.

use bytes::Bytes;
use faro_proto::conversations::v1::{MarkReadRequest, RoiLink, UpdateConversationRequest};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Map, Value};
use tonic::Code;

use super::{Agent, announce, from_status, with_etag};
use crate::State;
use crate::error::ApiError;

const FIELDS: &[&str] = &[
    "version",
    "status",
    "assigned_to_user_id",
    "add_tags",
    "remove_tags",
    "lead_status",
    "source_type",
    "add_roi_links",
    "remove_roi_links",
];

fn bad(field: &str, what: &str) -> ApiError {
    ApiError::bad_request("invalid_request", format!("{field} {what}"))
}

fn object(body: &[u8], known: &[&str]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("body is not JSON: {e}")))?;
    let Value::Object(o) = v else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "body must be a JSON object",
        ));
    };
    if let Some(k) = o.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(
            &format!("{k:?}"),
            &format!("is not a known field; known: {}", known.join(", ")),
        ));
    }
    Ok(o)
}

/// A string field: absent → None; `null` → None unless `nullable` (then Some("")).
fn string(o: &Map<String, Value>, field: &str, nullable: bool) -> Result<Option<String>, ApiError> {
    match o.get(field) {
        None => Ok(None),
        Some(Value::Null) if nullable => Ok(Some(String::new())),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) if nullable => Err(bad(field, "must be a non-empty string or null")),
        Some(_) => Err(bad(field, "must be a non-empty string")),
    }
}

fn strings(o: &Map<String, Value>, field: &str) -> Result<Vec<String>, ApiError> {
    match o.get(field) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(field, "must be an array of strings")),
        Some(_) => Err(bad(field, "must be an array of strings")),
    }
}

fn links(o: &Map<String, Value>, field: &str) -> Result<Vec<RoiLink>, ApiError> {
    let Some(v) = o.get(field) else {
        return Ok(Vec::new());
    };
    let what = "must be an array of {kind, external_id, source?, url?}";
    let a = v.as_array().ok_or_else(|| bad(field, what))?;
    a.iter()
        .map(|l| {
            let l = l.as_object().ok_or_else(|| bad(field, what))?;
            if l.keys()
                .any(|k| !["kind", "external_id", "source", "url"].contains(&k.as_str()))
            {
                return Err(bad(field, what));
            }
            let s = |k: &str| match l.get(k) {
                None => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(bad(field, what)),
            };
            Ok(RoiLink {
                kind: s("kind")?,
                external_id: s("external_id")?,
                source: s("source")?,
                url: s("url")?,
            })
        })
        .collect()
}

/// The version an `If-Match` names (`"3"` or `W/"3"`); `*` matches any.
fn if_match(v: &HeaderValue) -> Result<Option<i64>, ApiError> {
    let s = v.to_str().unwrap_or("").trim();
    if s == "*" {
        return Ok(None);
    }
    s.trim_start_matches("W/")
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n >= 1)
        .map(Some)
        .ok_or_else(|| {
            bad(
                "If-Match",
                "must be the ETag of the conversation (\"<version>\")",
            )
        })
}

pub(crate) async fn patch(
    state: &State,
    agent: &Agent,
    id: &str,
    if_match_header: Option<HeaderValue>,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    let o = object(body, FIELDS)?;
    let version = match o.get("version") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad("version", "must be an integer of at least 1"))?,
        ),
    };
    let header = if_match_header
        .as_ref()
        .map(if_match)
        .transpose()?
        .flatten();
    if let (Some(h), Some(v)) = (header, version)
        && h != v
    {
        return Err(bad("version", "differs from If-Match"));
    }
    let request = UpdateConversationRequest {
        tenant_id: agent.tenant(),
        conversation_id: id.to_owned(),
        location_ids: agent.locations(),
        agent_id: agent.claims.sub.clone(),
        expected_version: header.or(version).unwrap_or(0),
        status: string(&o, "status", false)?,
        assigned_to_user_id: string(&o, "assigned_to_user_id", true)?,
        add_tags: strings(&o, "add_tags")?,
        remove_tags: strings(&o, "remove_tags")?,
        lead_status: string(&o, "lead_status", true)?,
        source_type: string(&o, "source_type", false)?,
        add_roi_links: links(&o, "add_roi_links")?,
        remove_roi_links: links(&o, "remove_roi_links")?,
    };
    let answer = state
        .conversations
        .clone()
        .update_conversation(request)
        .await;
    let updated = match answer {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == Code::Aborted && header.is_some() => {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                s.message(),
            ));
        }
        Err(s) => return Err(from_status(&s)),
    };
    let conversation = updated.conversation.unwrap_or_default();
    if updated.changed {
        announce(state, &updated.announcement).await;
    }
    Ok(with_etag(&conversation))
}

pub(crate) async fn mark_read(
    state: &State,
    agent: &Agent,
    id: &str,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    let o = object(body, &["message_id"])?;
    let request = MarkReadRequest {
        tenant_id: agent.tenant(),
        conversation_id: id.to_owned(),
        location_ids: agent.locations(),
        agent_id: agent.claims.sub.clone(),
        message_id: string(&o, "message_id", false)?.unwrap_or_default(),
    };
    let read = state
        .conversations
        .clone()
        .mark_read(request)
        .await
        .map_err(|s| from_status(&s))?
        .into_inner();
    let conversation = read.conversation.unwrap_or_default();
    if read.changed {
        announce(state, &read.announcement).await;
    }
    Ok(with_etag(&conversation))
}
