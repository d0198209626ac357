//! Conversation events: what happens in a thread, or on a page, that is not a
//! message (handover of thread control, opt-ins, account linking, game plays,
//! policy enforcement, app roles, events of unknown type).
//!
//! Stored once by their natural key (`ON CONFLICT DO NOTHING`), so a re-post
//! changes nothing. An event with a customer is filed in that customer's
//! thread, which it creates if needed but never moves: `last_message_at`
//! belongs to messages. One without a customer is page-level.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use faro_proto::{
    channel_from_name, conversation_event_kind_from_name, conversation_event_kind_name,
    conversations::v1::{self as pb, ConversationEventKind},
    from_timestamp, to_timestamp,
};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{
    Error,
    db::{parse_uuid, tenant_tx},
    rows::{CONVERSATION_COLUMNS, ConversationRow, require_channel},
    store::{clean, json_text},
};

/// A conversation event, validated.
pub(crate) struct Valid {
    location: Uuid,
    channel_account: Uuid,
    channel: &'static str,
    customer_id: Option<String>,
    kind: &'static str,
    event_key: String,
    timestamp: DateTime<Utc>,
    raw: String,
}

pub(crate) fn validate(e: pb::ConversationEvent) -> Result<(Uuid, Valid), Error> {
    let tenant = parse_uuid("tenant_id", &e.tenant_id)?;
    let location = parse_uuid("location_id", &e.location_id)?;
    let channel_account = parse_uuid("channel_account_id", &e.channel_account_id)?;
    let channel = require_channel(e.channel)?;
    let kind = ConversationEventKind::try_from(e.kind)
        .ok()
        .and_then(conversation_event_kind_name)
        .ok_or_else(|| Error::invalid("conversation event kind must be set"))?;
    if e.customer_id.len() > 256 {
        return Err(Error::invalid("customer_id must be at most 256 bytes"));
    }
    if e.event_key.is_empty() || e.event_key.len() > 512 {
        return Err(Error::invalid("event_key must be 1..=512 bytes"));
    }
    let timestamp = from_timestamp(e.timestamp.as_ref())
        .ok_or_else(|| Error::invalid("timestamp must be set and in range"))?;
    Ok((
        tenant,
        Valid {
            location,
            channel_account,
            channel,
            customer_id: (!e.customer_id.is_empty()).then(|| clean(e.customer_id)),
            kind,
            event_key: clean(e.event_key),
            timestamp,
            raw: json_text("raw_json", e.raw_json)?.unwrap_or_else(|| "{}".into()),
        },
    ))
}

/// The customer's id comes from the thread; empty for a page-level event.
const EVENT_COLUMNS: &str = "e.id, e.tenant_id, e.location_id, e.channel_account_id, e.channel, \
    e.conversation_id, e.kind, e.event_key, e.\"timestamp\", e.raw, e.created_at, \
    (SELECT c.customer_id FROM conversations c \
     WHERE c.tenant_id = e.tenant_id AND c.id = e.conversation_id) AS customer_id";

#[derive(sqlx::FromRow)]
struct EventRow {
    id: Uuid,
    tenant_id: Uuid,
    location_id: Uuid,
    channel_account_id: Uuid,
    channel: String,
    conversation_id: Option<Uuid>,
    kind: String,
    event_key: String,
    timestamp: DateTime<Utc>,
    raw: Value,
    created_at: DateTime<Utc>,
    customer_id: Option<String>,
}

impl From<EventRow> for pb::ConversationEvent {
    fn from(r: EventRow) -> Self {
        Self {
            id: r.id.to_string(),
            tenant_id: r.tenant_id.to_string(),
            location_id: r.location_id.to_string(),
            channel_account_id: r.channel_account_id.to_string(),
            channel: channel_from_name(&r.channel).into(),
            conversation_id: r.conversation_id.map(|c| c.to_string()).unwrap_or_default(),
            customer_id: r.customer_id.unwrap_or_default(),
            kind: conversation_event_kind_from_name(&r.kind).into(),
            event_key: r.event_key,
            timestamp: Some(to_timestamp(r.timestamp)),
            raw_json: r.raw.to_string(),
            created_at: Some(to_timestamp(r.created_at)),
        }
    }
}

type ThreadKey = (Uuid, &'static str, String);

/// Stores one tenant's conversation events in its transaction (the one that
/// stores its messages). Returns those inserted now (with `redelivered`: every
/// one carried, stored now or before).
pub(crate) async fn store(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    events: Vec<Valid>,
    redelivered: bool,
) -> Result<Vec<pb::StoredConversationEvent>, Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = HashSet::new();
    let events: Vec<Valid> = events
        .into_iter()
        .filter(|e| seen.insert((e.channel, e.event_key.clone())))
        .collect();
    let threads = threads(tx, tenant, &events).await?;
    let (mut ids, mut locs, mut accounts, mut chans, mut convs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut kinds, mut keys, mut times, mut raws) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for e in &events {
        let conversation = match &e.customer_id {
            Some(customer) => Some(
                threads
                    .get(&(e.location, e.channel, customer.clone()))
                    .map(|c| c.id)
                    .ok_or_else(|| Error::Serve("thread upsert returned no row".into()))?,
            ),
            None => None,
        };
        ids.push(Uuid::now_v7());
        locs.push(e.location);
        accounts.push(e.channel_account);
        chans.push(e.channel);
        convs.push(conversation);
        kinds.push(e.kind);
        keys.push(e.event_key.as_str());
        times.push(e.timestamp);
        raws.push(e.raw.as_str());
    }
    let sql = format!(
        "INSERT INTO conversation_events AS e (tenant_id, id, location_id, channel_account_id,
                 channel, conversation_id, kind, event_key, \"timestamp\", raw)
         SELECT $1, u.id, u.loc, u.account, u.chan, u.conv, u.kind, u.key, u.ts, u.raw::jsonb
         FROM UNNEST($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::uuid[], $7::text[],
                     $8::text[], $9::timestamptz[], $10::text[])
              AS u(id, loc, account, chan, conv, kind, key, ts, raw)
         ON CONFLICT (tenant_id, channel, event_key) DO NOTHING
         RETURNING {EVENT_COLUMNS}"
    );
    let mut rows: Vec<EventRow> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(&ids)
        .bind(&locs)
        .bind(&accounts)
        .bind(&chans)
        .bind(&convs)
        .bind(&kinds)
        .bind(&keys)
        .bind(&times)
        .bind(&raws)
        .fetch_all(&mut **tx)
        .await?;
    if redelivered && rows.len() < events.len() {
        // An earlier attempt may have stored them without announcing them.
        let new: HashSet<(String, String)> = rows
            .iter()
            .map(|r| (r.channel.clone(), r.event_key.clone()))
            .collect();
        let (old_chans, old_keys): (Vec<&str>, Vec<&str>) = events
            .iter()
            .filter(|e| !new.contains(&(e.channel.to_owned(), e.event_key.clone())))
            .map(|e| (e.channel, e.event_key.as_str()))
            .unzip();
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM conversation_events e
             WHERE e.tenant_id = $1
               AND (e.channel, e.event_key) IN (SELECT * FROM UNNEST($2::text[], $3::text[]))"
        );
        let old: Vec<EventRow> = sqlx::query_as(&sql)
            .bind(tenant)
            .bind(&old_chans)
            .bind(&old_keys)
            .fetch_all(&mut **tx)
            .await?;
        rows.extend(old);
    }
    rows.sort_by_key(|r| (r.timestamp, r.id));
    let by_id: HashMap<Uuid, pb::Conversation> =
        threads.into_values().map(|c| (c.id, c.into())).collect();
    Ok(rows
        .into_iter()
        .map(|r| pb::StoredConversationEvent {
            conversation: r.conversation_id.and_then(|c| by_id.get(&c).cloned()),
            event: Some(r.into()),
        })
        .collect())
}

/// The threads of the events that have a customer: created if absent, with no
/// `last_message_at` (an event is not a message), and never updated.
async fn threads(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    events: &[Valid],
) -> Result<HashMap<ThreadKey, ConversationRow>, Error> {
    // Sorted, so that two transactions create overlapping threads in one order.
    let wanted: BTreeSet<ThreadKey> = events
        .iter()
        .filter_map(|e| Some((e.location, e.channel, e.customer_id.clone()?)))
        .collect();
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<Uuid> = wanted.iter().map(|_| Uuid::now_v7()).collect();
    let locs: Vec<Uuid> = wanted.iter().map(|k| k.0).collect();
    let chans: Vec<&str> = wanted.iter().map(|k| k.1).collect();
    let custs: Vec<&str> = wanted.iter().map(|k| k.2.as_str()).collect();
    sqlx::query(
        "INSERT INTO conversations (tenant_id, id, location_id, channel, customer_id)
         SELECT $1, u.* FROM UNNEST($2::uuid[], $3::uuid[], $4::text[], $5::text[]) AS u
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&locs)
    .bind(&chans)
    .bind(&custs)
    .execute(&mut **tx)
    .await?;
    let sql = format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations c
         JOIN UNNEST($2::uuid[], $3::text[], $4::text[]) AS k(loc, chan, cust)
           ON c.location_id = k.loc AND c.channel = k.chan AND c.customer_id = k.cust
         WHERE c.tenant_id = $1"
    );
    let rows: Vec<ConversationRow> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(&locs)
        .bind(&chans)
        .bind(&custs)
        .fetch_all(&mut **tx)
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let key = wanted
            .iter()
            .find(|k| k.0 == r.location_id && k.1 == r.channel && k.2 == r.customer_id)
            .cloned();
        if let Some(key) = key {
            out.insert(key, r);
        }
    }
    Ok(out)
}

/// A thread's events (or, with no conversation, the tenant's page-level
/// ones): the newest `limit`, oldest first.
pub(crate) async fn list(
    pool: &PgPool,
    tenant: Uuid,
    conversation: Option<Uuid>,
    limit: i64,
) -> Result<Vec<pb::ConversationEvent>, Error> {
    let which = match conversation {
        Some(_) => "e.conversation_id = $2",
        None => "e.conversation_id IS NULL AND $2::uuid IS NULL",
    };
    let sql = format!(
        "SELECT * FROM (
             SELECT {EVENT_COLUMNS} FROM conversation_events e
             WHERE e.tenant_id = $1 AND {which}
             ORDER BY e.\"timestamp\" DESC, e.id DESC LIMIT $3
         ) t ORDER BY t.\"timestamp\", t.id"
    );
    let mut tx = tenant_tx(pool, tenant).await?;
    let rows: Vec<EventRow> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(conversation)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
