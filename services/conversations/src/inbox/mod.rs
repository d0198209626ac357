//! The inbox agents work in (issue 13): list, search, read and edit threads.
//!
//! Every call names its caller's tenant, agent and allowed locations (the
//! edge takes them from the JWT), runs in a transaction under row-level
//! security for that tenant, and enforces the locations in the query itself:
//! a thread of another location is not found, exactly as one of another tenant.

mod agents;
mod cursor;
mod list;
mod messages;
mod transitions;
mod update;

use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{Error, db::parse_uuid};

pub(crate) use agents::{list_agents, set_agent_disabled, upsert_agent};
pub(crate) use list::{get, list};
pub(crate) use messages::list_messages;
pub(crate) use update::{mark_read, update};

/// Who asks: the tenant, the agent (may be empty for operators) and the
/// locations they may see (empty: all of the tenant's).
pub(crate) struct Caller {
    pub tenant: Uuid,
    pub agent: String,
    pub locations: Vec<Uuid>,
}

impl Caller {
    pub(crate) fn parse(tenant: &str, agent: &str, locations: &[String]) -> Result<Self, Error> {
        if agent.len() > 200 || agent.contains('\0') {
            return Err(Error::invalid("agent_id must be at most 200 bytes"));
        }
        Ok(Self {
            tenant: parse_uuid("tenant_id", tenant)?,
            agent: agent.to_owned(),
            locations: parse_uuids("location_ids", locations)?,
        })
    }

    /// `AND` the location limit on the thread aliased `c`: the caller's
    /// locations, and never a disabled location's threads (migration 0017).
    pub(crate) fn push_location_limit(&self, q: &mut QueryBuilder<'_, Postgres>) {
        q.push(ENABLED_LOCATION);
        if !self.locations.is_empty() {
            q.push(" AND c.location_id = ANY(");
            q.push_bind(self.locations.clone());
            q.push(")");
        }
    }
}

/// A thread `c` whose location is disabled is hidden, as another tenant's.
pub(crate) const ENABLED_LOCATION: &str = " AND NOT EXISTS (SELECT 1 FROM locations dl \
     WHERE dl.tenant_id = c.tenant_id AND dl.id = c.location_id AND dl.disabled_at IS NOT NULL)";

pub(crate) fn parse_uuids(field: &str, values: &[String]) -> Result<Vec<Uuid>, Error> {
    if values.len() > 1000 {
        return Err(Error::invalid(format!("at most 1000 {field}")));
    }
    values.iter().map(|v| parse_uuid(field, v)).collect()
}

/// Page sizes: `requested` or the default, at most `max`.
pub(crate) fn page_size(requested: u32, default: i64, max: i64) -> i64 {
    match requested {
        0 => default,
        n => i64::from(n).min(max),
    }
}
