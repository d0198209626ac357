//! A tenant's agents, kept by operators (AdminService): assignment names one.

use faro_proto::conversations::v1 as pb;
use sqlx::PgPool;
use uuid::Uuid;

use super::{parse_uuids, transitions};
use crate::{
    Error,
    db::{parse_uuid, tenant_tx},
};

const ROLES: &[&str] = &["agent", "manager", "admin"];

#[derive(sqlx::FromRow)]
struct AgentRow {
    tenant_id: Uuid,
    id: String,
    name: String,
    role: String,
    location_ids: Vec<Uuid>,
    disabled: bool,
}

impl From<AgentRow> for pb::Agent {
    fn from(r: AgentRow) -> Self {
        Self {
            tenant_id: r.tenant_id.to_string(),
            id: r.id,
            name: r.name,
            role: r.role,
            location_ids: r.location_ids.iter().map(ToString::to_string).collect(),
            disabled: r.disabled,
        }
    }
}

const COLUMNS: &str =
    "tenant_id, id, name, role, location_ids, disabled_at IS NOT NULL AS disabled";

pub(crate) async fn upsert_agent(pool: &PgPool, a: pb::Agent) -> Result<pb::Agent, Error> {
    let tenant = parse_uuid("tenant_id", &a.tenant_id)?;
    if a.id.is_empty() || a.id.len() > 200 || a.id.contains('\0') {
        return Err(Error::invalid("id must be 1..=200 bytes"));
    }
    if a.name.is_empty() || a.name.chars().count() > 200 || a.name.contains('\0') {
        return Err(Error::invalid("name must be 1..=200 characters"));
    }
    let role = if a.role.is_empty() { "agent" } else { &a.role };
    transitions::one_of("role", role, ROLES)?;
    let locations = parse_uuids("location_ids", &a.location_ids)?;
    let mut tx = tenant_tx(pool, tenant).await?;
    let row: AgentRow = sqlx::query_as(&format!(
        "INSERT INTO agents (tenant_id, id, name, role, location_ids, disabled_at)
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END)
         ON CONFLICT (tenant_id, id) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role,
             location_ids = EXCLUDED.location_ids,
             disabled_at = CASE WHEN $6 THEN COALESCE(agents.disabled_at, now()) END,
             updated_at = now()
         RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(&a.id)
    .bind(&a.name)
    .bind(role)
    .bind(&locations)
    .bind(a.disabled)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

pub(crate) async fn list_agents(
    pool: &PgPool,
    req: pb::ListAgentsRequest,
) -> Result<pb::ListAgentsResponse, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    let limit = match req.limit {
        0 => 100,
        n @ 1..=1000 => i64::from(n),
        _ => return Err(Error::invalid("limit must be 0..=1000")),
    };
    if req.after.len() > 200 {
        return Err(Error::invalid("after must be at most 200 bytes"));
    }
    let mut tx = tenant_tx(pool, tenant).await?;
    let known: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
    if known.is_none() {
        return Err(Error::NotFound(format!("tenant {tenant}")));
    }
    let rows: Vec<AgentRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM agents WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(&req.after)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let next_after = match rows.last() {
        Some(last) if i64::try_from(rows.len()).unwrap_or(i64::MAX) >= limit => last.id.clone(),
        _ => String::new(),
    };
    Ok(pb::ListAgentsResponse {
        agents: rows.into_iter().map(Into::into).collect(),
        next_after,
    })
}

/// Disables (or enables) an existing agent in the caller's tenant
/// transaction; `None` when the tenant has no such agent.
pub(crate) async fn set_agent_disabled(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: Uuid,
    agent: &str,
    disabled: bool,
) -> Result<Option<pb::Agent>, Error> {
    let row: Option<AgentRow> = sqlx::query_as(&format!(
        "UPDATE agents SET disabled_at = CASE WHEN $3 THEN COALESCE(disabled_at, now()) END,
             updated_at = now()
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(agent)
    .bind(disabled)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(Into::into))
}
