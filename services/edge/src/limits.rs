//! Bounds on what one client may make the edge hold: WebSockets per tenant and
//! per agent, concurrent long-polls and event streams per agent, the size of a
//! client's WebSocket frames, request headers, and the shape of webhook
//! bodies. Each is configurable ([`ClientLimits`]) and refused with a JSON
//! error naming it.
//!
//! The per-tenant and per-agent counts live in this process: they bound what
//! one edge replica holds (its memory and tasks), so with N replicas behind a
//! load balancer a tenant may hold up to N times as many. Rates shared across
//! replicas are Redis' job, not this module's.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use http::StatusCode;

use crate::{Error, auth::Claims, error::ApiError};

/// What one client may use; see the README's configuration table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// WebSockets one tenant may hold open on this edge.
    pub ws_per_tenant: usize,
    /// WebSockets one agent (the JWT's `sub` within its tenant) may hold open.
    pub ws_per_agent: usize,
    /// Long-polls and Server-Sent Event streams one agent may have in progress.
    pub rest_per_agent: usize,
    /// Largest WebSocket frame a client may send, in bytes (1009 beyond).
    /// Client frames are never reassembled, so this bounds a message too.
    pub ws_max_frame_bytes: usize,
    /// Headers one request may carry (431 beyond).
    pub max_headers: usize,
    /// Bytes of header names and values one request may carry (431 beyond).
    pub max_header_bytes: usize,
    /// How deep a webhook body may nest arrays and objects (400 beyond).
    pub json_max_depth: usize,
    /// Array elements and object members a webhook body may hold in all.
    pub json_max_elements: usize,
    /// Distinct accounts one webhook body may name.
    pub webhook_max_accounts: usize,
    /// Elements of a webhook body's `entry` array.
    pub webhook_max_entries: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            ws_per_tenant: 1_000,
            ws_per_agent: 16,
            rest_per_agent: 8,
            ws_max_frame_bytes: 64 * 1024,
            max_headers: 100,
            max_header_bytes: 32 * 1024,
            json_max_depth: 64,
            json_max_elements: 100_000,
            webhook_max_accounts: 1_000,
            webhook_max_entries: 1_000,
        }
    }
}

/// hyper's own bounds on an HTTP/1 request head: the buffer a head must fit
/// in, and the header slots. A head within both reaches [`headers_too_large`]
/// and gets a JSON 431; past them hyper answers a bare 431 (and closes).
///
/// hyper allocates and fills all the slots for every request it parses, so
/// their number is a cost per webhook: 16,384 slots (once chosen so that any
/// head the buffer holds got the JSON answer) were a quarter of the edge's
/// instructions per webhook (docs/BENCHMARKS.md). 512 is five times the
/// default `max-headers`; a client sending more gets the bare 431.
pub(crate) const HTTP1_MAX_HEAD_BYTES: usize = 256 * 1024;
pub(crate) const HTTP1_MAX_HEADERS: usize = 512;

/// ingest parses verified bodies with serde_json, which refuses nesting
/// deeper than 128: the edge must refuse first, with a status Meta sees.
const MAX_JSON_DEPTH: usize = 128;

impl ClientLimits {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let within = |name: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::Config(format!(
                    "{name} must be {lo}..={hi}, got {v}"
                )))
            }
        };
        within("ws-max-per-tenant", self.ws_per_tenant, 1, 1_000_000)?;
        within("ws-max-per-agent", self.ws_per_agent, 1, self.ws_per_tenant)?;
        within("rest-max-per-agent", self.rest_per_agent, 1, 10_000)?;
        // Pings (125 bytes at most) and agents' typing frames must always fit.
        within(
            "ws-max-frame-bytes",
            self.ws_max_frame_bytes,
            1024,
            16 << 20,
        )?;
        within("max-headers", self.max_headers, 16, HTTP1_MAX_HEADERS / 2)?;
        within(
            "max-header-bytes",
            self.max_header_bytes,
            4096,
            HTTP1_MAX_HEAD_BYTES / 2,
        )?;
        within("json-max-depth", self.json_max_depth, 8, MAX_JSON_DEPTH)?;
        within(
            "json-max-elements",
            self.json_max_elements,
            1_000,
            10_000_000,
        )?;
        within(
            "webhook-max-accounts",
            self.webhook_max_accounts,
            1,
            100_000,
        )?;
        within("webhook-max-entries", self.webhook_max_entries, 1, 100_000)?;
        Ok(())
    }
}

/// A JSON 431 for a request over the header bounds.
pub(crate) fn headers_too_large(
    limits: &ClientLimits,
    headers: &http::HeaderMap,
) -> Option<ApiError> {
    let (max, max_bytes) = (limits.max_headers, limits.max_header_bytes);
    if headers.len() <= max {
        let bytes: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        if bytes <= max_bytes {
            return None;
        }
    }
    Some(ApiError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        format!("at most {max} headers and {max_bytes} bytes of them"),
    ))
}

/// Counts of something held per key (a tenant, an agent), each bounded.
struct Counts {
    max: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// One unit of a [`Counts`], given back on drop.
pub(crate) struct Held {
    key: String,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

fn lock(m: &Mutex<HashMap<String, usize>>) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    // A panic while holding the lock cannot leave a count half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Counts {
    fn new(max: usize) -> Self {
        Self {
            max,
            held: Arc::default(),
        }
    }

    fn take(&self, key: String) -> Option<Held> {
        let mut map = lock(&self.held);
        let n = map.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Held {
            key,
            held: self.held.clone(),
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = lock(&self.held);
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// What agents hold on this edge, per tenant and per agent.
pub(crate) struct AgentSlots {
    ws_tenant: Counts,
    ws_agent: Counts,
    rest_agent: Counts,
}

/// Held for as long as a WebSocket is open.
pub(crate) struct WsSlot {
    _tenant: Held,
    _agent: Held,
}

fn agent_key(claims: &Claims) -> String {
    // The tenant id is a UUID: no separator ambiguity.
    format!("{}/{}", claims.tenant_id, claims.sub)
}

fn too_many(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
}

impl AgentSlots {
    pub(crate) fn new(limits: &ClientLimits) -> Self {
        Self {
            ws_tenant: Counts::new(limits.ws_per_tenant),
            ws_agent: Counts::new(limits.ws_per_agent),
            rest_agent: Counts::new(limits.rest_per_agent),
        }
    }

    /// A slot for one more WebSocket of this agent, or a 429 naming the bound.
    pub(crate) fn websocket(&self, claims: &Claims) -> Result<WsSlot, ApiError> {
        let agent = self.ws_agent.take(agent_key(claims)).ok_or_else(|| {
            too_many(
                "too_many_websockets",
                format!(
                    "this agent has {} WebSockets open on this server already; close one",
                    self.ws_agent.max
                ),
            )
        })?;
        let tenant = self
            .ws_tenant
            .take(claims.tenant_id.to_string())
            .ok_or_else(|| {
                too_many(
                    "too_many_websockets",
                    format!(
                        "this tenant has {} WebSockets open on this server already",
                        self.ws_tenant.max
                    ),
                )
            })?;
        Ok(WsSlot {
            _tenant: tenant,
            _agent: agent,
        })
    }

    /// A slot for one more long-poll or event stream of this agent, or a 429.
    pub(crate) fn request(&self, claims: &Claims) -> Result<Held, ApiError> {
        self.rest_agent.take(agent_key(claims)).ok_or_else(|| {
            too_many(
                "too_many_requests_in_progress",
                format!(
                    "this agent has {} long-polls or event streams in progress on this server already",
                    self.rest_agent.max
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(tenant: u128, sub: &str) -> Claims {
        Claims {
            sub: sub.into(),
            tenant_id: uuid::Uuid::from_u128(tenant),
            location_ids: None,
            exp: 0,
        }
    }

    #[test]
    fn websockets_are_bounded_per_agent_and_per_tenant() {
        let slots = AgentSlots::new(&ClientLimits {
            ws_per_tenant: 3,
            ws_per_agent: 2,
            ..ClientLimits::default()
        });
        let a1 = slots.websocket(&claims(1, "a")).expect("first");
        let _a2 = slots.websocket(&claims(1, "a")).expect("second");
        let e = slots.websocket(&claims(1, "a")).err().expect("agent full");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::TOO_MANY_REQUESTS, "too_many_websockets")
        );
        let _b1 = slots.websocket(&claims(1, "b")).expect("another agent");
        assert!(slots.websocket(&claims(1, "b")).is_err(), "tenant full");
        // The refused tenant slot gave its agent slot back.
        assert_eq!(
            lock(&slots.ws_agent.held).get(&agent_key(&claims(1, "b"))),
            Some(&1)
        );
        // Same sub in another tenant is another agent.
        let _c = slots.websocket(&claims(2, "a")).expect("other tenant");
        drop(a1);
        let _a3 = slots.websocket(&claims(1, "a")).expect("freed");
    }

    #[test]
    fn requests_are_bounded_per_agent_and_counts_are_forgotten_at_zero() {
        let slots = AgentSlots::new(&ClientLimits {
            rest_per_agent: 1,
            ..ClientLimits::default()
        });
        let held = slots.request(&claims(1, "a")).expect("first");
        let e = slots.request(&claims(1, "a")).err().expect("full");
        assert_eq!(e.code, "too_many_requests_in_progress");
        drop(held);
        assert!(lock(&slots.rest_agent.held).is_empty());
        assert!(slots.request(&claims(1, "a")).is_ok());
    }

    #[test]
    fn validation_names_the_bound() {
        assert!(ClientLimits::default().validate().is_ok());
        for bad in [
            ClientLimits {
                json_max_depth: 129,
                ..ClientLimits::default()
            },
            ClientLimits {
                ws_per_agent: 2,
                ws_per_tenant: 1,
                ..ClientLimits::default()
            },
            ClientLimits {
                ws_max_frame_bytes: 125,
                ..ClientLimits::default()
            },
            ClientLimits {
                max_headers: HTTP1_MAX_HEADERS,
                ..ClientLimits::default()
            },
            ClientLimits {
                rest_per_agent: 0,
                ..ClientLimits::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers_over_either_bound_are_refused() {
        let limits = ClientLimits {
            max_headers: 20,
            max_header_bytes: 4096,
            ..ClientLimits::default()
        };
        let mut h = http::HeaderMap::new();
        for i in 0..20 {
            h.insert(
                http::HeaderName::try_from(format!("x-{i}")).expect("name"),
                http::HeaderValue::from_static("v"),
            );
        }
        assert!(headers_too_large(&limits, &h).is_none());
        h.insert("x-20", http::HeaderValue::from_static("v"));
        assert!(headers_too_large(&limits, &h).is_some(), "21 headers");
        let mut h = http::HeaderMap::new();
        h.insert("x", "v".repeat(4096).parse().expect("value"));
        assert!(headers_too_large(&limits, &h).is_some(), "4097 bytes");
    }
}
