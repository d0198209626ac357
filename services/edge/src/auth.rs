//! Agents' JWTs (HS256): claims `sub`, `tenant_id`, optional `location_ids`, `exp`.
//! A token whose `nbf` is still ahead is refused (30 s leeway). When the edge is
//! configured with an issuer or an audience, tokens must carry that `iss` or
//! `aud`: a secret shared with another system then cannot mint tokens for FARO.
//!
//! Browsers cannot set an Authorization header on a WebSocket, so the token is
//! also accepted as a subprotocol (`Sec-WebSocket-Protocol: faro.v1, bearer.<jwt>`,
//! answered with `faro.v1`) or as an `access_token` query parameter. A query
//! parameter ends up in proxies' access logs: prefer the subprotocol.

use http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, error::ApiError};

/// The subprotocol a browser offers next to `bearer.<jwt>`, and the one echoed.
pub const WS_PROTOCOL: &str = "faro.v1";
const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The agent.
    pub sub: String,
    pub tenant_id: Uuid,
    /// Limits the agent to these locations; absent means all of the tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_ids: Option<Vec<Uuid>>,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

impl Claims {
    /// The locations the agent may see; empty means every one of the tenant's.
    pub(crate) fn locations(&self) -> std::collections::HashSet<String> {
        self.location_ids
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect()
    }
}

/// The registered claims [`JwtKeys`] stamps on what it issues, beside [`Claims`].
#[derive(Serialize)]
struct Issued<'a> {
    #[serde(flatten)]
    claims: &'a Claims,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
}

impl JwtKeys {
    /// Keys for `secret` that require no issuer and no audience.
    pub fn new(secret: &[u8]) -> Result<Self, Error> {
        Self::with_scope(secret, None, None)
    }

    /// Keys that require `iss == issuer` and `aud == audience` when those are
    /// set, and stamp them on the tokens they issue.
    pub fn with_scope(
        secret: &[u8],
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<Self, Error> {
        let map = |e: jsonwebtoken::errors::Error| Error::Config(format!("JWT secret: {e}"));
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        // Without a configured audience a token naming one is refused (RFC 7519 4.1.3).
        if let Some(aud) = audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.validate_nbf = true;
        validation.leeway = 30;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret).map_err(map)?,
            decoding: DecodingKey::from_secret(secret).map_err(map)?,
            validation,
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
        })
    }

    pub fn issue(&self, claims: &Claims) -> Result<String, Error> {
        self.issue_not_before(claims, None)
    }

    /// Issues a token that is valid only from `nbf` (Unix seconds) on.
    pub fn issue_not_before(&self, claims: &Claims, nbf: Option<u64>) -> Result<String, Error> {
        let issued = Issued {
            claims,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
            nbf,
        };
        encode(&Header::new(Algorithm::HS256), &issued, &self.encoding)
            .map_err(|e| Error::Config(format!("cannot sign token: {e}")))
    }

    pub(crate) fn validate(&self, token: &str) -> Result<Claims, ApiError> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                let message = match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::ImmatureSignature => "token not valid yet (nbf)",
                    ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => SCOPE_REFUSED,
                    // One message for both: which missing claim is reported first is not stable.
                    ErrorKind::MissingRequiredClaim(c) if c == "iss" || c == "aud" => SCOPE_REFUSED,
                    ErrorKind::InvalidSignature => "token signature is invalid",
                    ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => {
                        "token claims are invalid (need sub, tenant_id, exp)"
                    }
                    _ => "token is malformed",
                };
                ApiError::unauthorized("invalid_token", message)
            })
    }
}

const SCOPE_REFUSED: &str = "token issuer or audience is not accepted here";

/// A presented token and, when it came as a subprotocol, the protocol to echo.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Presented {
    pub token: String,
    pub protocol: Option<&'static str>,
}

/// Finds the token in the Authorization header, the subprotocols or the query.
pub(crate) fn presented_token(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Presented, ApiError> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let token = v
            .to_str()
            .ok()
            .and_then(|s| {
                s.strip_prefix("Bearer ")
                    .or_else(|| s.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                ApiError::unauthorized("invalid_token", "Authorization must be `Bearer <jwt>`")
            })?;
        return Ok(Presented {
            token: token.trim().to_owned(),
            protocol: None,
        });
    }
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if let Some(token) = offered
        .iter()
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX))
    {
        if !offered.contains(&WS_PROTOCOL) {
            return Err(ApiError::unauthorized(
                "invalid_token",
                format!("offer the `{WS_PROTOCOL}` subprotocol next to `bearer.<jwt>`"),
            ));
        }
        return Ok(Presented {
            token: token.to_owned(),
            protocol: Some(WS_PROTOCOL),
        });
    }
    let from_query = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    });
    match from_query {
        Some(token) => Ok(Presented {
            token,
            protocol: offered.contains(&WS_PROTOCOL).then_some(WS_PROTOCOL),
        }),
        None => Err(ApiError::unauthorized(
            "missing_token",
            "a JWT is required: Authorization header, `bearer.<jwt>` subprotocol or access_token",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "agent-1".into(),
            tenant_id: Uuid::nil(),
            location_ids: None,
            exp,
        }
    }

    fn now() -> u64 {
        u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default()
    }

    #[test]
    fn round_trips_and_rejects_bad_tokens() {
        let keys = JwtKeys::new(&[7; 32]).expect("keys");
        let good = claims(now() + 60);
        let token = keys.issue(&good).expect("issue");
        assert_eq!(keys.validate(&token).expect("valid"), good);
        let expired = keys.issue(&claims(now() - 3600)).expect("issue");
        assert_eq!(
            keys.validate(&expired)
                .map_err(|e| e.message)
                .expect_err("must be refused"),
            "token expired"
        );
        let other = JwtKeys::new(&[8; 32])
            .expect("keys")
            .issue(&good)
            .expect("issue");
        assert!(keys.validate(&other).is_err());
        assert!(keys.validate("not.a.jwt").is_err());
    }

    fn refusal(keys: &JwtKeys, token: &str) -> Option<String> {
        keys.validate(token).err().map(|e| e.message)
    }

    #[test]
    fn a_token_is_refused_before_its_nbf() {
        let keys = JwtKeys::new(&[7; 32]).expect("keys");
        let c = claims(now() + 7200);
        let early = keys
            .issue_not_before(&c, Some(now() + 3600))
            .expect("issue");
        assert_eq!(
            refusal(&keys, &early).as_deref(),
            Some("token not valid yet (nbf)")
        );
        for nbf in [now() - 60, now() + 10] {
            let ok = keys.issue_not_before(&c, Some(nbf)).expect("issue");
            assert_eq!(refusal(&keys, &ok), None, "nbf {nbf}");
        }
    }

    #[test]
    fn issuer_and_audience_are_required_when_configured() {
        let secret = [7; 32];
        let scoped = |iss: Option<&str>, aud: Option<&str>| {
            JwtKeys::with_scope(&secret, iss, aud).expect("keys")
        };
        let edge = scoped(Some("faro-auth"), Some("faro-edge"));
        let c = claims(now() + 60);
        let good = edge.issue(&c).expect("issue");
        assert_eq!(edge.validate(&good).expect("valid"), c);

        let refused = Some(SCOPE_REFUSED.to_owned());
        for token in [
            scoped(None, None).issue(&c),
            scoped(Some("other"), Some("faro-edge")).issue(&c),
            scoped(None, Some("faro-edge")).issue(&c),
            scoped(Some("faro-auth"), Some("other")).issue(&c),
            scoped(Some("faro-auth"), None).issue(&c),
        ] {
            assert_eq!(refusal(&edge, &token.expect("issue")), refused);
        }
        // An edge with neither configured accepts plain tokens and refuses one
        // addressed to some audience: it cannot tell it is the one meant.
        let plain = scoped(None, None);
        assert_eq!(refusal(&plain, &plain.issue(&c).expect("issue")), None);
        assert_eq!(
            refusal(
                &plain,
                &scoped(None, Some("faro-edge")).issue(&c).expect("issue")
            ),
            refused
        );
    }

    #[test]
    fn finds_the_token_where_browsers_can_put_it() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented_token(&h, None).expect("header").token, "abc");

        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("faro.v1, bearer.x.y.z"),
        );
        let p = presented_token(&h, None).expect("protocol");
        assert_eq!((p.token.as_str(), p.protocol), ("x.y.z", Some(WS_PROTOCOL)));

        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("bearer.x.y.z"),
        );
        assert!(presented_token(&h, None).is_err());

        let p = presented_token(&HeaderMap::new(), Some("a=1&access_token=q.r.s")).expect("query");
        assert_eq!((p.token.as_str(), p.protocol), ("q.r.s", None));
        assert_eq!(
            presented_token(&HeaderMap::new(), Some("a=1"))
                .expect_err("must be refused")
                .code,
            "missing_token"
        );
    }
}
