//! Storing inbound events: thread, insert once, move the thread forward.
//!
//! One transaction per tenant in the request, three statements whatever the
//! batch size (UNNEST): upsert the threads, insert the messages `ON CONFLICT DO
//! NOTHING`, read back what is stored. Thread keys are sorted so that two
//! workers upserting overlapping threads lock them in the same order.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use faro_proto::{
    conversations::v1::{self as pb, Direction},
    from_timestamp,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    Error,
    db::{parse_uuid, tenant_tx},
    rows::{CONVERSATION_COLUMNS, ConversationRow, MESSAGE_COLUMNS, MessageRow, require_channel},
};

/// An inbound message, validated.
struct Inbound {
    location: Uuid,
    channel: &'static str,
    customer_id: String,
    customer_name: Option<String>,
    customer_phone: Option<String>,
    channel_message_id: String,
    message_type: String,
    text: Option<String>,
    direction: &'static str,
    sender_type: &'static str,
    sender_id: Option<String>,
    recipient_id: Option<String>,
    timestamp: DateTime<Utc>,
    media_urls: String,
    metadata: String,
}

/// Postgres text cannot hold NUL; platforms can send it. Replace, don't fail.
fn clean(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then(|| clean(s))
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
    let metadata = if m.metadata_json.is_empty() {
        "{}".to_owned()
    } else {
        // jsonb rejects the NUL escape; keep the rest of the raw event intact.
        m.metadata_json.replace("\\u0000", "\\ufffd")
    };
    if serde_json::from_str::<serde_json::Value>(&metadata).is_err() {
        return Err(Error::invalid("metadata_json must be JSON"));
    }
    let media: Vec<String> = m.media_urls.into_iter().map(clean).collect();
    let message_type = if m.message_type.is_empty() {
        "unsupported".to_owned()
    } else {
        clean(m.message_type)
    };
    Ok((
        tenant,
        Inbound {
            location,
            channel,
            customer_id: clean(m.customer_id),
            customer_name: non_empty(m.customer_name),
            customer_phone: non_empty(m.customer_phone),
            channel_message_id: clean(m.channel_message_id),
            message_type,
            text: non_empty(m.text),
            direction,
            sender_type,
            sender_id: non_empty(m.sender_id),
            recipient_id: non_empty(m.recipient_id),
            timestamp,
            media_urls: serde_json::Value::from(media).to_string(),
            metadata,
        },
    ))
}

/// Stores every message once; returns one entry per distinct message, in
/// request order, saying whether this call inserted it.
pub(crate) async fn store_inbound(
    pool: &PgPool,
    messages: Vec<pb::InboundMessage>,
) -> Result<Vec<pb::StoredMessage>, Error> {
    let mut by_tenant: BTreeMap<Uuid, Vec<Inbound>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for m in messages {
        let (tenant, inbound) = validate(m)?;
        if seen.insert((tenant, inbound.channel, inbound.channel_message_id.clone())) {
            by_tenant.entry(tenant).or_default().push(inbound);
        }
    }
    let mut out = Vec::with_capacity(seen.len());
    for (tenant, batch) in by_tenant {
        out.extend(store_tenant(pool, tenant, batch).await?);
    }
    Ok(out)
}

type ThreadKey = (Uuid, &'static str, String);

/// What one batch says about a thread: latest timestamp, name, phone.
type ThreadUpdate = (DateTime<Utc>, Option<String>, Option<String>);

async fn store_tenant(
    pool: &PgPool,
    tenant: Uuid,
    batch: Vec<Inbound>,
) -> Result<Vec<pb::StoredMessage>, Error> {
    // One row per thread: the latest timestamp and the last non-empty profile data.
    let mut threads: BTreeMap<ThreadKey, ThreadUpdate> = BTreeMap::new();
    for m in &batch {
        let t = threads
            .entry((m.location, m.channel, m.customer_id.clone()))
            .or_insert((m.timestamp, None, None));
        t.0 = t.0.max(m.timestamp);
        if m.customer_name.is_some() {
            t.1.clone_from(&m.customer_name);
        }
        if m.customer_phone.is_some() {
            t.2.clone_from(&m.customer_phone);
        }
    }
    let n = threads.len();
    let (mut ids, mut locs, mut chans, mut custs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut names, mut phones, mut lasts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((loc, chan, cust), (last, name, phone)) in &threads {
        ids.push(Uuid::now_v7());
        locs.push(*loc);
        chans.push(*chan);
        custs.push(cust.as_str());
        names.push(name.as_deref());
        phones.push(phone.as_deref());
        lasts.push(*last);
    }

    let mut tx = tenant_tx(pool, tenant).await?;
    let upsert = format!(
        "INSERT INTO conversations AS c (tenant_id, id, location_id, channel, customer_id,
                                         customer_name, customer_phone, last_message_at)
         SELECT $1, u.* FROM UNNEST($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                                    $7::text[], $8::timestamptz[]) AS u
         ON CONFLICT (tenant_id, location_id, channel, customer_id) DO UPDATE SET
             last_message_at = GREATEST(c.last_message_at, EXCLUDED.last_message_at),
             customer_name = COALESCE(EXCLUDED.customer_name, c.customer_name),
             customer_phone = COALESCE(EXCLUDED.customer_phone, c.customer_phone),
             updated_at = now()
         RETURNING {CONVERSATION_COLUMNS}"
    );
    let convs: Vec<ConversationRow> = sqlx::query_as(sqlx::AssertSqlSafe(upsert))
        .bind(tenant)
        .bind(&ids)
        .bind(&locs)
        .bind(&chans)
        .bind(&custs)
        .bind(&names)
        .bind(&phones)
        .bind(&lasts)
        .fetch_all(&mut *tx)
        .await?;
    let thread_of: HashMap<(Uuid, &str, &str), Uuid> = convs
        .iter()
        .map(|c| {
            (
                (c.location_id, c.channel.as_str(), c.customer_id.as_str()),
                c.id,
            )
        })
        .collect();

    let n = batch.len();
    let mut cols = MessageColumns::with_capacity(n);
    for m in &batch {
        let conv = thread_of
            .get(&(m.location, m.channel, m.customer_id.as_str()))
            .copied()
            .ok_or_else(|| Error::Serve("thread upsert returned no row".into()))?;
        cols.push(conv, m);
    }
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO messages (tenant_id, id, conversation_id, sender_type, direction, channel,
                               channel_message_id, message_type, text, sender_id, recipient_id,
                               \"timestamp\", media_urls, metadata)
         SELECT $1, u.id, u.conversation_id, u.sender_type, u.direction, u.channel,
                u.channel_message_id, u.message_type, u.text, u.sender_id, u.recipient_id, u.ts,
                ARRAY(SELECT jsonb_array_elements_text(u.media::jsonb)), u.metadata::jsonb
         FROM UNNEST($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[],
                     $13::text[], $14::text[])
              AS u(id, conversation_id, sender_type, direction, channel, channel_message_id,
                   message_type, text, sender_id, recipient_id, ts, media, metadata)
         ON CONFLICT (tenant_id, channel, channel_message_id) DO NOTHING
         RETURNING id",
    )
    .bind(tenant)
    .bind(&cols.ids)
    .bind(&cols.conversations)
    .bind(&cols.sender_types)
    .bind(&cols.directions)
    .bind(&cols.channels)
    .bind(&cols.channel_message_ids)
    .bind(&cols.message_types)
    .bind(&cols.texts)
    .bind(&cols.sender_ids)
    .bind(&cols.recipient_ids)
    .bind(&cols.timestamps)
    .bind(&cols.media)
    .bind(&cols.metadata)
    .fetch_all(&mut *tx)
    .await?;
    let inserted: HashSet<Uuid> = inserted.into_iter().collect();

    let select = format!(
        "SELECT {MESSAGE_COLUMNS}
         FROM UNNEST($2::text[], $3::text[]) WITH ORDINALITY AS k(channel, channel_message_id, ord)
         JOIN messages m ON m.tenant_id = $1 AND m.channel = k.channel
                        AND m.channel_message_id = k.channel_message_id
         JOIN conversations c ON c.tenant_id = m.tenant_id AND c.id = m.conversation_id
         ORDER BY k.ord"
    );
    let stored: Vec<MessageRow> = sqlx::query_as(sqlx::AssertSqlSafe(select))
        .bind(tenant)
        .bind(&cols.channels)
        .bind(&cols.channel_message_ids)
        .fetch_all(&mut *tx)
        .await?;
    let mut conversations: HashMap<Uuid, pb::Conversation> =
        convs.into_iter().map(|c| (c.id, c.into())).collect();
    let missing: Vec<Uuid> = stored
        .iter()
        .map(|m| m.conversation_id)
        .filter(|id| !conversations.contains_key(id))
        .collect();
    if !missing.is_empty() {
        // A retried message whose thread key changed since (e.g. the account moved location).
        let sql =
            format!("SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = ANY($1)");
        let rows: Vec<ConversationRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&missing)
            .fetch_all(&mut *tx)
            .await?;
        conversations.extend(rows.into_iter().map(|c| (c.id, c.into())));
    }
    tx.commit().await?;

    Ok(stored
        .into_iter()
        .map(|m| pb::StoredMessage {
            inserted: inserted.contains(&m.id),
            conversation: conversations.get(&m.conversation_id).cloned(),
            message: Some(m.into()),
        })
        .collect())
}

/// The messages of a batch as column arrays, for one UNNEST insert.
struct MessageColumns<'a> {
    ids: Vec<Uuid>,
    conversations: Vec<Uuid>,
    sender_types: Vec<&'static str>,
    directions: Vec<&'static str>,
    channels: Vec<&'static str>,
    channel_message_ids: Vec<&'a str>,
    message_types: Vec<&'a str>,
    texts: Vec<Option<&'a str>>,
    sender_ids: Vec<Option<&'a str>>,
    recipient_ids: Vec<Option<&'a str>>,
    timestamps: Vec<DateTime<Utc>>,
    media: Vec<&'a str>,
    metadata: Vec<&'a str>,
}

impl<'a> MessageColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            ids: Vec::with_capacity(n),
            conversations: Vec::with_capacity(n),
            sender_types: Vec::with_capacity(n),
            directions: Vec::with_capacity(n),
            channels: Vec::with_capacity(n),
            channel_message_ids: Vec::with_capacity(n),
            message_types: Vec::with_capacity(n),
            texts: Vec::with_capacity(n),
            sender_ids: Vec::with_capacity(n),
            recipient_ids: Vec::with_capacity(n),
            timestamps: Vec::with_capacity(n),
            media: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, conversation: Uuid, m: &'a Inbound) {
        self.ids.push(Uuid::now_v7());
        self.conversations.push(conversation);
        self.sender_types.push(m.sender_type);
        self.directions.push(m.direction);
        self.channels.push(m.channel);
        self.channel_message_ids.push(&m.channel_message_id);
        self.message_types.push(&m.message_type);
        self.texts.push(m.text.as_deref());
        self.sender_ids.push(m.sender_id.as_deref());
        self.recipient_ids.push(m.recipient_id.as_deref());
        self.timestamps.push(m.timestamp);
        self.media.push(&m.media_urls);
        self.metadata.push(&m.metadata);
    }
}
