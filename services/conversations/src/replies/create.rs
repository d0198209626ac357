//! Storing agents' replies, many in one transaction.
//!
//! Every reply needs the same work: its thread (within the agent's
//! locations), its idempotency key's first use and its channel account, read
//! in one statement per tenant; the rules; then the messages, their keys and
//! their threads' activity written by one statement per tenant. [`store`]
//! does it for a batch (see [`super::gather`]) in ONE transaction and two
//! calls, whatever its tenants: database functions (migration 0024) that
//! switch `faro.tenant_id` before each tenant's statement, so RLS still
//! scopes every statement to its tenant.
//!
//! One reply never fails another: a broken rule or a missing thread is that
//! reply's answer; a key another transaction took meanwhile is looked at
//! again ([`create_alone`]) once that one is committed.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use faro_proto::conversations::v1 as pb;
use serde_json::{Value, json};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{
    content_json, idempotency_key, message, request_hash,
    rules::{self, Content},
    stored,
};
use crate::{
    Error,
    db::{TenantsTx, parse_uuid},
    rows::{CONVERSATION_COLUMNS, ConversationRow, MessageRow, message_fields},
};

/// Times a reply whose key another transaction took is looked at again.
const KEY_RACE_TRIES: usize = 3;

pub(super) type Answer = Result<pb::CreateReplyResponse, Error>;

/// A request as understood before any query.
pub(super) struct Parsed {
    tenant: Uuid,
    conversation: Uuid,
    locations: Vec<Uuid>,
    key: String,
    content: Content,
    content_value: Value,
    hash: Vec<u8>,
    reply_to: String,
    agent_id: String,
    now: DateTime<Utc>,
}

impl Parsed {
    pub(super) fn new(req: &pb::CreateReplyRequest) -> Result<Self, Error> {
        let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
        let conversation = parse_uuid("conversation_id", &req.conversation_id)?;
        let locations = req
            .location_ids
            .iter()
            .map(|l| parse_uuid("location_ids", l))
            .collect::<Result<Vec<_>, _>>()?;
        let key = idempotency_key(&req.idempotency_key)?.to_owned();
        let pb_content = req
            .content
            .as_ref()
            .ok_or_else(|| Error::invalid("content is required"))?;
        let content = Content::from_pb(pb_content)?;
        let content_value = content_json(&content);
        let hash = request_hash(
            conversation,
            &content_value,
            &pb_content.reply_to_message_id,
        );
        Ok(Self {
            tenant,
            conversation,
            locations,
            key,
            content,
            content_value,
            hash,
            reply_to: pb_content.reply_to_message_id.clone(),
            agent_id: req.agent_id.clone(),
            now: Utc::now(),
        })
    }

    /// The replied-to message's id, if one is named and well formed (a
    /// malformed one is refused after the rules, as it always was).
    fn reply_to_id(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.reply_to).ok()
    }
}

/// What became of one reply in a batch.
pub(super) enum Outcome {
    Done(Box<Answer>),
    /// Its key was taken by another reply meanwhile (in this batch or a
    /// concurrent one): looked at again once that one is committed.
    KeyTaken,
}

fn done(answer: Answer) -> Outcome {
    Outcome::Done(Box::new(answer))
}

/// The thread, the key's first use and the channel account of one reply.
#[derive(sqlx::FromRow)]
struct Found {
    ord: i32,
    #[sqlx(flatten)]
    thread: ConversationRow,
    first_id: Option<Uuid>,
    first_hash: Option<Vec<u8>>,
    account_id: Option<Uuid>,
    external_account_id: Option<String>,
    human_agent: Option<bool>,
    has_credential: Option<bool>,
    reply_to_found: bool,
    reply_to_pid: Option<String>,
}

/// Reads what every reply needs, for every tenant of the batch in one call
/// (`faro_lookup_replies`, migration 0024: per tenant, it switches
/// `faro.tenant_id` and runs one statement, so RLS scopes each). Each
/// thread is read by its key (a lateral look-up), whatever the planner
/// guesses of a tenant's size. The threads are locked as they are looked
/// up, in the order of `replies`, which is by tenant and thread id, so two
/// batches never wait on each other in a circle. The account is the one the
/// customer last wrote to, else the location's first on that channel.
async fn lookup(
    tx: &mut Transaction<'static, Postgres>,
    replies: &[(usize, &Parsed)],
) -> Result<Vec<Found>, Error> {
    debug_assert!(replies.is_sorted_by_key(|(_, p)| (p.tenant, p.conversation)));
    let tenants: Vec<Uuid> = replies.iter().map(|(_, p)| p.tenant).collect();
    let ord: Vec<i32> = replies.iter().map(|(i, _)| *i as i32).collect();
    let threads: Vec<Uuid> = replies.iter().map(|(_, p)| p.conversation).collect();
    let keys: Vec<&str> = replies.iter().map(|(_, p)| p.key.as_str()).collect();
    let reply_to: Vec<Option<Uuid>> = replies.iter().map(|(_, p)| p.reply_to_id()).collect();
    let sql = format!(
        "SELECT r.r_ord AS ord, {CONVERSATION_COLUMNS}, r.r_first_id AS first_id,
                r.r_first_hash AS first_hash, r.r_account_id AS account_id,
                r.r_external_account_id AS external_account_id, r.r_human_agent AS human_agent,
                r.r_has_credential AS has_credential, r.r_reply_to_found AS reply_to_found,
                r.r_reply_to_pid AS reply_to_pid
         FROM faro_lookup_replies($1, $2, $3, $4, $5) r CROSS JOIN LATERAL (SELECT (r.r_thread).*) c"
    );
    Ok(sqlx::query_as(&sql)
        .bind(&tenants)
        .bind(&ord)
        .bind(&threads)
        .bind(&keys)
        .bind(&reply_to)
        .fetch_all(&mut **tx)
        .await?)
}

/// A reply that passed every rule, as it will be inserted.
struct Fresh {
    ord: usize,
    id: Uuid,
    thread: ConversationRow,
    text: Option<String>,
    media_urls: Value,
    message_type: String,
    sender_id: String,
    reply_to: Option<String>,
    metadata: Value,
    human_agent: bool,
}

/// The first answer again, as the reply is now.
async fn replay(
    tx: &mut TenantsTx,
    thread: ConversationRow,
    id: Uuid,
    now: DateTime<Utc>,
) -> Answer {
    let tenant = thread.tenant_id;
    let tx = tx.of(tenant).await?;
    let m = message(tx, tenant, id).await?;
    let human_agent: Option<bool> = sqlx::query_scalar(
        "SELECT ca.human_agent FROM messages m
         JOIN channel_accounts ca
           ON ca.tenant_id = m.tenant_id AND ca.id = (m.metadata #>> '{reply,account}')::uuid
         WHERE m.tenant_id = $1 AND m.id = $2",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    let window = rules::window(
        &thread.channel,
        thread.last_inbound_at,
        human_agent.unwrap_or(false),
        now,
    );
    Ok(pb::CreateReplyResponse {
        stored: Some(stored(m, thread, false)),
        window: Some(window),
        created: false,
    })
}

/// Decides one reply from what was read: refused, replayed, or fresh.
async fn decide(
    tx: &mut TenantsTx,
    p: &Parsed,
    ord: usize,
    found: Option<Found>,
    keys_seen: &mut HashSet<(Uuid, String)>,
) -> Result<Result<Fresh, Outcome>, Error> {
    // Another location's thread is as absent as another tenant's.
    let Some(f) =
        found.filter(|f| p.locations.is_empty() || p.locations.contains(&f.thread.location_id))
    else {
        return Ok(Err(done(Err(Error::NotFound(
            "no such conversation".into(),
        )))));
    };
    if let (Some(id), Some(first_hash)) = (f.first_id, &f.first_hash) {
        if *first_hash != p.hash {
            return Ok(Err(done(Err(rules::broken(
                "idempotency_key_reused",
                "this Idempotency-Key was used for another request",
            )))));
        }
        return Ok(Err(done(replay(tx, f.thread, id, p.now).await)));
    }
    if !keys_seen.insert((p.tenant, p.key.clone())) {
        return Ok(Err(Outcome::KeyTaken));
    }
    let refuse = |e: Error| Ok(Err(done(Err(e))));
    let (Some(account), Some(external_account_id)) = (f.account_id, f.external_account_id) else {
        return refuse(rules::broken(
            "no_channel_account",
            "no channel account of this conversation's location and channel can send",
        ));
    };
    if f.has_credential != Some(true) {
        return refuse(rules::broken(
            "no_send_credential",
            "the channel account has no send credential (faro admin set-credential)",
        ));
    }
    let human_agent = f.human_agent.unwrap_or(false);
    let tag = match rules::check(
        &f.thread.channel,
        &p.content,
        f.thread.last_inbound_at,
        human_agent,
        p.now,
    ) {
        Ok(tag) => tag,
        Err(e) => return refuse(e),
    };
    let reply_to = if p.reply_to.is_empty() {
        None
    } else if p.reply_to_id().is_none() {
        return refuse(Error::invalid("reply_to_message_id must be a UUID"));
    } else {
        match (f.reply_to_found, f.reply_to_pid) {
            (true, Some(t)) if !t.starts_with("faro:") => Some(t),
            (true, _) => {
                return refuse(Error::invalid(
                    "reply_to_message_id names a reply the platform has not accepted yet",
                ));
            }
            (false, _) => {
                return refuse(Error::invalid(
                    "reply_to_message_id names no message of this conversation",
                ));
            }
        }
    };
    let (text, media_urls) = match &p.content {
        Content::Text(t) => (Some(t.clone()), json!([])),
        Content::Template { name, .. } => (Some(format!("[template {name}]")), json!([])),
        Content::Media { url, caption, .. } => {
            ((!caption.is_empty()).then(|| caption.clone()), json!([url]))
        }
    };
    Ok(Ok(Fresh {
        ord,
        id: Uuid::now_v7(),
        text,
        media_urls,
        message_type: p.content.message_type().to_owned(),
        sender_id: external_account_id,
        reply_to,
        metadata: json!({"reply": {
            "agent_id": p.agent_id,
            "account": account,
            "tag": tag,
            "content": p.content_value,
        }}),
        human_agent,
        thread: f.thread,
    }))
}

#[derive(sqlx::FromRow)]
struct Inserted {
    #[sqlx(flatten)]
    message: MessageRow,
    thread_last_message_at: Option<DateTime<Utc>>,
    thread_updated_at: DateTime<Utc>,
}

/// Inserts the fresh replies, their keys and their threads' activity, for
/// every tenant of the batch in one call (`faro_insert_replies`, migration
/// 0024: one statement a tenant, each scoped by RLS to it). A key another
/// transaction committed meanwhile is skipped (its reply is not inserted):
/// the caller looks at it again.
async fn insert(
    tx: &mut Transaction<'static, Postgres>,
    fresh: &[Fresh],
    parsed: &[Parsed],
) -> Result<Vec<Inserted>, Error> {
    let sql = concat!(
        "SELECT r.r_location_id AS location_id, ",
        message_fields!(),
        ", r.r_thread_last_message_at AS thread_last_message_at,
           r.r_thread_updated_at AS thread_updated_at
         FROM faro_insert_replies($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) r
         CROSS JOIN LATERAL (SELECT (r.r_message).*) m"
    );
    let p = |f: &Fresh| &parsed[f.ord];
    let tenants: Vec<Uuid> = fresh.iter().map(|f| p(f).tenant).collect();
    let ids: Vec<Uuid> = fresh.iter().map(|f| f.id).collect();
    let threads: Vec<Uuid> = fresh.iter().map(|f| f.thread.id).collect();
    let texts: Vec<Option<&str>> = fresh.iter().map(|f| f.text.as_deref()).collect();
    let media: Vec<&Value> = fresh.iter().map(|f| &f.media_urls).collect();
    let channels: Vec<&str> = fresh.iter().map(|f| f.thread.channel.as_str()).collect();
    let types: Vec<&str> = fresh.iter().map(|f| f.message_type.as_str()).collect();
    let senders: Vec<&str> = fresh.iter().map(|f| f.sender_id.as_str()).collect();
    let recipients: Vec<&str> = fresh
        .iter()
        .map(|f| f.thread.customer_id.as_str())
        .collect();
    let times: Vec<DateTime<Utc>> = fresh.iter().map(|f| p(f).now).collect();
    let reply_to: Vec<Option<&str>> = fresh.iter().map(|f| f.reply_to.as_deref()).collect();
    let metadata: Vec<&Value> = fresh.iter().map(|f| &f.metadata).collect();
    let keys: Vec<&str> = fresh.iter().map(|f| p(f).key.as_str()).collect();
    let hashes: Vec<&[u8]> = fresh.iter().map(|f| p(f).hash.as_slice()).collect();
    Ok(sqlx::query_as(sql)
        .bind(&tenants)
        .bind(&ids)
        .bind(&threads)
        .bind(&texts)
        .bind(&media)
        .bind(&channels)
        .bind(&types)
        .bind(&senders)
        .bind(&recipients)
        .bind(&times)
        .bind(&reply_to)
        .bind(&metadata)
        .bind(&keys)
        .bind(&hashes)
        .fetch_all(&mut **tx)
        .await?)
}

/// Stores a batch in one transaction, every tenant's replies in the same
/// two calls (look-up, insert); one outcome per request, in order.
pub(super) async fn store(pool: &PgPool, parsed: &[Parsed]) -> Result<Vec<Outcome>, Error> {
    let mut replies: Vec<(usize, &Parsed)> = parsed.iter().enumerate().collect();
    // The order the threads are locked in.
    replies.sort_by_key(|(i, p)| (p.tenant, p.conversation, *i));
    let Some(first) = replies.first().map(|(_, p)| p.tenant) else {
        return Ok(Vec::new());
    };
    let mut outcomes: Vec<Option<Outcome>> = parsed.iter().map(|_| None).collect();
    let mut tx = TenantsTx::begin(pool, first).await?;
    let mut found: BTreeMap<usize, Found> = lookup(tx.of(first).await?, &replies)
        .await?
        .into_iter()
        .map(|f| (f.ord as usize, f))
        .collect();
    let mut keys_seen = HashSet::new();
    let mut fresh = Vec::new();
    for (i, p) in parsed.iter().enumerate() {
        match decide(&mut tx, p, i, found.remove(&i), &mut keys_seen).await? {
            Ok(f) => fresh.push(f),
            Err(o) => outcomes[i] = Some(o),
        }
    }
    if !fresh.is_empty() {
        let mut inserted: BTreeMap<Uuid, Inserted> = insert(tx.of(first).await?, &fresh, parsed)
            .await?
            .into_iter()
            .map(|r| (r.message.id, r))
            .collect();
        for f in fresh {
            let Some(row) = inserted.remove(&f.id) else {
                outcomes[f.ord] = Some(Outcome::KeyTaken);
                continue;
            };
            let p = &parsed[f.ord];
            let mut thread = f.thread;
            let last_inbound = thread.last_inbound_at;
            thread.last_message_at = row.thread_last_message_at;
            thread.updated_at = row.thread_updated_at;
            let window = rules::window(&thread.channel, last_inbound, f.human_agent, p.now);
            outcomes[f.ord] = Some(done(Ok(pb::CreateReplyResponse {
                window: Some(window),
                stored: Some(stored(row.message, thread, true)),
                created: true,
            })));
        }
    }
    tx.commit().await?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::KeyTaken))
        .collect())
}

/// Checks and stores one reply in a transaction of its own, once per
/// (tenant, idempotency key): a key another request holds is waited for and
/// its reply answered.
pub(super) async fn create_alone(pool: &PgPool, req: pb::CreateReplyRequest) -> Answer {
    let parsed = [Parsed::new(&req)?];
    for _ in 0..KEY_RACE_TRIES {
        if let Some(Outcome::Done(answer)) = store(pool, &parsed).await?.pop() {
            return *answer;
        }
    }
    // The key's holder keeps being rolled back: the caller's retry decides.
    Err(Error::Conflict(
        "another request with this Idempotency-Key is being stored; retry".into(),
    ))
}
