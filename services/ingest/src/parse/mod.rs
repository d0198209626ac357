//! Platform payloads to normalized events.
//!
//! Parsers are tolerant: optional fields are optional, unknown fields are
//! ignored, and a message of a kind FARO does not understand yet is kept with
//! its raw JSON rather than failing the batch. Only a payload that is not the
//! expected JSON envelope at all is an error (and is dead-lettered whole).

pub mod whatsapp;

use chrono::{DateTime, Utc};
use faro_proto::{
    conversations::v1::InboundMessage,
    ingest::v1::{Provider, Route},
};
use sha2::{Digest, Sha256};

/// What a payload yields.
#[derive(Debug, Default)]
pub struct Parsed {
    pub messages: Vec<InboundMessage>,
    /// Events this version does not turn into messages yet (e.g. statuses).
    pub skipped: usize,
    /// Items naming an account that was not verified for this payload.
    pub untrusted: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("unexpected envelope: {0}")]
    Envelope(String),
    #[error("provider {0:?} is not supported yet")]
    UnsupportedProvider(Provider),
}

/// Parses one verified payload; only `routes` (the accounts the edge verified
/// the signature for) are trusted.
pub fn parse(
    provider: Provider,
    payload: &[u8],
    routes: &[Route],
    received_at: DateTime<Utc>,
) -> Result<Parsed, ParseError> {
    match provider {
        Provider::WhatsappCloud => whatsapp::parse(payload, routes, received_at),
        other => Err(ParseError::UnsupportedProvider(other)),
    }
}

/// A stable id for an event that lacks one, so that a retry of the same
/// payload still deduplicates.
pub(crate) fn synthetic_id(raw: &serde_json::Value) -> String {
    let digest = Sha256::digest(raw.to_string().as_bytes());
    format!("faro-sha256-{}", hex::encode(digest))
}

/// Unix seconds as a string (Meta) or a number.
pub(crate) fn unix_seconds(v: Option<&serde_json::Value>) -> Option<DateTime<Utc>> {
    let secs = match v? {
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok()?,
        serde_json::Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    DateTime::from_timestamp(secs, 0)
}
