//! Platform payloads to normalized channel events.
//!
//! Parsers are tolerant: optional fields are optional, unknown fields are
//! ignored, and a message of a kind FARO does not understand is kept as a
//! message of type `unsupported` with its raw JSON rather than failing the
//! batch; an event that is no message (handover, opt-in, policy notice, or of
//! a type FARO does not know) is kept as a conversation event (`control`). A
//! part that can never be stored (no verified account, no sender) is rejected
//! with its reason and dead-lettered alone, never silently dropped. Only a
//! payload that is not the expected JSON envelope at all is an error (and is
//! dead-lettered whole). Every entry, change and item of a batch is walked.

pub mod account;
mod control;
pub mod customers;
pub mod messaging;
pub mod whatsapp;
pub mod ycloud;

use chrono::{DateTime, Utc};
use faro_proto::{
    conversations::v1::{ChannelEvent, EventScope, channel_event::Kind},
    ingest::v1::{Provider, Route},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What a parser needs besides the payload.
pub struct Context<'a> {
    /// The accounts the edge verified the signature for; only these are trusted.
    pub routes: &'a [Route],
    /// Meta's id of the app that signed the payload, to recognise our own echoes.
    pub meta_app_id: &'a str,
    pub received_at: DateTime<Utc>,
}

impl Context<'_> {
    pub(crate) fn route(&self, account: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.external_account_id == account)
    }

    /// The account at `v` (by the rule the edge routes by, so that whatever
    /// the edge verified is found here) and its route, if verified.
    pub(crate) fn account(&self, v: Option<&Value>) -> (Option<String>, Option<&Route>) {
        let id = faro_proto::account_id(v);
        let route = id.as_deref().and_then(|id| self.route(id));
        (id, route)
    }
}

/// What a payload yields. Every part of a verified payload ends up in one of
/// these, never only in a log line.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<ChannelEvent>,
    /// Parts that can never be stored (no account verified for them, no
    /// sender, a kind that is not a conversation event, …): dead-lettered with
    /// their reason while the rest of the payload is stored.
    pub rejected: Vec<Rejected>,
    /// Items deliberately not stored because they already are: echoes of
    /// messages our own app sent.
    pub ignored: usize,
}

/// One part of a payload that cannot be stored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: String,
    /// The part as the platform sent it (JSON).
    pub raw: String,
}

impl Parsed {
    pub(crate) fn push(&mut self, kind: Kind) {
        self.events.push(ChannelEvent {
            kind: Some(kind),
            // Stamped by the worker, which knows where the job sits in the queue.
            arrival: None,
        });
    }

    pub(crate) fn reject(&mut self, reason: impl Into<String>, raw: &Value) {
        self.rejected.push(Rejected {
            reason: reason.into(),
            raw: raw.to_string(),
        });
    }

    /// Rejects the items of an account that was not verified for this payload
    /// (or a part naming no account at all).
    pub(crate) fn reject_unverified(&mut self, account: Option<&str>, items: &[Value]) {
        let reason = match account {
            Some(a) => format!("account {a:?} was not verified for this payload"),
            None => "the item names no account".to_owned(),
        };
        for item in items {
            self.reject(reason.clone(), item);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("unexpected envelope: {0}")]
    Envelope(String),
    #[error("provider {0:?} is not supported")]
    UnsupportedProvider(Provider),
}

/// Parses one verified payload.
pub fn parse(provider: Provider, payload: &[u8], ctx: &Context<'_>) -> Result<Parsed, ParseError> {
    let root: Value =
        serde_json::from_slice(payload).map_err(|e| ParseError::Malformed(e.to_string()))?;
    match provider {
        Provider::WhatsappCloud => whatsapp::parse(&root, ctx),
        Provider::Messenger => messaging::parse(&root, messaging::Platform::Messenger, ctx),
        Provider::Instagram => messaging::parse(&root, messaging::Platform::Instagram, ctx),
        Provider::Ycloud => ycloud::parse(&root, ctx),
        Provider::Unspecified => Err(ParseError::UnsupportedProvider(provider)),
    }
}

pub(crate) fn scope(route: &Route) -> Option<EventScope> {
    Some(EventScope {
        tenant_id: route.tenant_id.clone(),
        location_id: route.location_id.clone(),
        channel: route.channel,
    })
}

/// A stable id for an item that lacks one, so that a retry of the same
/// payload still deduplicates.
pub(crate) fn synthetic_id(raw: &Value) -> String {
    let digest = Sha256::digest(raw.to_string().as_bytes());
    format!("faro-sha256-{}", hex::encode(digest))
}

/// `v.pointer(pointer)` without its cost: serde_json unescapes every token
/// with two `str::replace`s (two allocations each), and the parsers look up
/// some forty pointers per message. Ours are literals without `~`; one with
/// it goes to serde_json.
pub(crate) fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.contains('~') {
        return v.pointer(pointer);
    }
    if pointer.is_empty() {
        return Some(v);
    }
    let mut found = v;
    for token in pointer.strip_prefix('/')?.split('/') {
        found = match found {
            Value::Object(map) => map.get(token)?,
            Value::Array(list) => list.get(array_index(token)?)?,
            _ => return None,
        };
    }
    Some(found)
}

/// An array index as JSON Pointer spells it: digits, no leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty()
        || (token.len() > 1 && token.starts_with('0'))
        || !token.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    token.parse().ok()
}

pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    at(v, pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub(crate) fn string_at(v: &Value, pointer: &str) -> String {
    str_at(v, pointer).unwrap_or_default().to_owned()
}

/// Unix seconds as a string (Meta) or a number.
pub(crate) fn unix_seconds(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let secs = match v? {
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    DateTime::from_timestamp(secs, 0)
}

/// 2001-01-01T00:00:00Z in milliseconds: no Messenger or Instagram event is older.
const MILLIS_FLOOR: i64 = 978_307_200_000;

/// Unix milliseconds (Messenger, Instagram). Instagram's dashboard test
/// sample sends seconds where live traffic sends milliseconds: a value that
/// would fall before 2001 read as milliseconds is read as seconds.
pub(crate) fn unix_millis(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let n = match v? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    if (0..MILLIS_FLOOR).contains(&n) {
        return DateTime::from_timestamp(n, 0);
    }
    DateTime::from_timestamp_millis(n)
}

/// RFC 3339 (YCloud).
pub(crate) fn rfc3339(v: Option<&Value>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v?.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Non-null JSON as a string, or empty.
pub(crate) fn raw(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(v) => v.to_string(),
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod pointer_tests {
    use super::at;
    use serde_json::json;

    #[test]
    fn at_finds_what_serde_jsons_pointer_finds() {
        let v = json!({"a": {"b": [10, {"c": "x"}], "": 1, "d/e": 2, "f~g": 3}, "0": 4});
        for p in [
            "",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c",
            "/a/b/01",
            "/a/b/2",
            "/a/b/-",
            "/a/b/+1",
            "/a/",
            "/a/d~1e",
            "/a/f~0g",
            "/0",
            "/x",
            "a",
            "/a/b/1/c/d",
            "/a/b/",
        ] {
            assert_eq!(at(&v, p), v.pointer(p), "{p:?}");
        }
    }
}
