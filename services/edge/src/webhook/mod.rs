//! Webhooks: Meta's subscription handshake and signed deliveries for
//! WhatsApp, Messenger and Instagram, and YCloud's signed deliveries.

mod accounts;
mod handshake;
mod limit;
mod rate;
mod shape;

use std::net::IpAddr;

use bytes::Bytes;
use faro_proto::{
    conversations::v1::ChannelRoute,
    ingest::v1::{Provider, Route, SubmitRequest},
    to_timestamp,
};
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;
use tracing::Instrument;

pub(crate) use handshake::handshake;
pub(crate) use limit::UnverifiedLimit;

use crate::{
    State,
    diag::Attempt,
    error::{ApiError, json_response},
    signature,
};

/// The platforms served at `/api/v1/webhooks/<platform>` (paths in `router::ROUTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Platform {
    WhatsApp,
    Messenger,
    Instagram,
    /// A WhatsApp BSP with its own envelope and signature.
    YCloud,
}

/// YCloud signs its timestamp; older deliveries are refused as replays. Meta
/// signs no timestamp and retries for days, so no such rule applies to it.
const YCLOUD_TOLERANCE_SECS: i64 = 300;

impl Platform {
    /// The platform's name in rate-limit keys and metrics' labels.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::WhatsApp => "whatsapp",
            Self::Messenger => "messenger",
            Self::Instagram => "instagram",
            Self::YCloud => "ycloud",
        }
    }

    fn channel(self) -> faro_proto::conversations::v1::Channel {
        use faro_proto::conversations::v1::Channel;
        match self {
            Self::WhatsApp | Self::YCloud => Channel::Whatsapp,
            Self::Messenger => Channel::FacebookMessenger,
            Self::Instagram => Channel::InstagramDm,
        }
    }

    fn provider(self) -> Provider {
        match self {
            Self::WhatsApp => Provider::WhatsappCloud,
            Self::Messenger => Provider::Messenger,
            Self::Instagram => Provider::Instagram,
            Self::YCloud => Provider::Ycloud,
        }
    }

    /// Meta's platforms have the `hub.challenge` handshake; YCloud does not.
    pub(crate) fn has_handshake(self) -> bool {
        self != Self::YCloud
    }
}

/// A signature as presented, before the secret is known.
enum Presented<'a> {
    Meta([u8; 32]),
    YCloud { digest: [u8; 32], t_raw: &'a [u8] },
}

impl Presented<'_> {
    fn verifies(&self, secret: &[u8], body: &[u8]) -> bool {
        match self {
            Self::Meta(digest) => signature::verify(secret, body, digest),
            Self::YCloud { digest, t_raw } => signature::verify_ycloud(secret, t_raw, body, digest),
        }
    }
}

fn presented_signature<'a>(
    platform: Platform,
    headers: &'a HeaderMap,
    now: i64,
) -> Result<Presented<'a>, ApiError> {
    let (name, format) = match platform {
        Platform::YCloud => ("YCloud-Signature", "t=<unix seconds>,s=<64 hex digits>"),
        _ => ("X-Hub-Signature-256", "sha256=<64 hex digits>"),
    };
    let Some(value) = headers.get(name) else {
        return Err(ApiError::unauthorized(
            "missing_signature",
            format!("{name} is required"),
        ));
    };
    let malformed =
        || ApiError::unauthorized("invalid_signature", format!("{name} must be {format}"));
    match platform {
        Platform::YCloud => {
            let (t, digest, t_raw) =
                signature::parse_ycloud_header(value.as_bytes()).ok_or_else(malformed)?;
            if (now - t).abs() > YCLOUD_TOLERANCE_SECS {
                return Err(ApiError::unauthorized(
                    "stale_signature",
                    format!("the signed timestamp is more than {YCLOUD_TOLERANCE_SECS} s from now"),
                ));
            }
            Ok(Presented::YCloud { digest, t_raw })
        }
        _ => Ok(Presented::Meta(
            signature::parse_header(value.as_bytes()).ok_or_else(malformed)?,
        )),
    }
}

const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

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
    // A body trickled in slower than this is refused (slow-loris); Meta sends at once.
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect());
    match read.await.map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )
    })? {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(
            "body_unreadable",
            format!("could not read the body: {e}"),
        )),
    }
}

/// A POST comes from one app; a body naming accounts of more apps than this is
/// not trying more secrets: each try hashes the whole body again.
const MAX_CANDIDATE_APPS: usize = 4;

/// The routes of the one app whose secret verifies the body; accounts of other
/// apps named in the same body are not trusted.
fn verified_routes(
    routes: Vec<ChannelRoute>,
    body: &[u8],
    presented: &Presented<'_>,
) -> Option<Vec<ChannelRoute>> {
    let mut apps: Vec<&str> = routes.iter().map(|r| r.app_id.as_str()).collect();
    apps.sort_unstable();
    apps.dedup();
    let app = apps.into_iter().take(MAX_CANDIDATE_APPS).find(|app| {
        routes
            .iter()
            .find(|r| r.app_id == *app)
            .is_some_and(|r| presented.verifies(r.app_secret.as_bytes(), body))
    })?;
    let app = app.to_owned();
    Some(routes.into_iter().filter(|r| r.app_id == app).collect())
}

/// `POST`: verify, pace, queue, and answer 200 only once the job is in Redis.
///
/// An address whose requests keep failing verification is refused before any
/// work (429); each failure spends one of its budget. A verified delivery over
/// its tenant's rate is queued for later (still 200), or refused with 429 when
/// its slot lies too far ahead (see `ratelimit`).
pub(crate) async fn deliver(
    state: &State,
    platform: Platform,
    ip: IpAddr,
    headers: &HeaderMap,
    body: Incoming,
    attempt: &mut Attempt,
) -> Result<Response<Full<Bytes>>, ApiError> {
    // The root of the webhook's trace (or a child of a proxy's `traceparent`).
    let span = tracing::info_span!(
        "webhook.receive",
        platform = platform.name(),
        otel.kind = "server"
    );
    faro_proto::trace::continue_from_headers(&span, headers);
    deliver_traced(state, platform, ip, headers, body, attempt)
        .instrument(span)
        .await
}

async fn deliver_traced(
    state: &State,
    platform: Platform,
    ip: IpAddr,
    headers: &HeaderMap,
    body: Incoming,
    attempt: &mut Attempt,
) -> Result<Response<Full<Bytes>>, ApiError> {
    state.limiter.admit_unverified(ip).await?;
    let received_at = chrono::Utc::now();
    tracing::debug!(target: "faro::event", event = "webhook.received", platform = platform.name(), "webhook received");
    let verified = verify(state, platform, headers, body, received_at, attempt).await;
    let (body, routes) = match verified {
        Ok(verified) => verified,
        Err(e) => {
            // Refusals of the request itself; not our own 503s.
            if e.status.is_client_error() {
                state.limiter.failed_verification(ip).await;
            }
            return Err(e);
        }
    };
    tracing::debug!(
        target: "faro::event",
        event = "webhook.verified",
        platform = platform.name(),
        tenant = %routes[0].tenant_id,
        account = %routes[0].external_account_id,
        app_id = %routes[0].app_id,
        routes = routes.len(),
        bytes = body.len(),
        latency_ms = ms(received_at),
        "webhook verified"
    );
    if let Some(r) = routes.first() {
        attempt.tenant = Some(r.tenant_id.clone());
        attempt.account = Some(r.external_account_id.clone());
    }
    attempt.verified_at = Some(std::time::Instant::now());
    let delay = rate::delay(state, platform, &routes).await?;
    attempt.deferred = !delay.is_zero();
    let (response, request_id) =
        queue(state, platform, headers, body, routes, received_at, delay).await?;
    attempt.request_id = Some(request_id);
    Ok(response)
}

/// Milliseconds since `t`, for the events' `latency_ms`.
fn ms(t: chrono::DateTime<chrono::Utc>) -> f64 {
    (chrono::Utc::now() - t)
        .num_microseconds()
        .unwrap_or(i64::MAX) as f64
        / 1e3
}

/// The raw body and the routes of the app whose secret verifies it.
async fn verify(
    state: &State,
    platform: Platform,
    headers: &HeaderMap,
    body: Incoming,
    received_at: chrono::DateTime<chrono::Utc>,
    attempt: &mut Attempt,
) -> Result<(Bytes, Vec<ChannelRoute>), ApiError> {
    let presented = presented_signature(platform, headers, received_at.timestamp())?;
    let body = read_body(body, headers, state.config.max_body_bytes).await?;
    attempt.bytes = body.len();
    // Everything up to a verified signature is work anyone can make us do.
    let unverified = state.unverified.enter().await?;
    let limits = &state.config.client_limits;
    shape::check(&body, limits.json_max_depth, limits.json_max_elements)?;
    let ids = accounts::account_ids(platform, &body, limits)?;
    attempt.named(&ids);
    let unknown = || {
        ApiError::unauthorized(
            "unknown_account",
            "the body names no connected account, so its signature cannot be verified",
        )
    };
    if ids.is_empty() {
        return Err(unknown());
    }
    let ids: Vec<String> = ids.into_iter().collect();
    let mut fresh = false;
    let routes = loop {
        let routes = state
            .routes
            .resolve(&state.conversations, platform.channel(), &ids, fresh)
            .await
            .map_err(|s| ApiError::upstream("conversations", &s))?;
        if routes.is_empty() {
            return Err(unknown());
        }
        match verified_routes(routes, &body, &presented) {
            Some(r) => break r,
            // Cached routes may predate a secret rotation or a new account: ask once more.
            None if !fresh => fresh = true,
            None => {
                return Err(ApiError::unauthorized(
                    "invalid_signature",
                    "the signature does not match the body",
                ));
            }
        }
    };
    drop(unverified);
    Ok((body, routes))
}

/// Submits the verified delivery to ingest, now or `delay` ahead.
async fn queue(
    state: &State,
    platform: Platform,
    headers: &HeaderMap,
    body: Bytes,
    routes: Vec<ChannelRoute>,
    received_at: chrono::DateTime<chrono::Utc>,
    delay: std::time::Duration,
) -> Result<(Response<Full<Bytes>>, String), ApiError> {
    let (app_id, meta_app_id) = (routes[0].app_id.clone(), routes[0].meta_app_id.clone());
    let tenant = routes[0].tenant_id.clone();
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
            // Ingest continues the trace from its own span when exporting;
            // otherwise a proxy's context still rides along.
            traceparent: faro_proto::trace::traceparent().unwrap_or_else(|| {
                headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            }),
            request_id: request_id.clone(),
            defer_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        })
        .await
        .map_err(|s| ApiError::upstream("ingest", &s))?
        .into_inner();
    let status = if delay.is_zero() {
        "queued"
    } else {
        "deferred"
    };
    tracing::info!(
        target: "faro::event",
        event = "webhook.enqueued",
        platform = platform.name(),
        %tenant,
        %request_id,
        job_id = %submitted.job_id,
        bytes = body.len(),
        status,
        latency_ms = ms(received_at),
        "webhook enqueued"
    );
    let response = json_response(
        StatusCode::OK,
        &json!({"status": status, "request_id": request_id}),
    );
    Ok((response, request_id))
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
        let presented = Presented::Meta(digest);
        let routes = vec![
            route("a1", "s1", "p1"),
            route("a2", "s2", "p2"),
            route("a2", "s2", "p3"),
        ];
        let trusted = verified_routes(routes, body, &presented).expect("a2 signed it");
        let accounts: Vec<_> = trusted
            .iter()
            .map(|r| r.external_account_id.as_str())
            .collect();
        assert_eq!(accounts, ["p2", "p3"]);
        assert!(verified_routes(vec![route("a1", "s1", "p1")], body, &presented).is_none());
    }

    #[test]
    fn a_body_naming_many_apps_gets_a_bounded_number_of_tries() {
        let body = br#"{"entry":[]}"#;
        let digest =
            signature::parse_header(signature::sign(b"s5", body).as_bytes()).expect("header");
        let presented = Presented::Meta(digest);
        let many: Vec<_> = (1..=5)
            .map(|n| route(&format!("a{n}"), &format!("s{n}"), "p"))
            .collect();
        assert!(
            verified_routes(many, body, &presented).is_none(),
            "the fifth app is never tried"
        );
        let few: Vec<_> = (2..=5)
            .map(|n| route(&format!("a{n}"), &format!("s{n}"), "p"))
            .collect();
        assert!(verified_routes(few, body, &presented).is_some());
    }

    #[test]
    fn ycloud_timestamps_outside_the_tolerance_are_refused() {
        let mut headers = HeaderMap::new();
        let now = 1_800_000_000;
        for (t, ok) in [
            (now, true),
            (now - 299, true),
            (now - 301, false),
            (now + 301, false),
        ] {
            let v = signature::sign_ycloud(b"s", t, b"{}");
            headers.insert("ycloud-signature", v.parse().expect("header value"));
            let r = presented_signature(Platform::YCloud, &headers, now);
            assert_eq!(r.is_ok(), ok, "t = now {:+}", t - now);
        }
        headers.clear();
        let e = presented_signature(Platform::YCloud, &headers, now)
            .err()
            .map(|e| e.code);
        assert_eq!(e, Some("missing_signature"));
    }
}
