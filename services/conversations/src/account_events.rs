//! Account events: what a platform says about a business account rather than
//! a conversation (a template's review or quality, a number's quality or
//! name, an account alert). Stored once per event key, listed per tenant;
//! never threaded, never a message.

use chrono::{DateTime, Utc};
use faro_proto::{channel_from_name, conversations::v1 as pb, from_timestamp, to_timestamp};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    Error,
    db::{parse_uuid, tenant_tx},
    rows::require_channel,
    store::json_text,
};

/// An account event, validated.
pub(crate) struct Valid {
    location: Uuid,
    channel_account: Uuid,
    channel: &'static str,
    external_account_id: String,
    field: String,
    value: String,
    occurred_at: DateTime<Utc>,
    event_key: String,
}

impl Valid {
    pub(crate) fn key(&self) -> &str {
        &self.event_key
    }
}

fn bounded(field: &str, value: String, max: usize) -> Result<String, Error> {
    if value.is_empty() || value.len() > max || value.contains('\0') {
        return Err(Error::invalid(format!(
            "{field} must be 1..={max} bytes without NUL"
        )));
    }
    Ok(value)
}

pub(crate) fn validate(e: pb::AccountEvent) -> Result<(Uuid, Valid), Error> {
    let tenant = parse_uuid("tenant_id", &e.tenant_id)?;
    Ok((
        tenant,
        Valid {
            location: parse_uuid("location_id", &e.location_id)?,
            channel_account: parse_uuid("channel_account_id", &e.channel_account_id)?,
            channel: require_channel(e.channel)?,
            external_account_id: bounded("external_account_id", e.external_account_id, 100)?,
            field: bounded("field", e.field, 200)?,
            value: json_text("value_json", e.value_json)?.unwrap_or_else(|| "null".into()),
            occurred_at: from_timestamp(e.timestamp.as_ref())
                .ok_or_else(|| Error::invalid("timestamp must be set and in range"))?,
            event_key: bounded("event_key", e.event_key, 200)?,
        },
    ))
}

const COLUMNS: &str = "id, tenant_id, location_id, channel_account_id, channel, external_account_id, \
                       field, value::text AS value_json, occurred_at, received_at, event_key";

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    tenant_id: Uuid,
    location_id: Uuid,
    channel_account_id: Uuid,
    channel: String,
    external_account_id: String,
    field: String,
    value_json: String,
    occurred_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    event_key: String,
}

impl From<Row> for pb::AccountEvent {
    fn from(r: Row) -> Self {
        Self {
            id: r.id.to_string(),
            tenant_id: r.tenant_id.to_string(),
            location_id: r.location_id.to_string(),
            channel_account_id: r.channel_account_id.to_string(),
            channel: channel_from_name(&r.channel).into(),
            external_account_id: r.external_account_id,
            field: r.field,
            value_json: r.value_json,
            timestamp: Some(to_timestamp(r.occurred_at)),
            event_key: r.event_key,
            received_at: Some(to_timestamp(r.received_at)),
        }
    }
}

/// Inserts one tenant's account events once each (by event key); returns
/// those inserted now, or, for a redelivery, every one the call carried.
pub(crate) async fn store(
    pool: &PgPool,
    tenant: Uuid,
    events: &[Valid],
    redelivered: bool,
) -> Result<Vec<pb::AccountEvent>, Error> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let locations: Vec<Uuid> = events.iter().map(|e| e.location).collect();
    let accounts: Vec<Uuid> = events.iter().map(|e| e.channel_account).collect();
    let channels: Vec<&str> = events.iter().map(|e| e.channel).collect();
    let externals: Vec<&str> = events
        .iter()
        .map(|e| e.external_account_id.as_str())
        .collect();
    let fields: Vec<&str> = events.iter().map(|e| e.field.as_str()).collect();
    let values: Vec<&str> = events.iter().map(|e| e.value.as_str()).collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let keys: Vec<&str> = events.iter().map(|e| e.event_key.as_str()).collect();
    let sql = format!(
        "INSERT INTO account_events (tenant_id, id, location_id, channel_account_id, channel,
                                     external_account_id, field, value, occurred_at, event_key)
         SELECT $1, u.id, u.location_id, u.account, u.channel, u.external, u.field,
                u.value::jsonb, u.ts, u.key
         FROM UNNEST($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::timestamptz[], $10::text[])
              AS u(id, location_id, account, channel, external, field, value, ts, key)
         ON CONFLICT (tenant_id, event_key) DO NOTHING
         RETURNING {COLUMNS}"
    );
    let mut rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(&ids)
        .bind(&locations)
        .bind(&accounts)
        .bind(&channels)
        .bind(&externals)
        .bind(&fields)
        .bind(&values)
        .bind(&times)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?;
    if redelivered {
        // Stored by an earlier attempt that may not have announced them.
        let sql = format!(
            "SELECT {COLUMNS} FROM account_events
             WHERE tenant_id = $1 AND event_key = ANY($2) AND NOT (id = ANY($3))"
        );
        let inserted: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let earlier: Vec<Row> = sqlx::query_as(&sql)
            .bind(tenant)
            .bind(&keys)
            .bind(&inserted)
            .fetch_all(&mut *tx)
            .await?;
        rows.extend(earlier);
    }
    tx.commit().await?;
    rows.sort_by_key(|r| (r.occurred_at, r.id));
    Ok(rows.into_iter().map(Into::into).collect())
}

pub(crate) async fn list(
    pool: &PgPool,
    req: pb::ListAccountEventsRequest,
) -> Result<Vec<pb::AccountEvent>, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    let account = match req.channel_account_id.as_str() {
        "" => None,
        s => Some(parse_uuid("channel_account_id", s)?),
    };
    let field = (!req.field.is_empty()).then_some(req.field.as_str());
    let limit = match req.limit {
        0 => 100,
        n => i64::from(n).min(1000),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM account_events
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR channel_account_id = $2)
           AND ($3::text IS NULL OR field = $3)
         ORDER BY occurred_at DESC, id DESC LIMIT $4"
    );
    let mut tx = tenant_tx(pool, tenant).await?;
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(account)
        .bind(field)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
