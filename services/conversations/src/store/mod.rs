//! Storing a batch of channel events: thread and insert messages once, apply
//! what waited for them, apply the batch's other events, read back.
//!
//! One transaction per tenant in the request and a fixed number of statements
//! whatever the batch size (UNNEST for messages, one server-side loop for the
//! other events). Thread keys are sorted so that two workers upserting
//! overlapping threads lock them in the same order.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use faro_proto::{
    conversations::v1::{self as pb, Direction, channel_event::Kind},
    from_timestamp,
};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

mod write;

use write::{insert_messages, upsert_threads};

use crate::{
    Error, account_events, conv_events, customers,
    db::{parse_uuid, tenant_tx},
    events::{self, Change, WatermarkChange},
    rows::{
        CONVERSATION_COLUMNS, ConversationRow, MESSAGE_COLUMNS, MessageRow, media_to_json,
        require_channel,
    },
};

/// An inbound message, validated.
struct Inbound {
    location: Uuid,
    channel: &'static str,
    customer_id: String,
    customer_name: Option<String>,
    customer_phone: Option<String>,
    customer_user_id: Option<String>,
    channel_message_id: String,
    message_type: String,
    text: Option<String>,
    direction: &'static str,
    sender_type: &'static str,
    sender_id: Option<String>,
    recipient_id: Option<String>,
    timestamp: DateTime<Utc>,
    media_urls: String,
    media: String,
    reply_to: Option<String>,
    referral: Option<String>,
    forwarded: bool,
    metadata: String,
    standby: bool,
}

/// Postgres text cannot hold NUL; platforms can send it. Replace, don't fail.
pub(crate) fn clean(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then(|| clean(s))
}

/// Raw platform JSON: jsonb rejects the NUL escape; the rest is kept intact.
pub(crate) fn json_text(field: &str, s: String) -> Result<Option<String>, Error> {
    if s.is_empty() {
        return Ok(None);
    }
    let s = s.replace("\\u0000", "\\ufffd");
    serde_json::from_str::<serde::de::IgnoredAny>(&s)
        .map_err(|_| Error::invalid(format!("{field} must be JSON")))?;
    Ok(Some(s))
}

fn validate(m: pb::InboundMessage) -> Result<(Uuid, Inbound), Error> {
    let tenant = parse_uuid("tenant_id", &m.tenant_id)?;
    let location = parse_uuid("location_id", &m.location_id)?;
    let channel = require_channel(m.channel)?;
    if m.customer_id.is_empty() || m.customer_id.len() > 256 {
        return Err(Error::invalid("customer_id must be 1..=256 bytes"));
    }
    if m.channel_message_id.is_empty() || m.channel_message_id.len() > 512 {
        return Err(Error::invalid("channel_message_id must be 1..=512 bytes"));
    }
    let timestamp = from_timestamp(m.timestamp.as_ref())
        .ok_or_else(|| Error::invalid("timestamp must be set and in range"))?;
    let (direction, sender_type) = match Direction::try_from(m.direction) {
        Ok(Direction::Outbound) => ("outbound", "agent"),
        Ok(Direction::Inbound) => ("inbound", "customer"),
        _ => return Err(Error::invalid("direction must be inbound or outbound")),
    };
    let media_urls: Vec<String> = m.media_urls.into_iter().map(clean).collect();
    let message_type = non_empty(m.message_type).unwrap_or_else(|| "unsupported".into());
    Ok((
        tenant,
        Inbound {
            location,
            channel,
            customer_id: clean(m.customer_id),
            customer_name: non_empty(m.customer_name),
            customer_phone: non_empty(m.customer_phone),
            customer_user_id: non_empty(m.customer_user_id),
            channel_message_id: clean(m.channel_message_id),
            message_type,
            text: non_empty(m.text),
            direction,
            sender_type,
            sender_id: non_empty(m.sender_id),
            recipient_id: non_empty(m.recipient_id),
            timestamp,
            media_urls: serde_json::Value::from(media_urls).to_string(),
            media: clean(media_to_json(&m.media).to_string()),
            reply_to: non_empty(m.reply_to_channel_message_id),
            referral: json_text("referral_json", m.referral_json)?,
            forwarded: m.forwarded,
            metadata: json_text("metadata_json", m.metadata_json)?.unwrap_or_else(|| "{}".into()),
            standby: m.standby,
        },
    ))
}

/// One tenant's share of a request.
#[derive(Default)]
struct TenantBatch {
    messages: Vec<Inbound>,
    changes: Vec<Change>,
    watermarks: Vec<WatermarkChange>,
    conversation_events: Vec<conv_events::Valid>,
}

/// What a request did: the messages it carried (each flagged inserted or
/// already stored), and the messages its events changed (for a redelivery:
/// every message they applied to). A carried message that was already stored
/// and that an event changed is in both.
pub(crate) struct Outcome {
    pub stored: Vec<pb::StoredMessage>,
    pub updated: Vec<pb::StoredMessage>,
    pub conversation_events: Vec<pb::StoredConversationEvent>,
    /// Account events stored now (for a redelivery: all those carried).
    pub account_events: Vec<pb::AccountEvent>,
}

pub(crate) async fn store_events(
    pool: &PgPool,
    events: Vec<pb::ChannelEvent>,
    redelivered: bool,
) -> Result<Outcome, Error> {
    let mut by_tenant: BTreeMap<Uuid, TenantBatch> = BTreeMap::new();
    let mut account_events: BTreeMap<Uuid, Vec<account_events::Valid>> = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut seen_keys = HashSet::new();
    for event in events {
        match event
            .kind
            .ok_or_else(|| Error::invalid("event kind must be set"))?
        {
            Kind::Message(m) => {
                let (tenant, m) = validate(m)?;
                if seen.insert((tenant, m.channel, m.channel_message_id.clone())) {
                    by_tenant.entry(tenant).or_default().messages.push(m);
                }
            }
            Kind::Status(e) => push(&mut by_tenant, events::status(e)?),
            Kind::Reaction(e) => {
                push(&mut by_tenant, events::reaction(e, event.arrival.as_ref())?);
            }
            Kind::Edit(e) => push(&mut by_tenant, events::edit(e)?),
            Kind::Deletion(e) => push(&mut by_tenant, events::deletion(e)?),
            Kind::Watermark(e) => {
                let (tenant, w) = events::watermark(e)?;
                by_tenant.entry(tenant).or_default().watermarks.push(w);
            }
            Kind::ConversationEvent(e) => {
                let (tenant, e) = conv_events::validate(e)?;
                let batch = by_tenant.entry(tenant).or_default();
                batch.conversation_events.push(e);
            }
            Kind::AccountEvent(e) => {
                let (tenant, e) = account_events::validate(e)?;
                if seen_keys.insert((tenant, e.key().to_owned())) {
                    account_events.entry(tenant).or_default().push(e);
                }
            }
        }
    }
    let mut outcome = Outcome {
        stored: Vec::new(),
        updated: Vec::new(),
        conversation_events: Vec::new(),
        account_events: Vec::new(),
    };
    for (tenant, batch) in by_tenant {
        let (stored, updated, conversation_events) =
            store_tenant(pool, tenant, batch, redelivered).await?;
        outcome.stored.extend(stored);
        outcome.updated.extend(updated);
        outcome.conversation_events.extend(conversation_events);
    }
    // Independent of any thread: one more transaction per tenant, only when
    // the batch carries account events.
    for (tenant, events) in account_events {
        outcome
            .account_events
            .extend(account_events::store(pool, tenant, &events, redelivered).await?);
    }
    Ok(outcome)
}

fn push(by_tenant: &mut BTreeMap<Uuid, TenantBatch>, (tenant, change): (Uuid, Change)) {
    by_tenant.entry(tenant).or_default().changes.push(change);
}

pub(super) type ThreadKey = (Uuid, &'static str, String);

/// What one batch says about a thread: latest timestamp, name, phone, user id.
pub(super) type ThreadUpdate = (
    DateTime<Utc>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// One tenant's messages (stored, updated) and conversation events.
type TenantOutcome = (
    Vec<pb::StoredMessage>,
    Vec<pb::StoredMessage>,
    Vec<pb::StoredConversationEvent>,
);

async fn store_tenant(
    pool: &PgPool,
    tenant: Uuid,
    mut batch: TenantBatch,
    redelivered: bool,
) -> Result<TenantOutcome, Error> {
    let mut tx = tenant_tx(pool, tenant).await?;
    assign_customers(&mut tx, tenant, &mut batch.messages).await?;
    let mut convs: HashMap<Uuid, ConversationRow> = HashMap::new();
    // The latest known state of every message this call touches, by id.
    let mut rows: HashMap<Uuid, MessageRow> = HashMap::new();
    let mut inserted: HashSet<Uuid> = HashSet::new();
    if !batch.messages.is_empty() {
        let threads = upsert_threads(&mut tx, tenant, &batch.messages).await?;
        let new_rows = insert_messages(&mut tx, tenant, &batch.messages, &threads).await?;
        convs.extend(threads.into_values().map(|c| (c.id, c)));
        for r in new_rows {
            inserted.insert(r.id);
            rows.insert(r.id, r);
        }
    }
    let new_keys: Vec<(String, String)> = rows
        .values()
        .map(|r| (r.channel.clone(), r.channel_message_id.clone()))
        .collect();
    let mut changed = events::apply_pending(&mut tx, tenant, &new_keys).await?;
    changed.extend(
        events::apply(
            &mut tx,
            tenant,
            &batch.changes,
            &batch.watermarks,
            redelivered,
        )
        .await?,
    );

    // Read back only what the inserts did not return: duplicates of stored
    // messages, and messages the events changed. Usually nothing.
    let new_keys: HashSet<(&str, &str)> = new_keys
        .iter()
        .map(|(c, id)| (c.as_str(), id.as_str()))
        .collect();
    let (dup_channels, dup_ids): (Vec<&str>, Vec<&str>) = batch
        .messages
        .iter()
        .map(|m| (m.channel, m.channel_message_id.as_str()))
        .filter(|k| !new_keys.contains(k))
        .unzip();
    if !dup_ids.is_empty() || !changed.is_empty() {
        let changed: Vec<Uuid> = changed.iter().copied().collect();
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m
             JOIN conversations c ON c.tenant_id = m.tenant_id AND c.id = m.conversation_id
             WHERE m.tenant_id = $1
               AND (m.id = ANY($2)
                    OR (m.channel, m.channel_message_id) IN
                       (SELECT * FROM UNNEST($3::text[], $4::text[])))"
        );
        let current: Vec<MessageRow> = sqlx::query_as(&sql)
            .bind(tenant)
            .bind(&changed)
            .bind(&dup_channels)
            .bind(&dup_ids)
            .fetch_all(&mut *tx)
            .await?;
        rows.extend(current.into_iter().map(|r| (r.id, r)));
    }
    let missing: Vec<Uuid> = rows
        .values()
        .map(|m| m.conversation_id)
        .filter(|id| !convs.contains_key(id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        let sql =
            format!("SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = ANY($1)");
        let found: Vec<ConversationRow> = sqlx::query_as(&sql)
            .bind(&missing)
            .fetch_all(&mut *tx)
            .await?;
        convs.extend(found.into_iter().map(|c| (c.id, c)));
    }
    // After the messages, so that a thread a message creates is the one its
    // events are filed in (and keeps the message's `last_message_at`).
    let conversation_events = std::mem::take(&mut batch.conversation_events);
    let conversation_events =
        conv_events::store(&mut tx, tenant, conversation_events, redelivered).await?;
    tx.commit().await?;

    let convs: HashMap<Uuid, pb::Conversation> =
        convs.into_iter().map(|(id, c)| (id, c.into())).collect();
    let wrap = |m: MessageRow, inserted: bool| pb::StoredMessage {
        inserted,
        conversation: convs.get(&m.conversation_id).cloned(),
        message: Some(m.into()),
    };
    let by_key: HashMap<(String, String), Uuid> = rows
        .values()
        .map(|r| ((r.channel.clone(), r.channel_message_id.clone()), r.id))
        .collect();
    // The request's messages in request order; what remains was changed by
    // events. One already stored that an event changed is news of its own.
    let mut stored = Vec::with_capacity(batch.messages.len());
    let mut changed_stored = Vec::new();
    for m in &batch.messages {
        let Some(r) = by_key
            .get(&(m.channel.to_owned(), m.channel_message_id.clone()))
            .and_then(|id| rows.remove(id))
        else {
            continue;
        };
        let new = inserted.contains(&r.id);
        let announce_change = !new && changed.contains(&r.id);
        let s = wrap(r, new);
        if announce_change {
            changed_stored.push(s.clone());
        }
        stored.push(s);
    }
    let mut updated: Vec<MessageRow> = rows.into_values().collect();
    updated.sort_by_key(|r| (r.timestamp, r.id));
    let updated = changed_stored
        .into_iter()
        .chain(updated.into_iter().map(|r| wrap(r, false)))
        .collect();
    Ok((stored, updated, conversation_events))
}

/// Files each message under its customer's thread key: a customer known by
/// phone, BSUID or both is one thread (see `customers.rs`).
async fn assign_customers(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    messages: &mut [Inbound],
) -> Result<(), Error> {
    let ids: Vec<customers::Ids<'_>> = messages
        .iter()
        .map(|m| customers::Ids {
            location: m.location,
            channel: m.channel,
            phone: m.customer_phone.as_deref(),
            user: m.customer_user_id.as_deref(),
        })
        .collect();
    let keys = customers::resolve(tx, tenant, &ids).await?;
    for (m, key) in messages.iter_mut().zip(keys) {
        if let Some(key) = key {
            m.customer_id = key;
        }
    }
    Ok(())
}
