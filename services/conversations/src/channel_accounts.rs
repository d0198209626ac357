//! Operators' view of a tenant's channel accounts: listing (never a
//! credential) and disabling, which stops routing without deleting.

use faro_proto::{channel_from_name, conversations::v1 as pb};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    Error,
    db::{parse_uuid, tenant_tx},
};

const COLUMNS: &str = "id, tenant_id, location_id, channel, external_account_id, app_id, \
                       display_name, kind, waba_id, disabled_at IS NOT NULL AS disabled";

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    tenant_id: Uuid,
    location_id: Uuid,
    channel: String,
    external_account_id: String,
    app_id: Uuid,
    display_name: String,
    kind: String,
    waba_id: Option<String>,
    disabled: bool,
}

impl From<Row> for pb::ChannelAccount {
    fn from(r: Row) -> Self {
        Self {
            id: r.id.to_string(),
            tenant_id: r.tenant_id.to_string(),
            location_id: r.location_id.to_string(),
            channel: channel_from_name(&r.channel).into(),
            external_account_id: r.external_account_id,
            app_id: r.app_id.to_string(),
            display_name: r.display_name,
            kind: r.kind,
            waba_id: r.waba_id.unwrap_or_default(),
            disabled: r.disabled,
        }
    }
}

pub(crate) async fn list(
    pool: &PgPool,
    req: pb::ListChannelAccountsRequest,
) -> Result<pb::ListChannelAccountsResponse, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    let mut tx = tenant_tx(pool, tenant).await?;
    crate::directory::require_tenant(&mut tx, tenant).await?;
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM channel_accounts WHERE tenant_id = $1 ORDER BY id"
    ))
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(pb::ListChannelAccountsResponse {
        accounts: rows.into_iter().map(Into::into).collect(),
    })
}

pub(crate) async fn set_disabled(
    pool: &PgPool,
    req: pb::SetChannelAccountDisabledRequest,
) -> Result<pb::ChannelAccount, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    let account = parse_uuid("channel_account_id", &req.channel_account_id)?;
    let mut tx = tenant_tx(pool, tenant).await?;
    let row: Option<Row> = sqlx::query_as(&format!(
        "UPDATE channel_accounts
         SET disabled_at = CASE WHEN $3 THEN COALESCE(disabled_at, now()) END
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(account)
    .bind(req.disabled)
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or_else(|| Error::NotFound(format!("channel account {account}")))?;
    tx.commit().await?;
    tracing::info!(%tenant, %account, disabled = req.disabled, "channel account disabled set");
    Ok(row.into())
}
