//! `POST /api/v1/conversations/{id}/messages`: an agent's reply. The tenant
//! and locations come from the JWT; the body says what to send (text, a
//! WhatsApp template, or media by URL, optionally replying to a message); an
//! `Idempotency-Key` (header, or `idempotency_key` in the body) makes a retry
//! return the first answer without sending twice. The edge only shapes the
//! request: ingest's `SendService` stores, announces and queues it, and
//! conversations checks the platform's rules (a broken one is a 422 naming it).

use bytes::Bytes;
use faro_proto::conversations::v1::{
    CreateReplyRequest, CreateReplyResponse, ReplyContent, ReplyMedia, ReplyTemplate, ReplyWindow,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::Code;

use faro_proto::ingest::v1::send_service_client::SendServiceClient;

use crate::{
    State,
    auth::{Claims, presented_token},
    error::{ApiError, json_response},
    events,
};

/// A reply's body is small: 4,096 characters of text at most, or a template.
const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Template {
    name: String,
    language: String,
    #[serde(default)]
    parameters: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Media {
    kind: String,
    url: String,
    #[serde(default)]
    caption: String,
    #[serde(default)]
    filename: String,
}

/// The body of a reply, as the WebSocket `send` frame carries it too.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendBody {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub template: Option<Template>,
    #[serde(default)]
    pub media: Option<Media>,
    #[serde(default)]
    pub reply_to_message_id: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

impl SendBody {
    fn content(self) -> ReplyContent {
        ReplyContent {
            text: self.text.unwrap_or_default(),
            template: self.template.map(|t| ReplyTemplate {
                name: t.name,
                language: t.language,
                parameters: t.parameters,
            }),
            media: self.media.map(|m| ReplyMedia {
                kind: m.kind,
                url: m.url,
                caption: m.caption,
                filename: m.filename,
            }),
            reply_to_message_id: self.reply_to_message_id.unwrap_or_default(),
        }
    }
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such conversation")
}

/// The rules conversations may report, as the API's error codes.
fn rule_code(rule: &str) -> &'static str {
    match rule {
        "window_closed" => "window_closed",
        "human_agent_window_closed" => "human_agent_window_closed",
        "text_too_long" => "text_too_long",
        "unsupported_content" => "unsupported_content",
        "unsupported_channel" => "unsupported_channel",
        "no_channel_account" => "no_channel_account",
        "no_send_credential" => "no_send_credential",
        "idempotency_key_reused" => "idempotency_key_reused",
        _ => "rule_broken",
    }
}

/// A refused or failed `SendReply`, as the agent should see it.
pub(crate) fn send_error(s: &tonic::Status) -> ApiError {
    match s.code() {
        Code::NotFound => not_found(),
        Code::InvalidArgument => ApiError::bad_request("invalid_reply", s.message()),
        Code::FailedPrecondition => {
            let rule = s
                .metadata()
                .get(faro_proto::RULE_METADATA)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                rule_code(rule),
                s.message(),
            )
        }
        // Another request with the same Idempotency-Key kept being rolled
        // back while this one waited for it: the client's retry decides.
        Code::Aborted => ApiError::new(StatusCode::CONFLICT, "idempotency_key_in_use", s.message()),
        _ => ApiError::upstream("ingest", s),
    }
}

pub(crate) fn window_json(w: &ReplyWindow) -> Value {
    json!({
        "last_inbound_at": events::time(w.last_inbound_at.as_ref()),
        "closes_at": events::time(w.closes_at.as_ref()),
        "seconds_left": w.seconds_left,
        "human_agent_enabled": w.human_agent_enabled,
        "human_agent_closes_at": events::time(w.human_agent_closes_at.as_ref()),
        "human_agent_seconds_left": w.human_agent_seconds_left,
    })
}

pub(crate) fn answer_json(a: &CreateReplyResponse) -> Value {
    json!({
        "message": a.stored.as_ref().and_then(|s| s.message.as_ref()).map(events::message),
        "window": a.window.as_ref().map(window_json),
        "replayed": !a.created,
    })
}

/// Who sends a reply: the JWT's tenant, agent and locations (empty: all).
#[derive(Clone)]
pub(crate) struct Sender {
    pub client: SendServiceClient<faro_proto::client::Traced>,
    pub tenant: String,
    pub agent: String,
    pub locations: Vec<String>,
}

impl Sender {
    pub(crate) fn of(state: &State, claims: &Claims) -> Self {
        Self {
            client: state.send.clone(),
            tenant: claims.tenant_id.to_string(),
            agent: claims.sub.clone(),
            locations: claims
                .location_ids
                .iter()
                .flatten()
                .map(ToString::to_string)
                .collect(),
        }
    }

    /// Sends one reply; shared by the HTTP route and the WebSocket frame.
    pub(crate) async fn send(
        &self,
        conversation_id: &str,
        header_key: Option<String>,
        body: SendBody,
    ) -> Result<CreateReplyResponse, ApiError> {
        if uuid::Uuid::parse_str(conversation_id).is_err() {
            return Err(not_found());
        }
        let key = match (header_key, body.idempotency_key.clone()) {
            (Some(h), Some(f)) if h != f => {
                return Err(ApiError::bad_request(
                    "idempotency_key_mismatch",
                    "the Idempotency-Key header and idempotency_key field differ",
                ));
            }
            (Some(k), _) | (None, Some(k)) => k,
            (None, None) => {
                return Err(ApiError::bad_request(
                    "idempotency_key_required",
                    "an Idempotency-Key header (or idempotency_key field) is required",
                ));
            }
        };
        let request = CreateReplyRequest {
            tenant_id: self.tenant.clone(),
            location_ids: self.locations.clone(),
            conversation_id: conversation_id.to_owned(),
            idempotency_key: key,
            content: Some(body.content()),
            agent_id: self.agent.clone(),
        };
        self.client
            .clone()
            .send_reply(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| send_error(&s))
    }
}

fn header_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| {
                ApiError::bad_request("invalid_reply", "Idempotency-Key must be printable ASCII")
            })
        })
        .transpose()
}

/// The HTTP route.
pub(crate) async fn handle(
    state: &State,
    conversation_id: Option<String>,
    req: http::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let (parts, body) = req.into_parts();
    let presented = presented_token(&parts.headers, None)?;
    let claims = state.agent_claims(&presented.token).await?;
    let key = header_key(&parts.headers)?;
    let bytes = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("a reply's body is at most {MAX_BODY_BYTES} bytes"),
            )
        })?
        .to_bytes();
    let body: SendBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("body: {e}")))?;
    let answer = Sender::of(state, &claims)
        .send(conversation_id.as_deref().unwrap_or_default(), key, body)
        .await?;
    let status = if answer.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let mut response = json_response(status, &answer_json(&answer));
    if !answer.created {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_still_in_use_is_a_409_naming_it_not_an_upstream_failure() {
        let e = send_error(&tonic::Status::aborted(
            "another request with this Idempotency-Key is being stored; retry",
        ));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::CONFLICT, "idempotency_key_in_use")
        );
        let e = send_error(&tonic::Status::internal("internal error"));
        assert_ne!(e.status, StatusCode::CONFLICT);
    }
}
