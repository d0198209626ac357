//! Statuses, reactions, edits, deletions and watermarks: validated here, applied
//! in Postgres by `faro_apply_message_events` and friends (migrations 0002,
//! 0003, 0005), whose rules are order-independent so events may come in any
//! order, twice. They report which messages an event actually changed, so that
//! only real changes are announced.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};
use faro_proto::{
    conversations::v1::{self as pb, DeliveryStatus},
    from_timestamp,
};
use serde_json::{Value, json};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::{Error, db::parse_uuid, rows::require_channel};

/// One event aimed at one message, ready for `faro_apply_message_events`.
pub(crate) struct Change {
    channel: &'static str,
    target: String,
    kind: &'static str,
    key: String,
    payload: Value,
}

pub(crate) struct WatermarkChange {
    location: Uuid,
    channel: &'static str,
    customer: String,
    status: &'static str,
    watermark: DateTime<Utc>,
}

fn scope(s: Option<&pb::EventScope>) -> Result<(Uuid, Uuid, &'static str), Error> {
    let s = s.ok_or_else(|| Error::invalid("event scope must be set"))?;
    Ok((
        parse_uuid("tenant_id", &s.tenant_id)?,
        parse_uuid("location_id", &s.location_id)?,
        require_channel(s.channel)?,
    ))
}

fn target(id: &str) -> Result<String, Error> {
    if id.is_empty() || id.len() > 512 {
        return Err(Error::invalid("target message id must be 1..=512 bytes"));
    }
    Ok(id.replace('\0', "\u{FFFD}"))
}

fn time(t: Option<&prost_types::Timestamp>) -> Result<DateTime<Utc>, Error> {
    from_timestamp(t).ok_or_else(|| Error::invalid("timestamp must be set and in range"))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn status_name(s: i32) -> Result<&'static str, Error> {
    Ok(match DeliveryStatus::try_from(s) {
        Ok(DeliveryStatus::Sent) => "sent",
        Ok(DeliveryStatus::Delivered) => "delivered",
        Ok(DeliveryStatus::Read) => "read",
        Ok(DeliveryStatus::Played) => "played",
        Ok(DeliveryStatus::Failed) => "failed",
        _ => return Err(Error::invalid("status must be set")),
    })
}

/// JSON the platform sent, or null; never fails a batch over a bad blob.
fn raw_json(s: &str) -> Value {
    if s.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&s.replace("\\u0000", "\\ufffd"))
        .unwrap_or_else(|_| Value::String(s.to_owned()))
}

pub(crate) fn status(e: pb::StatusUpdate) -> Result<(Uuid, Change), Error> {
    let (tenant, _, channel) = scope(e.scope.as_ref())?;
    let status = status_name(e.status)?;
    let ts = time(e.timestamp.as_ref())?;
    Ok((
        tenant,
        Change {
            channel,
            target: target(&e.channel_message_id)?,
            kind: "status",
            key: status.to_owned(),
            payload: json!({
                "status": status,
                "timestamp": rfc3339(ts),
                "error": raw_json(&e.error_json),
                "metadata": raw_json(&e.metadata_json),
            }),
        },
    ))
}

/// A reaction. Its `arrival` (where it entered FARO's queue) breaks ties
/// between reactions by one person within one timestamp: WhatsApp's are whole
/// seconds, so a change or removal can share its second with what it replaces.
pub(crate) fn reaction(
    e: pb::Reaction,
    arrival: Option<&pb::Arrival>,
) -> Result<(Uuid, Change), Error> {
    let (tenant, _, channel) = scope(e.scope.as_ref())?;
    if e.reactor_id.is_empty() || e.reactor_id.len() > 256 || e.emoji.len() > 64 {
        return Err(Error::invalid(
            "reactor_id must be 1..=256 bytes and emoji at most 64",
        ));
    }
    let ts = rfc3339(time(e.timestamp.as_ref())?);
    let mut key = format!("{}@{ts}", e.reactor_id);
    let mut payload = json!({"reactor_id": e.reactor_id, "emoji": e.emoji, "timestamp": ts});
    if let Some(a) = arrival {
        // Two reactions waiting in one second must both be kept; a redelivery is kept once.
        key.push_str(&format!("#{}-{}-{}", a.millis, a.sequence, a.index));
        payload["arrival"] = json!([a.millis, a.sequence, a.index]);
    }
    Ok((
        tenant,
        Change {
            channel,
            target: target(&e.target_channel_message_id)?,
            kind: "reaction",
            key,
            payload,
        },
    ))
}

pub(crate) fn edit(e: pb::MessageEdit) -> Result<(Uuid, Change), Error> {
    let (tenant, _, channel) = scope(e.scope.as_ref())?;
    let ts = rfc3339(time(e.timestamp.as_ref())?);
    Ok((
        tenant,
        Change {
            channel,
            target: target(&e.target_channel_message_id)?,
            kind: "edit",
            key: ts.clone(),
            payload: json!({"text": e.text.replace('\0', "\u{FFFD}"), "timestamp": ts}),
        },
    ))
}

pub(crate) fn deletion(e: pb::MessageDeletion) -> Result<(Uuid, Change), Error> {
    let (tenant, _, channel) = scope(e.scope.as_ref())?;
    let ts = rfc3339(time(e.timestamp.as_ref())?);
    Ok((
        tenant,
        Change {
            channel,
            target: target(&e.target_channel_message_id)?,
            kind: "deletion",
            key: "deleted".into(),
            payload: json!({"timestamp": ts}),
        },
    ))
}

pub(crate) fn watermark(e: pb::Watermark) -> Result<(Uuid, WatermarkChange), Error> {
    let (tenant, location, channel) = scope(e.scope.as_ref())?;
    if e.customer_id.is_empty() {
        return Err(Error::invalid("watermark customer_id must be set"));
    }
    Ok((
        tenant,
        WatermarkChange {
            location,
            channel,
            customer: e.customer_id,
            status: status_name(e.status)?,
            watermark: time(e.watermark.as_ref())?,
        },
    ))
}

/// Rows of `(message id, changed)`, one per event that found its message:
/// the messages to announce (all of them when the call is a redelivery, whose
/// first attempt may have made the changes without announcing them).
fn to_announce(rows: Vec<(Uuid, bool)>, redelivered: bool) -> impl Iterator<Item = Uuid> {
    rows.into_iter()
        .filter(move |(_, changed)| *changed || redelivered)
        .map(|(id, _)| id)
}

/// Applies the events that waited for these newly stored messages.
pub(crate) async fn apply_pending(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    inserted: &[(String, String)],
) -> Result<HashSet<Uuid>, Error> {
    if inserted.is_empty() {
        return Ok(HashSet::new());
    }
    let (channels, targets): (Vec<&str>, Vec<&str>) = inserted
        .iter()
        .map(|(c, t)| (c.as_str(), t.as_str()))
        .unzip();
    let rows: Vec<(Uuid, bool)> =
        sqlx::query_as("SELECT * FROM faro_apply_pending_events($1, $2, $3)")
            .bind(tenant)
            .bind(&channels)
            .bind(&targets)
            .fetch_all(&mut **tx)
            .await?;
    Ok(to_announce(rows, false).collect())
}

/// Applies a batch's events in one round trip; the rest wait for their
/// message. Returns the messages to announce (see [`to_announce`]).
pub(crate) async fn apply(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    changes: &[Change],
    watermarks: &[WatermarkChange],
    redelivered: bool,
) -> Result<HashSet<Uuid>, Error> {
    let mut changed = HashSet::new();
    if !changes.is_empty() {
        let channels: Vec<&str> = changes.iter().map(|c| c.channel).collect();
        let targets: Vec<&str> = changes.iter().map(|c| c.target.as_str()).collect();
        let kinds: Vec<&str> = changes.iter().map(|c| c.kind).collect();
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        let payloads: Vec<String> = changes.iter().map(|c| c.payload.to_string()).collect();
        let rows: Vec<(Uuid, bool)> = sqlx::query_as(
            "SELECT * FROM faro_apply_message_events($1, $2, $3, $4, $5, $6::text[]::jsonb[])",
        )
        .bind(tenant)
        .bind(&channels)
        .bind(&targets)
        .bind(&kinds)
        .bind(&keys)
        .bind(&payloads)
        .fetch_all(&mut **tx)
        .await?;
        changed.extend(to_announce(rows, redelivered));
    }
    for w in watermarks {
        let rows: Vec<(Uuid, bool)> =
            sqlx::query_as("SELECT * FROM faro_apply_watermark($1, $2, $3, $4, $5, $6)")
                .bind(tenant)
                .bind(w.location)
                .bind(w.channel)
                .bind(&w.customer)
                .bind(w.status)
                .bind(w.watermark)
                .fetch_all(&mut **tx)
                .await?;
        changed.extend(to_announce(rows, redelivered));
    }
    Ok(changed)
}
