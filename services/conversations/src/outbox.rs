//! The outbox of agents' live edits (migration 0018).
//!
//! An edit or a read marker that changed something writes the
//! `conversation_updated` event it causes in the same transaction
//! ([`record`]), and returns it encoded, so the edge can hand it to ingest at
//! once (the fast path). ingest deletes the row once published
//! ([`done`]); its relay publishes rows nobody deleted within a few seconds
//! ([`claim`]): at least once, each copy with the same event id.

use faro_proto::{
    conversations::v1 as pb,
    stream::v1::{ConversationUpdated, Event, event::Kind},
    to_timestamp,
};
use prost::Message;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{Error, db::parse_uuid};

/// Writes the event announcing `conversation`'s change by `agent` and
/// returns it encoded. `conversation` is the thread as the transaction left
/// it; its per-agent fields are cleared, except the read marker when
/// `changed` is `read` (the event then carries it apart).
pub(crate) async fn record(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    conversation: &pb::Conversation,
    agent: &str,
    changed: Vec<String>,
    last_read_message_id: String,
) -> Result<Vec<u8>, Error> {
    let id = Uuid::now_v7();
    let mut c = conversation.clone();
    c.unread_count = 0;
    c.last_read_message_id = String::new();
    let event = Event {
        id: id.to_string(),
        tenant_id: c.tenant_id.clone(),
        location_id: c.location_id.clone(),
        published_at: Some(to_timestamp(chrono::Utc::now())),
        offset: 0,
        epoch: String::new(),
        // Set by ingest's publish when traces are exported.
        traceparent: String::new(),
        kind: Some(Kind::ConversationUpdated(ConversationUpdated {
            conversation: Some(c),
            agent_id: agent.to_owned(),
            changed,
            last_read_message_id,
        })),
    };
    let bytes = event.encode_to_vec();
    let conversation_id = parse_uuid("conversation_id", &conversation.id)?;
    sqlx::query(
        "INSERT INTO conversation_outbox (tenant_id, id, conversation_id, event)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(tenant)
    .bind(id)
    .bind(conversation_id)
    .bind(&bytes)
    .execute(&mut **tx)
    .await?;
    Ok(bytes)
}

/// Takes up to `limit` rows at least `min_age_ms` old that no relay holds,
/// holding them for `lease_ms`.
pub(crate) async fn claim(
    pool: &PgPool,
    req: pb::ClaimOutboxRequest,
) -> Result<pb::ClaimOutboxResponse, Error> {
    let limit = match req.limit {
        0 => 100,
        n @ 1..=1000 => i32::try_from(n).unwrap_or(100),
        _ => return Err(Error::invalid("limit must be 0..=1000")),
    };
    let lease = i32::try_from(req.lease_ms.clamp(1_000, 600_000)).unwrap_or(30_000);
    let min_age = i32::try_from(req.min_age_ms.min(3_600_000)).unwrap_or(0);
    let rows: Vec<(Uuid, Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT tenant_id, id, event FROM faro_outbox_claim($1, $2, $3)")
            .bind(limit)
            .bind(lease)
            .bind(min_age)
            .fetch_all(pool)
            .await?;
    Ok(pb::ClaimOutboxResponse {
        events: rows
            .into_iter()
            .map(|(tenant, id, event)| pb::OutboxEvent {
                tenant_id: tenant.to_string(),
                id: id.to_string(),
                event,
            })
            .collect(),
    })
}

/// Deletes published rows; ids no longer there (deleted by another relay or
/// the fast path) are ignored.
pub(crate) async fn done(
    pool: &PgPool,
    req: pb::AckOutboxRequest,
) -> Result<pb::AckOutboxResponse, Error> {
    if req.keys.len() > 1000 {
        return Err(Error::invalid("at most 1000 keys"));
    }
    let mut tenants = Vec::with_capacity(req.keys.len());
    let mut ids = Vec::with_capacity(req.keys.len());
    for k in &req.keys {
        tenants.push(parse_uuid("tenant_id", &k.tenant_id)?);
        ids.push(parse_uuid("id", &k.id)?);
    }
    let deleted: i64 = sqlx::query_scalar("SELECT faro_outbox_done($1, $2)")
        .bind(&tenants)
        .bind(&ids)
        .fetch_one(pool)
        .await?;
    Ok(pb::AckOutboxResponse {
        deleted: u64::try_from(deleted).unwrap_or(0),
    })
}
