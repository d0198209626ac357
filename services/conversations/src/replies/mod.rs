//! Replies (issue 14): an agent's answer is checked against its platform's
//! rules ([`rules`]), stored at once as an outbound `pending` message under a
//! placeholder id (`faro:<message id>`) with its idempotency key, and later
//! given the platform's id or error by ingest's reply workers, a worker's
//! read at a time ([`delivery`] claims, [`record`] records).
//! Send credentials are sealed like app secrets ([`credentials`]).

pub(crate) mod credentials;
mod delivery;
mod record;
pub(crate) mod rules;
mod service;

use chrono::{DateTime, Utc};
use faro_proto::conversations::v1 as pb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

pub(crate) use credentials::set_credential;
pub(crate) use delivery::{claim_batch, get_delivery};
pub(crate) use record::{record_batch, record_result};
use rules::Content;

use crate::{
    Error,
    db::{parse_uuid, tenant_tx},
    rows::{
        CONVERSATION_COLUMNS, ConversationRow, MESSAGE_COLUMNS, MessageRow,
        RETURNED_MESSAGE_COLUMNS,
    },
};

/// The stored form of what is to be sent, under `metadata.reply`.
fn content_json(c: &Content) -> Value {
    match c {
        Content::Text(t) => json!({"text": t}),
        Content::Template {
            name,
            language,
            parameters,
        } => json!({"template": {"name": name, "language": language, "parameters": parameters}}),
        Content::Media {
            kind,
            url,
            caption,
            filename,
        } => json!({"media": {"kind": kind, "url": url, "caption": caption, "filename": filename}}),
    }
}

fn idempotency_key(key: &str) -> Result<&str, Error> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(Error::invalid(
            "idempotency_key must be 1..=255 printable ASCII characters without spaces",
        ));
    }
    Ok(key)
}

/// The request as understood: a repeated key must carry the same.
fn request_hash(conversation: Uuid, content: &Value, reply_to: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(conversation.as_bytes());
    h.update(content.to_string().as_bytes());
    h.update([0]);
    h.update(reply_to.as_bytes());
    h.finalize().to_vec()
}

pub(crate) async fn message(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    id: Uuid,
) -> Result<MessageRow, Error> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m
         JOIN conversations c ON c.tenant_id = m.tenant_id AND c.id = m.conversation_id
         WHERE m.tenant_id = $1 AND m.id = $2"
    );
    sqlx::query_as(&sql)
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::NotFound("no such message".into()))
}

#[derive(sqlx::FromRow)]
struct Account {
    id: Uuid,
    external_account_id: String,
    human_agent: bool,
    has_credential: bool,
}

/// The thread's channel account: the one its customer last wrote to, else
/// the location's first on that channel.
async fn account(
    tx: &mut Transaction<'static, Postgres>,
    c: &ConversationRow,
) -> Result<Account, Error> {
    let found: Option<Account> = sqlx::query_as(
        "SELECT id, external_account_id, human_agent, send_credential_enc IS NOT NULL AS has_credential
         FROM channel_accounts
         WHERE tenant_id = $1 AND location_id = $2 AND channel = $3 AND kind = 'messaging'
         ORDER BY (external_account_id = (
                      SELECT recipient_id FROM messages
                      WHERE tenant_id = $1 AND conversation_id = $4 AND direction = 'inbound'
                      ORDER BY \"timestamp\" DESC LIMIT 1)) DESC NULLS LAST,
                  created_at, id
         LIMIT 1",
    )
    .bind(c.tenant_id)
    .bind(c.location_id)
    .bind(&c.channel)
    .bind(c.id)
    .fetch_optional(&mut **tx)
    .await?;
    let a = found.ok_or_else(|| {
        rules::broken(
            "no_channel_account",
            "no channel account of this conversation's location and channel can send",
        )
    })?;
    if !a.has_credential {
        return Err(rules::broken(
            "no_send_credential",
            "the channel account has no send credential (faro admin set-credential)",
        ));
    }
    Ok(a)
}

/// The platform id of the message replied to, which must be of this thread.
async fn reply_to(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    conversation: Uuid,
    id: &str,
) -> Result<Option<String>, Error> {
    if id.is_empty() {
        return Ok(None);
    }
    let id = parse_uuid("reply_to_message_id", id)?;
    let target: Option<String> = sqlx::query_scalar(
        "SELECT channel_message_id FROM messages
         WHERE tenant_id = $1 AND conversation_id = $2 AND id = $3",
    )
    .bind(tenant)
    .bind(conversation)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    match target {
        Some(t) if !t.starts_with("faro:") => Ok(Some(t)),
        Some(_) => Err(Error::invalid(
            "reply_to_message_id names a reply the platform has not accepted yet",
        )),
        None => Err(Error::invalid(
            "reply_to_message_id names no message of this conversation",
        )),
    }
}

fn stored(m: MessageRow, c: ConversationRow, inserted: bool) -> pb::StoredMessage {
    pb::StoredMessage {
        message: Some(m.into()),
        conversation: Some(c.into()),
        inserted,
    }
}

/// Checks and stores one reply, once per (tenant, idempotency key). Two
/// requests racing with one key: the second's insert waits on the key's
/// unique index for the first, then fails; it runs again and finds it.
pub(crate) async fn create_reply(
    pool: &PgPool,
    req: pb::CreateReplyRequest,
) -> Result<pb::CreateReplyResponse, Error> {
    match create_once(pool, &req).await {
        Err(Error::Database(e))
            if e.as_database_error().and_then(|d| d.constraint())
                == Some("reply_requests_pkey") =>
        {
            create_once(pool, &req).await
        }
        other => other,
    }
}

/// The thread (within the agent's locations) and the key's first use, in
/// one statement.
async fn thread_and_first(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    id: Uuid,
    key: &str,
    locations: &[Uuid],
) -> Result<(ConversationRow, Option<(Uuid, Vec<u8>)>), Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        thread: ConversationRow,
        first_id: Option<Uuid>,
        first_hash: Option<Vec<u8>>,
    }
    let sql = format!(
        "SELECT {CONVERSATION_COLUMNS}, r.message_id AS first_id, r.request_hash AS first_hash
         FROM conversations c
         LEFT JOIN reply_requests r ON r.tenant_id = c.tenant_id AND r.idempotency_key = $3
         WHERE c.tenant_id = $1 AND c.id = $2{}",
        crate::inbox::ENABLED_LOCATION
    );
    let row: Option<Row> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(id)
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
    // Another location's thread is as absent as another tenant's.
    let row = row
        .filter(|r| locations.is_empty() || locations.contains(&r.thread.location_id))
        .ok_or_else(|| Error::NotFound("no such conversation".into()))?;
    Ok((row.thread, row.first_id.zip(row.first_hash)))
}

/// The first answer again, as the reply is now.
async fn replay(
    mut tx: Transaction<'static, Postgres>,
    thread: ConversationRow,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<pb::CreateReplyResponse, Error> {
    let tenant = thread.tenant_id;
    let m = message(&mut tx, tenant, id).await?;
    let human_agent: Option<bool> = sqlx::query_scalar(
        "SELECT ca.human_agent FROM messages m
         JOIN channel_accounts ca
           ON ca.tenant_id = m.tenant_id AND ca.id = (m.metadata #>> '{reply,account}')::uuid
         WHERE m.tenant_id = $1 AND m.id = $2",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
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

async fn create_once(
    pool: &PgPool,
    req: &pb::CreateReplyRequest,
) -> Result<pb::CreateReplyResponse, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    let conversation_id = parse_uuid("conversation_id", &req.conversation_id)?;
    let locations = req
        .location_ids
        .iter()
        .map(|l| parse_uuid("location_ids", l))
        .collect::<Result<Vec<_>, _>>()?;
    let key = idempotency_key(&req.idempotency_key)?;
    let pb_content = req
        .content
        .as_ref()
        .ok_or_else(|| Error::invalid("content is required"))?;
    let content = Content::from_pb(pb_content)?;
    let content_value = content_json(&content);
    let hash = request_hash(
        conversation_id,
        &content_value,
        &pb_content.reply_to_message_id,
    );
    let now = Utc::now();

    let mut tx = tenant_tx(pool, tenant).await?;
    let (thread, first) =
        thread_and_first(&mut tx, tenant, conversation_id, key, &locations).await?;
    if let Some((id, first_hash)) = first {
        if first_hash != hash {
            return Err(rules::broken(
                "idempotency_key_reused",
                "this Idempotency-Key was used for another request",
            ));
        }
        return replay(tx, thread, id, now).await;
    }
    let account = account(&mut tx, &thread).await?;
    let last_at = thread.last_inbound_at;
    let tag = rules::check(&thread.channel, &content, last_at, account.human_agent, now)?;
    let reply_to = reply_to(
        &mut tx,
        tenant,
        conversation_id,
        &pb_content.reply_to_message_id,
    )
    .await?;
    let id = Uuid::now_v7();
    let (text, media_urls) = match &content {
        Content::Text(t) => (Some(t.clone()), vec![]),
        Content::Template { name, .. } => (Some(format!("[template {name}]")), vec![]),
        Content::Media { url, caption, .. } => (
            (!caption.is_empty()).then(|| caption.clone()),
            vec![url.clone()],
        ),
    };
    let metadata = json!({"reply": {
        "agent_id": req.agent_id,
        "account": account.id,
        "tag": tag,
        "content": content_value,
    }});
    #[derive(sqlx::FromRow)]
    struct Inserted {
        #[sqlx(flatten)]
        message: MessageRow,
        thread_last_message_at: Option<DateTime<Utc>>,
        thread_updated_at: DateTime<Utc>,
    }
    // The message, its key and the thread's activity in one statement.
    let sql = format!(
        "WITH m AS (
             INSERT INTO messages AS m (tenant_id, id, conversation_id, sender_type, text, media_urls,
                                        direction, channel, channel_message_id, message_type, sender_id,
                                        recipient_id, \"timestamp\", status, reply_to_channel_message_id,
                                        metadata)
             VALUES ($1, $2, $3, 'agent', $4, $5, 'outbound', $6, $7, $8, $9, $10, $11, 'pending', $12, $13)
             RETURNING {RETURNED_MESSAGE_COLUMNS}),
         k AS (
             INSERT INTO reply_requests (tenant_id, idempotency_key, request_hash, message_id)
             SELECT $1, $14, $15, m.id FROM m),
         t AS (
             UPDATE conversations c SET last_message_at = GREATEST(c.last_message_at, $11), updated_at = now()
             WHERE c.tenant_id = $1 AND c.id = $3 RETURNING c.last_message_at, c.updated_at)
         SELECT m.*, t.last_message_at AS thread_last_message_at, t.updated_at AS thread_updated_at
         FROM m, t"
    );
    let inserted: Inserted = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(id)
        .bind(conversation_id)
        .bind(text)
        .bind(&media_urls)
        .bind(&thread.channel)
        .bind(format!("faro:{id}"))
        .bind(content.message_type())
        .bind(&account.external_account_id)
        .bind(&thread.customer_id)
        .bind(now)
        .bind(reply_to)
        .bind(&metadata)
        .bind(key)
        .bind(&hash)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    let mut thread = thread;
    thread.last_message_at = inserted.thread_last_message_at;
    thread.updated_at = inserted.thread_updated_at;
    Ok(pb::CreateReplyResponse {
        window: Some(rules::window(
            &thread.channel,
            last_at,
            account.human_agent,
            now,
        )),
        stored: Some(stored(inserted.message, thread, true)),
        created: true,
    })
}
