//! Replies (issue 14): an agent's answer is checked against its platform's
//! rules ([`rules`]), stored at once as an outbound `pending` message under a
//! placeholder id (`faro:<message id>`) with its idempotency key, and later
//! given the platform's id or error by ingest's reply workers, a worker's
//! read at a time ([`delivery`] claims, [`record`] records).
//! Send credentials are sealed like app secrets ([`credentials`]).

mod create;
pub(crate) mod credentials;
mod delivery;
mod gather;
mod record;
pub(crate) mod rules;
mod service;

use faro_proto::conversations::v1 as pb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

pub(crate) use credentials::set_credential;
pub(crate) use delivery::{claim_batch, get_delivery};
pub(crate) use gather::Creator;
pub(crate) use record::{record_batch, record_result};
use rules::Content;

use crate::{
    Error,
    rows::{ConversationRow, MESSAGE_COLUMNS, MessageRow},
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

fn stored(m: MessageRow, c: ConversationRow, inserted: bool) -> pb::StoredMessage {
    pb::StoredMessage {
        message: Some(m.into()),
        conversation: Some(c.into()),
        inserted,
    }
}
