//! Operator routes under `/api/v1/admin/`: the dead-letter queue and the
//! queue's figures, served by ingest over gRPC.
//!
//! - `GET /api/v1/admin/dead-letters?platform=&tenant=&error_class=&since=&until=&cursor=&limit=`
//! - `GET /api/v1/admin/dead-letters/{id}`
//! - `POST /api/v1/admin/dead-letters/retry` and `.../purge`, with a body of
//!   `{"id": ".."}`, `{"filter": {..the list parameters..}}` or `{"all": true}`
//! - `GET /api/v1/admin/queue`
//! - `GET /api/v1/webhooks/health`, `.../stats`, `.../recent`: diagnostics,
//!   served by `diag`
//!
//! Every call is audit-logged (see [`handle`]). The credential is `FARO_ADMIN_TOKEN` (`Authorization: Bearer <token>`),
//! not an agent JWT: an agent's token, valid for its tenant, must never drive
//! every tenant's queue. Without a configured token the routes do not exist
//! (404), so an edge is never administrable by accident.

use bytes::Bytes;
use faro_proto::{
    dead_letters::{self as dl, FilterText},
    ingest::v1::{
        DeadLetterSelection, GetDeadLetterRequest, ListDeadLettersRequest, PurgeDeadLettersRequest,
        QueueStatsRequest, RetryDeadLettersRequest, dead_letter_selection::Target,
    },
};
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Code;

use crate::{
    State,
    error::{ApiError, json_response},
    router::{self, Spec},
    server::{ClientAddr, refused},
};

/// A selection body is a few hundred bytes.
const MAX_BODY: usize = 16 * 1024;
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The admin routes; their paths are in `router::ROUTES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminRoute {
    DeadLetters,
    /// `dead-letters/{id}`: the id is the path's parameter.
    DeadLetter,
    Retry,
    Purge,
    Queue,
    WebhooksHealth,
    WebhooksStats,
    WebhooksRecent,
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Constant time, and blind to the length: both sides are hashed first.
fn authorized(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "missing_token",
                "admin routes need `Authorization: Bearer <FARO_ADMIN_TOKEN>`",
            )
        })?;
    let ok: bool = Sha256::digest(presented.trim().as_bytes())
        .ct_eq(&Sha256::digest(token.as_bytes()))
        .into();
    if ok {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "invalid_token",
            "not the admin token (agent tokens are not accepted here)",
        ))
    }
}

/// Ingest's answer as HTTP: its refusals name the problem.
fn upstream(status: &tonic::Status) -> ApiError {
    match status.code() {
        Code::InvalidArgument => ApiError::bad_request("invalid_argument", status.message()),
        Code::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", status.message()),
        _ => ApiError::upstream("ingest", status),
    }
}

/// Authenticates, serves and audits one admin call. Every call with the
/// routes enabled leaves one `admin call` line (target `faro::audit`): the
/// client's address, the credential's verdict, the route, what it selected
/// and the outcome; never the presented token.
pub(crate) async fn handle(
    state: &State,
    spec: &'static Spec,
    route: AdminRoute,
    param: Option<String>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let Some(token) = state.config.admin_token.as_deref() else {
        return refused(not_found());
    };
    let client = req
        .extensions()
        .get::<ClientAddr>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let method = req.method().clone();
    let mut target = Selected::default();
    let (credential, response) = match authorized(req.headers(), token) {
        Err(e) => (e.code, refused(e)),
        Ok(()) if spec.route_for(method.as_str()).is_none() => {
            ("admin_token", router::method_not_allowed(spec))
        }
        Ok(()) => {
            let served = serve(state, route, param.clone(), req, &mut target).await;
            let response = match served {
                Ok((status, body)) => json_response(status, &body),
                Err(e) => refused(e),
            };
            ("admin_token", response)
        }
    };
    tracing::info!(
        target: "faro::audit",
        client = %client,
        credential,
        method = %method,
        route = spec.path,
        id = param.as_deref().unwrap_or_default(),
        selection = target.0,
        status = response.status().as_u16(),
        "admin call"
    );
    response
}

/// What a retry or purge selected, for the audit line.
#[derive(Default)]
struct Selected(&'static str);

async fn serve(
    state: &State,
    route: AdminRoute,
    param: Option<String>,
    req: Request<Incoming>,
    target: &mut Selected,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    let mut ingest = state.ingest.clone();
    let body = match route {
        AdminRoute::DeadLetters => {
            let request = list_request(req.uri().query().unwrap_or(""))?;
            let r = ingest.list_dead_letters(request).await;
            dl::list_json(&r.map_err(|s| upstream(&s))?.into_inner())
        }
        AdminRoute::DeadLetter => {
            let id = param.ok_or_else(not_found)?;
            let r = ingest.get_dead_letter(GetDeadLetterRequest { id }).await;
            dl::dead_letter_detail_json(&r.map_err(|s| upstream(&s))?.into_inner())
        }
        AdminRoute::Retry => {
            let selection = selection(req.into_body()).await?;
            target.0 = selection_kind(&selection);
            let r = ingest
                .retry_dead_letters(RetryDeadLettersRequest {
                    selection: Some(selection),
                })
                .await;
            dl::retry_json(&r.map_err(|s| upstream(&s))?.into_inner())
        }
        AdminRoute::Purge => {
            let selection = selection(req.into_body()).await?;
            target.0 = selection_kind(&selection);
            let r = ingest
                .purge_dead_letters(PurgeDeadLettersRequest {
                    selection: Some(selection),
                })
                .await;
            dl::purge_json(&r.map_err(|s| upstream(&s))?.into_inner())
        }
        AdminRoute::Queue => {
            let r = ingest.queue_stats(QueueStatsRequest {}).await;
            dl::stats_json(&r.map_err(|s| upstream(&s))?.into_inner())
        }
        AdminRoute::WebhooksHealth => return Ok(crate::diag::health(state).await),
        AdminRoute::WebhooksStats => crate::diag::stats(state, req.uri().query()).await?,
        AdminRoute::WebhooksRecent => crate::diag::recent(state, req.uri().query()).await?,
    };
    Ok((StatusCode::OK, body))
}

fn selection_kind(s: &DeadLetterSelection) -> &'static str {
    match s.target {
        Some(Target::Id(_)) => "id",
        Some(Target::Filter(_)) => "filter",
        Some(Target::All(_)) => "all",
        None => "",
    }
}

fn list_request(query: &str) -> Result<ListDeadLettersRequest, ApiError> {
    let mut text = FilterText::default();
    let mut request = ListDeadLettersRequest::default();
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    for (k, v) in &params {
        match k.as_str() {
            "platform" => text.platform = Some(v),
            "tenant" => text.tenant = Some(v),
            "error_class" => text.error_class = Some(v),
            "since" => text.since = Some(v),
            "until" => text.until = Some(v),
            "cursor" => request.cursor.clone_from(v),
            "limit" => {
                request.limit = v.parse().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_argument",
                        format!("limit {v:?} is not a number"),
                    )
                })?;
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_argument",
                    format!(
                        "unknown parameter {other:?}; known: platform, tenant, error_class, \
                         since, until, cursor, limit"
                    ),
                ));
            }
        }
    }
    request.filter =
        Some(dl::parse_filter(&text).map_err(|m| ApiError::bad_request("invalid_argument", m))?);
    Ok(request)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectionBody {
    id: Option<String>,
    filter: Option<FilterBody>,
    all: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterBody {
    platform: Option<String>,
    tenant: Option<String>,
    error_class: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

async fn selection(body: Incoming) -> Result<DeadLetterSelection, ApiError> {
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect());
    let bytes = match read.await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the body did not arrive in time",
            ));
        }
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(_)) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("at most {MAX_BODY} bytes"),
            ));
        }
    };
    selection_of(&bytes)
}

fn selection_of(bytes: &[u8]) -> Result<DeadLetterSelection, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_argument", m);
    let body: SelectionBody = serde_json::from_slice(bytes).map_err(|e| {
        bad(format!(
            "body must be {{\"id\": ..}}, {{\"filter\": {{..}}}} or {{\"all\": true}}: {e}"
        ))
    })?;
    let target = match (body.id, body.filter, body.all) {
        (Some(id), None, None) => Target::Id(id),
        (None, Some(f), None) => Target::Filter(
            dl::parse_filter(&FilterText {
                platform: f.platform.as_deref(),
                tenant: f.tenant.as_deref(),
                error_class: f.error_class.as_deref(),
                since: f.since.as_deref(),
                until: f.until.as_deref(),
            })
            .map_err(bad)?,
        ),
        (None, None, Some(true)) => Target::All(true),
        (None, None, Some(false)) => return Err(bad("`all` must be true when given".into())),
        _ => {
            return Err(bad("give exactly one of `id`, `filter` or `all`".into()));
        }
    };
    Ok(DeadLetterSelection {
        target: Some(target),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_bodies_are_read_strictly() {
        assert!(selection_of(br#"{"all": true}"#).is_ok());
        for bad in [
            &br#"{}"#[..],
            br#"{"all": false}"#,
            br#"{"id": "1-0", "all": true}"#,
            br#"{"ids": ["1-0"]}"#,
            br#"{"filter": {"platform": "telegram"}}"#,
            b"not json",
        ] {
            let e = selection_of(bad).expect_err("refused");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
        assert!(list_request("platform=whatsapp&limit=5").is_ok());
        assert!(list_request("limit=many").is_err());
        assert!(list_request("colour=red").is_err());
    }

    #[test]
    fn only_the_admin_token_is_accepted() {
        let token = "an-admin-token-of-at-least-32-bytes!";
        let mut h = HeaderMap::new();
        assert_eq!(
            authorized(&h, token).expect_err("no header").code,
            "missing_token"
        );
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}x").parse().expect("value"),
        );
        assert_eq!(
            authorized(&h, token).expect_err("wrong").code,
            "invalid_token"
        );
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("value"),
        );
        assert!(authorized(&h, token).is_ok());
    }
}
