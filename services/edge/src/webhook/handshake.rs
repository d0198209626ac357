//! Meta's subscription handshake (`GET`): `hub.challenge` echoed for a
//! verify token of an app connected on the path's channel.

use std::net::IpAddr;

use bytes::Bytes;
use faro_proto::conversations::v1::CheckVerifyTokenRequest;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use subtle::ConstantTimeEq;

use super::Platform;
use crate::{State, error::ApiError};

const MAX_CHALLENGE: usize = 256;

/// `GET`: echo `hub.challenge` if `hub.mode=subscribe` and the verify token
/// belongs to an app with an account on this path's channel (never a YCloud
/// endpoint, whose token is a placeholder); 403 otherwise.
pub(crate) async fn handshake(
    state: &State,
    platform: Platform,
    ip: IpAddr,
    query: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    // A wrong token costs a lookup too: the same budget as failed deliveries.
    state.limiter.admit_unverified(ip).await?;
    let answer = check_handshake(state, platform, query).await;
    if answer.as_ref().is_err_and(|e| e.status.is_client_error()) {
        state.limiter.failed_verification(ip).await;
    }
    answer
}

async fn check_handshake(
    state: &State,
    platform: Platform,
    query: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if !platform.has_handshake() {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this webhook has no verification handshake; allowed: POST",
        ));
    }
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
            "hub.verify_token does not match an app connected on this channel",
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
