//! The inbox over REST (issue 13): agents list, search, read and edit their
//! tenant's threads. Tenant, agent and locations come from the JWT only and
//! travel in every conversations call, which enforces them under row-level
//! security; a thread of another tenant or location is 404, never 403.
//!
//! - `GET /api/v1/conversations`: filters, search, keyset cursor (`query.rs`)
//! - `GET /api/v1/conversations/{id}`: with its version as the ETag
//! - `GET /api/v1/conversations/{id}/messages`: `before`, `after`, `around`
//! - `PATCH /api/v1/conversations/{id}`: `If-Match` or `version` (`patch.rs`)
//! - `POST /api/v1/conversations/{id}/read`: the agent's read marker
//!
//! Edits and read markers are announced as `conversation.updated` live
//! events through ingest's publisher (positions and history as for messages),
//! at least once: conversations keeps each in an outbox until published.

mod json;
mod patch;
mod query;

use bytes::Bytes;
use faro_proto::{
    conversations::v1::{Conversation, GetConversationRequest, ListMessagesRequest},
    stream::v1::Event,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use prost::Message;
use serde_json::json;
use tonic::Code;

use crate::{
    State,
    auth::{Claims, presented_token},
    error::{ApiError, json_response},
    events::message as message_json,
};

pub(crate) use json::conversation as conversation_json;

/// Which inbox route a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InboxRoute {
    List,
    One,
    Messages,
    Read,
}

/// A PATCH or read body is small.
const MAX_BODY: usize = 64 * 1024;
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The agent a request is made for: from its JWT, nothing else.
pub(crate) struct Agent {
    pub claims: Claims,
}

impl Agent {
    fn tenant(&self) -> String {
        self.claims.tenant_id.to_string()
    }

    fn locations(&self) -> Vec<String> {
        self.claims
            .location_ids
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect()
    }
}

async fn agent(state: &State, headers: &HeaderMap, q: Option<&str>) -> Result<Agent, ApiError> {
    let presented = presented_token(headers, q)?;
    let claims = state.agent_claims(&presented.token).await?;
    Ok(Agent { claims })
}

/// Conversations' answer as the edge's: its own refusals keep their message
/// (which names the field), anything else is the usual upstream error.
pub(crate) fn from_status(s: &tonic::Status) -> ApiError {
    match s.code() {
        Code::InvalidArgument => ApiError::bad_request("invalid_request", s.message()),
        Code::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such conversation"),
        Code::Aborted => ApiError::new(StatusCode::CONFLICT, "conflict", s.message()),
        _ => ApiError::upstream("conversations", s),
    }
}

pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect());
    match read.await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the body did not arrive in time",
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("at most {MAX_BODY} bytes"),
        )),
    }
}

/// A thread as the answer, with its version as a strong ETag.
fn with_etag(c: &Conversation) -> Response<Full<Bytes>> {
    let mut r = json_response(StatusCode::OK, &conversation_json(c, true));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", c.version)) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// Tells the tenant's agents what changed: hands the event conversations
/// wrote to its outbox in the edit's transaction (`announcement`) to ingest's
/// publisher at once. The change is committed already: a failure is logged
/// and the answer stands; ingest's outbox relay publishes the event a few
/// seconds later (same event id, so a client that got both drops one).
pub(crate) async fn announce(state: &State, announcement: &[u8]) {
    let event = match Event::decode(announcement) {
        Ok(e) if e.kind.is_some() => e,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable announcement from conversations");
            return;
        }
    };
    let request = faro_proto::ingest::v1::AnnounceRequest {
        events: vec![event],
    };
    if let Err(e) = state.ingest.clone().announce(request).await {
        tracing::warn!(code = ?e.code(), "announcing a conversation change failed; the outbox relay will");
    }
}

pub(crate) async fn handle(
    state: &State,
    route: InboxRoute,
    id: Option<String>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let query = req.uri().query().map(str::to_owned);
    let agent = agent(state, req.headers(), query.as_deref()).await?;
    let _slot = state.slots.request(&agent.claims)?;
    let id = id.unwrap_or_default();
    match (route, req.method()) {
        (InboxRoute::List, _) => query::list(state, &agent, query.as_deref()).await,
        (InboxRoute::One, &Method::PATCH) => {
            let if_match = req.headers().get(header::IF_MATCH).cloned();
            let body = read_body(req.into_body()).await?;
            patch::patch(state, &agent, &id, if_match, &body).await
        }
        (InboxRoute::One, _) => {
            let c = state
                .conversations
                .clone()
                .get_conversation(GetConversationRequest {
                    tenant_id: agent.tenant(),
                    conversation_id: id,
                    location_ids: agent.locations(),
                    agent_id: agent.claims.sub.clone(),
                })
                .await
                .map_err(|s| from_status(&s))?
                .into_inner();
            Ok(with_etag(&c))
        }
        (InboxRoute::Messages, _) => {
            let p =
                query::Params::parse(query.as_deref(), &["before", "after", "around", "limit"])?;
            let page = state
                .conversations
                .clone()
                .list_messages(ListMessagesRequest {
                    tenant_id: agent.tenant(),
                    conversation_id: id,
                    limit: p.limit()?,
                    location_ids: agent.locations(),
                    before: p.one("before")?.unwrap_or_default(),
                    after: p.one("after")?.unwrap_or_default(),
                    around_message_id: p.one("around")?.unwrap_or_default(),
                })
                .await
                .map_err(|s| from_status(&s))?
                .into_inner();
            let opt = |s: String| (!s.is_empty()).then_some(s);
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "messages": page.messages.iter().map(message_json).collect::<Vec<_>>(),
                    "before_cursor": opt(page.before_cursor),
                    "after_cursor": opt(page.after_cursor),
                }),
            ))
        }
        (InboxRoute::Read, _) => {
            let body = read_body(req.into_body()).await?;
            patch::mark_read(state, &agent, &id, &body).await
        }
    }
}
