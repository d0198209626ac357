//! The platforms' answers, a reply worker's batch at once, in one
//! transaction and one call of `faro_record_replies` for all its tenants (see
//! [`super::delivery`]; migration 0025): with the platform's id
//! (wamid / mid) a reply becomes `sent` and events parked for that id apply;
//! with an error it becomes `failed`.
//!
//! An echo of the reply the platform delivered BEFORE answering the send
//! (Instagram's name no app, so the parser stores them) is a row of its own
//! holding the id. It is merged here, in the same transaction: its status
//! and receipts move to the reply, read markers on it move to the reply, and
//! it is deleted (`faro_merge_reply_echoes`, migration 0020). The reply
//! keeps its id, so agents see one message.

use std::collections::{BTreeMap, HashMap, HashSet};

use faro_proto::conversations::v1 as pb;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::delivery::MAX_BATCH;
use crate::{
    Error,
    db::{TenantsTx, parse_uuid},
    events,
    rows::{
        CONVERSATION_COLUMNS, ConversationRow, MessageRow, RETURNED_MESSAGE_COLUMNS, message_fields,
    },
};

/// One tenant's answers.
#[derive(Default)]
struct TenantResults {
    sent: Vec<(Uuid, String)>,
    failed: Vec<(Uuid, Value)>,
}

fn parse(req: &pb::RecordReplyResultRequest) -> Result<(Uuid, Uuid, Result<String, Value>), Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    let id = parse_uuid("message_id", &req.message_id)?;
    let platform_id = req.platform_message_id.as_str();
    if platform_id.is_empty() == req.error_json.is_empty() {
        return Err(Error::invalid(
            "exactly one of platform_message_id and error_json is required",
        ));
    }
    if platform_id.len() > 512 || platform_id.contains('\0') || platform_id.starts_with("faro:") {
        return Err(Error::invalid("platform_message_id is not a platform's id"));
    }
    let outcome = if platform_id.is_empty() {
        Err(serde_json::from_str(&req.error_json)
            .unwrap_or_else(|_| Value::String(req.error_json.clone())))
    } else {
        Ok(platform_id.to_owned())
    };
    Ok((tenant, id, outcome))
}

/// The echoes stored under ids these replies were just given.
async fn echoes(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    ids: &[Uuid],
    platform_ids: &[&str],
) -> Result<Vec<(Uuid, MessageRow)>, Error> {
    #[derive(sqlx::FromRow)]
    struct Echo {
        reply_id: Uuid,
        #[sqlx(flatten)]
        message: MessageRow,
    }
    let sql = format!(
        "SELECT j.id AS reply_id, {RETURNED_MESSAGE_COLUMNS}
         FROM UNNEST($2::uuid[], $3::text[]) AS j(id, pid)
         JOIN messages r ON r.tenant_id = $1 AND r.id = j.id
         JOIN messages m ON m.tenant_id = $1 AND m.channel = r.channel
                        AND m.channel_message_id = j.pid AND m.id <> r.id"
    );
    let rows: Vec<Echo> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(ids)
        .bind(platform_ids)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows.into_iter().map(|e| (e.reply_id, e.message)).collect())
}

/// Merges into their replies the echoes holding the ids these replies were
/// just given (`held`: reply, platform id), gives the replies the ids, and
/// puts the replies as they are now into `sent`; returns the echoes merged
/// away. A holder that is not an echo of ours (another reply, an inbound
/// message) keeps the id; the reply records it in metadata only.
async fn merge_echoes(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    held: &[(Uuid, &str)],
    sent: &mut Vec<MessageRow>,
) -> Result<Vec<MessageRow>, Error> {
    let (ids, pids): (Vec<Uuid>, Vec<&str>) = held.iter().copied().unzip();
    let found = echoes(tx, tenant, &ids, &pids).await?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let (replies, echo_ids): (Vec<Uuid>, Vec<Uuid>) = found.iter().map(|(r, e)| (*r, e.id)).unzip();
    let gone: Vec<Uuid> = sqlx::query_scalar("SELECT * FROM faro_merge_reply_echoes($1, $2)")
        .bind(&replies)
        .bind(&echo_ids)
        .fetch_all(&mut **tx)
        .await?;
    let gone: HashSet<Uuid> = gone.into_iter().collect();
    let mut merged = Vec::new();
    let mut freed: Vec<(Uuid, &str)> = Vec::new();
    for (reply, mut echo) in found {
        if gone.contains(&echo.id) {
            echo.deleted_at = Some(chrono::Utc::now());
            merged.push(echo);
            if let Some(h) = held.iter().find(|h| h.0 == reply) {
                freed.push(*h);
            }
        } else {
            tracing::warn!(message_id = %echo.id, "a platform id of a reply is held by another message");
        }
    }
    if freed.is_empty() {
        return Ok(merged);
    }
    let (ids, pids): (Vec<Uuid>, Vec<&str>) = freed.into_iter().unzip();
    let sql = format!(
        "UPDATE messages m SET channel_message_id = j.pid
         FROM UNNEST($2::uuid[], $3::text[]) AS j(id, pid)
         WHERE m.tenant_id = $1 AND m.id = j.id
           AND NOT EXISTS (SELECT 1 FROM messages x WHERE x.tenant_id = m.tenant_id
                           AND x.channel = m.channel AND x.channel_message_id = j.pid AND x.id <> m.id)
         RETURNING {RETURNED_MESSAGE_COLUMNS}"
    );
    let now: Vec<MessageRow> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(&ids)
        .bind(&pids)
        .fetch_all(&mut **tx)
        .await?;
    // The merge moved the echoes' statuses onto these replies too.
    sent.retain(|m| !ids.contains(&m.id));
    sent.extend(now);
    Ok(merged)
}

/// One tenant's replies `faro_record_replies` left holding their
/// placeholder because an echo holds the id each was given (`held`: reply,
/// platform id; `sent`: the replies as it left them): the echoes are merged
/// into them, the replies take the ids, and the events parked for those ids
/// apply. Returns the replies as they are now and the echoes merged away.
async fn merge_held(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    held: &[(Uuid, &str)],
    mut sent: Vec<MessageRow>,
) -> Result<(Vec<MessageRow>, Vec<MessageRow>), Error> {
    let merged = merge_echoes(tx, tenant, held, &mut sent).await?;
    let keys: Vec<(String, String)> = sent
        .iter()
        .filter(|m| !m.channel_message_id.starts_with("faro:"))
        .map(|m| (m.channel.clone(), m.channel_message_id.clone()))
        .collect();
    let changed = events::apply_pending(tx, tenant, &keys).await?;
    if !changed.is_empty() {
        // Parked statuses moved these: read them again.
        let changed: Vec<Uuid> = changed.into_iter().collect();
        let sql = format!(
            "SELECT {RETURNED_MESSAGE_COLUMNS} FROM messages m
             WHERE m.tenant_id = $1 AND m.id = ANY($2)"
        );
        let again: Vec<MessageRow> = sqlx::query_as(&sql)
            .bind(tenant)
            .bind(&changed)
            .fetch_all(&mut **tx)
            .await?;
        sent.retain(|r| !changed.contains(&r.id));
        sent.extend(again);
    }
    Ok((sent, merged))
}

/// The threads of these messages, by id.
async fn threads(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    rows: &[&MessageRow],
) -> Result<HashMap<Uuid, ConversationRow>, Error> {
    let mut ids: Vec<Uuid> = rows.iter().map(|r| r.conversation_id).collect();
    ids.sort_unstable();
    ids.dedup();
    // Each thread by its key, whatever the planner guesses of a tenant's size.
    let sql = format!(
        "SELECT c.* FROM UNNEST($2::uuid[]) AS j(id)
         CROSS JOIN LATERAL (SELECT {CONVERSATION_COLUMNS} FROM conversations c
                             WHERE c.tenant_id = $1 AND c.id = j.id LIMIT 1) c"
    );
    let found: Vec<ConversationRow> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
    Ok(found.into_iter().map(|c| (c.id, c)).collect())
}

fn stored(m: MessageRow, threads: &HashMap<Uuid, ConversationRow>) -> pb::StoredMessage {
    let conversation = threads.get(&m.conversation_id).map(|c| c.clone().into());
    pb::StoredMessage {
        message: Some(m.into()),
        conversation,
        inserted: false,
    }
}

/// A reply as recording left it, with its thread.
#[derive(sqlx::FromRow)]
struct Recorded {
    #[sqlx(flatten)]
    message: MessageRow,
    thread: sqlx::types::Json<ConversationRow>,
}

/// Records a batch's answers, every tenant of it in ONE call
/// (`faro_record_replies`, migration 0025: per tenant it switches
/// `faro.tenant_id`, so RLS scopes each statement to its tenant; it also
/// applies the events parked for the new ids and reads the replies and
/// their threads again).
async fn record_tenants(
    tx: &mut Transaction<'static, Postgres>,
    batch: &[(Uuid, TenantResults)],
) -> Result<Vec<Recorded>, Error> {
    let (mut tenants, mut ids, mut pids, mut errors) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (tenant, r) in batch {
        for (id, pid) in &r.sent {
            tenants.push(*tenant);
            ids.push(*id);
            pids.push(Some(pid.as_str()));
            errors.push(None);
        }
        for (id, error) in &r.failed {
            tenants.push(*tenant);
            ids.push(*id);
            pids.push(None);
            errors.push(Some(error));
        }
    }
    let sql = concat!(
        "SELECT r.r_location_id AS location_id, ",
        message_fields!(),
        ", to_jsonb(r.r_thread) AS thread
         FROM faro_record_replies($1, $2, $3, $4) r CROSS JOIN LATERAL (SELECT (r.r_message).*) m"
    );
    Ok(sqlx::query_as(sql)
        .bind(&tenants)
        .bind(&ids)
        .bind(&pids)
        .bind(&errors)
        .fetch_all(&mut **tx)
        .await?)
}

/// Records a batch's answers, of all its tenants, in one transaction;
/// returns the replies as they are now and the echoes merged away.
async fn record_all(
    pool: &PgPool,
    batch: Vec<(Uuid, TenantResults)>,
) -> Result<(Vec<(Uuid, pb::StoredMessage)>, Vec<pb::StoredMessage>), Error> {
    let (mut now, mut merged_echoes) = (HashMap::new(), Vec::new());
    let Some((first, _)) = batch.first() else {
        return Ok((Vec::new(), merged_echoes));
    };
    let mut txs = TenantsTx::begin(pool, *first).await?;
    let recorded = record_tenants(txs.of(*first).await?, &batch).await?;
    // By tenant and id: an answer naming another tenant's reply (whose
    // placeholder this call may also hold) must not reach its row.
    let mut placeholders: HashMap<(Uuid, Uuid), MessageRow> = HashMap::new();
    for r in recorded {
        let id = r.message.id;
        if r.message.channel_message_id.starts_with("faro:") {
            placeholders.insert((r.message.tenant_id, id), r.message.clone());
        }
        let thread: pb::Conversation = r.thread.0.into();
        let stored = pb::StoredMessage {
            message: Some(r.message.into()),
            conversation: Some(thread),
            inserted: false,
        };
        now.insert(id, stored);
    }
    // A reply given an id another row holds kept its placeholder: the echo
    // holding it is merged (rare), a tenant at a time.
    for (tenant, results) in &batch {
        let held: Vec<(Uuid, &str)> = results
            .sent
            .iter()
            .filter(|(id, _)| placeholders.contains_key(&(*tenant, *id)))
            .map(|(id, pid)| (*id, pid.as_str()))
            .collect();
        if held.is_empty() {
            continue;
        }
        let sent = held
            .iter()
            .filter_map(|(id, _)| placeholders.remove(&(*tenant, *id)))
            .collect();
        let tx = txs.of(*tenant).await?;
        let (rows, merged) = merge_held(tx, *tenant, &held, sent).await?;
        let all: Vec<&MessageRow> = rows.iter().chain(merged.iter()).collect();
        let threads = threads(tx, *tenant, &all).await?;
        now.extend(rows.into_iter().map(|m| (m.id, stored(m, &threads))));
        merged_echoes.extend(merged.into_iter().map(|m| stored(m, &threads)));
    }
    txs.commit().await?;
    Ok((now.into_iter().collect(), merged_echoes))
}

/// Records every answer, in one transaction (a retried call records again
/// what it recorded:
/// the same id and error give the same row); the replies come back in the
/// request's order, without those naming no message of their tenant.
pub(crate) async fn record_batch(
    pool: &PgPool,
    results: Vec<pb::RecordReplyResultRequest>,
) -> Result<pb::RecordReplyResultsResponse, Error> {
    if results.len() > MAX_BATCH {
        return Err(Error::invalid(format!(
            "at most {MAX_BATCH} results in one call"
        )));
    }
    let mut by_tenant: BTreeMap<Uuid, TenantResults> = BTreeMap::new();
    let mut order = Vec::with_capacity(results.len());
    for r in &results {
        let (tenant, id, outcome) = parse(r)?;
        let entry = by_tenant.entry(tenant).or_default();
        match outcome {
            Ok(pid) => entry.sent.push((id, pid)),
            Err(e) => entry.failed.push((id, e)),
        }
        order.push(id);
    }
    let (rows, merged_echoes) = record_all(pool, by_tenant.into_iter().collect()).await?;
    let mut now: HashMap<Uuid, pb::StoredMessage> = rows.into_iter().collect();
    let replies = order.iter().filter_map(|id| now.remove(id)).collect();
    Ok(pb::RecordReplyResultsResponse {
        replies,
        merged_echoes,
    })
}

/// One answer (`RecordReplyResult`): NOT_FOUND when it names no message.
pub(crate) async fn record_result(
    pool: &PgPool,
    req: pb::RecordReplyResultRequest,
) -> Result<pb::StoredMessage, Error> {
    record_batch(pool, vec![req])
        .await?
        .replies
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound("no such message".into()))
}
