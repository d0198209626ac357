//! Operator actions: tenants, locations, Meta apps and channel accounts.

use faro_proto::conversations::v1 as pb;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    Error, SecretBox,
    db::{parse_uuid, tenant_tx},
    rows::require_channel,
};

fn require_text(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.trim().is_empty() || value.len() > max {
        return Err(Error::invalid(format!("{field} must be 1..={max} bytes")));
    }
    Ok(())
}

/// The associated data binding a sealed value to its app row and column.
pub(crate) fn aad(app_id: Uuid, column: &str) -> Vec<u8> {
    format!("meta_apps/{app_id}/{column}").into_bytes()
}

pub(crate) fn verify_token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub(crate) async fn create_tenant(pool: &PgPool, name: &str) -> Result<pb::Tenant, Error> {
    require_text("name", name, 200)?;
    let id = Uuid::now_v7();
    let mut tx = tenant_tx(pool, id).await?;
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
        .bind(id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(pb::Tenant {
        id: id.to_string(),
        name: name.to_owned(),
        disabled: false,
    })
}

/// Sets (or, with both 0, clears) a tenant's own webhook rate.
pub(crate) async fn set_rate_limit(
    pool: &PgPool,
    req: pb::TenantRateLimit,
) -> Result<pb::TenantRateLimit, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    let (per_minute, burst) = match (req.webhook_per_minute, req.webhook_burst) {
        (0, 0) => (None, None),
        (1..=60_000_000, 1..=1_000_000) => (
            i32::try_from(req.webhook_per_minute).ok(),
            i32::try_from(req.webhook_burst).ok(),
        ),
        _ => {
            return Err(Error::invalid(
                "webhook_per_minute must be 1..=60000000 and webhook_burst 1..=1000000 \
                 (both 0 restores the default)",
            ));
        }
    };
    let mut tx = tenant_tx(pool, tenant).await?;
    let updated =
        sqlx::query("UPDATE tenants SET webhook_per_minute = $2, webhook_burst = $3 WHERE id = $1")
            .bind(tenant)
            .bind(per_minute)
            .bind(burst)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if updated == 0 {
        return Err(Error::NotFound(format!("tenant {tenant}")));
    }
    tx.commit().await?;
    Ok(req)
}

pub(crate) async fn create_location(
    pool: &PgPool,
    req: pb::CreateLocationRequest,
) -> Result<pb::Location, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    require_text("name", &req.name, 200)?;
    let id = Uuid::now_v7();
    let mut tx = tenant_tx(pool, tenant).await?;
    sqlx::query("INSERT INTO locations (tenant_id, id, name) VALUES ($1, $2, $3)")
        .bind(tenant)
        .bind(id)
        .bind(&req.name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(pb::Location {
        id: id.to_string(),
        tenant_id: tenant.to_string(),
        name: req.name,
        disabled: false,
    })
}

pub(crate) async fn create_meta_app(
    pool: &PgPool,
    secrets: &SecretBox,
    req: pb::CreateMetaAppRequest,
) -> Result<pb::MetaApp, Error> {
    require_text("meta_app_id", &req.meta_app_id, 100)?;
    require_text("app_secret", &req.app_secret, 512)?;
    require_text("verify_token", &req.verify_token, 512)?;
    let owner = match req.owner_tenant_id.as_str() {
        "" => None,
        s => Some(parse_uuid("owner_tenant_id", s)?),
    };
    let id = Uuid::now_v7();
    let (key_id, secret_enc) = secrets.seal(req.app_secret.as_bytes(), &aad(id, "app_secret"))?;
    let (_, token_enc) = secrets.seal(req.verify_token.as_bytes(), &aad(id, "verify_token"))?;
    // An operator's own app is written with no tenant set; RLS checks the owner either way.
    let mut tx = match owner {
        Some(t) => tenant_tx(pool, t).await?,
        None => pool.begin().await?,
    };
    sqlx::query(
        "INSERT INTO meta_apps (id, meta_app_id, name, owner_tenant_id, key_id, app_secret_enc,
                                verify_token_enc, verify_token_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(&req.meta_app_id)
    .bind(&req.name)
    .bind(owner)
    .bind(&key_id)
    .bind(&secret_enc)
    .bind(&token_enc)
    .bind(verify_token_hash(&req.verify_token))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(pb::MetaApp {
        id: id.to_string(),
        meta_app_id: req.meta_app_id,
        name: req.name,
        owner_tenant_id: owner.map(|o| o.to_string()).unwrap_or_default(),
        disabled: false,
    })
}

pub(crate) async fn connect_channel(
    pool: &PgPool,
    req: pb::ConnectChannelRequest,
) -> Result<pb::ChannelAccount, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    let location = parse_uuid("location_id", &req.location_id)?;
    let app = parse_uuid("app_id", &req.app_id)?;
    let channel = require_channel(req.channel)?;
    let waba = (!req.waba_id.is_empty()).then_some(req.waba_id.as_str());
    if let Some(w) = waba {
        require_text("waba_id", w, 100)?;
        if channel != "whatsapp" {
            return Err(Error::invalid("waba_id is for WhatsApp accounts only"));
        }
    }
    let mut tx = tenant_tx(pool, tenant).await?;
    let Some(number) = (!req.external_account_id.is_empty()).then_some(&req.external_account_id)
    else {
        // A WABA on its own, for its account-level webhooks.
        let w = waba.ok_or_else(|| Error::invalid("external_account_id or waba_id is required"))?;
        let id = connect_waba(&mut tx, tenant, location, app, w, &req.display_name, true).await?;
        tx.commit().await?;
        return Ok(pb::ChannelAccount {
            id: id.to_string(),
            tenant_id: tenant.to_string(),
            location_id: location.to_string(),
            channel: req.channel,
            external_account_id: w.to_owned(),
            app_id: app.to_string(),
            display_name: req.display_name,
            kind: "waba".into(),
            waba_id: String::new(),
            disabled: false,
        });
    };
    require_text("external_account_id", number, 100)?;
    if let Some(w) = waba {
        connect_waba(&mut tx, tenant, location, app, w, "", false).await?;
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO channel_accounts (tenant_id, id, location_id, channel, external_account_id,
                                       app_id, display_name, waba_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tenant)
    .bind(id)
    .bind(location)
    .bind(channel)
    .bind(number)
    .bind(app)
    .bind(&req.display_name)
    .bind(waba)
    .execute(&mut *tx)
    .await
    .map_err(
        |e| match e.as_database_error().and_then(|d| d.constraint()) {
            Some("channel_accounts_channel_external_account_id_key") => {
                Error::AlreadyExists(format!("{channel} account {number} is already connected"))
            }
            _ => e.into(),
        },
    )?;
    tx.commit().await?;
    Ok(pb::ChannelAccount {
        id: id.to_string(),
        tenant_id: tenant.to_string(),
        location_id: location.to_string(),
        channel: req.channel,
        external_account_id: req.external_account_id,
        app_id: app.to_string(),
        display_name: req.display_name,
        kind: "messaging".into(),
        waba_id: req.waba_id,
        disabled: false,
    })
}

/// Connects a WhatsApp Business Account as a channel account of kind `waba`,
/// so that webhooks naming only it (`entry[].id`) are routed. A WABA has one
/// owner: connected to another tenant (whose row this tenant cannot see, but
/// whose unique key it meets), it is refused. Connecting a second number of a
/// WABA this tenant already has reuses it unless `alone` (an explicit
/// duplicate).
async fn connect_waba(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: Uuid,
    location: Uuid,
    app: Uuid,
    waba: &str,
    display_name: &str,
    alone: bool,
) -> Result<Uuid, Error> {
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO channel_accounts (tenant_id, id, location_id, channel, external_account_id,
                                       app_id, display_name, kind)
         VALUES ($1, $2, $3, 'whatsapp', $4, $5, $6, 'waba')
         ON CONFLICT (channel, external_account_id) DO NOTHING
         RETURNING id",
    )
    .bind(tenant)
    .bind(Uuid::now_v7())
    .bind(location)
    .bind(waba)
    .bind(app)
    .bind(display_name)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(id) = inserted {
        return Ok(id);
    }
    let taken = || {
        Error::AlreadyExists(format!(
            "whatsapp business account {waba} is already connected"
        ))
    };
    // Visible only if it is this tenant's (row-level security).
    let mine: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT id, kind FROM channel_accounts WHERE channel = 'whatsapp' AND external_account_id = $1",
    )
    .bind(waba)
    .fetch_optional(&mut **tx)
    .await?;
    match mine {
        Some((id, kind)) if kind == "waba" && !alone => Ok(id),
        _ => Err(taken()),
    }
}
