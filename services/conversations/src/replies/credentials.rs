//! Channel accounts' send credentials: sealed at rest with the same keys as
//! app secrets, bound to their row and column, opened only for a reply worker
//! about to send. Set and rotated by operators; no API returns them.

use chrono::{DateTime, Utc};
use faro_proto::{conversations::v1 as pb, to_timestamp};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    Error, SecretBox,
    db::{parse_uuid, tenant_tx},
};

/// The associated data binding a sealed credential to its account.
pub(crate) fn aad(account: Uuid) -> Vec<u8> {
    format!("channel_accounts/{account}/send_credential").into_bytes()
}

/// Sets (or, empty, keeps) an account's credential and its HUMAN_AGENT flag.
pub(crate) async fn set_credential(
    pool: &PgPool,
    secrets: &SecretBox,
    req: pb::SetChannelCredentialRequest,
) -> Result<pb::ChannelCredentialInfo, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    let account = parse_uuid("channel_account_id", &req.channel_account_id)?;
    if req.credential.len() > 4096 || req.credential.trim() != req.credential {
        return Err(Error::invalid(
            "credential must be at most 4096 bytes, without surrounding whitespace",
        ));
    }
    let sealed = (!req.credential.is_empty())
        .then(|| secrets.seal(req.credential.as_bytes(), &aad(account)))
        .transpose()?;
    let (key_id, enc) = sealed.map_or((None, None), |(k, e)| (Some(k), Some(e)));
    let mut tx = tenant_tx(pool, tenant).await?;
    let row: Option<(bool, bool, Option<DateTime<Utc>>)> = sqlx::query_as(
        "UPDATE channel_accounts SET
             send_key_id = COALESCE($3, send_key_id),
             send_credential_enc = COALESCE($4, send_credential_enc),
             send_credential_set_at = CASE WHEN $4::bytea IS NULL THEN send_credential_set_at ELSE now() END,
             human_agent = $5
         WHERE tenant_id = $1 AND id = $2
         RETURNING send_credential_enc IS NOT NULL, human_agent, send_credential_set_at",
    )
    .bind(tenant)
    .bind(account)
    .bind(key_id)
    .bind(enc)
    .bind(req.human_agent)
    .fetch_optional(&mut *tx)
    .await?;
    let (has_credential, human_agent, set_at) =
        row.ok_or_else(|| Error::NotFound(format!("channel account {account}")))?;
    tx.commit().await?;
    Ok(pb::ChannelCredentialInfo {
        channel_account_id: account.to_string(),
        has_credential,
        human_agent,
        credential_set_at: set_at.map(to_timestamp),
    })
}
