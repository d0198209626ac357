//! Platform payloads to normalized channel events.
//!
//! Parsers are tolerant: optional fields are optional, unknown fields are
//! ignored, and an item of a kind FARO does not understand is kept as a message
//! of type `unsupported` with its raw JSON rather than failing the batch. Only
//! a payload that is not the expected JSON envelope at all is an error (and is
//! dead-lettered whole). Every entry, change and item of a batch is walked.

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
}

/// What a payload yields.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<ChannelEvent>,
    /// Items naming an account that was not verified for this payload.
    pub untrusted: usize,
    /// Items deliberately not stored: echoes of messages our own app sent,
    /// statuses of a kind that changes nothing an agent sees.
    pub ignored: usize,
}

impl Parsed {
    pub(crate) fn push(&mut self, kind: Kind) {
        self.events.push(ChannelEvent {
            kind: Some(kind),
            // Stamped by the worker, which knows where the job sits in the queue.
            arrival: None,
        });
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

pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
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

/// Unix milliseconds (Messenger, Instagram).
pub(crate) fn unix_millis(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let ms = match v? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    DateTime::from_timestamp_millis(ms)
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
