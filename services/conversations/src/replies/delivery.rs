//! The reply workers' side: what one reply needs to be sent (claimed for one
//! job at a time), and the platform's answer recorded on it.

use faro_proto::conversations::v1 as pb;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{credentials, message};
use crate::{
    Error, SecretBox,
    db::{parse_uuid, tenant_tx},
    events,
    rows::{CONVERSATION_COLUMNS, ConversationRow},
};

/// A claim older than this is taken over: its worker died mid-send.
const CLAIM_TTL_SECS: i64 = 300;

#[derive(sqlx::FromRow)]
struct AccountSecret {
    id: Uuid,
    external_account_id: String,
    send_key_id: Option<String>,
    send_credential_enc: Option<Vec<u8>>,
}

fn content(v: &Value) -> pb::ReplyContent {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    pb::ReplyContent {
        text: s("/text"),
        template: v.get("template").map(|_| pb::ReplyTemplate {
            name: s("/template/name"),
            language: s("/template/language"),
            parameters: v
                .pointer("/template/parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect(),
        }),
        media: v.get("media").map(|_| pb::ReplyMedia {
            kind: s("/media/kind"),
            url: s("/media/url"),
            caption: s("/media/caption"),
            filename: s("/media/filename"),
        }),
        reply_to_message_id: String::new(),
    }
}

/// Claims a pending reply for `claim` and returns what sending it needs.
pub(crate) async fn get_delivery(
    pool: &PgPool,
    secrets: &SecretBox,
    req: pb::GetReplyDeliveryRequest,
) -> Result<pb::ReplyDelivery, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    let id = parse_uuid("message_id", &req.message_id)?;
    if req.claim.is_empty() || req.claim.len() > 200 {
        return Err(Error::invalid("claim must be 1..=200 bytes"));
    }
    let mut tx = tenant_tx(pool, tenant).await?;
    let claimed: Option<Value> = sqlx::query_scalar(
        "UPDATE messages SET metadata = jsonb_set(metadata, '{reply,claim}',
                 jsonb_build_object('by', $3::text, 'at', extract(epoch FROM now())))
         WHERE tenant_id = $1 AND id = $2 AND status = 'pending' AND metadata ? 'reply'
           AND (metadata #>> '{reply,claim,by}' IS NULL
                OR metadata #>> '{reply,claim,by}' = $3
                OR (metadata #>> '{reply,claim,at}')::float8 < extract(epoch FROM now()) - $4)
         RETURNING metadata",
    )
    .bind(tenant)
    .bind(id)
    .bind(&req.claim)
    .bind(CLAIM_TTL_SECS as f64)
    .fetch_optional(&mut *tx)
    .await?;
    let m = message(&mut tx, tenant, id).await?;
    let Some(metadata) = claimed else {
        tx.commit().await?;
        return Ok(pb::ReplyDelivery {
            message: Some(m.into()),
            claimed: false,
            ..Default::default()
        });
    };
    let account_id = metadata
        .pointer("/reply/account")
        .and_then(Value::as_str)
        .and_then(|a| Uuid::parse_str(a).ok())
        .ok_or_else(|| Error::invalid("message is not a reply"))?;
    let account: AccountSecret = sqlx::query_as(
        "SELECT id, external_account_id, send_key_id, send_credential_enc
         FROM channel_accounts WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(account_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::NotFound("the reply's channel account is gone".into()))?;
    tx.commit().await?;
    let credential = match (&account.send_key_id, &account.send_credential_enc) {
        (Some(k), Some(enc)) => {
            String::from_utf8(secrets.open(k, enc, &credentials::aad(account.id))?)
                .map_err(|_| Error::Crypto("send credential is not UTF-8".into()))?
        }
        _ => String::new(),
    };
    // YCloud numbers are connected by their +E.164 number; Meta's ids never start with +.
    let provider = if m.channel == "whatsapp" && account.external_account_id.starts_with('+') {
        "ycloud"
    } else {
        "graph"
    };
    let reply = metadata.get("reply").cloned().unwrap_or_default();
    Ok(pb::ReplyDelivery {
        claimed: true,
        provider: provider.into(),
        external_account_id: account.external_account_id,
        recipient_id: m.recipient_id.clone().unwrap_or_default(),
        credential,
        tag: reply
            .get("tag")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        content: Some(content(reply.get("content").unwrap_or(&Value::Null))),
        reply_to_channel_message_id: m.reply_to_channel_message_id.clone().unwrap_or_default(),
        message: Some(m.into()),
    })
}

/// Records the platform's id (the reply is `sent`; events that waited for
/// that id apply now) or its error (`failed`), and returns the reply as it is.
pub(crate) async fn record_result(
    pool: &PgPool,
    req: pb::RecordReplyResultRequest,
) -> Result<pb::StoredMessage, Error> {
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
    let mut tx = tenant_tx(pool, tenant).await?;
    let channel: String = sqlx::query_scalar(
        "SELECT channel FROM messages WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::NotFound("no such message".into()))?;
    if platform_id.is_empty() {
        let error: Value = serde_json::from_str(&req.error_json)
            .unwrap_or_else(|_| Value::String(req.error_json.clone()));
        sqlx::query(
            "UPDATE messages SET status = 'failed', status_error = $3, failed_at = now()
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(tenant)
        .bind(id)
        .bind(&error)
        .execute(&mut *tx)
        .await?;
    } else {
        // An echo stored under that id before we learnt it (Instagram's
        // carry no app id) keeps it: the reply then keeps its placeholder and
        // records the id in metadata, rather than failing the unique key.
        let taken: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE tenant_id = $1 AND channel = $2 AND channel_message_id = $3",
        )
        .bind(tenant)
        .bind(&channel)
        .bind(platform_id)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some_and(|t| t != id) {
            tracing::warn!(message_id = %id, "an echo of this reply was stored before its id was known");
        }
        sqlx::query(
            "UPDATE messages SET
                 channel_message_id = CASE WHEN $4 THEN channel_message_id ELSE $3 END,
                 status = CASE WHEN status = 'pending' THEN 'sent' ELSE status END,
                 metadata = jsonb_set(metadata, '{reply,platform_message_id}', to_jsonb($3::text))
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(platform_id)
        .bind(taken.is_some_and(|t| t != id))
        .execute(&mut *tx)
        .await?;
        events::apply_pending(&mut tx, tenant, &[(channel, platform_id.to_owned())]).await?;
    }
    let m = message(&mut tx, tenant, id).await?;
    let sql = format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE c.tenant_id = $1 AND c.id = $2"
    );
    let c: ConversationRow = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(m.conversation_id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(pb::StoredMessage {
        message: Some(m.into()),
        conversation: Some(c.into()),
        inserted: false,
    })
}
