//! Operators' lists of tenants, locations, Meta apps and agents, and their
//! disabled state; and the check the edge makes before serving an agent.
//!
//! What spans tenants (tenants, apps) runs on the operator pool, through the
//! `faro_admin_*` functions of migration 0017 that only `faro_operator` may
//! call: the service role, even with no tenant set, cannot list across
//! tenants. What belongs to one tenant (locations, agents) runs as the service
//! role in that tenant's transaction, under RLS. Every list is a keyset page
//! by id; no answer carries a sealed value.

use faro_proto::conversations::v1 as pb;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{
    Error,
    db::{parse_uuid, tenant_tx},
};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// The page size asked for, or the default; more than [`MAX_PAGE`] is refused.
fn page(limit: u32) -> Result<i64, Error> {
    match limit {
        0 => Ok(i64::from(DEFAULT_PAGE)),
        1..=MAX_PAGE => Ok(i64::from(limit)),
        _ => Err(Error::invalid(format!("limit must be 0..={MAX_PAGE}"))),
    }
}

/// `after` as a UUID (the nil UUID: from the start).
fn after_uuid(after: &str) -> Result<Uuid, Error> {
    match after {
        "" => Ok(Uuid::nil()),
        s => parse_uuid("after", s),
    }
}

/// The cursor of the next page: the last id, when the page was full.
fn next_after<T>(rows: &[T], limit: i64, id: impl Fn(&T) -> String) -> String {
    match rows.last() {
        Some(last) if i64::try_from(rows.len()).unwrap_or(i64::MAX) >= limit => id(last),
        _ => String::new(),
    }
}

/// Refuses a tenant this transaction cannot see: unknown (or, under RLS,
/// another's), so that an operator's typo is an error, not an empty list.
pub(crate) async fn require_tenant(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
) -> Result<(), Error> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&mut **tx)
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| Error::NotFound(format!("tenant {tenant}")))
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: Uuid,
    name: String,
    disabled: bool,
}

impl From<TenantRow> for pb::Tenant {
    fn from(r: TenantRow) -> Self {
        Self {
            id: r.id.to_string(),
            name: r.name,
            disabled: r.disabled,
        }
    }
}

pub(crate) async fn list_tenants(
    operator: &PgPool,
    req: pb::ListTenantsRequest,
) -> Result<pb::ListTenantsResponse, Error> {
    let limit = page(req.limit)?;
    let after = after_uuid(&req.after)?;
    let rows: Vec<TenantRow> =
        sqlx::query_as("SELECT id, name, disabled FROM faro_admin_list_tenants($1, $2::int)")
            .bind(after)
            .bind(limit)
            .fetch_all(operator)
            .await?;
    Ok(pb::ListTenantsResponse {
        next_after: next_after(&rows, limit, |r| r.id.to_string()),
        tenants: rows.into_iter().map(Into::into).collect(),
    })
}

pub(crate) async fn set_tenant_disabled(
    operator: &PgPool,
    req: pb::SetTenantDisabledRequest,
) -> Result<pb::Tenant, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    let row: Option<TenantRow> =
        sqlx::query_as("SELECT id, name, disabled FROM faro_admin_set_tenant_disabled($1, $2)")
            .bind(tenant)
            .bind(req.disabled)
            .fetch_optional(operator)
            .await?;
    let row = row.ok_or_else(|| Error::NotFound(format!("tenant {tenant}")))?;
    tracing::info!(%tenant, disabled = req.disabled, "tenant disabled set");
    Ok(row.into())
}

#[derive(sqlx::FromRow)]
struct AppRow {
    id: Uuid,
    meta_app_id: String,
    name: String,
    owner_tenant_id: Option<Uuid>,
    disabled: bool,
}

impl From<AppRow> for pb::MetaApp {
    fn from(r: AppRow) -> Self {
        Self {
            id: r.id.to_string(),
            meta_app_id: r.meta_app_id,
            name: r.name,
            owner_tenant_id: r.owner_tenant_id.map(|t| t.to_string()).unwrap_or_default(),
            disabled: r.disabled,
        }
    }
}

const APP_COLUMNS: &str = "id, meta_app_id, name, owner_tenant_id, disabled";

pub(crate) async fn list_apps(
    operator: &PgPool,
    req: pb::ListMetaAppsRequest,
) -> Result<pb::ListMetaAppsResponse, Error> {
    let limit = page(req.limit)?;
    let after = after_uuid(&req.after)?;
    let rows: Vec<AppRow> = sqlx::query_as(&format!(
        "SELECT {APP_COLUMNS} FROM faro_admin_list_apps($1, $2::int)"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(operator)
    .await?;
    Ok(pb::ListMetaAppsResponse {
        next_after: next_after(&rows, limit, |r| r.id.to_string()),
        apps: rows.into_iter().map(Into::into).collect(),
    })
}

pub(crate) async fn set_app_disabled(
    operator: &PgPool,
    req: pb::SetMetaAppDisabledRequest,
) -> Result<pb::MetaApp, Error> {
    let app = parse_uuid("app_id", &req.app_id)?;
    let row: Option<AppRow> = sqlx::query_as(&format!(
        "SELECT {APP_COLUMNS} FROM faro_admin_set_app_disabled($1, $2)"
    ))
    .bind(app)
    .bind(req.disabled)
    .fetch_optional(operator)
    .await?;
    let row = row.ok_or_else(|| Error::NotFound(format!("meta app {app}")))?;
    tracing::info!(%app, disabled = req.disabled, "meta app disabled set");
    Ok(row.into())
}

#[derive(sqlx::FromRow)]
struct LocationRow {
    id: Uuid,
    tenant_id: Uuid,
    name: String,
    disabled: bool,
}

impl From<LocationRow> for pb::Location {
    fn from(r: LocationRow) -> Self {
        Self {
            id: r.id.to_string(),
            tenant_id: r.tenant_id.to_string(),
            name: r.name,
            disabled: r.disabled,
        }
    }
}

const LOCATION_COLUMNS: &str = "id, tenant_id, name, disabled_at IS NOT NULL AS disabled";

pub(crate) async fn list_locations(
    pool: &PgPool,
    req: pb::ListLocationsRequest,
) -> Result<pb::ListLocationsResponse, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    let limit = page(req.limit)?;
    let after = after_uuid(&req.after)?;
    let mut tx = tenant_tx(pool, tenant).await?;
    require_tenant(&mut tx, tenant).await?;
    let rows: Vec<LocationRow> = sqlx::query_as(&format!(
        "SELECT {LOCATION_COLUMNS} FROM locations WHERE tenant_id = $1 AND id > $2
         ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(pb::ListLocationsResponse {
        next_after: next_after(&rows, limit, |r| r.id.to_string()),
        locations: rows.into_iter().map(Into::into).collect(),
    })
}

pub(crate) async fn set_location_disabled(
    pool: &PgPool,
    req: pb::SetLocationDisabledRequest,
) -> Result<pb::Location, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    let location = parse_uuid("location_id", &req.location_id)?;
    let mut tx = tenant_tx(pool, tenant).await?;
    require_tenant(&mut tx, tenant).await?;
    let row: Option<LocationRow> = sqlx::query_as(&format!(
        "UPDATE locations SET disabled_at = CASE WHEN $3 THEN COALESCE(disabled_at, now()) END
         WHERE tenant_id = $1 AND id = $2 RETURNING {LOCATION_COLUMNS}"
    ))
    .bind(tenant)
    .bind(location)
    .bind(req.disabled)
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or_else(|| Error::NotFound(format!("location {location}")))?;
    tx.commit().await?;
    tracing::info!(%tenant, %location, disabled = req.disabled, "location disabled set");
    Ok(row.into())
}

pub(crate) async fn set_agent_disabled(
    pool: &PgPool,
    req: pb::SetAgentDisabledRequest,
) -> Result<pb::Agent, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    if req.agent_id.is_empty() || req.agent_id.len() > 200 || req.agent_id.contains('\0') {
        return Err(Error::invalid("agent_id must be 1..=200 bytes"));
    }
    let mut tx = tenant_tx(pool, tenant).await?;
    require_tenant(&mut tx, tenant).await?;
    let agent = crate::inbox::set_agent_disabled(&mut tx, tenant, &req.agent_id, req.disabled)
        .await?
        .ok_or_else(|| Error::NotFound(format!("agent {}", req.agent_id)))?;
    tx.commit().await?;
    tracing::info!(%tenant, disabled = req.disabled, "agent disabled set");
    Ok(agent)
}

/// Whether an agent of a tenant may act: refused only when the tenant's or
/// the agent's row says disabled (rows that do not exist refuse nothing).
pub(crate) async fn check_agent_access(
    pool: &PgPool,
    req: pb::CheckAgentAccessRequest,
) -> Result<pb::CheckAgentAccessResponse, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    if req.agent_id.len() > 200 || req.agent_id.contains('\0') {
        return Err(Error::invalid("agent_id must be at most 200 bytes"));
    }
    let mut tx = tenant_tx(pool, tenant).await?;
    let (tenant_off, agent_off): (bool, bool) = sqlx::query_as(
        "SELECT COALESCE((SELECT disabled_at IS NOT NULL FROM tenants WHERE id = $1), false),
                COALESCE((SELECT disabled_at IS NOT NULL FROM agents
                          WHERE tenant_id = $1 AND id = $2), false)",
    )
    .bind(tenant)
    .bind(&req.agent_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let reason = if tenant_off {
        "tenant_disabled"
    } else if agent_off {
        "agent_disabled"
    } else {
        ""
    };
    Ok(pb::CheckAgentAccessResponse {
        allowed: reason.is_empty(),
        reason: reason.into(),
    })
}
