//! The edge's route table: every path it serves and, per method, what it
//! serves there, in one list that routing, the 405 answers (with `Allow`) and
//! the tests against `docs/openapi.json` all read. A route missing from this table is
//! unreachable, and one missing from the OpenAPI description fails the
//! tests: the description cannot fall behind the code.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::{admin::AdminRoute, error::ApiError, inbox::InboxRoute, webhook::Platform};

/// The OpenAPI 3.1 description of these routes, served at `/api/v1/openapi.json`.
pub(crate) const OPENAPI_JSON: &str = include_str!("../../../docs/openapi.json");

/// What a path serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Health,
    OpenApi,
    /// Meta's `hub.challenge` verification (GET).
    Handshake(Platform),
    /// A signed webhook (POST).
    Webhook(Platform),
    MessageStream,
    MessagePoll,
    MessageEvents,
    Admin(AdminRoute),
    Inbox(InboxRoute),
    /// An agent's reply in a thread (`replies`).
    Reply,
}

/// A path template (`{name}` matches one non-empty segment) and, for each
/// method it takes, what it serves.
#[derive(Debug)]
pub(crate) struct Spec {
    pub path: &'static str,
    pub routes: &'static [(&'static str, Route)],
}

impl Spec {
    /// The methods the path takes, in table order (the `Allow` header).
    pub(crate) fn methods(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.iter().map(|(m, _)| *m)
    }

    /// What `method` serves on this path; `None` is a 405.
    pub(crate) fn route_for(&self, method: &str) -> Option<Route> {
        self.routes
            .iter()
            .find_map(|(m, r)| (*m == method).then_some(*r))
    }

    /// The admin route of an operator path: such paths authenticate before
    /// anything else, so a wrong method is told only to the operator.
    pub(crate) fn admin(&self) -> Option<AdminRoute> {
        self.routes.iter().find_map(|(_, r)| match r {
            Route::Admin(a) => Some(*a),
            _ => None,
        })
    }
}

const fn spec(path: &'static str, routes: &'static [(&'static str, Route)]) -> Spec {
    Spec { path, routes }
}

/// Every route. Literal paths come before templates that would match them.
pub(crate) const ROUTES: &[Spec] = &[
    spec("/healthz", &[("GET", Route::Health)]),
    spec("/api/v1/openapi.json", &[("GET", Route::OpenApi)]),
    spec("/api/v1/webhooks/whatsapp", &webhook(Platform::WhatsApp)),
    spec("/api/v1/webhooks/facebook", &webhook(Platform::Messenger)),
    spec("/api/v1/webhooks/messenger", &webhook(Platform::Messenger)),
    spec("/api/v1/webhooks/instagram", &webhook(Platform::Instagram)),
    // YCloud has no verification handshake.
    spec(
        "/api/v1/webhooks/ycloud",
        &[("POST", Route::Webhook(Platform::YCloud))],
    ),
    // Diagnostics: operator routes (the admin token), before nothing that
    // could match them (no template under /api/v1/webhooks/).
    spec(
        "/api/v1/webhooks/health",
        &[("GET", Route::Admin(AdminRoute::WebhooksHealth))],
    ),
    spec(
        "/api/v1/webhooks/stats",
        &[("GET", Route::Admin(AdminRoute::WebhooksStats))],
    ),
    spec(
        "/api/v1/webhooks/recent",
        &[("GET", Route::Admin(AdminRoute::WebhooksRecent))],
    ),
    spec("/api/v1/messages/stream", &[("GET", Route::MessageStream)]),
    spec("/api/v1/messages/poll", &[("GET", Route::MessagePoll)]),
    spec("/api/v1/messages/events", &[("GET", Route::MessageEvents)]),
    spec(
        "/api/v1/admin/dead-letters",
        &[("GET", Route::Admin(AdminRoute::DeadLetters))],
    ),
    spec(
        "/api/v1/admin/dead-letters/retry",
        &[("POST", Route::Admin(AdminRoute::Retry))],
    ),
    spec(
        "/api/v1/admin/dead-letters/purge",
        &[("POST", Route::Admin(AdminRoute::Purge))],
    ),
    spec(
        "/api/v1/admin/dead-letters/{id}",
        &[("GET", Route::Admin(AdminRoute::DeadLetter))],
    ),
    spec(
        "/api/v1/admin/queue",
        &[("GET", Route::Admin(AdminRoute::Queue))],
    ),
    spec(
        "/api/v1/conversations",
        &[("GET", Route::Inbox(InboxRoute::List))],
    ),
    spec(
        "/api/v1/conversations/{id}",
        &[
            ("GET", Route::Inbox(InboxRoute::One)),
            ("PATCH", Route::Inbox(InboxRoute::One)),
        ],
    ),
    // GET pages through a thread (`inbox`); POST is an agent's reply (`replies`).
    spec(
        "/api/v1/conversations/{id}/messages",
        &[
            ("GET", Route::Inbox(InboxRoute::Messages)),
            ("POST", Route::Reply),
        ],
    ),
    spec(
        "/api/v1/conversations/{id}/read",
        &[("POST", Route::Inbox(InboxRoute::Read))],
    ),
];

/// A Meta webhook path: the verification handshake and the signed POST.
const fn webhook(p: Platform) -> [(&'static str, Route); 2] {
    [("GET", Route::Handshake(p)), ("POST", Route::Webhook(p))]
}

/// A request's route, and the value of the template's `{..}` segment if any.
#[derive(Debug)]
pub(crate) struct Matched {
    pub spec: &'static Spec,
    pub param: Option<String>,
}

/// The route of `path` (a trailing slash is ignored), or `None`: 404.
pub(crate) fn route(path: &str) -> Option<Matched> {
    let path = path.trim_end_matches('/');
    ROUTES.iter().find_map(|spec| {
        let mut param = None;
        let mut template = spec.path.split('/');
        let mut given = path.split('/');
        loop {
            match (template.next(), given.next()) {
                (None, None) => return Some(Matched { spec, param }),
                (Some(t), Some(g)) if t.starts_with('{') && !g.is_empty() => {
                    param = Some(g.to_owned());
                }
                (Some(t), Some(g)) if t == g => {}
                _ => return None,
            }
        }
    })
}

/// 405 naming the methods the path takes, in `Allow` too (RFC 9110).
pub(crate) fn method_not_allowed(spec: &Spec) -> Response<Full<Bytes>> {
    let allowed = spec.methods().collect::<Vec<_>>().join(", ");
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("allowed: {allowed}"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&allowed) {
        response.headers_mut().insert(header::ALLOW, v);
    }
    response
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
