//! Meta webhooks: the subscription handshake and signed deliveries.

use std::collections::BTreeSet;

use bytes::Bytes;
use faro_proto::{
    conversations::v1::{ChannelRoute, CheckVerifyTokenRequest, ResolveChannelAccountsRequest},
    ingest::v1::{Provider, Route, SubmitRequest},
    to_timestamp,
};
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::{
    State,
    error::{ApiError, json_response},
    signature,
};

/// The platforms served at `/api/v1/webhooks/<platform>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Platform {
    WhatsApp,
}

impl Platform {
    fn channel(self) -> faro_proto::conversations::v1::Channel {
        match self {
            Self::WhatsApp => faro_proto::conversations::v1::Channel::Whatsapp,
        }
    }

    fn provider(self) -> Provider {
        match self {
            Self::WhatsApp => Provider::WhatsappCloud,
        }
    }
}

const MAX_CHALLENGE: usize = 256;

/// `GET`: echo `hub.challenge` if `hub.mode=subscribe` and the verify token
/// belongs to a registered app; 403 otherwise.
pub(crate) async fn handshake(
    state: &State,
    platform: Platform,
    query: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let (mut mode, mut token, mut challenge) = (None, None, None);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "hub.mode" => mode = Some(v.into_owned()),
            "hub.verify_token" => token = Some(v.into_owned()),
            "hub.challenge" => challenge = Some(v.into_owned()),
            _ => {}
        }
    }
    let forbidden = |m: &str| ApiError::new(StatusCode::FORBIDDEN, "verification_failed", m);
    // Constant time for symmetry with the token check; the mode is not secret.
    if !bool::from(
        mode.as_deref()
            .unwrap_or_default()
            .as_bytes()
            .ct_eq(b"subscribe"),
    ) {
        return Err(forbidden("hub.mode must be subscribe"));
    }
    let challenge = challenge
        .filter(|c| !c.is_empty() && c.len() <= MAX_CHALLENGE)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_challenge",
                "hub.challenge must be 1..=256 characters",
            )
        })?;
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| forbidden("hub.verify_token is required"))?;
    let matched = state
        .conversations
        .clone()
        .check_verify_token(CheckVerifyTokenRequest {
            channel: platform.channel().into(),
            verify_token: token,
        })
        .await
        .map_err(|s| ApiError::upstream("conversations", &s))?
        .into_inner()
        .matched;
    if !matched {
        return Err(forbidden(
            "hub.verify_token does not match a registered app",
        ));
    }
    let mut response = Response::new(Full::new(Bytes::from(challenge)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// Reads the body as received, refusing more than `limit` bytes while streaming.
async fn read_body(body: Incoming, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(
            "body_unreadable",
            format!("could not read the body: {e}"),
        )),
    }
}

/// Just enough of the WhatsApp envelope to route it. Untrusted until verified.
#[derive(Deserialize)]
struct RoutingEnvelope {
    #[serde(default)]
    entry: Vec<RoutingEntry>,
}

#[derive(Deserialize)]
struct RoutingEntry {
    #[serde(default)]
    changes: Vec<RoutingChange>,
}

#[derive(Deserialize)]
struct RoutingChange {
    #[serde(default)]
    value: Option<RoutingValue>,
}

#[derive(Deserialize)]
struct RoutingValue {
    #[serde(default)]
    metadata: Option<RoutingMetadata>,
}

#[derive(Deserialize)]
struct RoutingMetadata {
    #[serde(default)]
    phone_number_id: Option<String>,
}

const MAX_ACCOUNTS_PER_POST: usize = 1000;

fn account_ids(body: &[u8]) -> Result<BTreeSet<String>, ApiError> {
    let envelope: RoutingEnvelope = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not a webhook JSON object: {e}"),
        )
    })?;
    let ids: BTreeSet<String> = envelope
        .entry
        .into_iter()
        .flat_map(|e| e.changes)
        .filter_map(|c| c.value?.metadata?.phone_number_id)
        .filter(|id| !id.is_empty() && id.len() <= 100)
        .collect();
    if ids.len() > MAX_ACCOUNTS_PER_POST {
        return Err(ApiError::bad_request(
            "too_many_accounts",
            "the body names too many accounts",
        ));
    }
    Ok(ids)
}

/// The routes of the one app whose secret verifies the body; accounts of other
/// apps named in the same body are not trusted.
fn verified_routes(
    routes: Vec<ChannelRoute>,
    body: &[u8],
    digest: &[u8; 32],
) -> Option<Vec<ChannelRoute>> {
    let mut apps: Vec<&str> = routes.iter().map(|r| r.app_id.as_str()).collect();
    apps.sort_unstable();
    apps.dedup();
    let app = apps.into_iter().find(|app| {
        routes
            .iter()
            .find(|r| r.app_id == *app)
            .is_some_and(|r| signature::verify(r.app_secret.as_bytes(), body, digest))
    })?;
    let app = app.to_owned();
    Some(routes.into_iter().filter(|r| r.app_id == app).collect())
}

/// `POST`: verify, queue, and answer 200 only once the job is in Redis.
pub(crate) async fn deliver(
    state: &State,
    platform: Platform,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let received_at = chrono::Utc::now();
    let digest = match headers.get("x-hub-signature-256") {
        None => {
            return Err(ApiError::unauthorized(
                "missing_signature",
                "X-Hub-Signature-256 is required",
            ));
        }
        Some(v) => signature::parse_header(v.as_bytes()).ok_or_else(|| {
            ApiError::unauthorized(
                "invalid_signature",
                "X-Hub-Signature-256 must be sha256=<64 hex digits>",
            )
        })?,
    };
    let body = read_body(body, headers, state.config.max_body_bytes).await?;
    let ids = account_ids(&body)?;
    let unknown = || {
        ApiError::unauthorized(
            "unknown_account",
            "the body names no connected account, so its signature cannot be verified",
        )
    };
    if ids.is_empty() {
        return Err(unknown());
    }
    let routes = state
        .conversations
        .clone()
        .resolve_channel_accounts(ResolveChannelAccountsRequest {
            channel: platform.channel().into(),
            external_account_ids: ids.into_iter().collect(),
        })
        .await
        .map_err(|s| ApiError::upstream("conversations", &s))?
        .into_inner()
        .routes;
    if routes.is_empty() {
        return Err(unknown());
    }
    let routes = verified_routes(routes, &body, &digest).ok_or_else(|| {
        ApiError::unauthorized(
            "invalid_signature",
            "X-Hub-Signature-256 does not match the body",
        )
    })?;
    let (app_id, meta_app_id) = (routes[0].app_id.clone(), routes[0].meta_app_id.clone());
    let routes = routes
        .into_iter()
        .map(|r| Route {
            external_account_id: r.external_account_id,
            tenant_id: r.tenant_id,
            location_id: r.location_id,
            channel_account_id: r.channel_account_id,
            channel: r.channel,
        })
        .collect();
    let request_id = uuid::Uuid::now_v7().to_string();
    let submitted = state
        .ingest
        .clone()
        .submit(SubmitRequest {
            provider: platform.provider().into(),
            payload: body.to_vec(),
            app_id,
            meta_app_id,
            routes,
            received_at: Some(to_timestamp(received_at)),
            traceparent: headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            request_id: request_id.clone(),
        })
        .await
        .map_err(|s| ApiError::upstream("ingest", &s))?
        .into_inner();
    tracing::debug!(%request_id, job_id = %submitted.job_id, bytes = body.len(), "webhook queued");
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "queued", "request_id": request_id}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(app: &str, secret: &str, account: &str) -> ChannelRoute {
        ChannelRoute {
            app_id: app.into(),
            app_secret: secret.into(),
            external_account_id: account.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_signing_apps_accounts_are_trusted() {
        let body = br#"{"entry":[]}"#;
        let digest =
            signature::parse_header(signature::sign(b"s2", body).as_bytes()).expect("header");
        let routes = vec![
            route("a1", "s1", "p1"),
            route("a2", "s2", "p2"),
            route("a2", "s2", "p3"),
        ];
        let trusted = verified_routes(routes, body, &digest).expect("a2 signed it");
        let accounts: Vec<_> = trusted
            .iter()
            .map(|r| r.external_account_id.as_str())
            .collect();
        assert_eq!(accounts, ["p2", "p3"]);
        assert!(verified_routes(vec![route("a1", "s1", "p1")], body, &digest).is_none());
    }

    #[test]
    fn finds_every_account_and_refuses_non_json() {
        let body = br#"{"entry":[{"changes":[{"value":{"metadata":{"phone_number_id":"1"}}},{"value":{}}]},
                       {"changes":[{"value":{"metadata":{"phone_number_id":"2"}}}]},{}]}"#;
        assert_eq!(
            account_ids(body)
                .expect("json")
                .into_iter()
                .collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert_eq!(
            account_ids(b"<xml/>").expect_err("must be refused").status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            account_ids(b"[1,2]").expect_err("must be refused").code,
            "invalid_json"
        );
    }
}
