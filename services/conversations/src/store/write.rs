//! The two batched writes of a tenant's messages: one UNNEST upsert of their
//! threads, one UNNEST insert of the messages themselves.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{Inbound, ThreadKey, ThreadUpdate};
use crate::{
    Error,
    rows::{CONVERSATION_COLUMNS, ConversationRow, MessageRow, RETURNED_MESSAGE_COLUMNS},
};

/// Upserts one row per thread; returns them by thread key.
pub(super) async fn upsert_threads(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    messages: &[Inbound],
) -> Result<HashMap<(Uuid, String, String), ConversationRow>, Error> {
    let mut threads: BTreeMap<ThreadKey, ThreadUpdate> = BTreeMap::new();
    // The customer's latest words per thread: the reply window's start.
    let mut inbound: HashMap<ThreadKey, DateTime<Utc>> = HashMap::new();
    for m in messages {
        if m.direction == "inbound" {
            let at = inbound
                .entry((m.location, m.channel, m.customer_id.clone()))
                .or_insert(m.timestamp);
            *at = (*at).max(m.timestamp);
        }
        let t = threads
            .entry((m.location, m.channel, m.customer_id.clone()))
            .or_insert((m.timestamp, None, None, None));
        t.0 = t.0.max(m.timestamp);
        if m.customer_name.is_some() {
            t.1.clone_from(&m.customer_name);
        }
        if m.customer_phone.is_some() {
            t.2.clone_from(&m.customer_phone);
        }
        if m.customer_user_id.is_some() {
            t.3.clone_from(&m.customer_user_id);
        }
    }
    let mut ids = Vec::with_capacity(threads.len());
    let (mut locs, mut chans, mut custs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut names, mut phones, mut users, mut lasts, mut inbounds) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (key, (last, name, phone, user)) in &threads {
        let (loc, chan, cust) = key;
        inbounds.push(inbound.get(key).copied());
        ids.push(Uuid::now_v7());
        locs.push(*loc);
        chans.push(*chan);
        custs.push(cust.as_str());
        names.push(name.as_deref());
        phones.push(phone.as_deref());
        users.push(user.as_deref());
        lasts.push(*last);
    }
    let upsert = format!(
        "INSERT INTO conversations AS c (tenant_id, id, location_id, channel, customer_id,
                                         customer_name, customer_phone, customer_user_id,
                                         last_message_at, last_inbound_at)
         SELECT $1, u.* FROM UNNEST($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                                    $7::text[], $8::text[], $9::timestamptz[],
                                    $10::timestamptz[]) AS u
         ON CONFLICT (tenant_id, location_id, channel, customer_id) DO UPDATE SET
             last_message_at = GREATEST(c.last_message_at, EXCLUDED.last_message_at),
             last_inbound_at = GREATEST(c.last_inbound_at, EXCLUDED.last_inbound_at),
             customer_name = COALESCE(EXCLUDED.customer_name, c.customer_name),
             -- A thread's ids are learnt, never replaced (customers.rs).
             customer_phone = COALESCE(c.customer_phone, EXCLUDED.customer_phone),
             customer_user_id = COALESCE(c.customer_user_id, EXCLUDED.customer_user_id),
             updated_at = now()
         RETURNING {CONVERSATION_COLUMNS}"
    );
    let rows: Vec<ConversationRow> = sqlx::query_as(&upsert)
        .bind(tenant)
        .bind(&ids)
        .bind(&locs)
        .bind(&chans)
        .bind(&custs)
        .bind(&names)
        .bind(&phones)
        .bind(&users)
        .bind(&lasts)
        .bind(&inbounds)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows
        .into_iter()
        .map(|c| ((c.location_id, c.channel.clone(), c.customer_id.clone()), c))
        .collect())
}

/// Inserts the messages `ON CONFLICT DO NOTHING`; returns those this call inserted.
pub(super) async fn insert_messages(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    messages: &[Inbound],
    threads: &HashMap<(Uuid, String, String), ConversationRow>,
) -> Result<Vec<MessageRow>, Error> {
    let mut cols = MessageColumns::with_capacity(messages.len());
    for m in messages {
        let key = (m.location, m.channel.to_owned(), m.customer_id.clone());
        let conv = threads
            .get(&key)
            .map(|c| c.id)
            .ok_or_else(|| Error::Serve("thread upsert returned no row".into()))?;
        cols.push(conv, m);
    }
    let sql = format!(
        "INSERT INTO messages AS m (tenant_id, id, conversation_id, sender_type, direction, channel,
                               channel_message_id, message_type, text, sender_id, recipient_id,
                               \"timestamp\", media_urls, metadata, media, reply_to_channel_message_id,
                               referral, forwarded, standby)
         SELECT $1, u.id, u.conversation_id, u.sender_type, u.direction, u.channel,
                u.channel_message_id, u.message_type, u.text, u.sender_id, u.recipient_id, u.ts,
                ARRAY(SELECT jsonb_array_elements_text(u.media_urls::jsonb)), u.metadata::jsonb,
                u.media::jsonb, u.reply_to, u.referral::jsonb, u.forwarded, u.standby
         FROM UNNEST($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[],
                     $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::bool[],
                     $19::bool[])
              AS u(id, conversation_id, sender_type, direction, channel, channel_message_id,
                   message_type, text, sender_id, recipient_id, ts, media_urls, metadata, media,
                   reply_to, referral, forwarded, standby)
         ON CONFLICT (tenant_id, channel, channel_message_id) DO NOTHING
         RETURNING {RETURNED_MESSAGE_COLUMNS}"
    );
    let inserted: Vec<MessageRow> = sqlx::query_as(&sql)
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
        .bind(&cols.media_urls)
        .bind(&cols.metadata)
        .bind(&cols.media)
        .bind(&cols.reply_to)
        .bind(&cols.referral)
        .bind(&cols.forwarded)
        .bind(&cols.standby)
        .fetch_all(&mut **tx)
        .await?;
    Ok(inserted)
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
    media_urls: Vec<&'a str>,
    metadata: Vec<&'a str>,
    media: Vec<&'a str>,
    reply_to: Vec<Option<&'a str>>,
    referral: Vec<Option<&'a str>>,
    forwarded: Vec<bool>,
    standby: Vec<bool>,
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
            media_urls: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            media: Vec::with_capacity(n),
            reply_to: Vec::with_capacity(n),
            referral: Vec::with_capacity(n),
            forwarded: Vec::with_capacity(n),
            standby: Vec::with_capacity(n),
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
        self.media_urls.push(&m.media_urls);
        self.metadata.push(&m.metadata);
        self.media.push(&m.media);
        self.reply_to.push(m.reply_to.as_deref());
        self.referral.push(m.referral.as_deref());
        self.forwarded.push(m.forwarded);
        self.standby.push(m.standby);
    }
}
